"""Launching a Triton kernel at a tuned setting that a GPU with less shared memory may not fit."""
from __future__ import annotations

from triton.runtime.errors import OutOfResources

_FITTED: dict = {}  # (name, setting, constexprs) -> the setting that fit this GPU's shared memory


def launch_fitting(name: str, kernel, grid, setting: tuple, blocks: tuple[str, ...], consts: dict, *args):
    """Launch `kernel[grid](*args, **consts)` at `setting = (*block sizes, num_warps, num_stages)`, the block sizes
    passed as the constexprs named in `blocks`. While the GPU lacks the shared memory for them, num_stages steps
    down, then the largest block halves (not below 16); the first setting that fits is kept for the next call
    with the same name, setting and constexprs. `grid` may be a function of the launch's constexprs. Returns what
    the launch returns (the compiled kernel on a GPU: its `n_spills`, `n_regs`, `metadata.shared`)."""
    key = (name, setting, tuple(sorted(consts.items())))
    *sizes, warps, stages = _FITTED.get(key, setting)
    while True:
        try:
            compiled = kernel[grid](*args, **consts, **dict(zip(blocks, sizes)), num_warps=warps, num_stages=stages)
            _FITTED[key] = (*sizes, warps, stages)
            return compiled
        except OutOfResources:
            if stages > 1:
                stages -= 1
            elif max(sizes) > 16:
                sizes[sizes.index(max(sizes))] //= 2
            else:
                raise
