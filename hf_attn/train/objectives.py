"""What a training step minimises: the LM loss, attention transfer (stage 1) or distillation (stage 2).

The two conversion objectives follow LoLCATs (Zhang et al. 2024, arXiv 2410.10254):

* `transfer`: every attention layer runs both the student (the variant, with its trainable wrapper) and the
  teacher (softmax attention through `sdpa`) on the SAME q/k/v; the loss is the sum over layers of
  MSE(student output, teacher output), and the next layer receives the teacher's output, so layers learn
  independently. It works through one attention function registered with transformers' `AttentionInterface`
  for the duration of a forward (`transfer_attention`); no model is forked. Hedgehog's cross-entropy between
  attention weights is left out (linear variants never materialise the weights at training lengths).
* `distill`: PEFT LoRA on the converted model; loss = KL(teacher || student) on next-token distributions
  (temperature 1) + `lm_weight` x LM loss. The teacher is the same model with the LoRA disabled and attention
  switched to `sdpa` (the variant's window and wrapper are inert there), without gradients. At the end each
  LoRA layer is merged into its base weight (`DistillObjective.finish`), so `final/` is a plain hf-attn checkpoint.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..registry import padding_mask_only
from ..utils import HfAttnError, require, set_attn_implementation
from .config import TrainConfig

TRANSFER_IMPLEMENTATION = "hf_attn_transfer"


@dataclass
class TransferRecord:
    """The student variant of an active transfer and the per-layer MSEs of the current forward."""

    student: str
    losses: list[torch.Tensor] = field(default_factory=list)


_ACTIVE: list[TransferRecord] = []


def transfer_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """Student and teacher on the same q/k/v: records MSE(student, teacher), returns the teacher's output."""
    if attention_mask is not None:
        raise HfAttnError("Attention transfer trains on unpadded windows; this batch carries a padding mask. "
                          "Train on packed token windows (task: token) without padding.")
    record = _ACTIVE[-1]
    student, _ = ALL_ATTENTION_FUNCTIONS[record.student](module, query, key, value, attention_mask, **kwargs)
    teacher_kwargs = {k: v for k, v in kwargs.items() if k in ("dropout", "scaling", "is_causal")}
    with torch.no_grad():
        teacher, _ = sdpa_attention_forward(module, query, key, value, None, **teacher_kwargs)
    record.losses.append(F.mse_loss(student.float(), teacher.float()))
    return teacher.to(student.dtype), None


@contextlib.contextmanager
def transfer_attention(model: torch.nn.Module, student: str) -> Iterator[TransferRecord]:
    """Run `model`'s forwards in transfer mode for `student`; yields the record of per-layer losses.

    The transfer function is registered with transformers for the duration and the model's previous
    implementation is restored afterwards, whatever happens inside.
    """
    previous = model.config._attn_implementation
    added = TRANSFER_IMPLEMENTATION not in AttentionInterface._global_mapping
    AttentionInterface.register(TRANSFER_IMPLEMENTATION, transfer_attention_forward)
    AttentionMaskInterface.register(TRANSFER_IMPLEMENTATION, padding_mask_only)
    record = TransferRecord(student)
    _ACTIVE.append(record)
    try:
        set_attn_implementation(model, TRANSFER_IMPLEMENTATION)
        yield record
    finally:
        _ACTIVE.pop()
        set_attn_implementation(model, previous)
        if added and not _ACTIVE:
            AttentionInterface._global_mapping.pop(TRANSFER_IMPLEMENTATION, None)
            AttentionMaskInterface._global_mapping.pop(TRANSFER_IMPLEMENTATION, None)


@contextlib.contextmanager
def teacher_mode(model: torch.nn.Module) -> Iterator[None]:
    """The distillation teacher: LoRA disabled, softmax attention (sdpa), no gradients."""
    previous = model.config._attn_implementation
    try:
        with torch.no_grad(), model.disable_adapter():
            set_attn_implementation(model, "sdpa")
            yield
    finally:
        set_attn_implementation(model, previous)


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(teacher || student) between next-token distributions (temperature 1)."""
    s = F.log_softmax(student_logits.float(), dim=-1).flatten(0, -2)
    t = F.log_softmax(teacher_logits.float(), dim=-1).flatten(0, -2)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


class Objective:
    """The LM loss: `model(input_ids, labels).loss` (what every recipe trained before conversion)."""

    name = "lm"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Adjust the built model before the optimizer sees its parameters; returns the model to train."""
        return model

    def loss(self, model, inner, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one micro-batch; `model` may be accelerate-wrapped, `inner` is the plain model."""
        return model(**batch).loss

    def finish(self, inner: torch.nn.Module) -> torch.nn.Module:
        """The model to export as `final/`."""
        return inner


class TransferObjective(Objective):
    """Stage 1: only the wrapper's parameters train, against the frozen model's own softmax attention."""

    name = "transfer"

    def prepare(self, model):
        """Freeze everything but the wrapper's parameters; returns the model."""
        from .. import adapters

        own = set(adapters.wrapper_state_dict(model)) if getattr(model, "hf_attn_wrapper", None) else set()
        if not own:
            raise HfAttnError(
                f"train.objective 'transfer' trains the variant's learnable parts, but '{self.cfg.model.attention}' "
                "has no wrapper here. Set model.wrapper (e.g. {type: gauge}), or skip stage 1 for this variant."
            )
        for name, p in model.named_parameters():
            p.requires_grad_(name in own)
        return model

    def loss(self, model, inner, batch):
        """Sum over layers of MSE(variant output, softmax output) on the same q/k/v, teacher passed on."""
        with transfer_attention(inner, self.cfg.model.attention) as record:
            model(input_ids=batch["input_ids"], use_cache=False, logits_to_keep=1)
        return torch.stack(record.losses).sum()


class DistillObjective(Objective):
    """Stage 2: LoRA on the converted model, distilled from the same model with softmax attention."""

    name = "distill"

    def prepare(self, model):
        """Add PEFT LoRA to the attention projections; only the LoRA weights train."""
        peft = require("peft", extra="train", purpose="train.objective 'distill' (LoRA)")
        mc = self.cfg.model
        for p in model.parameters():
            p.requires_grad_(False)
        lora = peft.LoraConfig(r=mc.lora_rank, lora_alpha=mc.lora_alpha, lora_dropout=0.0,
                               target_modules=list(mc.lora_targets), bias="none")
        return peft.get_peft_model(model, lora)

    def loss(self, model, inner, batch):
        """KL(teacher || student) on next-token distributions, plus `lm_weight` x the LM loss."""
        out = model(**batch)
        with teacher_mode(inner):
            teacher = inner(input_ids=batch["input_ids"]).logits
        kl = kl_to_teacher(out.logits, teacher)
        weight = self.cfg.train.lm_weight
        return kl + weight * out.loss if weight else kl

    def finish(self, inner):
        """Merge each LoRA layer into its base weight and put the base layer back; returns the plain model.

        Done layer by layer rather than with `merge_and_unload`, which takes every module with a `base_layer`
        (as hf-attn's wrappers have) for a PEFT layer.
        """
        from peft.tuners.lora import LoraLayer

        for name, module in list(inner.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(inner.get_submodule(parent), child, module.get_base_layer())
        return inner.get_base_model()


OBJECTIVES = {o.name: o for o in (Objective, TransferObjective, DistillObjective)}


def build_objective(cfg: TrainConfig) -> Objective:
    """The objective `train.objective` names (validated by the config)."""
    return OBJECTIVES[cfg.train.objective](cfg)
