import pytest
import torch

from kernel_cases import DEVICE

from hf_attn.kernels.scan import scan_blocks_


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("state", [(2, 16), (2, 64), (3, 40, 24)])  # holo widths; performer's (m, D) with a ragged tail
def test_scan_matches_cumsum_in_place(reverse, state):
    """150 blocks cross several chunks of the in-place loop; 960 columns span several column programs."""
    x = torch.randn(3, 150, *state, device=DEVICE)
    init = None if reverse else torch.randn(3, *state, device=DEVICE)
    inclusive = x.flip(1).cumsum(1).flip(1) if reverse else x.cumsum(1)
    base = 0 if init is None else init[:, None]
    expected, expected_total = inclusive - x + base, x.sum(1) + (0 if init is None else init)
    total = scan_blocks_(x, init, reverse)
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(total, expected_total, rtol=1e-5, atol=1e-4)


def test_no_blocks_gives_the_initial_state():
    init = torch.randn(2, 2, 16, device=DEVICE)
    torch.testing.assert_close(scan_blocks_(torch.empty(2, 0, 2, 16, device=DEVICE), init), init)


def test_bf16_blocks_are_summed_in_fp32():
    """performer's bf16 chunk states: a bf16 running sum of 600 blocks of 1 + 2^-7 would stall (at 256 the
    bf16 spacing is 2), ending far below 604.7; an fp32 carry keeps the sum, rounded once per stored prefix
    (within one bf16 ulp: the interpreter's rounding differs from the GPU's round-to-nearest)."""
    x = torch.full((1, 600, 8), 1 + 2**-7, device=DEVICE).to(torch.bfloat16)
    exact = x.float().cumsum(1) - x.float()
    total = scan_blocks_(x)
    assert x.dtype == torch.bfloat16 and total.dtype == torch.float32
    torch.testing.assert_close(x.float(), exact, rtol=2**-7, atol=0)
    torch.testing.assert_close(total, torch.full_like(total, 600 * (1 + 2**-7)))
