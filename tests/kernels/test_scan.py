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
