"""How ``SkipConnection`` and ``Parallel`` combine their branches: ``+`` or concatenation along a Flux dim.

Flux takes any Julia function; the ones that can be written down and exported are:

=====================================  ==========================  =========================================
Flux                                   :class:`Connection`          numpy (batch-first arrays)
=====================================  ==========================  =========================================
``+`` (also ``(mx, x) -> mx .+ x``)     ``Connection("+")``          ``sum(ys)``
``vcat``                               ``Connection("cat", 1)``     concatenate on the last axis (Flux dim 1)
``hcat``                               ``Connection("cat", 2)``     Flux dim 2
``(mx, x) -> cat(mx, x, dims=3)``       ``Connection("cat", 3)``     Flux dim ``d`` is numpy axis ``ndim - d``:
                                                                   channels of ``(N, C, H, W)`` for d = 3
=====================================  ==========================  =========================================

In ``Flux.state`` a connection is a function, i.e. ``()``; in a JLD2 struct it is a type parameter
(``Base.#+``, ``Base.#vcat``); a closure (``Main.#3#4``) is anonymous and needs ``pfc.load(path, arch=...)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Connection", "get_connection"]


class Connection:
    """``kind`` is ``"+"`` or ``"cat"``; ``dims`` is the Flux dimension (1-based, first Flux dim = last axis)."""

    def __init__(self, kind: str, dims: int | None = None) -> None:
        if kind not in ("+", "cat"):
            raise ValueError(f"connection must be '+' or 'cat'; got {kind!r}")
        if kind == "cat" and (not isinstance(dims, (int, np.integer)) or dims < 1):
            raise ValueError(f"cat connection needs dims >= 1 (a Flux dimension); got {dims!r}")
        self.kind = kind
        self.dims = int(dims) if kind == "cat" else None

    def axis(self, ndim: int) -> int:
        """The numpy axis of a batch-first array of ``ndim`` dims (Flux dim d = axis ndim - d)."""
        if self.dims is None or self.dims >= ndim:   # the batch (Flux's last dim) is not concatenated here
            raise ValueError(f"{self!r}: dims={self.dims} does not fit {ndim}-D data (batch excluded)")
        return ndim - self.dims

    def __call__(self, *ys: np.ndarray) -> np.ndarray:
        if self.kind == "+":
            out = ys[0].copy()
            for y in ys[1:]:
                out = out + y                        # broadcasting like Julia's .+ (Flux's + needs equal sizes)
            return out
        return np.concatenate(ys, axis=self.axis(ys[0].ndim))

    def backward(self, dy: np.ndarray, shapes: list[tuple]) -> list[np.ndarray]:
        """The gradient reaching each input of the connection (``shapes``: full input shapes)."""
        if self.kind == "+":
            return [_unbroadcast(dy, s) for s in shapes]
        ax = self.axis(dy.ndim)
        cuts = np.cumsum([s[ax] for s in shapes])[:-1]
        return list(np.split(dy, cuts, axis=ax))

    def output_shape(self, shapes: list[tuple], who: str) -> tuple:
        """Per-sample output shape from the branches' per-sample shapes."""
        if self.kind == "+":
            if any(s != shapes[0] for s in shapes):
                raise ValueError(f"{who}: + needs equal shapes; got {shapes}")
            return shapes[0]
        nd = len(shapes[0])
        if self.dims is None or self.dims > nd:
            raise ValueError(f"{who}: cat along Flux dims={self.dims} does not fit per-sample shapes {shapes}")
        ax = nd - self.dims
        rest = [s[:ax] + s[ax + 1:] for s in shapes]
        if any(len(s) != nd for s in shapes) or any(r != rest[0] for r in rest):
            raise ValueError(f"{who}: cat along dims={self.dims} needs the other dims equal; got {shapes}")
        return shapes[0][:ax] + (sum(s[ax] for s in shapes),) + shapes[0][ax + 1:]

    def julia(self, arity: int = 2) -> str:
        """Julia text: ``+``, ``vcat``, ``hcat`` or a cat closure."""
        if self.kind == "+":
            return "+"
        if self.dims in (1, 2):
            return "vcat" if self.dims == 1 else "hcat"
        return f"(xs...) -> cat(xs...; dims={self.dims})"

    def __repr__(self) -> str:
        return self.julia()

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Connection) and (self.kind, self.dims) == (other.kind, other.dims)

    def __hash__(self) -> int:
        return hash((self.kind, self.dims))


def _unbroadcast(dy: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``dy`` down to ``shape`` (the reverse of numpy broadcasting)."""
    if dy.shape == tuple(shape):
        return dy
    while dy.ndim > len(shape):
        dy = dy.sum(axis=0)
    axes = tuple(i for i, (a, b) in enumerate(zip(dy.shape, shape)) if b == 1 and a != 1)
    return dy.sum(axis=axes, keepdims=True) if axes else dy


_NAMES = {"+": ("+", None), "Base.:+": ("+", None), "#+": ("+", None), "vcat": ("cat", 1), "#vcat": ("cat", 1),
          "hcat": ("cat", 2), "#hcat": ("cat", 2)}


def get_connection(value: Any) -> Connection:
    """A :class:`Connection` from itself, ``"+"``, ``"vcat"``, ``"hcat"``, ``("cat", d)`` or a Julia type name
    such as ``"Base.#+"``. Anything else raises ValueError naming the supported ones."""
    if isinstance(value, Connection):
        return value
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "cat":
        return Connection("cat", value[1])
    if isinstance(value, str):
        key = value.rsplit(".", 1)[-1] if not value.endswith(":+") else "+"
        if key in _NAMES:
            return Connection(*_NAMES[key])
    raise ValueError(f"unsupported connection {value!r}: supported are +, vcat, hcat and cat along a dim "
                     "(Python: '+', 'vcat', 'hcat', ('cat', 3)); a Julia closure must be rewritten as one of them")
