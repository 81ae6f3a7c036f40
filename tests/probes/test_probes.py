"""Weight-geometry probes on synthetic matrices with known answers, and `hf-attn probe` on tiny models."""
import json
import math

import pytest
import torch

from hf_attn.cli import main
from hf_attn.probes import ProbeOptions, catalog, embedding_probe, run_probes
from hf_attn.probes import weights as W
from hf_attn.probes.catalog import WeightEntry
from harness import tiny_model


def _orthogonal(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]


def _entry(name, role, w, layer=0):
    return WeightEntry(name, role, "model", layer, False, w)


def test_embedding_probe_recovers_known_spectrum():
    dim, vocab = 48, 30000
    std = torch.cat([torch.full((8,), 2.0), torch.full((40,), 0.25)]).double()
    e = (torch.randn(vocab, dim, dtype=torch.float64) * std) @ _orthogonal(dim, 1).T
    lam = std**2
    result = embedding_probe(e.float(), rows=vocab, simplices=300)
    assert result["participation_ratio"] == pytest.approx(float(lam.sum() ** 2 / (lam**2).sum()), rel=0.03)
    cum = lam.sort(descending=True).values.cumsum(0) / lam.sum()
    assert result["dims_for_variance"]["80%"] == int((cum < 0.8).sum()) + 1
    assert result["pentachoron"]["valid_fraction"] == 1.0 and result["pentachoron"]["cv_random"] > 0


def test_svd_probe_recovers_known_effective_rank():
    s = torch.tensor([5.0, 3.0, 1.0, 0.5] + [0.0] * 12, dtype=torch.float64)
    w = _orthogonal(40, 2)[:, :16] @ torch.diag(s) @ _orthogonal(16, 3).T
    stats = W.svd_probe(_entry("x.q_proj.weight", "q", w.float()))
    p = s[:4] / s.sum()
    assert stats["stable_rank"] == pytest.approx(float((s**2).sum() / 25), rel=1e-4)
    assert stats["effective_rank"] == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-3)
    assert stats["rank_90"] == 3 and stats["active_frac"] == pytest.approx(4 / 16)


def test_qk_manifold_symmetric_and_grouped_query():
    wq = torch.randn(16, 32)
    same = W.qk_manifold_probe(_entry("a.q", "q", wq), _entry("a.k", "k", wq), None)
    assert same["asymmetry"] == pytest.approx(0.0, abs=1e-6)
    assert same["negative_frac"] == 0.0 and same["positive_frac"] == pytest.approx(16 / 32)
    gqa = W.qk_manifold_probe(_entry("a.q", "q", torch.randn(16, 32)), _entry("a.k", "k", torch.randn(8, 32)), 2)
    assert "skipped" not in gqa and gqa["positive_frac"] + gqa["negative_frac"] == pytest.approx(16 / 32)
    assert 0 < gqa["positive_balance"] < 1


def test_position_bias_dead_neurons_and_sparsity():
    rpb = torch.zeros(10, 4)
    rpb[0, 0] = rpb[2, 1] = rpb[9, 2] = rpb[5, 3] = 1.0  # local, local, global, mixed
    pb = W.position_bias_probe([_entry("x.relative_attention_bias.weight", "position_bias", rpb)])[0]
    assert (pb["local"], pb["global"], pb["mixed"]) == (2, 1, 1)
    up, down = torch.randn(20, 8), torch.randn(8, 20)
    up[:5] = 0
    dead = W.dead_neuron_probe([_entry("m.up_proj.weight", "up", up), _entry("m.down_proj.weight", "down", down)])
    assert dead[0]["dead_frac"] == pytest.approx(5 / 20)
    sp = W.sparsity_probe([_entry("m.q_proj.weight", "q", torch.tensor([[0.00005, 0.0005, 0.005, 0.05, 0.5]]))])
    assert sp["model/q"] == pytest.approx({"<0.0001": 0.2, "<0.001": 0.4, "<0.01": 0.6, "<0.1": 0.8})


def test_catalog_and_run_on_tiny_llama():
    model = tiny_model("qwen2", "sdpa")
    roles = {e.name: e.role for e in catalog(model)}
    assert roles["model.layers.1.self_attn.k_proj.weight"] == "k" and roles["model.layers.1.mlp.down_proj.weight"] == "down"
    assert roles["model.layers.1.self_attn.k_proj.bias"] == "other"
    result = run_probes(model, options=ProbeOptions(max_layers=1, simplices=50), progress=False)
    assert {r["layer"] for r in result["svd"]} == {0}
    assert result["summary"]["q_sparsity<0.1/model/q"] > 0.5


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_probe_command_writes_json_and_plots(arch, tmp_path, capsys):
    tiny_model(arch, "sdpa").save_pretrained(tmp_path / "model")
    rc = main(["probe", str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--quiet", "--simplices", "50", "--embedding-rows", "50"])
    assert rc == 0
    result = json.loads((tmp_path / "out" / "probes.json").read_text())
    assert (tmp_path / "out" / "probes.png").stat().st_size > 10_000
    assert result["embedding"]["dim"] == 64 and len(result["norms"]) >= 4
    if arch == "t5":
        assert {pb["location"] for pb in result["position_bias"]} == {"encoder", "decoder"}
        assert any(r["group"] == "decoder/cross_q" for r in result["qk_manifold"])
    assert "probes in" in capsys.readouterr().out
    assert main(["probe", str(tmp_path / "nothing_here"), "--out", str(tmp_path / "o2"), "--quiet"]) == 2
