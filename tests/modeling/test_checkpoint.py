"""Full checkpoints with an hf-attn variant and/or wrapper: save, reload with a plain from_pretrained,
atomic writes, strict loading and the clear errors (modeling/checkpoint.py, families.py, loading.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, LlamaForSequenceClassification

import hf_attn
from harness import DECODER_CONFIGS, ids, logits, tiny_model
from toy_wrapper import wrappable, wrapped

AUTO = {"t5": AutoModelForSeq2SeqLM}


@pytest.mark.parametrize("arch", ["llama", "t5"])
@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_variant_round_trip(tmp_path, arch, variant):
    model = tiny_model(arch, variant)
    hf_attn.save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == f"hf_attn_{arch}" and config["hf_attn_variant"] == variant
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    reloaded = AUTO.get(arch, AutoModelForCausalLM).from_pretrained(tmp_path).eval()
    assert reloaded.config._attn_implementation == variant
    x = ids(2, 10)
    torch.testing.assert_close(logits(reloaded, x), logits(model, x), rtol=0, atol=0)
    # an explicit attn_implementation still wins (compare against sdpa on the same weights)
    sdpa = AUTO.get(arch, AutoModelForCausalLM).from_pretrained(tmp_path, attn_implementation="sdpa")
    assert sdpa.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("name", wrappable())
def test_wrapped_round_trip(tmp_path, name):
    model = wrapped("llama", name, attn="holo")
    hf_attn.save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["hf_attn_wrapper"]["wrapper_type"] == name
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.hf_attn_wrapper.config == model.hf_attn_wrapper.config
    x = ids(2, 10)
    torch.testing.assert_close(reloaded(input_ids=x).logits, model(input_ids=x).logits, rtol=0, atol=0)
    # the base weights are stored under stock names: unwrap gives the exact base model back
    base = tiny_model("llama", "holo")
    torch.testing.assert_close(hf_attn.unwrap(reloaded)(input_ids=x).logits, base(input_ids=x).logits, rtol=0, atol=0)
    # the folder doubles as a wrapper-only folder
    onto_base = hf_attn.load_wrapper(tiny_model("llama", "holo"), tmp_path)
    torch.testing.assert_close(onto_base(input_ids=x).logits, model(input_ids=x).logits, rtol=0, atol=0)


def test_wrapped_t5_and_resave(tmp_path):
    model = wrapped("t5", "toy_lowrank")
    x = ids(2, 9)
    hf_attn.save_pretrained(model, tmp_path / "a")
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "a")
    reloaded.save_pretrained(tmp_path / "b")  # the hf-attn class saves through hf-attn too
    again = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "b")
    torch.testing.assert_close(logits(again, x), logits(model, x), rtol=0, atol=0)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    first = wrapped("llama", "toy_lowrank")
    hf_attn.save_pretrained(first, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "tokenizer.json").write_text("{}")  # a file the next save must keep
    x = ids(1, 8)
    expected = first(input_ids=x).logits

    import hf_attn.adapters.base as base

    def crash(tensors, filename, metadata=None):  # dies halfway through writing the wrapper weights
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        hf_attn.save_pretrained(wrapped("llama", "toy_lowrank"), tmp_path / "ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left behind
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")(input_ids=x).logits, expected)
    monkeypatch.undo()

    # saving an unwrapped model over it: stale wrapper files go, other files stay
    hf_attn.save_pretrained(tiny_model("llama", "holo"), tmp_path / "ckpt")
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]


def _edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_unknown_variant_or_wrapper_is_a_clear_error(tmp_path):
    hf_attn.save_pretrained(wrapped("llama", "toy_lowrank"), tmp_path)
    _edit_config(tmp_path, hf_attn_variant="quantum_foam", hf_attn_version="9.9.9")
    with pytest.raises(hf_attn.HfAttnError, match=r"variant 'quantum_foam' \(saved with hf-attn 9\.9\.9; this installation is hf-attn 0\.1\.0\)"):
        AutoConfig.from_pretrained(tmp_path)
    _edit_config(tmp_path, hf_attn_variant=None, hf_attn_wrapper={"wrapper_type": "future_wrapper"})
    with pytest.raises(hf_attn.HfAttnError, match="wrapper 'future_wrapper'.*Upgrade hf-attn"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_strict_loading_and_unsupported_heads(tmp_path):
    from safetensors.torch import load_file, save_file

    hf_attn.save_pretrained(wrapped("llama", "toy_lowrank"), tmp_path)
    tensors = load_file(tmp_path / "hf_attn_wrapper.safetensors")
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, tmp_path / "hf_attn_wrapper.safetensors")
    with pytest.raises(hf_attn.HfAttnError, match="do not fit this model"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors.pop("model.norm.weight")
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(hf_attn.HfAttnError, match="missing_keys.*model.norm.weight"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    classifier = LlamaForSequenceClassification(DECODER_CONFIGS["llama"]())
    with pytest.raises(hf_attn.HfAttnError, match="LlamaForSequenceClassification"):
        hf_attn.save_pretrained(classifier, tmp_path / "clf")


def test_without_hf_attn_the_checkpoint_is_refused(tmp_path):
    """A fresh process that never imports hf_attn must not load the checkpoint as a plain Llama."""
    hf_attn.save_pretrained(wrapped("llama", "toy_lowrank"), tmp_path)
    code = (
        "import sys\nfrom transformers import AutoModelForCausalLM\n"
        f"try:\n    AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})\n"
        "except (ValueError, KeyError) as e:\n    print('REFUSED', e)\nelse:\n    print('LOADED')\n"
        "assert 'hf_attn' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED" in out.stdout and "hf_attn_llama" in out.stdout


def test_save_keeps_safetensors_files_it_did_not_write(tmp_path):
    """Like transformers' save_pretrained: only the previous checkpoint's own files are replaced."""
    ckpt = tmp_path / "ckpt"
    hf_attn.save_pretrained(wrapped("llama", "toy_lowrank"), ckpt, max_shard_size="20KB")
    assert len(list(ckpt.glob("model-*-of-*.safetensors"))) > 1
    (ckpt / "ema.safetensors").write_bytes(b"the user's EMA weights")
    (ckpt / "adapter_model.safetensors").write_bytes(b"a PEFT adapter")
    hf_attn.save_pretrained(tiny_model("llama", "holo"), ckpt)
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["adapter_model.safetensors", "config.json", "ema.safetensors", "generation_config.json",
                     "model.safetensors"]  # stale shards, index and wrapper files went; the user's stayed
    assert (ckpt / "ema.safetensors").read_bytes() == b"the user's EMA weights"


def test_save_records_the_variant_in_use_after_a_switch(tmp_path):
    model = hf_attn.set_attention(wrapped("llama", "toy_lowrank", "sdpa"), "holo")
    hf_attn.save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["hf_attn_variant"] == "holo"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "holo"
    x = ids(2, 10)
    torch.testing.assert_close(logits(reloaded, x), logits(model, x), rtol=0, atol=0)


def test_save_refuses_a_wrapper_whose_attention_was_switched_behind_its_back(tmp_path):
    model = hf_attn.wrap(tiny_model("llama", "sdpa"), hf_attn.GaugeConfig())
    hf_attn.save_pretrained(model, tmp_path / "ok")  # gauge re-applies itself on load: the base's sdpa is stored
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["hf_attn_variant"] is None
    model.set_attn_implementation("holo")  # transformers' own switch, past hf_attn.set_attention's check
    with pytest.raises(hf_attn.HfAttnError, match="needs attention 'gauge' but the model runs 'holo'.*unwrap"):
        hf_attn.save_pretrained(model, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("variant,recurrent", [("holo", True), ("performer", True), ("gauge", False)])
def test_generate_decodes_recurrent_checkpoints_from_a_recurrent_cache_by_default(tmp_path, variant, recurrent):
    """No cache argument: a recurrent variant's checkpoint decodes from a RecurrentCache (constant memory), with the
    tokens an explicit one gives; beam search, other variants and a chosen cache keep transformers' choice."""
    from transformers import DynamicCache, GenerationConfig
    from transformers.generation.configuration_utils import GenerationMode

    from hf_attn.utils import CACHE_KWARG

    hf_attn.save_pretrained(tiny_model("llama", variant), tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    kind = hf_attn.RecurrentCache if recurrent else DynamicCache
    config = GenerationConfig(max_new_tokens=5, do_sample=False, pad_token_id=0, return_dict_in_generate=True)
    out = model.generate(ids(2, 9), generation_config=config)
    assert type(getattr(out, CACHE_KWARG)) is kind
    if recurrent:
        explicit = model.generate(ids(2, 9), generation_config=config, **{CACHE_KWARG: hf_attn.RecurrentCache()})
        assert torch.equal(out.sequences, explicit.sequences)
    chosen_elsewhere = ((GenerationMode.BEAM_SEARCH, {}),
                        (GenerationMode.GREEDY_SEARCH, {"cache_implementation": "dynamic"}))
    for mode, chosen in chosen_elsewhere:
        kwargs = {}
        model._prepare_cache_for_generation(GenerationConfig(**chosen), kwargs, mode, 2, 16)
        assert type(kwargs[CACHE_KWARG]) is DynamicCache


@pytest.mark.parametrize("variant,recurrent", [("holo", True), ("performer", True), ("gauge", False)])
def test_static_cache_implementation_gives_recurrent_checkpoints_a_static_recurrent_cache(tmp_path, variant,
                                                                                           recurrent):
    """`cache_implementation="static"` (transformers' switch for compiled decoding, also read from a checkpoint's
    generation_config.json): a recurrent variant decodes from `RecurrentCache(static=True)`, the compileable state,
    with the tokens an explicit one gives; other variants get transformers' StaticCache."""
    from transformers import GenerationConfig, StaticCache

    from hf_attn.utils import CACHE_KWARG

    hf_attn.save_pretrained(tiny_model("llama", variant), tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    model.generation_config.cache_implementation = "static"
    config = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, return_dict_in_generate=True)
    out = model.generate(ids(2, 9), **config)
    cache = getattr(out, CACHE_KWARG)
    if not recurrent:
        assert type(cache) is StaticCache
        return
    assert type(cache) is hf_attn.RecurrentCache and cache.static and cache.is_compileable
    model.generation_config.cache_implementation = None
    explicit = model.generate(ids(2, 9), **config, **{CACHE_KWARG: hf_attn.RecurrentCache(static=True)})
    assert torch.equal(out.sequences, explicit.sequences)
