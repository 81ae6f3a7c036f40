"""The diagnostics hook: registered collectors and module hooks see one forward's attention maps."""
import torch

from hf_attn.diagnostics import collect, collectors, register_collector
from harness import ids, tiny_model


def test_collect_runs_registered_collectors_and_restores_sdpa():
    model = tiny_model("llama", "sdpa")
    seen = {}
    register_collector("test_probe", lambda ctx: seen.update(impl=ctx.attention, n=len(ctx.attentions)) or {"ok": 1})
    try:
        out = collect(model, ids(2, 8))
    finally:
        collectors.pop("test_probe")
    assert out["test_probe"] == {"ok": 1} and seen == {"impl": "sdpa", "n": 2}
    ent = torch.tensor(out["head_entropy"]["attention"])
    assert ent.shape == (2, 4) and (ent > 0).all()
    assert model.config._attn_implementation == "sdpa"


def test_module_hook_is_collected():
    model = tiny_model("llama", "holo")
    model.model.layers[0].mlp.hf_attn_diagnostics = lambda: {"probe": 3}
    assert collect(model, ids(1, 6))["model.layers.0.mlp"] == {"probe": 3}


def test_variant_and_wrapper_collectors_report_only_where_they_apply():
    """gauge row_std, prismatic routing and modulator health reach the trainer's diagnostics pass."""
    import hf_attn

    plain = collect(tiny_model("llama", "sdpa"), ids(1, 8))
    assert not {"gauge", "prismatic", "modulator_health"} & set(plain)

    gauge = collect(tiny_model("llama", "gauge"), ids(1, 8))["gauge"]
    assert any("row_std" in k for k in gauge) and all(v == v for v in gauge.values())

    routed = collect(hf_attn.wrap(tiny_model("llama", "sdpa"), hf_attn.PrismaticConfig()), ids(1, 8))["prismatic"]
    assert any("entropy" in k for k in routed)

    modulated = hf_attn.wrap(tiny_model("llama", "sdpa"), hf_attn.ResidualModulatorConfig())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CV-band warning is expected on a random tiny model
        health = collect(modulated, ids(1, 8))["modulator_health"]
    assert "alpha_mean" in health


def test_summarize_hands_each_summarizer_its_own_rows(tmp_path):
    from hf_attn.diagnostics import summarize

    seen = []
    register_collector("test_sum", lambda ctx: {}, summarize=lambda rows, out: seen.append((rows, out)) or {"n": len(rows)})
    try:
        rows = [{"step": 0, "test_sum": {"a": 1}}, {"step": 5, "other": {}}, {"step": 10, "test_sum": {"a": 2}}]
        out = summarize(rows, tmp_path)
        assert out["test_sum"] == {"n": 2} and "head_entropy" not in out
        assert seen == [([{"step": 0, "a": 1}, {"step": 10, "a": 2}], tmp_path)]
        register_collector("test_sum", lambda ctx: {})  # re-registering without a summarizer drops it
        assert "test_sum" not in summarize(rows, tmp_path)
    finally:
        collectors.pop("test_sum")


def test_a_window_hybrid_runs_diagnostics_without_maps():
    """Window hybrids cannot return attention maps; the pass still runs and the map collector says why."""
    import hf_attn
    from harness import ids, tiny_model
    from hf_attn.diagnostics import collect

    model = hf_attn.set_window(tiny_model("llama", "performer"), 4)
    out = collect(model, ids(1, 12))
    assert "window hybrid" in out["head_entropy"]["unavailable"]
