"""Architecture guards (ast only, nothing is imported): no import cycle inside the package, no import against
the documented dependency order, no private name imported from another module (docs/ARCHITECTURE.md).

Every import statement counts, function-level ones included; only ``if TYPE_CHECKING:`` blocks are exempt.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = "pyflux_compress"
ROOT = Path(__file__).resolve().parent.parent / PKG

# Dependency order, bottom first: a module may import its own group and groups of lower rank only.
# backends <- model <- train <- compression <- io <- deploy <- search <- cli; the shared helpers (and the thread
# policy, which depends on nothing of ours) at the bottom. backends (the kernel seam) knows no layer, so the
# training step in train/ and the compression numerics can both be kernels.
RANKS = {"_validate": 0, "_files": 0, "threads": 0, "datasets": 1, "backends": 2, "model": 3, "train": 4,
         "compression": 5, "io": 6, "deploy": 7, "search": 8, "cli": 9}
BOTTOM = {"_validate", "_files"}  # private modules every module may import


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# pyflux_compress/julia/ is the Julia project shipped in the wheel (its test-fixture generators are scripts)
MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py")) if p.relative_to(ROOT).parts[0] != "julia"}


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def _resolve(mod: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if _is_package(mod) else mod.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(mod: str) -> list[tuple[int, str, str | None]]:
    """``(line, target module, imported name or None)`` for every internal import of ``mod``."""
    out: list[tuple[int, str, str | None]] = []

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == PKG)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, node)
            if target.split(".")[0] == PKG:
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.append((node.lineno, sub, None) if sub in MODULES else (node.lineno, target, a.name))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(MODULES[mod].read_text(encoding="utf-8")))
    return out


def _group(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def _private_module(target: str) -> str | None:
    """The innermost ``_x`` package/module on ``target``'s path (None if all public or a BOTTOM helper)."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i].startswith("_") and not parts[i].startswith("__") and parts[i] not in BOTTOM:
            return ".".join(parts[:i + 1])
    return None


def test_module_table_is_complete():
    groups = {_group(m) for m in MODULES} - {""}
    assert groups <= set(RANKS), f"top-level modules without a rank in RANKS: {sorted(groups - set(RANKS))}"


def test_no_import_cycles():
    graph = {m: sorted({t for _, t, _ in _imports(m) if t in MODULES and t != m}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strongconnect(v)
    detail = [f"{' <-> '.join(c)}: " + "; ".join(f"{a} imports {b}" for a in c for b in graph[a] if b in c)
              for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_imports_follow_the_dependency_order():
    bad = []
    for mod in MODULES:
        src = _group(mod)
        if not src:  # pyflux_compress/__init__.py: lazy public API
            continue
        for line, target, _ in _imports(mod):
            dst = _group(target)
            if dst and dst != src and RANKS[dst] >= RANKS[src]:
                bad.append(f"{MODULES[mod].relative_to(ROOT.parent)}:{line}: {src} imports {target} ({dst} is not "
                           f"below {src})")
    assert not bad, "imports against backends <- model <- train <- compression <- io <- deploy <- cli:\n" + \
        "\n".join(bad)


def test_no_private_names_across_modules():
    bad = []
    for mod in MODULES:
        aliases: dict[str, str] = {}
        for line, target, name in _imports(mod):
            where = f"{MODULES[mod].relative_to(ROOT.parent)}:{line}"
            if name is not None and name.startswith("_") and not name.startswith("__"):
                bad.append(f"{where}: imports private name {name} from {target}")
            private = _private_module(target)
            # a private module is for its own package: the package and modules beside or below it
            owner = private.rsplit(".", 1)[0] if private else ""
            if private and mod != owner and not mod.startswith(owner + "."):
                bad.append(f"{where}: imports {target} from private module {private} of another package")
        tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # `from ..compression import quantize as Q` ... `Q._helper`
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not (isinstance(node, ast.ImportFrom)
                                                                        and _resolve(mod, node).split(".")[0] != PKG):
                for a in node.names:
                    full = f"{_resolve(mod, node)}.{a.name}" if isinstance(node, ast.ImportFrom) else a.name
                    if full in MODULES and a.asname:
                        aliases[a.asname] = full
                    elif full in MODULES:
                        aliases[a.name.split(".")[-1]] = full
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and f"{aliases[node.value.id]}.{node.attr}" not in MODULES):
                bad.append(f"{MODULES[mod].relative_to(ROOT.parent)}:{node.lineno}: uses private "
                           f"{aliases[node.value.id]}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("source, expected", [("from ._conv import x", ["pyflux_compress.model._conv"]),
                                              ("from .. import _validate", ["pyflux_compress._validate"])])
def test_resolver_sees_relative_imports(source, expected):
    node = ast.parse(source).body[0]
    mod = "pyflux_compress.model.chain"
    target = _resolve(mod, node)
    names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
    assert names == expected
