"""Short recovery fine-tune of SmolLM2 wrapped with Prismatic (v2 on the MLPs or v3 on attention).

Logs loss and the routing metrics every step to `<out>/metrics.csv`, plots per-expert weight, concentration
and balance per step (`<out>/routing.png`), and says whether the router collapsed (`<out>/summary.json`).

    python recipes/prismatic_finetune.py --version v2 --steps 30 --out runs/prismatic_v2          # CPU
    python recipes/prismatic_finetune.py --version v3 --steps 30 --out runs/prismatic_v3
    python recipes/prismatic_finetune.py --model-path DIR --device cuda --dtype bfloat16 \\
        --steps 500 --seq-len 1024 --batch 8 --out runs/prismatic_v2_gpu                               # GPU

`summary.json` also reports the mask drift (v2): the share of the elements selected for perturbation at step 0
that are no longer selected at the end, mean and max over the wrapped weights. It is what tells whether
`mask_refresh_steps > 1` (reuse the selection between re-rankings) changes anything at a given learning rate.

Data: Wikipedia vital-article summaries (hf_attn.assets, train split), consecutive token windows;
held-out loss on the test split before (base), at step 0 (wrapped) and after the run.
A YAML file given with --config sets any of the flags (keys = flag names with underscores).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

import hf_attn
from hf_attn.adapters.prismatic import PrismaticConfig, routing_metrics
from hf_attn.assets import token_windows, wiki_text
from hf_attn.utils import atomic_path, write_text_atomic


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with any of the options below")
    p.add_argument("--version", default="v2", choices=["v2", "v3"])
    p.add_argument("--model-path", help="SmolLM2 folder (default: the cached offline copy)")
    p.add_argument("--num-experts", type=int, default=3)
    p.add_argument("--perturbation-scale", type=float, default=None, help="default: 0.8 (v2), 0.0 (v3: experts differ only in position encoding)")
    p.add_argument("--mask-refresh-steps", type=int, default=PrismaticConfig.mask_refresh_steps,
                   help="see PrismaticConfig.mask_refresh_steps")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-5, help="base weights")
    p.add_argument("--router-lr", type=float, default=1e-3)
    p.add_argument("--eval-windows", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/prismatic_finetune")
    args = p.parse_args(argv)
    if args.config:
        for key, value in (yaml.safe_load(Path(args.config).read_text()) or {}).items():
            if not hasattr(args, key):
                raise SystemExit(f"{args.config}: unknown option {key!r}")
            setattr(args, key, value)
    return args


def load_model(args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_attn.assets import smollm2_path

    path = args.model_path or smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype), attn_implementation="sdpa")
    return model.to(args.device), AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def eval_loss(model, windows: torch.Tensor, device) -> float:
    model.eval()
    losses = [model(input_ids=w[None].to(device), labels=w[None].to(device)).loss.item() for w in windows]
    return sum(losses) / len(losses)


def plot(rows: list[dict], k: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for i in range(k):
        a.plot(steps, [r[f"routing/expert_{i}_weight"] for r in rows], label=f"expert {i}")
    a.set_ylabel("mean routing weight"), a.legend(), a.set_ylim(0, 1)
    b.plot(steps, [r["routing/concentration"] for r in rows], label="concentration (max weight)")
    b.plot(steps, [r["routing/balance"] for r in rows], label="balance (entropy / ln K)")
    b.set_xlabel("step"), b.set_ylim(0, 1.05), b.legend()
    fig.suptitle("Prismatic routing per step (mean over wrapped modules)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


@torch.no_grad()
def selections(model, config: PrismaticConfig) -> dict[str, torch.Tensor]:
    """The perturbation selection (sign masks of expert 1's band) of every weight Prismatic perturbs."""
    from hf_attn.adapters.prismatic.layer import PrismaticBase
    from hf_attn.adapters.prismatic.perturb import sign_mask

    return {f"{name}.{pname}": sign_mask(p, config, pname, 1)
            for name, m in model.named_modules() if isinstance(m, PrismaticBase)
            for pname, p in m.base_layer.named_parameters() if p.dim() > 1}


def mask_drift(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    shares = [((before[n] != after[n]) & (before[n] != 0)).sum().item() / max(1, (before[n] != 0).sum().item())
              for n in before]
    return {"mean": sum(shares) / len(shares), "max": max(shares), "tensors": len(shares)} if shares else {}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    model, tok = load_model(args)
    train = token_windows(tok, wiki_text("train"), args.steps * args.batch, args.seq_len)
    test = token_windows(tok, wiki_text("test"), args.eval_windows, args.seq_len)
    base_loss = eval_loss(model, test, args.device)

    scale = args.perturbation_scale if args.perturbation_scale is not None else (0.8 if args.version == "v2" else 0.0)
    config = PrismaticConfig(version=args.version, num_experts=args.num_experts, perturbation_scale=scale,
                             freeze_base=False, collapse_steps=max(1, args.steps // 3),
                             mask_refresh_steps=args.mask_refresh_steps)
    hf_attn.wrap(model, config)
    start_loss = eval_loss(model, test, args.device)
    selected_at_start = selections(model, config) if scale else {}
    router = [p for n, p in model.named_parameters() if ".router." in n]
    rest = [p for n, p in model.named_parameters() if ".router." not in n and p.requires_grad]
    opt = torch.optim.AdamW([{"params": rest, "lr": args.lr}, {"params": router, "lr": args.router_lr}],
                            weight_decay=0.0)

    rows = []
    model.train()
    for step in tqdm(range(args.steps), desc=f"prismatic {args.version}"):
        batch = train[step * args.batch:(step + 1) * args.batch].to(args.device)
        t0 = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rest + router, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        metrics = {k: v for k, v in routing_metrics(model).items() if k.startswith("routing/")}
        rows.append({"step": step, "loss": loss.item(), "tokens_per_s": batch.numel() / seconds, **metrics})

    final_loss = eval_loss(model, test, args.device)
    drift = mask_drift(selected_at_start, selections(model, config)) if selected_at_start else {}
    with atomic_path(out / "metrics.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.num_experts, out / "routing.png")
    last = rows[-1]
    summary = {
        "version": args.version, "steps": args.steps, "seq_len": args.seq_len, "batch": args.batch,
        "config": config.to_dict(), "corpus": "Wikipedia vital-article summaries (train/test split by article)",
        "heldout_loss": {"base": base_loss, "wrapped_step0": start_loss, "final": final_loss},
        "heldout_ppl_final": math.exp(final_loss),
        "final_routing": {k: v for k, v in last.items() if k.startswith("routing/")},
        "collapsed": last["routing/collapsed_modules"] > 0,
        "max_concentration_seen": max(r["routing/concentration"] for r in rows),
        "mask_drift": drift,
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("heldout_loss", "final_routing", "collapsed", "mask_drift")}, indent=2))
    return summary


if __name__ == "__main__":
    main()
