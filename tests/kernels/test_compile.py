"""A model compiled with torch.compile calls the holo and performer kernels between its graphs (they are not
traced): same loss and gradients as the eager model, and the kernels serve every layer."""
import importlib

import pytest
import torch

from kernel_cases import DEVICE, INTERPRETED
from harness import ids, tiny_model


@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_compiled_training_step_runs_the_kernels_and_matches_eager(variant, monkeypatch):
    attention = importlib.import_module(f"hf_attn.attention.{variant}.attention")
    kernel = importlib.import_module(f"hf_attn.attention.{variant}.kernel")
    if INTERPRETED:  # CPU tensors: the kernels run under Triton's interpreter
        monkeypatch.setattr(attention, "kernels_enabled", lambda x: True)
    entry = getattr(kernel, f"{variant}_causal")
    calls = []
    monkeypatch.setattr(kernel, f"{variant}_causal", lambda *a, **k: calls.append(1) or entry(*a, **k))
    model = tiny_model("llama", variant).to(DEVICE).train()
    x = ids(1, 40).to(DEVICE)

    def step(m):
        m(input_ids=x, labels=x).loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        return grads

    want = step(model)
    calls.clear()
    torch._dynamo.reset()
    got = step(torch.compile(model, backend="aot_eager"))
    assert len(calls) == model.config.num_hidden_layers
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
