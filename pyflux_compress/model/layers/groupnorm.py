"""Flux ``GroupNorm`` (``src/layers/normalise.jl``); its normalisation kernel is shared with ``InstanceNorm``.

Flux 0.14-0.16::

    mutable struct GroupNorm{F,V,N,W}
      G::Int; λ::F; β::V; γ::V; μ::W; σ²::W; ϵ::N; momentum::N; affine::Bool; track_stats::Bool
      active::Union{Bool, Nothing}; chs::Int
    end
    GroupNorm(chs, G, λ=identity; affine=true, track_stats=false, active=nothing, eps=1f-5, momentum=0.1f0)

The channels are split into ``G`` groups of ``chs ÷ G``; every sample is normalised over (its group's
channels × all spatial positions) with the *biased* variance: ``(x - μ) / sqrt(σ² + ϵ)``, then ``γ``/``β``
per channel and ``λ``. With ``track_stats=false`` (Flux's default here) training and inference compute the
same thing; ``track_stats=true`` is not supported (ValueError). ``Flux.state`` fields: G, λ, β, γ, μ, σ²
(``nothing``), ϵ, momentum (Float32), affine, track_stats, active, chs. ONNX: Reshape to ``(N, G, -1)``,
``InstanceNormalization`` (unit scale), Reshape back, then per-channel ``Mul``/``Add``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_bool, check_int
from ..activations import identity
from ..registry import register_layer
from ..syntax import as_int
from .base import Grads, activation_of, as_data, float_dtype
from .batchnorm import Norm


def group_normalize(x: np.ndarray, groups: int, eps: float) -> tuple[np.ndarray, tuple]:
    """Per-sample normalisation of ``x (N, C, ...)`` over each of ``groups`` channel blocks and all other
    axes: ``(xhat, cache)`` with ``xhat`` shaped like ``x``."""
    n = x.shape[0]
    xg = x.reshape(n, groups, -1)
    mu = xg.mean(axis=2, keepdims=True)
    xc = xg - mu
    inv = 1 / np.sqrt((xc * xc).mean(axis=2, keepdims=True) + np.asarray(eps, x.dtype))
    xhat = xc * inv
    return xhat.reshape(x.shape), (xhat, inv)


def group_normalize_backward(cache: tuple, dxhat: np.ndarray) -> np.ndarray:
    """``dL/dx`` of :func:`group_normalize` given ``dL/dxhat``."""
    xhat, inv = cache
    d = dxhat.reshape(xhat.shape)
    m = xhat.shape[2]
    dx = (inv / m) * (m * d - d.sum(axis=2, keepdims=True) - xhat * (d * xhat).sum(axis=2, keepdims=True))
    return dx.reshape(dxhat.shape)


class PerSampleNorm(Norm):
    """Shared engine of GroupNorm/InstanceNorm: normalise per sample, then ``λ.(γ x̂ + β)`` per channel."""

    compressible = ()
    out_axes = {"beta": 0, "gamma": 0}
    structured: str | None = None

    _default_track = False

    def _init(self, chs: int, activation: Any, eps: float, momentum: float, affine: bool, track_stats: bool,
              active: bool | None) -> None:
        if check_bool(f"{self.flux_name} track_stats", track_stats):
            raise ValueError(f"{self.flux_name}: track_stats=true is not supported (per-sample statistics only)")
        super()._init(chs, activation, eps, momentum, affine, False, active)

    def _groups(self) -> int:
        raise NotImplementedError

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) < 2 or in_shape[0] != self.chs:
            raise self._err(f"expects per-sample input (C={self.chs}, spatial...); got {in_shape}")
        return in_shape

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, self.gamma.dtype if self.affine else float_dtype(x), self)
        self.output_shape(x.shape[1:])
        xhat, ncache = group_normalize(x, self._groups(), self.eps)
        z, y = self._affine_act(xhat)
        return y, (xhat, ncache, z, y)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        xhat, ncache, z, y = cache
        dxhat, grads = self._affine_act_backward(xhat, z, y, dy)
        return group_normalize_backward(ncache, dxhat), grads

    def _affine_act(self, xhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(z, y)``: ``z = γ x̂ + β`` per channel (or ``x̂``), ``y = λ.(z)``."""
        bshape = (1, self.chs) + (1,) * (xhat.ndim - 2)
        z = xhat * self.gamma.reshape(bshape) + self.beta.reshape(bshape) if self.affine else xhat
        return z, (self.activation._fn(z) if self.activation is not identity else z)

    def _affine_act_backward(self, xhat: np.ndarray, z: np.ndarray, y: np.ndarray,
                             dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        """``(dL/dx̂, {"beta", "gamma"} grads)`` of :meth:`_affine_act`."""
        dz = self.activation.grad(z, y, dy) if self.activation is not identity else dy
        grads: Grads = {}
        if self.affine:
            axes = (0,) + tuple(range(2, dz.ndim))
            grads = {"beta": dz.sum(axis=axes), "gamma": (dz * xhat).sum(axis=axes)}
            dz = dz * self.gamma.reshape((1, self.chs) + (1,) * (dz.ndim - 2))
        return dz, grads

    def _onnx_affine(self, g: Any, y: str, rank: int) -> str:
        if self.affine:
            shape = (1, self.chs) + (1,) * (rank - 2)
            y = g.node("Mul", [y, g.const(g.fresh("gn_gamma"), self.gamma.reshape(shape).astype(np.float32))],
                       prefix="norm")[0]
            y = g.node("Add", [y, g.const(g.fresh("gn_beta"), self.beta.reshape(shape).astype(np.float32))],
                       prefix="norm")[0]
        return self.activation.to_onnx(g, y)

    def _onnx_groups(self, g: Any, x: str, groups: int) -> str:
        """Reshape (N, G, -1) -> InstanceNormalization with unit scale -> Reshape back."""
        rank = g.rank(x)
        shape = g.node("Shape", [x], prefix="norm")[0]
        grouped = g.node("Reshape", [x, g.const(g.fresh("gn_shape"), np.array([0, groups, -1], np.int64))],
                         prefix="norm")[0]
        ones = g.const(g.fresh("gn_one"), np.ones(groups, np.float32))
        zeros = g.const(g.fresh("gn_zero"), np.zeros(groups, np.float32))
        normed = g.node("InstanceNormalization", [grouped, ones, zeros], prefix="norm", epsilon=float(self.eps))[0]
        back = g.node("Reshape", [normed, shape], prefix="norm")[0]
        return self._onnx_affine(g, back, rank)


@register_layer
class GroupNorm(PerSampleNorm):
    """Flux ``GroupNorm(chs, G, λ=identity; affine=true, eps=1f-5)`` (module docstring)."""

    flux_name = "GroupNorm"
    flux_fields = {"G": "G", "λ": "activation", "β": "beta", "γ": "gamma", "μ": "mu", "σ²": "sigma2", "ϵ": "eps",
                   "momentum": "momentum", "affine": "affine", "track_stats": "track_stats", "active": "active",
                   "chs": "chs"}

    def __init__(self, chs: int, G: int, activation: Any = identity, *, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_stats: bool = False, active: bool | None = None) -> None:
        self._init(chs, activation, eps, momentum, affine, track_stats, active)
        self.G = check_int("GroupNorm G", G, min=1)
        if self.chs % self.G:
            raise ValueError(f"GroupNorm: chs={self.chs} must be divisible by the number of groups G={self.G}")

    def _groups(self) -> int:
        return self.G

    def _repr_sizes(self) -> str:
        return f"{self.chs}, {self.G}"

    # structured pruning: channel c belongs to group c ÷ (chs ÷ G); a cut must keep as many channels in every
    # group, so each kept channel stays in its group and G still divides chs
    structured = "grouped"

    def channel_blocks(self) -> int:
        """Number of contiguous channel blocks structured pruning must cut evenly (the groups)."""
        return self.G

    def slice_outputs(self, keep: np.ndarray) -> None:
        counts = np.bincount(np.asarray(keep, dtype=np.int64) // (self.chs // self.G), minlength=self.G)
        if counts.size != self.G or counts.min() != counts.max() or counts[0] == 0:
            raise ValueError(f"{self!r}: structured pruning must keep the same number (>= 1) of channels in each "
                             f"of the {self.G} groups; got {counts.tolist()}")
        super().slice_outputs(keep)

    @classmethod
    def from_syntax(cls, call: Any) -> "GroupNorm":
        if len(call.args) not in (2, 3):
            raise ValueError("expected GroupNorm(chs, G[, λ])")
        act = call.activation(call.args[2]) if len(call.args) > 2 else None
        return cls(as_int(call.args[0], "chs"), as_int(call.args[1], "G"), act, **cls._kwargs(call))

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "GroupNorm":
        return cls(int(fields["chs"]), int(fields["G"]), activation_of(fields.get("λ")), **cls._options(fields))

    def to_onnx(self, g: Any, x: str) -> str:
        return self._onnx_groups(g, x, self.G)
