"""Attention functions with transformers' signature, one module per variant, registered on import."""
from ..registry import register_variant
from .holo import holo_attention_forward
from .performer import DEFAULT_NUM_FEATURES, performer_attention_forward

register_variant(
    "holo",
    holo_attention_forward,
    summary="holographic reduced representations: FFT binding of keys with values, correlation retrieval",
    complexity="O(T·D·log D) time, O(T·D) memory (T5 position_bias / 4D masks: materialised O(T²·D))",
    config_keys={"holo_unitary": "project query/key spectra to unit magnitude (default True)"},
)
register_variant(
    "performer",
    performer_attention_forward,
    summary="FAVOR+ positive random features (Performer), chunked causal prefix sums",
    complexity="O(T·m·D) time, O(T·m) memory (T5 position_bias / 4D masks: materialised O(T²))",
    config_keys={
        "performer_num_features": f"random features m (default {DEFAULT_NUM_FEATURES})",
        "performer_seed": "feature seed, offset per layer; change it to redraw (default 0)",
    },
)

__all__ = ["holo_attention_forward", "performer_attention_forward"]
