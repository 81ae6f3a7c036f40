"""Model cards for hf-attn checkpoints, rendered from `model_cards/hf_attn_model.md`.

The card reads what the checkpoint and its run folder recorded, and tolerates absence of any of it:
- checkpoint: `config.json` (hf-attn fields) or, for a wrapper-only folder, `hf_attn_wrapper.json`, and the
  evaluation files below when the run folder has none (`hf_attn.train` writes `final/eval_results.json`);
- run folder: `config.yaml` (training config), `metrics.csv` (one row per logged step: `step`, `loss`, ...),
  `eval.json` / `eval_results.json` / `results.json` (evaluation), `diagnostics.json`, and `*.png` plots
  (top level or `plots/`). A record or plot that is a link leading out of the run folder is ignored: the
  card and its plots are published, and only the run's own files belong there.
"""
from __future__ import annotations

import csv
import importlib.resources
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .utils import HfAttnError, regular_file_inside, write_text_atomic

RUN_CONFIGS = ("config.yaml", "config.yml")
EVAL_FILES = ("eval.json", "eval_results.json", "results.json")
DIAGNOSTICS_FILES = ("diagnostics.json",)
# Base models whose licence hf-attn knows (the offline assets of this project); keyed by id and folder name.
KNOWN_BASES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0",
    "HuggingFaceTB/SmolLM2-135M": "apache-2.0",
    "Qwen/Qwen2.5-Coder-0.5B-Instruct": "apache-2.0",
}
FOLDER_NAMES = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


