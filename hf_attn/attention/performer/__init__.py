"""performer: FAVOR+ random-feature attention (features, PyTorch path, Triton kernels, dispatch).

`features.py` holds the random features and stabilisers, `attention.py` the attention function transformers
calls (it picks the Triton path in `kernel.py` on CUDA), `SPEC` what the registry shows for it.
"""
from ..window import CONFIG_KEYS as WINDOW_KEYS
from .attention import performer_attention_forward
from .features import DEFAULT_NUM_FEATURES

SPEC = dict(
    name="performer",
    function=performer_attention_forward,
    summary="FAVOR+ positive random features (Performer; Choromanski et al.), chunked causal prefix sums",
    complexity="O(T·m·D) time, O(T·m) memory (T5 position_bias / 4D masks: materialised O(T²))",
    config_keys={
        "performer_num_features": f"random features m (default {DEFAULT_NUM_FEATURES})",
        "performer_seed": "feature seed, offset per layer; change it to redraw (default 0)",
        **WINDOW_KEYS,
    },
    recurrent=True,
)

__all__ = ["DEFAULT_NUM_FEATURES", "SPEC", "performer_attention_forward"]
