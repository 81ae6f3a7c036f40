"""Constant-memory decoding for the linear-time variants: a `transformers.Cache` that keeps recurrent state.

`model.generate(ids, cache=hf_attn.RecurrentCache())` (`past_key_values=` before transformers 5.24) with `attn_implementation="holo"` or
`"performer"` keeps, per layer, only the variant's state (holo: the bound-pair memory, D/2+1 complex numbers
per key/value head, and the key count; performer: `S (m x D)` and `z (m)`), never the past keys/values, so
per-token decode cost and memory do not grow with context (a window hybrid, `config.hf_attn_window = W`, also
keeps the last W keys/values and its sink tokens: still constant). Cached tokens equal full forwards (same math).
hf-attn checkpoints of these variants get one from `generate` without the argument (greedy search and sampling:
`HfAttnModelMixin._prepare_cache_for_generation`).

How it reaches the attention function: transformers calls `cache.update(k, v, layer_idx)` and passes what it
returns to the attention function. `RecurrentLayer.update` returns only the new keys/values, tagged with the
layer (`recurrent_layer(key)`), and the variant reads and replaces the state there.

Any other attention (sdpa, eager, flash, gauge) would see only the new keys and silently attend to them alone.
The cache therefore checks that every tagged call was consumed: each `update` first verifies that the layer
updated before it (the previous layer of this forward, or the last layer of the previous one) ran a variant
that read its state. This needs no knowledge of which implementation a layer runs, so it also catches
wrappers that route attention elsewhere and keys copied on their way (losing the tag); an unconsumed prefill
(whose outputs are still exact) fails at the next layer or the first decode step, before a wrong token.

Static state (`RecurrentCache(static=True)`): the state tensors are allocated once (at the prefill) and then
updated in place at fixed addresses (`torch._dynamo.mark_static_address`, as transformers' `StaticCache` does), and
the token count is a tensor, so a `torch.compile`d decoding step (CUDA graphs, `mode="reduce-overhead"`) stays
valid from token to token. The cache then says `is_compileable`, and `generate` compiles its decoding steps on
CUDA by itself. Window hybrids (`config.hf_attn_window`) keep their last W keys/values in a buffer of exactly W
entries there (padded in front until W tokens are seen), so their steps have fixed shapes too.
"""
from __future__ import annotations

import functools

import torch
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.utils import is_torchdynamo_compiling

from .utils import HfAttnError, mark_static

_TAG = "_hf_attn_recurrent_layer"


