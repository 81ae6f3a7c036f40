"""Recipe configuration: nested dataclasses loaded from YAML, validated on construction.

A recipe names the attention by string (`model.attention: holo`) and a wrapper generically
(`model.wrapper: {type: tt, rank: 16}`), so every variant or wrapper registered with hf-attn plugs in
through configuration alone. `--set section.key=value` overrides any field from the command line.

Every field is checked on load against its type and the rules in its metadata (`spec(help, ge=1)`,
`choices=...`): finite floats, whole-number ints, non-empty strings; a bad value raises an `HfAttnError`
naming the dotted field (`train.steps`), the value and the fix. Cross-field rules stay in `__post_init__`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ..utils import HfAttnError

TASKS = ("copy", "char", "token")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("no", "bf16", "fp16")
OBJECTIVES = ("lm", "transfer", "distill")
RULES = ("ge", "gt", "le", "lt", "choices")
_BOUNDS = {"ge": (">=", lambda x, b: x >= b), "gt": (">", lambda x, b: x > b),
           "le": ("<=", lambda x, b: x <= b), "lt": ("<", lambda x, b: x < b)}


def spec(help: str, **rules: Any) -> dict[str, Any]:
    """Field metadata: the `help` text (as in transformers' TrainingArguments) plus the rules checked on load.

    Rules: `ge`/`gt`/`le`/`lt` bounds and `choices`; they apply to each element of a tuple field.
    """
    unknown = set(rules) - set(RULES)
    if unknown:
        raise TypeError(f"unknown field rule(s) {sorted(unknown)}; valid: {RULES}")
    return {"help": help, **rules}


class _Rejected(Exception):
    """A value that does not fit its field; carries what was expected."""


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(tp: Any) -> tuple[bool, Any]:
    """`(True, X)` for `X | None`, else `(False, tp)`."""
    args = typing.get_args(tp)
    if type(None) in args and len(args) == 2:
        return True, next(a for a in args if a is not type(None))
    return False, tp


def _rules_text(rules: dict[str, Any]) -> str:
    if "choices" in rules:
        return " among " + ", ".join(map(repr, rules["choices"]))
    return " and".join(f" {_BOUNDS[k][0]} {rules[k]}" for k in _BOUNDS if k in rules)


def expectation(tp: Any, rules: dict[str, Any]) -> str:
    """What a field accepts, in words: 'an integer >= 1', 'a finite number > 0, or null', ..."""
    optional, tp = _optional(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        text = f"a list of {len(typing.get_args(tp))} finite numbers, each{_rules_text(rules)}"
    elif origin is list:
        text = "a list of strings, e.g. [self_attn]"
    elif tp is dict or origin is dict:
        text = "a mapping of key: value pairs"
    elif dataclasses.is_dataclass(tp):
        text = "a mapping (a section of the recipe)"
    else:
        noun = {bool: "true or false", int: "an integer", float: "a finite number", str: "a non-empty string"}[tp]
        text = ("one of " + ", ".join(map(repr, rules["choices"]))) if "choices" in rules else noun + _rules_text(rules)
    return text + (", or null" if optional else "")


def _scalar(value: Any, tp: type, rules: dict[str, Any]) -> Any:
    """`value` as a `tp` that obeys `rules`, or `_Rejected`. Integral floats pass as int (YAML `1000.0`);
    numeric strings pass as float (YAML 1.1 reads `1e-3`, without a dot, as a string)."""
    if isinstance(value, bool) and tp is not bool:
        raise _Rejected
    if tp is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    elif tp is float and isinstance(value, (int, str)):
        try:
            value = float(value)
        except ValueError:
            raise _Rejected from None
    if not isinstance(value, tp) or (tp is float and not math.isfinite(value)) or (tp is str and not value.strip()):
        raise _Rejected
    if "choices" in rules and value not in rules["choices"]:
        raise _Rejected
    if not all(ok(value, rules[k]) for k, (_, ok) in _BOUNDS.items() if k in rules):
        raise _Rejected
    return value


def _coerce(value: Any, tp: Any, rules: dict[str, Any]) -> Any:
    """`value` checked against the field type `tp` and its rules; raises `_Rejected`."""
    optional, tp = _optional(tp)
    if value is None:
        if optional:
            return None
        raise _Rejected
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _Rejected
        return tuple(_scalar(v, a, rules) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Rejected
        return value
    if tp is dict or origin is dict or dataclasses.is_dataclass(tp):
        if not isinstance(value, dict if not dataclasses.is_dataclass(tp) else tp):
            raise _Rejected
        return value
    return _scalar(value, tp, rules)


def invalid(name: str, value: Any, expected: str, f: dataclasses.Field | None = None) -> HfAttnError:
    """The one error for a bad field: the dotted name, the value, what it accepts and how to set it."""
    fix = f"Fix: set {name} in the recipe or with --set {name}=VALUE"
    if f is not None and f.default is not dataclasses.MISSING:
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        fix += f" (default {default!r})"
    about = f" {name}: {f.metadata['help']}" if f is not None and f.metadata.get("help") else ""
    return HfAttnError(f"{name} = {value!r} is invalid: expected {expected}. {fix}.{about}")


def validate_fields(obj: Any) -> None:
    """Check every field of a config section against its type and `spec` rules, normalising in place
    (tuples, integral floats, numeric strings); the first bad field raises `invalid(...)`."""
    prefix = f"{obj.section}." if obj.section else ""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        try:
            setattr(obj, f.name, _coerce(value, hints[f.name], f.metadata))
        except _Rejected:
            raise invalid(prefix + f.name, value, expectation(hints[f.name], f.metadata), f) from None


@dataclass
class ModelConfig:
    """Which model to train: a small Llama from scratch, or a pretrained folder (recovery fine-tune)."""

    section: ClassVar[str] = "model"
    attention: str = field(default="sdpa", metadata=spec("attn_implementation: a registered hf-attn variant "
                                                          "(`hf-attn variants`) or a transformers built-in."))
    attention_config: dict[str, Any] = field(default_factory=dict, metadata=spec(
        "Extra keys set on the model config for the variant, e.g. {performer_num_features: 128}."))
    wrapper: dict[str, Any] | None = field(default=None, metadata=spec(
        "A registered wrapper and its config, e.g. {type: tt, rank: 16}; None = no wrapper."))
    model_path: str | None = field(default=None, metadata=spec(
        "Pretrained folder for a recovery fine-tune; 'smollm2' = the offline SmolLM2-135M; None = from scratch."))
    freeze_base: bool = field(default=False, metadata=spec(
        "Freeze every base weight except those matching `trainable` (wrapper weights always train)."))
    trainable: list[str] = field(default_factory=list, metadata=spec(
        "Name substrings kept trainable when freeze_base is true, e.g. [self_attn]."))
    hidden_size: int = field(default=128, metadata=spec("From scratch: model width.", ge=1))
    num_layers: int = field(default=2, metadata=spec("From scratch: decoder layers.", ge=1))
    num_heads: int = field(default=4, metadata=spec("From scratch: query heads (head_dim = hidden / heads).", ge=1))
    num_kv_heads: int | None = field(default=None, metadata=spec(
        "From scratch: key/value heads; None = num_heads.", ge=1))
    intermediate_size: int | None = field(default=None, metadata=spec(
        "From scratch: MLP width; None = 4 x hidden.", ge=1))
    lora_rank: int | None = field(default=None, metadata=spec(
        "train.objective distill: rank of the PEFT LoRA on lora_targets (merged into the weights at the end).", ge=1))
    lora_alpha: float = field(default=16.0, metadata=spec("LoRA alpha (scale alpha / rank).", gt=0.0))
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], metadata=spec(
        "Module names the LoRA adapts; add gate_proj, up_proj, down_proj for the MLPs too."))

    def __post_init__(self):
        validate_fields(self)
        if self.wrapper is not None and "type" not in self.wrapper:
            raise HfAttnError(f"model.wrapper = {self.wrapper!r} has no 'type' key: name the wrapper, e.g. "
                              "{type: tt, rank: 16} (`hf-attn variants` lists them).")
        if self.hidden_size % self.num_heads:
            raise HfAttnError(f"model.hidden_size {self.hidden_size} must be divisible by model.num_heads "
                              f"{self.num_heads}: change one of them.")
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise HfAttnError(f"model.num_heads {self.num_heads} must be a multiple of model.num_kv_heads {kv}: "
                              "change one of them.")


@dataclass
class DataConfig:
    """What the model reads. Batches are a pure function of (seed, step), so resume and sharding are exact."""

    section: ClassVar[str] = "data"
    seq_len: int = field(default=128, metadata=spec("Tokens per training sequence.", ge=4))
    batch_size: int = field(default=16, metadata=spec("Sequences per process per micro-batch.", ge=1))
    copy_vocab: int = field(default=32, metadata=spec(
        "Copy task: vocabulary (token 0 is the separator, so at least two symbols more).", ge=3))
    copy_length: int | None = field(default=None, metadata=spec(
        "Copy task: payload length; None = (seq_len - 1) // 2, the longest that fits.", ge=1))
    corpus: str = field(default="wiki", metadata=spec(
        "char/token: 'wiki' (offline Wikipedia summaries), a .txt file, or a .jsonl/.json/.parquet/.csv "
        "file read with `datasets` (needs text_field)."))
    text_field: str = field(default="text", metadata=spec("Column holding the text in a datasets file."))
    test_fraction: float = field(default=0.1, metadata=spec(
        "Held-out share of a file corpus (wiki has its own split).", gt=0.0, lt=1.0))
    max_chars: int | None = field(default=None, metadata=spec("Use at most this many training characters.", ge=1))
    eval_batches: int = field(default=4, metadata=spec("Held-out batches per evaluation (fixed across evals).", ge=1))

    def __post_init__(self):
        validate_fields(self)
        longest = (self.seq_len - 1) // 2
        if self.copy_length is not None and self.copy_length > longest:
            raise HfAttnError(f"data.copy_length = {self.copy_length} does not fit data.seq_len = {self.seq_len}: "
                              f"set it to at most (seq_len - 1) // 2 = {longest}, or raise seq_len.")


@dataclass
class OptimConfig:
    """AdamW with warmup and a decay schedule; clipping and accumulation."""

    section: ClassVar[str] = "optim"
    lr: float = field(default=1e-3, metadata=spec("Peak learning rate.", gt=0.0))
    weight_decay: float = field(default=0.01, metadata=spec("AdamW weight decay.", ge=0.0))
    betas: tuple[float, float] = field(default=(0.9, 0.95), metadata=spec("AdamW betas.", ge=0.0, lt=1.0))
    warmup_steps: int = field(default=0, metadata=spec("Linear warmup from 0 to lr.", ge=0))
    schedule: str = field(default="cosine", metadata=spec("LR decay after warmup.", choices=SCHEDULES))
    min_lr_ratio: float = field(default=0.1, metadata=spec("cosine/linear end at lr x this.", ge=0.0, le=1.0))
    max_grad_norm: float | None = field(default=1.0, metadata=spec(
        "Gradient clipping norm, > 0 (a negative one would reverse every update); None = off.", gt=0.0))
    grad_accum: int = field(default=1, metadata=spec("Micro-batches per optimizer step.", ge=1))

    def __post_init__(self):
        validate_fields(self)


@dataclass
class TrainLoopConfig:
    """How long, how precisely, and how often to log, evaluate, inspect and checkpoint."""

    section: ClassVar[str] = "train"
    steps: int = field(default=100, metadata=spec("Optimizer steps.", ge=1))
    mixed_precision: str = field(default="no", metadata=spec("accelerate autocast.", choices=PRECISIONS))
    log_every: int = field(default=10, metadata=spec("Steps per metrics.csv row.", ge=1))
    eval_every: int = field(default=50, metadata=spec("Steps between held-out evaluations (and at the end).", ge=1))
    diag_every: int = field(default=50, metadata=spec(
        "Steps between per-head entropy/diagnostics (and at the end).", ge=1))
    diag_tokens: int = field(default=64, metadata=spec("Sequence length of the diagnostics batch (T x T maps).", ge=2))
    save_every: int = field(default=0, metadata=spec("Steps between checkpoints; 0 = only at the end.", ge=0))
    keep_checkpoints: int = field(default=2, metadata=spec("Newest checkpoints kept.", ge=1))
    stop_at: int | None = field(default=None, metadata=spec(
        "Checkpoint and stop at this step (time-limited jobs); continue later with --resume.", ge=1))
    objective: str = field(default="lm", metadata=spec(
        "What a step minimises: 'lm' (next-token loss), 'transfer' (conversion stage 1: per-layer MSE of the "
        "variant's output to softmax attention's on the same q/k/v; only the wrapper trains), 'distill' "
        "(conversion stage 2: KL to the softmax teacher through a LoRA); see docs/conversion.md.",
        choices=OBJECTIVES))
    lm_weight: float = field(default=0.0, metadata=spec(
        "objective distill: weight of the LM loss added to the KL (0 = KL only).", ge=0.0))

    def __post_init__(self):
        if self.mixed_precision is False:  # YAML 1.1 reads a bare `no` as false
            self.mixed_precision = "no"
        validate_fields(self)
        if self.stop_at is not None and self.stop_at > self.steps:
            raise HfAttnError(f"train.stop_at = {self.stop_at} is after the last step (train.steps = {self.steps}): "
                              "set it to at most train.steps, or leave it out.")


@dataclass
class TrainConfig:
    """One run: task, model, data, optimiser, loop, seed and output folder."""

    section: ClassVar[str] = ""
    name: str = field(default="run", metadata=spec("Run name (default output folder runs/<name>)."))
    task: str = field(default="copy", metadata=spec("What the model learns.", choices=TASKS))
    seed: int = field(default=0, metadata=spec("Seeds model init, data order and dropout.", ge=0, le=2**32 - 1))
    out_dir: str | None = field(default=None, metadata=spec("Run folder; None = runs/<name>."))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    def __post_init__(self):
        validate_fields(self)
        if self.task == "token" and not self.model.model_path:
            raise HfAttnError("task 'token' needs model.model_path (its tokenizer); e.g. model_path: smollm2.")
        check_objective(self)

    @property
    def run_dir(self) -> Path:
        """The run folder: `out_dir`, else `runs/<name>`."""
        return Path(self.out_dir or Path("runs") / self.name)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (tuples as lists), as written to the run's config.yaml."""
        d = dataclasses.asdict(self)
        d["optim"]["betas"] = list(d["optim"]["betas"])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build and validate a config from nested dicts; unknown keys are refused with their path."""
        return _build(cls, data, "")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] = ()) -> "TrainConfig":
        """Load a recipe (following its `base:` chain), apply `KEY=VALUE` overrides, validate."""
        data = load_yaml(path)
        for item in overrides:
            apply_override(data, item)
        return cls.from_dict(data)


def check_objective(cfg: TrainConfig) -> None:
    """Cross-field rules of the conversion objectives: a pretrained teacher, LoRA only where it is merged."""
    objective = cfg.train.objective
    if objective != "lm" and not cfg.model.model_path:
        raise HfAttnError(f"train.objective {objective!r} converts a pretrained model (it is its own teacher): "
                          "set model.model_path (e.g. smollm2), or use objective 'lm'.")
    if objective == "distill" and cfg.model.lora_rank is None:
        raise HfAttnError("train.objective 'distill' trains a LoRA: set model.lora_rank (e.g. 8).")
    if objective != "distill" and cfg.model.lora_rank is not None:
        raise HfAttnError(f"model.lora_rank is used by train.objective 'distill' only (this recipe has "
                          f"{objective!r}): remove model.lora_rank or set train.objective: distill.")
    if objective != "distill" and cfg.train.lm_weight:
        raise HfAttnError(f"train.lm_weight applies to train.objective 'distill' only (this recipe has {objective!r}); "
                          "remove it.")


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe as a dict; `base: other.yaml` (relative to this file) is loaded first and deep-merged under it."""
    path = Path(path)
    if not path.is_file():
        raise HfAttnError(f"Config file {path} does not exist; pass a recipe such as recipes/train/copy_sdpa.yaml.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise HfAttnError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise HfAttnError(f"{path} must hold a mapping of sections (model, data, optim, train), not {type(data).__name__}.")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / base).resolve()
    if base_path in _seen:
        raise HfAttnError(f"Recipe {path} inherits from itself through 'base: {base}'.")
    return deep_merge(load_yaml(base_path, _seen + (base_path,)), data)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, section by section (a mapping in `top` merges, anything else replaces)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "wrapper" else v
    return out


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to the nested dict `data` in place."""
    if "=" not in item:
        raise HfAttnError(f"Override {item!r} must look like section.key=value, e.g. data.seq_len=512.")
    key, raw = item.split("=", 1)
    set_nested(data, key.strip(), yaml.safe_load(raw))


def set_nested(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `data[a][b][c] = value` for `dotted = 'a.b.c'`, creating missing sections."""
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if node is None or not isinstance(node, dict):
            raise HfAttnError(f"Cannot set {dotted}: {p} is not a section.")
    node[parts[-1]] = value


def _build(cls, data: Any, where: str):
    """`cls` from the mapping `data` (sections recursively); `where` is the dotted prefix for errors."""
    section = where.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise invalid(section, data, "a mapping (a section of the recipe)")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise HfAttnError(f"Unknown key(s) {sorted(unknown)} in {section}; valid keys: {sorted(fields)}.")
    kwargs = {}
    for name, value in data.items():
        sub = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            value = _build(sub, {} if value is None else value, f"{where}{name}.")  # an empty section: defaults
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise HfAttnError(f"Bad value in {section}: {e}") from e
