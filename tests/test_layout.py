"""The package's layers and the direction of imports between them, read from the source (ast).

base (the modules directly in svtr_toolkit/) <- prepare; base <- compile; base <- runtime <- evaluate;
bench may import all of them. Function-level imports count: they hide cycles, not remove them.
"""
import ast
from pathlib import Path

import pytest

from cli_runs import REPO

PACKAGE = REPO / "svtr_toolkit"
# layer -> the layers it may import (itself always)
ALLOWED = {
    "base": set(),
    "prepare": {"base"},
    "compile": {"base"},
    "runtime": {"base"},
    "evaluate": {"base", "runtime"},
    "bench": {"base", "compile", "runtime", "evaluate"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else "base"


def imports_of(path: Path) -> set:
    """Every svtr_toolkit module ``path`` imports, at any depth of the file."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "svtr_toolkit"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "svtr_toolkit":
                target = node.module
            else:
                continue
            found.add(target)
            for alias in node.names:  # "from . import x" imports the submodule x
                if (PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))).with_suffix(".py").exists() or \
                        (PACKAGE.parent / Path(*f"{target}.{alias.name}".split(".")) / "__init__.py").exists():
                    found.add(f"{target}.{alias.name}")
    return found - {module}


def graph() -> dict:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_layers_import_only_downward():
    wrong = [f"{src} ({layer(src)}) imports {dst} ({layer(dst)})"
             for src, targets in graph().items() for dst in targets
             if layer(dst) != layer(src) and layer(dst) not in ALLOWED[layer(src)]]
    assert not wrong, "\n".join(wrong)


def test_base_modules_import_no_layer():
    base = {m: t for m, t in graph().items() if layer(m) == "base" and m != "svtr_toolkit"}
    assert base, "the base layer is missing"
    assert all(layer(t) == "base" for targets in base.values() for t in targets), base


def test_no_import_cycle():
    edges = {m: {t for t in targets if t != "svtr_toolkit"} for m, targets in graph().items()}
    state, cycle = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycle.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycle, "\n".join(cycle)


@pytest.mark.parametrize("src, dst, ok", [
    ("svtr_toolkit.evaluate.parity", "svtr_toolkit.runtime", True),
    ("svtr_toolkit.runtime.base", "svtr_toolkit.compile.build", False),
    ("svtr_toolkit.compile.build", "svtr_toolkit.evaluate.parity", False),
    ("svtr_toolkit.files", "svtr_toolkit.runtime", False),
    ("svtr_toolkit.bench.driver", "svtr_toolkit.compile.build", True),
])
def test_the_rule_itself(src, dst, ok):
    assert (layer(dst) == layer(src) or layer(dst) in ALLOWED[layer(src)]) == ok
