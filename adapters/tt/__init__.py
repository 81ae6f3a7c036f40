"""Tensor-train wrapper: q/k/v/o (or any nn.Linear by pattern) as TT-matrices initialised by TT-SVD.

`decompose.py` is the TT math (TT-SVD, TT-matrices, contraction), `config.py`/`layer.py`/`wrap.py` the wrapper.
"""
from . import decompose
from .config import TTConfig
from .decompose import *  # noqa: F401,F403  (hf_attn.tt.to_tensor_train and friends)
from .decompose import __all__ as _decompose_all
from .layer import TTLinear
from .wrap import tt_report

__all__ = ["TTConfig", "TTLinear", "decompose", "tt_report", *_decompose_all]
