"""Docs point users only at what they can open: every relative markdown link resolves to a file in the repo.

Run logs under `docs/results/**/runs/` are verbatim output and are not checked.
"""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", "node_modules"}
LINK = re.compile(r"\]\(([^)\s]+)\)")  # a markdown link's target


def markdown_pages() -> list[Path]:
    """The tracked markdown files (every one when there is no git checkout), minus run logs."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True).stdout
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.suffix == ".md" and p.is_file() and not is_run_log(p.relative_to(ROOT))]


def is_run_log(rel: Path) -> bool:
    """`docs/results/<anything>/runs/...`: copied training output, kept as it was written."""
    parts = rel.parts
    return parts[:2] == ("docs", "results") and "runs" in parts[2:-1]


def broken_links(path: Path) -> list[str]:
    """Relative link targets in the markdown file `path` that are not files or folders of the repo."""
    targets = (m.group(1).split("#")[0] for m in LINK.finditer(path.read_text(errors="replace")))
    return [t for t in targets if t and not re.match(r"[a-z]+:", t) and not (path.parent / t).exists()]


def test_dangling_links_are_caught_and_others_spared(tmp_path):
    """A link to a missing file is caught; files, anchors and URLs are not."""
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("")
    page.write_text("[a](there.md#top) [b](https://example.org/x.md) [c](missing.md) [d](#anchor)")
    assert broken_links(page) == ["missing.md"]


def test_markdown_links_resolve():
    """Every relative link in the tracked markdown points at a file or folder that is in the repo."""
    pages = markdown_pages()
    assert len(pages) > 10
    hits = [f"{p.relative_to(ROOT)} -> {t}" for p in pages for t in broken_links(p)]
    assert not hits, "links to files that are not in the repo:\n" + "\n".join(hits)
