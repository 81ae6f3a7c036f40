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
    (total,) = scan_blocks_(x, inits=None if init is None else (init,), reverse=reverse)
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(total, expected_total, rtol=1e-5, atol=1e-4)


def test_no_blocks_gives_the_initial_state():
    init = torch.randn(2, 2, 16, device=DEVICE)
    torch.testing.assert_close(scan_blocks_(torch.empty(2, 0, 2, 16, device=DEVICE), inits=(init,))[0], init)


def test_bf16_blocks_are_summed_in_fp32():
    """performer's bf16 chunk states: a bf16 running sum of 600 blocks of 1 + 2^-7 would stall (at 256 the
    bf16 spacing is 2), ending far below 604.7; an fp32 carry keeps the sum, rounded once per stored prefix
    (within one bf16 ulp: the interpreter's rounding differs from the GPU's round-to-nearest)."""
    x = torch.full((1, 600, 8), 1 + 2**-7, device=DEVICE).to(torch.bfloat16)
    exact = x.float().cumsum(1) - x.float()
    (total,) = scan_blocks_(x)
    assert x.dtype == torch.bfloat16 and total.dtype == torch.float32
    torch.testing.assert_close(x.float(), exact, rtol=2**-7, atol=0)
    torch.testing.assert_close(total, torch.full_like(total, 600 * (1 + 2**-7)))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_init", [False, True])
def test_a_pair_of_states_scans_in_one_launch_like_each_alone(reverse, with_init):
    """performer's bf16 `S` chunk states (m x D, several column programs) and fp32 `z` norms (m, one program)
    share one launch: each comes out as it does scanned alone."""
    s, z = torch.randn(2, 37, 64, 24, device=DEVICE).to(torch.bfloat16), torch.randn(2, 37, 64, device=DEVICE)
    inits = (torch.randn(2, 64, 24, device=DEVICE), torch.randn(2, 64, device=DEVICE)) if with_init else None
    alone = [x.clone() for x in (s, z)]
    totals_alone = [scan_blocks_(x, inits=None if inits is None else (i,), reverse=reverse)[0]
                    for x, i in zip(alone, inits or (None, None))]
    totals = scan_blocks_(s, z, inits=inits, reverse=reverse)
    for got, want in zip((s, z, *totals), (*alone, *totals_alone)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_more_than_two_states_or_unmatched_inits_are_refused():
    x = torch.zeros(1, 2, 8, device=DEVICE)
    with pytest.raises(ValueError, match="one or two states"):
        scan_blocks_(x, x, x)
    with pytest.raises(ValueError, match="as many inits"):
        scan_blocks_(x, x, inits=(x[:, 0],))


def test_a_misaligned_state_after_an_aligned_one_scans_right():
    """A compiled kernel is reused directly only for arguments of the same 16-byte alignment (`launch`): a state
    one element off it, same shape, is compiled for anew rather than read with the aligned kernel's vector
    loads (a misaligned address on the GPU)."""
    x = torch.randn(2, 150, 64, device=DEVICE)
    expected = x.cumsum(1) - x
    shifted = torch.empty(x.numel() + 1, device=DEVICE)[1:].view_as(x)
    for state in (x.clone(), shifted.copy_(x), x.clone()):
        scan_blocks_(state)
        torch.testing.assert_close(state, expected, rtol=1e-5, atol=1e-4)
