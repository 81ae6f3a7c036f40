"""holo in bf16: its error is the rounding of q/k/v it is handed, amplified by the unit projection's floor
(`config.holo_soft`), not its own arithmetic; the floor reaches the PyTorch path and the kernels alike."""
import math

import pytest
import torch

from kernel_cases import INTERPRETED, assert_agrees, inputs, module, rel

import hf_attn
from hf_attn.attention.holo import holo_attention_forward
from hf_attn.attention.holo import kernel as kt
from hf_attn.kernels.emulate import gpu_arithmetic
from references import REFERENCES


def _visible(mask, hq, t):
    vis = torch.ones(t, t, dtype=torch.bool).tril()[None, None].expand(mask.shape[0], hq, t, t)
    return vis & mask[:, None, None, :].cpu()


def test_holo_soft_reaches_the_kernel_and_the_torch_path():
    q, k, v, mask = inputs(2, 4, 2, 70, 32, torch.float32, True)
    soft = module(holo_soft=0.5)
    out = holo_attention_forward(soft, q, k, v, mask)[0]
    ref = REFERENCES["holo"](soft, q.detach().cpu(), k.detach().cpu(), v.detach().cpu(), _visible(mask, 4, 70),
                             None, None)
    live = mask.cpu()[:, :, None, None].expand(ref.shape)
    torch.testing.assert_close(out.detach().cpu().double()[live], ref[live], rtol=2e-4, atol=2e-5)
    assert rel(out, holo_attention_forward(module(), q, k, v, mask)[0]) > 0.01  # the floor changes the output
    assert_agrees(lambda q, k, v: kt.holo_causal(q, k, v, mask, soft=0.5)[0],
                  lambda q, k, v: holo_attention_forward(soft, q, k, v, mask)[0], q, k, v, torch.float32)


@pytest.mark.parametrize("bad", [0, -0.1, math.nan, math.inf, "0.3", True])
def test_a_floor_that_is_not_a_positive_number_is_refused(bad):
    q, k, v, _ = inputs(1, 2, 1, 8, 16, torch.float32, False)
    with pytest.raises(hf_attn.HfAttnError, match="holo_soft must be a positive number.*set it to"):
        holo_attention_forward(module(holo_soft=bad), q, k, v, None)


@pytest.mark.parametrize("path", ["kernel", "torch"])
def test_bf16_error_is_the_output_rounding_given_the_same_bf16_inputs(path):
    """From bf16 q/k/v, holo's bf16 output and gradients are float64 holo of the same values up to about one
    bf16 rounding (2^-9): holo's own arithmetic (the kernels' tf32 DFT products as rounded on the GPU, the
    PyTorch path's fp32) adds no error of its own."""
    q, k, v, mask = inputs(2, 4, 2, 100, 32, torch.bfloat16, True)
    grad = torch.randn(2, 100, 4, 32, device=q.device)
    with gpu_arithmetic() if INTERPRETED else torch.enable_grad():
        if path == "kernel":
            out = kt.holo_causal(q, k, v, mask)[0]
        else:
            out = holo_attention_forward(module(), q, k, v, mask)[0]
        got = torch.autograd.grad(out, (q, k, v), grad.bfloat16())
    exact = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = holo_attention_forward(module(), *exact, mask)[0]
    want = torch.autograd.grad(ref, exact, grad.double())
    assert rel(out, ref) < 2.5e-3
    for name, a, r in zip("qkv", got, want):
        assert rel(a, r) < 4e-3, f"d{name} off by {rel(a, r):.2e}"
