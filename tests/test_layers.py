"""The package's floors hold: import-linter's layers contract (pyproject.toml) on the installed layout.

The contract is checked on a copy laid out as pip installs it (`modeling/` as `hf_attn/modeling`, ...), since
the source tree maps those folders in through `[tool.setuptools.package-dir]`, where the import graph would
not see them. Deferred imports inside functions count like any other.
"""
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _installed_layout(dest: Path) -> Path:
    """Copy every package of pyproject.toml where pip would put it; returns the folder to put on sys.path."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = tool["package-dir"]
    for package in tool["packages"]:
        parent = max((p for p in mapped if package == p or package.startswith(p + ".")), key=len)
        source = ROOT / mapped[parent] / Path(*package[len(parent):].lstrip(".").split(".") if package != parent else ())
        target = dest / Path(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in source.glob("*.py"):
            shutil.copy2(module, target / module.name)
    return dest


def _run(code: str, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=path, timeout=300)


def test_import_linter_contracts_hold(tmp_path):
    path = _installed_layout(tmp_path)
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename=%r, no_cache=True))" % str(ROOT / "pyproject.toml"))
    proc = _run(code, path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_no_module_imports_the_root_package(tmp_path):
    path = _installed_layout(tmp_path)
    code = ("import grimp; g = grimp.build_graph('hf_attn', cache_dir=None); "
            "print(sorted(g.find_modules_that_directly_import('hf_attn')))")
    proc = _run(code, path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", f"modules importing the root package hf_attn: {proc.stdout.strip()}"


def test_the_copy_is_the_whole_package(tmp_path):
    """Guards the layout helper: the copy has the mapped sub-packages, so the contract sees them."""
    path = _installed_layout(tmp_path)
    for sub in ("modeling", "adapters", "adapters/tt", "attention/holo", "harness"):
        assert (path / "hf_attn" / sub / "__init__.py").is_file(), sub
