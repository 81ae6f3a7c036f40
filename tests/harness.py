"""The correctness harness every attention variant and wrapper must pass.

Tiny random models for Llama, Qwen2, Qwen3, Mistral (decoders) and T5 (encoder-decoder), plus checks that
take any model: no future leakage, padding invariance, KV cache == full forward, gradients. Tests of each
variant and wrapper reuse these functions on their own variants and wrapped models.
"""
from __future__ import annotations

import contextlib

import torch
from transformers import (
    AttentionInterface,
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
    T5Config,
    T5ForConditionalGeneration,
)

import hf_attn

VOCAB = 97
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=0,
    tie_word_embeddings=False,
)
DECODER_CONFIGS = {
    "llama": lambda: LlamaConfig(**_COMMON),
    "qwen2": lambda: Qwen2Config(**_COMMON),
    "qwen3": lambda: Qwen3Config(**_COMMON, head_dim=16),
    "mistral": lambda: MistralConfig(**_COMMON, sliding_window=None),
}
ARCHS = [*DECODER_CONFIGS, "t5"]


def t5_config() -> T5Config:
    return T5Config(
        vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, decoder_start_token_id=0,
        eos_token_id=1,
    )


def tiny_model(arch: str, attn: str, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    if arch == "t5":
        model = T5ForConditionalGeneration(t5_config())
    else:
        model = AutoModelForCausalLM.from_config(DECODER_CONFIGS[arch]())
    hf_attn.set_attention(model, attn)
    return model.to(dtype).eval()


def ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, length), generator=g)


def logits(model, input_ids, attention_mask=None, **kw) -> torch.Tensor:
    if model.config.is_encoder_decoder:
        dec = kw.pop("decoder_input_ids", input_ids[:, :6])
        return model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=dec, **kw).logits
    return model(input_ids=input_ids, attention_mask=attention_mask, **kw).logits


def future_leak(model, length: int = 12, at: int = 7) -> float:
    """Largest change of logits at positions < `at` when token `at` changes (decoder self-attention)."""
    x = ids(2, length)
    y = x.clone()
    y[:, at] = (y[:, at] + 5) % (VOCAB - 2) + 2
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            enc = ids(2, 9, seed=3)
            a = model(input_ids=enc, decoder_input_ids=x).logits
            b = model(input_ids=enc, decoder_input_ids=y).logits
        else:
            a, b = model(input_ids=x).logits, model(input_ids=y).logits
    return (a[:, :at] - b[:, :at]).abs().max().item()


def padding_gap(model, side: str) -> float:
    """Largest logit difference on real tokens between a padded batch and unpadded single runs."""
    lengths = [10, 6]
    seqs = [ids(1, n, seed=10 + n)[0] for n in lengths]
    width = max(lengths)
    batch = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        batch[i, sl], mask[i, sl] = s, 1
    worst = 0.0
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            dec = ids(len(seqs), 5, seed=4)
            padded = model(input_ids=batch, attention_mask=mask, decoder_input_ids=dec).logits
            for i, s in enumerate(seqs):
                single = model(input_ids=s[None], decoder_input_ids=dec[i : i + 1]).logits
                worst = max(worst, (padded[i] - single[0]).abs().max().item())
            return worst
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        padded = model(input_ids=batch, attention_mask=mask, position_ids=pos).logits
        for i, s in enumerate(seqs):
            single = model(input_ids=s[None]).logits[0]
            real = mask[i].bool()
            worst = max(worst, (padded[i][real] - single).abs().max().item())
    return worst


def cache_gap(model, new_tokens: int = 6) -> tuple[bool, float]:
    """Greedy tokens with the KV cache == tokens from repeated full forwards; also the max logit gap."""
    prompt = ids(1, 7, seed=5)
    with torch.no_grad():
        kw = dict(max_new_tokens=new_tokens, do_sample=False, output_scores=True, return_dict_in_generate=True)
        if model.config.is_encoder_decoder:
            gen = model.generate(input_ids=prompt, use_cache=True, **kw)
            seq = gen.sequences
            full = model(input_ids=prompt, decoder_input_ids=seq[:, :-1]).logits
            steps = full[0, -new_tokens:]
        else:
            gen = model.generate(input_ids=prompt, use_cache=True, pad_token_id=0, **kw)
            seq = gen.sequences
            full = model(input_ids=seq[:, :-1]).logits
            steps = full[0, -new_tokens:]
        cached = torch.stack([s[0] for s in gen.scores])
        same_tokens = torch.equal(steps.argmax(-1), seq[0, -new_tokens:])
    return same_tokens, (cached - steps).abs().max().item()


