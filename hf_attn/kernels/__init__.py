"""What the fused Triton kernels (holo, performer, gauge: `hf_attn/attention/*/kernel.py`) share, and the rule
that picks them.

The PyTorch paths (gauge's: SDPA over augmented vectors) stay the fallback and the reference: the
kernels are used only for CUDA tensors, when Triton imports, and unless `HF_ATTN_TRITON=0`.
Without a GPU the kernels still run on CPU tensors under Triton's interpreter (`TRITON_INTERPRET=1` set
before Triton is imported; the test suite does this), so the kernel logic is tested everywhere.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Callable

import torch

HEAD_DIMS = (32, 64, 96, 128)  # head_dim values the kernels are built and tested for
MIN_HEAD_DIM = 16  # the smallest head_dim they take (one tensor-core tile); smaller and larger take the fallback
DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # input dtypes they accumulate in fp32 for


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when Triton can be imported (the kernels then run on CUDA, or under its CPU interpreter)."""
    return importlib.util.find_spec("triton") is not None


def kernels_enabled(x: torch.Tensor) -> bool:
    """Whether the attention functions should take the Triton path for tensor `x` `(..., head_dim)`.

    `HF_ATTN_TRITON=0` turns the kernels off (PyTorch path everywhere); anything else means automatic.
    head_dim outside [16, 128] stays on the PyTorch path (the kernels are built for that range).
    fp32 inputs with head_dim > 64 stay on the PyTorch path: their tf32x3 tiles need more shared memory
    than a Hopper block has even at 32 tokens per block (see `token_block`). float64 stays there too: the
    kernels compute in fp32 at best, and fp64 tiles overflowed shared memory on the H100.
    """
    if os.environ.get("HF_ATTN_TRITON", "auto") == "0" or x.dtype not in DTYPES:
        return False
    if not MIN_HEAD_DIM <= x.shape[-1] <= HEAD_DIMS[-1]:  # e.g. head_dim 256 (Gemma): no kernel is built for it
        return False
    if x.dtype == torch.float32 and x.shape[-1] > 64:
        return False
    return x.is_cuda and triton_available()


def device_guard(fn: Callable) -> Callable:
    """Run `fn(x, ...)` with the current CUDA device set to `x`'s. Triton launches on the current device, and a
    model split over several GPUs (`device_map="auto"`) calls its later layers with tensors on another one
    (fla's `input_guard` and flash-attn's `CUDAGuard` do the same). The backward needs no guard: autograd runs
    it on a thread whose current device is the tensors'."""

    @functools.wraps(fn)
    def guarded(x: torch.Tensor, *args, **kwargs):
        if x.is_cuda and x.device.index != torch.cuda.current_device():
            with torch.cuda.device(x.device):
                return fn(x, *args, **kwargs)
        return fn(x, *args, **kwargs)

    return guarded


def token_block(padded_head_dim: int, dtype: torch.dtype) -> int:
    """Tokens per block of holo's kernels: 64, or 32 where 64 overflows Hopper's 227 KB of shared memory per
    block. Compiled for sm_90, head_dim 96/128 (padded to 128) at 64 tokens needs 240-352 KB (holo backward),
    and fp32 inputs' tf32x3 dots keep high and low operand parts (measured on the H100: docs/kernels.md).
    performer's kernels take their chunk length from their own tuned `LAUNCH` table."""
    return 64 if padded_head_dim <= 64 and dtype != torch.float32 else 32


def dot_precision(dtype: torch.dtype) -> str:
    """`tl.dot` precision for tiles computed in fp32 from inputs of `dtype`: three-pass tf32 (about fp32
    accuracy on the tensor cores; plain "ieee" fp32 dots did not finish compiling on the H100 within
    minutes) for fp32 inputs, one tf32 pass for 16-bit inputs (their own rounding is coarser)."""
    return "tf32x3" if dtype == torch.float32 else "tf32"
