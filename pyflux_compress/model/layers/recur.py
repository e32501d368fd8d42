"""Reading Flux <= 0.14 checkpoints: ``Flux.Recur(cell, state)`` wrapping ``RNNCell``/``LSTMCell``/``GRUCell``/
``GRUv3Cell`` (fields ``Wi, Wh, b, state0``; RNNCell also ``σ``; GRUv3Cell ``Wh (2out, out)``, ``Wh_h̃``).

A ``Recur`` is rebuilt as the Flux >= 0.15 layer with the same cell and weights (``RNN``, ``LSTM``, ``GRU``,
``GRUv3``): the gate order and formulas did not change between the versions. What did change is how a model
is applied: 0.14's ``Recur`` was stateful and consumed one time step per call (``[m(x_t) for x_t in xs]``),
the 0.15 layer takes the whole sequence ``(N, len, in)`` at once and returns every hidden state. A non-zero
learnable ``state0`` (0.14 started from it; 0.15 starts from zeros) cannot be represented and is an error
rather than a silently different model. ``Recur`` is never written: saving gives the 0.15 layer.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import registry
from ..registry import register_layer
from .base import Layer
from .recurrent import RecurrentLayer

__all__ = ["Recur"]


@register_layer
class Recur(Layer):
    """Load-only: ``from_flux`` returns the Flux >= 0.15 sequence layer for the wrapped cell."""

    flux_name = "Recur"
    flux_fields = {"cell": "cell", "state": "state"}

    def __init__(self) -> None:  # never instantiated: from_flux returns the sequence layer
        raise ValueError("Recur is Flux <= 0.14's stateful wrapper; use RNN/LSTM/GRU/GRUv3 (Flux >= 0.15)")

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> Layer:
        raw = fields.get("cell")
        state0 = getattr(raw, "fields", {}).get("state0") if raw is not None else None
        parts = state0 if isinstance(state0, tuple) else (state0,)
        if any(isinstance(p, np.ndarray) and np.any(p != 0) for p in parts):
            raise ValueError("the cell's state0 is non-zero: Flux <= 0.14 started every sequence from this "
                             "learnt state, Flux >= 0.15 (and this package) from zeros; the model cannot be "
                             "represented faithfully")
        cell = build(raw, "cell")
        for wrapper in registry.registered():
            if isinstance(wrapper, type) and issubclass(wrapper, RecurrentLayer) and wrapper.cell_class is type(cell):
                return wrapper(cell)
        raise ValueError(f"Recur wraps {type(cell).__name__}; supported cells: RNNCell, LSTMCell, GRUCell, GRUv3Cell")
