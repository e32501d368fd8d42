"""Flux ``InstanceNorm`` (``src/layers/normalise.jl``).

Flux 0.14-0.16: ``mutable struct InstanceNorm{F,V,N,W}; λ::F; β::V; γ::V; μ::W; σ²::W; ϵ::N; momentum::N;
affine::Bool; track_stats::Bool; active::Union{Bool, Nothing}; chs::Int; end`` and
``InstanceNorm(chs, λ=identity; affine=false, track_stats=false, eps=1f-5, momentum=0.1f0)``. Every sample
and channel is normalised over its spatial positions (biased variance, ``sqrt(σ² + ϵ)``), then ``γ``/``β``
(when affine) and ``λ``. ``track_stats=true`` is not supported. Same engine as :class:`GroupNorm` with one
group per channel. ONNX ``InstanceNormalization`` (exact: same formula).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register_layer
from .batchnorm import f32
from .groupnorm import PerSampleNorm


@register_layer
class InstanceNorm(PerSampleNorm):
    """Flux ``InstanceNorm(chs, λ=identity; affine=false, eps=1f-5)`` (module docstring)."""

    flux_name = "InstanceNorm"
    flux_fields = {"λ": "activation", "β": "beta", "γ": "gamma", "μ": "mu", "σ²": "sigma2", "ϵ": "eps",
                   "momentum": "momentum", "affine": "affine", "track_stats": "track_stats", "active": "active",
                   "chs": "chs"}
    onnx_ops = ("InstanceNormalization",)
    structured = "channelwise"            # each channel is normalised on its own: pruning may slice it
    _default_affine = False

    def __init__(self, chs: int, activation: Any = None, *, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = False, track_stats: bool = False, active: bool | None = None) -> None:
        self._init(chs, activation, eps, momentum, affine, track_stats, active)

    def _groups(self) -> int:
        return self.chs

    def output_shape(self, in_shape: tuple) -> tuple:
        if len(tuple(in_shape)) < 2:
            raise self._err(f"needs spatial dims: per-sample input (C, spatial...); got {tuple(in_shape)}")
        return super().output_shape(in_shape)

    def to_onnx(self, g: Any, x: str) -> str:
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
