"""Quantization schemes as strategy objects: integer range, weight parameters, quantize, dequantize, activations.

``SCHEMES`` maps each scheme name accepted by ``pfc.quantize(scheme=...)`` (and the CLI's ``--scheme``) to one
:class:`Scheme` instance. A scheme answers, for a bit width ``b``:

* ``qrange(b)`` — the integer range ``(qmin, qmax)`` (binary, ``b = 1``, is ``(-1, 1)`` for every scheme);
* ``weight_params(lo, hi, b)`` — per-channel float32 ``scale`` and int32 ``zero_point`` for the clipping range
  ``[lo, hi]`` (arrays ``(C,)``; from :meth:`weight_range` for min-max, or a narrower MSE-optimal range);
* ``quantize(rows, scale, zp, b)`` / ``dequantize(q, scale, zp)`` — the rounding rules of docs/quantization.md;
* ``activation_params(lo, hi)`` — 8-bit activation ``(scale, zero_point, qmin, qmax)`` and ``act_dtype``, the
  numpy dtype of the activation integers in an ONNX graph.

Adding a scheme = one subclass here and one entry in ``SCHEMES``; the rest of the package reads this table.
"""
from __future__ import annotations

import numpy as np


class Scheme:
    """Base strategy (see the module docstring). Arrays are ``(C, n)`` rows, channels first."""

    name = ""
    act_dtype: type = np.int8
    act_range: tuple[int, int] = (-127, 127)
    #: onnxruntime drops a Relu in front of QuantizeLinear only when the zero point is the type's minimum (uint8
    #: zero point 0 after relu), so only then does the integer path run through relu and MaxPool.
    integer_relu = False

    def qrange(self, bits: int) -> tuple[int, int]:
        raise NotImplementedError

    def weight_range(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel min-max clipping range ``(lo, hi)`` of ``rows (C, n)`` (float32 ``(C,)`` each)."""
        raise NotImplementedError

    def weight_params(self, lo: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def quantize(self, rows: np.ndarray, scale: np.ndarray, zp: np.ndarray, bits: int) -> np.ndarray:
        """``clamp(rint(w / scale) + zp, qmin, qmax)`` as int8, per row."""
        qmin, qmax = self.qrange(bits)
        t = np.rint(rows / scale[:, None])
        if np.any(zp):
            t = t + zp[:, None]
        return np.clip(t, qmin, qmax).astype(np.int8)

    @staticmethod
    def dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
        """``(q - zp) * scale`` in float32 (``scale``/``zp`` already shaped to broadcast)."""
        with np.errstate(over="ignore"):
            out = ((q.astype(np.float32) - np.asarray(zp, np.float32)) * np.asarray(scale, np.float32)).astype(
                np.float32)
        # a weight near ±3.4e38 may round to the grid point one step beyond float32's range: keep it finite
        big = np.finfo(np.float32).max
        return np.clip(out, -big, big, out=out)

    def activation_params(self, lo: float, hi: float) -> tuple[np.float32, np.int32, int, int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Symmetric(Scheme):
    """Zero point 0, range ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (int8: [-127, 127]); activations int8."""

    name = "symmetric"

    def qrange(self, bits: int) -> tuple[int, int]:
        if bits == 1:
            return -1, 1
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1

    def weight_range(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amax = np.abs(rows).max(axis=1).astype(np.float32)
        return -amax, amax

    def weight_params(self, lo: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
        amax = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float32)
        scale = (amax / np.float32(self.qrange(bits)[1])).astype(np.float32)
        scale[amax == 0] = 1
        return scale, np.zeros(scale.shape, np.int32)

    def activation_params(self, lo: float, hi: float) -> tuple[np.float32, np.int32, int, int]:
        lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
        amax = max(abs(lo), abs(hi))
        scale = np.float32(amax / np.float32(127)) if amax > 0 else np.float32(1)
        return scale, np.int32(0), -127, 127


class Affine(Scheme):
    """Integer zero point, range ``[-2^(b-1), 2^(b-1) - 1]``; activations uint8 [0, 255] (the range onnxruntime
    fuses into integer kernels after a relu)."""

    name = "affine"
    act_dtype = np.uint8
    act_range = (0, 255)
    integer_relu = True

    def qrange(self, bits: int) -> tuple[int, int]:
        if bits == 1:
            return -1, 1
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def weight_range(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.minimum(rows.min(axis=1), np.float32(0)).astype(np.float32),
                np.maximum(rows.max(axis=1), np.float32(0)).astype(np.float32))

    def weight_params(self, lo: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
        qmin, qmax = self.qrange(bits)
        lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
        with np.errstate(over="ignore"):
            span = hi - lo  # overflows to inf only for weights near ±3.4e38: then divide before subtracting
            scale = (span / np.float32(qmax - qmin)).astype(np.float32)
        huge = ~np.isfinite(span)
        scale[huge] = hi[huge] / np.float32(qmax - qmin) - lo[huge] / np.float32(qmax - qmin)
        scale[(hi == lo) | (scale == 0)] = 1  # scale == 0: a subnormal range underflowed
        zp = np.clip(qmin - np.rint(lo / scale), qmin, qmax).astype(np.int32)
        return scale, zp

    def activation_params(self, lo: float, hi: float) -> tuple[np.float32, np.int32, int, int]:
        lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
        scale = np.float32((hi - lo) / np.float32(255)) if hi > lo else np.float32(1)
        zp = np.int32(np.clip(-np.rint(lo / scale), 0, 255))
        return scale, zp, 0, 255


class SymmetricWeightsAffineActivations(Symmetric):
    """Symmetric weights (zero point 0, int8 [-127, 127]) with affine uint8 activations: the combination
    onnxruntime's ``quantize_static`` writes by default, and the one its fastest integer convolution kernels
    (which need weight zero point 0) run."""

    name = "symmetric_weights"
    act_dtype = np.uint8
    act_range = (0, 255)
    integer_relu = True

    def activation_params(self, lo: float, hi: float) -> tuple[np.float32, np.int32, int, int]:
        return Affine.activation_params(self, lo, hi)  # type: ignore[arg-type]


SCHEMES: dict[str, Scheme] = {s.name: s for s in (Symmetric(), Affine(), SymmetricWeightsAffineActivations())}


def get_scheme(name: str) -> Scheme:
    """The :class:`Scheme` called ``name``; ValueError listing the known names otherwise."""
    if isinstance(name, Scheme):
        return name
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"scheme must be one of {tuple(SCHEMES)}, got {name!r}") from None
