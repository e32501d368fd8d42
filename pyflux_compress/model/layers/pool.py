"""Flux pooling: ``MaxPool``, ``MeanPool`` (ONNX ``MaxPool`` / ``AveragePool``), ``GlobalMeanPool``."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_tuple
from .. import _conv
from ..registry import register_layer
from ..syntax import as_ints, as_pad
from .base import Grads, Layer, as_data, float_dtype, tuple_str
from .conv import conv_pad, spatial_attrs, spatial_from_onnx


class Pool2d(Layer):
    """What the 2-D window pools share (MaxPool/MeanPool, GlobalMaxPool, AdaptiveMax/MeanPool): batch-first
    ``(N, C, H, W)`` input checked with errors naming the layer, NNlib's pooling backward, channel-wise."""

    structured = "channelwise"

    def _input(self, x: Any) -> np.ndarray:
        x = as_data(x, float_dtype(x), self)
        if x.ndim != 4:
            raise self._err(f"expects input of shape (N, C, H, W); got {x.shape}")
        return x

    def _per_sample(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise self._err(f"expects per-sample input (C, H, W); got {in_shape}")
        return in_shape

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        return _conv.pool2d_backward(cache, dy), {}


class Pool(Pool2d):
    """Shared code of MaxPool / MeanPool (Flux fields k, pad, stride)."""

    flux_fields = {"k": "k", "pad": "pad", "stride": "stride"}
    _mode = "max"
    _onnx_op = "MaxPool"

    def __init__(self, k: Any, *, pad: Any = 0, stride: Any = None) -> None:
        who = self.flux_name
        self.k = check_tuple(f"{who} k", tuple(k) if isinstance(k, list) else k, 2, min=1)
        self.stride = self.k if stride is None else check_tuple(f"{who} stride", stride, 2, min=1)
        self.pad = conv_pad(pad, self.k, (1, 1), who)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = self._input(x)
        self.output_shape(x.shape[1:])
        return _conv.pool2d_forward(x, self.k, self.stride, self.pad, self._mode)

    def output_shape(self, in_shape: tuple) -> tuple:
        c, h, w = self._per_sample(in_shape)
        kw, kh = self.k
        ho = _conv.out_size(h, kh, self.stride[1], self.pad[2], self.pad[3])
        wo = _conv.out_size(w, kw, self.stride[0], self.pad[0], self.pad[1])
        if ho < 1 or wo < 1:
            raise self._err(f"input {h}x{w} (HxW) is smaller than the pooling window")
        return (c, ho, wo)

    def __repr__(self) -> str:
        s = f"{self.flux_name}({self.k}"
        if any(self.pad):
            s += f", pad={tuple_str(self.pad)}"
        if self.stride != self.k:
            s += f", stride={tuple_str(self.stride)}"
        return s + ")"

    @classmethod
    def from_syntax(cls, call: Any) -> "Pool":
        call.check_kw("pad", "stride")
        if len(call.args) != 1:
            raise ValueError(f"expected {cls.flux_name}((kw, kh)[; pad, stride])")
        kw = {key: (as_pad(v) if key == "pad" else as_ints(v, key)) for key, v in call.kwargs.items()}
        return cls(as_ints(call.args[0], "window size"), **kw)

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "Pool":
        return cls(tuple(fields["k"]), pad=tuple(fields["pad"]), stride=tuple(fields["stride"]))

    def to_onnx(self, g: Any, x: str) -> str:
        """NNlib's meanpool divides by the full window, padding included: ``count_include_pad=1``."""
        extra = {"count_include_pad": 1} if self._mode == "mean" else {}
        return g.node(self._onnx_op, [x], prefix=self.flux_name.lower(), **spatial_attrs(self), **extra)[0]

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "Pool":
        attrs = r.attrs(node)
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or attrs.get("ceil_mode", 0):
            raise r.error(node, "auto_pad / ceil_mode pooling has no Flux equivalent")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise r.error(node, "dilated pooling has no Flux equivalent")
        kh, kw = attrs["kernel_shape"]
        sp = spatial_from_onnx({k: v for k, v in attrs.items() if k != "kernel_shape"})
        if cls._mode == "mean" and any(sp["pad"]) and not attrs.get("count_include_pad", 0):
            raise r.error(node, "NNlib's meanpool counts padding: need count_include_pad=1")
        return cls((kw, kh), pad=sp["pad"], stride=sp["stride"])


@register_layer
class MaxPool(Pool):
    """Max pooling over windows ``k = (kw, kh)``; ``stride`` defaults to ``k``; padding is ignored (-inf)."""

    flux_name = "MaxPool"
    batch_mode = "independent"
    onnx_ops = ("MaxPool",)
    _mode = "max"


@register_layer
class MeanPool(Pool):
    """Mean pooling over windows ``k = (kw, kh)``; ``stride`` defaults to ``k``; divides by ``kw*kh``."""

    flux_name = "MeanPool"
    batch_mode = "independent"
    onnx_ops = ("AveragePool",)
    _mode = "mean"
    _onnx_op = "AveragePool"


@register_layer
class GlobalMeanPool(Layer):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C, 1, 1)`` (Flux keeps the singleton dims)."""

    flux_name = "GlobalMeanPool"
    batch_mode = "independent"
    onnx_ops = ("GlobalAveragePool",)
    structured = "channelwise"

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, float_dtype(x), self)
        if x.ndim < 3:
            raise self._err(f"expects input (N, C, spatial...); got {x.shape}")
        axes = tuple(range(2, x.ndim))
        return x.mean(axis=axes, keepdims=True), x.shape

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        shape = cache
        m = int(np.prod(shape[2:]))
        return np.broadcast_to(dy / np.asarray(m, dtype=dy.dtype), shape).copy(), {}

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) < 2:
            raise self._err(f"expects per-sample input (C, spatial...); got {in_shape}")
        return (in_shape[0],) + (1,) * (len(in_shape) - 1)

    def __repr__(self) -> str:
        return "GlobalMeanPool()"

    @classmethod
    def from_syntax(cls, call: Any) -> "GlobalMeanPool":
        if call.args or call.kwargs:
            raise ValueError("GlobalMeanPool() takes no arguments")
        return cls()

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "GlobalMeanPool":
        return cls()

    def to_onnx(self, g: Any, x: str) -> str:
        return g.node("GlobalAveragePool", [x])[0]

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "GlobalMeanPool":
        return cls()