@dataclass
class RunRecord:
    """What a training run left next to its checkpoint (every part optional)."""

    config: dict | None = None
    metrics: list[dict[str, float]] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` in `folder`; a link leaving the folder is not the run's record (never published)."""
    return next((folder / n for n in names if regular_file_inside(folder / n, folder)), None)


def _read_metrics(path: Path) -> list[dict[str, float]]:
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    continue
            rows.append(parsed)
    return rows


def read_run(run_dir: str | Path | None) -> RunRecord:
    """Read the run folder's records; a missing folder or file just leaves that part empty."""
    record = RunRecord()
    if run_dir is None or not Path(run_dir).is_dir():
        return record
    run_dir = Path(run_dir)
    if (path := _first(run_dir, RUN_CONFIGS)) is not None:
        record.config = yaml.safe_load(path.read_text()) or {}
    if (path := _first(run_dir, ("metrics.csv",))) is not None:
        record.metrics = _read_metrics(path)
    if (path := _first(run_dir, EVAL_FILES)) is not None:
        record.evaluation = json.loads(path.read_text())
    if (path := _first(run_dir, DIAGNOSTICS_FILES)) is not None:
        record.diagnostics = json.loads(path.read_text())
    plots = [*run_dir.glob("*.png"), *run_dir.glob("plots/*.png")]
    record.plots = sorted(p for p in plots if regular_file_inside(p, run_dir))
    return record


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Rows for a table: nested dicts become `a/b`, lists of numbers a mean/min/max summary."""
    if isinstance(data, dict):
        return [row for k, v in data.items() for row in _flatten(v, f"{prefix}/{k}" if prefix else str(k))]
    if isinstance(data, list) and data and all(isinstance(x, (int, float)) for x in data):
        return [(prefix, f"mean {_fmt(sum(data) / len(data))} (min {_fmt(min(data))}, max {_fmt(max(data))}, n {len(data)})")]
    return [(prefix, _fmt(data))]


def _find_key(data: Any, names: tuple[str, ...]) -> Any:
    """First value under any of `names`, searched depth-first through nested dicts."""
    if isinstance(data, dict):
        for name in names:
            if data.get(name) not in (None, ""):
                return data[name]
        for value in data.values():
            if (found := _find_key(value, names)) is not None:
                return found
    return None


def _hub_id(name: Any) -> str | None:
    """A Hub model id from a name or local path (known asset folders map to their id), else None."""
    if not isinstance(name, str) or not name:
        return None
    if name in KNOWN_BASES:
        return name
    if Path(name).name.lower() in FOLDER_NAMES:
        return FOLDER_NAMES[Path(name).name.lower()]
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists():
        return name
    return None


def training_rows(metrics: list[dict[str, float]]) -> list[tuple[str, str]]:
    """Model-card table rows from a run's metrics: the last step, each column's final value, the lowest of loss-like
    ones."""
    if not metrics:
        return []
    columns = [c for c in metrics[-1] if c != "step"]
    rows = [("last step", _fmt(int(metrics[-1]["step"])))] if "step" in metrics[-1] else []
    for column in columns:
        values = [r[column] for r in metrics if column in r and not math.isnan(r[column])]
        if not values:
            continue
        rows.append((f"final {column}", _fmt(values[-1])))
        if "loss" in column or "ppl" in column or "perplexity" in column:
            rows.append((f"lowest {column}", _fmt(min(values))))
    return rows


def plot_metrics(metrics: list[dict[str, float]], out: Path) -> Path | None:
    """Loss-like columns against step, as a PNG (None without a `step` column or a loss column)."""
    columns = [c for c in (metrics[0] if metrics else {}) if "loss" in c]
    if not metrics or "step" not in metrics[0] or not columns:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for column in columns:
        points = [(r["step"], r[column]) for r in metrics if column in r and not math.isnan(r[column])]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=column)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def template_path(name: str = "hf_attn_model.md") -> Path:
    """Path of a model-card template shipped in `hf_attn/model_cards`."""
    return Path(str(importlib.resources.files("hf_attn.model_cards") / name))


def _checkpoint_info(folder: Path) -> tuple[dict, dict | None, bool]:
    """`(config.json dict, wrapper dict, wrapper_only)` for a checkpoint or wrapper-only folder; a wrapper
    this installation lacks is an error here (the card could not describe it, nor could anyone load it)."""
    from hf_attn.adapters.base import CONFIG_NAME, SAVE_ID, read_wrapper_file, wrapper_spec

    if (folder / "config.json").is_file():
        source = folder / "config.json"
        config = json.loads(source.read_text())
        wrapper, wrapper_only = config.get("hf_attn_wrapper"), False
    elif (folder / CONFIG_NAME).is_file():
        source = folder / CONFIG_NAME
        wrapper, wrapper_only = read_wrapper_file(source), True
        config = {"hf_attn_version": wrapper.pop("hf_attn_version", None)}
        wrapper.pop(SAVE_ID, None)
    else:
        raise HfAttnError(f"{folder} holds neither config.json nor {CONFIG_NAME}: nothing to describe.")
    if wrapper is not None:
        kind = wrapper.get("wrapper_type") if isinstance(wrapper, dict) else None
        wrapper_spec(kind, source, config.get("hf_attn_version") or "unknown")
    return config, wrapper, wrapper_only


def _limits(variant: str | None, wrapper: dict | None, evaluation: bool, license_known: bool, extra: Any) -> list[str]:
    limits = ["Weights are safetensors only; loading needs `pip install hf-attn` (same or newer version)."]
    if variant:
        limits.append(
            f"`{variant}` replaces softmax attention, so outputs differ from the base model's even before any "
            "fine-tuning; judge it by the evaluation above, not by the base model's reputation."
        )
    if wrapper:
        frozen = wrapper.get("freeze_base", True)
        limits.append(
            f"The `{wrapper.get('wrapper_type')}` wrapper was trained "
            + ("on a frozen base model: only its own weights changed." if frozen else "together with the base weights.")
        )
    if not evaluation:
        limits.append("No evaluation was recorded with this checkpoint: its quality is unmeasured.")
    if not license_known:
        limits.append("The base model's licence was not recorded (metadata says `other`): check it before use.")
    if isinstance(extra, list):
        limits += [str(x) for x in extra]
    return limits


def _checkpoint_evaluation(folder: Path) -> dict[str, Any]:
    """The checkpoint's own evaluation file (a trained run's `final/eval_results.json`), or nothing."""
    path = _first(folder, EVAL_FILES)
    return json.loads(path.read_text()) if path is not None else {}


def render_card(
    folder: str | Path,
    repo_id: str,
    run: RunRecord | None = None,
    *,
    base_model: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
):
    """A `huggingface_hub.ModelCard` for the checkpoint in `folder`; plots are copied into `folder/plots`."""
    from huggingface_hub import ModelCard, ModelCardData

    from .registry import list_variants

    folder, run = Path(folder), run or RunRecord()
    config, wrapper, wrapper_only = _checkpoint_info(folder)
    variant = config.get("hf_attn_variant")
    base_model = base_model or _hub_id(_find_key(run.config, ("base_model", "model_name_or_path", "model", "model_path")))
    base_model = base_model or _hub_id(config.get("_name_or_path"))
    license = license or _find_key(run.config, ("license",)) or KNOWN_BASES.get(base_model or "")
    license_known = bool(license)
    found = _find_key(run.config, ("datasets", "dataset"))
    datasets = datasets or ([found] if isinstance(found, str) else list(found) if isinstance(found, list) else None)
    family = str(config.get("model_type", "")).removeprefix("hf_attn_")
    evaluation = run.evaluation or _checkpoint_evaluation(folder)
    tags = ["hf-attn", *(t for t in (variant, wrapper and wrapper.get("wrapper_type"), family) if t)]
    card_data = ModelCardData(
        library_name="transformers", base_model=base_model, license=license or "other", datasets=datasets,
        tags=tags, pipeline_tag=None if wrapper_only else "text-generation",
    )

    plots = []
    (folder / "plots").mkdir(exist_ok=True)
    for plot in run.plots:
        shutil.copy2(plot, folder / "plots" / plot.name)
        plots.append(f"plots/{plot.name}")
    if "plots/loss.png" not in plots and plot_metrics(run.metrics, folder / "plots" / "loss.png") is not None:
        plots.append("plots/loss.png")
    if not any((folder / "plots").iterdir()):
        (folder / "plots").rmdir()

    variant_info = None
    if variant and variant in list_variants():
        v = list_variants()[variant]
        variant_info = {"name": v.name, "summary": v.summary, "complexity": v.complexity, "needs": ", ".join(v.needs),
                        "knobs": v.config_keys, "settings": {k: config[k] for k in v.config_keys if k in config}}
    wrapper_doc = ""
    if wrapper:
        from .adapters import list_wrappers

        spec = list_wrappers()[wrapper["wrapper_type"]]  # _checkpoint_info refused unknown wrappers
        doc = (spec.config_cls.__doc__ or "").strip()
        wrapper_doc = "" if doc.startswith(spec.config_cls.__name__ + "(") else doc.split("\n\n")[0]
    is_seq2seq = any("ConditionalGeneration" in a or "Seq2Seq" in a for a in config.get("architectures") or [])
    attention = variant or ("as the base model (transformers built-in)")
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        title=repo_id.split("/")[-1],
        summary=(
            f"{'The wrapper weights of a' if wrapper_only else 'A'} {base_model or family or 'transformers'} model "
            f"with {'attention `' + variant + '`' if variant else 'its own attention'}"
            f"{' and the `' + wrapper['wrapper_type'] + '` wrapper' if wrapper else ''}, made with "
            "[hf-attn](https://pypi.org/project/hf-attn/)."
        ),
        repo_id=repo_id, variant=variant, attention=attention, wrapper=wrapper, wrapper_only=wrapper_only,
        wrapper_doc=wrapper_doc, wrapper_json=json.dumps(wrapper, indent=2) if wrapper else "",
        contents="wrapper weights only" if wrapper_only else "full checkpoint (base + wrapper weights)" if wrapper else "full checkpoint",
        hf_attn_version=config.get("hf_attn_version") or "unknown", model_type=config.get("model_type"),
        auto_class="AutoModelForSeq2SeqLM" if is_seq2seq else "AutoModelForCausalLM",
        variant_info=variant_info,
        training_config=yaml.safe_dump(run.config, sort_keys=False).strip() if run.config else "",
        eval_rows=_flatten(evaluation), training_rows=training_rows(run.metrics), n_steps=len(run.metrics),
        plots=plots, diagnostics_rows=_flatten(run.diagnostics),
        limits=_limits(variant, wrapper, bool(evaluation), license_known, _find_key(run.config, ("limits",))),
    )
    return card


def write_card(folder: str | Path, repo_id: str, run_dir: str | Path | None = None, **overrides) -> Path:
    """Render the card for `folder` (reading `run_dir`'s records) into `folder/README.md`."""
    card = render_card(folder, repo_id, read_run(run_dir), **overrides)
    path = Path(folder) / "README.md"
    write_text_atomic(path, str(card))
    return path
