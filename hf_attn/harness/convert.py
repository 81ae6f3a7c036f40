"""`hf-attn convert`: linearize a pretrained softmax model (LoLCATs' two stages) and report what it kept.

Stage 1 (`RUN/transfer/`, `train.objective: transfer`) trains the variant's learnable parts to reproduce
softmax attention layer by layer; stage 2 (`RUN/recover/`, `train.objective: distill`) trains a LoRA that
is merged at the end. Both are ordinary trainer runs (resume, metrics, checkpoints, final/). The converted
model is copied to `RUN/final/` with its evaluation, and `RUN/report.md` compares the teacher (sdpa), the
converted model, the window-only ablation and the unconverted swap. See docs/conversion.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from .. import adapters
from ..attention.window import DEFAULT_SINKS
from ..assets import AUSTEN_PREPARE, CORPUS_NAME, austen_text, token_windows, wiki_text
from ..evaluate import perplexity
from ..utils import HfAttnError, MissingDependencyError, atomic_dir, set_config, write_text_atomic
from .decode import decode_speed
from .passkey import greedy_answer, passkey_accuracy
from .report import QUALITY_TOLERANCE, MEMORY_SAVING, Verdict

MIN_VARIANT_SHARE = 0.5
WINDOW_KEY = "hf_attn_window"
SINKS_KEY = "hf_attn_window_sinks"


def conversion_wrapper(variant: str) -> adapters.WrapperConfig | None:
    """The wrapper holding `variant`'s learnable parts, trained by stage 1 (None: the variant has none).

    performer: learned feature maps; holo: learned q/k maps into the binding space (both `LinearizeConfig`, which
    also learns the per-head window share when a window is set); gauge: its learned frames and variances.
    """
    if variant in ("performer", "holo"):
        return adapters.LinearizeConfig(variant=variant)
    return adapters.GaugeConfig() if variant == "gauge" else None


def window_only(model: torch.nn.Module) -> torch.nn.Module:
    """The window-only ablation: `model` with the variant's share zeroed, so only the softmax window attends."""
    return adapters.set_window_mix(model, 0.0)


@dataclass
class ConvertSettings:
    """What `hf-attn convert` runs; every field is a command-line option."""

    model: str = "smollm2"
    to: str = "performer"
    window: int = 0
    sinks: int = DEFAULT_SINKS
    transfer_steps: int = 200
    recover_steps: int = 400
    seq_len: int = 512
    batch_size: int = 8
    lora_rank: int = 8
    lr: float = 1e-2  # LoLCATs' stage-1 rate; at 1e-3 the maps barely move (recipes/evidence/stage_lr.py)
    recover_lr: float = 1e-4
    out: str = "runs/convert"
    device: str = "auto"
    eval_windows: int = 16
    passkey_lengths: tuple[int, ...] = (512, 1024, 2048, 4096)
    passkey_samples: int = 50
    decode_context: int = 16384
    decode_steps: int = 32
    command: str = ""

    def attention_config(self) -> dict[str, Any]:
        """The model-config keys the variant reads (the window and its sinks), as a recipe's
        `model.attention_config`."""
        return {WINDOW_KEY: self.window, SINKS_KEY: self.sinks} if self.window else {}


