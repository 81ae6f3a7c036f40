"""Docs and source speak to users: no pointers to internal notes or to who ran what.

Users have the README, `docs/*.md` and public papers; a reference to a private note or a design document they
cannot open is a dead end. Run logs under `docs/results/**/runs/` are verbatim output and are not checked.
"""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = (".py", ".md", ".yaml", ".sh")
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", "node_modules"}
BANNED = ("note 00", "research note", "DESIGN.md", "the lead", "run by the lead")
PATTERN = re.compile("|".join(rf"\b{re.escape(p)}\b" if p[-1].isalpha() else rf"\b{re.escape(p)}" for p in BANNED),
                     re.IGNORECASE)


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


def banned_hits(text: str) -> list[str]:
    """`line: phrase` for every banned phrase in `text`."""
    return [f"{n}: {m.group(0)}" for n, line in enumerate(text.splitlines(), 1) for m in PATTERN.finditer(line)]


def test_pattern_catches_each_phrase_and_spares_lookalikes():
    """Every banned phrase is caught in any case; ordinary words that contain one are not."""
    for phrase in BANNED:
        assert banned_hits(f"see {phrase.upper()} here"), phrase
    assert not banned_hits("the leading dimension; a footnote 0; DESIGN.mdx is another file")


def test_no_internal_references_in_tracked_files():
    """No tracked source, doc, config or script points at internal notes, design documents or who ran what."""
    files = checked_files()
    assert any(p.name == "README.md" for p in files) and len(files) > 50
    hits = [f"{p.relative_to(ROOT)}:{h}" for p in files for h in banned_hits(p.read_text(errors="replace"))]
    assert not hits, ("internal references users cannot follow; cite a public paper, a docs/*.md page or state "
                      "the reason instead:\n" + "\n".join(hits))
