"""Small helpers shared across hf-attn: the error type, optional imports, atomic file writes."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Iterator


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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
