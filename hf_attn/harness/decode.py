"""Decode speed and cache size after a long context: the figure where linear-time attention saves memory.

Used by `recipes/bench_decode.py` and the conversion report (`hf-attn convert`). Softmax attention keeps a
`DynamicCache` (keys and values of every past token: it grows with the context); hf-attn variants keep a
`RecurrentCache` (a constant-size state per layer).
"""
from __future__ import annotations

import time

import torch
from transformers import DynamicCache

from ..cache import RecurrentCache
from ..measure import sync
from ..utils import CACHE_KWARG

def new_cache(model):
    """A recurrent state for linear-time variants (those that never build a (T, T) mask), else a KV cache."""
    from transformers.masking_utils import AttentionMaskInterface

    from ..registry import padding_mask_only

    if AttentionMaskInterface._global_mapping.get(model.config._attn_implementation) is padding_mask_only:
        return RecurrentCache()
    return DynamicCache(config=model.config)


def cache_mib(cache) -> float:
    """Bytes the cache holds, in MiB."""
    if isinstance(cache, RecurrentCache):
        return cache.state_bytes() / 2**20
    return sum(x.numel() * x.element_size() for layer in cache.layers for x in (layer.keys, layer.values)) / 2**20


@torch.no_grad()
def decode_speed(model, context: int, steps: int, device: torch.device | str) -> tuple[float, float]:
    """Tokens/s of greedy single-token decoding after a `context`-token prompt, and the cache's MiB at the end."""
    device = torch.device(device)
    ids = torch.randint(5, model.config.vocab_size, (1, context), device=device)
    cache = new_cache(model)
    out = model(input_ids=ids, **{CACHE_KWARG: cache}, use_cache=True, logits_to_keep=1)
    tok = out.logits[:, -1:].argmax(-1)
    for _ in range(3):  # warm-up steps (kernel compilation, allocator)
        tok = model(input_ids=tok, **{CACHE_KWARG: cache}, use_cache=True).logits[:, -1:].argmax(-1)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        tok = model(input_ids=tok, **{CACHE_KWARG: cache}, use_cache=True).logits[:, -1:].argmax(-1)
    sync(device)
    return steps / (time.perf_counter() - t0), cache_mib(cache)
