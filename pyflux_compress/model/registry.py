"""The layer registry: which layer classes exist and which Flux names / ONNX ops build them.

A layer class declares everything about itself in its own file (docs/ARCHITECTURE.md, "Add a layer"): Flux
name and syntax, ``Flux.state`` fields, ONNX export/import, Julia constructor, compressible parameters and
their output-channel axis, structured-pruning slicing. ``@register_layer`` only makes the class findable:

* :func:`by_name` — Flux type name (``"Dense"``, ``"flatten"``) -> class (parse, JLD2 struct loading);
* :func:`by_onnx_op` — ONNX op type -> the classes that import it;
* :func:`lookup` — the registered class of a layer object, by MRO (a subclass of Dense *is* a Dense);
* :func:`supported` — the sorted names for error messages ("supported layers: ...").

This module imports nothing of the package, so every layer file can import it.
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["register_layer", "registered", "lookup", "by_name", "by_onnx_op", "supported"]

_CLASSES: list[type] = []
_NAMES: dict[str, type] = {}


def register_layer(cls: type) -> type:
    """Class decorator: register ``cls`` under ``cls.flux_name`` and ``cls.flux_aliases``.

    A later registration of the same name replaces the earlier one (a test or a plugin may override).
    """
    names = (getattr(cls, "flux_name", None), *getattr(cls, "flux_aliases", ()))
    if not isinstance(names[0], str) or not names[0]:
        raise ValueError(f"register_layer: {cls.__name__} needs a class attribute flux_name (its Flux type name)")
    if cls not in _CLASSES:
        _CLASSES.append(cls)
    for name in names:
        _NAMES[name] = cls
    return cls


def registered() -> tuple[type, ...]:
    """Every registered class, in registration order."""
    return tuple(_CLASSES)


def lookup(layer: Any) -> type | None:
    """The registered class ``layer`` (an instance or a class) belongs to: the first registered one in its MRO."""
    cls = layer if isinstance(layer, type) else type(layer)
    return next((c for c in cls.__mro__ if c in _CLASSES), None)


def by_name(name: str) -> type | None:
    """The class registered under Flux type name ``name`` (``"Flux.Dense"`` and ``"Dense"`` both work)."""
    return _NAMES.get(name.rsplit(".", 1)[-1])


def by_onnx_op(op: str) -> list[type]:
    """Classes whose ``onnx_ops`` include ``op`` (their ``from_onnx`` reads such a node)."""
    return [c for c in _CLASSES if op in getattr(c, "onnx_ops", ())]


def supported(where: Callable[[type], bool] = lambda cls: True) -> str:
    """Comma-separated sorted Flux names of the registered classes for which ``where(cls)`` holds."""
    return ", ".join(sorted({n for n, c in _NAMES.items() if where(c)}))
