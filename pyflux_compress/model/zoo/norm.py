"""Flux ``LayerNorm`` and ``Scale``.

``Scale`` (``src/layers/basic.jl``): ``struct Scale{F,A,B}; scale::A; bias::B; σ::F; end``,
``Scale(size...; bias=true, init=ones32)``, forward ``σ.(scale .* x .+ bias)``; ``scale`` and ``bias`` have
Flux shape ``size`` and line up with the *first* Flux dims, i.e. the last numpy axes (``scale.T`` broadcasts).

``LayerNorm`` (``src/layers/normalise.jl``): ``struct LayerNorm{F,D,T,N}; λ::F; diag::D; ϵ::T;
size::NTuple{N,Int}; affine::Bool; end``, ``LayerNorm(size..., λ=identity; affine=true, eps=1f-5)``;
``diag = affine ? Scale(size..., λ) : λ`` and forward ``diag(normalise(x; dims=1:length(size), eps))``.
Flux 0.14's ``normalise`` is ``(x .- μ) ./ (σ .+ ϵ)`` with the *biased standard deviation* σ (NNlib 0.9.2x's
newer ``normalise`` divides by ``sqrt(σ² + ϵ)`` instead; the difference is below ϵ/σ). ``Flux.state``:
``(λ = (), diag = (scale = ..., bias = ..., σ = ()), ϵ = 1f-5, size = (n,), affine = true)``.
Normalises over the last ``len(size)`` numpy axes of batch-first data (features of ``(N, F)``; ``(C, H, W)`` of
images for ``LayerNorm((W, H, C))``). ONNX: ReduceMean / Sqrt / Div composition (ONNX LayerNormalization uses
``sqrt(var + ϵ)``, not Flux 0.14's formula).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..._validate import check_bool, check_int, check_positive
from ..activations import Activation, get_activation, identity
from ._base import Grads, Layer, as_data, float_dtype


def _sizes(size: Any, who: str) -> tuple[int, ...]:
    items = size if isinstance(size, (tuple, list)) else (size,)
    if not items:
        raise ValueError(f"{who}: give at least one size")
    return tuple(check_int(f"{who} size", s, min=1) for s in items)


class Scale(Layer):
    """Flux ``Scale(size...; bias=true)``: element-wise ``σ.(scale .* x .+ bias)``, params of Flux shape ``size``."""

    flux_name = "Scale"
    flux_fields = {"scale": "scale", "bias": "bias", "σ": "activation"}
    flux_activation_param = 0
    compressible = ()
    structured = "channelwise"

    def __init__(self, *size: Any, activation: Any = identity, bias: bool = True) -> None:
        if size and isinstance(size[-1], (Activation, str)):
            activation, size = size[-1], size[:-1]
        shape = _sizes(tuple(size), "Scale")
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

    def __repr__(self) -> str:
        s = "Scale(" + ", ".join(str(v) for v in self.size)
        if self.activation is not identity:
            s += f", {self.activation!r}"
        if self.bias is None:
            s += "; bias=false"
        return s + ")"


class LayerNorm(Layer):
    """Flux ``LayerNorm(size..., λ=identity; affine=true, eps=1f-5)`` (see the module docstring).

    Attributes: ``size`` (Flux order), ``activation`` (λ), ``eps``, ``affine``, and when affine the ``diag``
    Scale's arrays ``scale`` / ``bias`` (Flux shape ``size``).
    """

    flux_name = "LayerNorm"
    flux_fields = {"λ": "activation", "diag": "diag", "ϵ": "eps", "size": "size", "affine": "affine"}
    compressible = ()
    structured = None        # normalises across channels: structured pruning must not cut through it

    def __init__(self, *size: Any, activation: Any = identity, affine: bool = True, eps: float = 1e-5) -> None:
        if size and isinstance(size[-1], (Activation, str)):
            activation, size = size[-1], size[:-1]
        if len(size) == 1 and isinstance(size[0], (tuple, list)):
            size = tuple(size[0])
        self.size = _sizes(tuple(size), "LayerNorm")
        self.activation: Activation = get_activation(activation)
        self.affine = check_bool("LayerNorm affine", affine)
        self.eps = check_positive("LayerNorm eps", eps)
        self.scale = np.ones(self.size, np.float32) if self.affine else None
        self.bias = np.zeros(self.size, np.float32) if self.affine else None

    def params(self) -> dict[str, np.ndarray]:
        return {"scale": self.scale, "bias": self.bias} if self.affine else {}

    @property
    def diag(self) -> Scale | None:
        """Flux's ``diag`` field: a Scale view of ``scale``/``bias`` (None when not affine)."""
        if not self.affine:
            return None
        s = Scale.__new__(Scale)
        s.scale, s.bias, s.activation = self.scale, self.bias, self.activation
        return s

    def _axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(ndim - len(self.size), ndim))

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        n = len(self.size)
        if len(in_shape) < n or in_shape[::-1][:n] != self.size:
            raise self._err(f"expects the last {n} axes to be {self.size[::-1]} (Flux size {self.size}); "
                            f"got per-sample shape {in_shape}")
        return in_shape

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, self.scale.dtype if self.affine else float_dtype(x), self)
        self.output_shape(x.shape[1:])
        axes = self._axes(x.ndim)
        xc = x - x.mean(axis=axes, keepdims=True)
        sd = np.sqrt(np.mean(xc * xc, axis=axes, keepdims=True))
        d = sd + np.asarray(self.eps, dtype=x.dtype)
        xhat = xc / d
        z = xhat * self.scale.T + self.bias.T if self.affine else xhat
        y = self.activation._fn(z) if self.activation is not identity else z
        return y, (xhat, sd, d, z, y, axes)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        xhat, sd, d, z, y, axes = cache
        dz = self.activation.grad(z, y, dy) if self.activation is not identity else dy
        grads: Grads = {}
        if self.affine:
            lead = tuple(range(dz.ndim - len(self.size)))
            grads["scale"] = (dz * xhat).sum(axis=lead).T
            grads["bias"] = dz.sum(axis=lead).T
            dxhat = dz * self.scale.T
        else:
            dxhat = dz
        # x̂ = (x - μ) / (σ + ϵ), σ the biased std: dx = (dx̂ - mean(dx̂) - x̂ mean(dx̂ x̂) d/σ) / d
        m1 = dxhat.mean(axis=axes, keepdims=True)
        m2 = (dxhat * xhat).mean(axis=axes, keepdims=True)
        ratio = np.divide(d, sd, out=np.zeros_like(sd), where=sd > 0)
        return (dxhat - m1 - xhat * m2 * ratio) / d, grads

    def __repr__(self) -> str:
        s = "LayerNorm(" + ", ".join(str(v) for v in self.size)
        if self.activation is not identity:
            s += f", {self.activation!r}"
        if not self.affine:
            s += "; affine=false"
        if self.eps != 1e-5:
            s += ("; " if self.affine else ", ") + f"eps={self.eps!r}"
        return s + ")"

    def flux_state(self) -> dict[str, Any]:
        diag = {"scale": self.scale, "bias": self.bias, "σ": ()} if self.affine else ()
        return {"λ": (), "diag": diag, "ϵ": np.float32(self.eps), "size": self.size, "affine": self.affine}

    def to_onnx(self, g: Any, x: str) -> str:
        """(x - mean) / (std + eps) over the last len(size) axes, then scale/bias, then λ."""
        axes = list(self._axes(g.rank(x)))

        def n(op: str, *ins: str, **kw: Any) -> str:
            return g.node(op, list(ins), prefix="layernorm", **kw)[0]

        def mean(t: str) -> str:          # ReduceMean takes axes as an input from opset 18 on
            if g.opset >= 18:
                return n("ReduceMean", t, g.const(g.fresh("ln_axes"), np.array(axes, np.int64)), keepdims=1)
            return n("ReduceMean", t, axes=axes, keepdims=1)

        xc = n("Sub", x, mean(x))
        var = mean(n("Mul", xc, xc))
        d = n("Add", n("Sqrt", var), g.const(g.fresh("ln_eps"), np.array(self.eps, np.float32)))
        y = n("Div", xc, d)
        if self.affine:
            y = n("Mul", y, g.const(g.fresh("ln_scale"), np.ascontiguousarray(self.scale.T, np.float32)))
            y = n("Add", y, g.const(g.fresh("ln_bias"), np.ascontiguousarray(self.bias.T, np.float32)))
        return self.activation.to_onnx(g, y)
