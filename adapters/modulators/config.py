"""Config dataclasses of the geometric residual and field modulators, with their design defaults (docs/modulators.md).

Which layers are modulated follows `target_modules` (shared with every wrapper): `None` modulates every
transformer block of every stack (T5: encoder and decoder blocks; Llama/Qwen/Mistral: `model.layers.*`); a
suffix list (`["layers.0", "layers.1"]`, `["encoder.block.3"]`) or a full-name regex
(`r"model\\.layers\\.(1[0-9])"`) picks blocks by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hf_attn.utils import HfAttnError

from ..base import WrapperConfig


def _check_probability(name: str, value: float, open_interval: bool = True) -> None:
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok:
        raise HfAttnError(f"{name}={value} must lie in {'(0, 1)' if open_interval else '[0, 1]'}.")


@dataclass
class _ModulatorConfig(WrapperConfig):
    """Fields both modulators share: starting alpha and the health tracking."""

    initial_alpha: float = field(
        default=0.01, metadata={"help": "Starting alpha = sigmoid(logit), in (0, 1); small so the base model dominates."}
    )
    track_cv: bool = field(
        default=True,
        metadata={"help": "Keep a sample of the modulated hidden states of the last forward for CV/PR health metrics."},
    )
    cv_samples: int = field(default=256, metadata={"help": "Token vectors kept per layer for the health metrics."})
    cv_simplices: int = field(default=200, metadata={"help": "Random pentachora per CV measurement."})
    cv_band: tuple[float, float] = field(
        default=(0.20, 0.23),
        metadata={"help": "Pentachoron CV band; `modulator_health` warns when a measured CV leaves it."},
    )

    def __post_init__(self) -> None:
        _check_probability("initial_alpha", self.initial_alpha)
        self.cv_band = tuple(float(v) for v in self.cv_band)
        if len(self.cv_band) != 2 or not 0 <= self.cv_band[0] < self.cv_band[1]:
            raise HfAttnError(f"cv_band={self.cv_band} must be (low, high) with 0 <= low < high.")
        if self.cv_samples < 5 or self.cv_simplices < 2:
            raise HfAttnError("cv_samples must be >= 5 and cv_simplices >= 2 to measure a pentachoron CV.")


@dataclass
class ResidualModulatorConfig(_ModulatorConfig):
    """Geometric residual modulator: h <- (1 - a_l) h + a_l proj(geo_embed(token)) before chosen blocks."""

    n_geometric_dims: int = field(default=64, metadata={"help": "Dimension of each token's geometric embedding."})
    learnable_alpha: bool = field(default=True, metadata={"help": "Train the alpha logits (else a fixed buffer)."})
    per_layer_alpha: bool = field(default=True, metadata={"help": "One alpha per modulated block (else one shared)."})
    proj_init_std: float = field(
        default=0.01, metadata={"help": "Std of the geometric -> residual projection at init (small: a nudge)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_geometric_dims < 1:
            raise HfAttnError(f"n_geometric_dims={self.n_geometric_dims} must be >= 1.")
        if self.proj_init_std < 0:
            raise HfAttnError(f"proj_init_std={self.proj_init_std} must be >= 0.")


@dataclass
class FieldModulatorConfig(_ModulatorConfig):
    """Geometric field modulator: KSimplexChannel experts gate the residual stream multiplicatively."""

    expert_ks: tuple[int, ...] = field(
        default=(1, 2, 4), metadata={"help": "Simplex order of each expert: 1 edge, 2 triangle, 4 pentachoron."}
    )
    expert_edim: int = field(default=8, metadata={"help": "Embedding dimension of each expert's simplex vertices."})
    alpha_min: float = field(default=0.001, metadata={"help": "Floor of every alpha (always some geometric signal)."})
    alpha_max: float = field(
        default=0.35, metadata={"help": "Ceiling of every alpha (the boundary between binding and separating tokens)."}
    )
    per_layer_per_expert: bool = field(
        default=True, metadata={"help": "One alpha per (block, expert); else one per expert shared by all blocks."}
    )
    null_space_fraction: float = field(
        default=0.25, metadata={"help": "Fraction of hidden dims the modulator never reads nor changes."}
    )
    null_space_position: str = field(
        default="tail", metadata={"help": "'tail' (the last dims) or 'random' (scattered, seeded) null-space dims."}
    )
    null_space_seed: int = field(default=42, metadata={"help": "Seed of the 'random' null-space dims."})
    gradient_scale: float = field(
        default=0.1, metadata={"help": "Multiplier on the gradients of the experts' geometric parameters."}
    )
    deform_scale: float = field(default=0.05, metadata={"help": "Scale of the learned simplex deformations."})
    track_validity: bool = field(
        default=True, metadata={"help": "EMA (0.99) of the fraction of non-degenerate simplices per block and expert."}
    )
    cv_band: tuple[float, float] = field(
        default=(0.16, 0.26),
        metadata={"help": "CV alert band: cv_target 0.21 +- cv_tolerance 0.05 around the 0.20-0.23 band."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.expert_ks = tuple(int(k) for k in self.expert_ks)
        if not self.expert_ks or len(set(self.expert_ks)) != len(self.expert_ks) or min(self.expert_ks) < 1:
            raise HfAttnError(f"expert_ks={self.expert_ks} must be distinct simplex orders >= 1, e.g. (1, 2, 4).")
        if self.expert_edim < max(self.expert_ks):
            raise HfAttnError(
                f"expert_edim={self.expert_edim} is too small for a {max(self.expert_ks)}-simplex: use >= {max(self.expert_ks)}."
            )
        if not 0 <= self.alpha_min < self.alpha_max <= 1:
            raise HfAttnError(f"Need 0 <= alpha_min < alpha_max <= 1, got {self.alpha_min}, {self.alpha_max}.")
        if not self.alpha_min <= self.initial_alpha <= self.alpha_max:
            raise HfAttnError(f"initial_alpha={self.initial_alpha} must lie in [alpha_min, alpha_max].")
        if not 0 <= self.null_space_fraction < 1:
            raise HfAttnError(f"null_space_fraction={self.null_space_fraction} must lie in [0, 1).")
        if self.null_space_position not in ("tail", "random"):
            raise HfAttnError(f"null_space_position={self.null_space_position!r}: use 'tail' or 'random'.")
        if self.gradient_scale <= 0 or self.deform_scale <= 0:
            raise HfAttnError("gradient_scale and deform_scale must be > 0.")

    def param_groups(self, model, lr: float) -> list[dict]:
        """The note's optimizer groups (experts at lr x gradient_scale, alphas at lr x 0.5, gates at lr); the
        trainer builds its optimizer from them (`hf_attn.train.models.param_groups`)."""
        from .health import find_modulator

        return find_modulator(model).param_groups(lr)
