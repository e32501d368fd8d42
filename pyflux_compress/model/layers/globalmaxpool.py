"""Flux ``GlobalMaxPool()`` (``src/layers/conv.jl``; a struct with no fields, ``Flux.state`` is ``()``).

``maxpool`` over all spatial dims: ``(N, C, H, W) -> (N, C, 1, 1)`` (Flux keeps the singleton dims). Backward
follows NNlib's ``∇maxpool``: each output's gradient goes to the first maximum of its window. ONNX
``GlobalMaxPool`` (export and import). Channel-wise: structured pruning passes through it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _conv
from ..registry import register_layer
from .base import Grads, Layer, as_data, float_dtype


@register_layer
class GlobalMaxPool(Layer):
    """Max over the spatial axes: ``(N, C, H, W) -> (N, C, 1, 1)``."""

    flux_name = "GlobalMaxPool"
    flux_fields: dict[str, str] = {}
    onnx_ops = ("GlobalMaxPool",)
    structured = "channelwise"

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, float_dtype(x), self)
        if x.ndim != 4:
            raise self._err(f"expects input of shape (N, C, H, W); got {x.shape}")
        h, w = x.shape[2:]
        return _conv.pool2d_forward(x, (w, h), (w, h), (0, 0, 0, 0), "max")

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        return _conv.pool2d_backward(cache, dy), {}

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise self._err(f"expects per-sample input (C, H, W); got {in_shape}")
        return (in_shape[0], 1, 1)

    def __repr__(self) -> str:
        return "GlobalMaxPool()"

    def to_onnx(self, g: Any, x: str) -> str:
        return g.node("GlobalMaxPool", [x], prefix="gmaxpool")[0]

    @classmethod
    def from_syntax(cls, call: Any) -> "GlobalMaxPool":
        call.check_kw()
        if call.args:
            raise ValueError("GlobalMaxPool() takes no arguments")
        return cls()

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Any) -> "GlobalMaxPool":
        return cls()

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "GlobalMaxPool":
        return cls()

