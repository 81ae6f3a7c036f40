"""The augmented inner product equals -KL up to a per-query constant (fast path vs explicit, float64)."""
import pytest
import torch

from hf_attn.attention.gauge import Beliefs, augmented, irrep_layout, kl_explicit


def _beliefs(b, h, t, layout, token_var, frames, g):
    mu = torch.randn(b, h, t, layout.head_dim, generator=g, dtype=torch.float64)
    shape = (b, h, t, layout.n_blocks) if token_var else (1, 1, 1, layout.n_blocks)
    var = torch.rand(shape, generator=g, dtype=torch.float64) + 0.3
    phi = torch.randn(b, h, t, 3, generator=g, dtype=torch.float64) if frames else None
    return Beliefs(mu, var, phi)


@pytest.mark.parametrize("token_var", [False, True])
@pytest.mark.parametrize("frames", [False, True])
@pytest.mark.parametrize("split", [False, True])
def test_augmented_equals_minus_kl_up_to_row_constant(token_var, frames, split):
    g = torch.Generator().manual_seed(3)
    layout = irrep_layout(24, "2x0+2x1+1x2")
    q, k = (_beliefs(2, 3, n, layout, token_var, frames, g) for n in (5, 7))
    qa, ka = augmented(q, k, layout, split_constant=split)
    assert qa.shape[-1] % 8 == 0
    diff = qa @ ka.transpose(-1, -2) + kl_explicit(q, k, layout)
    torch.testing.assert_close(diff - diff[..., :1], torch.zeros_like(diff), atol=1e-10, rtol=0)


def test_kl_is_zero_for_identical_beliefs_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    layout = irrep_layout(16)
    b = _beliefs(1, 2, 6, layout, True, True, g)
    kl = kl_explicit(b, b, layout)
    torch.testing.assert_close(kl.diagonal(dim1=-2, dim2=-1), torch.zeros(1, 2, 6, dtype=torch.float64))
    assert (kl >= -1e-12).all()


def test_rotating_everything_by_one_frame_changes_nothing():
    """Gauge invariance: a common extra rotation of all frames and means leaves KL unchanged (per-block var)."""
    from hf_attn.attention.gauge import rotate_into_frames

    g = torch.Generator().manual_seed(1)
    layout = irrep_layout(16)
    q = _beliefs(1, 1, 4, layout, True, False, g)
    k = _beliefs(1, 1, 5, layout, True, False, g)
    g_phi = torch.randn(1, 1, 1, 3, generator=g, dtype=torch.float64)
    # means rotated by R(g)^T, every frame -g: each mean rotated into its own frame is the original mean
    q2 = Beliefs(rotate_into_frames(q.mu, g_phi.expand(1, 1, 4, 3), layout), q.var, -g_phi.expand(1, 1, 4, 3))
    k2 = Beliefs(rotate_into_frames(k.mu, g_phi.expand(1, 1, 5, 3), layout), k.var, -g_phi.expand(1, 1, 5, 3))
    torch.testing.assert_close(kl_explicit(q2, k2, layout), kl_explicit(q, k, layout))
