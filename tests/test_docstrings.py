"""Every public function, class and method of the package says what it does (read from the source with `ast`).

Public: a module-level function or class, or a method of a public class, whose name has no leading
underscore. Not checked: dunder and private names, property setters/deleters and `typing.overload` stubs
(the getter or the implementation carries the text), and `register`/`run` of a `hf_attn/commands/*` module
that has a module docstring (it describes the subcommand both implement).
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hf_attn", "modeling", "adapters")
COMMAND_HOOKS = {"register", "run"}

Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def exempt(node: Def, module: ast.Module, rel: Path) -> bool:
    """Names the rules above leave out."""
    if node.name.startswith("_"):
        return True
    for dec in getattr(node, "decorator_list", []):
        if isinstance(dec, ast.Attribute) and dec.attr in ("setter", "deleter"):
            return True
        if (dec.id if isinstance(dec, ast.Name) else getattr(dec, "attr", None)) == "overload":
            return True
    is_command = rel.parts[:2] == ("hf_attn", "commands") and rel.name != "__init__.py"
    return is_command and node.name in COMMAND_HOOKS and ast.get_docstring(module) is not None


def undocumented(source: str, rel: Path) -> list[str]:
    """`path:line name` of each public definition in `source` without a docstring."""
    module = ast.parse(source)
    found = []
    for node in module.body:
        if not isinstance(node, Def) or exempt(node, module, rel):
            continue
        if ast.get_docstring(node) is None:
            found.append(f"{rel}:{node.lineno} {node.name}")
        if isinstance(node, ast.ClassDef):
            found += [f"{rel}:{m.lineno} {node.name}.{m.name}" for m in node.body
                      if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef) and not exempt(m, module, rel)
                      and ast.get_docstring(m) is None]
    return found


def test_checker_finds_missing_and_spares_exempt_names():
    """A bare public function, class and method are reported; private, dunder and setter definitions are not."""
    src = ("def f(): pass\nclass C:\n    def m(self): pass\n    def __init__(self): pass\n    def _p(self): pass\n"
           "    @property\n    def v(self):\n        'doc'\n    @v.setter\n    def v(self, x): pass\n"
           "class _Hidden:\n    def m(self): pass\n")
    assert undocumented(src, Path("hf_attn/x.py")) == ["hf_attn/x.py:1 f", "hf_attn/x.py:2 C", "hf_attn/x.py:3 C.m"]
    hooks = "'''`hf-attn x`: does x.'''\ndef run(args): pass\ndef register(sub): pass\n"
    assert undocumented(hooks, Path("hf_attn/commands/x.py")) == []
    assert len(undocumented(hooks, Path("hf_attn/other.py"))) == 2


def test_every_public_definition_has_a_docstring():
    """Walks hf_attn/, modeling/ and adapters/; lists every public function, class or method left bare."""
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50
    missing = [m for p in files for m in undocumented(p.read_text(), p.relative_to(ROOT))]
    assert not missing, "public definitions without a docstring (say what it does, and why where it matters):\n" + \
        "\n".join(missing)
