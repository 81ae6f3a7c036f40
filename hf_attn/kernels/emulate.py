"""Tensor-core precision for `tl.dot` under Triton's CPU interpreter, so CPU runs round as the GPU does.

The interpreter multiplies fp32 tiles in full fp32 whatever `input_precision` says; on the GPU a "tf32" dot
rounds both operands to tf32 (10 mantissa bits) and "tf32x3" adds the two cross products of the rounding
remainders (about fp32 accuracy). `tensor_core_dots()` makes the interpreter do the same, for accuracy studies
of the kernels on a machine without a GPU (`recipes/bench/bf16_accuracy.py --interpret`, the bf16 tests).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


def round_tf32(x: np.ndarray) -> np.ndarray:
    """fp32 values rounded to tf32 (nearest, ties away from zero: PTX `cvt.rna.tf32.f32`), kept as fp32."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def tf32_product(a: np.ndarray, b: np.ndarray, passes: int) -> np.ndarray:
    """`a @ b` as the tensor cores form it from fp32 operands: one tf32 pass, or three (hi*hi + hi*lo + lo*hi)."""
    ah, bh = round_tf32(a), round_tf32(b)
    out = np.matmul(ah, bh, dtype=np.float32)
    if passes == 3:
        out = out + np.matmul(ah, round_tf32(b - bh), dtype=np.float32)
        out = out + np.matmul(round_tf32(a - ah), bh, dtype=np.float32)
    return out


@contextlib.contextmanager
def tensor_core_dots() -> Iterator[None]:
    """Within the block, the interpreter's fp32 `tl.dot` rounds as the GPU's "tf32"/"tf32x3" dots do."""
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    real = builder.create_dot
    passes = {ir.INPUT_PRECISION.TF32: 1, ir.INPUT_PRECISION.TF32x3: 3}

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.data.dtype != np.float32 or b.data.dtype != np.float32 or input_precision not in passes:
            return real(self, a, b, d, input_precision, max_num_imprecise_acc)
        out = tf32_product(a.data, b.data, passes[input_precision])
        return interpreter.TensorHandle(out + d.data, d.dtype.scalar)

    builder.create_dot = create_dot
    try:
        yield
    finally:
        builder.create_dot = real
