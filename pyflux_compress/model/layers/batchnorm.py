"""Flux ``BatchNorm``; ONNX ``BatchNormalization`` (inference, running statistics)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_bool, check_fraction, check_int, check_positive
from ..activations import Activation, get_activation, identity
from ..registry import register_layer
from ..syntax import Name, as_int
from .base import Grads, Layer, activation_of, as_data


class Norm(Layer):
    """What Flux's normalisation layers share (BatchNorm, GroupNorm, InstanceNorm): the options ``λ``, ``ϵ``,
    ``momentum``, ``affine``, ``track_stats``, ``active``, ``chs``, per-channel ``β``/``γ`` (and ``μ``/``σ²``
    with ``track_stats``); their validation, printing, syntax keywords and ``Flux.state`` scalars."""

    _default_affine = True
    _default_track = True

    def _init(self, chs: int, activation: Any, eps: float, momentum: float, affine: bool, track_stats: bool,
              active: bool | None) -> None:
        who = self.flux_name
        self.chs = check_int(f"{who} chs", chs, min=1)
        self.activation: Activation = get_activation(activation)
        self.eps = check_positive(f"{who} eps", eps)
        self.momentum = check_fraction(f"{who} momentum", momentum, 0.0, 1.0)
        self.affine = check_bool(f"{who} affine", affine)
        self.track_stats = check_bool(f"{who} track_stats", track_stats)
        self.active = None if active is None else check_bool(f"{who} active", active)
        self.beta = np.zeros(self.chs, np.float32) if self.affine else None
        self.gamma = np.ones(self.chs, np.float32) if self.affine else None
        self.mu = np.zeros(self.chs, np.float32) if self.track_stats else None
        self.sigma2 = np.ones(self.chs, np.float32) if self.track_stats else None

    def params(self) -> dict[str, np.ndarray]:
        return {"beta": self.beta, "gamma": self.gamma} if self.affine else {}

    def _repr_sizes(self) -> str:
        return str(self.chs)

    def __repr__(self) -> str:
        s = f"{self.flux_name}({self._repr_sizes()}"
        if self.activation is not identity:
            s += f", {self.activation!r}"
        if self.affine != self._default_affine:
            s += f", affine={str(self.affine).lower()}"
        if self.track_stats != self._default_track:
            s += f", track_stats={str(self.track_stats).lower()}"
        if self.eps != 1e-5:
            s += f", eps={self.eps!r}"
        if self.momentum != 0.1:
            s += f", momentum={self.momentum!r}"
        if self.active is not None:
            s += f", active={str(self.active).lower()}"
        return s + ")"

    @classmethod
    def _kwargs(cls, call: Any) -> dict[str, Any]:
        """The keyword options of a parsed call (``ϵ`` is ``eps``; ``nothing`` is None)."""
        call.check_kw("eps", "ϵ", "momentum", "affine", "track_stats", "active", "initβ", "initγ")
        kw: dict[str, Any] = {}
        for key, v in call.kwargs.items():
            if key in ("initβ", "initγ"):
                raise ValueError(f"{key} cannot be given in syntax")
            if key in ("affine", "track_stats"):
                v = call.bool(key, True)
            if key == "active" and not (isinstance(v, bool) or (isinstance(v, Name) and v.name == "nothing")):
                raise ValueError("active must be true, false or nothing")
            kw["eps" if key == "ϵ" else key] = None if isinstance(v, Name) else v
        return kw

    @classmethod
    def from_syntax(cls, call: Any) -> "Norm":
        """``Name(chs[, λ]; options...)`` (GroupNorm adds its group count)."""
        if len(call.args) not in (1, 2):
            raise ValueError(f"expected {cls.flux_name}(chs[, λ])")
        act = call.activation(call.args[1]) if len(call.args) > 1 else None
        return cls(as_int(call.args[0], "chs"), act, **cls._kwargs(call))

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "Norm":
        return cls(int(fields["chs"]), activation_of(fields.get("λ")), **cls._options(fields))

    @staticmethod
    def _options(fields: dict[str, Any]) -> dict[str, Any]:
        """The keyword options from ``Flux.state`` fields (Float32 scalars as Julia prints them)."""
        active = fields.get("active")
        return dict(eps=f32(fields["ϵ"]), momentum=f32(fields["momentum"]), affine=bool(fields["affine"]),
                    track_stats=bool(fields["track_stats"]), active=active if isinstance(active, bool) else None)

    def flux_state(self) -> dict[str, Any]:
        state = super().flux_state()
        state["ϵ"], state["momentum"] = np.float32(self.eps), np.float32(self.momentum)  # Float32 in Flux
        return state

    def slice_outputs(self, keep: np.ndarray) -> None:
        super().slice_outputs(keep)
        self.chs = len(keep)


@register_layer
class BatchNorm(Norm):
    """Flux ``BatchNorm(chs, λ; eps=1f-5, momentum=0.1f0, affine=true, track_stats=true, active=nothing)``.

    Normalises over every axis except numpy axis 1 (channels; Flux's dim N-1), then ``λ.(γ .* x̂ .+ β)``.
    Batch statistics are used when ``active`` is True, or in training (``train=True``) unless ``active`` is
    False, or always when ``track_stats=False``; otherwise the running ``mu``/``sigma2``. Whenever batch
    statistics are used and ``track_stats`` is on, the running stats are updated as Flux does::

        mu     = (1 - momentum) * mu     + momentum * batch_mean
        sigma2 = (1 - momentum) * sigma2 + momentum * m/(m-1) * batch_var   # m = elements per channel
    """

    flux_name = "BatchNorm"
    batch_mode = "inference"          # training normalises by (and updates from) whole-batch statistics
    flux_fields = {"λ": "activation", "β": "beta", "γ": "gamma", "μ": "mu", "σ²": "sigma2", "ϵ": "eps",
                   "momentum": "momentum", "affine": "affine", "track_stats": "track_stats", "active": "active",
                   "chs": "chs"}
    flux_activation_param = 0
    onnx_ops = ("BatchNormalization",)
    out_axes = {"beta": 0, "gamma": 0, "mu": 0, "sigma2": 0}
    structured = "channelwise"

    def __init__(self, chs: int, activation: Any = identity, *, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_stats: bool = True, active: bool | None = None) -> None:
        self._init(chs, activation, eps, momentum, affine, track_stats, active)

    def state(self) -> dict[str, np.ndarray]:
        """Non-trainable running statistics (Flux ``μ``, ``σ²``)."""
        return {"mu": self.mu, "sigma2": self.sigma2} if self.track_stats else {}

    def _dtype(self) -> np.dtype:
        for arr in (self.gamma, self.mu):
            if arr is not None:
                return arr.dtype
        return np.dtype(np.float32)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, self._dtype(), self)
        if x.ndim < 2 or x.shape[1] != self.chs:
            raise self._err(f"expects {self.chs} channels on axis 1, got input of shape {x.shape}")
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, self.chs) + (1,) * (x.ndim - 2)
        use_batch = self.active is True or (train and self.active is not False) or not self.track_stats
        if use_batch:
            mean = x.mean(axis=axes, keepdims=True)
            xc = x - mean
            var = np.mean(xc * xc, axis=axes, keepdims=True)  # biased (corrected=false), as Flux normalises
            if self.track_stats:
                m = x.size // self.chs
                mom = self.momentum
                corr = m / (m - 1) if m > 1 else 1.0
                self.mu = ((1 - mom) * self.mu + mom * mean.reshape(-1)).astype(self.mu.dtype)
                self.sigma2 = ((1 - mom) * self.sigma2 + mom * corr * var.reshape(-1)).astype(self.sigma2.dtype)
        else:
            xc = x - self.mu.reshape(bshape)
            var = self.sigma2.reshape(bshape)
        inv = 1 / np.sqrt(var + self.eps)
        xhat = xc * inv
        z = xhat * self.gamma.reshape(bshape) + self.beta.reshape(bshape) if self.affine else xhat
        y = self.activation._fn(z) if self.activation is not identity else z
        return y, (xhat, inv, z, y, use_batch, axes, bshape)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        xhat, inv, z, y, use_batch, axes, bshape = cache
        dz = self.activation.grad(z, y, dy) if self.activation is not identity else dy
        grads: Grads = {}
        if self.affine:
            grads["beta"] = dz.sum(axis=axes)
            grads["gamma"] = (dz * xhat).sum(axis=axes)
            dxhat = dz * self.gamma.reshape(bshape)
        else:
            dxhat = dz
        if use_batch:
            m = dz.size // self.chs
            s1 = dxhat.sum(axis=axes, keepdims=True)
            s2 = (dxhat * xhat).sum(axis=axes, keepdims=True)
            dx = (inv / m) * (m * dxhat - s1 - xhat * s2)
        else:
            dx = dxhat * inv
        return dx, grads

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        # per-sample shape: channels are its first axis (Flux dim N-1), or the only axis for (N, C) data
        if len(in_shape) == 0 or in_shape[0] != self.chs:
            got = in_shape[0] if in_shape else "no axis"
            raise self._err(f"expects {self.chs} channels, got {got} (per-sample shape {in_shape})")
        return in_shape

    def to_onnx(self, g: Any, x: str) -> str:
        """Inference (running statistics) -> ``BatchNormalization``, then λ."""
        if self.active is True:
            raise ValueError(f"{self!r} uses batch statistics at inference (active=true); set active=None/False "
                             "before exporting")
        if not self.track_stats:
            raise ValueError(f"{self!r} (track_stats=false) has no running statistics to export")
        ones, zeros = np.ones(self.chs, np.float32), np.zeros(self.chs, np.float32)
        p = g.fresh("bn")
        ins = [g.const(f"{p}_{n}", np.asarray(a, np.float32).reshape(self.chs)) for n, a in
               (("scale", self.gamma if self.affine else ones), ("B", self.beta if self.affine else zeros),
                ("mean", self.mu), ("var", self.sigma2))]
        (y,) = g.node("BatchNormalization", [x, *ins], prefix=p, epsilon=float(self.eps))
        return self.activation.to_onnx(g, y)

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "BatchNorm":
        scale, b, mean, var = (r.const(node, i).astype(np.float32) for i in range(1, 5))
        eps = float(f"{float(r.attrs(node).get('epsilon', 1e-5)):.7g}")  # ONNX float32: 1e-5 -> 9.99999975e-06
        layer = cls(int(scale.size), eps=eps)
        layer.gamma, layer.beta, layer.mu, layer.sigma2 = scale.copy(), b.copy(), mean.copy(), var.copy()
        return layer


def f32(x: Any) -> float:
    """A stored Float32 as the short decimal Julia prints (1f-5 -> 1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(x)))
