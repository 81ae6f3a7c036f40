"""recipes/prismatic_finetune.py: the mask-drift measurement that decides whether reusing selections is safe."""
import importlib.util
from pathlib import Path

import torch

import hf_attn
from hf_attn.adapters.prismatic import PrismaticConfig
from harness import tiny_model

RECIPE = Path(__file__).parents[2] / "recipes" / "prismatic_finetune.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("prismatic_finetune", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


def test_mask_drift_counts_selected_elements_that_left_the_selection():
    recipe = load_recipe()
    config = PrismaticConfig(version="v2", sparsity=0.1)
    model = hf_attn.wrap(tiny_model("llama", "sdpa"), config)
    before = recipe.selections(model, config)
    assert before and all(abs(int((m != 0).sum()) - round(0.1 * m.numel())) <= 1 for m in before.values())
    assert recipe.mask_drift(before, recipe.selections(model, config))["max"] == 0.0
    name = next(n for n, p in model.named_parameters() if n.endswith("mlp.base_layer.up_proj.weight"))
    with torch.no_grad():
        model.get_parameter(name).mul_(-1).add_(torch.randn_like(model.get_parameter(name)))  # a new ranking
    drift = recipe.mask_drift(before, recipe.selections(model, config))
    assert 0 < drift["max"] <= 1 and drift["mean"] < drift["max"] and drift["tensors"] == len(before)
