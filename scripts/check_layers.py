#!/usr/bin/env python3
"""Check flexaudit's architecture: the layers of the data path and the independence of `attacks`.

    python scripts/check_layers.py        # prints each problem on one line; exit 1 if there is any

Rules (README "Architecture", DESIGN.md "Architecture principles"):
  1. Every module of `flexaudit` belongs to one layer of LAYERS, and imports only from its own layer or a
     lower one. Imports inside functions count (they run too); imports under `if TYPE_CHECKING:` do not.
  2. No import cycle between modules, in any layer (a package's `__init__` only re-exports, so an import of a
     name it re-exports counts as an import of the module that defines the name).
  3. `attacks` imports nothing of `flexaudit`.
The checker reads source with `ast`; it imports nothing.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("flexaudit", "flexaudit.errors", "flexaudit.digest", "flexaudit.fsutil", "flexaudit.progress",
                     "flexaudit.signing", "flexaudit.names", "flexaudit.machine", "flexaudit.jobs",
                     "flexaudit._forkserver_preload")),
    ("data", ("flexaudit.data",)),
    ("moe", ("flexaudit.moe",)),
    ("privacy", ("flexaudit.privacy",)),
    ("audit", ("flexaudit.audit",)),
    ("report", ("flexaudit.report",)),
    ("gate", ("flexaudit.gate",)),
    ("pool", ("flexaudit.pool",)),
    ("trace", ("flexaudit.trace",)),
    ("top", ("flexaudit.workflows", "flexaudit.demo", "flexaudit.cli", "flexaudit.__main__")),
]


@dataclass(frozen=True)
class Module:
    name: str  # dotted
    path: Path
    is_package: bool  # an __init__.py


def modules(package: str, root: Path = ROOT) -> dict[str, Module]:
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


def layer_of(name: str) -> tuple[int, str] | None:
    best = None
    for rank, (layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                # the package root "flexaudit" is a prefix of everything: only an exact match counts for it
                if prefix == "flexaudit" and name != "flexaudit":
                    continue
                if best is None or len(prefix) > best[2]:
                    best = (rank, layer, len(prefix))
    return None if best is None else (best[0], best[1])


def _type_checking_lines(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        skip.add(sub.lineno)
    return skip


def imports_of(module: Module) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement that runs."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
    skip = _type_checking_lines(tree)
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def _reexports(mods: dict[str, Module]) -> dict[str, dict[str, str]]:
    """For each package __init__: name -> the module it was imported from (its re-exports)."""
    table: dict[str, dict[str, str]] = {}
    for m in mods.values():
        if m.is_package:
            table[m.name] = {name: src for src, names, _ in imports_of(m) for name in names if src in mods}
    return table


def _targets(base: str, names: list[str], mods: dict[str, Module], reexports: dict[str, dict[str, str]]) -> list[str]:
    """The modules an import statement really depends on."""
    if not names:
        return [base] if base in mods else []
    targets = []
    for name in names:
        if f"{base}.{name}" in mods:
            targets.append(f"{base}.{name}")
        elif base in reexports and name in reexports[base]:
            targets.append(reexports[base][name])
        elif base in mods:
            targets.append(base)
    return targets


def check(root: Path = ROOT) -> list[str]:
    problems = []
    mods = modules("flexaudit", root)
    reexports = _reexports(mods)
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for m in mods.values():
        mine = layer_of(m.name)
        if mine is None:
            problems.append(f"{m.path.relative_to(root)}: module {m.name} is in no layer: place it in scripts/check_layers.py "
                            "LAYERS and in the README's Architecture section")
            continue
        for base, names, line in imports_of(m):
            if not (base == "flexaudit" or base.startswith("flexaudit.")):
                continue
            for target in _targets(base, names, mods, reexports):
                theirs = layer_of(target)
                if theirs is None:
                    continue
                if theirs[0] > mine[0]:
                    problems.append(f"{m.path.relative_to(root)}:{line}: {m.name} ({mine[1]}) imports {target} "
                                    f"({theirs[1]}), a layer above its own")
                if not m.is_package and target != m.name:
                    graph[m.name].add(target)
    for cycle in _cycles(graph):
        problems.append("import cycle: " + " -> ".join(cycle + [cycle[0]]))
    for m in modules("attacks", root).values():
        for base, _, line in imports_of(m):
            if base == "flexaudit" or base.startswith("flexaudit."):
                problems.append(f"{m.path.relative_to(root)}:{line}: attacks imports {base}: the attack library "
                                "must import nothing of flexaudit")
    return list(dict.fromkeys(problems))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one member path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def main() -> int:
    problems = check()
    for p in problems:
        print(p)
    if not problems:
        print(f"layers ok: {len(modules('flexaudit'))} flexaudit modules, {len(modules('attacks'))} attacks modules")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
