"""The TT wrapper on every tiny architecture: foundation harness, exactness at full rank, save/load, merge."""
import pytest
import torch
from safetensors.torch import load_file

import hf_attn
from hf_attn.adapters.tt import TTLinear, tt_report
from harness import ARCHS, cache_gap, future_leak, ids, logits, padding_gap, tiny_model

FULL = 10_000  # larger than every bond of the tiny models: exact TT-SVD


def wrapped(arch, rank=4, dtype=torch.float32, **kw):
    return hf_attn.wrap(tiny_model(arch, "sdpa", dtype=dtype), hf_attn.TTConfig(rank=rank, **kw))


@pytest.mark.parametrize("arch", ARCHS)
def test_default_targets_are_the_attention_projections(arch):
    model = wrapped(arch)
    names = [n for n, m in model.named_modules() if isinstance(m, TTLinear)]
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    assert leaves == ({"q", "k", "v", "o"} if arch == "t5" else {"q_proj", "k_proj", "v_proj", "o_proj"})
    per_layer = 4 * (3 if arch == "t5" else 1)  # T5: encoder self, decoder self and cross attention
    assert len(names) == per_layer * 2


@pytest.mark.parametrize("arch", ARCHS)
def test_full_rank_reproduces_the_base_model(arch):
    x = ids(2, 9)
    with torch.no_grad():
        base = logits(tiny_model(arch, "sdpa"), x)
        tt = logits(wrapped(arch, rank=FULL), x)
    torch.testing.assert_close(tt, base, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_harness_causality_padding_cache(arch):
    model = wrapped(arch)
    assert future_leak(model) == 0.0
    assert padding_gap(model, "left") < 1e-4
    assert padding_gap(model, "right") < 1e-4
    same, gap = cache_gap(model)
    assert same and gap < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_close_to_fp32(arch):
    x = ids(2, 9)
    with torch.no_grad():
        ref = logits(wrapped(arch), x)
        low = logits(wrapped(arch, dtype=torch.bfloat16), x)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_only_into_the_cores_when_base_frozen(arch):
    model = wrapped(arch).train()
    x = ids(2, 9)
    out = model(input_ids=x, labels=ids(2, 5, seed=6)) if arch == "t5" else model(input_ids=x, labels=x)
    out.loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    cores = {n for n, _ in model.named_parameters() if ".tt.cores." in n}
    assert got == cores
    assert all(model.get_parameter(n).grad.norm() > 0 for n in cores)


@pytest.mark.parametrize("arch", ["qwen2", "t5"])
def test_save_load_round_trip_and_merge(arch, tmp_path):
    x = ids(2, 9)
    model = wrapped(arch)
    with torch.no_grad():  # move the cores off their TT-SVD values, as training would
        for n, p in model.named_parameters():
            if ".tt.cores." in n:
                p.mul_(1.1)
        before = logits(model, x)
    hf_attn.save_wrapper(model, tmp_path)
    saved = load_file(str(tmp_path / "hf_attn_wrapper.safetensors"))
    assert saved and all(".tt.cores." in k for k in saved)  # only the cores, never the base (or its bias)
    reloaded = hf_attn.load_wrapper(tiny_model(arch, "sdpa"), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(logits(reloaded, x), before, rtol=0, atol=0)
    hf_attn.unwrap(reloaded, merge=True)
    assert not any(isinstance(m, TTLinear) for m in reloaded.modules())
    assert all(type(reloaded.get_submodule(k.split(".tt.")[0])) is torch.nn.Linear for k in saved)
    with torch.no_grad():
        torch.testing.assert_close(logits(reloaded, x), before, rtol=1e-4, atol=1e-5)


def test_dense_contraction_gives_the_same_model_and_survives_reload(tmp_path):
    x = ids(2, 9)
    cores, dense = wrapped("llama"), wrapped("llama", contraction="dense")
    assert {m.tt.contraction for m in dense.modules() if isinstance(m, TTLinear)} == {"dense"}
    with torch.no_grad():
        torch.testing.assert_close(logits(dense, x), logits(cores, x), rtol=1e-5, atol=1e-5)
    hf_attn.save_wrapper(dense, tmp_path)
    reloaded = hf_attn.load_wrapper(tiny_model("llama", "sdpa"), tmp_path)
    assert {m.tt.contraction for m in reloaded.modules() if isinstance(m, TTLinear)} == {"dense"}


def test_unwrap_restores_the_exact_base():
    x = ids(1, 8)
    base = tiny_model("qwen2", "sdpa")
    with torch.no_grad():
        ref = base(input_ids=x).logits
    hf_attn.wrap(base, hf_attn.TTConfig(rank=2))
    hf_attn.unwrap(base)
    with torch.no_grad():
        torch.testing.assert_close(base(input_ids=x).logits, ref, rtol=0, atol=0)
    assert all(p.requires_grad for p in base.parameters())


def test_keep_base_false_frees_weights_and_only_merges():
    x = ids(1, 8)
    model = wrapped("llama", rank=FULL, keep_base=False)
    held = sum(p.numel() for p in model.parameters())
    report = tt_report(model)
    assert held == report["model_params_after"]
    with torch.no_grad():
        tt = model(input_ids=x).logits
    with pytest.raises(hf_attn.HfAttnError, match="keep_base=False"):
        hf_attn.unwrap(model)
    assert any(isinstance(m, TTLinear) for m in model.modules())  # the failed unwrap changed nothing
    hf_attn.unwrap(model, merge=True)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, tt, rtol=1e-4, atol=1e-5)


def test_mlp_targets_explicit_factors_and_report():
    model = wrapped(
        "llama", rank=3, target_modules=["up_proj", "down_proj"], num_cores=2, factors={"up_proj": [[8, 16], [8, 8]]}
    )
    report = tt_report(model)
    rows = {r["module"]: r for r in report["modules"]}
    assert len(rows) == 4 and all(n.endswith(("up_proj", "down_proj")) for n in rows)
    up = rows["model.layers.0.mlp.up_proj"]
    assert up["out_factors"] == [8, 16] and up["in_factors"] == [8, 8] and up["ranks"] == [1, 3, 1]
    down = rows["model.layers.0.mlp.down_proj"]
    assert down["out_factors"] == [1, 64] and down["tt_params"] == 3 * (128 + 64)
    assert report["wrapped_dense_params"] == 4 * 64 * 128
    assert report["wrapped_tt_params"] == sum(r["tt_params"] for r in rows.values())
    assert all(0 < r["rel_error"] < 1 for r in rows.values())
    base_total = sum(p.numel() for p in tiny_model("llama", "sdpa").parameters())
    assert report["model_params_before"] == base_total
    assert report["model_params_after"] == base_total - report["wrapped_dense_params"] + report["wrapped_tt_params"]


def test_regex_targets():
    model = wrapped("mistral", target_modules=r"model\.layers\.1\.self_attn\.[qk]_proj")
    assert sorted(n for n, m in model.named_modules() if isinstance(m, TTLinear)) == [
        "model.layers.1.self_attn.k_proj",
        "model.layers.1.self_attn.q_proj",
    ]


def test_lora_on_top_of_a_tt_model():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(wrapped("llama"), LoraConfig(r=2, target_modules=["up_proj"]))
    x = ids(1, 6)
    model(input_ids=x, labels=x).loss.backward()
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_clear_errors():
    with pytest.raises(hf_attn.HfAttnError, match="rank must be an integer >= 1"):
        hf_attn.TTConfig(rank=0)
    with pytest.raises(hf_attn.HfAttnError, match="num_cores"):
        hf_attn.TTConfig(num_cores=0)
    with pytest.raises(hf_attn.HfAttnError, match="contraction must be one of"):
        hf_attn.TTConfig(contraction="fast")
    with pytest.raises(hf_attn.HfAttnError, match=r"factors\['q_proj'\]"):
        hf_attn.TTConfig(factors={"q_proj": [[8, 8]]})
    with pytest.raises(hf_attn.HfAttnError, match="matched no module"):
        wrapped("llama", target_modules=["nope_proj"])
    model = tiny_model("llama", "sdpa")
    with pytest.raises(hf_attn.HfAttnError, match="q_proj: out_factors=.*product is the dimension 64"):
        hf_attn.wrap(model, hf_attn.TTConfig(factors={"q_proj": [[4, 4], [8, 8]]}))
    assert not any(isinstance(m, TTLinear) for m in model.modules())
    with pytest.raises(hf_attn.HfAttnError, match="lm_head: 97 cannot be split into 3 factors"):
        hf_attn.wrap(model, hf_attn.TTConfig(target_modules=["lm_head"]))  # vocab 97 is prime
    assert all(p.requires_grad for p in model.parameters())  # wrap undid its freezing
