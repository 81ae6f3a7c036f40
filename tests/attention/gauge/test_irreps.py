"""Irrep specs and gauge settings: parsing, fitting, clear errors."""
import pytest

from hf_attn import HfAttnError
from hf_attn.attention.gauge import irrep_layout, parse_irrep_spec, resolve


def test_default_layout_in_a_64_dim_head():
    layout = irrep_layout(64)
    assert [b.l for b in layout.blocks] == [0] * 5 + [1] * 3 + [2] + [0]
    assert layout.blocks[-1].dim == 45 and layout.blocks[-1].stop == 64 and layout.n_blocks == 10


@pytest.mark.parametrize("d,expected", [(16, ((2, 0), (3, 1), (1, 2))), (8, ((1, 1), (1, 2))), (4, ((1, 0), (1, 1)))])
def test_default_shrinks_to_fit_small_heads(d, expected):
    assert irrep_layout(d).spec == expected


def test_string_and_pair_forms_agree():
    assert parse_irrep_spec("5x0 + 3xl1 + 1xℓ2") == parse_irrep_spec([(5, 0), (3, 1), (1, 2)]) == ((5, 0), (3, 1), (1, 2))


@pytest.mark.parametrize("spec,match", [
    ("4x2+1x3", "needs 27 dimensions but head_dim is 16"),
    ("1x7", "unknown l=7"),
    ("2xq", "not 'MULTxL'"),
    ([(0, 1)], "multiplicity"),
    ("", "empty"),
])
def test_bad_specs_get_clear_errors(spec, match):
    with pytest.raises(HfAttnError, match=match):
        resolve(None, spec, 1.0, 16, None)


@pytest.mark.parametrize("kappa", [0, -1.0, float("nan"), "2"])
def test_bad_kappa(kappa):
    with pytest.raises(HfAttnError, match="kappa"):
        resolve(kappa, None, 1.0, 16, None)


def test_variance_per_block_and_kappa_default():
    s = resolve(None, "1x1", [0.5, 2.0], 16, 0.25)
    assert s.kappa == 4.0 and s.variance == (0.5, 2.0)
    assert resolve(None, None, 1.0, 64, None).kappa == 8.0
    with pytest.raises(HfAttnError, match="one value per block"):
        resolve(None, "1x1", [1.0, 1.0, 1.0], 16, None)
    with pytest.raises(HfAttnError, match="variance"):
        resolve(None, None, -1.0, 16, None)
