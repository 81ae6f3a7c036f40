"""Recipe configuration: nested dataclasses loaded from YAML, validated on construction.

A recipe names the attention by string (`model.attention: holo`) and a wrapper generically
(`model.wrapper: {type: tt, rank: 16}`), so every variant or wrapper registered with hf-attn plugs in
through configuration alone. `--set section.key=value` overrides any field from the command line.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..utils import HfAttnError

TASKS = ("copy", "char", "token")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class ModelConfig:
    """Which model to train: a small Llama from scratch, or a pretrained folder (recovery fine-tune)."""

    attention: str = field(default="sdpa", metadata={"help": "attn_implementation: a registered hf-attn variant "
                                                             "(`hf-attn variants`) or a transformers built-in."})
    attention_config: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Extra keys set on the model config for the variant, e.g. {performer_num_features: 128}."})
    wrapper: dict[str, Any] | None = field(default=None, metadata={
        "help": "A registered wrapper and its config, e.g. {type: tt, rank: 16}; None = no wrapper."})
    model_path: str | None = field(default=None, metadata={
        "help": "Pretrained folder for a recovery fine-tune; 'smollm2' = the offline SmolLM2-135M; None = from scratch."})
    freeze_base: bool = field(default=False, metadata={
        "help": "Freeze every base weight except those matching `trainable` (wrapper weights always train)."})
    trainable: list[str] = field(default_factory=list, metadata={
        "help": "Name substrings kept trainable when freeze_base is true, e.g. [self_attn]."})
    hidden_size: int = field(default=128, metadata={"help": "From scratch: model width."})
    num_layers: int = field(default=2, metadata={"help": "From scratch: decoder layers."})
    num_heads: int = field(default=4, metadata={"help": "From scratch: query heads (head_dim = hidden / heads)."})
    num_kv_heads: int | None = field(default=None, metadata={"help": "From scratch: key/value heads; None = num_heads."})
    intermediate_size: int | None = field(default=None, metadata={"help": "From scratch: MLP width; None = 4 x hidden."})

    def __post_init__(self):
        if not isinstance(self.attention, str) or not self.attention:
            raise HfAttnError("model.attention must name an attention implementation, e.g. 'holo' or 'sdpa'.")
        if self.wrapper is not None:
            if not isinstance(self.wrapper, dict) or "type" not in self.wrapper:
                raise HfAttnError("model.wrapper must be a mapping with a 'type' key, e.g. {type: tt, rank: 16}.")
        if self.hidden_size % self.num_heads:
            raise HfAttnError(f"model.hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}.")
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise HfAttnError(f"model.num_heads {self.num_heads} must be a multiple of num_kv_heads {kv}.")
        if min(self.hidden_size, self.num_layers, self.num_heads) < 1:
            raise HfAttnError("model.hidden_size, num_layers and num_heads must be positive.")


@dataclass
class DataConfig:
    """What the model reads. Batches are a pure function of (seed, step), so resume and sharding are exact."""

    seq_len: int = field(default=128, metadata={"help": "Tokens per training sequence."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per process per micro-batch."})
    copy_vocab: int = field(default=32, metadata={"help": "Copy task: vocabulary (token 0 is the separator)."})
    copy_length: int | None = field(default=None, metadata={
        "help": "Copy task: payload length; None = (seq_len - 1) // 2, the longest that fits."})
    corpus: str = field(default="wiki", metadata={
        "help": "char/token: 'wiki' (offline Wikipedia summaries), a .txt file, or a .jsonl/.json/.parquet/.csv "
                "file read with `datasets` (needs text_field)."})
    text_field: str = field(default="text", metadata={"help": "Column holding the text in a datasets file."})
    test_fraction: float = field(default=0.1, metadata={"help": "Held-out share of a file corpus (wiki has its own split)."})
    max_chars: int | None = field(default=None, metadata={"help": "Use at most this many training characters."})
    eval_batches: int = field(default=4, metadata={"help": "Held-out batches per evaluation (fixed across evals)."})

    def __post_init__(self):
        if self.seq_len < 4 or self.batch_size < 1:
            raise HfAttnError(f"data.seq_len must be >= 4 and batch_size >= 1 (got {self.seq_len}, {self.batch_size}).")
        if self.copy_vocab < 3:
            raise HfAttnError("data.copy_vocab must be >= 3 (separator plus at least two symbols).")
        if self.copy_length is not None and not 1 <= self.copy_length <= (self.seq_len - 1) // 2:
            raise HfAttnError(f"data.copy_length must be in [1, (seq_len - 1) // 2 = {(self.seq_len - 1) // 2}].")
        if not 0.0 < self.test_fraction < 1.0:
            raise HfAttnError("data.test_fraction must be in (0, 1).")
        if self.eval_batches < 1:
            raise HfAttnError("data.eval_batches must be >= 1.")


@dataclass
class OptimConfig:
    """AdamW with warmup and a decay schedule; clipping and accumulation."""

    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    betas: tuple[float, float] = field(default=(0.9, 0.95), metadata={"help": "AdamW betas."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup from 0 to lr."})
    schedule: str = field(default="cosine", metadata={"help": "cosine | linear | constant (after warmup)."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "cosine/linear end at lr x this."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping norm; None = off."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.schedule not in SCHEDULES:
            raise HfAttnError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
        if self.lr <= 0 or self.grad_accum < 1 or self.warmup_steps < 0:
            raise HfAttnError("optim.lr must be > 0, grad_accum >= 1 and warmup_steps >= 0.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise HfAttnError("optim.min_lr_ratio must be in [0, 1].")


@dataclass
class TrainLoopConfig:
    """How long, how precisely, and how often to log, evaluate, inspect and checkpoint."""

    steps: int = field(default=100, metadata={"help": "Optimizer steps."})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (accelerate autocast)."})
    log_every: int = field(default=10, metadata={"help": "Steps per metrics.csv row."})
    eval_every: int = field(default=50, metadata={"help": "Steps between held-out evaluations (and at the end)."})
    diag_every: int = field(default=50, metadata={"help": "Steps between per-head entropy/diagnostics (and at the end)."})
    diag_tokens: int = field(default=64, metadata={"help": "Sequence length of the diagnostics batch (T x T maps)."})
    save_every: int = field(default=0, metadata={"help": "Steps between checkpoints; 0 = only at the end."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Newest checkpoints kept."})
    stop_at: int | None = field(default=None, metadata={
        "help": "Checkpoint and stop at this step (time-limited jobs); continue later with --resume."})

    def __post_init__(self):
        if self.mixed_precision is False:  # YAML 1.1 reads a bare `no` as false
            self.mixed_precision = "no"
        if self.mixed_precision not in PRECISIONS:
            raise HfAttnError(f"train.mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}.")
        if self.steps < 1 or self.log_every < 1 or self.eval_every < 1 or self.diag_every < 1:
            raise HfAttnError("train.steps, log_every, eval_every and diag_every must be >= 1.")
        if self.save_every < 0 or self.keep_checkpoints < 1 or self.diag_tokens < 2:
            raise HfAttnError("train.save_every must be >= 0, keep_checkpoints >= 1, diag_tokens >= 2.")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise HfAttnError(f"train.stop_at must be in [1, steps={self.steps}].")


@dataclass
class TrainConfig:
    """One run: task, model, data, optimiser, loop, seed and output folder."""

    name: str = field(default="run", metadata={"help": "Run name (default output folder runs/<name>)."})
    task: str = field(default="copy", metadata={"help": "copy | char | token."})
    seed: int = field(default=0, metadata={"help": "Seeds model init, data order and dropout."})
    out_dir: str | None = field(default=None, metadata={"help": "Run folder; None = runs/<name>."})
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    def __post_init__(self):
        if self.task not in TASKS:
            raise HfAttnError(f"task must be one of {TASKS}, got {self.task!r}.")
        if self.task == "token" and not self.model.model_path:
            raise HfAttnError("task 'token' needs model.model_path (its tokenizer); e.g. model_path: smollm2.")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir or Path("runs") / self.name)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["optim"]["betas"] = list(d["optim"]["betas"])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return _build(cls, data, "")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] = ()) -> "TrainConfig":
        data = load_yaml(path)
        for item in overrides:
            apply_override(data, item)
        return cls.from_dict(data)


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe as a dict; `base: other.yaml` (relative to this file) is loaded first and deep-merged under it."""
    path = Path(path)
    if not path.is_file():
        raise HfAttnError(f"Config file {path} does not exist; pass a recipe such as recipes/copy_sdpa.yaml.")
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
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if node is None or not isinstance(node, dict):
            raise HfAttnError(f"Cannot set {dotted}: {p} is not a section.")
    node[parts[-1]] = value


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise HfAttnError(f"{where or 'config'} must be a mapping, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise HfAttnError(f"Unknown key(s) {sorted(unknown)} in {where or 'config'}; valid keys: {sorted(fields)}.")
    kwargs = {}
    for name, value in data.items():
        sub = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub) and value is not None:
            value = _build(sub, value, f"{where}{name}.")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise HfAttnError(f"Bad value in {where or 'config'}: {e}") from e
