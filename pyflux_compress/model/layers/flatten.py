"""Flux's ``flatten`` (a function used as a layer; ``Flatten()`` builds one too); ONNX ``Flatten(axis=1)``."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register_layer
from .base import FunctionLayer, Grads, as_data, float_dtype


@register_layer
class Flatten(FunctionLayer):
    """Flux's ``flatten``: ``(N, ...) -> (N, prod(...))``.

    Flux flattens WHCN column-major; on our NCHW arrays (dims reversed) that is exactly the C-order
    ``x.reshape(N, -1)`` (tests/test_layers.py proves it), so no transpose is needed.
    """

    flux_name = "flatten"
    batch_mode = "independent"
    flux_aliases = ("Flatten",)
    onnx_ops = ("Flatten", "Reshape")
    structured = "flatten"

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, float_dtype(x), self)
        if x.ndim < 1:
            raise self._err("expects a batch of samples")
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        return dy.reshape(cache), {}

    def output_shape(self, in_shape: tuple) -> tuple:
        return (int(np.prod(tuple(in_shape), dtype=np.int64)),)

    @classmethod
    def from_syntax(cls, call: Any) -> "Flatten":
        if call.args or call.kwargs:
            raise ValueError(f"{call.name}() takes no arguments")
        return cls() if call.name == "Flatten" else flatten   # Flux's Flatten() is a struct of its own

    def to_onnx(self, g: Any, x: str) -> str:
        return g.node("Flatten", [x], axis=1, rank=2)[0]

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "Flatten":
        if node.op_type == "Flatten" and r.attrs(node).get("axis", 1) != 1:
            raise r.error(node, f"Flatten axis must be 1 (batch-first); got {r.attrs(node).get('axis')}")
        if node.op_type == "Reshape":
            shape = r.const(node, 1).astype(np.int64).tolist()
            if not (len(shape) == 2 and (shape[1] == -1 or shape[0] in (0, -1))):  # (N, -1), (0, -1), (-1, F)
                raise r.error(node, f"only Reshape to (N, -1) (a flatten) imports; got shape {shape}")
        return flatten


#: Flux's ``flatten`` function, usable directly as a Chain element
flatten = Flatten.the()
