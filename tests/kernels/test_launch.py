"""launch: the direct path reuses a compiled kernel only for arguments Triton would compile the same way.
launch_fitting: a tuned launch setting steps down until it fits the GPU's shared memory, and the fit is kept."""
import pytest
import torch

pytest.importorskip("triton")
from triton.compiler import CompiledKernel  # noqa: E402
from triton.runtime.errors import OutOfResources  # noqa: E402

from hf_attn.kernels import launch as launches  # noqa: E402
from hf_attn.kernels.launch import launch, launch_fitting  # noqa: E402


class Compiled(CompiledKernel):
    """A compiled kernel that records its direct launches (built without compiling anything)."""

    def __init__(self, log):  # CompiledKernel's own needs a real compilation
        self.log, self.module = log, None  # no loaded module for CompiledKernel.__del__ to release

    def __getitem__(self, grid):
        return lambda *args, stream: self.log.append(("direct", grid, args))


class Jit:
    """A `@triton.jit` kernel `(x, n, scale, BM: constexpr, FLAG: constexpr)` as `launch` sees it."""

    arg_names = ["x", "n", "scale", "BM", "FLAG"]

    def __init__(self, compiles=True):
        self.log = []
        self.compiled = Compiled(self.log) if compiles else None  # None: Triton's interpreter

    def __getitem__(self, grid):
        def run(*args, num_warps, num_stages, **consts):
            bound = dict(zip(self.arg_names, (*args, consts["BM"], consts["FLAG"])))
            self.log.append(("triton", grid(bound) if callable(grid) else grid, args))
            return self.compiled

        return run


DEVICE = [0]  # the current device the fake launches see


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    monkeypatch.setattr(launches, "_COMPILED", {})
    monkeypatch.setattr(launches, "_FITTED", {})
    monkeypatch.setattr(launches, "_device_and_stream", lambda: (DEVICE[0], 7))
    DEVICE[0] = 0


def test_a_compiled_kernel_is_launched_directly_with_its_constexprs_in_signature_order():
    kernel, x = Jit(), torch.zeros(8)
    for _ in range(2):
        launch(kernel, (4, 2), x, 7, 0.5, FLAG=True, BM=64, num_warps=4, num_stages=2)
    assert kernel.log == [("triton", (4, 2), (x, 7, 0.5)), ("direct", (4, 2, 1), (x, 7, 0.5, 64, True))]


def test_a_grid_function_sees_the_arguments_by_name_on_the_direct_path():
    kernel, x = Jit(), torch.zeros(8)
    for _ in range(2):
        launch(kernel, lambda meta: (meta["n"] // meta["BM"],), x, 256, 0.5, BM=64, FLAG=False, num_warps=4,
               num_stages=1)
    assert [entry[:2] for entry in kernel.log] == [("triton", (4,)), ("direct", (4, 1, 1))]


@pytest.mark.parametrize("change", ["int", "dtype", "alignment", "warps", "constexpr"])
def test_arguments_triton_would_specialise_differently_go_through_triton(change):
    """Another integer value (Triton specialises on `== 1`, divisibility by 16 and the 32-bit range), dtype,
    16-byte alignment (a view one element in), option or constexpr: Triton binds and compiles for it."""
    kernel, storage = Jit(), torch.zeros(16)
    base = dict(x=storage[:8], n=16, warps=4, flag=True)
    changed = dict(base, **{"int": dict(n=17), "dtype": dict(x=storage[:8].double()), "alignment": dict(x=storage[1:9]),
                            "warps": dict(warps=8), "constexpr": dict(flag=False)}[change])
    for a in (base, changed, changed):
        launch(kernel, (1,), a["x"], a["n"], 0.5, BM=16, FLAG=a["flag"], num_warps=a["warps"], num_stages=1)
    assert [entry[0] for entry in kernel.log] == ["triton", "triton", "direct"]


def test_another_current_device_goes_through_triton():
    """Triton compiles per device; a kernel compiled on one GPU is not launched on another."""
    kernel, x = Jit(), torch.zeros(8)
    for device in (0, 1, 1, 0):
        DEVICE[0] = device
        launch(kernel, (1,), x, 2, 0.5, BM=16, FLAG=True, num_warps=4, num_stages=1)
    assert [entry[0] for entry in kernel.log] == ["triton", "triton", "direct", "triton"]


def test_with_the_direct_path_off_every_call_takes_triton_s_path(monkeypatch):
    monkeypatch.setattr(launches, "DIRECT", False)
    kernel, x = Jit(), torch.zeros(8)
    for _ in range(2):
        launch(kernel, (1,), x, 2, 0.5, BM=16, FLAG=True, num_warps=4, num_stages=1)
    assert [entry[0] for entry in kernel.log] == ["triton", "triton"]


def test_floats_of_any_value_share_the_compiled_kernel():
    kernel, x = Jit(), torch.zeros(8)
    for scale in (0.5, 3.0):
        launch(kernel, (1,), x, 2, scale, BM=16, FLAG=True, num_warps=4, num_stages=1)
    assert kernel.log[-1] == ("direct", (1, 1, 1), (x, 2, 3.0, 16, True))


def test_without_a_compiled_kernel_every_call_takes_triton_s_path():
    """Triton's CPU interpreter compiles nothing: nothing is kept."""
    kernel, x = Jit(compiles=False), torch.zeros(8)
    for _ in range(3):
        launch(kernel, (1,), x, 2, 0.5, BM=16, FLAG=True, num_warps=4, num_stages=1)
    assert [entry[0] for entry in kernel.log] == ["triton"] * 3 and not launches._COMPILED


def test_the_cache_is_cleared_when_full(monkeypatch):
    monkeypatch.setattr(launches, "MAX_COMPILED", 2)
    kernel, x = Jit(), torch.zeros(8)
    for n in (1, 2, 3):
        launch(kernel, (1,), x, n, 0.5, BM=16, FLAG=True, num_warps=4, num_stages=1)
    assert len(launches._COMPILED) == 1


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