def _stage(s: ConvertSettings, name: str, steps: int, model: dict[str, Any], objective: str,
           lr: float) -> dict[str, Any]:
    """One stage's recipe (the same schema as recipes/convert/*.yaml)."""
    return {
        "name": f"convert-{name}", "task": "token", "seed": 0, "out_dir": str(Path(s.out) / name),
        "model": {"attention": s.to, "attention_config": s.attention_config(), **model},
        "data": {"seq_len": s.seq_len, "batch_size": s.batch_size, "corpus": "wiki", "eval_batches": 2},
        "optim": {"lr": lr, "weight_decay": 0.0, "warmup_steps": min(20, steps // 10), "schedule": "cosine"},
        "train": {"steps": steps, "objective": objective, "log_every": max(1, min(10, steps // 5)),
                  "eval_every": steps, "diag_every": steps, "diag_tokens": min(64, s.seq_len)},
    }


def stage_recipes(s: ConvertSettings) -> dict[str, dict[str, Any]]:
    """`{"transfer": recipe, "recover": recipe}`; transfer is left out when the variant has nothing to learn."""
    wrapper = conversion_wrapper(s.to)
    recipes = {}
    if wrapper is not None and s.transfer_steps:
        spec = {"type": wrapper.wrapper_type, **{k: v for k, v in dataclasses.asdict(wrapper).items()}}
        recipes["transfer"] = _stage(s, "transfer", s.transfer_steps, {"model_path": s.model, "wrapper": spec},
                                     "transfer", s.lr)
    start = str(Path(s.out) / "transfer" / "final") if recipes else s.model
    recipes["recover"] = _stage(s, "recover", s.recover_steps, {"model_path": start, "lora_rank": s.lora_rank},
                                "distill", s.recover_lr)
    return recipes


def run_stage(recipe: dict[str, Any]) -> Path:
    """Train one stage, resuming an interrupted one and skipping a finished one; returns its run folder."""
    from ..train import TrainConfig, train
    from ..train.checkpoint import latest_checkpoint

    cfg = TrainConfig.from_dict(recipe)
    if not (cfg.run_dir / "final.json").is_file():
        train(cfg, resume=latest_checkpoint(cfg.run_dir) is not None)
    return cfg.run_dir


# ---------------------------------------------------------------- evaluation


def load_model(path: str | Path, device: torch.device, attention: str | None = None, extra: dict | None = None):
    """A causal LM from `path` (or 'smollm2') in fp32 and eval mode, with `attention` and extra config keys set."""
    from transformers import AutoModelForCausalLM

    from ..registry import set_attention
    from ..train.models import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(str(path)), dtype=torch.float32)
    set_config(model, **(extra or {}))
    if attention:
        set_attention(model, attention)
    return model.to(device).eval()


def evaluate_model(model, tokenizer, s: ConvertSettings, device: torch.device) -> dict[str, Any]:
    """Held-out perplexities (wiki test split, Jane Austen), passkey accuracy per length, decode speed and cache."""
    n, t = s.eval_windows, s.seq_len
    out: dict[str, Any] = {"ppl_wiki": perplexity(model, token_windows(tokenizer, wiki_text("test"), n, t))}
    try:
        out["ppl_austen"] = perplexity(model, token_windows(tokenizer, austen_text(), n, t))
    except MissingDependencyError:
        out["ppl_austen"] = None
    out["passkey"] = {str(k): v for k, v in passkey_accuracy(greedy_answer(model, tokenizer), tokenizer,
                                                             s.passkey_lengths, s.passkey_samples).items()}
    out["decode_tokens_per_s"], out["decode_cache_mib"] = decode_speed(model, s.decode_context, s.decode_steps, device)
    return out


def variant_share(teacher: float, converted: float, window: float) -> float:
    """Share of the window-only model's perplexity gap to the teacher that the variant closes (1 = all of it)."""
    gap = window - teacher
    return (window - converted) / gap if gap > 0 else 0.0


def conversion_verdict(teacher: dict[str, float], converted: dict[str, float], ablation: dict[str, float] | None,
                       window: int, tol: float = QUALITY_TOLERANCE, saving: float = MEMORY_SAVING,
                       min_share: float = MIN_VARIANT_SHARE) -> Verdict:
    """GO/NO-GO of a conversion (pure): quality, decode-cache memory and, for window hybrids, the variant's share.

    GO iff the converted held-out perplexity is at most (1 + tol) x the teacher's AND its decode cache after the
    long context is at least `saving` smaller AND (window hybrids) the variant closes at least `min_share` of
    the window-only model's gap to the teacher (a hybrid can learn to rely on the window alone, arXiv
    2510.05901). A hybrid whose share is unmeasured is undecided, not GO.
    """
    q = converted["ppl_wiki"] <= (1 + tol) * teacher["ppl_wiki"]
    m = converted["decode_cache_mib"] <= (1 - saving) * teacher["decode_cache_mib"]
    reasons = [f"perplexity {converted['ppl_wiki']:.4g} vs teacher {teacher['ppl_wiki']:.4g}"
               + ("" if q else f" (more than {tol:.0%} worse)"),
               f"decode cache {converted['decode_cache_mib']:.3g} MiB vs {teacher['decode_cache_mib']:.3g} MiB"
               + ("" if m else f" (less than {saving:.0%} smaller)")]
    if not (q and m):
        return Verdict(False, "; ".join(reasons))
    if not window:
        return Verdict(True, "; ".join(reasons) + "; no window: the variant is the whole attention")
    if ablation is None:
        return Verdict(None, "; ".join(reasons) + "; the variant's share is not measured (window-only ablation "
                       "unavailable), so the window alone may be doing the work")
    share = variant_share(teacher["ppl_wiki"], converted["ppl_wiki"], ablation["ppl_wiki"])
    ok = share >= min_share
    reasons.append(f"variant's share {share:.2f} (window-only perplexity {ablation['ppl_wiki']:.4g})"
                   + ("" if ok else f" (below {min_share}: the window does the work)"))
    return Verdict(ok, "; ".join(reasons))


# ---------------------------------------------------------------- report


def hardware(device: torch.device) -> str:
    """The device a report's figures came from, in words (the GPU's name, or the CPU and its threads)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _cell(x: Any, spec: str = ".4g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def report_lines(s: ConvertSettings, rows: dict[str, dict | str], verdict: Verdict, device: torch.device) -> list[str]:
    """report.md: settings, command and hardware, the comparison table, passkey per length, the verdict."""
    lengths = [str(k) for k in s.passkey_lengths]
    lines = ["# hf-attn conversion report", "",
             f"`{s.model}` converted to `{s.to}`" + (f" with a {s.window}-token softmax window and {s.sinks} sink tokens"
                                                     if s.window else "")
             + f": {s.transfer_steps} attention-transfer steps, {s.recover_steps} LoRA distillation steps (rank "
             f"{s.lora_rank}), {s.batch_size} x {s.seq_len} tokens per step.", "",
             "Made with (every figure below, on " + hardware(device) + ", fp32):", "", "```", s.command or "hf-attn convert", "```", "",
             f"## GO/NO-GO: **{verdict.label}**", "", verdict.reason + ".", "",
             "Rule: GO iff the converted model's held-out perplexity is within +5% of the teacher's, its decode cache "
             f"after {s.decode_context} tokens of context is at least 20% smaller (for linear-time attention the memory "
             "saving is the decode cache: a constant-size state instead of keys and values per token), and, for a "
             "window hybrid, the variant itself closes at least half of the window-only model's gap to the teacher "
             "(hybrids can learn to rely on the window alone, arXiv 2510.05901).", "",
             "## Models", "",
             f"| model | ppl wiki (test) | ppl Austen | decode tokens/s @ {s.decode_context} | cache MiB | "
             + " | ".join(f"passkey {k}" for k in lengths) + " |",
             "|---|---|---|---|---|" + "---|" * len(lengths)]
    for name, r in rows.items():
        if isinstance(r, str):
            lines.append(f"| {name} | {r} |" + " |" * (3 + len(lengths)))
            continue
        lines.append(f"| {name} | {_cell(r['ppl_wiki'])} | {_cell(r['ppl_austen'])} | "
                     f"{_cell(r['decode_tokens_per_s'], '.1f')} | {_cell(r['decode_cache_mib'], '.3g')} | "
                     + " | ".join(_cell(r["passkey"].get(k), ".2f") for k in lengths) + " |")
    austen = "" if any(isinstance(r, dict) and r.get("ppl_austen") is not None for r in rows.values()) else \
        f" Austen: not available ({AUSTEN_PREPARE})."
    lines += ["", f"Perplexity: token-weighted over {s.eval_windows} windows of {s.seq_len} tokens of the {CORPUS_NAME} "
              "test split (never trained on) and of Jane Austen's novels (out of domain)." + austen,
              f"Passkey: a 5-digit number at a random depth in filler text, {s.passkey_samples} prompts per length, "
              "greedy answer; share of exact keys. Decode: greedy single-token steps after a random-token context; "
              "cache MiB is the bytes of the KV cache (teacher) or recurrent state (variants).", "",
              "Rows: teacher = the pretrained model with softmax attention (sdpa); converted = after both stages "
              "(RUN/final); window-only = the converted model with the variant's share zeroed; unconverted swap = the "
              "pretrained model with its attention switched, no training.", "",
              "![training curves](convert.png)", ""]
    return lines


def plot_stages(run: Path, stages: list[str]) -> None:
    """convert.png: each stage's training loss over its steps, one panel per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..train.rundir import MetricsCsv

    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = [r for r in MetricsCsv.load(run / stage / "metrics.csv") if r.get("loss") is not None]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], "-")
        ax.set(xlabel="step", ylabel="summed layer MSE" if stage == "transfer" else "KL(teacher || student)",
               title=stage, yscale="log")
    fig.tight_layout()
    fig.savefig(run / "convert.png", dpi=110)
    plt.close(fig)


def export_final(run: Path, evaluation: dict[str, Any]) -> Path:
    """`RUN/final/`: the recovered checkpoint with the conversion's evaluation in eval_results.json."""
    src = run / "recover" / "final"
    with atomic_dir(run / "final", drop=("*",)) as tmp:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        results = json.loads((src / "eval_results.json").read_text())
        results["conversion"] = evaluation
        write_text_atomic(tmp / "eval_results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    return run / "final"


@contextlib.contextmanager
def training_device(device: torch.device) -> Iterator[None]:
    """Train on the CPU when asked to (accelerate reads ACCELERATE_USE_CPU), whatever GPUs the machine has."""
    old = os.environ.get("ACCELERATE_USE_CPU")
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = old


def convert(s: ConvertSettings) -> Path:
    """Run both stages, evaluate the four models, write RUN/final, RUN/report.md, report.json and convert.png."""
    from transformers import AutoTokenizer

    from ..train.models import resolve_model_path

    device = torch.device(s.device if s.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    run = Path(s.out)
    recipes = stage_recipes(s)
    with training_device(device):
        for recipe in recipes.values():
            run_stage(recipe)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(s.model))
    torch.manual_seed(0)
    rows: dict[str, dict | str] = {}
    teacher = load_model(s.model, device, "sdpa")
    rows["teacher (sdpa)"] = evaluate_model(teacher, tokenizer, s, device)
    del teacher
    converted = load_model(run / "recover" / "final", device)
    rows["converted"] = evaluate_model(converted, tokenizer, s, device)
    if not s.window:
        rows["window-only ablation"] = "not applicable: no window (the variant is the whole attention)"
    else:
        try:
            rows["window-only ablation"] = evaluate_model(window_only(converted), tokenizer, s, device)
        except HfAttnError as e:
            rows["window-only ablation"] = f"not available: {e}"
    del converted
    swap = load_model(s.model, device, s.to, s.attention_config())
    rows["unconverted swap"] = evaluate_model(swap, tokenizer, s, device)
    del swap
    ablation = rows["window-only ablation"]
    v = conversion_verdict(rows["teacher (sdpa)"], rows["converted"], ablation if isinstance(ablation, dict) else None,
                           s.window)
    settings = {k: list(v_) if isinstance(v_, tuple) else v_ for k, v_ in dataclasses.asdict(s).items()}
    evaluation = {"verdict": v.label, "why": v.reason, "hardware": hardware(device), "command": s.command,
                  "models": rows}
    export_final(run, evaluation)
    plot_stages(run, list(recipes))
    write_text_atomic(run / "report.json", json.dumps({"settings": settings, **evaluation}, indent=2) + "\n")
    write_text_atomic(run / "report.md", "\n".join(report_lines(s, rows, v, device)))
    return run
