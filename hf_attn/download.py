"""Fetch a folder by local path or Hub repo id: what loaders of hf-attn checkpoints and wrappers share."""
from __future__ import annotations

import re
from pathlib import Path

from .utils import HfAttnError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_folder(name_or_path: str | Path, filenames: list[str], *, subfolder: str | None = None,
                   endpoint: str | None = None, **hub_kwargs) -> Path:
    """A local folder as is, or the snapshot of `filenames` from the Hub repo `name_or_path`."""
    path = Path(name_or_path)
    if path.is_dir():
        return path / subfolder if subfolder else path
    if not REPO_ID.match(str(name_or_path)):
        raise HfAttnError(f"{name_or_path} is neither a local folder nor a Hub repo id ('user/name').")
    from huggingface_hub import snapshot_download

    patterns = [f"{subfolder}/{f}" if subfolder else f for f in filenames]
    folder = Path(snapshot_download(str(name_or_path), allow_patterns=patterns, endpoint=endpoint, **hub_kwargs))
    return folder / subfolder if subfolder else folder
