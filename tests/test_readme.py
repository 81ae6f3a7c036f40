"""The README speaks for the code: its first snippet runs as written, its variants table is the registry's."""
import contextlib
import io
import re
from pathlib import Path

import hf_attn

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def shipped_variants() -> list[str]:
    """The variants hf-attn itself registers (tests may register toy ones next to them)."""
    return [n for n, v in hf_attn.list_variants().items() if v.function.__module__.startswith("hf_attn.attention.")]


def test_first_python_snippet_runs_as_written():
    """Loads the offline SmolLM2 (the cached fp32 copy), switches attention twice, prints the variants."""
    snippet = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["model"].config._attn_implementation == "holo"
    printed = out.getvalue()
    assert "'holo'" in printed and "O(T·D²)" in printed and "<function" not in printed


def test_variants_table_is_the_registry_text():
    """Every row of the README's variants table is `Variant.markdown_row()` (`hf-attn variants --markdown`)."""
    section = README.split("## Variants", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): line for line in section.splitlines() if (m := re.match(r"\| `([^`]+)` \|", line))}
    assert sorted(rows) == sorted(shipped_variants())
    for name, line in rows.items():
        assert line == hf_attn.get_variant(name).markdown_row(), name


def test_holo_complexity_matches_its_implementation():
    """holo's DFT is a real (D x D+2) matmul, so time is O(T·D²), not an FFT's O(T·D·log D)."""
    from hf_attn.attention.holo.math import dft_matrices

    fwd, inv = dft_matrices(64, "cpu")
    assert fwd.shape == (64, 66) and inv.shape == (66, 64)
    assert hf_attn.get_variant("holo").complexity.startswith("O(T·D²) time")