def qkv_grads(model) -> dict[str, float]:
    """Gradient norm reaching each q/k/v projection after one LM loss backward."""
    model.train()
    x = ids(2, 9)
    if model.config.is_encoder_decoder:
        out = model(input_ids=x, labels=ids(2, 5, seed=6))
    else:
        out = model(input_ids=x, labels=x)
    out.loss.backward()
    norms = {}
    for name, p in model.named_parameters():
        leaf = name.split(".")[-2]
        if leaf in {"q_proj", "k_proj", "v_proj", "q", "k", "v"}:
            norms[name] = float("nan") if p.grad is None else p.grad.norm().item()
    model.eval()
    return norms


@contextlib.contextmanager
def recording(name: str):
    """Temporarily wrap the registered function `name` to record every call's inputs and output."""
    original = AttentionInterface._global_mapping[name]
    calls = []

    def recorder(module, query, key, value, attention_mask, **kwargs):
        out = original(module, query, key, value, attention_mask, **kwargs)
        calls.append((module, query.detach(), key.detach(), value.detach(), attention_mask, kwargs, out[0].detach()))
        return out

    AttentionInterface.register(name, recorder)
    try:
        yield calls
    finally:
        AttentionInterface.register(name, original)


def visible_from_call(module, query, key, attention_mask, kwargs) -> torch.Tensor:
    """Which keys each query may see, rebuilt independently of hf_attn: `(B, Hq, Tq, Tk)` bool."""
    b, hq, tq, _ = query.shape
    tk = key.shape[2]
    is_causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    vis = torch.ones(b, hq, tq, tk, dtype=torch.bool)
    if causal:
        vis &= torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
    if attention_mask is not None:
        if attention_mask.dim() == 2:
            vis &= attention_mask.bool()[:, None, None, :]
        elif attention_mask.dtype == torch.bool:
            vis &= attention_mask
        else:
            vis &= torch.isfinite(attention_mask) & (attention_mask > torch.finfo(attention_mask.dtype).min / 2)
    return vis


def assert_calls_match(model, variant: str, reference, x, mask, **kw) -> None:
    """Every call `model` makes to `variant` on `(x, mask)` matches the float64 `reference` on rows that see a key."""
    with recording(variant) as calls, torch.no_grad():
        logits(model, x, mask, **kw)
    assert calls, "the model never called the registered attention function"
    for module, q, k, v, attn_mask, kwargs, out in calls:
        vis = visible_from_call(module, q, k, attn_mask, kwargs)
        ref = reference(module, q, k, v, vis, kwargs.get("position_bias"), kwargs.get("scaling"))
        live = vis.any(-1).transpose(1, 2)
        torch.testing.assert_close(out.double()[live], ref[live], rtol=2e-4, atol=5e-5)


def assert_bf16_close(build, x) -> None:
    """`build(dtype)` in bf16 gives finite logits within 5% (of the largest, + 0.05) of its fp32 logits."""
    with torch.no_grad():
        ref = logits(build(torch.float32), x)
        low = logits(build(torch.bfloat16), x)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


def recurrent_generate_gap(model, new: int = 6) -> tuple[bool, float]:
    """Greedy generation with a `RecurrentCache` from a left-padded batch vs full forwards over the sequences:
    (same tokens, max logit gap). Also checks the cache was used and counted every token."""
    from hf_attn.utils import CACHE_KWARG

    prompt = ids(2, 7, seed=5)
    mask = torch.ones_like(prompt)
    mask[1, :3] = 0  # left padding
    cache = hf_attn.RecurrentCache()
    with torch.no_grad():
        gen = model.generate(input_ids=prompt, attention_mask=mask, **{CACHE_KWARG: cache}, max_new_tokens=new,
                             do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=0)
        full_mask = torch.cat([mask, torch.ones(2, new, dtype=mask.dtype)], 1)[:, :-1]
        pos = (full_mask.cumsum(-1) - 1).clamp_min(0)
        full = model(input_ids=gen.sequences[:, :-1], attention_mask=full_mask, position_ids=pos).logits[:, -new:]
    assert getattr(gen, CACHE_KWARG) is cache and cache.get_seq_length() == 7 + new - 1
    same = torch.equal(full.argmax(-1), gen.sequences[:, -new:])
    return same, (torch.stack(gen.scores, 1) - full).abs().max().item()


def wrapper_round_trip(model, base, x, folder) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Save `model`'s wrapper, load it onto the fresh `base`, unwrap `model`: logits (trained, reloaded, unwrapped)."""
    with torch.no_grad():
        trained = logits(model, x)
    hf_attn.save_wrapper(model, folder)
    reloaded = hf_attn.load_wrapper(base, folder)
    assert reloaded.hf_attn_wrapper.config == model.hf_attn_wrapper.config
    with torch.no_grad():
        again = logits(reloaded, x)
        hf_attn.unwrap(model)
        unwrapped = logits(model, x)
    return trained, again, unwrapped
