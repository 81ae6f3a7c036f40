"""Save any model that uses an hf-attn variant and/or wrapper as a checkpoint that reloads with a plain
`from_pretrained(path)` after `import hf_attn`.

Layout (one folder, written atomically):
- `config.json`: the stock config with `model_type="hf_attn_<family>"`, `architectures=["HfAttn<Stock>"]`,
  `hf_attn_variant`, `hf_attn_wrapper` (the wrapper config dict) and `hf_attn_version`;
- `model.safetensors` (or shards): the *base* weights under their stock names, so transformers loads them
  strictly into the stock architecture;
- `hf_attn_wrapper.json` + `hf_attn_wrapper.safetensors`: exactly what `hf_attn.save_wrapper` writes, so
  the folder is also a wrapper-only folder for `hf_attn.load_wrapper(base_model, path)`.

A model loaded from a GGUF file (`from_pretrained(dir, gguf_file=...)`, as `hf_attn.assets` loads SmolLM2)
is saved with its dequantised weights as plain safetensors and without the GGUF `quantization_config`, so it
reloads without the GGUF file; one whose weights stay in GGUF blocks is refused with the fix.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch

from hf_attn.utils import CHECKPOINT_ONLY, HfAttnError, atomic_dir, write_text_atomic

from .families import family_of


def checkpoint_fields(model: torch.nn.Module) -> dict:
    """The hf-attn fields of `model`'s checkpoint config: variant in use, wrapper config, version."""
    from hf_attn.version import __version__
    from hf_attn.registry import list_variants

    from hf_attn.adapters.base import pinned_attention

    state = getattr(model, "hf_attn_wrapper", None)
    attn = getattr(model.config, "_attn_implementation", None)
    pinned = pinned_attention(model)
    if pinned is not None:  # the wrapper re-applies its own attention on load: store the base model's
        if attn != pinned:
            raise HfAttnError(
                f"The '{state.config.wrapper_type}' wrapper needs attention '{pinned}' but the model runs '{attn}': "
                f"saved, it would reload with '{pinned}'. Switch back with hf_attn.set_attention(model, '{pinned}'), "
                "or call hf_attn.unwrap(model) first to save the base model with another attention."
            )
        attn = state.attn_implementation
    return {
        "hf_attn_variant": attn if attn in list_variants() else None,
        "hf_attn_wrapper": state.config.to_dict() if state is not None else None,
        "hf_attn_version": __version__,
    }


def base_state_dict(model: torch.nn.Module, state_dict: dict | None = None) -> dict[str, torch.Tensor]:
    """`model`'s state dict as the unwrapped base model names it: wrapper tensors out, `.base_layer` removed."""
    from hf_attn.adapters import wrapper_state_dict

    state_dict = model.state_dict() if state_dict is None else state_dict
    if getattr(model, "hf_attn_wrapper", None) is None:
        return state_dict
    own = set(wrapper_state_dict(model))
    out = {}
    for key, tensor in state_dict.items():
        if key in own:
            continue
        base_key = key.replace(".base_layer.", ".")
        if base_key in out:
            raise HfAttnError(f"Wrapped model has both {key} and {base_key}: nested wrappers cannot be saved.")
        out[base_key] = tensor
    return out


def _checkpoint_names(variant: str | None) -> tuple[str, ...]:
    """Names a previous checkpoint in the folder may have used (transformers puts `variant` into them)."""
    if not variant:
        return CHECKPOINT_ONLY
    return CHECKPOINT_ONLY + (f"model.{variant}.safetensors", f"model.{variant}-?????-of-?????.safetensors",
                              f"model.safetensors.index.{variant}.json")


@contextlib.contextmanager
def _without_gguf_quantizer(model: torch.nn.Module) -> Iterator[None]:
    """Let transformers save a GGUF-loaded model whose weights were dequantised: they are plain float tensors.

    transformers refuses to serialize any GGUF-loaded model (its quantizer is not serializable), even when
    every weight was unpacked at load time. For the duration of the save, the quantizer and the GGUF
    `quantization_config` are detached, so the folder holds plain safetensors that load without the GGUF file.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is None or getattr(method, "value", method) != "gguf":
        yield
        return
    packed = [n for n, t in model.state_dict().items() if not t.is_floating_point()]
    if packed:  # weights kept in GGUF blocks (a matmul kernel was available): integer-packed tensors
        raise HfAttnError(
            f"This model was loaded from a GGUF file with weights left in GGUF blocks ({packed[0]}, ...), which "
            "cannot be saved as safetensors. Load it dequantised and save that: from_pretrained(folder, "
            "gguf_file=NAME, quantization_config=transformers.GgufConfig(dequantize=True))."
        )
    config = model.config
    had_config = "quantization_config" in vars(config)
    saved_config = vars(config).get("quantization_config")
    model.hf_quantizer = None
    if had_config:
        del config.quantization_config
    try:
        yield
    finally:
        model.hf_quantizer = quantizer
        if had_config:
            config.quantization_config = saved_config


def save_pretrained(model: torch.nn.Module, save_directory: str | Path, *args, **kwargs) -> Path:
    """Write the checkpoint described in this module's docstring; an interrupted save keeps the old folder.

    Saving into a folder that holds other files writes beside them, as transformers' `save_pretrained` does:
    only the previous checkpoint's own files (`model*.safetensors` shards and index, the wrapper files) are
    replaced; a tokenizer, metrics or another `.safetensors` file (an EMA copy, a PEFT adapter) stay.
    Extra keyword arguments go to transformers' `save_pretrained` (e.g. `max_shard_size`).
    """
    from hf_attn.adapters import save_wrapper

    family = family_of(model.config)
    model_cls = family.model_class_for(model)
    stock_cls = next(c for c in model_cls.__mro__[1:] if c.__name__ == model_cls.__name__[len("HfAttn"):])
    if kwargs.pop("push_to_hub", False):
        raise HfAttnError("Use hf_attn.push_to_hub(model, repo_id) (or model.push_to_hub) to upload.")
    fields = checkpoint_fields(model)
    state_dict = base_state_dict(model, kwargs.pop("state_dict", None))
    with atomic_dir(save_directory, drop=_checkpoint_names(kwargs.get("variant"))) as tmp, _without_gguf_quantizer(model):
        stock_cls.save_pretrained(model, tmp, *args, state_dict=state_dict, **kwargs)
        if fields["hf_attn_wrapper"] is not None:
            save_wrapper(model, tmp)
        config_file = tmp / "config.json"
        data = json.loads(config_file.read_text())
        data.update(model_type=family.model_type, architectures=[model_cls.__name__], **fields)
        write_text_atomic(config_file, json.dumps(data, indent=2, sort_keys=True) + "\n")
    if getattr(model.config, "model_type", None) == family.model_type:  # keep an hf-attn model's config in step
        for key, value in fields.items():
            setattr(model.config, key, value)
    return Path(save_directory)
