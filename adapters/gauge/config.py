"""`GaugeConfig`: the knobs of gauge attention, for the learned wrapper and the parameter-free form alike."""
from __future__ import annotations

from dataclasses import dataclass, field

from hf_attn.attention.gauge.irreps import DEFAULT_IRREP_SPEC, parse_irrep_spec
from hf_attn.attention.gauge.settings import (
    DEFAULT_KAPPA,
    DEFAULT_VARIANCE,
    GaugeSettings,
    check_kappa,
    check_variance,
    resolve,
)
from hf_attn.utils import HfAttnError

from ..base import WrapperConfig

VARIANCE_MODES = ("block", "diagonal")


@dataclass
class GaugeConfig(WrapperConfig):
    """Gauge attention settings. `hf_attn.wrap(model, GaugeConfig())` adds learned frames and variances.

    The first three fields are the parameter-free knobs; `apply_to_model_config` writes them as
    `config.gauge_*` for `attn_implementation="gauge"` without any wrapper.
    """

    kappa: float | None = field(
        default=DEFAULT_KAPPA,
        metadata={"help": "Temperature of softmax(-KL/kappa), > 0. None: 1/scaling of the model (sqrt(head_dim) "
                  "for Llama/Qwen/Mistral, 1 for T5), which makes the q.k part of -KL/kappa the model's own logit."},
    )
    irrep_spec: str | list | None = field(
        default=None,
        metadata={"help": f"Irrep blocks per head, 'MULTxL+...'. None: '{DEFAULT_IRREP_SPEC}' (the default 5 x l0, "
                  "3 x l1, 1 x l2), shrunk to fit heads under 19 dims; the rest of head_dim is one l0 block."},
    )
    variance: float | list[float] = field(
        default=DEFAULT_VARIANCE,
        metadata={"help": "Belief variance: one number for every block, or one per block (spec blocks, then the "
                  "rest block). The learned form starts from it."},
    )
    learn_frames: bool = field(
        default=True, metadata={"help": "Learn so(3) frames phi per token and head (a linear map of the head's mean)."}
    )
    learn_variance: bool = field(
        default=True, metadata={"help": "Learn per-token log-variances (a linear map of the head's mean)."}
    )
    variance_mode: str = field(
        default="block",
        metadata={"help": "'block': one variance per irrep block (fast SDPA path). 'diagonal': one per dimension "
                  "(not rotation-invariant, so the explicit O(T^2 D) path)."},
    )
    init_std: float = field(
        default=0.0,
        metadata={"help": "Std of the initial map weights. 0 starts exactly at the parameter-free form "
                  "(logits equal to ~1e-5); small values (1e-3) break symmetry at once."},
    )

    def __post_init__(self):
        check_kappa(self.kappa)
        check_variance(self.variance)
        parse_irrep_spec(self.irrep_spec)
        if self.variance_mode not in VARIANCE_MODES:
            raise HfAttnError(f"variance_mode must be one of {VARIANCE_MODES}, got {self.variance_mode!r}.")
        if self.variance_mode == "diagonal" and not self.learn_variance:
            raise HfAttnError("variance_mode='diagonal' needs learn_variance=True (fixed variances are per block).")
        if not self.init_std >= 0:
            raise HfAttnError(f"init_std must be >= 0, got {self.init_std!r}.")

    def settings(self, head_dim: int, scaling: float | None) -> GaugeSettings:
        """Resolved kappa, irrep layout and per-block variances for heads of `head_dim`."""
        return resolve(self.kappa, self.irrep_spec, self.variance, head_dim, scaling)

    def apply_to_model_config(self, model_config) -> None:
        """Write `gauge_kappa`, `gauge_irrep_spec`, `gauge_variance` for the parameter-free form."""
        model_config.gauge_kappa = self.kappa
        model_config.gauge_irrep_spec = self.irrep_spec
        model_config.gauge_variance = self.variance
