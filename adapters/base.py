"""The one PEFT-shaped API every hf-attn wrapper shares (the same `wrap`/`unwrap`/`save_wrapper`/`load_wrapper` calls for each).

A wrapper is three things, registered with `register_wrapper`:
- a `WrapperConfig` dataclass (documented defaults, validation in `__post_init__`, `to_dict`/`from_dict`),
- `apply(model, config)`: inject its modules in place (replace targets with `WrapperLayer`s whose
  original module stays at `.base_layer`, or add hooks), returning a list of undo callables,
- optionally `merge(model)`: fold the wrapper into plain modules (tt: dense weights).

`wrap` / `save_wrapper` / `load_wrapper` / `unwrap` below do the rest the same way for every wrapper.
"""
from __future__ import annotations

import dataclasses
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hf_attn.utils import HfAttnError, atomic_path, set_attn_implementation, write_text_atomic

CONFIG_NAME = "hf_attn_wrapper.json"
WEIGHTS_NAME = "hf_attn_wrapper.safetensors"


@dataclass
class WrapperConfig:
    """Fields shared by every wrapper config.

    `target_modules`: which submodules to wrap, PEFT-style: a list of name suffixes (`["q_proj", "v_proj"]`
    matches `model.layers.3.self_attn.q_proj`) or one regular expression matched against the full name.
    `None` means the wrapper's own default targets.
    """

    wrapper_type: ClassVar[str] = ""
    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module name suffixes or a full-name regex; None = the wrapper's defaults."}
    )
    freeze_base: bool = field(default=True, metadata={"help": "Freeze every base parameter (train only the wrapper)."}
    )

    def to_dict(self) -> dict[str, Any]:
        """Every field plus `wrapper_type`, as saved in hf_attn_wrapper.json."""
        return {"wrapper_type": self.wrapper_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WrapperConfig":
        """The config a saved dict describes (the subclass named by `wrapper_type`); unknown fields are refused."""
        data = dict(data)
        kind = data.pop("wrapper_type", cls.wrapper_type)
        target = _WRAPPERS[kind].config_cls if cls is WrapperConfig else cls
        if kind != target.wrapper_type:
            raise HfAttnError(f"Config is for wrapper '{kind}', not '{target.wrapper_type}'.")
        names = {f.name for f in dataclasses.fields(target)}
        unknown = set(data) - names
        if unknown:
            raise HfAttnError(f"Unknown {target.__name__} fields {sorted(unknown)}; valid fields: {sorted(names)}.")
        return target(**data)


class WrapperLayer(torch.nn.Module):
    """Base for modules that stand in for a base module kept at `self.base_layer` (PEFT's convention).

    Its own parameters (everything not under `base_layer`) are what `save_wrapper` writes.
    """

    base_layer: torch.nn.Module


@dataclass
class WrapperSpec:
    """A registered wrapper. `attn_implementation`: the attention its modules need (gauge: 'gauge'), or a
    function of the config that names it (linearize: the config's variant); `apply` switches the model to it,
    `set_attention` refuses another until `unwrap`, and a save stores the base model's attention instead (the
    wrapper switches again on load)."""

    name: str
    config_cls: type[WrapperConfig]
    apply: Callable[[torch.nn.Module, WrapperConfig], list[Callable[[], None]]]
    merge: Callable[[torch.nn.Module], None] | None = None
    attn_implementation: str | Callable[[WrapperConfig], str] | None = None

    def needs_attention(self, config: WrapperConfig) -> str | None:
        """The attention this wrapper needs with `config` (None: any will do)."""
        attn = self.attn_implementation
        return attn(config) if callable(attn) else attn


_WRAPPERS: dict[str, WrapperSpec] = {}


def register_wrapper(spec: WrapperSpec) -> WrapperSpec:
    """Make a wrapper known to `hf_attn.wrap` and loading under `spec.name`; returns the spec."""
    spec.config_cls.wrapper_type = spec.name
    _WRAPPERS[spec.name] = spec
    return spec


def list_wrappers() -> dict[str, WrapperSpec]:
    """Every registered wrapper, by name."""
    return dict(_WRAPPERS)


@dataclass
class WrapperState:
    """What `wrap` leaves on the model (`model.hf_attn_wrapper`) so the other calls can find it."""

    config: WrapperConfig
    undo: list[Callable[[], None]]
    requires_grad: dict[str, bool]
    attn_implementation: str | None = None  # the base model's before wrapping
    pinned: str | None = None  # the attention the wrapper switched to and needs; unwrap restores the base's


def pinned_attention(model: torch.nn.Module) -> str | None:
    """The attention implementation `model`'s wrapper needs (None when unwrapped or when any will do)."""
    state = getattr(model, "hf_attn_wrapper", None)
    return state.pinned if state is not None else None


def find_targets(model: torch.nn.Module, targets: list[str] | str, kinds: tuple[type, ...] = ()) -> list[str]:
    """Names of submodules matching `targets` (suffix list or full-name regex), optionally of given types."""
    if isinstance(targets, str):
        pattern = re.compile(targets)
        hit = lambda name: pattern.fullmatch(name) is not None  # noqa: E731
    else:
        hit = lambda name: any(name == t or name.endswith("." + t) for t in targets)  # noqa: E731
    names = [n for n, m in model.named_modules() if n and hit(n) and (not kinds or isinstance(m, kinds))]
    if not names:
        raise HfAttnError(
            f"target_modules={targets!r} matched no module of {type(model).__name__}"
            + (f" of type {', '.join(k.__name__ for k in kinds)}" if kinds else "")
            + ". Pass names that exist, e.g. the suffixes printed by "
            "`[n for n, _ in model.named_modules()]`."
        )
    return names


def is_attention(module: torch.nn.Module) -> bool:
    """A transformers attention module (q/k/v projections feeding an attention function)."""
    return (type(module).__name__.endswith("Attention") and hasattr(module, "config")
            and (hasattr(module, "head_dim") or hasattr(module, "key_value_proj_dim")))


def attention_modules(model: torch.nn.Module, targets, wrapper: str, skip: tuple[type, ...] = ()) -> list[str]:
    """Names of the attention modules `wrapper` serves: `targets` if given, else every transformers attention
    module (not already one of `skip`, the wrapper's own stand-ins)."""
    if targets is not None:
        names = find_targets(model, targets)
        bad = [n for n in names if not is_attention(model.get_submodule(n))]
        if bad:
            raise HfAttnError(f"{wrapper} wraps attention modules (q/k/v -> attention function); {bad[:3]} are not. "
                              "Target e.g. 'self_attn' (Llama/Qwen/Mistral) or 'SelfAttention' (T5).")
        return names
    names = [n for n, m in model.named_modules() if is_attention(m) and not isinstance(m, skip)]
    if not names:
        raise HfAttnError(f"No attention module found in {type(model).__name__}; pass target_modules explicitly.")
    return names


def head_geometry(module: torch.nn.Module) -> tuple[int, int, int, float | None]:
    """(query heads, key/value heads, head_dim, scaling) of a transformers attention module."""
    cfg = module.config
    head_dim = getattr(module, "head_dim", None) or module.key_value_proj_dim
    q_heads = getattr(module, "n_heads", None) or cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or q_heads
    return q_heads, kv_heads, head_dim, getattr(module, "scaling", None)


def replace_module(model: torch.nn.Module, name: str, new: torch.nn.Module) -> Callable[[], None]:
    """Swap `name` for `new`; returns the undo callable that puts the original back."""
    old = model.get_submodule(name)
    model.set_submodule(name, new)
    return lambda: model.set_submodule(name, old)


def state_of(model: torch.nn.Module) -> WrapperState:
    """The wrapper state `hf_attn.wrap` attached to `model`; refuses a model that was never wrapped."""
    state = getattr(model, "hf_attn_wrapper", None)
    if state is None:
        raise HfAttnError("This model carries no hf-attn wrapper: call hf_attn.wrap(model, config) first.")
    return state


def wrap(model: torch.nn.Module, config: WrapperConfig) -> torch.nn.Module:
    """Inject the wrapper described by `config` into `model` in place; base frozen unless `freeze_base=False`."""
    if not isinstance(config, WrapperConfig) or config.wrapper_type not in _WRAPPERS:
        raise HfAttnError(
            f"hf_attn.wrap needs a wrapper config ({', '.join(s.config_cls.__name__ for s in _WRAPPERS.values())}), "
            f"got {type(config).__name__}."
        )
    if getattr(model, "hf_attn_wrapper", None) is not None:
        raise HfAttnError("This model is already wrapped; call hf_attn.unwrap(model) before wrapping it again.")
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    if config.freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    try:
        undo = _WRAPPERS[config.wrapper_type].apply(model, config)
    except Exception:  # a refused config leaves the model as it was, trainable flags included
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad.get(name, p.requires_grad))
        raise
    now = getattr(getattr(model, "config", None), "_attn_implementation", None)
    # a wrapper that switched attention needs it, declared (spec) or not (detected here)
    pinned = _WRAPPERS[config.wrapper_type].needs_attention(config) or (now if now != attn else None)
    model.hf_attn_wrapper = WrapperState(config, undo, requires_grad, attn, pinned)
    return model


