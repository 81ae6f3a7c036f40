"""`TTLinear`: an nn.Linear replaced by a TT-matrix (cores only; bias and dense weight stay on the base)."""
from __future__ import annotations

import torch

from hf_attn.utils import HfAttnError

from ..base import WrapperLayer
from .decompose import TTMatrixLinear, tt_matrix_to_dense, tt_num_params


class TTLinear(WrapperLayer):
    """Applies `tt` (the TT cores, trainable) plus the frozen base bias; the dense base weight is never used.

    The original layer stays at `.base_layer`. `drop_base()` (TTConfig.keep_base=False) replaces its weight
    by an empty tensor to free the memory; then only a merge can turn this back into a plain `nn.Linear`.
    """

    def __init__(
        self,
        base: torch.nn.Linear,
        rank: int,
        num_cores: int,
        factors: tuple[list[int], list[int]] | None = None,
        contraction: str = "auto",
    ):
        super().__init__()
        if not isinstance(base, torch.nn.Linear):
            raise HfAttnError(f"TTLinear wraps torch.nn.Linear modules, got {type(base).__name__}.")
        out_f, in_f = factors if factors is not None else (None, None)
        self.tt, self.init_error = TTMatrixLinear.from_weight(
            base.weight.detach(), rank, num_cores, out_f, in_f, contraction=contraction
        )
        self.in_features, self.out_features = base.in_features, base.out_features
        self.keeps_base = True
        self.base_layer = base

    def drop_base(self) -> None:
        """Free the dense weight (keep_base=False): an empty tensor takes its place; the bias stays."""
        self.base_layer.weight = torch.nn.Parameter(self.base_layer.weight.new_empty(0), requires_grad=False)
        self.keeps_base = False

    @property
    def dense_params(self) -> int:
        """Parameters of the dense weight this layer replaces."""
        return self.in_features * self.out_features

    @property
    def tt_params(self) -> int:
        """Parameters of the TT cores."""
        return tt_num_params(self.tt.cores)

    def reconstruction_error(self) -> float:
        """||W - TT(W)|| / ||W|| for the current cores (the TT-SVD value when the dense weight was dropped)."""
        if not self.keeps_base:
            return self.init_error
        with torch.no_grad():
            w = self.base_layer.weight.double()
            return (torch.linalg.vector_norm(self.tt.to_dense().double() - w) / torch.linalg.vector_norm(w)).item()

    def merged(self) -> torch.nn.Linear:
        """The base `nn.Linear` (same object, same bias) carrying the dense weight of the cores."""
        base = self.base_layer
        with torch.no_grad():
            dense = tt_matrix_to_dense([c.float() for c in self.tt.cores]).to(self.tt.cores[0].dtype)
        base.weight = torch.nn.Parameter(dense, requires_grad=False)  # unwrap restores the recorded flag
        return base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The TT-matrix product plus the base layer's (frozen) bias."""
        y = self.tt(x)
        bias = self.base_layer.bias
        return y if bias is None else y + bias

    def extra_repr(self) -> str:
        """TT and dense parameter counts and the TT-SVD initialisation error."""
        return f"tt_params={self.tt_params}, dense_params={self.dense_params}, init_error={self.init_error:.4f}"
