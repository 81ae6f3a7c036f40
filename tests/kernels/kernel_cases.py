"""Shared checks for the Triton kernels: output, final state and every gradient against the PyTorch path."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

triton = pytest.importorskip("triton")

from hf_attn import kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = DEVICE == "cpu"
if INTERPRETED and not triton.knobs.runtime.interpret:
    pytest.skip("CPU without TRITON_INTERPRET=1 (set by tests/conftest.py)", allow_module_level=True)


def kernels_take(head_dim: int, dtype: torch.dtype) -> bool:
    """Whether the dispatcher sends these inputs to the kernels on CUDA (else the PyTorch path serves them)."""
    return INTERPRETED or kernels.kernels_enabled(torch.empty(0, head_dim, dtype=dtype, device=DEVICE))


def module(**cfg) -> SimpleNamespace:
    return SimpleNamespace(is_causal=True, layer_idx=1, training=False, config=SimpleNamespace(**cfg))


def inputs(b, hq, hkv, t, d, dtype, pad, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for h in (hq, hkv, hkv))
    q, k, v = (x.to(DEVICE, dtype).requires_grad_() for x in (q, k, v))
    mask = None
    if pad:
        mask = torch.ones(b, t, dtype=torch.bool, device=DEVICE)
        mask[0, : t // 3] = False  # left padding on the first row
    return q, k, v, mask


def rel(a: torch.Tensor, r: torch.Tensor) -> float:
    return ((a.float() - r.float()).norm() / r.float().norm().clamp_min(1e-30)).item()


def assert_agrees(fast, reference, q, k, v, dtype):
    """`fast`/`reference`: (q, k, v) -> out `(B, T, H, D)`; compares outputs and dq, dk, dv."""
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    out = fast(q, k, v)
    ref = reference(q, k, v)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    assert out.dtype == q.dtype and torch.isfinite(out).all()
    assert rel(out, ref) < tol, f"output off by {rel(out, ref):.2e}"
    for name, a, r in zip("qkv", got, want):
        assert torch.isfinite(a).all(), f"d{name} not finite"
        assert rel(a, r) < tol, f"d{name} off by {rel(a, r):.2e}"
