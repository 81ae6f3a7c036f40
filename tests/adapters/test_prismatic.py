"""Prismatic v2/v3 (adapters/prismatic): views, router, RoPE-vs-ALiBi gate, metrics, wrapper API."""
import math
import warnings

import pytest
import torch

import hf_attn
from hf_attn.adapters.prismatic import PrismaticConfig, force_expert, prismatic_layers, routing_metrics
from hf_attn.adapters.prismatic.perturb import ViewCache, coefficients, merge, modulation, sign_mask, view
from hf_attn.adapters.prismatic.rope_alibi import alibi_slopes
from harness import ARCHS, DECODER_CONFIGS, cache_gap, future_leak, ids, logits, padding_gap, tiny_model
from references import alibi_reference


def wrapped(arch, dtype=torch.float32, **kw):
    model = hf_attn.wrap(tiny_model(arch, "sdpa", dtype=dtype), PrismaticConfig(**kw))
    with torch.no_grad():  # input-dependent routers, so the tests see real routing, not the init bias
        for layer in prismatic_layers(model).values():
            layer.router.proj.weight.normal_(0, 0.5)
    return model


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("field,value,allowed", [
    ("perturbation_strategy", "middle", "dual_sided"), ("perturbation_mode", "chaos", "attractive"),
    ("focal_pattern", "zoom", "radial_helical"), ("version", "v4", "v2"), ("router_pooling", "max", "first"),
])
def test_config_rejects_unknown_choices_naming_allowed(field, value, allowed):
    with pytest.raises(hf_attn.HfAttnError, match=f"{field}.*{allowed}"):
        PrismaticConfig(**{field: value})


def test_config_ranges_defaults_and_round_trip():
    cfg = PrismaticConfig()
    assert (cfg.num_experts, cfg.perturbation_scale, cfg.sparsity) == (3, 0.8, 0.1)
    assert cfg.focal_length == pytest.approx(math.pi * 100) and cfg.helical_wavelength == pytest.approx(math.pi * 1000)
    assert cfg.collapse_threshold == 0.95
    for bad in (dict(num_experts=1), dict(sparsity=0.0), dict(perturbation_scale=-1), dict(focal_length=0),
                dict(architectures=["alibi", "rope"], version="v3"), dict(architectures=["nope"])):
        with pytest.raises(hf_attn.HfAttnError):
            PrismaticConfig(**bad)
    assert PrismaticConfig(perturb_by_magnitude=False).perturbation_strategy == "random"
    cfg = PrismaticConfig(version="v3", num_experts=4, architectures=["rope", "rope", "alibi"])
    assert [cfg.architecture(i) for i in range(4)] == ["rope", "rope", "alibi", "rope"]
    assert PrismaticConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------- perturbations
@pytest.mark.parametrize("strategy", ["dual_sided", "top_only", "bottom_only", "random"])
@pytest.mark.parametrize("sparsity", [0.1, 0.37])
def test_mask_sparsity_and_magnitude_band(strategy, sparsity):
    w = torch.randn(37, 29)
    cfg = PrismaticConfig(perturbation_strategy=strategy, sparsity=sparsity)
    mask = sign_mask(w, cfg, "w", 1)
    mag = w.abs().reshape(-1)
    assert abs(int((mask != 0).sum()) - sparsity * w.numel()) <= 1
    top, bottom, rest = mag[mask < 0], mag[mask > 0], mag[mask == 0]  # attractive: top -1, bottom +1
    if strategy == "random":
        assert bottom.numel() == 0
        assert not torch.equal(mask, sign_mask(w, cfg, "w", 2))  # each expert draws its own subset
        return
    if top.numel():
        assert top.min() >= rest.max()
    if bottom.numel():
        assert bottom.max() <= rest.min()
    if strategy == "dual_sided":
        assert abs(top.numel() - bottom.numel()) <= 1
    assert (top.numel() == 0) == (strategy == "bottom_only") and (bottom.numel() == 0) == (strategy == "top_only")


def test_modes_set_band_signs():
    w = torch.randn(20, 10)
    top = w.abs().reshape(-1).argmax()
    bottom = w.abs().reshape(-1).argmin()
    for mode, signs in {"attractive": (-1, 1), "repulsive": (1, -1), "noise": (1, 1)}.items():
        m = sign_mask(w, PrismaticConfig(perturbation_mode=mode), "w", 1)
        assert (m[top].item(), m[bottom].item()) == signs


