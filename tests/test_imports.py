"""The package's import graph, read with ``ast``: no import circle (imports inside functions included: they run too;
those under ``if TYPE_CHECKING:`` do not), and the layers below the driver (evaluation, the Aligner, PopAlign,
interpretability, the role services and actors, generation, data, training back-ends, config, the run directory and
its report, the benchmarks) never import ``w2s.controller``, even inside a function. No module is over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import w2s

ROOT = Path(w2s.__file__).parent
BELOW_THE_DRIVER = ["w2s.eval", "w2s.aligner", "w2s.popalign", "w2s.interpret", "w2s.roles", "w2s.workers",
                    "w2s.generation", "w2s.data", "w2s.backends", "w2s.config", "w2s.rundir", "w2s.report",
                    "w2s.stages", "w2s.bench"]
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (read by type checkers, never run)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(path: Path) -> set[str]:
    """Names of w2s modules ``path`` imports where it runs (``from w2s.a import b`` counts as w2s.a.b when that is
    a module), anywhere in the file but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_only(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("w2s")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("w2s") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_no_import_circle():
    modules = _modules()
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    circles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                circles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert circles == []


def test_the_layers_below_the_driver_never_import_it():
    offenders = sorted(f"{m} imports {i}" for m, p in _modules().items()
                       if any(m == b or m.startswith(b + ".") for b in BELOW_THE_DRIVER)
                       for i in _imports(p) if i.startswith("w2s.controller"))
    assert offenders == []


def test_no_module_is_over_500_lines():
    long = sorted(f"{m}: {n} lines" for m, p in _modules().items()
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES)
    assert long == []
