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


def greedy_answer(model, tokenizer, new_tokens: int = 8) -> Callable[[torch.Tensor], str]:
    """An answerer: the model's greedy continuation of a prompt, decoded to text."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def answer(ids: torch.Tensor) -> str:
        out = model.generate(ids.to(device), max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    return answer


def passkey_accuracy(answer: Callable[[torch.Tensor], str], tokenizer, lengths=LENGTHS, samples: int = 50,
                     seed: int = 0) -> dict[int, float]:
    """Share of prompts per length whose answer's first 5-digit number is the key."""
    scores = {}
    for length in lengths:
        rng = random.Random(seed * 1_000_003 + length)
        hits = 0
        for _ in range(samples):
            ids, key = passkey_prompt(tokenizer, length, rng)
            found = KEY.search(answer(ids))
            hits += bool(found and found.group() == key)
        scores[length] = hits / samples
    return scores
