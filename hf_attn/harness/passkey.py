"""Passkey retrieval: a 5-digit number hidden at a random depth in filler text, answered by greedy generation.

The test of long-range recall (Mohtashami & Jaggi 2023, "Landmark Attention"): a linear-time state that
forgets the key scores ~0 where softmax attention scores ~100%. Prompts are a pure function of the seed.
"""
from __future__ import annotations

import random
import re
from typing import Callable

import torch

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"
LENGTHS = (512, 1024, 2048, 4096)
KEY = re.compile(r"\d{5}")


def passkey_prompt(tokenizer, length: int, rng: random.Random) -> tuple[torch.Tensor, str]:
    """`(input_ids (1, ~length), key)`: filler up to `length` tokens with the needle at a random depth."""
    key = f"{rng.randrange(10_000, 100_000)}"
    per_filler = len(tokenizer(FILLER, add_special_tokens=False).input_ids)
    fixed = len(tokenizer(NEEDLE.format(key=key) + QUESTION, add_special_tokens=False).input_ids)
    n = max(1, (length - fixed) // per_filler)
    depth = rng.randrange(n + 1)
    text = FILLER * depth + NEEDLE.format(key=key) + FILLER * (n - depth) + QUESTION
    return tokenizer(text, return_tensors="pt").input_ids, key


def greedy_answer(model, tokenizer, new_tokens: int = 8) -> Callable[[list[torch.Tensor]], list[str]]:
    """An answerer: the model's greedy continuations of a batch of prompts (left-padded), decoded to text."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.no_grad()
    def answer(prompts: list[torch.Tensor]) -> list[str]:
        width = max(p.shape[1] for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - p.shape[1]:], mask[row, width - p.shape[1]:] = p[0], 1
        out = model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=pad)
        return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)

    return answer


def passkey_accuracy(answer: Callable[[list[torch.Tensor]], list[str]], tokenizer, lengths=LENGTHS, samples: int = 50,
                     seed: int = 0, batch_size: int = 10) -> dict[int, float]:
    """Share of prompts per length whose answer's first 5-digit number is the key; `answer` takes `batch_size`
    prompts at a time."""
    scores = {}
    for length in lengths:
        rng = random.Random(seed * 1_000_003 + length)
        prompts = [passkey_prompt(tokenizer, length, rng) for _ in range(samples)]
        hits = 0
        for start in range(0, samples, batch_size):
            batch = prompts[start:start + batch_size]
            for (_, key), text in zip(batch, answer([ids for ids, _ in batch])):
                found = KEY.search(text)
                hits += bool(found and found.group() == key)
        scores[length] = hits / samples
    return scores
