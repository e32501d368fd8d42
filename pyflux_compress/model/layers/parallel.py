"""Flux ``Parallel(connection, layers...)``: every branch sees the input, ``connection`` combines the outputs.

Flux (``src/layers/basic.jl``): ``struct Parallel{F, T<:Union{Tuple, NamedTuple}}; connection::F; layers::T;
end``, ``(m::Parallel)(x) = m.connection(map(f -> f(x), Tuple(m.layers))...)``; branches may be named:
``Parallel(+; α = Dense(2 => 3), β = Dense(2 => 3))`` (``layers`` is then a NamedTuple). ``Flux.state`` is
``(connection = (), layers = (state(l1), ...))``. Inception/ResNeXt style blocks use
``Parallel((xs...) -> cat(xs...; dims=3), branch1, branch2)``. (Flux's multi-input call ``m(x1, x2)`` —
one input per branch — is not supported here.) ONNX: each branch, then ``Sum`` or ``Concat``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..connection import Connection, get_connection
from ..registry import register_layer
from ..syntax import as_connection
from .base import Grads, Layer


@register_layer
class Parallel(Layer):
    """``Parallel(connection, *layers)`` or ``Parallel(connection, **named_layers)`` (Flux's named branches)."""

    flux_name = "Parallel"
    flux_fields = {"connection": "connection", "layers": "layers"}
    container = True
    structured = "parallel"

    def __init__(self, connection: Any, *layers: Any, **named: Any) -> None:
        if layers and named:
            raise ValueError("Parallel: give the branches either positionally or by name, not both")
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        items = list(named.items()) if named else [(None, l) for l in layers]
        if not items:
            raise ValueError("Parallel: needs at least one branch")
        for name, layer in items:
            if not isinstance(layer, Layer):
                raise ValueError(f"Parallel: branch {name or len(items)} must be a layer; got {type(layer).__name__}")
        self.connection: Connection = get_connection(connection)
        self.layers: list[Layer] = [l for _, l in items]
        self.names: list[str] | None = [n for n, _ in items] if named else None

    def _fragments(self) -> list[str]:
        return [f"layers.{n}" for n in self.names] if self.names else \
            [f"layers[{i + 1}]" for i in range(len(self.layers))]

    # ---- tree ----------------------------------------------------------------------------------------
    def children(self) -> dict[str, Layer]:
        return dict(zip(self._fragments(), self.layers))

    def with_children(self, children: dict[str, Layer], as_type: type | None = None) -> "Parallel":
        cls = as_type or type(self)
        layers = list(children.values())
        return cls(self.connection, **dict(zip(self.names, layers))) if self.names else cls(self.connection, *layers)

    def params(self) -> dict[str, np.ndarray]:
        return {f"{frag}.{k}": v for frag, layer in self.children().items() for k, v in layer.params().items()}

    def _dtype(self) -> np.dtype:
        return self.layers[0]._dtype()

    # ---- engine --------------------------------------------------------------------------------------
    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = np.asarray(x)
        outs = [layer.forward(x, train=train, rng=rng) for layer in self.layers]
        ys = [y for y, _ in outs]
        return self.connection(*ys), ([c for _, c in outs], [y.shape for y in ys])

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        caches, shapes = cache
        dys = self.connection.backward(dy, shapes)
        dx, grads = None, {}
        for frag, layer, c, d in zip(self._fragments(), self.layers, caches, dys):
            dxi, g = layer.backward(c, np.ascontiguousarray(d))
            dx = dxi if dx is None else dx + dxi
            grads.update({f"{frag}.{k}": v for k, v in g.items()})
        return dx, grads

    def output_shape(self, in_shape: tuple) -> tuple:
        shapes = []
        for frag, layer in self.children().items():
            try:
                shapes.append(tuple(layer.output_shape(tuple(in_shape))))
            except ValueError as err:
                raise ValueError(f"{frag}: {err}") from None
        return self.connection.output_shape(shapes, f"Parallel connection {self.connection!r}")

    def batch_kind(self, train: bool) -> str | None:
        # ``+`` and ``vcat`` (Flux dim 1, our last axis) never mix samples; other concatenations might
        c = self.connection
        return self.children_batch_kind(train) if c.kind == "+" or (c.kind == "cat" and c.dims == 1) else None

    def __repr__(self) -> str:
        conn = self.connection.julia(len(self.layers))
        if self.names:
            return f"Parallel({conn}; " + ", ".join(f"{n} = {l!r}" for n, l in zip(self.names, self.layers)) + ")"
        return f"Parallel({conn}, " + ", ".join(repr(l) for l in self.layers) + ")"

    @classmethod
    def from_syntax(cls, call: Any) -> "Parallel":
        call.check_kw(*call.kwargs)                  # every keyword is a named branch
        if not call.args:
            raise ValueError("expected Parallel(connection, layers...) or Parallel(connection; name = layer, ...)")
        conn = as_connection(call.args[0])
        if call.kwargs:
            if len(call.args) > 1:
                raise ValueError("give the branches either positionally or by name, not both")
            return cls(conn, **{k: call.layer(v) for k, v in call.kwargs.items()})
        return cls(conn, *[call.layer(a) for a in call.args[1:]])

    # ---- Flux struct / state -------------------------------------------------------------------------
    def flux_state(self) -> dict[str, Any]:
        layers = dict(zip(self.names, self.layers)) if self.names else tuple(self.layers)
        return {"connection": (), "layers": layers}

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable[[Any, str], Any]) -> "Parallel":
        params = fields.get("#params") or ()     # Parallel{F, T}: the connection is type parameter 1
        if not params:
            raise ValueError("the connection function is not stored in a Flux.state tree; give the "
                             "architecture with pfc.load(path, arch=...)")
        conn = get_connection(str(params[0]))
        layers = fields["layers"]
        if hasattr(layers, "items"):
            return cls(conn, **{k: build(v, f"layers.{k}") for k, v in layers.items()})
        return cls(conn, *[build(v, f"layers[{i + 1}]") for i, v in enumerate(layers)])

    # ---- ONNX ----------------------------------------------------------------------------------------
    def to_onnx(self, g: Any, x: str) -> str:
        ys = [layer.to_onnx(g, x) for layer in self.layers]
        if len(ys) == 1:
            return ys[0]
        if self.connection.kind == "+":
            return g.node("Sum", ys, prefix="parallel")[0]
        return g.node("Concat", ys, prefix="parallel", axis=self.connection.axis(g.rank(x)))[0]

    @classmethod
    def from_onnx_join(cls, x: str, join: Any, conn: Any, branch: Callable[[int], Layer]) -> "Parallel":
        """Any region after fork tensor ``x`` ending in ``join`` (``Add``/``Sum``/``Concat``) of separable
        branches: ``Parallel(conn, branch(1), ..., branch(n))`` (SkipConnection, registered first, takes the joins
        that read ``x`` itself)."""
        return cls(conn, *[branch(i) for i in range(len(join.input))])
