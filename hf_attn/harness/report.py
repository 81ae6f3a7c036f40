"""`hf-attn report RUNS...`: one report.md with plots and the GO/NO-GO verdict per variant (M6).

The rule, a pure function below (`verdict`), compared within one task, corpus,
starting point (scratch or the same pretrained model) and number of training steps against the `sdpa`
baseline without wrapper (a 100-step sweep point is not judged against a 400-step baseline):

    GO  iff  quality within +5% of the baseline  AND  ( peak memory >= 20% lower at the same seq_len
                                                       OR >= 2x the baseline's seq_len at no more memory )

Quality is the task's held-out metric: bits per character (char-LM), perplexity (token LM), both lower is
better; copy accuracy (higher is better), where "within 5%" means at least 95% of the baseline's.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..train.rundir import MetricsCsv, find_runs, summarize
from ..utils import write_text_atomic

QUALITY_TOLERANCE = 0.05
MEMORY_SAVING = 0.20
CONTEXT_FACTOR = 2.0
RULE = (
    "GO if the variant's held-out quality is within +5% of the sdpa baseline's (bpc / perplexity at most 1.05x, "
    "copy accuracy at least 0.95x) AND either its peak memory is at least 20% lower at the same seq_len, or it "
    "trains at >= 2x the baseline's seq_len using no more peak memory than the baseline (quality then compared "
    "with the baseline at its own seq_len). Otherwise NO-GO. Compared only with a baseline of the same task, data, "
    "starting point and number of training steps."
)


# Memory figures comparable across variants; the CPU's process max RSS (`cpu_max_rss`) is not.
COMPARABLE_MEMORY = ("cuda_max_allocated",)
MEMORY_NOT_JUDGED = ("memory: not judged on CPU (the process's max RSS counts Python, data and allocator caches, "
                     "so it is not comparable across variants; run on a GPU to judge memory)")


@dataclass(frozen=True)
class Point:
    """One finished run reduced to what the rule needs."""

    seq_len: int
    quality: float
    peak_mem: float
    memory_comparable: bool = True  # False for CPU runs: the rule then judges quality only


@dataclass(frozen=True)
class Verdict:
    """GO / NO-GO (None: no baseline to judge against) and the reason in words."""

    go: bool | None  # None: nothing to compare with
    reason: str

    @property
    def label(self) -> str:
        """`GO`, `NO-GO` or `n/a`."""
        return "n/a" if self.go is None else ("GO" if self.go else "NO-GO")


def quality_ok(variant: float, base: float, higher_is_better: bool, tol: float = QUALITY_TOLERANCE) -> bool:
    """True when `variant` is within `tol` (relative) of `base` in the metric's good direction."""
    return variant >= base * (1 - tol) if higher_is_better else variant <= base * (1 + tol)


def verdict(baseline: list[Point], variant: list[Point], higher_is_better: bool = False,
            tol: float = QUALITY_TOLERANCE, saving: float = MEMORY_SAVING, factor: float = CONTEXT_FACTOR) -> Verdict:
    """The GO/NO-GO rule on finished runs of the baseline and of one variant (pure: numbers in, verdict out).

    Memory enters only where both runs' figures are comparable; elsewhere a variant within the quality
    tolerance is left undecided (`go=None`) rather than judged on a figure that does not mean memory.
    """
    if not baseline or not variant:
        return Verdict(None, "no baseline run" if not baseline else "no variant run")
    base = {p.seq_len: p for p in baseline}
    reasons, undecided = [], False
    for v in sorted(variant, key=lambda p: p.seq_len):
        b = base.get(v.seq_len)
        if b is None:
            continue
        q = quality_ok(v.quality, b.quality, higher_is_better, tol)
        detail = f"T={v.seq_len}: quality {v.quality:.4g} vs {b.quality:.4g}" + ("" if q else " (quality outside tolerance)")
        if not (v.memory_comparable and b.memory_comparable):
            undecided |= q
            reasons.append(f"{detail}; {MEMORY_NOT_JUDGED}")
            continue
        m = v.peak_mem <= (1 - saving) * b.peak_mem
        if q and m:
            return Verdict(True, f"{detail}, memory {v.peak_mem / b.peak_mem:.2f}x (>= {saving:.0%} less memory, "
                                 f"quality within {tol:.0%})")
        reasons.append(f"{detail}, memory {v.peak_mem / b.peak_mem:.2f}x" + ("" if m else " (memory saving too small)"))
    for b in sorted((p for p in baseline if p.memory_comparable), key=lambda p: p.seq_len):
        for v in (p for p in variant if p.memory_comparable):
            if v.seq_len >= factor * b.seq_len and v.peak_mem <= b.peak_mem and quality_ok(v.quality, b.quality, higher_is_better, tol):
                return Verdict(True, f"T={v.seq_len} in {v.peak_mem:.0f} MB <= baseline T={b.seq_len} in "
                                     f"{b.peak_mem:.0f} MB, quality {v.quality:.4g} vs {b.quality:.4g}")
    if not reasons:
        return Verdict(None, "no seq_len in common with the baseline and no 2x-context match")
    return Verdict(None if undecided else False, "; ".join(reasons))


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def group_key(s: dict[str, Any]) -> tuple:
    """Runs compare only within one task, corpus and starting point: this is that key."""
    return (s["task"], s["data"], s["pretrained"])


