"""Flux ``LayerNorm``.

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

from ..._validate import check_bool, check_positive
from ..activations import Activation, get_activation, identity
from .. import registry
from ..registry import register_layer
from ..syntax import as_int
from .base import Grads, Layer, activation_of, as_data, float_dtype
from .scale import Scale, flux_sizes


@register_layer
class LayerNorm(Layer):
    """Flux ``LayerNorm(size..., λ=identity; affine=true, eps=1f-5)`` (see the module docstring).

    Attributes: ``size`` (Flux order), ``activation`` (λ), ``eps``, ``affine``, ``diag`` (Flux's field: a
    :class:`Scale` when affine, else None) whose arrays are the parameters ``scale`` / ``bias`` (Flux shape
    ``size``).
    """

    flux_name = "LayerNorm"
    batch_mode = "independent"
    flux_fields = {"λ": "activation", "diag": "diag", "ϵ": "eps", "size": "size", "affine": "affine"}
    compressible = ()
    structured = None        # normalises across channels: structured pruning must not cut through it
    container = True         # when affine: diag (a Scale) is a child, path "<layer>.diag" as in Julia

    def __init__(self, *size: Any, activation: Any = identity, affine: bool = True, eps: float = 1e-5) -> None:
        if size and isinstance(size[-1], (Activation, str)):
            activation, size = size[-1], size[:-1]
        if len(size) == 1 and isinstance(size[0], (tuple, list)):
            size = tuple(size[0])
        self.size = flux_sizes(tuple(size), "LayerNorm")
        self.activation: Activation = get_activation(activation)
        self.affine = check_bool("LayerNorm affine", affine)
        self.eps = check_positive("LayerNorm eps", eps)
        self.diag: Scale | None = Scale(*self.size, activation=self.activation) if self.affine else None
        self.container = self.affine             # a non-affine LayerNorm is a leaf (it has no child)

    # the parameters live in diag (so loading Flux.state's diag = (scale, bias, σ) writes them in place)
    @property
    def scale(self) -> np.ndarray | None:
        return None if self.diag is None else self.diag.scale

    @scale.setter
    def scale(self, value: np.ndarray) -> None:
        self.diag.scale = value

    @property
    def bias(self) -> np.ndarray | None:
        return None if self.diag is None else self.diag.bias

    @bias.setter
    def bias(self, value: np.ndarray) -> None:
        self.diag.bias = value

    def params(self) -> dict[str, np.ndarray]:
        return {"diag.scale": self.scale, "diag.bias": self.bias} if self.affine else {}

    def _dtype(self) -> np.dtype:
        return self.scale.dtype if self.affine else np.dtype(np.float32)

    def children(self) -> dict[str, Layer]:
        return {"diag": self.diag} if self.diag is not None else {}

    def with_children(self, children: dict[str, Layer], as_type: type | None = None) -> "LayerNorm":
        new = (as_type or type(self)).__new__(as_type or type(self))
        new.__dict__.update(self.__dict__)
        new.diag = children.get("diag")
        return new

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
            grads["diag.scale"] = (dz * xhat).sum(axis=lead).T
            grads["diag.bias"] = dz.sum(axis=lead).T
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
        return {"λ": (), "diag": self.diag if self.affine else (), "ϵ": np.float32(self.eps), "size": self.size,
                "affine": self.affine}

    @classmethod
    def from_syntax(cls, call: Any) -> "LayerNorm":
        call.check_kw("affine", "eps")
        args = list(call.args)
        act = call.activation(args.pop()) if len(args) > 1 and not isinstance(args[-1], (int, tuple)) else identity
        if len(args) == 1 and isinstance(args[0], tuple):
            args = list(args[0])
        return cls(*[as_int(a, "LayerNorm size") for a in args], activation=act, affine=call.bool("affine", True),
                   eps=float(call.kwargs.get("eps", 1e-5)))

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Any) -> "LayerNorm":
        """Sizes from ``size``; when affine, ``diag`` (a Flux.Scale struct or state) is built as a child."""
        affine = bool(fields.get("affine", True))
        eps = float(str(np.float32(fields.get("ϵ", 1e-5))))
        layer = cls(*tuple(fields["size"]), activation=activation_of(fields.get("λ")), affine=affine, eps=eps)
        if affine and build is not None and fields.get("diag") not in (None, ()):
            diag = build(fields["diag"], "diag")
            if not isinstance(diag, Scale) or diag.size != layer.size:
                raise ValueError(f"LayerNorm diag must be a Scale of size {layer.size}; got {diag!r}")
            diag.activation = layer.activation
            layer.diag = diag
        return layer

    @classmethod
    def from_onnx_region(cls, region: list, r: Any) -> "tuple[list, str] | None":
        """Import hook of the generic ONNX walker: the subgraph :meth:`to_onnx` writes (ReduceMean, Sub, Mul,
        ReduceMean, Sqrt, Add ϵ, Div), then the diag ``Mul``/``Add`` and λ if they follow. None if it is not it."""
        if sorted(n.op_type for n in region) != ["Add", "Div", "Mul", "ReduceMean", "ReduceMean", "Sqrt", "Sub"] \
                or region[-1].op_type != "Div":
            return None
        x = r.current
        first = next((n for n in region if n.op_type == "ReduceMean" and x in n.input), None)
        add = next(n for n in region if n.op_type == "Add")
        eps = [r.consts[i] for i in add.input if i in r.consts]
        rank = r.rank(x)
        if first is None or len(eps) != 1 or not rank:
            return None
        axes = r.attrs(first).get("axes")
        axes = sorted(int(a) % rank for a in (r.const(first, 1) if axes is None else axes))
        if axes != list(range(rank - len(axes), rank)):
            return None
        y = region[-1].output[0]
        mul = r.follow(y, "Mul")
        scale = next((r.consts[i] for i in (mul.input if mul is not None else ()) if i in r.consts), None)
        act = identity
        if scale is not None and scale.ndim == len(axes):
            size = tuple(int(d) for d in scale.shape[::-1])
            y = mul.output[0]
            bias_add = r.follow(y, "Add")
            bias = next((r.consts[i] for i in (bias_add.input if bias_add is not None else ()) if i in r.consts),
                        None)
            if bias is not None and bias.shape == scale.shape:
                y = bias_add.output[0]
            nxt = r.consumers_of(y)
            classes = registry.by_onnx_op(nxt[0].op_type) if len(nxt) == 1 else []
            if classes and issubclass(classes[0], Activation):     # λ is diag's σ: read it here, not folded later
                act, y = classes[0].from_onnx(nxt[0], r), nxt[0].output[0]
            layer = cls(*size, activation=act, eps=float(str(np.float32(eps[0].reshape(-1)[0]))))
            layer.diag.scale = np.ascontiguousarray(scale.T, np.float32)
            layer.diag.bias = np.ascontiguousarray(bias.T, np.float32) if bias is not None else \
                np.zeros_like(layer.diag.scale)
            return [layer], y
        shape = r.shape(x)
        if shape is None or any(d is None for d in shape[-len(axes):]):
            return None
        size = tuple(int(d) for d in shape[-len(axes):][::-1])
        return [cls(*size, affine=False, eps=float(str(np.float32(eps[0].reshape(-1)[0]))))], y

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
        if self.diag is not None:                # Scale: Mul, Add, then λ
            return self.diag.to_onnx(g, y)
        return self.activation.to_onnx(g, y)
