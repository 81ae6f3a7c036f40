"""Attention functions with transformers' signature: one package per variant, `common.py` shared by all.

Each variant package holds its math, its PyTorch path, its Triton kernels and dispatch, its diagnostics and
a `SPEC` (name, function, summary, complexity, knobs); `hf_attn.registry` registers the `SPEC`s.
"""
from . import gauge, holo, performer
from .gauge import gauge_attention_forward
from .holo import holo_attention_forward
from .performer import performer_attention_forward

BUILTIN_SPECS = (holo.SPEC, performer.SPEC, gauge.SPEC)

__all__ = ["BUILTIN_SPECS", "gauge_attention_forward", "holo_attention_forward", "performer_attention_forward"]