def verdict_key(s: dict[str, Any]) -> tuple:
    """Runs judged against each other: one task group trained for the same number of steps."""
    return (*group_key(s), int(s["steps"]))


def verdicts(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task group, steps, variant) with its points and verdict against that group's sdpa baseline."""
    groups: dict[tuple, dict[str, list[Point]]] = defaultdict(lambda: defaultdict(list))
    higher: dict[tuple, bool] = {}
    for s in summaries:
        if not (s["finished"] and _finite(s["quality"]) and _finite(s["peak_mem_mb"])):
            continue
        groups[verdict_key(s)][s["variant"]].append(Point(int(s["seq_len"]), float(s["quality"]), float(s["peak_mem_mb"]),
                                                          s["memory_kind"] in COMPARABLE_MEMORY))
        higher[verdict_key(s)] = s["quality_metric"] == "eval_acc"
    rows = []
    for key, variants in groups.items():
        for name, points in sorted(variants.items()):
            if name == "sdpa":
                continue
            v = verdict(variants.get("sdpa", []), points, higher[key])
            rows.append({"task": key[0], "data": key[1], "pretrained": key[2], "steps": key[3], "variant": name,
                         "verdict": v})
    return rows


def _save(fig, out: Path, name: str, title: str) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return title, name


def _line_figure(series, out: Path, name: str, caption: str, *, xlabel: str, ylabel: str, title: str,
                 style: str = "o-", figsize=(6, 4), legend: dict | None = None, **axes) -> tuple[str, str]:
    """One-axis figure of `(xs, ys, label)` series, saved next to report.md; returns (caption, file)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    for xs, ys, label in series:
        ax.plot(xs, ys, style, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title[:110], **axes)
    ax.title.set_fontsize(8)
    ax.legend(**(legend or {"fontsize": 7}))
    return _save(fig, out, name, caption)


def _plots(summaries, runs, out: Path) -> list[tuple[str, str]]:
    """Write the figures next to report.md; returns (title, file) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    by_group = defaultdict(list)
    for s, r in zip(summaries, runs):
        by_group[group_key(s)].append((s, r))

    for i, (key, items) in enumerate(sorted(by_group.items(), key=lambda kv: str(kv[0]))):
        series = []
        for s, r in items:
            rows = [m for m in r.metrics if m.get("loss") is not None]
            series.append(([m["step"] for m in rows], [m["loss"] for m in rows], f"{s['variant']} T={s['seq_len']}"))
        figs.append(_line_figure(
            series, out, f"loss_{i}_{key[0]}.png", f"Loss curves, {key[0]} ({key[1]})", xlabel="step",
            ylabel="training loss (nats/token)", title=f"{key[0]}: {key[1]}", style="-", figsize=(7, 4),
            legend={"fontsize": 6, "ncol": 2}, yscale="log"))

        by_variant = defaultdict(list)
        for s, _ in items:
            if s["finished"] and _finite(s["tokens_per_s"]):
                by_variant[s["variant"]].append(s)
        if any(len({s["seq_len"] for s in v}) > 1 for v in by_variant.values()):
            fig, axes = plt.subplots(1, 2, figsize=(10, 4))
            for variant, ss in sorted(by_variant.items()):
                ss = sorted(ss, key=lambda s: s["seq_len"])
                axes[0].plot([s["seq_len"] for s in ss], [s["tokens_per_s"] for s in ss], "o-", label=variant)
                axes[1].plot([s["seq_len"] for s in ss], [s["peak_mem_mb"] for s in ss], "o-", label=variant)
            axes[0].set(xlabel="seq_len", ylabel="tokens/s (median)", xscale="log")
            axes[1].set(xlabel="seq_len", ylabel=f"peak memory MB ({items[0][0]['memory_kind']})", xscale="log")
            axes[0].legend(fontsize=6)
            fig.suptitle(f"{key[0]}: {key[1]}"[:110], fontsize=8)
            name = f"scaling_{i}_{key[0]}.png"
            figs.append(_save(fig, out, name, f"Tokens/s and peak memory vs seq_len, {key[0]} ({key[1]})"))

        ranked = [s for s, _ in items if s["rank"] is not None and s["finished"] and _finite(s["quality"])]
        if len({s["rank"] for s in ranked}) > 1:
            by_len = defaultdict(list)
            for s in ranked:
                by_len[s["seq_len"]].append(s)
            series = []
            for t, ss in sorted(by_len.items()):
                ss = sorted(ss, key=lambda s: s["rank"])
                series.append(([s["rank"] for s in ss], [s["quality"] for s in ss], f"T={t}"))
            figs.append(_line_figure(
                series, out, f"rank_{i}_{key[0]}.png", f"Quality vs rank, {key[0]} ({key[1]})",
                xlabel="wrapper rank", ylabel=ranked[0]["quality_metric"], title=f"{key[0]}: {key[1]}"))

    for j, (s, r) in enumerate(zip(summaries, runs)):
        table = MetricsCsv.load(r.path / "pruning.csv") if (r.path / "pruning.csv").is_file() else []
        if not table:
            continue
        series = []
        for order in dict.fromkeys(t["order"] for t in table):
            rows = [t for t in table if t["order"] == order]
            series.append(([t["heads_pruned"] for t in rows], [t["quality"] for t in rows], f"{order} entropy first"))
        figs.append(_line_figure(
            series, out, f"pruning_{j}.png", f"Pruning curve, {s['run']} ({s['data']})",
            xlabel="heads pruned", ylabel=table[0]["quality_metric"], title=f"{s['run']}: {s['data']}"))
    return figs


