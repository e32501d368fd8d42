"""Flux ``SkipConnection(layer, connection)``: ``connection(layer(x), x)`` — residual (``+``) or concatenating.

Flux (``src/layers/basic.jl``): ``struct SkipConnection{T,F}; layers::T; connection::F; end`` with
``(skip::SkipConnection)(input) = skip.connection(skip.layers(input), input)``; ``Flux.state`` is
``(layers = state(layer), connection = ())``. ResNet blocks are ``SkipConnection(Chain(...), +)``; U-Net /
DenseNet style blocks concatenate channels: ``SkipConnection(Chain(...), (mx, x) -> cat(mx, x, dims=3))``
(Python: ``SkipConnection(chain, ("cat", 3))``). ONNX: the inner graph, then ``Add`` or ``Concat``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..connection import Connection, get_connection
from ..registry import register_layer
from ..syntax import as_connection
from .base import Grads, Layer


@register_layer
class SkipConnection(Layer):
    """``SkipConnection(layer, connection)``: ``connection`` is ``"+"``, ``"vcat"``, ``"hcat"``, ``("cat", d)``
    or a :class:`Connection`. Input and output are whatever ``layer`` takes; with ``+`` the layer must keep
    the shape (a residual block), with ``cat`` the sizes along the other dims must agree."""

    flux_name = "SkipConnection"
    flux_fields = {"layers": "layers", "connection": "connection"}
    container = True
    structured = "skip"

    def __init__(self, layer: Any, connection: Any = "+") -> None:
        if not isinstance(layer, Layer):
            raise ValueError(f"SkipConnection: layer must be a layer or Chain; got {type(layer).__name__}")
        self.layers = layer
        self.connection: Connection = get_connection(connection)

    # ---- tree ----------------------------------------------------------------------------------------
    def children(self) -> dict[str, Layer]:
        return {"layers": self.layers}

    def with_children(self, children: dict[str, Layer], as_type: type | None = None) -> "SkipConnection":
        return (as_type or type(self))(children["layers"], self.connection)

    def params(self) -> dict[str, np.ndarray]:
        return {f"layers.{k}": v for k, v in self.layers.params().items()}

    def _dtype(self) -> np.dtype:
        return self.layers._dtype()

    # ---- engine --------------------------------------------------------------------------------------
    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = np.asarray(x)
        y, cache = self.layers.forward(x, train=train, rng=rng)
        return self.connection(y, x), (cache, y.shape, x.shape)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        inner, y_shape, x_shape = cache
        d_inner, d_skip = self.connection.backward(dy, [y_shape, x_shape])
        dx, g = self.layers.backward(inner, np.ascontiguousarray(d_inner))
        return dx + d_skip, {f"layers.{k}": v for k, v in g.items()}

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        try:
            inner = tuple(self.layers.output_shape(in_shape))
        except ValueError as err:
            raise ValueError(f"layers: {err}") from None
        return self.connection.output_shape([inner, in_shape], f"SkipConnection connection {self.connection!r}")

    def batch_kind(self, train: bool) -> str | None:
        # ``+`` and ``vcat`` (Flux dim 1, our last axis) never mix samples; other concatenations might
        c = self.connection
        return self.children_batch_kind(train) if c.kind == "+" or (c.kind == "cat" and c.dims == 1) else None

    def __repr__(self) -> str:
        return f"SkipConnection({self.layers!r}, {self.connection.julia(2)})"

    @classmethod
    def from_syntax(cls, call: Any) -> "SkipConnection":
        call.check_kw()
        if len(call.args) != 2:
            raise ValueError("expected SkipConnection(layer, connection), e.g. SkipConnection(Chain(...), +)")
        return cls(call.layer(call.args[0]), as_connection(call.args[1]))

    # ---- Flux struct / state -------------------------------------------------------------------------
    def flux_state(self) -> dict[str, Any]:
        return {"layers": self.layers, "connection": ()}

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable[[Any, str], Any]) -> "SkipConnection":
        """From a JLD2 struct (``SkipConnection{T, typeof(+)}``: the connection is type parameter 2); a state
        tree stores the connection as ``()``, so it needs ``pfc.load(path, arch=...)``."""
        params = fields.get("#params") or ()
        if len(params) < 2:
            raise ValueError("the connection function is not stored in a Flux.state tree; give the "
                             "architecture with pfc.load(path, arch=...)")
        return cls(build(fields["layers"], "layers"), get_connection(str(params[1])))

    # ---- ONNX ----------------------------------------------------------------------------------------
    def to_onnx(self, g: Any, x: str) -> str:
        y = self.layers.to_onnx(g, x)
        if self.connection.kind == "+":
            return g.node("Add", [y, x], prefix="skip")[0]
        return g.node("Concat", [y, x], prefix="skip", axis=self.connection.axis(g.rank(x)))[0]

    @classmethod
    def from_onnx_join(cls, x: str, join: Any, conn: Connection, branch: Callable[[int], Layer]
                       ) -> "SkipConnection | None":
        """The region after fork tensor ``x`` ends in ``join`` (``Add``/``Sum``/``Concat``) that reads ``x``
        itself: ``connection(layers(x), x)`` as :meth:`to_onnx` writes it (``x`` second), or ``x + layers(x)``
        (``+`` commutes). ``branch(i)`` reads the branch ending in the join's input ``i``. None otherwise."""
        ins = list(join.input)
        if len(ins) != 2 or x not in ins:
            return None
        if ins[1] == x and ins[0] != x and join.op_type != "Sum":
            return cls(branch(0), conn)
        if conn.kind == "+" and join.op_type == "Add":
            return cls(branch(1 - ins.index(x)), conn)
        return None
