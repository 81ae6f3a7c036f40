"""Share on the Hub: upload a checkpoint or wrapper-only folder with an hf-attn model card.

`push_folder` stages exactly what will be uploaded (checkpoint files, README.md, plots) in one folder, then
creates the repo (and branch) and uploads that folder in one commit. The token comes from the usual
huggingface_hub places (`token=`, `HF_TOKEN`, `hf auth login`); the endpoint from `endpoint=` or
`HF_ENDPOINT`. A dry run writes the staged folder and sends nothing.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from .download import REPO_ID
from .utils import HfAttnError, atomic_dir, regular_file_inside

# What a pushed checkpoint may contain; everything else (optimizer/scheduler state, pickles) stays home.
UPLOAD_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken")


def is_checkpoint(folder: Path) -> bool:
    """True when `folder` holds a model (`config.json`) or a wrapper config, rather than a run folder."""
    from .adapters.base import CONFIG_NAME

    return (folder / "config.json").is_file() or (folder / CONFIG_NAME).is_file()


def find_checkpoint(run_dir: str | Path) -> tuple[Path, Path]:
    """`(checkpoint folder, run folder)` for a run folder or a checkpoint folder.

    In a run folder the checkpoint is a sub-folder named `final` or `best`, else the one with the highest
    step number in its name (`checkpoint-1200`), else the newest. A checkpoint folder's run records are
    read from the folder itself, or from its parent when that holds them.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HfAttnError(f"{run_dir} is not a folder.")
    if is_checkpoint(run_dir):
        parent = run_dir.parent
        records = any((parent / n).exists() for n in ("config.yaml", "config.yml", "metrics.csv"))
        own = any((run_dir / n).exists() for n in ("config.yaml", "config.yml", "metrics.csv"))
        return run_dir, parent if records and not own else run_dir
    candidates = [p.parent for p in run_dir.glob("*/config.json")] + [p.parent for p in run_dir.glob("*/hf_attn_wrapper.json")]
    candidates = sorted(set(candidates))
    if not candidates and (run_dir / "checkpoints").is_dir() and (run_dir / "config.yaml").is_file():
        raise HfAttnError(
            f"{run_dir} is a training run without final/: it stopped before its last step (train.stop_at, or it was "
            f"interrupted). Resume it to the end, which writes {run_dir / 'final'}: python -m hf_attn.train "
            f"--config {run_dir / 'config.yaml'} --out_dir {run_dir} --set train.stop_at=null --resume"
        )
    if not candidates:
        raise HfAttnError(
            f"No checkpoint in {run_dir}: expected config.json (hf_attn.save_pretrained) or hf_attn_wrapper.json "
            "(hf_attn.save_wrapper) in it or in one of its sub-folders."
        )
    for name in ("final", "best"):
        if run_dir / name in candidates:
            return run_dir / name, run_dir

    def step(p: Path) -> int:
        numbers = re.findall(r"\d+", p.name)
        return int(numbers[-1]) if numbers else -1

    return max(candidates, key=lambda p: (step(p), p.stat().st_mtime)), run_dir


def _check_loadable(folder: Path, run_config: dict | None) -> None:
    """Refuse a checkpoint whose config lost the variant/wrapper it was trained with (it would load as sdpa)."""
    import json

    from .registry import list_variants

    if not (folder / "config.json").is_file():
        return
    config = json.loads((folder / "config.json").read_text())
    if str(config.get("model_type", "")).startswith("hf_attn_"):
        return
    from .model_card import _find_key

    named = _find_key(run_config, ("attn_implementation", "variant", "attention"))
    if (isinstance(named, str) and named in list_variants()) or (folder / "hf_attn_wrapper.json").exists():
        raise HfAttnError(
            f"{folder}/config.json is a stock '{config.get('model_type')}' config, but the run used "
            f"{named or 'an hf-attn wrapper'}: loaded from the Hub it would silently run plain attention. Save the "
            "checkpoint with hf_attn.save_pretrained(model, dir) and push that folder."
        )


