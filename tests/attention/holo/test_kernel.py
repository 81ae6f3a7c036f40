"""holo Triton kernels against the PyTorch path (interpreter on CPU, compiled on CUDA)."""
import pytest
import torch

from kernel_cases import DEVICE, INTERPRETED, assert_agrees, inputs, kernels_take, module

from hf_attn.attention.holo import math as holo_torch
from hf_attn.attention.holo import holo_attention_forward
from hf_attn.attention.holo import kernel as kt
from hf_attn.kernels import HEAD_DIMS

CASES = [  # b, hq, hkv, t, d, dtype, pad
    (2, 4, 2, 70, 64, torch.float32, True),  # GQA, > one block, left padding
    (1, 2, 2, 40, 96, torch.float32, False),  # head_dim padded to 128 inside the kernel
    (1, 2, 1, 50, 32, torch.bfloat16, False),
]
if not INTERPRETED:
    CASES += [(2, 16, 4, 1000, d, dt, True) for d in HEAD_DIMS for dt in (torch.float32, torch.bfloat16)]
    CASES = [c for c in CASES if kernels_take(c[4], c[5])]


def test_soft_floor_matches_torch_path():
    assert kt.SOFT == holo_torch.SOFT


@pytest.mark.parametrize("b,hq,hkv,t,d,dtype,pad", CASES)
def test_holo_kernel_matches_torch(b, hq, hkv, t, d, dtype, pad):
    q, k, v, mask = inputs(b, hq, hkv, t, d, dtype, pad)
    assert_agrees(
        lambda q, k, v: kt.holo_causal(q, k, v, mask)[0],
        lambda q, k, v: holo_attention_forward(module(), q, k, v, mask)[0],
        q, k, v, dtype,
    )


def test_holo_state_carries_across_calls():
    """Two calls chained through the returned state equal one call over the whole sequence."""
    q, k, v, mask = inputs(1, 2, 1, 48, 32, torch.float32, False)
    whole, (mem, n) = kt.holo_causal(q, k, v)
    first, state = kt.holo_causal(q[:, :, :20], k[:, :, :20], v[:, :, :20])
    second, (mem2, n2) = kt.holo_causal(q[:, :, 20:], k[:, :, 20:], v[:, :, 20:], init=state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mem2, mem, rtol=1e-4, atol=1e-5)
    assert n2.item() == n.item() == 48


def test_pack_roundtrip():
    spec = torch.fft.rfft(torch.randn(3, 96), dim=-1)
    torch.testing.assert_close(kt.unpack_spectrum(kt.pack_spectrum(spec, kt.state_width(96)), 96), spec)


@pytest.mark.parametrize("t", [20, 40])  # one block (no block-sum pass or scan) and two
def test_gradient_reaches_the_carried_state(t):
    """The output is linear in the carried memory, so its gradient must predict any change of it exactly."""
    q, k, v, _ = inputs(1, 2, 1, t, 32, torch.float32, False)
    mem0 = torch.randn(1, 1, 2, kt.state_width(32), device=q.device, requires_grad=True)
    n0 = torch.full((1,), 5.0, device=q.device)
    g = torch.randn(1, t, 2, 32, device=q.device)
    (kt.holo_causal(q, k, v, init=(mem0, n0))[0] * g).sum().backward()
    step = torch.randn_like(mem0) * 0.1
    with torch.no_grad():
        loss = lambda m: (kt.holo_causal(q, k, v, init=(m, n0))[0] * g).sum()  # noqa: E731
        change = loss(mem0 + step) - loss(mem0)
    torch.testing.assert_close(change, (mem0.grad * step).sum(), rtol=1e-3, atol=1e-4)
