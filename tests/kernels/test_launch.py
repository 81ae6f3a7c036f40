"""launch_fitting: a tuned launch setting steps down until it fits the GPU's shared memory, and the fit is kept."""
import pytest

pytest.importorskip("triton")
from triton.runtime.errors import OutOfResources  # noqa: E402

from hf_attn.kernels.launch import launch_fitting  # noqa: E402


class Kernel:
    """Fits only with one stage and blocks of at most `max_bn` keys, as a GPU with less shared memory might."""

    def __init__(self, max_bn=32):
        self.tried, self.max_bn = [], max_bn

    def __getitem__(self, grid):
        def run(*args, BM, BN, num_warps, num_stages, **consts):
            self.tried.append((BM, BN, num_warps, num_stages))
            if num_stages > 1 or BN > self.max_bn:
                raise OutOfResources(300_000, 232_448, "shared memory")
            return "compiled"

        return run


def test_steps_down_stages_then_the_larger_block_and_remembers_the_fit():
    kernel = Kernel()
    assert launch_fitting("probe", kernel, None, (64, 128, 8, 3), ("BM", "BN"), {"X": 1}) == "compiled"
    assert kernel.tried == [(64, 128, 8, 3), (64, 128, 8, 2), (64, 128, 8, 1), (64, 64, 8, 1), (32, 64, 8, 1),
                            (32, 32, 8, 1)]
    launch_fitting("probe", kernel, None, (64, 128, 8, 3), ("BM", "BN"), {"X": 1})
    assert kernel.tried[-1] == (32, 32, 8, 1) and len(kernel.tried) == 7  # the fitting setting is reused at once
    launch_fitting("probe", kernel, None, (64, 128, 8, 3), ("BM", "BN"), {"X": 2})  # other constexprs: tried anew
    assert len(kernel.tried) == 13


def test_a_setting_that_never_fits_raises():
    kernel = Kernel(max_bn=8)
    with pytest.raises(OutOfResources):
        launch_fitting("never", kernel, None, (16, 32, 4, 2), ("BM", "BN"), {})
    assert kernel.tried == [(16, 32, 4, 2), (16, 32, 4, 1), (16, 16, 4, 1)]
