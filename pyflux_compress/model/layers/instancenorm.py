"""Flux ``InstanceNorm`` (``src/layers/normalise.jl``).

Flux 0.14-0.16: ``mutable struct InstanceNorm{F,V,N,W}; λ::F; β::V; γ::V; μ::W; σ²::W; ϵ::N; momentum::N;
affine::Bool; track_stats::Bool; active::Union{Bool, Nothing}; chs::Int; end`` and
``InstanceNorm(chs, λ=identity; affine=false, track_stats=false, eps=1f-5, momentum=0.1f0)``. Every sample
and channel is normalised over its spatial positions (biased variance, ``sqrt(σ² + ϵ)``), then ``γ``/``β``
(when affine) and ``λ``. Same engine as :class:`GroupNorm` with one group per channel. ONNX
``InstanceNormalization`` (exact: same formula).

``track_stats=true`` follows Flux's ``_norm_layer_forward``/``_track_stats!`` (normalise.jl, 0.14-0.16): in
training (or ``active=true``) each sample is still normalised by its own statistics, and the running ``μ``/``σ²``
move towards the batch mean of the per-sample means and biased variances, the variance scaled by ``m/(m-1)``
(``m`` = spatial positions); in test mode (or ``active=false``) every sample is normalised by the running
statistics instead, which exports as ONNX ``BatchNormalization``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register_layer
from .base import Grads, as_data
from .batchnorm import Norm, f32
from .groupnorm import PerSampleNorm


@register_layer
class InstanceNorm(PerSampleNorm):
    """Flux ``InstanceNorm(chs, λ=identity; affine=false, track_stats=false, eps=1f-5, momentum=0.1f0)``
    (module docstring)."""

    flux_name = "InstanceNorm"
    flux_fields = {"λ": "activation", "β": "beta", "γ": "gamma", "μ": "mu", "σ²": "sigma2", "ϵ": "eps",
                   "momentum": "momentum", "affine": "affine", "track_stats": "track_stats", "active": "active",
                   "chs": "chs"}
    onnx_ops = ("InstanceNormalization",)
    structured = "channelwise"            # each channel is normalised on its own: pruning may slice it
    _default_affine = False

    def __init__(self, chs: int, activation: Any = None, *, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = False, track_stats: bool = False, active: bool | None = None) -> None:
        Norm._init(self, chs, activation, eps, momentum, affine, track_stats, active)  # track_stats allowed

    def _groups(self) -> int:
        return self.chs

    @classmethod
    def yields_in_bare_state(cls, fields: dict[str, Any]) -> bool:
        # BatchNorm has the same Flux.state fields; with running statistics both normalise every sample by them
        # at inference, so a bare state tree goes to (the far more common) BatchNorm
        return bool(fields.get("track_stats"))

    def state(self) -> dict[str, np.ndarray]:
        """Non-trainable running statistics (Flux ``μ``, ``σ²``) when ``track_stats``."""
        return {"mu": self.mu, "sigma2": self.sigma2} if self.track_stats else {}

    def _running(self, train: bool) -> bool:
        """Whether this call normalises by the running statistics (Flux: test mode with tracked stats)."""
        return self.track_stats and not (self.active is True or (train and self.active is not False))

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        if not self.track_stats:
            return super().forward(x, train, rng)
        x = as_data(x, self.gamma.dtype if self.affine else self.mu.dtype, self)
        self.output_shape(x.shape[1:])
        if not self._running(train):
            xs = x.reshape(x.shape[0], self.chs, -1)
            m = xs.shape[2]
            mean = xs.mean(axis=2)                              # (N, C): each sample's statistics
            var = ((xs - mean[:, :, None]) ** 2).mean(axis=2)   # biased, as Flux normalises
            mom, corr = self.momentum, (m / (m - 1) if m > 1 else 1.0)
            self.mu = ((1 - mom) * self.mu + mom * mean.mean(axis=0)).astype(self.mu.dtype)
            self.sigma2 = ((1 - mom) * self.sigma2 + mom * corr * var.mean(axis=0)).astype(self.sigma2.dtype)
            y, cache = super().forward(x, train, rng)
            return y, (False, cache)
        bshape = (1, self.chs) + (1,) * (x.ndim - 2)
        inv = (1 / np.sqrt(self.sigma2 + np.asarray(self.eps, self.sigma2.dtype))).reshape(bshape)
        xhat = (x - self.mu.reshape(bshape)) * inv
        z, y = self._affine_act(xhat)
        return y, (True, (xhat, inv, z, y))

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        if not self.track_stats:
            return super().backward(cache, dy)
        running, inner = cache
        if not running:
            return super().backward(inner, dy)
        xhat, inv, z, y = inner
        dxhat, grads = self._affine_act_backward(xhat, z, y, dy)
        return dxhat * inv, grads

    def output_shape(self, in_shape: tuple) -> tuple:
        if len(tuple(in_shape)) < 2:
            raise self._err(f"needs spatial dims: per-sample input (C, spatial...); got {tuple(in_shape)}")
        return super().output_shape(in_shape)

    def to_onnx(self, g: Any, x: str) -> str:
        if self.track_stats and self.active is not True:   # inference normalises by the running statistics
            scale = self.gamma if self.affine else np.ones(self.chs, np.float32)
            bias = self.beta if self.affine else np.zeros(self.chs, np.float32)
            p = g.fresh("in")
            ins = [g.const(f"{p}_{n}", np.asarray(a, np.float32).reshape(self.chs))
                   for n, a in (("scale", scale), ("B", bias), ("mean", self.mu), ("var", self.sigma2))]
            (y,) = g.node("BatchNormalization", [x, *ins], prefix=p, epsilon=float(self.eps))
            return self.activation.to_onnx(g, y)
        scale = self.gamma if self.affine else np.ones(self.chs, np.float32)
        bias = self.beta if self.affine else np.zeros(self.chs, np.float32)
        y = g.node("InstanceNormalization", [x, g.const(g.fresh("in_scale"), np.asarray(scale, np.float32)),
                                             g.const(g.fresh("in_bias"), np.asarray(bias, np.float32))],
                   prefix="instancenorm", epsilon=float(self.eps))[0]
        return self.activation.to_onnx(g, y)

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "InstanceNorm":
        scale, bias = r.const(node, 1).astype(np.float32), r.const(node, 2).astype(np.float32)
        eps = f32(r.attrs(node).get("epsilon", 1e-5))
        affine = not (np.all(scale == 1) and np.all(bias == 0))
        layer = cls(scale.size, eps=eps, affine=affine)
        if affine:
            layer.gamma[...], layer.beta[...] = scale, bias
        return layer
