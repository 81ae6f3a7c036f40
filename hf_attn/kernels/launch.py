"""Launching the Triton kernels: a direct path past Triton's per-call argument binding, and tuned settings that
a GPU with less shared memory may not fit.

Why a direct path: `kernel[grid](...)` binds and specialises every argument, builds a cache key and checks the
kernel's globals on every call before it reaches the compiled launcher, which costs more host time than a
short kernel runs (the launch is most of a 4k-token training step's attention cost when the host, not the GPU,
sets the pace). Once a kernel has been compiled for one set of arguments, `launch` keeps it under a key that
holds everything Triton specialises on and calls the compiled kernel directly, as `torch.compile`'s generated
launchers do. Under Triton's CPU interpreter nothing is compiled, and every call takes Triton's own path.
"""
from __future__ import annotations

import torch
from triton.compiler import CompiledKernel
from triton.runtime import driver
from triton.runtime.errors import OutOfResources

DIRECT = True  # False: every launch takes Triton's own path (`recipes/bench/bench_launch.py` times both)
MAX_COMPILED = 4096  # cached launch keys (one per kernel, setting and argument values); cleared when full
_COMPILED: dict = {}  # launch key -> (compiled kernel, the constexprs in the kernel's order, its device)
_FITTED: dict = {}  # (name, setting, constexprs) -> the setting that fit this GPU's shared memory


def _argument_key(args: tuple) -> tuple:
    """What Triton specialises a compiled kernel on, kept conservatively: integers by value (Triton looks at
    `== 1`, divisibility by 16 and the 32-bit range), tensors by dtype and address modulo 16 (Triton looks at
    16-byte alignment), anything else (floats, which Triton types fp32 whatever their value) by type."""
    return tuple([a if type(a) is int else (a.dtype, a.data_ptr() & 15) if isinstance(a, torch.Tensor) else type(a)
                  for a in args])


def _device_and_stream() -> tuple[int, int]:
    """The current CUDA device and its current stream, which Triton's own launch would use."""
    device = driver.active.get_current_device()
    return device, driver.active.get_current_stream(device)


def launch(kernel, grid, *args, num_warps: int, num_stages: int, **consts) -> CompiledKernel | None:
    """`kernel[grid](*args, **consts, num_warps=..., num_stages=...)`, the runtime arguments positional and the
    constexprs by name; `grid` may be a function of the arguments by name. After the first call with the same
    argument key (`_argument_key`), constexprs and options on the same device, the compiled kernel is launched
    directly on the current stream, as Triton's path would. Returns the compiled kernel (None under the
    interpreter)."""
    key = (kernel, num_warps, num_stages, tuple(consts.items()), _argument_key(args))
    hit = _COMPILED.get(key) if DIRECT else None
    if hit is not None:
        compiled, constexprs, device = hit
        current, stream = _device_and_stream()
        if current == device:
            full = (*args, *constexprs)
            if callable(grid):
                grid = grid(dict(zip(kernel.arg_names, full)))
            compiled[(*grid, 1, 1)[:3]](*full, stream=stream)
            return compiled
    compiled = kernel[grid](*args, **consts, num_warps=num_warps, num_stages=num_stages)
    names = getattr(kernel, "arg_names", ())[len(args):]
    if isinstance(compiled, CompiledKernel) and all(n in consts for n in names):
        if len(_COMPILED) >= MAX_COMPILED:
            _COMPILED.clear()
        _COMPILED[key] = (compiled, tuple(consts[n] for n in names), _device_and_stream()[0])
    return compiled


def launch_fitting(name: str, kernel, grid, setting: tuple, blocks: tuple[str, ...], consts: dict, *args):
    """`launch` at `setting = (*block sizes, num_warps, num_stages)`, the block sizes passed as the constexprs
    named in `blocks`. While the GPU lacks the shared memory for them, num_stages steps down, then the largest
    block halves (not below 16); the first setting that fits is kept for the next call with the same name,
    setting and constexprs. `grid` may be a function of the launch's constexprs. Returns what the launch returns
    (the compiled kernel on a GPU: its `n_spills`, `n_regs`, `metadata.shared`)."""
    key = (name, setting, tuple(consts.items()))
    *sizes, warps, stages = _FITTED.get(key, setting)
    while True:
        try:
            compiled = launch(kernel, grid, *args, **consts, **dict(zip(blocks, sizes)), num_warps=warps,
                              num_stages=stages)
            _FITTED[key] = (*sizes, warps, stages)
            return compiled
        except OutOfResources:
            if stages > 1:
                stages -= 1
            elif max(sizes) > 16:
                sizes[sizes.index(max(sizes))] //= 2
            else:
                raise
