"""Attention functions with transformers' signature, one module per variant, registered on import."""
from transformers.masking_utils import sdpa_mask

from ..gauge.irreps import DEFAULT_IRREP_SPEC
from ..registry import register_variant
from .gauge import gauge_attention_forward
from .holo import holo_attention_forward
from .performer import DEFAULT_NUM_FEATURES, performer_attention_forward

register_variant(
    "holo",
    holo_attention_forward,
    summary="holographic reduced representations: keys bound to values by circular convolution, retrieval by "
    "correlation (Plate; Hrrformer)",
    complexity="O(T·D²) time (the real DFT runs as a D x (D+2) matmul; an FFT would make it O(T·D·log D)), "
    "O(T·D) memory (T5 position_bias / 4D masks: materialised O(T²·D))",
    config_keys={"holo_unitary": "project query/key spectra to unit magnitude (default True)"},
)
register_variant(
    "performer",
    performer_attention_forward,
    summary="FAVOR+ positive random features (Performer; Choromanski et al.), chunked causal prefix sums",
    complexity="O(T·m·D) time, O(T·m) memory (T5 position_bias / 4D masks: materialised O(T²))",
    config_keys={
        "performer_num_features": f"random features m (default {DEFAULT_NUM_FEATURES})",
        "performer_seed": "feature seed, offset per layer; change it to redraw (default 0)",
    },
)

register_variant(
    "gauge",
    gauge_attention_forward,
    summary="softmax of -KL between Gaussian beliefs (query/key means, per-irrep-block variances) with SO(3) "
    "(Wigner-D) transport, run as SDPA over augmented vectors",
    complexity="SDPA's O(T²·D) time over head_dim + 1..2 dims padded to a multiple of 8 (64 -> 72), memory O(T) "
    "without masks (per-dimension variances or output_attentions: explicit O(T²·D))",
    docs="docs/gauge.md",
    mask=sdpa_mask,
    config_keys={
        "gauge_kappa": "temperature kappa > 0 (default None = 1/scaling, i.e. sqrt(head_dim))",
        "gauge_irrep_spec": f"irrep blocks 'MULTxL+...' (default None = '{DEFAULT_IRREP_SPEC}' fitted to head_dim)",
        "gauge_variance": "one variance for all blocks, or one per block (default 1.0)",
        "gauge_compile": "torch.compile the augmented-vector prologue into fused kernels (default False)",
        "gauge_pad_width": "zero-pad the augmented vectors to this width, a multiple of 8 (default None = the "
        "smallest multiple of 8)",
    },
)

__all__ = ["gauge_attention_forward", "holo_attention_forward", "performer_attention_forward"]
