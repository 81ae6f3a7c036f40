"""GPU rounding for Triton's CPU interpreter, so that interpreted kernels err as they do on the GPU.

Two places where the interpreter (Triton 3.6-3.9) computes more or less exactly than the GPU:
- `tl.dot` on fp32 tiles: the interpreter multiplies in full fp32 whatever `input_precision` says; the GPU's
  "tf32" dot rounds both operands to tf32 (10 mantissa bits), "tf32x3" adds the two cross products of the
  rounding remainders (about fp32 accuracy).
- fp32 -> bf16/fp16 casts (`x.to(tl.bfloat16)`, e.g. storing a bf16 output): the interpreter truncates
  (rounds toward zero, twice the error and a bias), the GPU rounds to nearest even.
`gpu_arithmetic()` makes the interpreter do as the GPU does, for accuracy studies of the kernels on a machine
without one (`recipes/bench/bf16_accuracy.py --interpret`, tests/attention/holo/test_bf16.py).
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


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """fp32 values rounded to nearest-even bf16, as the uint16 bit patterns the interpreter stores bf16 in."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


@contextlib.contextmanager
def gpu_arithmetic() -> Iterator[None]:
    """Within the block, the interpreter's fp32 `tl.dot` rounds as the GPU's "tf32"/"tf32x3" dots do and its
    fp32 -> bf16/fp16 casts round to nearest even."""
    import triton.language as tl
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    real_dot, real_trunc = builder.create_dot, builder.create_fp_trunc
    passes = {ir.INPUT_PRECISION.TF32: 1, ir.INPUT_PRECISION.TF32x3: 3}

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.data.dtype != np.float32 or b.data.dtype != np.float32 or input_precision not in passes:
            return real_dot(self, a, b, d, input_precision, max_num_imprecise_acc)
        return interpreter.TensorHandle(tf32_product(a.data, b.data, passes[input_precision]) + d.data,
                                        d.dtype.scalar)

    def create_fp_trunc(self, src, dst_type):
        if src.data.dtype == np.float32 and dst_type.scalar == tl.bfloat16:
            return interpreter.TensorHandle(bf16_bits(src.data), tl.bfloat16)
        if src.data.dtype == np.float32 and dst_type.scalar == tl.float16:
            return interpreter.TensorHandle(src.data.astype(np.float16), tl.float16)
        return real_trunc(self, src, dst_type)

    builder.create_dot, builder.create_fp_trunc = create_dot, create_fp_trunc
    try:
        yield
    finally:
        builder.create_dot, builder.create_fp_trunc = real_dot, real_trunc
