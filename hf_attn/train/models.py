"""Build the model a recipe names: a small Llama from scratch, or a pretrained folder for a recovery fine-tune.

Attention is switched with `hf_attn.set_attention` (any registered variant or transformers built-in); a
wrapper is built generically from `model.wrapper` (`{type: tt, rank: 16}` ->
`WrapperConfig.from_dict({"wrapper_type": "tt", "rank": 16})`), so new ones need no code here. A wrapper
whose parts want their own learning rates says so in its config's `param_groups(model, lr)` (the optimizer
builder `param_groups` below calls it), not in the loop.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import adapters
from ..registry import set_attention
from ..utils import HfAttnError, set_config
from .config import ModelConfig, TrainConfig


def resolve_model_path(path: str) -> Path:
    """`smollm2` -> the cached offline SmolLM2 folder; otherwise a folder with config.json."""
    if path == "smollm2":
        from ..assets import smollm2_path

        return smollm2_path()
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise HfAttnError(
            f"model.model_path {path!r} is not a from_pretrained folder (no config.json). Pass a folder written "
            "by save_pretrained, or 'smollm2' for the offline SmolLM2-135M."
        )
    return folder


def load_tokenizer(cfg: TrainConfig):
    """The tokenizer of the recipe's pretrained model."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.model_path))


def wrapper_config(spec: dict) -> adapters.WrapperConfig:
    """`{type: NAME, **fields}` -> the registered wrapper's config, or an error listing what is registered."""
    spec = dict(spec)
    kind = spec.pop("type")
    known = adapters.list_wrappers()
    if kind not in known:
        raise HfAttnError(
            f"model.wrapper.type {kind!r} is not a registered wrapper; registered: {sorted(known) or 'none'}. "
            "Run `hf-attn variants` to list them."
        )
    return adapters.WrapperConfig.from_dict({"wrapper_type": kind, **spec})


def check_names(mc: ModelConfig) -> None:
    """Fail early (before any run starts) on an attention or wrapper name that is not registered."""
    from ..registry import BUILTIN_IMPLEMENTATIONS, get_variant

    if mc.attention not in BUILTIN_IMPLEMENTATIONS:
        get_variant(mc.attention)
    if mc.wrapper is not None:
        wrapper_config(mc.wrapper)


def scratch_model(mc: ModelConfig, vocab_size: int, seq_len: int):
    """A freshly initialised small Llama sized by the recipe, for training from scratch."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=mc.hidden_size,
        intermediate_size=mc.intermediate_size or 4 * mc.hidden_size,
        num_hidden_layers=mc.num_layers,
        num_attention_heads=mc.num_heads,
        num_key_value_heads=mc.num_kv_heads or mc.num_heads,
        max_position_embeddings=seq_len,
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def build_model(cfg: TrainConfig, vocab_size: int):
    """The model with its attention set, attention knobs applied, wrapper injected and freezing done."""
    from transformers import AutoModelForCausalLM

    mc = cfg.model
    if mc.model_path:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(mc.model_path), dtype=torch.float32)
    else:
        model = scratch_model(mc, vocab_size, cfg.data.seq_len)
    set_config(model, **mc.attention_config)
    set_attention(model, mc.attention)
    own: set[str] = set()
    if mc.wrapper is not None:
        adapters.wrap(model, wrapper_config(mc.wrapper))
        own = set(adapters.wrapper_state_dict(model))
    if mc.freeze_base:
        for name, p in model.named_parameters():
            p.requires_grad_(name in own or any(t in name for t in mc.trainable))
    if not any(p.requires_grad for p in model.parameters()):
        raise HfAttnError(
            "Nothing to train: every parameter is frozen. Set model.trainable (e.g. [self_attn]) with "
            "freeze_base, add a wrapper, or set freeze_base: false."
        )
    return model


def param_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """Optimizer groups: the wrapper's own (its config's optional `param_groups(model, lr)`, e.g. the field
    modulator's per-part learning rates), then every other trainable parameter at `lr`."""
    state = getattr(model, "hf_attn_wrapper", None)
    hook = getattr(state.config, "param_groups", None) if state is not None else None
    groups = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in (hook(model, lr) if hook else [])]
    groups = [g for g in groups if g["params"]]
    claimed = {id(p) for g in groups for p in g["params"]}
    if len(claimed) != sum(len(g["params"]) for g in groups):
        raise HfAttnError(f"{type(state.config).__name__}.param_groups lists a parameter twice: put each parameter "
                          "in one group.")
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in claimed]
    return groups + ([{"params": rest, "lr": lr}] if rest else [])


def parameter_counts(model) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": trainable}
