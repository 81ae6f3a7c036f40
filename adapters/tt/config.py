"""`TTConfig`: which projections become TT-matrices, and at what rank."""
from __future__ import annotations

from dataclasses import dataclass, field

from hf_attn.utils import HfAttnError

from ..base import WrapperConfig
from .decompose import check_contraction

# Attention projections of Llama/Qwen2/Qwen3/Mistral (q_proj...) and T5 (q, k, v, o).
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "q", "k", "v", "o"]


@dataclass
class TTConfig(WrapperConfig):
    """Tensor-train compression of pretrained linear projections (TT-SVD init, attention stays on sdpa)."""

    rank: int = field(default=16, metadata={"help": "Largest TT bond rank of every core (the compression knob)."})
    num_cores: int = field(
        default=3,
        metadata={"help": "Cores per TT-matrix when factors are automatic (hf_attn.tt.default_factors); 2 = W = U V."},
    )
    factors: dict[str, list[list[int]]] | None = field(
        default=None,
        metadata={
            "help": "Explicit factorisation per module-name suffix: {'q_proj': [[out factors], [in factors]]}; "
            "modules not listed use the automatic one."
        },
    )
    contraction: str = field(
        default="auto",
        metadata={
            "help": "How the cores are applied: 'cores' (one small matmul per core), 'dense' (rebuild the weight "
            "from the cores each call, then one GEMM) or 'auto' (dense on CUDA from hf_attn.tt.DENSE_MIN_ROWS "
            "rows, cores otherwise). Same parameters and gradients either way; see hf_attn.tt."
        },
    )
    keep_base: bool = field(
        default=True,
        metadata={
            "help": "Keep the dense weights in memory so unwrap(model) restores the exact base; False frees them "
            "(the memory saving), after which only unwrap(model, merge=True) is possible."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise HfAttnError(f"TTConfig.rank must be an integer >= 1, got {self.rank!r}.")
        if isinstance(self.num_cores, bool) or not isinstance(self.num_cores, int) or self.num_cores < 1:
            raise HfAttnError(f"TTConfig.num_cores must be an integer >= 1, got {self.num_cores!r}.")
        check_contraction(self.contraction)
        if self.target_modules is None:
            self.target_modules = list(DEFAULT_TARGETS)
        for name, pair in (self.factors or {}).items():
            ok = (
                isinstance(pair, (list, tuple))
                and len(pair) == 2
                and all(isinstance(p, (list, tuple)) and p and all(isinstance(f, int) and f >= 1 for f in p) for p in pair)
                and len(pair[0]) == len(pair[1])
            )
            if not ok:
                raise HfAttnError(
                    f"TTConfig.factors[{name!r}] must be [[out factors], [in factors]] of equal length with positive "
                    f"integers, e.g. [[1, 8, 72], [72, 8, 1]]; got {pair!r}."
                )
        if self.factors:
            self.factors = {k: [list(v[0]), list(v[1])] for k, v in self.factors.items()}

    def factors_for(self, module_name: str) -> tuple[list[int], list[int]] | None:
        """The explicit factors whose key is `module_name` or one of its dotted suffixes, if any."""
        for key, (out_f, in_f) in (self.factors or {}).items():
            if module_name == key or module_name.endswith("." + key):
                return out_f, in_f
        return None