@pytest.mark.parametrize("pattern", ["radial_helical", "radial", "helical", "none"])
def test_focal_pattern_matches_formula(pattern):
    cfg = PrismaticConfig(focal_pattern=pattern, num_experts=4, focal_length=3.0, helical_wavelength=7.0)
    n, expert = 23, 2
    got = modulation(n, expert, cfg)
    for i in range(n):
        d = abs(i - expert / 4 * n)
        radial = math.exp(-d / 3.0) if "radial" in pattern else 1.0
        helical = math.cos(2 * math.pi * d / 7.0 + expert * 2 * math.pi / 4) if "helical" in pattern else 1.0
        assert got[i].item() == pytest.approx(radial * helical, abs=1e-6)


def test_views_and_merge():
    w = torch.randn(12, 8)
    for mode in ("attractive", "repulsive", "noise"):
        cfg = PrismaticConfig(perturbation_mode=mode, focal_pattern="none", num_experts=3)
        coef = coefficients(w, cfg, "w")
        assert torch.equal(coef, coefficients(w, cfg, "w"))  # deterministic, noise included (seeded)
        assert view(w, coef, 0, cfg) is w
        mask = sign_mask(w, cfg, "w", 1).view_as(w)
        v1 = view(w, coef, 1, cfg)
        if mode != "noise":  # attractive: top W - s W, bottom W + s W; untouched elsewhere
            torch.testing.assert_close(v1, w * (1 + 0.8 * mask))
        assert torch.equal(v1[mask == 0], w[mask == 0])
        r = torch.softmax(torch.randn(4, 3), -1)
        views = torch.stack([view(w, coef, k, cfg) for k in range(3)])
        torch.testing.assert_close(merge(w, coef, r, cfg), torch.einsum("bk,kij->bij", r, views))
        torch.testing.assert_close(merge(w, coef, r[0], cfg), torch.einsum("k,kij->ij", r[0], views))


def test_view_cache_reuses_until_weights_change():
    w = torch.randn(10, 10)
    cache = ViewCache(PrismaticConfig(mask_refresh_steps=2))
    first = cache.get("w", w)
    assert cache.get("w", w) is first
    w.mul_(-1)  # one in-place update (optimizer step): kept, refresh every 2 updates
    assert cache.get("w", w) is first
    w.add_(1.0)
    assert cache.get("w", w) is not first


def test_default_reuses_the_selection_but_views_follow_the_current_weights():
    cfg = PrismaticConfig()
    assert cfg.mask_refresh_steps == 100
    w = torch.randn(10, 10)
    cache = ViewCache(cfg)
    coef = cache.get("w", w)
    w.mul_(2.0)  # an optimiser step: the selection is kept, the perturbation values scale with W
    assert cache.get("w", w) is coef
    torch.testing.assert_close(view(w, coef, 1, cfg), w + coef[0] * w)


# ---------------------------------------------------------------- wrapped models
@pytest.mark.parametrize("arch", ARCHS)
def test_v2_expert0_is_base_and_harness(arch):
    base = tiny_model(arch, "sdpa")
    model = wrapped(arch)
    x = ids(2, 9)
    with torch.no_grad():
        base_logits = logits(base, x)
        assert (logits(model, x) - base_logits).abs().max() > 1e-4  # perturbed views are in play
        force_expert(model, 0)
        assert torch.equal(logits(model, x), base_logits)
        force_expert(model, None)
    assert future_leak(model) == 0.0
    assert padding_gap(model, "left") < 1e-5 and padding_gap(model, "right") < 1e-5
    same, gap = cache_gap(model)
    assert same and gap < 1e-4


@pytest.mark.parametrize("arch", list(DECODER_CONFIGS))
def test_v2_whole_attention_block(arch):
    base = tiny_model(arch, "sdpa")
    model = wrapped(arch, target_modules=["self_attn"])
    x = ids(2, 9)
    with torch.no_grad():
        force_expert(model, 0)
        assert torch.equal(logits(model, x), logits(base, x))
        force_expert(model, None)
    assert future_leak(model) == 0.0 and padding_gap(model, "left") < 1e-5
    assert cache_gap(model)[0]


