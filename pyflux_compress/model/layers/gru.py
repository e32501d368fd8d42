"""Flux ``GRUCell(in => out)`` and ``GRU(in => out)`` (Flux >= 0.15, the v1 paper variant): gates stacked
``reset, update, candidate`` in ``Wi (3out, in)``, ``Wh (3out, out)``, ``b (3out,)`` (Flux's field is ``b``);
ONNX ``GRU`` with gate order ``z, r, h`` and ``linear_before_reset=1``.

    r = σ(Wi_r x + Wh_r h + b_r);  z = σ(Wi_z x + Wh_z h + b_z)
    h̃ = tanh(Wi_h x + r .* (Wh_h h) + b_h);  h' = (1 - z) .* h̃ + z .* h

PyTorch's ``nn.GRU`` (and ONNX ``GRU`` with ``linear_before_reset=1``) has one more bias, inside the reset
product: ``r .* (Wh_h h + b_hn)``. Flux's GRU has no field for it, so ``b_hn`` cannot be folded away (``r``
multiplies it). An imported PyTorch GRU keeps it as ``cell.bias_hn (out,)`` (None for every Flux GRU): forward,
backward, pruning and ONNX honour it, and writing such a layer for Flux (JLD2, ``Flux.state``) is refused with an
error that says so.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..registry import register_layer
from .base import Grads
from .lstm import restack
from .recurrent import RecurrentCell, RecurrentLayer, onnx_op, onnx_split, sigmoid_

__all__ = ["GRUCell", "GRU", "GRU_TO_ONNX"]

#: Flux (r, z, h) <-> ONNX (z, r, h): the permutation is its own inverse
GRU_TO_ONNX = [1, 0, 2]


@register_layer
class GRUCell(RecurrentCell):
    """One GRU (v1) step; state ``h``."""

    flux_name = "GRUCell"
    flux_fields = {"Wi": "Wi", "Wh": "Wh", "b": "bias"}
    gates = 3
    n_states = 1
    #: PyTorch's recurrent candidate bias ``b_hn (out,)`` of an imported GRU (module docstring); None in Flux
    bias_hn: np.ndarray | None = None

    def params(self) -> dict[str, np.ndarray]:
        p = super().params()
        if self.bias_hn is not None:
            p["bias_hn"] = self.bias_hn
        return p

    def flux_state(self) -> dict[str, Any]:
        if self.bias_hn is not None:
            raise ValueError(f"{self!r} holds PyTorch's recurrent candidate bias b_hn (imported from ONNX), which "
                             "Flux's GRUCell has no field for: it cannot be written as a Flux model")
        return super().flux_state()

    def slice_hidden(self, name: str, arr: np.ndarray, keep: np.ndarray, hidden: int) -> np.ndarray:
        if name == "bias_hn":
            return np.ascontiguousarray(arr[np.asarray(keep, dtype=np.int64)])
        return super().slice_hidden(name, arr, keep, hidden)

    def step(self, gx: np.ndarray, state: tuple) -> tuple[tuple, Any]:
        (h,) = state
        H = self.hidden
        gh = self.rmul(h, "Wh", 0, 3 * H)
        if self.bias_hn is not None:
            gh[:, 2 * H:] += self.bias_hn
        r = sigmoid_(gx[:, :H] + gh[:, :H])
        z = sigmoid_(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        return ((1 - z) * n + z * h,), (h, gh, r, z, n)

    def onnx_step(self, g: Any, gx: str, state: tuple, rmul: Callable) -> tuple:
        (h,) = state
        H = self.hidden
        gh_rz, gh_n = onnx_split(g, rmul(h, "Wh", 0, 3 * H), [2 * H, H])
        if self.bias_hn is not None:
            gh_n = onnx_op(g, "Add", gh_n, g.const(g.fresh("rec_bhn"), np.asarray(self.bias_hn, np.float32)))
        gx_rz, gx_n = onnx_split(g, gx, [2 * H, H])
        r, z = onnx_split(g, onnx_op(g, "Sigmoid", onnx_op(g, "Add", gx_rz, gh_rz)), [H, H])
        n = onnx_op(g, "Tanh", onnx_op(g, "Add", gx_n, onnx_op(g, "Mul", r, gh_n)))
        return (self.onnx_blend(g, h, n, z),)

    @staticmethod
    def onnx_blend(g: Any, h: str, n: str, z: str) -> str:
        """``(1 - z) .* h̃ + z .* h`` as ``h̃ + z .* (h - h̃)`` (three nodes)."""
        return onnx_op(g, "Add", n, onnx_op(g, "Mul", z, onnx_op(g, "Sub", h, n)))

    def step_back(self, cache: Any, dstate: tuple, grads: Grads) -> tuple[np.ndarray, tuple]:
        h, gh, r, z, n = cache
        H = self.hidden
        dh = dstate[0]
        dan = dh * (1 - z) * (1 - n * n)
        dar = dan * gh[:, 2 * H:] * r * (1 - r)
        daz = dh * (h - n) * z * (1 - z)
        dgh = np.concatenate([dar, daz, dan * r], axis=1)
        grads["Wh"] += dgh.T @ h
        if self.bias_hn is not None:
            grads["bias_hn"] += (dan * r).sum(axis=0)
        return np.concatenate([dar, daz, dan], axis=1), (dh * z + dgh @ self.Wh,)


@register_layer
class GRU(RecurrentLayer):
    """``GRU(in => out; return_state=false)``: a :class:`GRUCell` over ``(N, len, in)`` -> ``(N, len, out)``."""

    flux_name = "GRU"
    cell_class = GRUCell
    onnx_ops = ("GRU", "Transpose")
    onnx_op = "GRU"

    def __init__(self, n_in: Any, n_out: Any = None, *, return_state: bool = False, **cell_kw: Any) -> None:
        cell = n_in if isinstance(n_in, self.cell_class) else self.cell_class(n_in, n_out, **cell_kw)
        super().__init__(cell, return_state=return_state)

    def onnx_weights(self) -> dict[str, Any]:
        # linear_before_reset=1: h̃ = tanh(W_h x + r .* (R_h h + Rb_h) + Wb_h) is Flux's formula with Rb_h = 0
        c = self.cell
        b = np.zeros(6 * self.hidden, np.float32)
        if c.bias is not None:
            b[:3 * self.hidden] = restack(c.bias, GRU_TO_ONNX, 3)
        if c.bias_hn is not None:
            b[5 * self.hidden:] = c.bias_hn               # Rb_h: inside r .* (R_h h + Rb_h), PyTorch's b_hn
        return {"op": "GRU", "W": restack(c.Wi, GRU_TO_ONNX, 3)[None].astype(np.float32),
                "R": restack(c.Wh, GRU_TO_ONNX, 3)[None].astype(np.float32), "B": b[None],
                "linear_before_reset": 1}

    @classmethod
    def layer_from_onnx(cls, W: np.ndarray, R: np.ndarray, B: np.ndarray | None, attrs: dict,
                        error: Callable[[str], Exception]) -> "RecurrentLayer":
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        if acts and acts != ["Sigmoid", "Tanh"]:
            raise error(f"activations {acts} are not Flux's GRU (Sigmoid, Tanh)")
        h = R.shape[-1]
        Wi, Rf = restack(W, GRU_TO_ONNX, 3), restack(R, GRU_TO_ONNX, 3)
        wb = np.zeros(3 * h, np.float32) if B is None else restack(B[:3 * h], GRU_TO_ONNX, 3)
        rb = np.zeros(3 * h, np.float32) if B is None else restack(B[3 * h:], GRU_TO_ONNX, 3)
        bias: Any = False if B is None else np.concatenate([wb[:2 * h] + rb[:2 * h], wb[2 * h:]])
        cell = GRUCell(None, Wi=Wi, Wh=Rf, bias=bias)
        if np.any(rb[2 * h:] != 0):      # PyTorch's b_hn: kept as cell.bias_hn (module docstring)
            cell.bias_hn = np.ascontiguousarray(rb[2 * h:], np.float32)
        return cls(cell)

    @classmethod
    def onnx_matches(cls, attrs: dict) -> bool:
        return bool(attrs.get("linear_before_reset", 0))
