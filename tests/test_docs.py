"""Docs and source point users only at what they can open: the repo's own files and public papers.

A markdown link must resolve to a file in the repo, and a citation must name a paper or a docs page, never a
numbered note that ships nowhere. Run logs under `docs/results/**/runs/` are verbatim output and are not checked.
"""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = (".py", ".md", ".yaml", ".sh")
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", "node_modules"}
NUMBERED_NOTE = re.compile(r"\bnotes? \d{3}\b", re.IGNORECASE)  # "see note 123": nothing a user can open
LINK = re.compile(r"\]\(([^)\s]+)\)")  # a markdown link's target


def checked_files() -> list[Path]:
    """The tracked .py/.md/.yaml/.sh files (every such file when there is no git checkout), minus run logs."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True).stdout
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.suffix in SUFFIXES and p.is_file() and not is_run_log(p.relative_to(ROOT))
            and p != Path(__file__).resolve()]


def is_run_log(rel: Path) -> bool:
    """`docs/results/<anything>/runs/...`: copied training output, kept as it was written."""
    parts = rel.parts
    return parts[:2] == ("docs", "results") and "runs" in parts[2:-1]


def note_citations(text: str) -> list[str]:
    """`line: citation` for every citation of a numbered note in `text`."""
    return [f"{n}: {m.group(0)}" for n, line in enumerate(text.splitlines(), 1) for m in NUMBERED_NOTE.finditer(line)]


def broken_links(path: Path) -> list[str]:
    """Relative link targets in the markdown file `path` that are not files or folders of the repo."""
    targets = (m.group(1).split("#")[0] for m in LINK.finditer(path.read_text(errors="replace")))
    return [t for t in targets if t and not re.match(r"[a-z]+:", t) and not (path.parent / t).exists()]


def test_patterns_catch_what_they_should_and_spare_lookalikes(tmp_path):
    """A numbered note is caught in any case, a footnote or a year is not; a dangling link is caught."""
    assert note_citations("as NOTE 003 says") and note_citations("notes 120-125")
    assert not note_citations("a footnote 003; the note 2024; note 12")
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("")
    page.write_text("[a](there.md#top) [b](https://example.org/x.md) [c](missing.md) [d](#anchor)")
    assert broken_links(page) == ["missing.md"]


def test_no_numbered_note_citations_in_tracked_files():
    """No tracked source, doc, config or script cites a numbered note instead of a paper or a docs page."""
    files = checked_files()
    assert any(p.name == "README.md" for p in files) and len(files) > 50
    hits = [f"{p.relative_to(ROOT)}:{h}" for p in files for h in note_citations(p.read_text(errors="replace"))]
    assert not hits, "citations users cannot follow; cite a public paper or a docs/*.md page:\n" + "\n".join(hits)


def test_markdown_links_resolve():
    """Every relative link in the tracked markdown points at a file or folder that is in the repo."""
    pages = [p for p in checked_files() if p.suffix == ".md"]
    assert len(pages) > 10
    hits = [f"{p.relative_to(ROOT)} -> {t}" for p in pages for t in broken_links(p)]
    assert not hits, "links to files that are not in the repo:\n" + "\n".join(hits)
