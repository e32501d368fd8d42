"""Flux ``LSTMCell(in => out)`` and ``LSTM(in => out)`` (Flux >= 0.15): gates stacked ``input, forget, cell,
output`` in ``Wi (4out, in)``, ``Wh (4out, out)``, ``bias (4out,)``; ONNX ``LSTM`` (gate order ``i, o, f, c``).

    g = Wi x + Wh h + bias;  i, f, c̃, o = chunk(g, 4)
    c' = σ(f) c + σ(i) tanh(c̃);  h' = σ(o) tanh(c')
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..registry import register_layer
from .base import Grads
from .recurrent import RecurrentCell, RecurrentLayer, onnx_op, onnx_split, sigmoid_

__all__ = ["LSTMCell", "LSTM"]

# Flux gate order (i, f, c, o) <-> ONNX (i, o, f, c): ONNX block k is Flux block TO_ONNX[k]
TO_ONNX = [0, 3, 1, 2]
FROM_ONNX = [0, 2, 3, 1]


def restack(a: np.ndarray, order: list[int], gates: int) -> np.ndarray:
    """Reorder the ``gates`` stacked blocks along axis 0 of ``a``."""
    h = a.shape[0] // gates
    return np.concatenate([a[k * h:(k + 1) * h] for k in order], axis=0)


@register_layer
class LSTMCell(RecurrentCell):
    """One LSTM step; state ``(h, c)``. ``init``/``init_recurrent`` (Flux's ``init_kernel``,
    ``init_recurrent_kernel``) default to ``glorot_uniform``; ``bias=False`` means no bias."""

    flux_name = "LSTMCell"
    flux_fields = {"Wi": "Wi", "Wh": "Wh", "bias": "bias"}
    gates = 4
    n_states = 2

    def step(self, gx: np.ndarray, state: tuple) -> tuple[tuple, Any]:
        h, c = state
        H = self.hidden
        g = gx + self.rmul(h, "Wh", 0, 4 * H)
        i, f, o = sigmoid_(g[:, :H]), sigmoid_(g[:, H:2 * H]), sigmoid_(g[:, 3 * H:])
        cc = np.tanh(g[:, 2 * H:3 * H])
        c2 = f * c + i * cc
        tc = np.tanh(c2)
        h2 = o * tc
        return (h2, c2), (h, c, i, f, cc, o, tc)

    def onnx_step(self, g: Any, gx: str, state: tuple, rmul: Callable) -> tuple:
        h, c = state
        H = self.hidden
        i, f, cc, o = onnx_split(g, onnx_op(g, "Add", gx, rmul(h, "Wh", 0, 4 * H)), [H] * 4)
        i, f, o, cc = (onnx_op(g, "Sigmoid", i), onnx_op(g, "Sigmoid", f), onnx_op(g, "Sigmoid", o),
                       onnx_op(g, "Tanh", cc))
        c2 = onnx_op(g, "Add", onnx_op(g, "Mul", f, c), onnx_op(g, "Mul", i, cc))
        return onnx_op(g, "Mul", o, onnx_op(g, "Tanh", c2)), c2

    def step_back(self, cache: Any, dstate: tuple, grads: Grads) -> tuple[np.ndarray, tuple]:
        h, c, i, f, cc, o, tc = cache
        dh, dc = dstate
        dc2 = dc + dh * o * (1 - tc * tc)
        dg = np.concatenate([dc2 * cc * i * (1 - i), dc2 * c * f * (1 - f), dc2 * i * (1 - cc * cc),
                             dh * tc * o * (1 - o)], axis=1)
        grads["Wh"] += dg.T @ h
        return dg, (dg @ self.Wh, dc2 * f)


@register_layer
class LSTM(RecurrentLayer):
    """``LSTM(in => out; return_state=false)``: an :class:`LSTMCell` over ``(N, len, in)`` -> ``(N, len, out)``;
    final state ``(h, c)``."""

    flux_name = "LSTM"
    cell_class = LSTMCell
    onnx_ops = ("LSTM", "Transpose")
    onnx_op = "LSTM"

    def __init__(self, n_in: Any, n_out: Any = None, *, return_state: bool = False, **cell_kw: Any) -> None:
        cell = n_in if isinstance(n_in, LSTMCell) else LSTMCell(n_in, n_out, **cell_kw)
        super().__init__(cell, return_state=return_state)

    def onnx_weights(self) -> dict[str, Any]:
        c = self.cell
        b = np.zeros(8 * self.hidden, np.float32)
        if c.bias is not None:
            b[:4 * self.hidden] = restack(c.bias, TO_ONNX, 4)    # Wb; Rb stays 0 (Flux has one bias)
        return {"op": "LSTM", "W": restack(c.Wi, TO_ONNX, 4)[None].astype(np.float32),
                "R": restack(c.Wh, TO_ONNX, 4)[None].astype(np.float32), "B": b[None]}

    @classmethod
    def layer_from_onnx(cls, W: np.ndarray, R: np.ndarray, B: np.ndarray | None, attrs: dict,
                        error: Callable[[str], Exception]) -> "LSTM":
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        if acts and acts != ["Sigmoid", "Tanh", "Tanh"]:
            raise error(f"activations {acts} are not Flux's LSTM (Sigmoid, Tanh, Tanh)")
        h = R.shape[-1]
        bias: Any = False
        if B is not None:
            bias = restack(B[:4 * h] + B[4 * h:], FROM_ONNX, 4)
        cell = LSTMCell(None, Wi=restack(W, FROM_ONNX, 4), Wh=restack(R, FROM_ONNX, 4), bias=bias)
        return cls(cell)