class RecurrentLayer(CacheLayerMixin):
    """One layer's recurrent state (`state`, written by the variant through `write_state`) and the number of
    tokens it has seen (an int, or with `static=True` a 0-dim tensor updated in place)."""

    is_sliding = False

    def __init__(self, static: bool = False, **kwargs):
        super().__init__()
        self.static = static
        self.state: dict[str, torch.Tensor] = {}
        self._slots: dict[str, torch.Tensor] = {}  # static mode: the tensors `state` lives in, kept across `reset`
        self.variant: str | None = None
        self.seen: int | torch.Tensor = torch.zeros((), dtype=torch.long) if static else 0
        self.consumed = True  # False from `update` until a variant reads the state (`recurrent_layer`)

    @property
    def is_compileable(self) -> bool:
        """Only a static layer: its tensors keep their addresses, so a compiled/graphed step stays valid."""
        return self.static

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Remember the device and dtype of the first keys; the state itself is created by the variant."""
        self.device, self.dtype = key_states.device, key_states.dtype
        if self.static:
            self.seen = self.seen.to(self.device)
            mark_static(self.seen)
        self.is_initialized = True

    def write_state(self, **tensors: torch.Tensor) -> None:
        """Set the state to `tensors`. Static layers copy into their tensors in place (same addresses, so a
        captured step stays valid); they allocate only outside a compiled region, when the layout or shapes change."""
        if not self.static:
            self.state = tensors
            return
        slots = self._slots
        fits = slots.keys() == tensors.keys() and all(
            slots[k].shape == v.shape and slots[k].dtype == v.dtype and slots[k].device == v.device
            for k, v in tensors.items())
        if not fits:
            if is_torchdynamo_compiling():
                raise HfAttnError("RecurrentCache(static=True): a compiled step would have to allocate the state "
                                  "(its layout or batch changed); run the prefill uncompiled, as generate does.")
            self._slots = slots = {k: mark_static(torch.empty_like(v, memory_format=torch.contiguous_format))
                                   for k, v in tensors.items()}
        for k, v in tensors.items():
            slots[k].copy_(v)
        self.state = dict(slots)

    def decodes_statically(self, query: torch.Tensor) -> bool:
        """A one-token step on a static layer that has state: the step a compiled decoder runs, which takes the
        PyTorch path (fixed shapes, in-place state; the Triton kernels serve the prefill)."""
        return self.static and query.shape[-2] == 1 and self.has_state()

    def has_state(self) -> bool:
        """Whether a variant has written state (`len`: dynamo in torch 2.11 cannot trace `bool` of a dict)."""
        return len(self.state) > 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Count the new tokens and tag the keys with this layer so the variant finds its state; keys are not stored.
        """
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        setattr(key_states, _TAG, self)
        if self.static:
            self.seen.add_(key_states.shape[-2])  # in place: a Python int would recompile every step
        else:
            self.seen += key_states.shape[-2]
        self.consumed = False
        return key_states, value_states

    def get_mask_sizes(self, query_length, *args) -> tuple[int, int]:
        """`(kv_length, kv_offset)` for the mask builder: the attention sees only the new keys."""
        # the attention function sees only the new keys; earlier ones live in the state
        query_length = query_length.shape[0] if isinstance(query_length, torch.Tensor) else int(query_length)
        return query_length, 0 if self.static else self.seen  # the offset is unused by the padding-mask builder

    def get_seq_length(self, *args) -> int | torch.Tensor:
        """Tokens seen so far (a 0-dim tensor for a static layer, like `StaticCache`)."""
        return self.seen

    def get_max_length(self) -> int:
        """-1: the state has no length limit."""
        return -1

    def get_max_cache_shape(self) -> int:  # transformers < 5.20 name
        """-1: no length limit (the name transformers < 5.20 asks for)."""
        return -1

    def reset(self) -> None:
        """Drop the state and the token count, for a new sequence (a static layer keeps its tensors for reuse)."""
        self.state, self.variant, self.consumed = {}, None, True
        if self.static:
            self.seen.zero_()
        else:
            self.seen = 0

    def offload(self):
        """Move the state to the CPU (offloaded caches)."""
        self.state = {k: v.to("cpu", non_blocking=True) for k, v in self.state.items()}

    def prefetch(self):
        """Move the state back to the layer's device before it is used."""
        if self.is_initialized:
            self.state = {k: v.to(self.device, non_blocking=True) for k, v in self.state.items()}

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch rows of the state for beam search."""
        if self.state:
            self.write_state(**{k: v.index_select(0, beam_idx.to(v.device)) for k, v in self.state.items()})

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each batch row of the state `repeats` times (beam or sample expansion in `generate`)."""
        if self.state:
            self.write_state(**{k: v.repeat_interleave(repeats, dim=0) for k, v in self.state.items()})

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the batch rows `indices` of the state."""
        if self.state:
            self.write_state(**{k: v[indices] for k, v in self.state.items()})

    def crop(self, tokens_to_remove: int) -> None:
        """Refuse: a running state cannot forget tokens (cropping to the same length is a no-op)."""
        if tokens_to_remove:
            raise HfAttnError("RecurrentCache keeps a running state, not per-token keys, so it cannot be cropped; "
                              "use a DynamicCache (the default) for assisted/speculative decoding.")


class RecurrentCache(Cache):
    """Cache for `generate` with holo/performer: constant-size state per layer instead of growing K/V.

    `static=True` keeps the state at fixed addresses, updated in place, and makes the cache `is_compileable`:
    `generate` then compiles the decoding step (`torch.compile`, CUDA graphs) on CUDA by itself.
    """

    def __init__(self, *args, static: bool = False, **kwargs):
        super().__init__(layer_class_to_replicate=functools.partial(RecurrentLayer, static=static))
        self.static = static
        self._last: tuple[int, RecurrentLayer] | None = None  # the layer updated last, checked at the next update

    @property
    def is_compileable(self) -> bool:
        """`static=True`: asked before the prefill creates the layers, so the flag answers, not the layers."""
        return self.static

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """`Cache.update`, refusing to go on if the previously updated layer's attention ignored its state."""
        if self._last is not None and not self._last[1].consumed:
            raise HfAttnError(
                f"Layer {self._last[0]}'s attention did not use the RecurrentCache state: only attention with a "
                "recurrent form (holo, performer) can decode from it; any other (sdpa, eager, flash, gauge) would "
                "attend to the newest tokens only. Use the default DynamicCache (drop the cache argument), or "
                "switch the model with hf_attn.set_attention(model, 'holo') and start a fresh RecurrentCache."
            )
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        self._last = (layer_idx, self.layers[layer_idx])
        return keys, values

    def state_bytes(self) -> int:
        """Bytes held by all layers' states (constant in the number of tokens seen)."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.state.values())


def recurrent_layer(variant: str, key: torch.Tensor, query_len: int, causal_self: bool) -> RecurrentLayer | None:
    """The `RecurrentLayer` whose state `key` continues, or None for an ordinary call; checks the pairing.

    `causal_self`: the call is causal self-attention with no position_bias or 4D mask, the only kind a
    running state can serve.
    """
    layer = getattr(key, _TAG, None)
    if layer is None:
        return None
    if not causal_self:
        raise HfAttnError(f"{variant}: RecurrentCache needs causal self-attention without position_bias or 4D "
                          "masks; use the default DynamicCache for this model.")
    if layer.variant not in (None, variant):
        raise HfAttnError(f"RecurrentCache layer holds '{layer.variant}' state but '{variant}' was called; "
                          "start a fresh RecurrentCache after switching attention.")
    if key.shape[-2] != query_len:
        raise HfAttnError(f"{variant}: RecurrentCache expects keys only for the {query_len} new tokens, "
                          f"got {key.shape[-2]}.")
    layer.variant, layer.consumed = variant, True
    return layer


def tokens_seen(key: torch.Tensor) -> int:
    """How many keys the attention call really covers: with a RecurrentCache, every token its layer has seen."""
    layer = getattr(key, _TAG, None)
    return key.shape[-2] if layer is None else layer.seen