def test_bf16_matches_fp32():
    x = ids(2, 9)
    with torch.no_grad():
        ref = logits(wrapped("llama"), x)
        got = logits(wrapped("llama", dtype=torch.bfloat16), x)
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    assert (got.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_v3_alibi_runs_under_cpu_bf16_autocast_close_to_fp32():
    """Under autocast the ALiBi path gets fp32 RoPE'd q/k with a bf16 v, as sdpa would; it casts them like sdpa.
    Bound as test_bf16_matches_fp32 (bf16 rounding through two layers)."""
    model = wrapped("llama", version="v3", num_experts=2, perturbation_scale=0.0, freeze_base=False)
    force_expert(model, 1)
    x = ids(2, 9)
    with torch.no_grad():
        ref = logits(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(input_ids=x, labels=x)
    got.loss.backward()
    assert torch.isfinite(got.logits).all() and (got.logits.float() - ref).abs().max() < 0.05 * ref.abs().max()
    grads = [p.grad for n, p in model.named_parameters() if "q_proj" in n or "k_proj" in n]  # routing is forced
    assert grads and all(g is not None and torch.isfinite(g).all() and g.norm() > 0 for g in grads)


@pytest.mark.parametrize("arch", list(DECODER_CONFIGS))
def test_v3_rope_is_stock_alibi_is_reference(arch):
    base = tiny_model(arch, "sdpa")
    model = wrapped(arch, version="v3", num_experts=2, perturbation_scale=0.0)
    x = ids(2, 9)
    with torch.no_grad():
        force_expert(model, 0)
        assert torch.equal(logits(model, x), logits(base, x))
        force_expert(model, 1)
        layer = model.model.layers[0].self_attn
        attn = layer.base_layer
        h = torch.randn(2, 9, 64)
        out, _ = layer(h, position_embeddings=model.model.rotary_emb(h, torch.arange(9)[None]), attention_mask=None)
        q = attn.q_proj(h).view(2, 9, -1, attn.head_dim)
        k = attn.k_proj(h).view(2, 9, -1, attn.head_dim)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        v = attn.v_proj(h).view(2, 9, -1, attn.head_dim)
        ref = alibi_reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn.scaling)
        ref = ref.reshape(2, 9, -1) @ attn.o_proj.weight.double().T
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert future_leak(model) == 0.0 and padding_gap(model, "left") < 1e-5 and padding_gap(model, "right") < 1e-5
    same, gap = cache_gap(model)
    assert same and gap < 1e-4


def test_v3_mixed_batch_gates_per_sequence():
    model = wrapped("llama", version="v3", num_experts=2)
    x = ids(8, 9, seed=3)
    with torch.no_grad():
        model(input_ids=x)
    gates = [layer.stats.routing[:, 0] > 0.5 for layer in prismatic_layers(model).values()]
    assert any(0 < int(g.sum()) < 8 for g in gates)  # some layers mix RoPE and ALiBi sequences
    with torch.no_grad():
        batch = logits(model, x)
        single = torch.cat([logits(model, x[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)
    assert future_leak(model) == 0.0 and padding_gap(model, "left") < 1e-5
    assert cache_gap(model)[0]


def test_v3_rejects_non_attention_targets():
    with pytest.raises(hf_attn.HfAttnError, match="v3"):
        hf_attn.wrap(tiny_model("llama", "sdpa"), PrismaticConfig(version="v3", target_modules=["mlp"]))
    with pytest.raises(hf_attn.HfAttnError, match="v3"):
        hf_attn.wrap(tiny_model("t5", "sdpa"), PrismaticConfig(version="v3", target_modules=["SelfAttention"]))
    with pytest.raises(hf_attn.HfAttnError, match="projections"):
        hf_attn.wrap(tiny_model("t5", "sdpa"), PrismaticConfig(target_modules=["SelfAttention"]))
    with pytest.raises(hf_attn.HfAttnError, match="inside"):
        hf_attn.wrap(tiny_model("llama", "sdpa"), PrismaticConfig(target_modules=["mlp", "down_proj"]))


@pytest.mark.parametrize("kw", [dict(), dict(version="v3", num_experts=2, perturbation_scale=0.0)])
def test_gradients_reach_base_and_router(kw):
    model = wrapped("llama", freeze_base=False, **kw)
    model.train()
    x = ids(2, 9)
    model(input_ids=x, labels=x).loss.backward()
    layer = next(iter(prismatic_layers(model).values()))
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_alibi_slopes_known_values():
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2**-2, 2**-4, 2**-6, 2**-8]))
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]))


