"""What the hf-attn model classes add to the stock ones: validation of the hf-attn config fields, and a
`from_pretrained` that restores the variant and the wrapper after transformers loaded the base weights.

Loading order matters for wrappers that derive their start from the base weights (tt's TT-SVD): the base
weights load strictly into the stock architecture first, then `hf_attn.load_wrapper` wraps the real
(never meta) modules and overwrites the wrapper's tensors with the saved ones, again strictly.
"""
from __future__ import annotations

from pathlib import Path

from hf_attn.utils import HfAttnError

# from_pretrained keyword arguments that also apply to fetching the wrapper files from the Hub.
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")


def _versions(config) -> str:
    from hf_attn.version import __version__

    return f"saved with hf-attn {config.hf_attn_version or 'unknown'}; this installation is hf-attn {__version__}"


def validate_fields(config) -> None:
    """Raise a clear error if the checkpoint needs a variant or wrapper this installation lacks."""
    from hf_attn.adapters import WrapperConfig, list_wrappers
    from hf_attn.registry import BUILTIN_IMPLEMENTATIONS, list_variants

    variant = config.hf_attn_variant
    if variant is not None and variant not in list_variants() and variant not in BUILTIN_IMPLEMENTATIONS:
        raise HfAttnError(
            f"This checkpoint uses the attention variant '{variant}' ({_versions(config)}), which is not "
            f"registered here (registered: {', '.join(sorted(list_variants()))}). "
            "Upgrade hf-attn (pip install -U hf-attn), or import the package that registers the variant."
        )
    wrapper = config.hf_attn_wrapper
    if wrapper is not None:
        kind = wrapper.get("wrapper_type") if isinstance(wrapper, dict) else None
        if kind not in list_wrappers():
            raise HfAttnError(
                f"This checkpoint uses the hf-attn wrapper '{kind}' ({_versions(config)}), which is not "
                f"registered here (registered: {', '.join(sorted(list_wrappers())) or 'none'}). "
                "Upgrade hf-attn (pip install -U hf-attn)."
            )
        WrapperConfig.from_dict(wrapper)  # unknown or invalid fields fail here, with their own message


def restore(model, name_or_path, attn_implementation: str | None, hub_kwargs: dict):
    """Put the saved variant and wrapper back onto a freshly loaded hf-attn model."""
    from hf_attn.adapters import load_wrapper
    from hf_attn.adapters.base import CONFIG_NAME, WEIGHTS_NAME
    from hf_attn.registry import set_attention

    config = model.config
    if config.hf_attn_variant and attn_implementation is None:
        set_attention(model, config.hf_attn_variant)
    if config.hf_attn_wrapper:
        from hf_attn.download import resolve_folder

        folder = resolve_folder(name_or_path, [CONFIG_NAME, WEIGHTS_NAME], **hub_kwargs)
        if not (Path(folder) / WEIGHTS_NAME).exists():
            raise HfAttnError(
                f"{name_or_path}: config.json declares the wrapper '{config.hf_attn_wrapper.get('wrapper_type')}' "
                f"but {WEIGHTS_NAME} is missing; the checkpoint is incomplete, save it again with "
                "hf_attn.save_pretrained."
            )
        load_wrapper(model, folder)
    return model


class HfAttnModelMixin:
    """Mixed into `HfAttn<Stock>` classes: restore on load, save and push through hf-attn."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load the base weights strictly, then restore the variant and re-wrap and load any wrapper, all or nothing.
        """
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if kwargs.get(k) is not None}
        config = kwargs.get("config")
        # The Auto classes move attn_implementation into the config they pass; a direct call keeps the kwarg.
        requested = kwargs.get("attn_implementation") or getattr(config, "_attn_implementation", None)
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, output_loading_info=True,
                                              **kwargs)
        bad = {k: sorted(v)[:5] for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            raise HfAttnError(
                f"{pretrained_model_name_or_path}: the base weights do not fit {cls.__name__} ({bad}); an hf-attn "
                "checkpoint loads strictly. Was it saved with hf_attn.save_pretrained from this architecture?"
            )
        restore(model, pretrained_model_name_or_path, requested, hub_kwargs)
        return (model, info) if want_info else model

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, generation_mode, *args):
        """`generate`'s cache: a `RecurrentCache` (constant memory, one state update per token) when the model runs
        a recurrent variant, decodes causally, samples or searches greedily and the caller chose no cache, or chose
        `cache_implementation="static"` (transformers' switch for compiled decoding: then `RecurrentCache(static=
        True)`, whose decoding step `generate` compiles on CUDA); transformers' own choice otherwise (beam search
        and assisted decoding need caches that reorder or crop)."""
        from transformers.generation.configuration_utils import GenerationMode

        from hf_attn.cache import RecurrentCache
        from hf_attn.registry import list_variants
        from hf_attn.utils import CACHE_KWARG

        variant = list_variants().get(self.config._attn_implementation)
        chosen = generation_config.cache_implementation
        if (variant is not None and variant.recurrent and not self.config.is_encoder_decoder
                and generation_mode in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)
                and model_kwargs.get(CACHE_KWARG) is None and chosen in (None, "static")
                and generation_config.use_cache is not False):
            model_kwargs[CACHE_KWARG] = RecurrentCache(static=chosen == "static")
            if chosen == "static":  # transformers would refuse a cache beside `cache_implementation`
                return None
        return super()._prepare_cache_for_generation(generation_config, model_kwargs, generation_mode, *args)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Atomic save of the base weights, the wrapper and the hf-attn config (see hf_attn.save_pretrained)."""
        from .checkpoint import save_pretrained

        return save_pretrained(self, save_directory, *args, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload this model with an hf-attn model card (see hf_attn.push_to_hub)."""
        from .push import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)
