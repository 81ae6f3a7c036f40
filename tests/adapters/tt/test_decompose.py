"""hf_attn.adapters.tt.decompose: TT-SVD, TT-matrices and the core-by-core contraction, against dense float64 arithmetic."""
import math

import pytest
import torch

import hf_attn
from hf_attn.adapters.tt.decompose import (
    TTMatrixLinear,
    default_factors,
    factorize,
    to_tensor_train,
    tt_linear,
    tt_matrix,
    tt_matrix_to_dense,
    tt_reconstruct,
)


def _random_tt(shape, ranks, seed=0):
    g = torch.Generator().manual_seed(seed)
    bonds = [1, *ranks, 1]
    return [torch.randn(bonds[k], n, bonds[k + 1], generator=g, dtype=torch.float64) for k, n in enumerate(shape)]


def test_recovers_known_tt_at_true_ranks_to_float64_precision():
    cores = _random_tt([4, 5, 6, 3], [3, 2, 3])
    tensor = tt_reconstruct(cores)
    dec = to_tensor_train(tensor, ranks=[3, 2, 3])
    assert dec.ranks == [1, 3, 2, 3, 1]
    assert dec.rel_error < 1e-13
    torch.testing.assert_close(tt_reconstruct(dec.cores), tensor, rtol=0, atol=1e-12)
    # eps finds the true ranks by itself (the extra singular values are round-off)
    assert to_tensor_train(tensor, eps=1e-10).ranks == [1, 3, 2, 3, 1]


def test_exact_by_default_and_max_rank_caps():
    t = torch.randn(3, 4, 5, dtype=torch.float64)
    assert to_tensor_train(t).rel_error < 1e-13
    assert max(to_tensor_train(t, max_rank=2).ranks) == 2


def test_eps_bounds_the_error():
    t = torch.randn(6, 6, 6, 6, dtype=torch.float64)
    for eps in (0.1, 0.3, 0.6):
        assert to_tensor_train(t, eps=eps).rel_error <= eps + 1e-12


def test_error_falls_monotonically_with_rank_on_a_random_matrix():
    w = torch.randn(48, 36, dtype=torch.float64)
    out_f, in_f = [4, 12], [12, 3]  # balanced-ish: bond can reach 36
    errs = [tt_matrix(w, out_f, in_f, max_rank=r).rel_error for r in range(1, 37)]
    assert all(b < a for a, b in zip(errs, errs[1:]))
    assert errs[0] > 0.5 and errs[-1] < 1e-13


