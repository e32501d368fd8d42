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
from .pool import Pool2d


@register_layer
class GlobalMaxPool(Pool2d):
    """Max over the spatial axes: ``(N, C, H, W) -> (N, C, 1, 1)``."""

    flux_name = "GlobalMaxPool"
    batch_mode = "independent"
    flux_fields: dict[str, str] = {}
    onnx_ops = ("GlobalMaxPool",)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = self._input(x)
        h, w = x.shape[2:]
        return _conv.pool2d_forward(x, (w, h), (w, h), (0, 0, 0, 0), "max")

    def output_shape(self, in_shape: tuple) -> tuple:
        return (self._per_sample(in_shape)[0], 1, 1)

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

