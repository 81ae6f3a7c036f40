"""Custom config and model classes, one `model_type` per base family, registered with the Auto classes.

A checkpoint that uses an hf-attn variant or wrapper is saved with `model_type="hf_attn_<family>"`
(`hf_attn_llama`, `hf_attn_t5`, ...) and the variant name, the wrapper config and the hf-attn version in
its `config.json`. After `import hf_attn` a plain `AutoModelForCausalLM.from_pretrained(path)`
rebuilds the variant and the wrapper; without hf-attn, transformers refuses the unknown model type instead
of silently loading a stock model with plain attention and the wrapper weights dropped.

Why one model type per family rather than one `hf_attn` type holding a nested base config: the model class
has to *be* the base architecture (`HfAttnLlamaForCausalLM` subclasses `LlamaForCausalLM`), so weight
names, tied embeddings, generation, `device_map` and PEFT target names stay exactly the stock ones. A
single container type would re-prefix every weight and proxy generation and cache handling.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

from hf_attn.utils import HfAttnError

from .loading import HfAttnModelMixin, validate_fields

PREFIX = "hf_attn_"
# Families registered by `import hf_attn`: the ones hf-attn tests (tests/harness.py). Others: register_family.
DEFAULT_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "t5")
# The heads a checkpoint may have, with the Auto class that loads each.
HEADS = (
    (AutoModel, MODEL_MAPPING_NAMES),
    (AutoModelForCausalLM, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
    (AutoModelForSeq2SeqLM, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES),
)
FIELDS = {
    "hf_attn_variant": "registered attention variant the checkpoint runs (None: a transformers built-in)",
    "hf_attn_wrapper": "WrapperConfig.to_dict() of the wrapper, whose weights are in hf_attn_wrapper.safetensors",
    "hf_attn_version": "hf-attn version that saved the checkpoint",
}


@dataclass
class Family:
    """The hf-attn classes of one base family: `config_cls` and the model class for each stock head."""

    base_type: str
    config_cls: type[PreTrainedConfig]
    models: dict[str, type] = field(default_factory=dict)  # stock class name -> hf-attn subclass

    @property
    def model_type(self) -> str:
        """The hf-attn model type of this family, `hf_attn_<base type>`."""
        return PREFIX + self.base_type

    def model_class_for(self, model) -> type:
        """The hf-attn class of `model`'s head (a stock or an hf-attn instance), or a clear error."""
        for cls in type(model).__mro__:
            if cls.__name__ in self.models:
                return self.models[cls.__name__]
            if cls in self.models.values():
                return cls
        raise HfAttnError(
            f"hf-attn checkpoints cover the heads {', '.join(sorted(self.models))} of '{self.base_type}', not "
            f"{type(model).__name__}. Save the wrapper alone with hf_attn.save_wrapper(model, dir) instead."
        )


_FAMILIES: dict[str, Family] = {}


def _config_class(base: type[PreTrainedConfig]) -> type[PreTrainedConfig]:
    def __post_init__(self, **kwargs):
        base.__post_init__(self, **kwargs)
        validate_fields(self)

    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": "HfAttn" + base.__name__,
        "__doc__": f"{base.__name__} plus the hf-attn fields: " + "; ".join(f"{k}: {v}" for k, v in FIELDS.items()),
        "__annotations__": {"hf_attn_variant": "str | None", "hf_attn_wrapper": "dict | None",
                            "hf_attn_version": "str | None"},
        "model_type": PREFIX + base.model_type,
        "base_model_type": base.model_type,
        "hf_attn_variant": None,
        "hf_attn_wrapper": None,
        "hf_attn_version": None,
        "__post_init__": __post_init__,
    }
    return type("HfAttn" + base.__name__, (base,), namespace)


def _model_class(stock: type, config_cls: type) -> type:
    namespace = {"__module__": __name__, "__qualname__": "HfAttn" + stock.__name__, "config_class": config_cls,
                 "__doc__": f"{stock.__name__} whose checkpoint carries an hf-attn variant and/or wrapper."}
    return type("HfAttn" + stock.__name__, (HfAttnModelMixin, stock), namespace)


def register_family(base_type: str) -> Family:
    """Create and register the hf-attn classes for the transformers family `base_type` (e.g. "gemma2").

    `import hf_attn` does this for DEFAULT_FAMILIES; for another family call it before saving *and* before
    loading (in the loading process too), since a fresh process only knows the defaults.
    """
    if base_type in _FAMILIES:
        return _FAMILIES[base_type]
    if base_type not in CONFIG_MAPPING:
        raise HfAttnError(f"'{base_type}' is not a transformers model type; see transformers' CONFIG_MAPPING.")
    import transformers

    config_cls = _config_class(CONFIG_MAPPING[base_type])
    family = Family(base_type, config_cls)
    AutoConfig.register(family.model_type, config_cls, exist_ok=True)
    for auto, names in HEADS:
        stock_name = names.get(base_type)
        if isinstance(stock_name, str) and hasattr(transformers, stock_name):
            model_cls = _model_class(getattr(transformers, stock_name), config_cls)
            auto.register(config_cls, model_cls, exist_ok=True)
            family.models[stock_name] = model_cls
    globals()[config_cls.__name__] = config_cls  # importable by name (pickling, repr)
    globals().update({cls.__name__: cls for cls in family.models.values()})
    _FAMILIES[base_type] = family
    return family


def family_of(config: PreTrainedConfig) -> Family:
    """The hf-attn family of a stock or hf-attn config; registers it on the fly for a stock config."""
    base_type = getattr(config, "base_model_type", None) or config.model_type
    if base_type.startswith(PREFIX):
        base_type = base_type[len(PREFIX):]
    return register_family(base_type)


def list_families() -> dict[str, Family]:
    """Every registered family, by base model type."""
    return dict(_FAMILIES)


for _name in DEFAULT_FAMILIES:
    register_family(_name)
