"""Tensor-train wrapper: q/k/v/o (or any nn.Linear by pattern) as TT-matrices initialised by TT-SVD."""
from .config import TTConfig
from .layer import TTLinear
from .wrap import tt_report

__all__ = ["TTConfig", "TTLinear", "tt_report"]
