"""Recipe loading: inheritance, overrides, validation with errors that name the fix."""
from pathlib import Path

import pytest

from hf_attn import HfAttnError
from hf_attn.train import TrainConfig
from hf_attn.train.config import set_nested
from train_cases import tiny_cfg

REPO = Path(__file__).resolve().parents[2]


RECIPES = sorted(p.name for p in (REPO / "recipes" / "train").glob("*.yaml"))


def test_training_recipes_are_found():
    assert len(RECIPES) >= 14  # an empty glob (recipes moved) would otherwise skip the test below


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_validates(recipe):
    cfg = TrainConfig.from_yaml(REPO / "recipes" / "train" / recipe)
    assert cfg.name == recipe.removesuffix(".yaml")


def test_base_inheritance_and_overrides():
    cfg = TrainConfig.from_yaml(REPO / "recipes/train/charlm_tt.yaml", ["data.seq_len=1024", "model.wrapper.rank=8"])
    assert cfg.model.wrapper == {"type": "tt", "rank": 8, "freeze_base": False}
    assert cfg.data.seq_len == 1024 and cfg.task == "char" and cfg.model.hidden_size == 256


@pytest.mark.parametrize("data, match", [
    ({"task": "chars"}, "task = 'chars' is invalid: expected one of 'copy', 'char', 'token'"),
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
        TrainConfig.from_yaml(REPO / "recipes/train/copy_sdpa.yaml", ["data.seq_len"])
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


# (dotted field, bad value): types, ranges, finiteness and choices, every one caught on load.
BAD_FIELDS = [
    ("optim.max_grad_norm", -1.0),  # would clip to a negative norm: gradient ascent
    ("optim.max_grad_norm", 0.0),
    ("optim.lr", float("nan")),
    ("optim.lr", float("inf")),
    ("optim.lr", 0.0),
    ("optim.lr", "fast"),
    ("optim.betas", [0.9]),
    ("optim.betas", [0.9, 1.0]),
    ("optim.weight_decay", -0.1),
    ("optim.min_lr_ratio", 1.5),
    ("optim.warmup_steps", -1),
    ("optim.grad_accum", 0),
    ("optim.schedule", "step"),
    ("train.steps", 2.5),
    ("train.steps", "five"),
    ("train.steps", 0),
    ("train.steps", True),
    ("train.mixed_precision", "fp8"),
    ("train.save_every", -1),
    ("train.keep_checkpoints", 0),
    ("train.stop_at", 0),
    ("model.num_heads", 0),
    ("model.hidden_size", -8),
    ("model.num_kv_heads", 0),
    ("model.attention", ""),
    ("model.attention", 3),
    ("model.freeze_base", "yes"),
    ("model.trainable", "self_attn"),
    ("model.wrapper", "tt"),
    ("model.attention_config", [1]),
    ("data.seq_len", 3),
    ("data.batch_size", 1.5),
    ("data.test_fraction", 1.0),
    ("data.test_fraction", float("nan")),
    ("data.copy_vocab", 2),
    ("data.max_chars", 0),
    ("seed", "abc"),
    ("seed", -1),
    ("seed", 2**32),
    ("name", ""),
    ("task", None),
    ("model", 5),
]


@pytest.mark.parametrize("dotted, value", BAD_FIELDS, ids=[f"{d}={v!r}" for d, v in BAD_FIELDS])
def test_bad_field_names_field_value_and_fix(dotted, value):
    data = {}
    set_nested(data, dotted, value)
    with pytest.raises(HfAttnError) as err:
        TrainConfig.from_dict(data)
    message = str(err.value)
    assert f"{dotted} = {value!r}" in message and "Fix:" in message, message


@pytest.mark.parametrize("override, dotted", [
    ("train.steps=five", "train.steps = 'five'"),
    ("optim.max_grad_norm=-1", "optim.max_grad_norm = -1"),
    ("optim.lr=.nan", "optim.lr = nan"),
    ("seed=x", "seed = 'x'"),
    ("model.num_heads=0", "model.num_heads = 0"),
])
def test_bad_override_names_the_field(override, dotted):
    with pytest.raises(HfAttnError, match="is invalid: expected") as err:
        TrainConfig.from_yaml(REPO / "recipes/train/copy_sdpa.yaml", [override])
    assert dotted in str(err.value)


def test_values_are_normalised_on_load():
    """YAML 1.1 reads `1e-3` (no dot) as a string and lists for tuples; integral floats are whole numbers."""
    cfg = TrainConfig.from_dict({"optim": {"lr": "1e-3", "betas": [0.9, 0.99], "max_grad_norm": None},
                                 "train": {"steps": 10.0}, "model": None})
    assert cfg.optim.lr == 1e-3 and cfg.optim.betas == (0.9, 0.99) and cfg.optim.max_grad_norm is None
    assert cfg.train.steps == 10 and isinstance(cfg.train.steps, int) and cfg.model.attention == "sdpa"


def test_cross_field_errors_name_both_fields():
    with pytest.raises(HfAttnError, match=r"train.stop_at = 5 .*train.steps = 3"):
        TrainConfig.from_dict({"train": {"steps": 3, "stop_at": 5}})
    with pytest.raises(HfAttnError, match=r"model.num_heads 4 must be a multiple of model.num_kv_heads 3"):
        TrainConfig.from_dict({"model": {"hidden_size": 32, "num_heads": 4, "num_kv_heads": 3}})


def test_every_field_has_help_text():
    """The rules live in each field's metadata next to its help (one table, checked generically)."""
    import dataclasses

    from hf_attn.train.config import DataConfig, ModelConfig, OptimConfig, TrainLoopConfig

    for cls in (TrainConfig, ModelConfig, DataConfig, OptimConfig, TrainLoopConfig):
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(f.default_factory):
                assert f.metadata.get("help"), f"{cls.__name__}.{f.name}"