def _fmt(x, spec=".4g") -> str:
    return "" if not _finite(x) else format(x, spec)


def build_report(paths: list[str | Path], out: str | Path, command: str = "") -> Path:
    """Read every run under `paths`, write `<out>/report.md` and its plots; returns the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs(paths)
    summaries = [summarize(r) for r in runs]
    figs = _plots(summaries, runs, out)
    lines = ["# hf-attn training report", ""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    lines += ["## GO/NO-GO", "", f"Rule: {RULE}", ""]
    rows = verdicts(summaries)
    if rows:
        lines += ["| task | data | start | steps | variant | verdict | why |", "|---|---|---|---|---|---|---|"]
    else:
        lines.append("No verdict: it needs finished runs (final.json) of a variant and of its sdpa baseline on the same "
                     "task and data; unfinished runs are listed below with their last evaluation only.")
    for v in rows:
        start = "pretrained" if v["pretrained"] else "scratch"
        lines.append(f"| {v['task']} | {v['data']} | {start} | {v['steps']} | {v['variant']} | **{v['verdict'].label}** "
                     f"| {v['verdict'].reason} |")
    lines += ["", "## Runs", "",
              "| run | task | variant | T | steps | eval loss | quality | tokens/s | peak MB | trainable params | device |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        quality = f"{s['quality_metric'].removeprefix('eval_')} {_fmt(s['quality'])}"
        lines.append(f"| {s['run']} | {s['task']} | {s['variant']} | {s['seq_len']} | {s['steps']}{'' if s['finished'] else ' (unfinished)'} "
                     f"| {_fmt(s['eval_loss'])} | {quality} | {_fmt(s['tokens_per_s'], '.0f')} | {_fmt(s['peak_mem_mb'], '.0f')} "
                     f"| {s['params_trainable'] or ''} | {s['device']} |")
    data = sorted({s["data"] for s in summaries})
    lines += ["", "Data: " + "; ".join(data) + ".", "",
              "Quality: bpc = bits per character (UTF-8 byte) on the held-out split; ppl = token perplexity; "
              "acc = copy-task token accuracy. tokens/s: median over logged windows after the first. Peak memory: "
              "CUDA allocator peak (cpu runs: process max RSS, not comparable across variants, so the verdict leaves "
              "memory out of CPU runs).", ""]
    for r in runs:
        if (r.path / "pruning.md").is_file():
            lines += ["## Head pruning", "", (r.path / "pruning.md").read_text(), ""]
    if figs:
        lines += ["## Figures", ""]
        for title, name in figs:
            lines += [f"### {title}", "", f"![{title}]({name})", ""]
    report = out / "report.md"
    write_text_atomic(report, "\n".join(lines))
    return report
