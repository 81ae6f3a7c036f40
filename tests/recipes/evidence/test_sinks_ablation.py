"""recipes/evidence/sinks_ablation.py on CPU at toy size: a window covering the input is full attention, a
shorter one alone loses more than it does with its sinks."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "recipes" / "evidence" / "sinks_ablation.py"


def _run(out: Path, *args: str) -> dict:
    spec = importlib.util.spec_from_file_location("sinks_ablation", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--out", str(out), "--windows", "2", "--seq-len", "96", *args])
    return json.loads((out / "sinks.json").read_text())["perplexity"]


def test_window_covering_the_input_is_full_attention(tmp_path):
    ppl = _run(tmp_path, "--window", "96")
    full = ppl.pop("full attention (sdpa)")
    assert len(ppl) == 2 and all(abs(v / full - 1) < 1e-4 for v in ppl.values()), (full, ppl)


def test_sinks_recover_what_a_short_window_loses(tmp_path):
    ppl = _run(tmp_path, "--window", "16")
    full, alone, sinks = ppl["full attention (sdpa)"], ppl["window 16 alone"], ppl["window 16 + 4 sinks"]
    assert full < sinks < alone and (tmp_path / "sinks.md").is_file(), ppl
