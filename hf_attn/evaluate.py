"""The one held-out evaluation: summed next-token loss, and the metrics read from it.

Every figure hf-attn reports about quality (the trainer's eval rows, `hf-attn compare`, the TT rank sweep,
the conversion report) comes from `token_loss`, so perplexities are comparable across them: token-weighted
means over the predicted positions, logits upcast to fp32, positions labelled `IGNORE` left out.
"""
from __future__ import annotations

import math

import torch

IGNORE = -100  # label of a position that carries no loss (transformers' convention)


@torch.no_grad()
def token_loss(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
               **model_kwargs) -> torch.Tensor:
    """`[summed NLL (nats), predicted tokens, correct argmaxes]` (float64) of one batch.

    Position t predicts token t+1, as transformers' own `labels=` loss does; `labels` defaults to `input_ids`.
    """
    logits = model(input_ids=input_ids, **model_kwargs).logits[:, :-1].float()
    target = (input_ids if labels is None else labels)[:, 1:].to(logits.device)
    live = target != IGNORE
    nll = torch.nn.functional.cross_entropy(logits[live], target[live], reduction="sum")
    correct = (logits.argmax(-1)[live] == target[live]).sum()
    return torch.stack([nll.double(), live.sum().double(), correct.double()])


def metrics(nll: float, tokens: int, correct: int, task: str = "token") -> dict[str, float]:
    """Held-out metrics from summed token losses: loss (nats), perplexity, accuracy, and bits per char/byte."""
    loss = nll / max(tokens, 1)
    out = {"eval_loss": loss, "eval_acc": correct / max(tokens, 1)}
    if task == "char":
        out["eval_bpc"] = loss / math.log(2)
    out["eval_ppl"] = math.exp(min(loss, 50.0))
    return out


def perplexity(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 1) -> float:
    """Token-weighted perplexity of `model` over `(N, T)` token windows, `batch_size` windows per forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals = sum(token_loss(model, windows[i:i + batch_size].to(device)).cpu()
                 for i in range(0, len(windows), batch_size))
    model.train(was_training)
    return metrics(totals[0].item(), int(totals[1].item()), int(totals[2].item()))["eval_ppl"]
