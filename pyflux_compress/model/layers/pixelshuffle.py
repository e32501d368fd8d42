"""Flux ``PixelShuffle`` (``src/layers/upsample.jl``).

``struct PixelShuffle; r::Int; end``: NNlib ``pixel_shuffle``: ``(N, C r², H, W) -> (N, C, H r, W r)`` with
input channel ``c r² + i r + j`` going to row offset ``i``, column offset ``j`` — PyTorch's pixel_shuffle and
ONNX ``DepthToSpace(mode="CRD")``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..._validate import check_int
from ..registry import register_layer
from ..syntax import as_int
from .base import Grads, Layer, as_data, float_dtype


@register_layer
class PixelShuffle(Layer):
    """``PixelShuffle(r)``: ``(N, C r², H, W) -> (N, C, H r, W r)`` (NNlib ``pixel_shuffle``)."""

    flux_name = "PixelShuffle"
    batch_mode = "independent"
    flux_fields = {"r": "r"}
    onnx_ops = ("DepthToSpace",)
    structured = None

    def __init__(self, r: int) -> None:
        self.r = check_int("PixelShuffle r", r, min=1)

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 3 or in_shape[0] % (self.r * self.r):
            raise self._err(f"expects per-sample (C, H, W) with C divisible by r²={self.r * self.r}; got {in_shape}")
        c, h, w = in_shape
        return (c // (self.r * self.r), h * self.r, w * self.r)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, float_dtype(x), self)
        if x.ndim != 4:
            raise self._err(f"expects input of shape (N, C, H, W); got {x.shape}")
        c, ho, wo = self.output_shape(x.shape[1:])
        n, _, h, w = x.shape
        r = self.r
        y = x.reshape(n, c, r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c, ho, wo)
        return np.ascontiguousarray(y), x.shape

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        n, cin, h, w = cache
        r = self.r
        dx = dy.reshape(n, cin // (r * r), h, r, w, r).transpose(0, 1, 3, 5, 2, 4).reshape(cache)
        return np.ascontiguousarray(dx), {}

    def __repr__(self) -> str:
        return f"PixelShuffle({self.r})"

    @classmethod
    def from_syntax(cls, call: Any) -> "PixelShuffle":
        call.check_kw()
        if len(call.args) != 1:
            raise ValueError("expected PixelShuffle(r)")
        return cls(as_int(call.args[0], "r"))

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Any) -> "PixelShuffle":
        return cls(int(fields["r"]))

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "PixelShuffle":
        attrs = r.attrs(node)
        if attrs.get("mode", b"DCR") not in (b"CRD", "CRD"):
            raise r.error(node, "only DepthToSpace(mode=CRD) is NNlib's pixel_shuffle")
        return cls(int(attrs["blocksize"]))

    def to_onnx(self, g: Any, x: str) -> str:
        return g.node("DepthToSpace", [x], prefix="pixelshuffle", blocksize=self.r, mode="CRD")[0]