@pytest.mark.parametrize(
    "out_f,in_f",
    [([48], [36]), ([1, 48], [36, 1]), ([4, 12], [6, 6]), ([1, 4, 12], [9, 4, 1]), ([2, 2, 3, 4], [3, 2, 2, 3])],
)
def test_full_rank_tt_matrix_is_the_dense_layer(out_f, in_f):
    w = torch.randn(48, 36, dtype=torch.float64)
    x = torch.randn(2, 5, 36, dtype=torch.float64)
    dec = tt_matrix(w, out_f, in_f)
    torch.testing.assert_close(tt_matrix_to_dense(dec.cores), w, rtol=0, atol=1e-12)
    torch.testing.assert_close(tt_linear(x, dec.cores), x @ w.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_cores", [2, 3, 4])
def test_contraction_and_its_gradients_match_the_rebuilt_matrix(num_cores):
    """At truncated rank too: tt_linear == x @ dense(cores).T, output and every gradient."""
    w = torch.randn(48, 36, dtype=torch.float64)
    out_f, in_f = default_factors(48, 36, num_cores)
    cores = [c.clone().requires_grad_() for c in tt_matrix(w, out_f, in_f, max_rank=3).cores]
    bias = torch.randn(48, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 7, 36, dtype=torch.float64, requires_grad=True)
    fast = tt_linear(x, cores, bias)
    ref = x @ tt_matrix_to_dense(cores).T + bias
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    grads_fast = torch.autograd.grad(fast, [x, bias, *cores], g)
    grads_ref = torch.autograd.grad(ref, [x, bias, *cores], g)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_dense_contraction_matches_the_core_chain_and_auto_keeps_cores_on_cpu():
    """contraction='dense' (rebuild W, one GEMM) == 'cores' in output and gradients; 'auto' on CPU uses cores."""
    w = torch.randn(48, 36, dtype=torch.float64)
    layers = {c: TTMatrixLinear.from_weight(w, 3, contraction=c, bias=torch.randn(48, dtype=torch.float64))[0]
              for c in ("cores", "dense")}
    layers["dense"].load_state_dict(layers["cores"].state_dict())
    x = torch.randn(600, 36, dtype=torch.float64)  # above DENSE_MIN_ROWS: auto would rebuild on CUDA
    outs = {c: layer(x) for c, layer in layers.items()}
    torch.testing.assert_close(outs["dense"], outs["cores"], rtol=0, atol=1e-12)
    g = torch.randn_like(outs["cores"])
    grads = {c: torch.autograd.grad(outs[c], list(layers[c].parameters()), g) for c in layers}
    for a, b in zip(grads["dense"], grads["cores"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    auto = TTMatrixLinear.from_weight(w, 3)[0]
    assert auto.contraction == "auto" and not auto.rebuilds(x) and layers["dense"].rebuilds(x[:1])
    with pytest.raises(hf_attn.HfAttnError, match="contraction must be one of auto, cores, dense"):
        TTMatrixLinear(16, 24, rank=2, contraction="fused")


def test_factorisation_helpers():
    assert factorize(576, 3) == [8, 8, 9]
    assert factorize(192, 3) == [4, 6, 8]
    out_f, in_f = default_factors(192, 576, 3)
    assert (out_f[0], in_f[-1]) == (1, 1) and math.prod(out_f) == 192 and math.prod(in_f) == 576
    assert default_factors(192, 576, 2) == ([1, 192], [576, 1])
    with pytest.raises(hf_attn.HfAttnError, match="cannot be split into 3 factors"):
        factorize(97, 3)


def test_tt_matrix_linear_module():
    w = torch.randn(24, 16)
    layer, err = TTMatrixLinear.from_weight(w, rank=64, bias=torch.ones(24))
    assert err < 1e-6 and layer.ranks[0] == layer.ranks[-1] == 1
    x = torch.randn(5, 16)
    torch.testing.assert_close(layer(x), x @ w.T + 1, rtol=1e-5, atol=1e-5)
    fresh = TTMatrixLinear(16, 24, rank=2, num_cores=2)
    assert fresh(x).shape == (5, 24) and fresh.ranks == [1, 2, 1]


def test_clear_errors():
    t = torch.randn(3, 4, 5)
    with pytest.raises(hf_attn.HfAttnError, match="integer >= 1"):
        to_tensor_train(t, max_rank=0)
    with pytest.raises(hf_attn.HfAttnError, match="integer >= 1"):
        to_tensor_train(t, ranks=[2, 0])
    with pytest.raises(hf_attn.HfAttnError, match="2 inner bonds"):
        to_tensor_train(t, ranks=[2, 2, 2])
    with pytest.raises(hf_attn.HfAttnError, match="eps"):
        to_tensor_train(t, eps=-1.0)
    with pytest.raises(hf_attn.HfAttnError, match="product is the dimension 48"):
        tt_matrix(torch.randn(48, 36), [4, 10], [6, 6])
    with pytest.raises(hf_attn.HfAttnError, match="same, non-zero length"):
        tt_matrix(torch.randn(48, 36), [4, 12], [36])
    with pytest.raises(hf_attn.HfAttnError, match="rank must be"):
        TTMatrixLinear(16, 24, rank=0)
    with pytest.raises(hf_attn.HfAttnError, match="expects 36"):
        tt_linear(torch.randn(2, 35), tt_matrix(torch.randn(48, 36), [4, 12], [6, 6]).cores)
