"""Model cards from a checkpoint and its run folder (hf_attn/model_card.py): metadata, sections, absences."""
import json

import pytest
from huggingface_hub import ModelCard

import hf_attn
from harness import tiny_model
from hf_attn.model_card import read_run, render_card, write_card
from run_folder import EVAL, RUN_CONFIG, make_run_dir
from toy_wrapper import wrapped


def test_card_from_a_full_run(tmp_path):
    run = make_run_dir(tmp_path / "run", wrapped("llama", "toy_lowrank", "holo"))
    card = ModelCard(str(render_card(run / "final", "user/demo", read_run(run))))  # parses back from text
    assert card.data.base_model == RUN_CONFIG["base_model"] and card.data.license == "apache-2.0"
    assert card.data.datasets == ["wikimedia/wikipedia"] and card.data.library_name == "transformers"
    assert {"hf-attn", "holo", "toy_lowrank"} <= set(card.data.tags)
    text = card.text
    assert "lr: 0.0003" in text  # the training config, as YAML
    assert f"| perplexity/austen | {EVAL['perplexity']['austen']} |" in text and "| tokens_per_s | 1234.5 |" in text
    assert "| lowest loss | 1 |" in text and "| last step | 30 |" in text
    assert "| entanglement_entropy | mean 1 (min 0.5, max 1.5, n 3) |" in text
    assert "`config.holo_unitary`" in text  # the variant's knobs from the registry
    assert "A low-rank residual" in text and '"rank": 2' in text
    assert (run / "final" / "plots" / "loss.png").read_bytes()[:4] == b"\x89PNG"  # generated from metrics.csv
    assert "No evaluation was recorded" not in text


def test_card_tolerates_a_bare_checkpoint(tmp_path):
    hf_attn.save_pretrained(tiny_model("t5", "performer"), tmp_path)
    path = write_card(tmp_path, "user/bare")
    card = ModelCard.load(path)
    assert card.data.license == "other" and card.data.base_model is None
    assert "AutoModelForSeq2SeqLM.from_pretrained(\"user/bare\")" in card.text
    for absent in ("No training configuration", "No evaluation was recorded", "No diagnostics were recorded",
                   "licence was not recorded"):
        assert absent in card.text
    assert not (tmp_path / "plots").exists()


def test_wrapper_only_card_and_overrides(tmp_path):
    hf_attn.save_wrapper(wrapped("llama", "toy_lowrank"), tmp_path)
    card = ModelCard(str(render_card(tmp_path, "user/w", base_model="my/base", license="mit", datasets=["my/data"])))
    assert (card.data.base_model, card.data.license, card.data.datasets) == ("my/base", "mit", ["my/data"])
    assert 'from_pretrained("my/base")' in card.text and 'hf_attn.load_wrapper(base, "user/w")' in card.text
    assert "wrapper weights only" in card.text


def test_card_needs_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(hf_attn.HfAttnError, match="neither config.json nor hf_attn_wrapper.json"):
        render_card(tmp_path, "user/x")
