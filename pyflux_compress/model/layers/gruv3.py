"""Flux ``GRUv3Cell(in => out)`` and ``GRUv3(in => out)`` (Flux >= 0.15, the v3 paper variant): fields
``Wi (3out, in)``, ``Wh (3out, out)`` (only its reset/update blocks are used, as in Flux), ``b (3out,)``,
``Wh_h̃ (out, out)``; ONNX ``GRU`` with ``linear_before_reset=0``.

    r, z as in GRU;  h̃ = tanh(Wi_h x + Wh_h̃ (r .* h) + b_h);  h' = (1 - z) .* h̃ + z .* h
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_rng
from ..registry import register_layer
from .base import Grads, init_fn
from .gru import GRU_TO_ONNX, GRU, GRUCell
from .lstm import restack
from .recurrent import onnx_op, onnx_split, sigmoid_

__all__ = ["GRUv3Cell", "GRUv3"]


@register_layer
class GRUv3Cell(GRUCell):
    """One GRU (v3) step; state ``h``. ``Wh_htilde`` is Flux's ``Wh_h̃``."""

    flux_name = "GRUv3Cell"
    flux_fields = {"Wi": "Wi", "Wh": "Wh", "b": "bias", "Wh_h̃": "Wh_htilde"}
    compressible = ("Wi", "Wh", "Wh_htilde")

    def __init__(self, n_in: Any, n_out: Any = None, *, bias: Any = True, init: Callable | None = None,
                 init_recurrent: Callable | None = None, rng: Any = None, seed: Any = None,
                 Wi: np.ndarray | None = None, Wh: np.ndarray | None = None,
                 Wh_htilde: np.ndarray | None = None) -> None:
        if isinstance(n_in, (tuple, list)):
            n_in, n_out = n_in
        if Wi is not None:
            if Wh is not None and Wh.shape[0] == 2 * Wh.shape[1]:   # Flux <= 0.14 stored Wh (2out, out)
                Wh = np.concatenate([Wh, np.zeros((Wh.shape[1],) * 2, Wh.dtype)])
            super().__init__(None, Wi=Wi, Wh=Wh, bias=bias)
            self.Wh_htilde = Wh_htilde
        else:
            gen = check_rng(seed, rng)
            super().__init__(n_in, n_out, bias=bias, init=init, init_recurrent=init_recurrent, rng=gen)
            h = self.hidden
            self.Wh_htilde = np.asarray(init_fn(init_recurrent)(gen, h, h), dtype=np.float32)
        if self.Wh_htilde is None or self.Wh_htilde.shape != (self.hidden, self.hidden):
            raise ValueError(f"GRUv3Cell: Wh_h̃ must be ({self.hidden}, {self.hidden})")

    def params(self) -> dict[str, np.ndarray]:
        p = super().params()
        p["Wh_htilde"] = self.Wh_htilde
        return p

    def step(self, gx: np.ndarray, state: tuple) -> tuple[tuple, Any]:
        (h,) = state
        H = self.hidden
        gh = self.rmul(h, "Wh", 0, 2 * H)                      # Flux computes Wh*h but never reads its third block
        r = sigmoid_(gx[:, :H] + gh[:, :H])
        z = sigmoid_(gx[:, H:2 * H] + gh[:, H:])
        rh = r * h
        n = np.tanh(gx[:, 2 * H:] + self.rmul(rh, "Wh_htilde", 0, H))
        return ((1 - z) * n + z * h,), (h, r, z, n, rh)

    def onnx_step(self, g: Any, gx: str, state: tuple, rmul: Callable) -> tuple:
        (h,) = state
        H = self.hidden
        gx_rz, gx_n = onnx_split(g, gx, [2 * H, H])
        r, z = onnx_split(g, onnx_op(g, "Sigmoid", onnx_op(g, "Add", gx_rz, rmul(h, "Wh", 0, 2 * H))), [H, H])
        n = onnx_op(g, "Tanh", onnx_op(g, "Add", gx_n, rmul(onnx_op(g, "Mul", r, h), "Wh_htilde", 0, H)))
        return (self.onnx_blend(g, h, n, z),)

    def step_back(self, cache: Any, dstate: tuple, grads: Grads) -> tuple[np.ndarray, tuple]:
        h, r, z, n, rh = cache
        H = self.hidden
        dh = dstate[0]
        dan = dh * (1 - z) * (1 - n * n)
        grads["Wh_htilde"] += dan.T @ rh
        drh = dan @ self.Wh_htilde
        dar = drh * h * r * (1 - r)
        daz = dh * (h - n) * z * (1 - z)
        dgh = np.concatenate([dar, daz], axis=1)
        grads["Wh"][:2 * H] += dgh.T @ h
        return np.concatenate([dar, daz, dan], axis=1), (dh * z + drh * r + dgh @ self.Wh[:2 * H],)

    def slice_hidden(self, name: str, arr: np.ndarray, keep: np.ndarray, hidden: int) -> np.ndarray:
        if name == "Wh_htilde":
            keep = np.asarray(keep, dtype=np.int64)
            return np.ascontiguousarray(arr[np.ix_(keep, keep)])
        return super().slice_hidden(name, arr, keep, hidden)

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "GRUv3Cell":
        a = cls.arrays_from_flux(fields)
        cell = cls(None, Wi=a["Wi"], Wh=a["Wh"], bias=a["bias"], Wh_htilde=a["Wh_htilde"])
        if isinstance(fields.get("Wh"), np.ndarray) and fields["Wh"].shape != cell.Wh.shape:
            fields["Wh"] = cell.Wh      # Flux <= 0.14's (2out, out) Wh, padded: the loader copies this value in
        return cell


@register_layer
class GRUv3(GRU):
    """``GRUv3(in => out; return_state=false)``: a :class:`GRUv3Cell` over ``(N, len, in)``."""

    flux_name = "GRUv3"
    cell_class = GRUv3Cell
    compressible = ("Wi", "Wh", "Wh_htilde")

    Wh_htilde = property(lambda self: self.cell.Wh_htilde, lambda self, v: setattr(self.cell, "Wh_htilde", v))

    def onnx_weights(self) -> dict[str, Any]:
        c = self.cell
        spec = super().onnx_weights()
        h = self.hidden
        R = np.concatenate([c.Wh[:2 * h], c.Wh_htilde], axis=0)      # ONNX R_h is Wh_h̃
        spec["R"] = restack(R, GRU_TO_ONNX, 3)[None].astype(np.float32)
        spec["linear_before_reset"] = 0
        return spec

    @classmethod
    def onnx_matches(cls, attrs: dict) -> bool:
        return not attrs.get("linear_before_reset", 0)

    @classmethod
    def layer_from_onnx(cls, W: np.ndarray, R: np.ndarray, B: np.ndarray | None, attrs: dict,
                        error: Callable[[str], Exception]) -> "GRUv3":
        h = R.shape[-1]
        Wi, Rf = restack(W, GRU_TO_ONNX, 3), restack(R, GRU_TO_ONNX, 3)
        bias: Any = False if B is None else restack(B[:3 * h] + B[3 * h:], GRU_TO_ONNX, 3)
        Wh = np.concatenate([Rf[:2 * h], np.zeros((h, h), np.float32)], axis=0)
        return cls(GRUv3Cell(None, Wi=Wi, Wh=Wh, Wh_htilde=np.ascontiguousarray(Rf[2 * h:]), bias=bias))
