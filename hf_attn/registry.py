"""One registry for every attention variant hf-attn ships.

`register_variant` puts a function into transformers' `AttentionInterface` *and* a mask builder into
`AttentionMaskInterface`: without the second, transformers hands an unknown implementation
`attention_mask=None` and padding is silently ignored.
"""
from __future__ import annotations

import difflib
import inspect
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from .attention import BUILTIN_SPECS
from .utils import CACHE_KWARG, HfAttnError, set_attn_implementation

# transformers' own implementations, accepted by `set_attention` next to ours.
BUILTIN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")


@dataclass(frozen=True)
class Variant:
    """What `list_variants()` reports for one registered attention implementation.

    The one description of a variant: `hf-attn variants` prints `describe()`, the README's variants table is
    `variants_table()`, and `print(hf_attn.list_variants())` shows the readable `repr`.
    """

    name: str
    function: Callable
    summary: str
    complexity: str
    needs: tuple[str, ...] = ()
    config_keys: dict[str, str] = field(default_factory=dict)
    docs: str = ""  # a page under docs/ with the details, linked from the README table
    recurrent: bool = False  # causal decoding from a constant-size state: a `RecurrentCache` serves it

    def describe(self) -> str:
        """Several lines for `hf-attn variants`: summary, complexity, what it needs, its config knobs, its docs page.
        """
        needs = ", ".join(self.needs) if self.needs else "nothing beyond hf-attn"
        keys = "; ".join(f"config.{k}: {v}" for k, v in self.config_keys.items()) or "none"
        docs = f"\n  docs: {self.docs}" if self.docs else ""
        return f"{self.name}: {self.summary}\n  complexity: {self.complexity}\n  needs: {needs}\n  knobs: {keys}{docs}"

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        """Readable in `print(list_variants())`: no function address, the knobs by name."""
        return (f"Variant(name={self.name!r}, what={self.summary!r}, complexity={self.complexity!r}, "
                f"knobs={list(self.config_keys)!r})")

    def markdown_row(self) -> str:
        """This variant as a row of the README's variants table (`| name | what | complexity | knobs |`)."""
        what = self.summary + (f" ([{self.docs}]({self.docs}))" if self.docs else "")
        knobs = ", ".join(f"`{k}`" for k in self.config_keys) or "none"
        return f"| `{self.name}` | {what} | {self.complexity} | {knobs} |"


def variants_table(names: list[str] | None = None) -> str:
    """The markdown table of the registered variants (all, or `names` in that order), as in the README."""
    rows = [get_variant(n).markdown_row() for n in (names if names is not None else _VARIANTS)]
    return "\n".join(["| name | what | complexity | knobs (model config) |", "|---|---|---|---|", *rows])


_VARIANTS: dict[str, Variant] = {}


def padding_mask_only(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """Mask builder for linear-time variants: the 2D key-padding mask `(batch, kv_length)` or None.

    Causality comes from `module.is_causal`; never building the `(T, T)` mask keeps memory linear in T. A causal
    call whose keys run past its last query comes from a pre-allocated cache (transformers' StaticCache): its
    empty slots would be read as keys, so it is refused with the fix.
    """
    causal = "allow_is_bidirectional_skip" not in kwargs  # what transformers passes only to bidirectional masks
    sizes = (q_length, kv_length, q_offset, kv_offset)  # ints, but tensors in a compiled step (checked at prefill)
    if causal and all(isinstance(x, int) for x in sizes) and kv_offset + kv_length > q_offset + q_length:
        name = getattr(kwargs.get("config"), "_attn_implementation", None) or "this attention"
        raise HfAttnError(
            f"{name}: the cache holds {kv_offset + kv_length} key slots for {q_offset + q_length} tokens, a "
            "pre-allocated cache such as transformers' StaticCache (generate(..., cache_implementation='static')); "
            f"{name} reads keys as a sequence without empty slots. Decode with "
            f"{CACHE_KWARG}=hf_attn.RecurrentCache(static=True) (compiled) or hf_attn.RecurrentCache(), or with "
            "the default dynamic cache; a checkpoint saved by hf-attn picks RecurrentCache by itself."
        )
    if attention_mask is None:
        return None
    mask = attention_mask[:, -kv_length:].bool()
    if mask.shape[1] == kv_length and bool(mask.all()):
        return None
    return mask


def register_variant(
    name: str,
    function: Callable,
    *,
    summary: str,
    complexity: str,
    mask: Callable = padding_mask_only,
    needs: tuple[str, ...] = (),
    config_keys: dict[str, str] | None = None,
    docs: str = "",
    recurrent: bool = False,
) -> Variant:
    """Register `function` under `name` with transformers (attention and mask interfaces) and hf-attn.

    `recurrent=True` says the function decodes from a `RecurrentCache` state; `generate` on an hf-attn
    checkpoint of this variant then uses one by default."""
    if name in BUILTIN_IMPLEMENTATIONS:
        raise HfAttnError(f"'{name}' is a transformers built-in; pick another name for your variant.")
    variant = Variant(name, function, summary, complexity, tuple(needs), dict(config_keys or {}), docs, recurrent)
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, mask)
    _VARIANTS[name] = variant
    return variant


