"""Flux ``Upsample`` (nearest, bilinear), ``src/layers/upsample.jl``.

* ``struct Upsample{mode, S, T}; scale::S; size::T; end``; ``Upsample(mode=:nearest; scale=nothing,
  size=nothing)`` or ``Upsample(scale, mode=:nearest)``; exactly one of scale/size. ``:nearest`` calls
  ``upsample_nearest`` (each pixel repeated ``scale`` times; integer scales), ``:bilinear`` calls
  ``upsample_bilinear(x, scale)`` whose default is ``align_corners=true``: output pixel ``o`` samples input
  coordinate ``o (n_in - 1) / (n_out - 1)``, ``n_out = floor(n_in scale)``. Flux prints
  ``Upsample(:nearest, scale = 2)``. ``Flux.state`` is ``(scale = ..., size = ...)``; the mode is only a type
  parameter (``Flux.Upsample{:bilinear, ...}``), so a state-only file needs ``arch=``. Tuples are Flux order
  ``(W, H)``. Forward/backward: ``y = A_h x A_wᵀ`` with the interpolation matrices (exact adjoint).
  ONNX ``Resize`` (nearest: ``asymmetric`` + ``floor``; bilinear: ``linear`` + ``align_corners``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..._validate import check_int
from ..registry import register_layer
from ..syntax import Symbol
from .base import Grads, Layer, as_data, float_dtype, tuple_str

MODES = ("nearest", "bilinear")


def _interp_matrix(n_in: int, n_out: int, mode: str, dtype: Any) -> np.ndarray:
    """``(n_out, n_in)`` matrix mapping an axis of length n_in to n_out (NNlib's index rules)."""
    a = np.zeros((n_out, n_in), dtype=np.float64)
    o = np.arange(n_out)
    if mode == "nearest":
        a[o, (o * n_in) // n_out] = 1.0
    else:                                        # align_corners=true
        ratio = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = ratio * o
        i0 = np.floor(src).astype(int)
        i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
        lam = src - i0
        np.add.at(a, (o, i0), 1 - lam)
        np.add.at(a, (o, i1), lam)
    return a.astype(dtype)


@register_layer
class Upsample(Layer):
    """``Upsample(mode="nearest", *, scale=None, size=None)``, also ``Upsample(scale, mode)``."""

    flux_name = "Upsample"
    batch_mode = "independent"
    flux_fields = {"scale": "scale", "size": "size"}
    onnx_ops = ("Resize",)
    structured = "channelwise"

    def __init__(self, mode: Any = "nearest", scale: Any = None, *, size: Any = None) -> None:
        if not isinstance(mode, str):                    # Upsample(scale, mode)
            mode, scale = (scale if isinstance(scale, str) else "nearest"), mode
        mode = mode.lstrip(":")
        if mode not in MODES:
            raise ValueError(f"Upsample: mode must be one of {MODES}; got {mode!r}")
        if (scale is None) == (size is None):
            raise ValueError("Upsample: give exactly one of scale= and size=")
        self.mode = mode
        self.scale = None if scale is None else self._pair(scale, "scale")
        self.size = None if size is None else tuple(check_int("Upsample size", v, min=1)
                                                    for v in self._pair(size, "size"))
        if self.mode == "nearest" and self.scale is not None and any(float(s) != int(s) for s in self.scale):
            raise ValueError(f"Upsample: nearest needs integer scales; got {self.scale}")

    @staticmethod
    def _pair(v: Any, what: str) -> tuple:
        items = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
        if len(items) != 2 or not all(isinstance(s, (int, float, np.integer, np.floating)) and s > 0 for s in items):
            raise ValueError(f"Upsample: {what} must be a positive number or a 2-tuple (W, H); got {v!r}")
        return tuple(int(s) if float(s).is_integer() else float(s) for s in items)

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size[1], self.size[0]
        sw, sh = self.scale
        return int(math.floor(h * sh)), int(math.floor(w * sw))

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise self._err(f"expects per-sample input (C, H, W); got {in_shape}")
        ho, wo = self.out_hw(in_shape[1], in_shape[2])
        if self.mode == "nearest" and (ho % in_shape[1] or wo % in_shape[2]):
            raise self._err(f"nearest upsampling needs an output size that is a multiple of the input; "
                            f"{in_shape[1]}x{in_shape[2]} -> {ho}x{wo}")
        return (in_shape[0], ho, wo)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, float_dtype(x), self)
        if x.ndim != 4:
            raise self._err(f"expects input of shape (N, C, H, W); got {x.shape}")
        self.output_shape(x.shape[1:])
        h, w = x.shape[2:]
        ho, wo = self.out_hw(h, w)
        if self.mode == "nearest":               # integer repeat: no arithmetic at all
            y = np.repeat(np.repeat(x, ho // h, axis=2), wo // w, axis=3)
            return y, (x.shape, None, None)
        ah, aw = _interp_matrix(h, ho, self.mode, x.dtype), _interp_matrix(w, wo, self.mode, x.dtype)
        return np.matmul(ah, np.matmul(x, aw.T)), (x.shape, ah, aw)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        shape, ah, aw = cache
        if ah is None:
            n, c, h, w = shape
            return dy.reshape(n, c, h, dy.shape[2] // h, w, dy.shape[3] // w).sum(axis=(3, 5)), {}
        return np.matmul(ah.T, np.matmul(dy, aw)), {}

    def __repr__(self) -> str:
        s = f"Upsample(:{self.mode}"
        if self.scale is not None:
            s += f", scale = {tuple_str(self.scale)}"
        if self.size is not None:
            s += f", size = {tuple(self.size)}"
        return s + ")"

    def flux_state(self) -> dict[str, Any]:
        # Flux's Upsample{mode,S,T} stores `scale` as given, and the text above prints a uniform scale as one
        # number (`scale = 2`), which Flux builds as an Int: write what Julia's Flux.state of that text holds.
        scale = self.scale
        if scale is not None and all(v == scale[0] for v in scale):
            scale = scale[0]
        return {"scale": scale, "size": self.size}

    @classmethod
    def from_syntax(cls, call: Any) -> "Upsample":
        call.check_kw("scale", "size")
        args = list(call.args)
        mode = "nearest"
        if args and isinstance(args[-1], Symbol):
            mode = args.pop().name
        if len(args) > 1:
            raise ValueError("expected Upsample(:mode; scale=s) / Upsample(:mode; size=(w, h)) / Upsample(s, :mode)")
        scale = call.kwargs.get("scale", args[0] if args else None)
        return cls(mode, scale, size=call.kwargs.get("size"))

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "Upsample":
        """``Resize`` with constant scales ``[1, 1, sh, sw]``: nearest (asymmetric, floor) or linear
        (align_corners) — the two forms :meth:`to_onnx` writes."""
        attrs = r.attrs(node)
        mode = attrs.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        ctm = attrs.get("coordinate_transformation_mode", b"half_pixel")
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        nm = attrs.get("nearest_mode", b"round_prefer_floor")
        nm = nm.decode() if isinstance(nm, bytes) else nm
        if not r.has_input(node, 2):
            raise r.error(node, "Resize must give constant scales (sizes fix the batch size)")
        scales = r.const(node, 2).astype(np.float64).reshape(-1)
        if scales.size != 4 or scales[0] != 1 or scales[1] != 1:
            raise r.error(node, f"Resize scales must be [1, 1, sh, sw]; got {scales.tolist()}")
        if mode == "nearest" and ctm == "asymmetric" and nm == "floor":
            return cls("nearest", (scales[3], scales[2]))
        if mode == "linear" and ctm == "align_corners":
            return cls("bilinear", (scales[3], scales[2]))
        raise r.error(node, f"Resize mode={mode}, coordinate_transformation_mode={ctm} is not Flux's Upsample "
                            "(nearest+asymmetric+floor or linear+align_corners)")

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Any) -> "Upsample":
        """From a JLD2 struct (``Flux.Upsample{:bilinear, S, T}``: the mode is type parameter 1); a state tree
        lacks the mode, so it needs ``pfc.load(path, arch=...)``."""
        params = fields.get("#params") or ()
        if not params:
            raise ValueError("the Upsample mode is only a type parameter, not in Flux.state; give the "
                             "architecture with pfc.load(path, arch=...)")
        scale, size = fields.get("scale"), fields.get("size")
        return cls(str(params[0]).lstrip(":"), None if scale is None else scale,
                   size=None if size is None else size)

    def to_onnx(self, g: Any, x: str) -> str:
        if self.scale is None:
            raise ValueError(f"{self!r}: ONNX export supports scale= (size= would fix the batch size)")
        sw, sh = self.scale
        scales = g.const(g.fresh("up_scales"), np.array([1, 1, sh, sw], np.float32))
        roi = g.const(g.fresh("up_roi"), np.zeros(0, np.float32))
        if self.mode == "nearest":
            return g.node("Resize", [x, roi, scales], prefix="upsample", mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")[0]
        return g.node("Resize", [x, roi, scales], prefix="upsample", mode="linear",
                      coordinate_transformation_mode="align_corners")[0]
