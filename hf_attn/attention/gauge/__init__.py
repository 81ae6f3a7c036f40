"""gauge: KL attention between Gaussian beliefs with SO(3) frames (math, attention function, diagnostics).

`so3.py`, `irreps.py`, `settings.py` and `beliefs.py` are the math; `attention.py` the attention function
transformers calls; `diagnostics.py` the row_std / KL health collector; `SPEC` what the registry shows.
The learned form (frames and variances as parameters) is the wrapper in `hf_attn.adapters.gauge`.
"""
from transformers.masking_utils import sdpa_mask

from . import diagnostics  # noqa: F401  (registers the gauge collector)
from .attention import gauge_attention_forward
from .beliefs import Beliefs, augmented, kl_explicit, rotate_into_frames
from .irreps import DEFAULT_IRREP_SPEC, IrrepLayout, irrep_layout, parse_irrep_spec
from .settings import DEFAULT_KAPPA, DEFAULT_VARIANCE, GaugeSettings, resolve, settings_from_config
from .so3 import MAX_L, generators, wigner_d


SPEC = dict(
    name="gauge",
    function=gauge_attention_forward,
    summary="softmax of -KL between Gaussian beliefs (query/key means, per-irrep-block variances) with SO(3) "
    "(Wigner-D) transport, run as a fused Triton flash kernel on CUDA, SDPA over augmented vectors elsewhere",
    complexity="O(T²·D) time, memory O(T) (per-dimension variances or output_attentions: explicit O(T²·D))",
    docs="docs/gauge.md",
    mask=sdpa_mask,
    config_keys={
        "gauge_kappa": "temperature kappa > 0 (default None = 1/scaling, i.e. sqrt(head_dim))",
        "gauge_irrep_spec": f"irrep blocks 'MULTxL+...' (default None = '{DEFAULT_IRREP_SPEC}' fitted to head_dim)",
        "gauge_variance": "one variance for all blocks, or one per block (default 1.0)",
        "gauge_compile": "SDPA path: torch.compile the augmented-vector prologue into fused kernels (default False)",
        "gauge_pad_width": "SDPA path: zero-pad the augmented vectors to this width, a multiple of 8 (default None = "
        "the smallest multiple of 8)",
    },
)

__all__ = [
    "SPEC", "gauge_attention_forward", "diagnostics",
    "Beliefs", "augmented", "kl_explicit", "rotate_into_frames", "DEFAULT_IRREP_SPEC", "IrrepLayout",
    "irrep_layout", "parse_irrep_spec", "DEFAULT_KAPPA", "DEFAULT_VARIANCE", "GaugeSettings", "resolve",
    "settings_from_config", "MAX_L", "generators", "wigner_d",
]