def list_variants() -> dict[str, Variant]:
    """The variants hf-attn registered, by name (what each needs and which config knobs it reads)."""
    return dict(_VARIANTS)


def get_variant(name: str) -> Variant:
    """The registered variant `name`, or an error that lists the registered names and the closest match."""
    if name in _VARIANTS:
        return _VARIANTS[name]
    raise HfAttnError(unknown_variant_message(name))


def unknown_variant_message(name: str) -> str:
    """The error text for an unknown variant name: the closest match and every name that is known."""
    known = sorted(_VARIANTS) + list(BUILTIN_IMPLEMENTATIONS)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"Unknown attention variant '{name}'.{hint} hf-attn registers: {', '.join(sorted(_VARIANTS))}; "
        f"transformers built-ins: {', '.join(BUILTIN_IMPLEMENTATIONS)}. "
        "Run `hf-attn variants` to see what each needs."
    )


def check_model_supported(model: torch.nn.Module) -> None:
    """Raise unless `model`'s attention dispatches through transformers' `AttentionInterface`.

    Models with hand-written attention never call a registered function, so a switch would do nothing.
    """
    for cls in type(model).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is None or not cls.__module__.startswith("transformers.models."):
            continue
        if "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(module):
            return
    raise HfAttnError(
        f"{type(model).__name__} does not route its attention through transformers' AttentionInterface, so "
        "hf-attn variants cannot reach it. Supported: Llama, Qwen2, Qwen3, Mistral, T5 and other models "
        "whose modeling file calls ALL_ATTENTION_FUNCTIONS; for others, use an adapter (hf_attn.wrap)."
    )


def set_attention(model, name: str):
    """Switch a loaded model to attention `name` after checking the name and the model; returns the model.

    A wrapped model may switch unless its wrapper needs one attention (gauge runs only with 'gauge'): that
    switch is refused rather than leaving wrapper modules that silently lose their effect.
    """
    if name not in BUILTIN_IMPLEMENTATIONS:
        get_variant(name)
    check_model_supported(model)
    wrapper = getattr(model, "hf_attn_wrapper", None)  # left by hf_attn.wrap (adapters.base.WrapperState)
    pinned = getattr(wrapper, "pinned", None)
    if pinned not in (None, name):
        raise HfAttnError(
            f"This model's '{model.hf_attn_wrapper.config.wrapper_type}' wrapper needs attention '{pinned}', so "
            f"switching to '{name}' would drop the wrapper's effect. Call hf_attn.unwrap(model) first, then "
            f"hf_attn.set_attention(model, '{name}')."
        )
    if name == "flash_attention_2":
        from .utils import require

        require("flash_attn", extra="flash", purpose="attn_implementation='flash_attention_2'")
    set_attn_implementation(model, name)
    return model


for _spec in BUILTIN_SPECS:  # holo, performer, gauge: each package describes itself in its SPEC
    register_variant(**_spec)