def wrapper_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The wrapper's own tensors (parameters and persistent buffers), never the base model's."""
    state_of(model)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, WrapperLayer):
            for key, t in module.state_dict().items():
                if not key.startswith("base_layer."):
                    out[f"{name}.{key}"] = t.detach().contiguous()
    return out


def wrapper_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The wrapper's own parameters by name (what an optimiser should train), never the base model's."""
    own = set(wrapper_state_dict(model))
    return {name: p for name, p in model.named_parameters() if name in own}


SAVE_ID = "hf_attn_save_id"  # one random id per save, in both files: a reader can tell a mixed pair


def save_wrapper(model: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write the wrapper config JSON and its own weights as safetensors, each atomically.

    Both files carry the same random save id (the JSON field and the safetensors metadata `hf_attn_save_id`),
    so `load_wrapper` refuses a pair from two different saves, e.g. read while another save was writing.
    (Files without the id, from older hf-attn or tensors re-saved by hand, are not checked.)
    """
    state = state_of(model)
    out_dir = Path(out_dir)
    from hf_attn.version import __version__

    save_id = uuid.uuid4().hex
    meta = {"hf_attn_version": __version__, SAVE_ID: save_id, **state.config.to_dict()}
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        save_file(wrapper_state_dict(model), str(tmp),
                  metadata={"format": "pt", "wrapper_type": state.config.wrapper_type, SAVE_ID: save_id})
    write_text_atomic(out_dir / CONFIG_NAME, json.dumps(meta, indent=2, default=list))
    return out_dir


def read_wrapper_file(file: str | Path) -> dict[str, Any]:
    """The contents of an `hf_attn_wrapper.json`, checked to be a JSON object naming its `wrapper_type`."""
    file = Path(file)
    try:
        data = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HfAttnError(f"{file} is not valid JSON ({e}): the file is damaged. Save the wrapper again with "
                          "hf_attn.save_wrapper (or download it again).") from e
    if not isinstance(data, dict) or not isinstance(data.get("wrapper_type"), str):
        raise HfAttnError(f"{file} must be a JSON object with a 'wrapper_type' string (as hf_attn.save_wrapper "
                          f"writes), got {json.dumps(data)[:80]}. Save the wrapper again with hf_attn.save_wrapper.")
    return data


def wrapper_spec(kind: str, source: str | Path, version: str = "unknown") -> WrapperSpec:
    """The registered wrapper `kind` that `source` needs, or an error saying how to get it."""
    if kind not in _WRAPPERS:
        from hf_attn.version import __version__

        raise HfAttnError(
            f"{source} needs the hf-attn wrapper '{kind}' (saved with hf-attn {version}), which this installation "
            f"(hf-attn {__version__}) does not have: it has {', '.join(sorted(_WRAPPERS)) or 'none'}. "
            "Upgrade hf-attn, or import the package that registers the wrapper."
        )
    return _WRAPPERS[kind]


def read_wrapper_config(path: str | Path) -> WrapperConfig:
    """The wrapper config saved in `path` (a folder or its `hf_attn_wrapper.json`), validated."""
    return _read_config(path)[0]


def _read_config(path: str | Path) -> tuple[WrapperConfig, str | None]:
    """`(config, save id)` of the `hf_attn_wrapper.json` in (or at) `path`, read once."""
    path = Path(path)
    file = path / CONFIG_NAME if path.is_dir() else path
    if not file.exists():
        raise HfAttnError(f"No {CONFIG_NAME} in {path}: is this a folder written by hf_attn.save_wrapper?")
    data = read_wrapper_file(file)
    version = data.pop("hf_attn_version", "unknown")
    save_id = data.pop(SAVE_ID, None)
    wrapper_spec(data["wrapper_type"], file, version)
    return WrapperConfig.from_dict(data), save_id


def read_wrapper_weights(folder: Path, save_id: str | None) -> dict[str, torch.Tensor]:
    """The wrapper tensors of `folder`, after checking the file is whole and from save `save_id` (the JSON's)."""
    file = folder / WEIGHTS_NAME
    try:
        with safe_open(str(file), framework="pt") as f:
            saved_id = (f.metadata() or {}).get(SAVE_ID)
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise HfAttnError(f"{file} cannot be read as safetensors ({e}): it is missing, truncated or damaged. "
                          "Save the wrapper again with hf_attn.save_wrapper (or download it again).") from e
    if None not in (saved_id, save_id) and saved_id != save_id:  # no id: older hf-attn, or tensors re-saved by hand
        raise HfAttnError(
            f"{folder / CONFIG_NAME} and {file} come from two different saves (save ids {save_id} and "
            f"{saved_id}): a save may have been running while they were read. Load again once the save has "
            "finished, or save the wrapper again."
        )
    return tensors


def load_wrapper(base_model: torch.nn.Module, path: str | Path, **hub_kwargs) -> torch.nn.Module:
    """Wrap `base_model` as saved in `path` and load the wrapper's weights (strict: names and shapes).

    `path` is a folder or a Hub repo id ("user/name"; `hub_kwargs` such as `revision`, `token` go to
    `huggingface_hub.snapshot_download`).
    """
    from hf_attn.download import resolve_folder

    path = Path(resolve_folder(path, [CONFIG_NAME, WEIGHTS_NAME], **hub_kwargs))
    config, save_id = _read_config(path)
    tensors = read_wrapper_weights(path, save_id)  # everything is read and checked before the model changes
    wrap(base_model, config)
    try:
        _load_tensors(base_model, tensors, path)
    except BaseException:  # all or nothing: a failed load leaves the base model unwrapped
        unwrap(base_model)
        raise
    return base_model


def _load_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy the saved wrapper tensors into the freshly wrapped `model` (strict: names and shapes)."""
    own = wrapper_state_dict(model)
    missing, unexpected = set(own) - set(tensors), set(tensors) - set(own)
    if missing or unexpected:
        raise HfAttnError(
            f"Wrapper weights in {path} do not fit this model (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}): load it onto the same base architecture it was trained on."
        )
    bad = {k: (tuple(t.shape), tuple(own[k].shape)) for k, t in tensors.items() if t.shape != own[k].shape}
    if bad:
        key, (saved, expected) = next(iter(bad.items()))
        raise HfAttnError(f"Wrapper tensor {key} in {path} has shape {saved}, model expects {expected}: load it "
                          "onto the same base architecture it was trained on.")
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, t in tensors.items():
            owner, _, leaf = key.rpartition(".")
            getattr(modules[owner], leaf).copy_(t)


def unwrap(model: torch.nn.Module, merge: bool = False) -> torch.nn.Module:
    """Remove the wrapper: the exact base model again (or, with `merge=True`, the wrapper folded in)."""
    state = state_of(model)
    spec = _WRAPPERS[state.config.wrapper_type]
    if merge:
        if spec.merge is None:
            raise HfAttnError(f"Wrapper '{spec.name}' cannot be merged into plain modules; use unwrap(model).")
        spec.merge(model)
    else:
        for undo in reversed(state.undo):
            undo()
    for name, p in model.named_parameters():
        if name in state.requires_grad:
            p.requires_grad_(state.requires_grad[name])
    # only a wrapper's own switch is undone; a variant set_attention chose while wrapped stays
    if state.pinned is not None and state.attn_implementation not in (None, model.config._attn_implementation):
        set_attn_implementation(model, state.attn_implementation)
    del model.hf_attn_wrapper
    return model
