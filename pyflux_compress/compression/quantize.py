"""Quantization: integer weights (int8 ... int2, binary ±α), per-tensor or per-channel, calibrated activations.

``quantize(model, bits=8, ...)`` returns a :class:`QuantizedChain`: a ``Chain`` whose ``Dense`` / ``Conv`` /
``CrossCor`` layers are replaced by :class:`QuantizedDense` / :class:`QuantizedConv`. Each keeps

* ``float_layer`` — the float "shadow" layer (trained by quantization-aware fine-tuning, see below);
* ``bits`` (1..8), ``scheme`` (a name in ``SCHEMES``, compression/schemes.py), ``granularity`` (``"per_tensor"`` /
  ``"per_channel"``);
* ``qweight`` — int8 array, same shape as the weight (int4 values in [-8, 7], binary in {-1, 1}, 0 if pruned);
* ``w_scale`` — float32, shape ``(out,)`` per channel (Dense rows, Conv axis 3) or ``()`` per tensor;
* ``w_zero_point`` — int32, same shape as ``w_scale`` (0 for the symmetric scheme and for binary);
* ``act_scale`` / ``act_zero_point`` — the *input* activation's float32 scale and int32 zero point after
  calibration (uint8 [0, 255] for ``"affine"``, int8 [-127, 127] for ``"symmetric"``), else ``None``.

Attributes added beyond docs/ARCHITECTURE.md (the ONNX exporter may ignore them):
``act_qmin`` / ``act_qmax`` (int, the activation integer range, ``None`` when not calibrated), ``method``
(the calibration method used, or ``None``), ``qmin`` / ``qmax`` (the weight integer range), ``weight_clip``
(``"minmax"``/``"mse"``), ``activations`` (``"float"``/``"static"``/``"dynamic"``), and the methods
``requantize()`` (recompute the integers from the shadow weight), ``set_integer_weights(q, scale, zp)``
(install integers computed elsewhere — an archive, the Julia backend), ``weight_dequantized()`` and
``dequantize()``. ``QuantizedChain`` adds ``quantized_layers()``, ``requantize()`` and ``dequantize()``.
:func:`integer_reference_forward` is the executable int8 x int8 -> int32 reference of a calibrated Dense layer.

Rounding and clamping (written so that a Julia twin matches bit for bit; docs/quantization.md repeats it)
-----------------------------------------------------------------------------------------------------------
All arithmetic is IEEE float32 unless stated; ``rint`` = round half to even (Julia ``round(x)``).

=========================  ==========================================================================
weights, symmetric         qmax = 2^(b-1) - 1, qmin = -qmax  (int8: [-127, 127], int4: [-7, 7])
                           amax = max|w| (per channel or tensor); scale = amax / Float32(qmax);
                           scale = 1 where amax == 0; q = clamp(rint(w / scale), qmin, qmax); zp = 0
weights, affine            qmin = -2^(b-1), qmax = 2^(b-1) - 1  (int8: [-128, 127], int4: [-8, 7])
                           lo = min(min(w), 0), hi = max(max(w), 0); scale = (hi - lo) / Float32(qmax - qmin);
                           where hi - lo overflows (weights near ±3.4e38) scale = hi / n - lo / n with
                           n = Float32(qmax - qmin); scale = 1 where hi == lo or scale underflows to 0; zp = clamp(qmin - rint(lo / scale), qmin, qmax) (Int32);
                           q = clamp(rint(w / scale) + zp, qmin, qmax)
weights, binary (b = 1)    α = Float32(sum(Float64.(|w|)) / n) over the channel's (unmasked) entries;
                           q = +1 where w >= 0 else -1; q = 0 where the layer's mask is False or α == 0;
                           scale = α (1 where α == 0); zp = 0
dequantized weight         (Float32(q) - Float32(zp)) * scale, clamped to ±floatmax(Float32)
activations (calibrated)   always 8-bit, per tensor. symmetric: int8 [-127, 127], scale = amax / 127;
                           affine: uint8 [0, 255], lo/hi as for weights (range extended to contain 0),
                           scale = (hi - lo) / 255, zp = clamp(-rint(lo / scale), 0, 255).
                           Ranges: "minmax" = min/max of the calibration inputs; "percentile" =
                           the PERCENTILE-th (99.99) percentile of |x| (symmetric) or the (100 - p)-th and
                           p-th percentiles (affine), linear interpolation (numpy default = Julia
                           ``Statistics.quantile``). x_q = clamp(rint(x / scale) + zp, qmin, qmax)
=========================  ==========================================================================

Forward (fake quantization). With ``xi = x_q - zp_a`` (integer valued; ``xi = x`` when not calibrated) and
``wi = q - zp_w`` (integer valued), a layer computes ``z = (K(xi, wi) in Float64) * (s_a * s_w) + bias`` where
``K`` is the layer's matmul / convolution evaluated in float64 on the integer-valued arrays — exactly the int32
accumulation of an integer kernel as long as sums stay below 2^53 — and ``s_a * s_w`` is a Float64 product of
the two float32 scales (per output channel). ``z`` is rounded to float32 once, then the activation is applied.
So a deployment doing int8 x int8 -> int32, then ``Float64(acc) * (s_a * s_w) + bias``, reproduces it exactly.

Quantization-aware training (QAT). ``QuantizedDense`` / ``QuantizedConv`` implement the layer contract: their
``params()`` are the shadow float weight and bias. ``backward`` uses the straight-through estimator (the rounding
has gradient 1; activations outside the calibrated range get gradient 0) and marks the layer stale; the next
forward recomputes ``qweight`` / ``w_scale`` from the updated shadow weight (``requantize()``). If you change
``float_layer.weight`` by hand, call ``requantize()`` yourself.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..backends import kernel
from ..model import activations as A
from ..model.chain import Chain
from . import adaround as AR
from .calibrate import ACT_METHODS, PERCENTILE, WEIGHT_CLIPS, activation_range, bias_correction, mse_weight_range
from .fold import fold_with_paths
from .schemes import SCHEMES, get_scheme
from ..model.walk import map_layers, modules
from .wrapper import QUANTIZED_WRAPPERS, WrappedLayer, as_float_layer

__all__ = ["quantize", "QuantizedChain", "QuantizedLayer", "QuantizedDense", "QuantizedConv", "SCHEMES",
           "GRANULARITIES", "METHODS", "WEIGHT_CLIPS", "ROUNDINGS", "ACTIVATIONS", "SUPPORTED_BITS", "qrange",
           "channel_axis", "quantize_weight", "dequantize_weight", "integer_weight", "activation_qparams",
           "calibration_range", "fake_quantize_input", "dynamic_quantize_input", "quantized_class",
           "as_float_layer", "resolve_layer_keys", "validate_quantize",
           "integer_reference_forward", "PERCENTILE"]

GRANULARITIES = ("per_tensor", "per_channel")
METHODS = ACT_METHODS  # activation range methods (compression/calibrate.py)
ROUNDINGS = AR.ROUNDINGS
ACTIVATIONS = ("float", "static", "dynamic")  # how a layer's input activation is treated (see quantize)
SUPPORTED_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
ACT_BITS = 8  # calibrated activations are always 8-bit


# --------------------------------------------------------------------------------------------------------------
# array-level numerics (pure functions on numpy arrays; also used by sharing/archive/ONNX export)
# --------------------------------------------------------------------------------------------------------------

def qrange(bits: int, scheme: str) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` for ``bits`` and ``scheme`` (binary, bits=1, gives (-1, 1))."""
    return get_scheme(scheme).qrange(bits)


