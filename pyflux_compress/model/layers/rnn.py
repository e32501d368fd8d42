"""Flux ``RNNCell(in => out, σ = tanh)`` and ``RNN(in => out, σ)`` (Flux >= 0.15): ``h' = σ.(Wi x + Wh h + bias)``;
fields ``σ, Wi (out, in), Wh (out, out), bias (out,)``; ONNX ``RNN`` (activations Tanh/Relu/Sigmoid)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..activations import get_activation, tanh
from ..registry import register_layer
from .base import Grads, activation_of
from .recurrent import ONNX_RNN_ACTIVATIONS, RecurrentCell, RecurrentLayer, onnx_op

__all__ = ["RNNCell", "RNN"]


@register_layer
class RNNCell(RecurrentCell):
    """One vanilla RNN step; state ``h``. ``activation`` is Flux's ``σ`` (default ``tanh``)."""

    flux_name = "RNNCell"
    flux_fields = {"σ": "activation", "Wi": "Wi", "Wh": "Wh", "bias": "bias"}
    flux_activation_param = 0
    gates = 1
    n_states = 1

    def __init__(self, n_in: Any, n_out: Any = None, activation: Any = tanh, *, bias: Any = True,
                 init: Callable | None = None, init_recurrent: Callable | None = None, rng: Any = None,
                 seed: Any = None, Wi: np.ndarray | None = None, Wh: np.ndarray | None = None) -> None:
        if isinstance(n_in, (tuple, list)):
            if n_out is not None:
                activation = n_out
            n_in, n_out = n_in
        self.activation = get_activation(activation)
        if Wi is not None:
            self.Wi, self.Wh, self.bias = Wi, Wh, self._bias(bias, Wi.shape[0])
            self.check_shapes()
            return
        self.init_arrays(n_in, n_out, bias=bias, init=init, init_recurrent=init_recurrent, rng=rng, seed=seed)

    def step(self, gx: np.ndarray, state: tuple) -> tuple[tuple, Any]:
        (h,) = state
        z = gx + self.rmul(h, "Wh", 0, self.hidden)
        y = self.activation(z)
        return (y,), (h, z, y)

    def onnx_step(self, g: Any, gx: str, state: tuple, rmul: Callable) -> tuple:
        (h,) = state
        return (self.activation.to_onnx(g, onnx_op(g, "Add", gx, rmul(h, "Wh", 0, self.hidden))),)

    def step_back(self, cache: Any, dstate: tuple, grads: Grads) -> tuple[np.ndarray, tuple]:
        h, z, y = cache
        dz = self.activation.grad(z, y, dstate[0])
        grads["Wh"] += dz.T @ h
        return dz, (dz @ self.Wh,)

    def __repr__(self) -> str:
        return f"{self.flux_name}({self.in_features} => {self.hidden}, {self.activation!r}{self.bias_kw()})"

    @classmethod
    def from_syntax(cls, call: Any, wrapped: bool = False) -> "RNNCell":
        n_in, n_out, extra, kw = cls.sizes_from_syntax(call, 1, wrapped)
        act = call.activation(extra[0]) if extra else tanh
        return cls(n_in, n_out, act, **kw)

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "RNNCell":
        a = cls.arrays_from_flux(fields)
        act = fields.get("σ")
        return cls(None, None, activation_of(act) if act not in (None, ()) else tanh, Wi=a["Wi"], Wh=a["Wh"],
                   bias=a["bias"])


@register_layer
class RNN(RecurrentLayer):
    """``RNN(in => out, σ = tanh; return_state=false)``: an :class:`RNNCell` over ``(N, len, in)``."""

    flux_name = "RNN"
    cell_class = RNNCell
    onnx_ops = ("RNN", "Transpose")
    onnx_op = "RNN"

    def __init__(self, n_in: Any, n_out: Any = None, activation: Any = tanh, *, return_state: bool = False,
                 **cell_kw: Any) -> None:
        cell = n_in if isinstance(n_in, RNNCell) else RNNCell(n_in, n_out, activation, **cell_kw)
        super().__init__(cell, return_state=return_state)

    @property
    def activation(self) -> Any:
        return self.cell.activation

    def onnx_weights(self) -> dict[str, Any]:
        c = self.cell
        name = ONNX_RNN_ACTIVATIONS.get(c.activation.name)
        if name is None:
            raise ValueError(f"{self!r}: activation {c.activation!r} has no ONNX RNN form (supported: "
                             f"{', '.join(sorted(ONNX_RNN_ACTIVATIONS))})")
        b = np.zeros(2 * self.hidden, np.float32)
        if c.bias is not None:
            b[:self.hidden] = c.bias
        return {"op": "RNN", "W": c.Wi[None].astype(np.float32), "R": c.Wh[None].astype(np.float32), "B": b[None],
                "activations": [name]}

    @classmethod
    def layer_from_onnx(cls, W: np.ndarray, R: np.ndarray, B: np.ndarray | None, attrs: dict,
                        error: Callable[[str], Exception]) -> "RNN":
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", ["Tanh"])]
        back = {"Tanh": "tanh", "Relu": "relu", "Sigmoid": "σ"}
        if len(acts) != 1 or acts[0] not in back:
            raise error(f"activations {acts}: supported {sorted(back)}")
        h = R.shape[-1]
        bias: Any = False if B is None else B[:h] + B[h:]
        return cls(RNNCell(None, None, get_activation(back[acts[0]]), Wi=W, Wh=R, bias=bias))
