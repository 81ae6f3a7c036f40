"""The declared dependency range is the range CI tests: every lower bound is pinned in the minimum constraints."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lower_bounds() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    bounds = {}
    for spec in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(,<[0-9.]+)?", spec.replace(" ", ""))
        assert m, f"dependency {spec!r} has no lower bound: CI cannot test its lowest version"
        bounds[m[1].lower().replace("_", "-")] = m[2]
    return bounds


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "constraints-min.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _same_version(a: str, b: str) -> bool:
    pad = lambda v: [int(x) for x in v.split(".")] + [0] * (3 - len(v.split(".")))  # noqa: E731
    return pad(a) == pad(b)


def test_every_lower_bound_is_pinned_in_the_minimum_constraints():
    pins = _pins()
    for name, low in _lower_bounds().items():
        assert name in pins, f"{name} >= {low} is declared but .ci/constraints-min.txt does not pin it"
        assert _same_version(pins[name], low), f"{name}: pyproject says >= {low}, constraints-min pins {pins[name]}"
