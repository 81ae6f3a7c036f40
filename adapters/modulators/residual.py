"""Geometric residual modulator: a LERP of the residual stream toward a token's
projected geometric embedding before chosen blocks, with one sigmoid alpha per block.

    h <- (1 - a_l) h + a_l * proj(geo_embed(token)),    a_l = sigmoid(alpha_logit_l)

Three initialisations fill `geo_embed` (and, for Procrustes, `proj`) from structure:
Cayley-Menger-checked simplices, a relational similarity target by eigendecomposition, and an orthogonal
Procrustes alignment of another model's embeddings onto this model's representation space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_attn.utils import HfAttnError

from hf_attn.geometry import cayley_menger_volume, participation_ratio, pentachoron_cv
from .common import ModulatorModule, logit
from .config import ResidualModulatorConfig


class GeometricResidualModulator(ModulatorModule):
    """LERP of the residual stream toward each token's projected geometric embedding, one alpha per block."""

    def __init__(self, config: ResidualModulatorConfig, vocab_size: int, d_model: int, layer_names: list[str]):
        super().__init__(layer_names, config.track_cv, config.cv_samples)
        self.config = config
        g = config.n_geometric_dims
        self.geometric_embed = torch.nn.Embedding(vocab_size, g)
        self.proj = torch.nn.Linear(g, d_model, bias=False)
        torch.nn.init.normal_(self.proj.weight, std=config.proj_init_std)
        start = torch.full((len(layer_names) if config.per_layer_alpha else 1,), logit(config.initial_alpha))
        if config.learnable_alpha:
            self.alpha_logit = torch.nn.Parameter(start)
        else:
            self.register_buffer("alpha_logit", start)

    def alphas(self) -> torch.Tensor:
        """One LERP weight per modulated block (a shared alpha repeated)."""
        a = torch.sigmoid(self.alpha_logit)
        return a.expand(len(self.layer_names)) if a.numel() == 1 else a

    def target(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The geometric target in residual coordinates, `(..., d_model)`."""
        return self.proj(self.geometric_embed(token_ids))

    def forward(self, hidden: torch.Tensor, token_ids: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """`(1 - a) h + a target(token)` for block `layer_idx`; needs input_ids so each position's token is known."""
        if token_ids.shape != hidden.shape[:-1]:
            raise HfAttnError(
                f"Residual modulator got token ids of shape {tuple(token_ids.shape)} for hidden states "
                f"{tuple(hidden.shape)}: call the model with input_ids (not inputs_embeds) so each position's "
                "token is known."
            )
        a = self.alphas()[layer_idx]
        out = (1 - a) * hidden.float() + a * self.target(token_ids)
        out = out.to(hidden.dtype)
        self.record(layer_idx, out)
        return out

    # -- initialisations ---------------------------------------------------------------------------
    @torch.no_grad()
    def _write_rows(self, rows: torch.Tensor, token_ids: torch.Tensor | None) -> None:
        rows = F.normalize(rows.float(), dim=-1)  # the geometry is in the directions, not the norms
        if rows.shape[-1] != self.config.n_geometric_dims:
            raise HfAttnError(f"Geometric rows have dim {rows.shape[-1]}, the modulator {self.config.n_geometric_dims}.")
        w = self.geometric_embed.weight
        if token_ids is None:
            if rows.shape[0] != w.shape[0]:
                raise HfAttnError(f"Got {rows.shape[0]} rows for a vocabulary of {w.shape[0]}: pass token_ids.")
            w.copy_(rows)
        else:
            w[token_ids.to(w.device)] = rows.to(w.device)

    @torch.no_grad()
    def init_from_simplices(self, vertices: torch.Tensor, token_ids: torch.Tensor | None = None, min_volume: float = 1e-12) -> torch.Tensor:
        """Sum-pool per-token simplices `(n, k+1, g)` into unit geometric rows; returns their CM volumes.

        Degenerate simplices (Cayley-Menger volume <= `min_volume`) carry no geometry and are refused.
        """
        if vertices.dim() != 3:
            raise HfAttnError(f"vertices must be (tokens, k+1, {self.config.n_geometric_dims}), got {tuple(vertices.shape)}.")
        vols = cayley_menger_volume(vertices.double())
        bad = (vols <= min_volume).nonzero().flatten()
        if bad.numel():
            raise HfAttnError(
                f"{bad.numel()} simplices are degenerate (Cayley-Menger volume <= {min_volume}), e.g. rows "
                f"{bad[:5].tolist()}: give each token k+1 affinely independent vertices."
            )
        self._write_rows(vertices.sum(1), token_ids)
        return vols

    @torch.no_grad()
    def init_from_relational_target(self, similarity: torch.Tensor, token_ids: torch.Tensor | None = None) -> float:
        """Rows whose cosines reproduce a symmetric target similarity `(n, n)` (top eigenvectors * sqrt(eigval)).

        Returns the correlation between the target and the reconstructed cosines (off-diagonal).
        """
        s = similarity.double()
        if s.dim() != 2 or s.shape[0] != s.shape[1] or not torch.allclose(s, s.T, atol=1e-6):
            raise HfAttnError("similarity must be a symmetric (n, n) matrix.")
        vals, vecs = torch.linalg.eigh(s)
        top = vals.argsort(descending=True)[: self.config.n_geometric_dims]
        rows = vecs[:, top] * vals[top].clamp_min(0).sqrt()
        if rows.shape[1] < self.config.n_geometric_dims:
            rows = F.pad(rows, (0, self.config.n_geometric_dims - rows.shape[1]))
        self._write_rows(rows, token_ids)
        rec = F.normalize(rows, dim=-1) @ F.normalize(rows, dim=-1).T
        iu = torch.triu_indices(s.shape[0], s.shape[0], 1)
        return float(torch.corrcoef(torch.stack([s[iu[0], iu[1]], rec[iu[0], iu[1]]]))[0, 1])

    @torch.no_grad()
    def init_procrustes(self, source: torch.Tensor, target: torch.Tensor, token_ids: torch.Tensor, scale: float = 0.1) -> float:
        """Align another model's embeddings `source (n, s)` onto this model's `target (n, d_model)` reps.

        geo rows = the source's top principal directions (unit rows); proj = the orthogonal Procrustes
        rotation of those rows onto the target's top principal subspace, mapped back to d_model and scaled
        to `scale` x the mean target norm. Returns the mean alignment cosine.
        """
        g = self.config.n_geometric_dims
        if source.shape[0] != target.shape[0] or target.shape[0] != token_ids.numel():
            raise HfAttnError("source, target and token_ids must describe the same tokens (same first dimension).")
        if min(source.shape[0], source.shape[1], target.shape[1]) < g:
            raise HfAttnError(f"Procrustes needs >= {g} tokens and dims (n_geometric_dims); got {tuple(source.shape)}, {tuple(target.shape)}.")
        src, tgt = source.double(), target.double()
        src_c = src - src.mean(0)
        geo = F.normalize(src_c @ torch.linalg.svd(src_c, full_matrices=False)[2][:g].T, dim=-1)
        tgt_mean = tgt.mean(0)
        components = torch.linalg.svd(tgt - tgt_mean, full_matrices=False)[2][:g]  # (g, d_model)
        tgt_pca = F.normalize((tgt - tgt_mean) @ components.T, dim=-1)
        a, b = geo - geo.mean(0), tgt_pca - tgt_pca.mean(0)
        u, _, vh = torch.linalg.svd(a.T @ b)
        rotation = u @ vh  # argmin ||a R - b|| over orthogonal R
        aligned = a @ rotation + tgt_pca.mean(0)
        weight = (rotation @ components).T * (scale * tgt.norm(dim=-1).mean())
        self._write_rows(geo, token_ids)
        self.proj.weight.copy_(weight.to(self.proj.weight))
        return float(F.cosine_similarity(aligned, tgt_pca, dim=-1).mean())

    # -- health --------------------------------------------------------------------------------------
    @torch.no_grad()
    def health_metrics(self) -> dict[str, float]:
        """Alphas per block and the participation ratio and pentachoron CV of the geometric table."""
        out = {f"alpha/{n}": float(a) for n, a in zip(self.layer_names, self.alphas())}
        w = self.geometric_embed.weight
        rows = w[torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(0))[:4096].to(w.device)]
        out["pr/geometry"] = participation_ratio(rows)
        out["pr_over_dim/geometry"] = out["pr/geometry"] / w.shape[1]
        out["cv/geometry"] = pentachoron_cv(rows, self.config.cv_simplices)["cv"]
        return out
