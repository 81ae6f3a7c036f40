"""Batches: deterministic per (seed, step, micro, rank), the copy layout, held-out windows, corpus errors."""
import math

import pytest
import torch

from hf_attn import HfAttnError
from hf_attn.evaluate import IGNORE
from hf_attn.evaluate import metrics as eval_metrics
from hf_attn.train.data import build_data
from train_cases import tiny_cfg


def test_copy_task_layout_and_determinism(tmp_path):
    data = build_data(tiny_cfg(tmp_path, task="copy", data={"copy_vocab": 8}))
    b = data.train_batch(3, 0, 0)
    L = data.length
    assert b.input_ids.shape == (2, 2 * L + 1) and (b.input_ids[:, L] == 0).all()
    assert torch.equal(b.input_ids[:, :L], b.input_ids[:, L + 1 :])
    assert (b.labels[:, : L + 1] == IGNORE).all() and torch.equal(b.labels[:, L + 1 :], b.input_ids[:, L + 1 :])
    assert torch.equal(b.input_ids, data.train_batch(3, 0, 0).input_ids)
    assert not torch.equal(b.input_ids, data.train_batch(3, 0, 1).input_ids)  # each process its own batch
    assert not torch.equal(b.input_ids, data.train_batch(4, 0, 0).input_ids)


def test_char_lm_on_file_corpus(tmp_path, corpus):
    data = build_data(tiny_cfg(tmp_path, task="char", data={"corpus": str(corpus)}))
    assert data.vocab_size == 256 and "corpus.txt" in data.description and "chars" in data.description
    e0, e1 = data.eval_batch(0), data.eval_batch(1)
    assert e0.input_ids.shape == (2, 17) and not torch.equal(e0.input_ids, e1.input_ids)
    text = corpus.read_text().encode()
    held_out = text[int(len(text) * 0.9):]
    assert bytes(e0.input_ids[0].tolist()) in held_out


def test_corpus_errors(tmp_path):
    with pytest.raises(HfAttnError, match="neither 'wiki' nor an existing file"):
        build_data(tiny_cfg(tmp_path, task="char", data={"corpus": str(tmp_path / "missing.txt")}))
    small = tmp_path / "small.txt"
    small.write_text("abc " * 20)
    with pytest.raises(HfAttnError, match="test split has"):
        build_data(tiny_cfg(tmp_path, task="char", data={"corpus": str(small)}))


def test_eval_metrics():
    m = eval_metrics(2 * math.log(2) * 10, 10, 5, "char")
    assert m["eval_bpc"] == pytest.approx(2.0) and m["eval_acc"] == 0.5 and m["eval_ppl"] == pytest.approx(4.0)