def channel_axis(weight: np.ndarray) -> int:
    """The output-channel axis of a Flux weight: 0 for Dense ``(out, in)``, last for Conv ``(kw, kh, cin, cout)``."""
    return 0 if weight.ndim == 2 else weight.ndim - 1


def _bshape(ndim: int, axis: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = -1
    return tuple(shape)


def _per_channel_view(w: np.ndarray, axis: int | None) -> np.ndarray:
    """``w`` as ``(C, rest)`` with channels first (``axis=None``: one row holding everything)."""
    if axis is None:
        return w.reshape(1, -1)
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def _binary_rows(rows: np.ndarray, m: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary ±α per row (α = mean |w| over unmasked entries, summed in float64)."""
    absw = np.abs(rows).astype(np.float64)
    if m is not None:
        count = m.sum(axis=1)
        total = np.where(m, absw, 0.0).sum(axis=1)
    else:
        count = np.full(rows.shape[0], rows.shape[1])
        total = absw.sum(axis=1)
    alpha = (total / np.maximum(count, 1)).astype(np.float32)
    scale = np.where(alpha == 0, np.float32(1), alpha).astype(np.float32)
    q = np.where(rows >= 0, 1, -1).astype(np.int8)
    q[alpha == 0] = 0
    if m is not None:
        q[~m] = 0
    return q, scale, np.zeros(scale.shape, dtype=np.int32)


@kernel("quantize_weight")
def quantize_weight(w: np.ndarray, bits: int, scheme: str, granularity: str,
                    mask: np.ndarray | None = None, clip: str = "minmax") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize one weight array with the module's rounding rules.

    Parameters
    ----------
    w : float array, Dense ``(out, in)`` or Conv ``(kw, kh, cin, cout)``.
    bits, scheme, granularity : see :func:`quantize`.
    mask : optional bool array like ``w`` (False = pruned); used by binary to keep pruned entries at 0.
    clip : ``"minmax"`` (full range) or ``"mse"`` (per-channel MSE-optimal clipping range; bits >= 2).

    Returns
    -------
    (qweight int8 like ``w``, scale float32 ``(C,)`` or ``()``, zero_point int32 like scale)
    """
    w = np.asarray(w, dtype=np.float32)
    axis = channel_axis(w) if granularity == "per_channel" else None
    rows = _per_channel_view(w, axis)  # (C, n)
    if bits == 1:
        m = None if mask is None else _per_channel_view(np.asarray(mask, dtype=bool), axis)
        q, scale, zp = _binary_rows(rows, m)
    else:
        sch = get_scheme(scheme)
        lo, hi = mse_weight_range(rows, sch, bits) if clip == "mse" else sch.weight_range(rows)
        scale, zp = sch.weight_params(lo, hi, bits)
        q = sch.quantize(rows, scale, zp, bits)
    # back to the weight's layout
    if axis is None:
        return q.reshape(w.shape), scale.reshape(()), zp.reshape(())
    moved = np.moveaxis(np.empty_like(w), axis, 0).shape
    return np.moveaxis(q.reshape(moved), 0, axis).copy(), scale, zp


def broadcast_channel(a: np.ndarray, weight_ndim: int, axis: int) -> np.ndarray:
    """A per-channel ``(C,)`` array shaped to broadcast over an array of ``weight_ndim`` dims at ``axis``."""
    a = np.asarray(a)
    return a.reshape(_bshape(weight_ndim, axis)) if a.ndim else a


def integer_weight(qweight: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """``q - zp`` as an integer-valued float64 array (the kernel operand of the simulated integer forward)."""
    zp = broadcast_channel(np.asarray(zero_point), qweight.ndim, channel_axis(qweight))
    return np.subtract(qweight, zp, dtype=np.float64)  # one float64 array, not two (same exact values)


@kernel("dequantize_weight")
def dequantize_weight(qweight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """``(q - zp) * scale`` in float32, broadcasting per-channel scales over the weight's channel axis."""
    axis = channel_axis(qweight)
    scale = broadcast_channel(np.asarray(scale, dtype=np.float32), qweight.ndim, axis)
    zp = broadcast_channel(np.asarray(zero_point, dtype=np.float32), qweight.ndim, axis)
    return SCHEMES["symmetric"].dequantize(qweight, scale, zp)


def activation_qparams(lo: float, hi: float, scheme: str) -> tuple[np.float32, np.int32, int, int]:
    """Scale, zero point and integer range ``(scale, zp, qmin, qmax)`` for an activation range ``[lo, hi]``."""
    return get_scheme(scheme).activation_params(lo, hi)


def calibration_range(x: np.ndarray, scheme: str, method: str) -> tuple[float, float]:
    """The activation range ``(lo, hi)`` of calibration inputs ``x`` (any shape) by ``method``."""
    return activation_range(x, get_scheme(scheme), method)


def fake_quantize_input(x: np.ndarray, scale: np.float32, zero_point: np.int32, qmin: int,
                        qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer activation operand ``x_q - zp`` (float64, integer valued) and the in-range mask (for the STE)."""
    x = np.asarray(x, dtype=np.float32)
    t = np.rint(x / np.float32(scale)) + np.float32(zero_point)
    inside = (t >= qmin) & (t <= qmax)
    q = np.clip(t, qmin, qmax)
    return q.astype(np.float64) - float(zero_point), inside


def dynamic_quantize_input(x: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """ONNX ``DynamicQuantizeLinear`` of a whole input tensor: ``(x_q - zp`` as float64, ``scale)``.

    uint8, range ``[min(0, min x), max(0, max x)]``, ``scale = (hi - lo) / 255``, ``zp = rint(-lo / scale)``
    saturated to [0, 255]; ``x_q = saturate(rint(x / scale) + zp)`` — the same integers onnxruntime computes.
    """
    x = np.asarray(x, dtype=np.float32)
    lo, hi = np.float32(min(float(x.min()), 0.0)), np.float32(max(float(x.max()), 0.0))
    scale = np.float32((hi - lo) / np.float32(255)) if hi > lo else np.float32(1)
    zp = np.float32(np.clip(np.rint(-lo / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + zp, 0, 255)
    return q.astype(np.float64) - float(zp), scale


# --------------------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------------------

class QuantizedLayer(WrappedLayer):
    """Shared implementation of :class:`QuantizedDense` and :class:`QuantizedConv` (see the module docstring).

    ``forward`` computes in float64 on integer-valued operands through an internal copy of the float layer
    whose weight is ``q - zp`` and which has no bias and no activation; bias and activation are applied here.
    ``activations`` says what happens to the input: ``"float"`` (weights only), ``"static"`` (calibrated
    ``act_scale``/``act_zero_point``, see :meth:`set_activation_range`) or ``"dynamic"`` (per call, as ONNX
    ``DynamicQuantizeLinear``; Dense only — a Conv's dynamic export keeps float activations, so it does too).
    """

    def __init__(self, float_layer: Any, bits: int = 8, scheme: str = "symmetric",
                 granularity: str = "per_channel", weight_clip: str = "minmax", activations: str = "float") -> None:
        self.float_layer = float_layer
        self.bits = int(bits)
        self.scheme = get_scheme(scheme).name
        self.granularity = granularity
        self.weight_clip = weight_clip
        self.activations = activations
        self.qmin, self.qmax = qrange(self.bits, self.scheme)
        self.act_scale: np.float32 | None = None
        self.act_zero_point: np.int32 | None = None
        self.act_qmin: int | None = None
        self.act_qmax: int | None = None
        self.method: str | None = None
        self._stale = True
        self.requantize()

    @property
    def calibrated(self) -> bool:
        return self.act_scale is not None

    @property
    def dynamic(self) -> bool:
        """True when the forward quantizes its input per call (``activations="dynamic"`` on a Dense)."""
        return self.activations == "dynamic" and isinstance(self, QuantizedDense)

    def to_float(self) -> Any:
        return self.float_layer

    def _out_axis(self, ndim: int) -> int:
        """Channel axis of this layer's *output*: last for Dense ``(..., out)``, 1 for Conv ``(N, C, H, W)``."""
        return ndim - 1

    # -- quantization ----------------------------------------------------------------------------------------
    def requantize(self) -> None:
        """Recompute ``qweight``, ``w_scale``, ``w_zero_point`` from the shadow weight (after it changed)."""
        mask = self.masks.get("weight")
        self.set_integer_weights(*quantize_weight(self.float_layer.weight, self.bits, self.scheme,
                                                  self.granularity, mask, self.weight_clip))

    def set_integer_weights(self, qweight: np.ndarray, w_scale: np.ndarray, w_zero_point: np.ndarray) -> None:
        """Install given integer weights and scales (e.g. read from an archive) without recomputing them."""
        self.qweight = np.asarray(qweight, dtype=np.int8)
        self.w_scale = np.asarray(w_scale, dtype=np.float32)
        self.w_zero_point = np.asarray(w_zero_point, dtype=np.int32)
        inner = self.float_layer.copy()
        inner.weight = integer_weight(self.qweight, self.w_zero_point)
        inner.bias = None
        inner.activation = A.identity
        if hasattr(inner, "masks"):
            inner.masks = {}
        self._inner = inner
        self._stale = False

    def set_activation_range(self, lo: float, hi: float, method: str) -> None:
        """Fix the input activation quantization from a calibrated range ``[lo, hi]``."""
        self.act_scale, self.act_zero_point, self.act_qmin, self.act_qmax = activation_qparams(lo, hi, self.scheme)
        self.method = method
        self.activations = "static"

    def weight_dequantized(self) -> np.ndarray:
        """The float32 weight the forward effectively uses: ``(q - zp) * scale``."""
        if self._stale:
            self.requantize()
        return dequantize_weight(self.qweight, self.w_scale, self.w_zero_point)

    def _out_scale(self, ndim: int, act_scale: Any) -> np.ndarray:
        """``s_a * s_w`` in float64, shaped to broadcast over an output of ``ndim`` dims."""
        s = np.asarray(self.w_scale, dtype=np.float64)
        if act_scale is not None:
            s = s * np.float64(act_scale)
        return broadcast_channel(s, ndim, self._out_axis(ndim))

    # -- layer contract --------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = False, rng: Any = None) -> tuple[np.ndarray, tuple]:
        if self._stale:
            self.requantize()
        dtype = self.float_layer.weight.dtype
        x = np.asarray(x, dtype=dtype)
        inside, act_scale = None, None
        if self.calibrated:
            xi, inside = fake_quantize_input(x, self.act_scale, self.act_zero_point, self.act_qmin, self.act_qmax)
            act_scale = self.act_scale
        elif self.dynamic:
            xi, act_scale = dynamic_quantize_input(x)
        else:
            xi = x.astype(np.float64)
        acc, icache = self._inner.forward(xi, train=train, rng=rng)
        z = np.asarray(acc, dtype=np.float64) * self._out_scale(np.ndim(acc), act_scale)
        bias = self.float_layer.bias
        if bias is not None:
            z = z + broadcast_channel(np.asarray(bias, dtype=np.float64), z.ndim, self._out_axis(z.ndim))
        z = z.astype(dtype)
        y, acache = self.float_layer.activation.forward(z, train=train, rng=rng)
        return y, (icache, acache, inside, z.ndim, act_scale)

    def backward(self, cache: tuple, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Straight-through estimator: gradients w.r.t. the shadow weight as if ``w_dq = w``."""
        icache, acache, inside, ndim, act_scale = cache
        dz, _ = self.float_layer.activation.backward(acache, dy)
        dz = np.asarray(dz, dtype=np.float64)
        dxi, g = self._inner.backward(icache, dz * self._out_scale(ndim, act_scale))
        dtype = self.float_layer.weight.dtype
        s_w = broadcast_channel(np.asarray(self.w_scale, dtype=np.float64), self.qweight.ndim,
                                channel_axis(self.qweight))
        grads = {"weight": (np.asarray(g["weight"]) / s_w).astype(dtype)}
        if self.float_layer.bias is not None:
            axes = tuple(a for a in range(ndim) if a != self._out_axis(ndim))
            grads["bias"] = dz.sum(axis=axes).astype(dtype)
        dx = np.asarray(dxi, dtype=np.float64)
        if act_scale is not None:
            dx = dx / np.float64(act_scale)
        if inside is not None:
            dx = np.where(inside, dx, 0.0)
        self._stale = True  # the optimiser is about to change the shadow weights
        return dx.astype(dtype), grads

    def params(self) -> dict[str, np.ndarray]:
        p = {"weight": self.float_layer.weight}
        if self.float_layer.bias is not None:
            p["bias"] = self.float_layer.bias
        return p

    def copy(self) -> "QuantizedLayer":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.float_layer = self.float_layer.copy()
        new.qweight = self.qweight.copy()
        new.w_scale = self.w_scale.copy()
        new.w_zero_point = self.w_zero_point.copy()
        new._inner = self._inner.copy()
        return new

    def dequantize(self) -> Any:
        """A float layer (copy of the shadow layer) holding the dequantized weight."""
        layer = self.float_layer.copy()
        layer.weight = self.weight_dequantized().astype(self.float_layer.weight.dtype)
        return layer

    def __repr__(self) -> str:
        act = ""
        if self.calibrated:
            act = f", act_scale={float(self.act_scale):.6g}, act_zero_point={int(self.act_zero_point)}"
        elif self.dynamic:
            act = ", dynamic activations"
        kind = "binary" if self.bits == 1 else f"int{self.bits}"
        return f"{type(self).__name__}({self.float_layer!r}, {kind}, {self.scheme}, {self.granularity}{act})"


class QuantizedDense(QuantizedLayer):
    """Quantized ``Dense``: ``qweight`` ``(out, in)`` int8, ``w_scale`` ``(out,)`` or ``()``."""


class QuantizedConv(QuantizedLayer):
    """Quantized ``Conv`` / ``CrossCor``: ``qweight`` ``(kw, kh, cin, cout)`` int8, ``w_scale`` ``(cout,)``/``()``."""

    def _out_axis(self, ndim: int) -> int:
        return 1  # (N, C, H, W)


def quantized_class(layer: Any) -> type[QuantizedLayer] | None:
    """The wrapper class for a float layer, from its declarations: a compressible ``weight`` whose output
    channels are axis 0 (matrix, Dense-like: QuantizedDense) or another axis (kernel, Conv-like: QuantizedConv).
    None (stays float) when the declared axis is not the one the array numerics assume (``channel_axis``)."""
    role = getattr(layer, "quantize_as", None)
    if role in QUANTIZED_WRAPPERS:   # recurrent gate matrices, embedding tables: compression/quantize_sequence.py
        return QUANTIZED_WRAPPERS[role]
    if "weight" not in getattr(layer, "compressible", ()) or \
            layer.out_axes.get("weight") != channel_axis(layer.weight):
        return None
    return QuantizedDense if layer.out_axes["weight"] == 0 else QuantizedConv


class QuantizedChain(Chain):
    """A ``Chain`` holding :class:`QuantizedDense` / :class:`QuantizedConv` layers (see module docstring).

    Its forward is the fake-quantized (integer-simulating) forward; ``pfc.fit`` trains the shadow weights
    (QAT); ``dequantize()`` returns a plain float ``Chain``.
    """

    def quantized_layers(self) -> list[tuple[str, QuantizedLayer]]:
        """``[(path, layer)]`` of the quantized leaves, in order."""
        return [(p, l) for p, l in modules(self) if isinstance(l, QuantizedLayer)]

    def requantize(self) -> "QuantizedChain":
        """Recompute every layer's integer weights from its shadow weights (in place); returns self."""
        for _, layer in self.quantized_layers():
            layer.requantize()
        return self

    def dequantize(self) -> Chain:
        """A float ``Chain`` (new object) whose weights are the dequantized integer weights."""

        def fn(path: str, layer: Any) -> Any:
            quantized = isinstance(layer, (QuantizedLayer, *QUANTIZED_WRAPPERS.values()))
            return layer.dequantize() if quantized else layer.copy()

        out = map_layers(fn, self, as_type=Chain)
        out.records.append({"method": "dequantize", "settings": {}, "per_layer": {}})
        return out

    def copy(self) -> "QuantizedChain":
        return map_layers(lambda p, l: l.copy(), self)

    def __repr__(self) -> str:
        return "QuantizedChain(" + ", ".join(repr(layer) for layer in self.layers) + ")"

    __str__ = __repr__


# --------------------------------------------------------------------------------------------------------------
# validation and the public entry point
# --------------------------------------------------------------------------------------------------------------

def _check_bits_value(value: Any, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or int(value) not in SUPPORTED_BITS:
        extra = " or None (keep float)" if allow_none else ""
        raise ValueError(f"{name} must be an integer in {SUPPORTED_BITS} (1 = binary ±α){extra}, got {value!r}")
    return int(value)


def resolve_layer_keys(model: Any, spec: Mapping[Any, Any], arg: str, weighted: list[str]) -> dict[str, Any]:
    """Map a ``{path_or_index: value}`` dict onto weighted-leaf paths.

    Keys: a Flux-style path string (``"layers[1]"``, ``"layers[3].layers[1]"``) or an int ``i`` meaning
    ``model[i]`` (0-based; a nested Chain at ``i`` applies to all its weighted leaves).
    """
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            n = len(model.layers)
            if not -n <= int(key) < n:
                raise ValueError(f"{arg}: layer index {key} out of range for a Chain of {n} layers")
            prefix = f"layers[{int(key) % n + 1}]"
        elif isinstance(key, str):
            prefix = key.strip()
        else:
            raise ValueError(f"{arg}: keys must be int indices or Flux paths like 'layers[1]', got {key!r}")
        hits = [p for p in weighted if p == prefix or p.startswith(prefix + ".")]
        if not hits:
            raise ValueError(f"{arg}: {key!r} does not name a Dense/Conv layer; weighted layers are {weighted}")
        for p in hits:
            out[p] = value
    return out


def _check_choice(value: Any, name: str, allowed: Any) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def validate_quantize(model: Any, bits: Any = 8, scheme: Any = "symmetric", granularity: Any = "per_tensor",
                      calibration: Any = None, method: Any = "minmax", *, weight_clip: Any = "minmax",
                      rounding: Any = "nearest", bias_correction: Any = False, activations: Any = None,
                      fold: Any = True, seed: Any = 0, adaround_iters: Any = None
                      ) -> tuple[dict[str, int | None], np.ndarray | None, str]:
    """Check every argument of :func:`quantize` (both backends run it first); returns
    ``(bits per weighted leaf path, calibration array or None, activations mode)``."""
    if not isinstance(fold, (bool, np.bool_)):
        raise ValueError(f"fold must be True or False, got {fold!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not getattr(model, "container", False):
        raise ValueError(f"model must be a Chain, got {type(model).__name__}")
    _check_choice(scheme, "scheme", SCHEMES)
    _check_choice(granularity, "granularity", GRANULARITIES)
    _check_choice(method, "method", METHODS)
    _check_choice(weight_clip, "weight_clip", WEIGHT_CLIPS)
    _check_choice(rounding, "rounding", ROUNDINGS)
    if adaround_iters is not None and (isinstance(adaround_iters, bool) or not isinstance(adaround_iters, (
            int, np.integer)) or not 1 <= adaround_iters <= 1_000_000):
        raise ValueError(f"adaround_iters must be None (default {AR.ITERS}) or an int in [1, 1000000], "
                         f"got {adaround_iters!r}")
    if not isinstance(bias_correction, (bool, np.bool_)):
        raise ValueError(f"bias_correction must be True or False, got {bias_correction!r}")
    if activations is None:
        activations = "static" if calibration is not None else "float"
    _check_choice(activations, "activations", ACTIVATIONS)
    if calibration is None and (activations == "static" or rounding == "adaround" or bias_correction):
        need = "activations='static'" if activations == "static" else \
            ("rounding='adaround'" if rounding == "adaround" else "bias_correction=True")
        raise ValueError(f"{need} needs calibration data: pass calibration=X (N, *input_shape), e.g. a few "
                         "hundred training samples")
    weighted = [p for p, l in modules(model) if quantized_class(as_float_layer(l)) is not None]
    if not weighted:
        raise ValueError("model has no Dense/Conv/CrossCor layer to quantize")
    if isinstance(bits, Mapping):
        per = resolve_layer_keys(model, bits, "bits", weighted)
        per = {p: _check_bits_value(v, f"bits[{p!r}]", allow_none=True) for p, v in per.items()}
        per_layer = {p: per.get(p) for p in weighted}
    else:
        b = _check_bits_value(bits, "bits")
        per_layer = {p: b for p in weighted}
    if scheme == "affine" and any(b == 1 for b in per_layer.values()):
        raise ValueError("bits=1 (binary ±α) is symmetric by definition; use scheme='symmetric'")
    for p, l in modules(model):
        w = getattr(as_float_layer(l), "weight", None)
        if p in per_layer and w is not None and not np.all(np.isfinite(w)):
            raise ValueError(f"layer {p} ({l!r}) has NaN/Inf weights; cannot quantize")
    X = None
    if calibration is not None:
        try:
            X = np.asarray(calibration, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"calibration must be a numeric array (N, *input_shape), got {type(calibration)}") \
                from err
        if X.ndim < 2 or len(X) == 0:
            raise ValueError(f"calibration must be a batch (N, *input_shape) with N >= 1, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("calibration contains NaN/Inf values")
        try:
            model.output_shape(tuple(X.shape[1:]))
        except ValueError as err:
            raise ValueError(f"calibration has per-sample shape {tuple(X.shape[1:])} which this model does not "
                             f"accept: {err}") from err
    return per_layer, X, activations


class _Settings:
    """The validated options of one ``quantize`` call (what ``_quantize_leaf`` needs)."""

    def __init__(self, scheme: str, granularity: str, method: str, weight_clip: str, rounding: str,
                 bias_correction: bool, activations: str, seed: int, adaround_iters: int | None = None) -> None:
        self.scheme, self.granularity, self.method = scheme, granularity, method
        self.weight_clip, self.rounding, self.bias_correction = weight_clip, rounding, bias_correction
        self.activations, self.seed, self.adaround_iters = activations, seed, adaround_iters


def _quantize_leaf(base: Any, b: int, st: _Settings, xf: np.ndarray | None, xq: np.ndarray | None
                   ) -> tuple[QuantizedLayer, dict[str, Any]]:
    """Quantize one float leaf; ``xf`` / ``xq`` are its calibration inputs in the float / quantized model."""
    clip = st.weight_clip if b > 1 else "minmax"
    q = quantized_class(base)(base, b, st.scheme, st.granularity, clip, st.activations)  # type: ignore[misc]
    if not isinstance(q, QuantizedLayer):   # a sequence layer's wrapper (quantize_sequence.py) does the rest itself
        return q, q.record()
    rec: dict[str, Any] = {"bits": b}
    if xf is not None and st.activations == "static":
        lo, hi = calibration_range(xf, st.scheme, st.method)
        q.set_activation_range(lo, hi, st.method)
        rec["act_range"] = [lo, hi]
    if xq is not None and st.rounding == "adaround" and b > 1:
        xin = xq
        if q.calibrated:  # the layer sees its input fake-quantized
            xi, _ = fake_quantize_input(xq, q.act_scale, q.act_zero_point, q.act_qmin, q.act_qmax)
            xin = (xi * np.float64(q.act_scale)).astype(np.float32)
        axis = channel_axis(q.qweight)
        s = broadcast_channel(q.w_scale, q.qweight.ndim, axis)
        zp = broadcast_channel(q.w_zero_point, q.qweight.ndim, axis)
        mask = base.masks.get("weight") if getattr(base, "masks", None) else None
        qw = AR.adaround_weight(base, s, zp, (q.qmin, q.qmax), xin, np.asarray(base(xf), np.float64),
                                seed=st.seed, mask=mask, iters=st.adaround_iters)
        q.set_integer_weights(qw, q.w_scale, q.w_zero_point)
    if xq is not None and st.bias_correction:
        shift = bias_correction(base, q.weight_dequantized(), xf, xq)
        dtype = base.weight.dtype
        base.bias = (np.zeros(shift.shape, dtype) if base.bias is None else base.bias) + shift.astype(dtype)
        rec["bias_shift_max"] = float(np.abs(shift).max())
    rec["max_abs_error"] = float(np.abs(q.weight_dequantized() - base.weight).max())
    rec.setdefault("act_range", None)
    return q, rec


def quantize(model: Any, bits: int | Mapping[Any, int | None] = 8, scheme: str = "symmetric",
             granularity: str = "per_tensor", calibration: np.ndarray | None = None,
             method: str = "minmax", *, weight_clip: str = "minmax", rounding: str = "nearest",
             bias_correction: bool = False, activations: str | None = None, fold: bool = True,
             seed: int = 0, adaround_iters: int | None = None) -> Any:
    """Quantize a Chain's Dense/Conv weights to integers (and calibrate input activations).

    Parameters
    ----------
    model : Chain (not modified). Leaves already quantized are re-quantized from their shadow weights.
    bits : 1..8 (1 = binary ±α), or a dict ``{path_or_index: bits}`` for mixed precision; keys are Flux paths
        (``"layers[1]"``) or 0-based indices ``model[i]``; layers not in the dict (or mapped to ``None``) stay float.
    scheme : a name in ``SCHEMES`` (compression/schemes.py): ``"symmetric"`` (zero point 0, int8 range
        [-127, 127]) or ``"affine"`` (int8 [-128, 127] with an integer zero point; uint8 activations).
    granularity : ``"per_tensor"`` (one scale per weight) or ``"per_channel"`` (one per output channel: Dense
        rows, Conv axis 3).
    calibration : optional inputs ``(N, *input_shape)`` (a few hundred training samples; never test data). With
        it, each quantized layer's input activation gets an 8-bit scale/zero point (static quantization) and the
        forward fake-quantizes it; it also feeds ``rounding="adaround"`` and ``bias_correction``.
    method : activation range from calibration: ``"minmax"``, ``"percentile"`` (``PERCENTILE`` = 99.99),
        ``"mse"`` (least squared quantization error) or ``"entropy"`` (KL divergence, TensorRT's method).
    weight_clip : ``"minmax"`` (the full weight range) or ``"mse"`` (per output channel, the clipping range with
        the least squared weight error: essential below 4 bits).
    rounding : ``"nearest"`` or ``"adaround"`` (learned up/down rounding per weight on the calibration data,
        layer by layer; for 2..8 bits, most useful at 2-4).
    bias_correction : shift each bias so the quantized layer's mean output per channel on the calibration data
        equals the float model's.
    activations : ``"static"`` (default with calibration), ``"float"`` (default without: weights only) or
        ``"dynamic"`` (Dense inputs quantized per call to uint8, exactly as ONNX ``DynamicQuantizeLinear`` in
        the ``format="dynamic"`` export does).
    fold : fold inference BatchNorms and stand-alone activations into the Dense/Conv before them first
        (:func:`pyflux_compress.compression.fold.fold_batchnorm`), so every Conv/Dense becomes one integer
        kernel in the ONNX export. Keys of ``bits`` always name layers of ``model`` itself.
    seed : seed of AdaRound's mini-batch sampling.
    adaround_iters : Adam steps per layer of ``rounding="adaround"`` (None: ``adaround.ITERS`` = 400); more
        steps fit the rounding closer at 2-3 bits (cost linear in the steps).

    Returns
    -------
    QuantizedChain — forward simulates the integer arithmetic; ``records`` gains a ``"quantize"`` entry.

    Raises
    ------
    ValueError for unsupported bits/scheme/granularity/method/weight_clip/rounding, calibration data of the
    wrong shape, bad keys, or an option that needs calibration data without it.
    """
    per_layer, X, activations = validate_quantize(
        model, bits, scheme, granularity, calibration, method, weight_clip=weight_clip, rounding=rounding,
        bias_correction=bias_correction, activations=activations, fold=fold, seed=seed,
        adaround_iters=adaround_iters)
    if fold:
        model, paths = fold_with_paths(model)
        per_layer = {paths[p]: b for p, b in per_layer.items() if p in paths}
    st = _Settings(scheme, granularity, method, weight_clip, rounding, bool(bias_correction), activations,
                   int(seed), None if adaround_iters is None else int(adaround_iters))
    summary: dict[str, dict[str, Any]] = {}
    replaced: dict[str, Any] = {}
    xf = xq = X  # calibration inputs of the current leaf in the float and in the quantized model
    for path, layer in modules(model):  # sequential: each layer is calibrated on its real inputs
        b = per_layer.get(path)
        flt = as_float_layer(layer)
        if b is None:
            replaced[path] = layer.copy()
            nxt = flt
        else:
            q, summary[path] = _quantize_leaf(flt.copy(), b, st, xf, xq)
            replaced[path] = nxt = q
        if X is not None:
            xf, xq = flt(xf), nxt(xq)
    out = map_layers(lambda p, l: replaced[p], model, as_type=QuantizedChain)
    out.records.append({"method": "quantize",
                        "settings": {"bits": bits if not isinstance(bits, Mapping) else
                                     {str(k): v for k, v in bits.items()},
                                     "scheme": scheme, "granularity": granularity,
                                     "calibrated": X is not None, "method": method if X is not None else None,
                                     "weight_clip": weight_clip, "rounding": rounding,
                                     "adaround_iters": adaround_iters,
                                     "bias_correction": bool(bias_correction), "activations": activations},
                        "per_layer": summary})
    return out


def integer_reference_forward(layer: QuantizedDense, x: np.ndarray) -> np.ndarray:
    """Reference Dense forward in integer arithmetic: int8 x int8 -> int32 accumulation, then scale.

    ``acc = (x_q - zp_a) @ (q - zp_w).T`` in int32; ``z = Float64(acc) * (s_a * s_w) + bias`` rounded to float32;
    then the activation. Requires a calibrated layer. Used by tests and as executable documentation.
    """
    if not layer.calibrated:
        raise ValueError("integer_reference_forward needs a calibrated layer (quantize(..., calibration=X))")
    x = np.asarray(x, dtype=np.float32)
    xq = np.clip(np.rint(x / layer.act_scale) + np.float32(layer.act_zero_point), layer.act_qmin, layer.act_qmax)
    xi = xq.astype(np.int32) - np.int32(layer.act_zero_point)
    zp_w = np.asarray(layer.w_zero_point, dtype=np.int32)
    wi = layer.qweight.astype(np.int32) - (zp_w.reshape(-1, 1) if zp_w.ndim else zp_w)
    acc = xi @ wi.T  # int32 x int32 -> int32 accumulation (numpy's integer matmul, no float involved)
    z = acc.astype(np.float64) * (np.asarray(layer.w_scale, np.float64) * np.float64(layer.act_scale))
    if layer.float_layer.bias is not None:
        z = z + layer.float_layer.bias.astype(np.float64)
    return layer.float_layer.activation(z.astype(np.float32))
