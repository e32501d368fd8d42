"""Render any value the JLD2 reader returns (``pyflux-compress inspect`` of a file that is not a Flux model)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ._types import Ghost, JuliaStruct, NamedTuple

__all__ = ["render"]

MAX_CHILDREN = 40


def render(value: Any, max_depth: int) -> dict[str, Any]:
    """``{"tree": indented lines, "arrays", "elements", "nonzero"}`` (counts over numeric arrays).

    Containers are expanded to ``max_depth``, at most ``MAX_CHILDREN`` children each; a value reached again
    while it is being shown (a cycle) is shown as a reference."""
    out: dict[str, Any] = {"tree": [], "arrays": 0, "elements": 0, "nonzero": 0}
    _tree(value, "", 0, out, max_depth, set())
    return out


def _tree(value: Any, name: str, depth: int, out: dict[str, Any], max_depth: int, active: set[int]) -> None:
    lines = out["tree"]
    label = f"{'  ' * depth}{name}: " if name else "  " * depth
    if isinstance(value, np.ndarray):
        desc = f"Array{{{value.dtype}}} {'x'.join(map(str, value.shape)) or 'scalar'}"
        if value.dtype.kind in "biufc":
            nz = int(np.count_nonzero(value))
            out["arrays"], out["elements"], out["nonzero"] = out["arrays"] + 1, out["elements"] + value.size, \
                out["nonzero"] + nz
            if value.size:
                desc += f", {value.size:,} elements, sparsity {1 - nz / value.size:.3f}"
                if value.dtype.kind in "fc" and np.all(np.isfinite(value)):
                    desc += f", range [{value.real.min():.4g}, {value.real.max():.4g}]"
            lines.append(label + desc)
            return
        lines.append(label + desc)  # an array of objects: show its first elements
        items = list(enumerate(value.reshape(-1, order="F")[:MAX_CHILDREN], 1))
        return _children(items, value.size, depth, out, max_depth, active)
    if isinstance(value, (str, bytes, int, float, complex, bool, np.generic)) or value is None:
        text = repr(value)
        return lines.append(label + (text if len(text) <= 100 else text[:97] + "..."))
    if id(value) in active:
        return lines.append(label + "<shared reference, shown above>")
    if depth >= max_depth:
        return lines.append(label + f"{_type_name(value)} ... (depth limit; --max-depth)")
    items = _items(value)
    lines.append(label + _type_name(value) + ("" if items is None else f" ({len(items)} entries)"))
    if items is not None:
        active.add(id(value))
        _children(items[:MAX_CHILDREN], len(items), depth, out, max_depth, active)
        active.discard(id(value))


def _children(items: list, total: int, depth: int, out: dict[str, Any], max_depth: int, active: set[int]) -> None:
    for k, v in items:
        _tree(v, str(k), depth + 1, out, max_depth, active)
    if total > len(items):
        out["tree"].append("  " * (depth + 1) + f"... {total - len(items)} more")


def _type_name(value: Any) -> str:
    if isinstance(value, (JuliaStruct, Ghost)):
        return value.type_name
    names = ((NamedTuple, "NamedTuple"), (dict, "Dict"), (tuple, "Tuple"), (list, "Vector"))
    return next((n for t, n in names if isinstance(value, t)), type(value).__name__)


def _items(value: Any) -> list[tuple[Any, Any]] | None:
    """Children of a JLD2 value as (name, value) pairs (tuples 1-based, as Julia indexes them); None for a leaf."""
    if isinstance(value, (dict, NamedTuple)):
        return list(value.items())
    if isinstance(value, JuliaStruct):
        return list(value.fields.items())
    if isinstance(value, (tuple, list)):
        return [(f"[{i}]", v) for i, v in enumerate(value, 1)]
    return None
