"""`LinearizeConfig`: which variant a softmax model is converted to, and which of its parts learn."""
from __future__ import annotations

from dataclasses import dataclass, field

from hf_attn.utils import HfAttnError

from ..base import WrapperConfig

VARIANTS = ("performer", "holo")


@dataclass
class LinearizeConfig(WrapperConfig):
    """`hf_attn.wrap(model, LinearizeConfig(variant=...))`: learnable parts for converting softmax attention.

    performer: a learned FAVOR+ projection per key/value head (Hedgehog-style feature map), starting at the
    layer's random features. holo: per-head maps of q and k into the binding space, starting at the identity.
    With `config.hf_attn_window > 0` also a learned per-head share of the variant in the window hybrid.
    """

    variant: str = field(default="performer", metadata={
        "help": f"The attention to convert to, one of {VARIANTS}; the wrapper switches the model to it."})
    binding_dim: int | None = field(default=None, metadata={
        "help": "holo only: width Db of the binding space (even, >= head_dim; None = head_dim). q and k are mapped "
                "to Db dims, values zero-padded to Db, and outputs truncated back to head_dim."})
    learn_window_mix: bool = field(default=True, metadata={
        "help": "With config.hf_attn_window > 0: learn the variant's share per head (a logit starting at "
                "logit(config.hf_attn_window_mix)). False: the config's fixed share."})

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise HfAttnError(f"LinearizeConfig.variant must be one of {VARIANTS}, got {self.variant!r}.")
        if self.binding_dim is None:
            return
        if self.variant != "holo":
            raise HfAttnError(f"LinearizeConfig.binding_dim is holo's binding width; variant {self.variant!r} has "
                              "none. Leave binding_dim=None or use variant='holo'.")
        if isinstance(self.binding_dim, bool) or not isinstance(self.binding_dim, int) or self.binding_dim < 2 \
                or self.binding_dim % 2:
            raise HfAttnError(f"LinearizeConfig.binding_dim must be an even whole number >= head_dim (holo's real "
                              f"spectra need an even width), got {self.binding_dim!r}.")
