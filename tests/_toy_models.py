"""Small models shared by the backend tests (tests/test_backend.py, tests/test_parity.py)."""
from __future__ import annotations

import numpy as np

import pyflux_compress as pfc


def tie_mlp(seed: int = 0):
    """An MLP (with a nested Chain) whose weights are rounded to 0.1: many exact magnitude ties, the case where
    an order decides which weight goes."""
    model = pfc.parse("Chain(Dense(12 => 8, relu), Chain(Dense(8 => 8, tanh)), Dense(8 => 4))", seed=seed)
    for _, layer in model.walk():
        if getattr(layer, "weight", None) is not None:
            layer.weight = np.round(layer.weight * 10).astype(np.float32) / 10
    return model
