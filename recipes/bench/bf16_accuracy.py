"""How much accuracy each attention loses in bf16 and fp32, against a float64 run of the same model and inputs.

A tiny random GQA Llama (2 layers, width 64, 4 query / 2 key-value heads of head_dim 32), a batch of 2 with the
first row left-padded, T tokens. For each attention (holo, performer, sdpa as the reference point) it reports
the relative error `||a - b|| / ||b||` of the logits (real tokens) and of the q_proj weight gradients (all
layers, from the LM loss) in each precision, `b` being the float64 PyTorch run on the CPU of the same row.

Extra holo rows: `holo soft=S` sets `config.holo_soft` (the unit projection's floor; a larger floor amplifies
the rounding of q and k less), and `holo fp64 math` computes holo in float64 from the q/k/v the model hands it
(then rounds the output to the model's dtype): its error is what the inputs' rounding alone costs, so the gap
between `holo` and `holo fp64 math` is holo's own arithmetic (the kernels' or the PyTorch path's).

    python recipes/bench/bf16_accuracy.py --device cuda --out results/bf16_accuracy      # one GPU: < 1 min
    python recipes/bench/bf16_accuracy.py --device cpu --t 257 --out /tmp/bf16_accuracy   # PyTorch paths
    TRITON_INTERPRET=1 python recipes/bench/bf16_accuracy.py --device cpu --interpret --t 130 --out /tmp/acc

bf16 means the model's weights cast to bf16 (`--bf16 cast`) or fp32 weights under `torch.autocast` (`--bf16
autocast`; both by default). On CUDA holo and performer take their Triton kernels where `kernels_enabled` says
so; on CPU the PyTorch paths, unless `--interpret` runs the kernels under Triton's interpreter
(`TRITON_INTERPRET=1` must be set before Python starts) rounding as on the GPU
(`hf_attn.kernels.emulate`). Prints a markdown table; writes `bf16_accuracy.json`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from unittest import mock

import torch
from transformers import AutoModelForCausalLM, LlamaConfig
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import hf_attn
from hf_attn import kernels
from hf_attn.attention.holo import attention as holo_attention
from hf_attn.attention.holo.math import SOFT
from hf_attn.attention.performer import attention as performer_attention
from hf_attn.utils import write_text_atomic

VARIANTS = ("holo", "performer", "sdpa")
CONFIG = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, pad_token_id=0,
              tie_word_embeddings=False)


def build(variant: str, seed: int, **knobs) -> torch.nn.Module:
    """The tiny random Llama in float64 on the CPU (the reference; every precision casts a fresh copy), with the
    attention's config `knobs`."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**CONFIG, **knobs))
    hf_attn.set_attention(model, variant)
    return model.double().eval()


def _holo_in_fp64(module, query, key, value, attention_mask, *args, **kwargs):
    """holo computed in float64 from the q/k/v it is given, the output rounded back to their dtype."""
    out, weights = holo_attention.holo_attention_forward(module, query.double(), key.double(), value.double(),
                                                         attention_mask, *args, **kwargs)
    return out.to(query.dtype), weights


@contextlib.contextmanager
def holo_fp64_math():
    """Models with attention "holo" call `_holo_in_fp64` within the block (a local override of transformers'
    attention mapping, removed on exit)."""
    ALL_ATTENTION_FUNCTIONS["holo"] = _holo_in_fp64
    try:
        yield
    finally:
        del ALL_ATTENTION_FUNCTIONS["holo"]


def batch(t: int, seed: int) -> dict:
    """Two rows of `t` tokens, the first left-padded by a quarter, with position ids counted from each row's first
    real token (what `generate` passes; holo is not shift-invariant)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, CONFIG["vocab_size"], (2, t), generator=g)
    mask = torch.ones(2, t, dtype=torch.long)
    mask[0, : t // 4] = 0
    ids[0, : t // 4] = CONFIG["pad_token_id"]
    labels = ids.masked_fill(mask == 0, -100)
    return dict(input_ids=ids, attention_mask=mask, labels=labels,
                position_ids=(mask.cumsum(-1) - 1).clamp_min(0))


def logits_and_grad(model, inputs: dict, device: str, autocast: torch.dtype | None):
    """Logits of the real tokens and the q_proj weight gradients (concatenated over layers), both float64 on CPU."""
    model.zero_grad(set_to_none=True)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    region = torch.autocast(device, dtype=autocast) if autocast else contextlib.nullcontext()
    with region:
        out = model(**inputs)
    out.loss.backward()
    real = inputs["attention_mask"].bool()
    grads = [m.self_attn.q_proj.weight.grad.flatten() for m in model.model.layers]
    return out.logits[real].detach().double().cpu(), torch.cat(grads).double().cpu()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error `||a - b|| / ||b||`."""
    return ((a - b).norm() / b.norm()).item()


