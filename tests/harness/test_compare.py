"""`hf-attn compare`'s output files, from constructed rows (no model needed)."""
import json

from hf_attn.harness.compare import Row, write_results

META = dict(model="SmolLM2-135M", corpus="Wikipedia summaries, test split", tokens=2048, windows="4 x 512",
            device="cpu", dtype="fp32", torch="2.x")
ROWS = [Row("sdpa", 11.71, 368.0, 368.0, 2048), Row("eager", 11.71, 299.0, 443.0, 2048),
        Row("holo", 102649.26, 322.0, 351.0, 2048)]


def test_summary_is_a_readable_markdown_document(tmp_path):
    write_results(ROWS, tmp_path, META)
    text = (tmp_path / "summary.md").read_text()
    lines = text.splitlines()
    assert lines[0] == "# hf-attn compare: SmolLM2-135M"
    assert not any(line.lstrip().startswith("{") for line in lines), "no raw JSON in the summary"
    assert "| implementation | perplexity | tokens/s | peak MiB |" in text
    assert "| `holo` | 102,649.26 | 322 | 351 |" in text
    assert "## What the numbers mean" in text and "**perplexity**" in text and "**peak MiB**: growth of" in text
    assert "holo: perplexity 102,649.3 vs 11.7" in text  # the per-variant explanation, as a bullet
    assert json.loads((tmp_path / "results.json").read_text())["meta"] == META  # the raw settings stay in the JSON


def test_summary_says_what_gpu_memory_means(tmp_path):
    write_results(ROWS, tmp_path, {**META, "device": "cuda"})
    assert "**peak MiB**: CUDA allocator peak" in (tmp_path / "summary.md").read_text()
