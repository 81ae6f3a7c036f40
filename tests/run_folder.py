"""A training-run folder as the recipes write it (config.yaml, metrics.csv, eval/diagnostics JSON, a plot,
checkpoint sub-folders), for the model card, push and CLI tests."""
import json
from pathlib import Path

import torch
import yaml

import hf_attn

RUN_CONFIG = {
    "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "attn_implementation": "holo",
    "data": {"dataset": "wikimedia/wikipedia", "seq_len": 256},
    "train": {"lr": 3.0e-4, "steps": 30},
}
EVAL = {"perplexity": {"wiki": 17.25, "austen": 36.5}, "tokens_per_s": 1234.5}
DIAGNOSTICS = {"entanglement_entropy": [0.5, 1.5, 1.0], "row_std": 0.12}


def make_run_dir(root: Path, model: torch.nn.Module) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(RUN_CONFIG))
    rows = ["step,loss,eval_loss,tokens_per_s"] + [f"{s},{4.0 - 0.1 * s},{4.1 - 0.09 * s},1000" for s in (10, 20, 30)]
    (root / "metrics.csv").write_text("\n".join(rows) + "\n")
    (root / "eval.json").write_text(json.dumps(EVAL))
    (root / "diagnostics.json").write_text(json.dumps(DIAGNOSTICS))
    (root / "plots").mkdir(exist_ok=True)
    (root / "plots" / "entropy.png").write_bytes(b"\x89PNG\r\n\x1a\n fake png")
    hf_attn.save_pretrained(model, root / "checkpoint-10")  # an older checkpoint: must not be chosen
    hf_attn.save_pretrained(model, root / "final")
    (root / "final" / "optimizer.pt").write_bytes(b"resume state, never uploaded")
    return root
