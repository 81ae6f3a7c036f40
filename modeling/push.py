"""`hf_attn.push_to_hub`: save a model the way hf-attn reloads it, then upload it with its model card.

A model is saved first (`hf_attn.save_pretrained`, or `hf_attn.save_wrapper` with `wrapper_only=True`) into a
temporary folder; folders (a checkpoint or a run folder) go to `hf_attn.hub.push_folder` as they are.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from hf_attn.adapters import save_wrapper
from hf_attn.hub import push_folder

from .checkpoint import save_pretrained


def push_to_hub(source: torch.nn.Module | str | Path, repo_id: str, *, wrapper_only: bool = False, **kwargs):
    """Upload `source` (a model, a checkpoint folder or a run folder) to `repo_id` with a model card.

    `wrapper_only=True` uploads only a wrapped model's wrapper (hf_attn_wrapper.json + safetensors). Other
    keyword arguments (run_dir, private, revision, commit_message, token, endpoint, dry_run, base_model,
    license, datasets) are `hf_attn.hub.push_folder`'s. Returns the `CommitInfo`, or with `dry_run=DIR` DIR.
    """
    if not isinstance(source, torch.nn.Module):
        return push_folder(source, repo_id, **kwargs)
    with tempfile.TemporaryDirectory(prefix="hf_attn_save_") as tmp:
        (save_wrapper if wrapper_only else save_pretrained)(source, tmp)
        return push_folder(tmp, repo_id, **kwargs)
