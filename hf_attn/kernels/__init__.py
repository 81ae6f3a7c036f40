"""Fused Triton kernels for the linear-time variants (holo, performer) and the rule that picks them.

The PyTorch paths in `hf_attn/attention/{holo,performer}.py` stay the fallback and the reference: the
kernels are used only for CUDA tensors, when Triton imports, and unless `HF_ATTN_TRITON=0`.
Without a GPU the kernels still run on CPU tensors under Triton's interpreter (`TRITON_INTERPRET=1` set
before Triton is imported; the test suite does this), so the kernel logic is tested everywhere.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

HEAD_DIMS = (32, 64, 96, 128)  # head_dim values the kernels are built and tested for


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def kernels_enabled(x: torch.Tensor) -> bool:
    """Whether the attention functions should take the Triton path for tensor `x`.

    `HF_ATTN_TRITON=0` turns the kernels off (PyTorch path everywhere); anything else means automatic.
    """
    if os.environ.get("HF_ATTN_TRITON", "auto") == "0":
        return False
    return x.is_cuda and triton_available()
