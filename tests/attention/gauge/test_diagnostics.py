"""Gauge diagnostics are recorded during the ordinary forward and agree with the full attention maps."""
import pytest
import torch

import hf_attn
from hf_attn.attention.gauge import diagnostics as diag
from harness import ids, recording, tiny_model


def _row_std_from_maps(weights, rows):
    """Independent row_std: from the materialised (B, H, T, T) causal maps of output_attentions."""
    w = weights[:, :, rows].double()
    n = torch.tensor(rows, dtype=torch.float64).add(1).view(1, 1, -1)  # causal row r sees r + 1 keys
    vis = torch.ones(len(rows), w.shape[-1], dtype=torch.bool)
    for i, r in enumerate(rows):
        vis[i, r + 1 :] = False
    std = (((w - 1 / n[..., None]) ** 2) * vis).sum(-1).div(n).sqrt()
    keep = (n >= 2).expand_as(std)
    return (std * keep).sum((0, 2)) / keep.sum((0, 2))


def test_recorded_in_the_same_forward_and_matching_the_maps():
    model = tiny_model("llama", "gauge")
    x = ids(2, 24)
    with diag.collect(model, rows=8, warn=False) as store, recording("gauge") as calls, torch.no_grad():
        out = model(input_ids=x, output_attentions=True)
    assert len(calls) == 2  # one call per layer: no second forward
    rows = torch.linspace(0, 23, 8).round().long().unique().tolist()
    summary = store.summary()
    assert set(summary) == {"model.layers.0.self_attn", "model.layers.1.self_attn"}
    for layer, maps in enumerate(out.attentions):
        rec = summary[f"model.layers.{layer}.self_attn"]
        torch.testing.assert_close(torch.tensor(rec["row_std"], dtype=torch.float64), _row_std_from_maps(maps, rows),
                                   rtol=1e-4, atol=1e-6)
        assert rec["phi_std"] == [0.0] * 4 and all(s > 0 for s in rec["kl_std"]) and all(d > 0 for d in rec["mu_dist"])
    with torch.no_grad():
        model(input_ids=x)
    assert not any(hasattr(m, "gauge_diagnostics") for m in model.modules())


def test_uniform_layers_warn_and_sharp_ones_do_not():
    model = tiny_model("llama", "gauge")
    model.config.gauge_kappa = 1e4  # everything equal: uniform rows
    with pytest.warns(UserWarning, match="heads of model.layers.0.self_attn are uniform"), torch.no_grad():
        with diag.collect(model) as store:
            model(input_ids=ids(1, 16))
    assert store.summary()["model.layers.0.self_attn"]["warning"]
    model.config.gauge_kappa = 1e-3  # near one-hot rows
    with diag.collect(model) as store, torch.no_grad():
        model(input_ids=ids(1, 16))
    assert all(lab == "sharp" for r in store.summary().values() for lab in r["labels"])
    assert store.mean_row_std() > 0.1


def test_learned_frames_show_up_and_scalars_are_flat():
    model = hf_attn.wrap(tiny_model("qwen2", "sdpa"), hf_attn.GaugeConfig(init_std=0.05))
    with diag.collect(model, warn=False) as store, torch.no_grad():
        model(input_ids=ids(1, 12))
    scalars = store.scalars()
    assert scalars["gauge/model.layers.0.self_attn/phi_std"] > 0
    assert all(isinstance(v, float) for v in scalars.values())
