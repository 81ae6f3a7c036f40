"""Left padding and RoPE: why `holo` and `performer` need `position_ids` from the mask, and the warning.

Softmax attention with RoPE depends only on relative positions, so a left-padded row whose real tokens sit
at positions `p, p+1, ...` (the default `arange` when no `position_ids` are given) gives the same outputs as
the unpadded row at `0, 1, ...`. HRR binding (`holo`) and random features (`performer`) act on the rotated
vectors themselves, not only on their relative angle, so the shift changes their outputs. `generate()`
builds `position_ids` from the attention mask; a plain forward must be given them:
`position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)`.
"""
from __future__ import annotations

import warnings

import torch

from .common import AttentionCall


def shifted_rows(key_padding: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """`(B,)` bool: rows that are left-padded and whose first real token is not at position 0."""
    first = key_padding.int().argmax(-1)  # index of each row's first real token (0 for unpadded rows)
    positions = position_ids.expand(key_padding.shape[0], -1)
    start = positions.gather(1, first[:, None]).squeeze(1)
    return (first > 0) & (start != 0)


def warn_if_left_padded_without_positions(variant: str, module, call: AttentionCall, kwargs: dict) -> None:
    """Warn when a left-padded prompt reaches `variant` with positions that do not start at its first real token.

    Checked once per forward (first layer), on calls that see the whole sequence (no cached prefix), where
    `position_ids` reach the attention function (Llama, Qwen2/3, Mistral pass them through).
    """
    pos = kwargs.get("position_ids")
    pad = call.key_padding
    if pad is None or not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[-1] != pad.shape[-1]:
        return
    if call.q_offset or getattr(module, "layer_idx", 0) not in (0, None) or torch.compiler.is_compiling():
        return
    if pos.shape[0] not in (1, pad.shape[0]) or not bool(shifted_rows(pad, pos.to(pad.device)).any()):
        return
    warnings.warn(
        f"{variant}: this batch is left-padded but its position_ids do not start at 0 on the first real token "
        f"(a plain forward without position_ids). {variant} is not shift-invariant under RoPE, so padded rows "
        "differ from unpadded runs. Pass position_ids=(attention_mask.cumsum(-1) - 1).clamp_min(0), as "
        "generate() does.",
        UserWarning,
        stacklevel=3,
    )
