"""hf-attn: alternative attention for pretrained HuggingFace Transformers models as a one-line switch.

`import hf_attn` registers every variant with transformers, so
`AutoModelForCausalLM.from_pretrained(path, attn_implementation="holo")` just works.
"""
from .registry import check_model_supported, get_variant, list_variants, register_variant, set_attention  # registers the variants
from . import assets  # noqa: F401  (hf_attn.assets.smollm2_path(): the offline SmolLM2-135M, as in the README)
from .cache import RecurrentCache
from .attention.window import set_window
from .adapters import GaugeConfig, PrismaticConfig, list_wrappers, load_wrapper, save_wrapper, unwrap, wrap
from .adapters import LinearizeConfig, set_window_mix
from .adapters import tt  # noqa: F401  (hf_attn.tt.to_tensor_train and friends)
from .adapters.tt import TTConfig
from .adapters.modulators import FieldModulatorConfig, ResidualModulatorConfig, modulator_health
from .diagnostics import attention_entropy, entanglement_entropy, head_entropies
from .modeling import push_to_hub, register_family, save_pretrained
from .utils import HfAttnError, MissingDependencyError
from .version import __version__

__all__ = [
    "RecurrentCache",
    "set_window",
    "GaugeConfig",
    "LinearizeConfig",
    "set_window_mix",
    "PrismaticConfig",
    "TTConfig",
    "FieldModulatorConfig",
    "ResidualModulatorConfig",
    "modulator_health",
    "list_wrappers",
    "load_wrapper",
    "save_wrapper",
    "unwrap",
    "wrap",
    "HfAttnError",
    "MissingDependencyError",
    "attention_entropy",
    "check_model_supported",
    "entanglement_entropy",
    "get_variant",
    "head_entropies",
    "list_variants",
    "push_to_hub",
    "register_family",
    "save_pretrained",
    "register_variant",
    "set_attention",
]
