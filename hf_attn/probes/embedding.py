"""Token-embedding geometry: spectrum, participation ratio, dims per variance
fraction, pentachoron CV against Gaussian points of the same scale, and the pairwise cosine distribution."""
from __future__ import annotations

import torch

from hf_attn.geometry import CV_BAND, participation_ratio, pentachoron_cv, variance_dims
from hf_attn.geometry.spectrum import covariance_eigenvalues


def embedding_probe(weight: torch.Tensor, rows: int = 20000, simplices: int = 1000, cosine_rows: int = 2000, seed: int = 0) -> dict:
    """Geometry of an embedding matrix `(vocab, dim)`; `rows` caps the rows used for the spectrum."""
    g = torch.Generator().manual_seed(seed)
    e = weight.detach().to("cpu", torch.float32)
    vocab, dim = e.shape
    sample = e[torch.randperm(vocab, generator=g)[:rows]] if vocab > rows else e
    lam = covariance_eigenvalues(sample)
    pr = participation_ratio(eigenvalues=lam)
    cv = pentachoron_cv(e, simplices, seed=seed)
    rand = torch.randn(min(vocab, 4096), dim, generator=g) * e.std()
    cv_rand = pentachoron_cv(rand, simplices, seed=seed)
    cos_rows = torch.nn.functional.normalize(e[torch.randperm(vocab, generator=g)[:cosine_rows]], dim=-1)
    iu = torch.triu_indices(cos_rows.shape[0], cos_rows.shape[0], 1)
    cos = (cos_rows @ cos_rows.T)[iu[0], iu[1]]
    norms = e.norm(dim=-1)
    return {
        "vocab": vocab,
        "dim": dim,
        "rows_used": sample.shape[0],
        "norm_mean": float(norms.mean()),
        "norm_std": float(norms.std()),
        "participation_ratio": pr,
        "pr_over_dim": pr / dim,
        "top_eigenvalue_fraction": float(lam[0] / lam.sum()),
        "dims_for_variance": variance_dims(lam),
        "eigenvalues": lam.tolist(),
        "pentachoron": {
            "cv": cv["cv"],
            "cv_random": cv_rand["cv"],
            "volume_ratio_to_random": cv["mean_volume"] / cv_rand["mean_volume"] if cv_rand["mean_volume"] else float("nan"),
            "valid_fraction": cv["valid_fraction"],
            "in_band": CV_BAND[0] <= cv["cv"] <= CV_BAND[1],
            "band": list(CV_BAND),
        },
        "cosine_mean": float(cos.mean()),
        "cosine_std": float(cos.std()),
    }
