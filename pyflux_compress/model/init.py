"""Flux's default parameter initialisers (``glorot_uniform``, zero bias), float32.

Flux computes the fan of a parameter array from its Flux shape (``Flux.nfan``)::

    nfan(n_out, n_in) = n_in, n_out                                   # Dense weight (out, in)
    nfan(dims...) = prod(dims[1:end-2]) .* (dims[end-1], dims[end])   # Conv kernel (kw, kh, cin, cout)

and ``glorot_uniform(dims...) = (rand(Float32, dims...) .- 0.5f0) .* sqrt(24f0 / sum(nfan(dims...)))``,
i.e. U(-a, a) with ``a = sqrt(6 / (fan_in + fan_out))``. Our parameter shapes are Flux's, so the same
formulas apply verbatim.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["nfan", "glorot_uniform", "glorot_normal", "zeros32", "ones32", "Initializer"]

#: an initialiser: (rng, *dims) -> float32 array of shape dims
Initializer = Callable[..., np.ndarray]


def nfan(*dims: int) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a parameter array with Flux shape ``dims`` (see module docstring)."""
    if len(dims) == 0:
        return 1, 1
    if len(dims) == 1:
        return 1, int(dims[0])  # a vector is treated as an n x 1 matrix
    if len(dims) == 2:
        return int(dims[1]), int(dims[0])
    k = int(np.prod(dims[:-2]))
    return k * int(dims[-2]), k * int(dims[-1])


def glorot_uniform(rng: np.random.Generator, *dims: int, gain: float = 1.0) -> np.ndarray:
    """Flux ``glorot_uniform``: float32 U(-a, a), ``a = gain * sqrt(6 / (fan_in + fan_out))``, shape ``dims``."""
    scale = np.float32(gain * np.sqrt(24.0 / sum(nfan(*dims))))
    return ((rng.random(dims, dtype=np.float32) - np.float32(0.5)) * scale).astype(np.float32, copy=False)


def glorot_normal(rng: np.random.Generator, *dims: int, gain: float = 1.0) -> np.ndarray:
    """Flux ``glorot_normal``: float32 N(0, s²), ``s = gain * sqrt(2 / (fan_in + fan_out))``, shape ``dims``."""
    std = np.float32(gain * np.sqrt(2.0 / sum(nfan(*dims))))
    return (rng.standard_normal(dims, dtype=np.float32) * std).astype(np.float32, copy=False)


def zeros32(*dims: int) -> np.ndarray:
    """float32 zeros of shape ``dims`` (Flux's default bias)."""
    return np.zeros(dims, dtype=np.float32)


def ones32(*dims: int) -> np.ndarray:
    return np.ones(dims, dtype=np.float32)
