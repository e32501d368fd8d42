"""Flux ``Scale`` (``src/layers/basic.jl``).

``struct Scale{F,A,B}; scale::A; bias::B; σ::F; end``, ``Scale(size...; bias=true, init=ones32)``, forward
``σ.(scale .* x .+ bias)``; ``scale`` and ``bias`` have Flux shape ``size`` and line up with the *first* Flux
dims, i.e. the last numpy axes (``scale.T`` broadcasts against batch-first data). ``Flux.state`` is
``(scale = ..., bias = ..., σ = ())``. ONNX: ``Mul`` + ``Add``. Also LayerNorm's ``diag``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..._validate import check_bool, check_int
from ..activations import Activation, get_activation, identity
from ..registry import register_layer
from .base import Grads, Layer, activation_of, as_data


def flux_sizes(size: Any, who: str) -> tuple[int, ...]:
    """Positive int sizes (Flux order) from ``n`` or ``(n, m, ...)``."""
    items = size if isinstance(size, (tuple, list)) else (size,)
    if not items:
        raise ValueError(f"{who}: give at least one size")
    return tuple(check_int(f"{who} size", s, min=1) for s in items)


@register_layer
class Scale(Layer):
    """Flux ``Scale(size...; bias=true)``: element-wise ``σ.(scale .* x .+ bias)``, params of Flux shape ``size``."""

    flux_name = "Scale"
    batch_mode = "independent"
    flux_fields = {"scale": "scale", "bias": "bias", "σ": "activation"}
    flux_activation_param = 0
    compressible = ()
    structured = "channelwise"

    def __init__(self, *size: Any, activation: Any = identity, bias: bool = True) -> None:
        if size and isinstance(size[-1], (Activation, str)):
            activation, size = size[-1], size[:-1]
        shape = flux_sizes(tuple(size), "Scale")
        self.scale = np.ones(shape, np.float32)
        self.bias = np.zeros(shape, np.float32) if check_bool("Scale bias", bias) else None
        self.activation: Activation = get_activation(activation)

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(self.scale.shape)

    def params(self) -> dict[str, np.ndarray]:
        return {"scale": self.scale} if self.bias is None else {"scale": self.scale, "bias": self.bias}

    def _check(self, shape: tuple) -> None:
        n = len(self.size)
        if len(shape) < n or tuple(shape[::-1][:n]) != self.size:
            raise self._err(f"expects the last {n} axes to be {self.size[::-1]} (Flux size {self.size}); "
                            f"got per-sample shape {tuple(shape)}")

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, self.scale.dtype, self)
        self._check(x.shape[1:])
        z = x * self.scale.T
        if self.bias is not None:
            z = z + self.bias.T
        y = self.activation._fn(z) if self.activation is not identity else z
        return y, (x, z, y)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        x, z, y = cache
        dz = self.activation.grad(z, y, dy) if self.activation is not identity else dy
        lead = tuple(range(dz.ndim - self.scale.ndim))
        grads = {"scale": (dz * x).sum(axis=lead).T}
        if self.bias is not None:
            grads["bias"] = dz.sum(axis=lead).T
        return dz * self.scale.T, grads

    def output_shape(self, in_shape: tuple) -> tuple:
        self._check(tuple(in_shape))
        return tuple(in_shape)

    @classmethod
    def from_syntax(cls, call: Any) -> "Scale":
        call.check_kw("bias", "init")
        call.no_init()
        args = list(call.args)
        act = call.activation(args.pop()) if args and not isinstance(args[-1], int) else identity
        if not args:
            raise ValueError("expected Scale(size...[, σ])")
        return cls(*[v if isinstance(v, int) else -1 for v in args], activation=act, bias=call.bool("bias", True))

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Any) -> "Scale":
        s = fields.get("scale")
        if not isinstance(s, np.ndarray):
            raise ValueError("Scale scale must be an array")
        return cls(*s.shape, activation=activation_of(fields.get("σ")),
                   bias=isinstance(fields.get("bias"), np.ndarray))

    def to_onnx(self, g: Any, x: str) -> str:
        y = g.node("Mul", [x, g.const(g.fresh("scale_w"), np.ascontiguousarray(self.scale.T, np.float32))],
                   prefix="scale")[0]
        if self.bias is not None:
            y = g.node("Add", [y, g.const(g.fresh("scale_b"), np.ascontiguousarray(self.bias.T, np.float32))],
                       prefix="scale")[0]
        return self.activation.to_onnx(g, y)

    def __repr__(self) -> str:
        s = "Scale(" + ", ".join(str(v) for v in self.size)
        if self.activation is not identity:
            s += f", {self.activation!r}"
        if self.bias is None:
            s += "; bias=false"
        return s + ")"

