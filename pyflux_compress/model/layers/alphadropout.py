"""Flux ``AlphaDropout`` (``src/layers/normalise.jl``): dropout that keeps SELU's self-normalisation.

Flux 0.14-0.16: ``mutable struct AlphaDropout{F,R<:AbstractRNG}; p::F; active::Union{Bool, Nothing}; rng::R;
end``; in training (or ``active=true``) with ``α′ = -1.7580993408473766`` (``selu(-Inf)``),
``A = 1 / sqrt((1 - p) (1 + p α′²))``, ``B = -A α′ p``: ``y = A .* ifelse.(rand .> p, x, α′) .+ B``;
identity otherwise (and for ``p = 0``). ``Flux.state``: ``(p = p, active = nothing, rng = ())``. ONNX: dropped
(inference is the identity).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register_layer
from .base import as_data, float_dtype
from .dropout import Dropout

ALPHA_PRIME = -1.7580993408473766


@register_layer
class AlphaDropout(Dropout):
    """``AlphaDropout(p; active=nothing)``; ``rng``/``seed`` seed the layer's generator (Flux's ``rng``).
    Options, printing, JLD2, backward and ONNX (dropped) are :class:`Dropout`'s, without ``dims``."""

    flux_name = "AlphaDropout"
    flux_fields = {"p": "p", "active": "active", "rng": "rng"}
    onnx_ops = ()

    def __init__(self, p: float, *, active: bool | None = None, rng: np.random.Generator | None = None,
                 seed: int | None = None) -> None:
        super().__init__(p, active=active, rng=rng, seed=seed)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, float_dtype(x), self)
        on = self.active is True or (train and self.active is not False)
        if not on or self.p == 0:
            return x, None
        if self.p == 1:
            return np.zeros_like(x), np.zeros_like(x)
        a = 1 / np.sqrt((1 - self.p) * (1 + self.p * ALPHA_PRIME ** 2))
        b = -a * ALPHA_PRIME * self.p
        keep = (self.rng if rng is None else rng).random(x.shape) > self.p
        y = (a * np.where(keep, x, ALPHA_PRIME) + b).astype(x.dtype)
        return y, (keep * a).astype(x.dtype)

    @classmethod
    def from_syntax(cls, call: Any) -> "AlphaDropout":
        call.check_kw("active", "rng")
        if len(call.args) != 1 or "rng" in call.kwargs:
            raise ValueError("expected AlphaDropout(p[; active=true/false])")
        active = call.kwargs.get("active")
        return cls(float(call.args[0]), active=active if isinstance(active, bool) else None)
