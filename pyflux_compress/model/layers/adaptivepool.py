"""Flux ``AdaptiveMaxPool``, ``AdaptiveMeanPool`` (``src/layers/conv.jl``).

* ``AdaptiveMaxPool(out)`` / ``AdaptiveMeanPool(out)``: ``struct AdaptiveMaxPool{S,O}; out::NTuple{O,Int};
  end``; Flux computes for input size ``n``: ``stride = n ÷ out``, ``k = n - (out - 1) * stride``, pad 0, then
  an ordinary max/mean pool — so the windows are those of ``MaxPool(k; stride)`` (not PyTorch's adaptive
  windows when ``n`` is not a multiple of ``out``). ``out`` is in Flux order ``(W, H)``. ONNX ``MaxPool`` /
  ``AveragePool`` with the kernel of the exported input size (export needs a fixed spatial size).

Backward follows NNlib's ``∇maxpool``: each output's gradient goes to the first maximum of its window.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..._validate import check_tuple
from .. import _conv
from ..registry import register_layer
from ..syntax import as_ints
from .pool import Pool2d


@register_layer
class AdaptiveMaxPool(Pool2d):
    """``AdaptiveMaxPool((ow, oh))``: pool to a fixed output size with Flux's window rule (module docstring)."""

    flux_name = "AdaptiveMaxPool"
    batch_mode = "independent"
    flux_fields = {"out": "out"}
    _mode = "max"

    def __init__(self, out: Any) -> None:
        self.out = check_tuple(f"{self.flux_name} out", tuple(out) if isinstance(out, list) else out, 2, min=1)

    def window(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(k, stride)`` in Flux order for an input of ``h x w``."""
        ow, oh = self.out
        if h < oh or w < ow:
            raise self._err(f"input {h}x{w} (HxW) is smaller than the output {oh}x{ow}")
        sw, sh = w // ow, h // oh
        return (w - (ow - 1) * sw, h - (oh - 1) * sh), (sw, sh)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = self._input(x)
        k, s = self.window(*x.shape[2:])
        self.input_hw = tuple(x.shape[2:])       # ONNX needs fixed windows: remember the size seen
        return _conv.pool2d_forward(x, k, s, (0, 0, 0, 0), self._mode)

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = self._per_sample(in_shape)
        self.window(in_shape[1], in_shape[2])
        self.input_hw = (in_shape[1], in_shape[2])
        return (in_shape[0], self.out[1], self.out[0])

    def __repr__(self) -> str:
        return f"{self.flux_name}({self.out})"

    @classmethod
    def from_syntax(cls, call: Any) -> "AdaptiveMaxPool":
        call.check_kw()
        if len(call.args) != 1:
            raise ValueError(f"expected {cls.flux_name}((w, h))")
        return cls(as_ints(call.args[0], "out"))

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Any) -> "AdaptiveMaxPool":
        return cls(tuple(fields["out"]))

    def to_onnx(self, g: Any, x: str) -> str:
        h, w = self.input_hw if getattr(self, "input_hw", None) else (None, None)
        if h is None:
            raise ValueError(f"{self!r}: ONNX export needs the input size: run the model once (or set "
                             "layer.input_hw = (h, w)) before exporting")
        (kw, kh), (sw, sh) = self.window(h, w)
        op = "MaxPool" if self._mode == "max" else "AveragePool"
        return g.node(op, [x], prefix=op.lower(), kernel_shape=[kh, kw], strides=[sh, sw],
                      pads=[0, 0, 0, 0])[0]


@register_layer
class AdaptiveMeanPool(AdaptiveMaxPool):
    """``AdaptiveMeanPool((ow, oh))``: mean pooling with Flux's adaptive window rule."""

    flux_name = "AdaptiveMeanPool"
    batch_mode = "independent"
    _mode = "mean"
