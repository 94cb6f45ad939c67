"""The package's floors: each top-level part of ``tsm_deploy`` imports only from the floors below it
(function-level imports included), modules form no import cycle, and at most three modules sit at
the top. The order is the pipeline's: what runs on the device at the bottom, the CLI on top."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tsm_deploy"

FLOORS = (
    "runtime",  # on the device: imports nothing else of the project (the bundle ships it alone)
    "errors",
    "support",
    "models",
    "data",
    "default_model",
    "checkpoint",
    "quantize",
    "target",
    "frontend",
    "compiler",
    "deploy",
    "emulation",
    "evaluate",
    "tuning",
    "train",
    "cli",
)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (absolute names; ``from X import name`` counts X.name
    when that is a module)."""
    modules = {_module_name(p)[0]: p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif node.module and node.module.split(".")[0] == "tsm_deploy":
                    target = node.module
                else:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "tsm_deploy")
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""  # "" : the package's __init__ (its version only)


def test_no_import_runs_up_a_floor():
    rank = {floor: i for i, floor in enumerate(FLOORS)}
    upward = []
    for module, deps in _imports().items():
        here = _floor(module)
        assert here in rank or here == "", f"{module}: top-level part {here!r} has no floor in FLOORS"
        for dep in deps:
            there = _floor(dep)
            if there and here and there != here and rank[there] > rank[here]:
                upward.append(f"{module} -> {dep}")
    assert not upward, "imports that climb a floor:\n" + "\n".join(sorted(upward))


def test_the_runtime_imports_nothing_else_of_the_project():
    outside = [f"{m} -> {d}" for m, deps in _imports().items() if _floor(m) == "runtime"
               for d in deps if _floor(d) != "runtime"]
    assert not outside


def test_no_import_cycles():
    graph = _imports()
    # a package's __init__ re-exporting its own modules is not a cycle worth refusing; between modules it is
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep.startswith(node + "."):
                continue  # a package importing its own submodule
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_at_most_three_modules_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 3, top
