"""The three tasks of the research plan as plain tensors: copy task, character (byte) LM, token LM.

Every training batch is a pure function of `(seed, step, micro, rank)`: no loader state to checkpoint, so a
resumed run reads exactly the batches the uninterrupted one would, and each process of a multi-process run
reads its own. Held-out batches are fixed windows of the test split. `datasets` is optional: it is used only
to read .jsonl/.json/.parquet/.csv corpora.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..evaluate import IGNORE
from ..utils import HfAttnError, require
from .config import TrainConfig

DATASETS_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class Batch:
    """One batch: token ids and labels of the same shape."""

    input_ids: torch.Tensor  # (B, T) long
    labels: torch.Tensor  # (B, T) long, IGNORE where no loss


class TaskData:
    """Batches for one task. Subclasses fill `vocab_size`, `description` and `_sample`/`eval_batch`."""

    vocab_size: int
    description: str
    quality_metric: str  # the eval column the report compares (lower is better unless eval_acc)

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.seq_len = cfg.data.seq_len
        self.batch_size = cfg.data.batch_size

    def generator(self, *index: int) -> torch.Generator:
        """A generator seeded from the config seed and `index`, so every batch is reproducible on any rank and after a
        resume."""
        h = self.cfg.seed
        for i in index:
            h = (h * 1_000_003 + i + 1) % (2**62)
        return torch.Generator().manual_seed(h)

    def train_batch(self, step: int, micro: int, rank: int) -> Batch:
        """The training batch of one step, micro-step and rank (the same on every restart)."""
        return self._sample(self.generator(0, step, micro, rank))

    def eval_batch(self, i: int) -> Batch:
        """Held-out batch number `i`."""
        raise NotImplementedError

    def _sample(self, g: torch.Generator) -> Batch:
        raise NotImplementedError


class CopyTask(TaskData):
    """`x_1..x_L, SEP, x_1..x_L`: loss only on the copy, so a model must carry L tokens across the separator."""

    quality_metric = "eval_acc"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.vocab_size = cfg.data.copy_vocab
        self.length = cfg.data.copy_length or (self.seq_len - 1) // 2
        self.description = f"copy task (synthetic): payload {self.length} tokens, vocab {self.vocab_size}"

    def _sample(self, g: torch.Generator) -> Batch:
        n, L = self.batch_size, self.length
        payload = torch.randint(1, self.vocab_size, (n, L), generator=g)
        sep = torch.zeros(n, 1, dtype=torch.long)
        ids = torch.cat([payload, sep, payload], dim=1)
        labels = ids.clone()
        labels[:, : L + 1] = IGNORE  # transformers shifts labels: position L predicts the first copied token
        return Batch(ids, labels)

    def eval_batch(self, i: int) -> Batch:
        """Held-out batch number `i`, from a seed stream disjoint from training."""
        return self._sample(self.generator(1, i))


class WindowTask(TaskData):
    """Language modelling on random windows of a 1D token tensor; held-out windows tile the test split."""

    def __init__(self, cfg: TrainConfig, train_ids: torch.Tensor, test_ids: torch.Tensor):
        super().__init__(cfg)
        need = self.seq_len + 1
        if train_ids.numel() < need:
            raise HfAttnError(f"The training split has {train_ids.numel()} tokens, fewer than seq_len + 1 = {need}.")
        n_eval = cfg.data.eval_batches * self.batch_size
        if test_ids.numel() < n_eval * self.seq_len:
            raise HfAttnError(
                f"The test split has {test_ids.numel()} tokens; {cfg.data.eval_batches} eval batches of "
                f"{self.batch_size} x {self.seq_len} need {n_eval * self.seq_len}. Lower data.eval_batches or seq_len."
            )
        self.train_ids, self.test_ids = train_ids, test_ids
        stride = (test_ids.numel() - self.seq_len) // max(1, n_eval - 1) if n_eval > 1 else 0
        self.eval_starts = torch.arange(n_eval) * stride

    def _windows(self, ids: torch.Tensor, starts: torch.Tensor) -> Batch:
        x = ids[starts[:, None] + torch.arange(self.seq_len)].long()
        return Batch(x, x.clone())

    def _sample(self, g: torch.Generator) -> Batch:
        starts = torch.randint(0, self.train_ids.numel() - self.seq_len, (self.batch_size,), generator=g)
        return self._windows(self.train_ids, starts)

    def eval_batch(self, i: int) -> Batch:
        """Held-out batch number `i`: fixed windows of the test split."""
        return self._windows(self.test_ids, self.eval_starts[i * self.batch_size : (i + 1) * self.batch_size])


def read_corpus(cfg: TrainConfig) -> tuple[str, str, str]:
    """`(train_text, test_text, name)` for `data.corpus`; file corpora are split by `test_fraction` at the tail."""
    corpus = cfg.data.corpus
    if corpus == "wiki":
        from .. import assets

        train, test, name = assets.wiki_text("train"), assets.wiki_text("test"), assets.CORPUS_NAME
    else:
        path = Path(corpus)
        if not path.is_file():
            raise HfAttnError(
                f"data.corpus {corpus!r} is neither 'wiki' nor an existing file. Pass 'wiki' or a path to a "
                f".txt file (or .jsonl/.json/.parquet/.csv with `datasets` installed)."
            )
        text = _read_file(path, cfg.data.text_field)
        if not text.strip():
            raise HfAttnError(f"data.corpus {path} holds no text.")
        cut = int(len(text) * (1 - cfg.data.test_fraction))
        train, test, name = text[:cut], text[cut:], path.name
    if cfg.data.max_chars:
        train = train[: cfg.data.max_chars]
    return train, test, name


def _read_file(path: Path, text_field: str) -> str:
    kind = DATASETS_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        return path.read_text(encoding="utf-8", errors="replace")
    datasets = require("datasets", extra="train", purpose=f"Reading {path.suffix} corpora")
    ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    if text_field not in ds.column_names:
        raise HfAttnError(f"{path} has no column {text_field!r} (columns: {ds.column_names}); set data.text_field.")
    return "\n\n".join(str(t) for t in ds[text_field] if t)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


def build_data(cfg: TrainConfig, tokenizer=None) -> TaskData:
    """The task's batches; `tokenizer` is required for `task: token`."""
    if cfg.task == "copy":
        return CopyTask(cfg)
    train, test, name = read_corpus(cfg)
    if cfg.task == "char":
        # Characters are UTF-8 bytes (vocab 256), as in enwik8's bits-per-character.
        tr = torch.frombuffer(bytearray(train.encode("utf-8")), dtype=torch.uint8)
        te = torch.frombuffer(bytearray(test.encode("utf-8")), dtype=torch.uint8)
        data = WindowTask(cfg, tr, te)
        data.vocab_size, data.quality_metric = 256, "eval_bpc"
        data.description = f"char-LM (UTF-8 bytes) on {name}: train {_size(tr.numel())} chars, test {_size(te.numel())} chars"
        return data
    if tokenizer is None:
        raise HfAttnError("task 'token' needs the model's tokenizer; build it with model.model_path set.")
    tr = torch.tensor(tokenizer(train).input_ids, dtype=torch.int32)
    te = torch.tensor(tokenizer(test).input_ids, dtype=torch.int32)
    data = WindowTask(cfg, tr, te)
    data.vocab_size, data.quality_metric = len(tokenizer), "eval_ppl"
    data.description = (
        f"token LM on {name}: train {_size(len(train))} chars ({_size(tr.numel())} tokens), "
        f"test {_size(len(test))} chars ({_size(te.numel())} tokens)"
    )
    return data
