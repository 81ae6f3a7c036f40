"""Injection of the modulators into a pretrained T5 / Llama / Qwen2 / Qwen3 / Mistral without copying any
forward code: forward pre-hooks on the transformer blocks rewrite their `hidden_states` input; the model's
own `forward`, `generate`, cache and masks are untouched. The modulator module is attached to the model as
`hf_attn_modulator` so optimisers and `save_wrapper` see its weights; `unwrap` removes hooks and module."""
from __future__ import annotations

from typing import Callable

import torch

from hf_attn.utils import HfAttnError

from ..base import WrapperSpec, find_targets, register_wrapper
from .config import FieldModulatorConfig, ResidualModulatorConfig
from .field import GeometricFieldModulator
from .health import MODULE_NAME
from .residual import GeometricResidualModulator


def find_stacks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, list[str]]]:
    """`(stack name, stack module, block names)` for every token-embedding stack of blocks.

    A stack is a module with `embed_tokens` and a `layers` (Llama, Qwen, Mistral) or `block` (T5)
    ModuleList: `model` for a decoder-only LM, `encoder` and `decoder` for T5.
    """
    stacks = []
    for name, module in model.named_modules():
        for attr in ("layers", "block"):
            blocks = getattr(module, attr, None)
            if isinstance(blocks, torch.nn.ModuleList) and hasattr(module, "embed_tokens") and len(blocks):
                prefix = f"{name}.{attr}" if name else attr
                stacks.append((name, module, [f"{prefix}.{i}" for i in range(len(blocks))]))
    if not stacks:
        raise HfAttnError(
            f"{type(model).__name__} has no stack of transformer blocks with token embeddings (a module with "
            "`embed_tokens` and `layers`/`block`): the modulators support T5, Llama, Qwen2, Qwen3 and Mistral."
        )
    return stacks


def _chosen_blocks(model, config, stacks) -> list[tuple[str, str]]:
    """`(stack name, block name)` of the blocks to modulate, in model order."""
    every = [(s, b) for s, _, blocks in stacks for b in blocks]
    if config.target_modules is None:
        return every
    picked = set(find_targets(model, config.target_modules))
    chosen = [(s, b) for s, b in every if b in picked]
    if not chosen:
        raise HfAttnError(
            f"target_modules={config.target_modules!r} names no transformer block; blocks are e.g. "
            f"{', '.join(b for _, b in every[:3])}."
        )
    return chosen


def _hidden_of(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args, kwargs, hidden):
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _attach(model, modulator, hooks) -> list[Callable[[], None]]:
    if hasattr(model, MODULE_NAME):
        raise HfAttnError(f"The model already has a `{MODULE_NAME}` submodule; unwrap it first.")
    model.add_module(MODULE_NAME, modulator)

    def detach() -> None:
        for h in hooks:
            h.remove()
        delattr(model, MODULE_NAME)

    return [detach]


def _embedding(model) -> torch.nn.Embedding:
    emb = model.get_input_embeddings()
    if not isinstance(emb, torch.nn.Embedding):
        raise HfAttnError(f"The modulators need an nn.Embedding input embedding, found {type(emb).__name__}.")
    return emb


def apply_residual(model: torch.nn.Module, config: ResidualModulatorConfig) -> list[Callable[[], None]]:
    """Hook a residual modulator into the chosen blocks (token ids taken from each stack's input_ids); returns undo
    callbacks."""
    stacks = find_stacks(model)
    chosen = _chosen_blocks(model, config, stacks)
    emb = _embedding(model)
    modulator = GeometricResidualModulator(config, emb.num_embeddings, emb.embedding_dim, [b for _, b in chosen])
    modulator.to(emb.weight.device)
    token_ids: dict[str, torch.Tensor | None] = {}
    hooks = []
    for stack_name, stack, _ in stacks:
        def remember(module, args, kwargs, stack_name=stack_name):
            token_ids[stack_name] = kwargs.get("input_ids", args[0] if args else None)

        hooks.append(stack.register_forward_pre_hook(remember, with_kwargs=True))
    for idx, (stack_name, block) in enumerate(chosen):
        def modulate(module, args, kwargs, idx=idx, stack_name=stack_name):
            ids = token_ids.get(stack_name)
            if ids is None:
                raise HfAttnError(
                    "The residual modulator looks up each position's token: call the model with input_ids, "
                    "not inputs_embeds."
                )
            return _with_hidden(args, kwargs, modulator(_hidden_of(args, kwargs), ids, idx))

        hooks.append(model.get_submodule(block).register_forward_pre_hook(modulate, with_kwargs=True))
    return _attach(model, modulator, hooks)


def apply_field(model: torch.nn.Module, config: FieldModulatorConfig) -> list[Callable[[], None]]:
    """Hook a field modulator into the chosen blocks; returns undo callbacks."""
    chosen = _chosen_blocks(model, config, find_stacks(model))
    emb = _embedding(model)
    modulator = GeometricFieldModulator(config, emb.embedding_dim, [b for _, b in chosen]).to(emb.weight.device)
    hooks = []
    for idx, (_, block) in enumerate(chosen):
        def modulate(module, args, kwargs, idx=idx):
            return _with_hidden(args, kwargs, modulator(_hidden_of(args, kwargs), idx))

        hooks.append(model.get_submodule(block).register_forward_pre_hook(modulate, with_kwargs=True))
    return _attach(model, modulator, hooks)


register_wrapper(WrapperSpec("residual_modulator", ResidualModulatorConfig, apply_residual))
register_wrapper(WrapperSpec("field_modulator", FieldModulatorConfig, apply_field))
