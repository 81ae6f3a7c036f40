"""Recipe loading: inheritance, overrides, validation with errors that name the fix."""
from pathlib import Path

import pytest

from hf_attn import HfAttnError
from hf_attn.train import TrainConfig
from train_cases import tiny_cfg

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.yaml") if not p.name.startswith("sweep")))
def test_every_recipe_validates(recipe):
    cfg = TrainConfig.from_yaml(REPO / "recipes" / recipe)
    assert cfg.name == recipe.removesuffix(".yaml")


def test_base_inheritance_and_overrides():
    cfg = TrainConfig.from_yaml(REPO / "recipes/charlm_tt.yaml", ["data.seq_len=1024", "model.wrapper.rank=8"])
    assert cfg.model.wrapper == {"type": "tt", "rank": 8, "freeze_base": False}
    assert cfg.data.seq_len == 1024 and cfg.task == "char" and cfg.model.hidden_size == 256


@pytest.mark.parametrize("data, match", [
    ({"task": "chars"}, "task must be one of"),
    ({"modle": {}}, r"Unknown key\(s\) \['modle'\]"),
    ({"model": {"atention": "holo"}}, r"Unknown key\(s\) \['atention'\] in model"),
    ({"model": {"hidden_size": 30, "num_heads": 4}}, "divisible"),
    ({"model": {"wrapper": {"rank": 4}}}, "'type' key"),
    ({"optim": {"schedule": "step"}}, "optim.schedule"),
    ({"train": {"mixed_precision": "fp8"}}, "mixed_precision"),
    ({"task": "token"}, "needs model.model_path"),
    ({"data": {"seq_len": 9, "copy_length": 5}}, "copy_length"),
])
def test_bad_configs_raise_clear_errors(data, match):
    with pytest.raises(HfAttnError, match=match):
        TrainConfig.from_dict(data)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(HfAttnError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(HfAttnError, match="section.key=value"):
        TrainConfig.from_yaml(REPO / "recipes/copy_sdpa.yaml", ["data.seq_len"])
    loop = tmp_path / "a.yaml"
    loop.write_text("base: a.yaml\n")
    with pytest.raises(HfAttnError, match="inherits from itself"):
        TrainConfig.from_yaml(loop)


def test_bare_no_for_mixed_precision_means_no(tmp_path):
    """`mixed_precision: no` in YAML (or `--set train.mixed_precision=no`) parses as false; it means "no"."""
    import yaml

    section = yaml.safe_load("mixed_precision: no")
    assert section["mixed_precision"] is False
    assert tiny_cfg(tmp_path, train=section).train.mixed_precision == "no"
