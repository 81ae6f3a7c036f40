"""Entropy-ranked head pruning: ranking order, masking really silences heads, the table from a trained run."""
import pytest
import torch

from hf_attn import HfAttnError
from hf_attn.harness.prune import HeadMask, head_ranking, prune_run
from hf_attn.train import train
from harness import ids, tiny_model
from train_cases import tiny_cfg


def test_ranking_orders():
    ent = [[0.5, 0.1], [0.9, 0.3]]
    assert head_ranking(ent, "low") == [(0, 1), (1, 1), (0, 0), (1, 0)]
    assert head_ranking(ent, "high") == [(1, 0), (0, 0), (1, 1), (0, 1)]
    assert sorted(head_ranking(ent, "random")) == sorted(head_ranking(ent, "low"))
    with pytest.raises(HfAttnError, match="order must be"):
        head_ranking(ent, "middle")


def test_mask_silences_exactly_the_chosen_heads():
    model = tiny_model("llama", "holo")
    x = ids(1, 8)
    base = model(input_ids=x).logits
    mask = HeadMask(model, 4)
    mask.set([(0, 1)])
    seen = {}
    h = model.model.layers[0].self_attn.o_proj.register_forward_hook(lambda m, a, o: seen.setdefault("x", a[0]))
    pruned = model(input_ids=x).logits
    h.remove()
    heads = seen["x"].view(1, 8, 4, 16)
    assert (heads[:, :, 1] == 0).all() and (heads[:, :, 0] != 0).any()
    assert not torch.allclose(pruned, base)
    mask.remove()
    torch.testing.assert_close(model(input_ids=x).logits, base, rtol=0, atol=0)


def test_prune_trained_run_writes_table(tmp_path):
    cfg = tiny_cfg(tmp_path, task="copy", model={"attention": "performer"})
    train(cfg)
    rows = prune_run(cfg.run_dir, counts=[0, 1, 2])
    assert [(r["order"], r["heads_pruned"]) for r in rows][:3] == [("low", 0), ("low", 1), ("low", 2)]
    assert len(rows) == 9 and len({r["quality"] for r in rows if r["heads_pruned"] == 0}) == 1
    table = (cfg.run_dir / "pruning.md").read_text()
    assert "| heads pruned | low | high | random |" in table
    with pytest.raises(HfAttnError, match="within"):
        prune_run(cfg.run_dir, counts=[3])