@contextlib.contextmanager
def kernels_on_cpu():
    """Route holo/performer to their Triton kernels for CPU tensors (run by the interpreter, rounding as
    on the GPU: `hf_attn.kernels.emulate`), by the same rule that picks them on CUDA."""
    from hf_attn.kernels.emulate import gpu_arithmetic

    def as_on_cuda(x: torch.Tensor) -> bool:
        with mock.patch.object(torch.Tensor, "is_cuda", property(lambda self: True)):
            return kernels.kernels_enabled(x)

    with mock.patch.object(holo_attention, "kernels_enabled", as_on_cuda), \
            mock.patch.object(performer_attention, "kernels_enabled", as_on_cuda), gpu_arithmetic():
        yield


PRECISIONS = {  # name: (weights dtype, autocast dtype)
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "bf16_autocast": (torch.float32, torch.bfloat16),
}


def rows_to_run(variants: list[str], softs: list[float], fp64_row: bool) -> dict:
    """Table row label -> (attention, config knobs, holo in float64)."""
    rows = {}
    for variant in variants:
        rows[variant] = (variant, {}, False)
        if variant == "holo":
            rows.update({f"holo soft={s:g}": ("holo", {"holo_soft": s}, False) for s in softs if s != SOFT})
            if fp64_row:
                rows["holo fp64 math"] = ("holo", {}, True)
    return rows


def measure(variant: str, knobs: dict, fp64: bool, precisions: list[str], inputs: dict, device: str,
            seed: int) -> dict:
    """Relative errors of logits and q_proj gradients of `variant` in each precision against its float64 run."""
    model = build(variant, seed, **knobs)
    ref_logits, ref_grad = logits_and_grad(model, inputs, "cpu", None)
    rows = {}
    for name in precisions:
        dtype, autocast = PRECISIONS[name]
        run = build(variant, seed, **knobs).to(device, dtype)
        start = time.perf_counter()
        with holo_fp64_math() if fp64 else contextlib.nullcontext():
            got_logits, got_grad = logits_and_grad(run, inputs, device, autocast)
        rows[name] = {"logits": rel(got_logits, ref_logits), "q_proj_grad": rel(got_grad, ref_grad),
                      "seconds": time.perf_counter() - start}
    return rows


def table(results: dict) -> str:
    """Markdown table: one row per variant, logits / gradient error per precision."""
    precisions = list(next(iter(results.values())))
    head = "| attention | " + " | ".join(f"{p} logits | {p} q_proj grad" for p in precisions) + " |"
    lines = [head, "|---" * (1 + 2 * len(precisions)) + "|"]
    for variant, rows in results.items():
        cells = [f"{rows[p]['logits']:.2e} | {rows[p]['q_proj_grad']:.2e}" for p in precisions]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for bf16_accuracy.json")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--t", type=int, default=777, help="tokens per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--holo-soft", nargs="*", type=float, default=[0.3, 0.5],
                   help=f"extra holo rows with these config.holo_soft floors (default floor: {SOFT})")
    p.add_argument("--no-fp64-row", action="store_true", help="leave out the 'holo fp64 math' row")
    p.add_argument("--bf16", nargs="+", default=["cast", "autocast"], choices=["cast", "autocast"],
                   help="bf16 as weights cast to bf16 and/or fp32 weights under torch.autocast")
    p.add_argument("--interpret", action="store_true",
                   help="on CPU, run holo/performer's Triton kernels under TRITON_INTERPRET=1 (use a small --t)")
    args = p.parse_args(argv)
    precisions = ["fp32"] + [{"cast": "bf16", "autocast": "bf16_autocast"}[b] for b in args.bf16]
    inputs = batch(args.t, args.seed)
    region = kernels_on_cpu() if args.interpret else contextlib.nullcontext()
    results = {}
    with region:
        for label, (variant, knobs, fp64) in rows_to_run(args.variants, args.holo_soft, not args.no_fp64_row).items():
            results[label] = measure(variant, knobs, fp64, precisions, inputs, args.device, args.seed)
    print(table(results), flush=True)
    env = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
           "t": args.t, "seed": args.seed, "interpret": args.interpret, "config": CONFIG}
    write_text_atomic(Path(args.out) / "bf16_accuracy.json", json.dumps({"env": env, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
