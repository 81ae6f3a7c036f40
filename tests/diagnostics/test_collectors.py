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