# ---------------------------------------------------------------- metrics, save/load/unwrap
def test_routing_metrics_and_collapse_warning():
    model = wrapped("llama", collapse_steps=3)
    x = ids(3, 9)
    with torch.no_grad():
        model(input_ids=x)
    m = routing_metrics(model)
    names = list(prismatic_layers(model))
    assert len(names) == 2
    weights = [m[f"{names[0]}/expert_{k}_weight"] for k in range(3)]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert m[f"{names[0]}/concentration"] == pytest.approx(max(weights))
    assert 0 <= m["routing/balance"] <= 1 and m["routing/entropy"] <= math.log(3) + 1e-6
    force_expert(model, 1)
    model.train()
    for step in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            routing_metrics(model)  # no warning before the third collapsed step
        model(input_ids=x)
    with pytest.warns(RuntimeWarning, match="collapsed: expert 1"):
        m = routing_metrics(model)
    assert m["routing/collapsed_modules"] == 2 and m["routing/balance"] == 0.0


def test_save_load_unwrap_round_trip(tmp_path):
    x = ids(2, 9)
    with torch.no_grad():
        base_logits = logits(tiny_model("llama", "sdpa"), x)
        model = wrapped("llama", version="v3", num_experts=3)
        out = logits(model, x)
    hf_attn.save_wrapper(model, tmp_path)
    reloaded = hf_attn.load_wrapper(tiny_model("llama", "sdpa"), tmp_path)
    assert reloaded.hf_attn_wrapper.config == model.hf_attn_wrapper.config
    with torch.no_grad():
        assert torch.equal(logits(reloaded, x), out)
    hf_attn.unwrap(model)
    assert not any(type(m).__module__.startswith("hf_attn.adapters.prismatic") for m in model.modules())
    assert all("router" not in n for n, _ in model.named_parameters())
    assert not model._forward_pre_hooks
    with torch.no_grad():
        assert torch.equal(logits(model, x), base_logits)


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_new_parameters_and_buffers_are_created_on_the_base_modules_device(version):
    """A model already on an accelerator gets its routers and expert buffers there too (seen on the H100:
    cuda vs cpu addmm for the router, and v3's RoPE-expert mask)."""
    model = tiny_model("llama", "sdpa").to("meta")
    hf_attn.wrap(model, PrismaticConfig(version=version))
    routers = [m.router for m in model.modules() if hasattr(m, "router")]
    assert routers
    off = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != "meta"]
    assert not off, off


def test_mask_drift_counts_selected_elements_that_left_the_selection():
    """The measurement behind mask_refresh_steps > 1 (the trainer's `prismatic` collector reports it)."""
    from hf_attn.adapters.prismatic.metrics import mask_drift, selections

    model = hf_attn.wrap(tiny_model("llama", "sdpa"), PrismaticConfig(version="v2", sparsity=0.1))
    layers = prismatic_layers(model)
    before = selections(layers)
    assert before and all(abs(int((m != 0).sum()) - round(0.1 * m.numel())) <= 1 for m in before.values())
    assert mask_drift(before, selections(layers))["max"] == 0.0
    name = next(n for n, p in model.named_parameters() if n.endswith("mlp.base_layer.up_proj.weight"))
    with torch.no_grad():
        model.get_parameter(name).mul_(-1).add_(torch.randn_like(model.get_parameter(name)))  # a new ranking
    drift = mask_drift(before, selections(layers))
    assert 0 < drift["max"] <= 1 and drift["mean"] < drift["max"] and drift["tensors"] == len(before)


def test_param_groups_put_routers_at_their_own_lr():
    config = PrismaticConfig(version="v2", freeze_base=False, router_lr_scale=50.0)
    model = hf_attn.wrap(tiny_model("llama", "sdpa"), config)
    (group,) = config.param_groups(model, 2e-5)
    routers = {id(p) for n, p in model.named_parameters() if ".router." in n}
    assert group["lr"] == pytest.approx(1e-3) and {id(p) for p in group["params"]} == routers and routers
    with pytest.raises(hf_attn.HfAttnError, match="router_lr_scale"):
        PrismaticConfig(router_lr_scale=0.0)