def upload_files(checkpoint: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """`([(name, file to upload)], names left out)` for a checkpoint folder: regular files matching
    UPLOAD_PATTERNS only (README.md and plots/ are written anew by `stage`).

    An uploadable name that is a link leaving the folder, or a FIFO/device/folder, is refused rather than
    skipped: uploading it could publish a file that is not part of the checkpoint (a link to a key file, say),
    and skipping it could publish a checkpoint without its weights. A link within the folder uploads its target.
    """
    files, left_out = [], []
    for entry in sorted(checkpoint.iterdir()):
        if entry.name in ("README.md", "plots"):
            continue
        if not any(fnmatch.fnmatch(entry.name, p) for p in UPLOAD_PATTERNS):
            left_out.append(entry.name)
        elif not regular_file_inside(entry, checkpoint):
            raise HfAttnError(
                f"{entry} is not a regular file inside {checkpoint} (a link leading outside it, or a special "
                "file): hf-attn uploads only the checkpoint's own files. Copy the file into the folder if it "
                "belongs to the checkpoint, or remove it."
            )
        else:
            files.append((entry.name, entry.resolve()))
    return files, left_out


def _link_checkpoint(src: Path, dst: Path) -> list[str]:
    """Hard-link (or copy) the uploadable files of `src` into `dst`; returns the names left out."""
    files, left_out = upload_files(src)
    for name, file in files:
        try:
            os.link(file, dst / name, follow_symlinks=False)
        except OSError:
            shutil.copy2(file, dst / name, follow_symlinks=False)
        if not stat.S_ISREG((dst / name).lstat().st_mode):  # `file` was swapped for a link since the check
            raise HfAttnError(f"{src / name} changed while it was being staged; push again.")
    return left_out


def stage(source: str | Path, folder: Path, repo_id: str, *, run_dir: str | Path | None = None,
          base_model: str | None = None, license: str | None = None, datasets: list[str] | None = None) -> Path:
    """Write into `folder` exactly what gets uploaded: the checkpoint files, README.md and plots."""
    from .model_card import read_run, render_card

    checkpoint, run_dir_path = find_checkpoint(source)
    run_dir_path = Path(run_dir) if run_dir else run_dir_path
    left_out = _link_checkpoint(checkpoint, folder)
    if left_out:
        print(f"hf-attn push: not uploading {', '.join(left_out)} (only {', '.join(UPLOAD_PATTERNS)})")
    run = read_run(run_dir_path)
    _check_loadable(folder, run.config)
    card = render_card(folder, repo_id, run, base_model=base_model, license=license, datasets=datasets)
    (folder / "README.md").write_text(str(card))
    return folder


def push_folder(
    source: str | Path,
    repo_id: str,
    *,
    run_dir: str | Path | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    dry_run: str | Path | None = None,
    base_model: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
):
    """Upload `source` (a checkpoint folder or a run folder) to `repo_id` with a model card.

    Models go through `hf_attn.push_to_hub` (`hf_attn.modeling.push`), which saves them and calls this.

    Returns the `CommitInfo`, or with `dry_run=DIR` the folder it would upload (nothing is sent). DIR must be
    new or empty: it receives exactly what would be uploaded, and hf-attn never deletes files it did not
    write (like `huggingface_hub.snapshot_download(local_dir=...)`, which writes beside existing files, a
    dry run never empties a folder; unlike it, it refuses to mix the upload with other files).
    """
    if not REPO_ID.match(repo_id):
        raise HfAttnError(f"repo_id must look like 'user/name', got '{repo_id}'.")
    card_kwargs = dict(run_dir=run_dir, base_model=base_model, license=license, datasets=datasets)
    if dry_run is not None:
        with atomic_dir(dry_run, new=True) as tmp:
            stage(source, tmp, repo_id, **card_kwargs)
        return Path(dry_run)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="hf_attn_push_") as tmp:
        folder = stage(source, Path(tmp), repo_id, **card_kwargs)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id, folder_path=folder, revision=revision,
                commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} with hf-attn",
            )
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status in (401, 403):
                raise HfAttnError(
                    f"The Hub at {api.endpoint} refused the token ({status}) for {repo_id}: nothing was uploaded. "
                    "Log in with `hf auth login`, set HF_TOKEN, or pass a write token (--token)."
                ) from e
            raise
