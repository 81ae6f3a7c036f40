"""Small helpers shared across hf-attn: the error type, optional imports, atomic file writes, compile-safe
constants."""
from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import functools
import importlib
import importlib.util
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import torch


class HfAttnError(ValueError):
    """A user-facing error: the message names the problem and the fix."""


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message gives the pip command."""


def require(module: str, *, extra: str | None = None, purpose: str = "this feature", pip_name: str | None = None):
    """Import `module` or raise `MissingDependencyError` naming the install command."""
    if importlib.util.find_spec(module) is None:
        how = f"pip install 'hf-attn[{extra}]'" if extra else f"pip install {pip_name or module}"
        raise MissingDependencyError(f"{purpose} needs the optional package '{pip_name or module}'. Install it: {how}")
    return importlib.import_module(module)


def mark_static(t: torch.Tensor) -> torch.Tensor:
    """Tell dynamo that `t` keeps its address, as transformers' `StaticCache` does for its tensors (what lets a
    CUDA-graphed step read or update it in place without copies); a no-op while tracing."""
    if not torch.compiler.is_compiling():
        torch._dynamo.mark_static_address(t)
    return t


def compile_constant(fn: Callable) -> Callable:
    """Memoise `fn(*args)`, a tensor (or tuple of tensors) that never changes, for use inside compiled code.

    Dynamo traces through `functools.lru_cache` (rebuilding the value in every graph: CPU work and uploads a
    CUDA graph cannot hold, or a `torch.Generator` it cannot trace), but reads an entry of a plain dict as a
    constant; the first call must be eager (the prefill): a value first made inside a CUDA graph is overwritten
    by its next replay. Values are marked static.
    """
    memo: dict = {}

    @functools.wraps(fn)
    def get(*args):
        if args not in memo:
            value = fn(*args)
            for t in value if isinstance(value, tuple) else (value,):
                if isinstance(t, torch.Tensor):
                    mark_static(t)
            memo[args] = value
        return memo[args]

    get.cache_clear = memo.clear
    get.cached = lambda *args: args in memo
    return get


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(path: Path, is_dir: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give the result the mode a plain open()/mkdir() would."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    A crash mid-write leaves the previous file untouched, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _default_mode(Path(tmp), is_dir=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the whole new one, never a part."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# Files of a previous checkpoint that must not survive into a new one (stale shards, a removed wrapper): only
# the names hf-attn's checkpoint writes. Other `.safetensors` files in the folder (an EMA copy, a PEFT adapter)
# are the user's and are kept, as transformers' own save_pretrained keeps them.
CHECKPOINT_ONLY = ("model.safetensors", "model-?????-of-?????.safetensors", "model.safetensors.index.json",
                   "hf_attn_wrapper.json", "hf_attn_wrapper.safetensors")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, drop: tuple[str, ...] = CHECKPOINT_ONLY, *,
               new: bool = False) -> Iterator[Path]:
    """Yield an empty folder next to `path`; on success it takes `path`'s place in one rename.

    An interrupted save (exception, Ctrl-C, kill) leaves the previous folder exactly as it was. Other files
    already in `path` (a tokenizer, metrics) are hard-linked into the new folder, except names matching
    `drop`, which belong to the checkpoint being replaced. A hard kill may leave a `.NAME.*.tmp` folder.
    `new=True`: `path` must be absent or empty (checked first, and again by the final rename, which fails
    on a folder that filled meanwhile), for folders that must hold exactly what was written into them.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HfAttnError(f"{path} is a file; a checkpoint is saved into a folder.")
    if new and path.exists() and any(path.iterdir()):
        raise HfAttnError(_not_empty(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _default_mode(tmp, is_dir=True)
        if path.exists() and not new:
            _carry_over(path, tmp, drop)
            _exchange(tmp, path)  # tmp now holds the previous folder
        else:
            _rename_onto_empty(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _not_empty(path: Path) -> str:
    return (f"{path} is not empty, and hf-attn never deletes files it did not write: pass a new or empty "
            "folder, or remove this one first.")


def _rename_onto_empty(src: Path, dst: Path) -> None:
    """`src` becomes `dst`; POSIX rename replaces an empty `dst` folder and refuses a non-empty one."""
    try:
        os.rename(src, dst)
    except OSError as e:
        if dst.is_dir() and any(dst.iterdir()):
            raise HfAttnError(_not_empty(dst)) from e
        raise


def regular_file_inside(path: Path, root: Path) -> bool:
    """Whether `path` is (or links to) a regular file inside `root`: no link leaving it, no FIFO or device."""
    try:
        target = path.resolve(strict=True)
        return target.is_relative_to(root.resolve()) and stat.S_ISREG(target.stat().st_mode)
    except (OSError, RuntimeError):  # dangling or looping link
        return False


def _carry_over(old: Path, new: Path, drop: tuple[str, ...]) -> None:
    for entry in old.iterdir():
        target = new / entry.name
        if target.exists() or any(fnmatch.fnmatch(entry.name, pattern) for pattern in drop):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target, copy_function=_link_or_copy, symlinks=True)
        else:
            _link_or_copy(entry, target)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); elsewhere two renames, old kept till the end."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
    old = b.with_name(f".{b.name}.old-{os.getpid()}")
    os.rename(b, old)
    os.rename(a, b)
    os.rename(old, a)


def cache_argument(kwargs: dict):
    """The KV cache a model or attention layer was called with, under either of transformers' names.

    transformers 5.24 renamed `past_key_values` to `cache` (the old name warns until 6.0); 5.17-5.23 use
    `past_key_values`. hf-attn supports both ends of that range, so it reads whichever is present.
    """
    cache = kwargs.get("cache")
    return cache if cache is not None else kwargs.get("past_key_values")


def _cache_kwarg_name() -> str:
    import inspect

    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


CACHE_KWARG = _cache_kwarg_name()
"""The keyword the installed transformers takes for a KV cache (`model(..., **{CACHE_KWARG: cache})`)."""


def set_attn_implementation(model, name: str) -> None:
    """`model.set_attn_implementation(name)`, also for nested sub-models with their own config copy.

    transformers 5.17's `set_attn_implementation` skips sub-models whose config has the parent's class, so a
    switched T5 kept running the old attention in its encoder and decoder stacks; newer releases reach them,
    and the loop below is then a no-op. Every switch inside hf-attn goes through here.
    """
    model.set_attn_implementation(name)
    for module in model.modules():
        config = getattr(module, "config", None)
        if (module is not model and config is not None and config is not model.config
                and hasattr(module, "set_attn_implementation") and config._attn_implementation != name):
            module.set_attn_implementation(name)


def set_config(model, **values) -> None:
    """Set each of `values` on `model.config` and on every sub-model's own config copy.

    T5's encoder and decoder stacks keep copies of the config, so a knob set on `model.config` alone (a
    variant's `holo_unitary`, a window's `hf_attn_window`) would never reach their attention layers.
    """
    configs = [getattr(m, "config", None) for m in (model, *model.modules())]
    for config in {id(c): c for c in configs if c is not None}.values():
        for key, value in values.items():
            setattr(config, key, value)
