"""The import graph of the tarn package, read from the source (AST, no import executed):
every ``import tarn.x`` / ``from tarn.x import y``, at module level or inside functions."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "tarn"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def module_path(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def modules() -> list[str]:
    return sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


@cache
def imports(name: str) -> frozenset[str]:
    """The tarn modules ``name`` imports directly (``from tarn.core import x`` counts as
    ``tarn.core.x`` when x is a module)."""
    path = module_path(name)
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("tarn")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("tarn"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if module_path(sub) else node.module)
    return frozenset(m for m in out if module_path(m) and m != name)


def closure(name: str) -> set[str]:
    """Every tarn module ``name`` reaches through imports, itself included."""
    seen, todo = set(), [name]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(imports(m))
    return seen


def layer(name: str) -> str:
    """tarn.stages.etl -> "stages"; tarn.cli -> "cli"; tarn.config -> "config"."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "tarn"
