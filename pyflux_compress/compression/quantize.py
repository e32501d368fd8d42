"""Quantization: integer weights (int8 ... int2, binary ±α), per-tensor or per-channel, calibrated activations.

``quantize(model, bits=8, ...)`` returns a :class:`QuantizedChain`: a ``Chain`` whose ``Dense`` / ``Conv`` /
``CrossCor`` layers are replaced by :class:`QuantizedDense` / :class:`QuantizedConv`. Each keeps

* ``float_layer`` — the float "shadow" layer (trained by quantization-aware fine-tuning, see below);
* ``bits`` (1..8), ``scheme`` (``"symmetric"`` / ``"affine"``), ``granularity`` (``"per_tensor"`` /
  ``"per_channel"``);
* ``qweight`` — int8 array, same shape as the weight (int4 values in [-8, 7], binary in {-1, 1}, 0 if pruned);
* ``w_scale`` — float32, shape ``(out,)`` per channel (Dense rows, Conv axis 3) or ``()`` per tensor;
* ``w_zero_point`` — int32, same shape as ``w_scale`` (0 for the symmetric scheme and for binary);
* ``act_scale`` / ``act_zero_point`` — the *input* activation's float32 scale and int32 zero point after
  calibration (uint8 [0, 255] for ``"affine"``, int8 [-127, 127] for ``"symmetric"``), else ``None``.

Attributes added beyond docs/ARCHITECTURE.md (the ONNX exporter may ignore them):
``act_qmin`` / ``act_qmax`` (int, the activation integer range, ``None`` when not calibrated), ``method``
(the calibration method used, or ``None``), ``qmin`` / ``qmax`` (the weight integer range), and the methods
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

from ..backends import dispatch
from ..model import activations as A
from ..model import layers as L
from ..model.chain import Chain
from ..model.walk import map_layers, modules

SCHEMES = ("symmetric", "affine")
GRANULARITIES = ("per_tensor", "per_channel")
METHODS = ("minmax", "percentile")
SUPPORTED_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
PERCENTILE = 99.99  # used by method="percentile"
ACT_BITS = 8  # calibrated activations are always 8-bit


# --------------------------------------------------------------------------------------------------------------
# array-level numerics (pure functions on numpy arrays; also used by sharing/archive/ONNX export)
# --------------------------------------------------------------------------------------------------------------

def qrange(bits: int, scheme: str) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` for ``bits`` and ``scheme`` (binary, bits=1, gives (-1, 1))."""
    if bits == 1:
        return -1, 1
    if scheme == "symmetric":
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


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


def quantize_weight(w: np.ndarray, bits: int, scheme: str, granularity: str,
                    mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize one weight array with the module's rounding rules.

    Parameters
    ----------
    w : float array, Dense ``(out, in)`` or Conv ``(kw, kh, cin, cout)``.
    bits, scheme, granularity : see :func:`quantize`.
    mask : optional bool array like ``w`` (False = pruned); used by binary to keep pruned entries at 0.

    Returns
    -------
    (qweight int8 like ``w``, scale float32 ``(C,)`` or ``()``, zero_point int32 like scale)
    """
    w = np.asarray(w, dtype=np.float32)
    axis = channel_axis(w) if granularity == "per_channel" else None
    rows = _per_channel_view(w, axis)  # (C, n)
    qmin, qmax = qrange(bits, scheme)
    if bits == 1:
        absw = np.abs(rows).astype(np.float64)
        if mask is not None:
            m = _per_channel_view(np.asarray(mask, dtype=bool), axis)
            count = m.sum(axis=1)
            total = np.where(m, absw, 0.0).sum(axis=1)
        else:
            m = None
            count = np.full(rows.shape[0], rows.shape[1])
            total = absw.sum(axis=1)
        alpha = (total / np.maximum(count, 1)).astype(np.float32)
        scale = np.where(alpha == 0, np.float32(1), alpha).astype(np.float32)
        q = np.where(rows >= 0, 1, -1).astype(np.int8)
        q[alpha == 0] = 0
        if m is not None:
            q[~m] = 0
        zp = np.zeros(scale.shape, dtype=np.int32)
    elif scheme == "symmetric":
        amax = np.abs(rows).max(axis=1)
        scale = (amax / np.float32(qmax)).astype(np.float32)
        scale[amax == 0] = 1
        q = np.clip(np.rint(rows / scale[:, None]), qmin, qmax).astype(np.int8)
        zp = np.zeros(scale.shape, dtype=np.int32)
    else:
        lo = np.minimum(rows.min(axis=1), np.float32(0))
        hi = np.maximum(rows.max(axis=1), np.float32(0))
        with np.errstate(over="ignore"):
            span = hi - lo  # overflows to inf only for weights near ±3.4e38: then divide before subtracting
            scale = (span / np.float32(qmax - qmin)).astype(np.float32)
        huge = ~np.isfinite(span)
        scale[huge] = hi[huge] / np.float32(qmax - qmin) - lo[huge] / np.float32(qmax - qmin)
        scale[(hi == lo) | (scale == 0)] = 1  # scale == 0: a subnormal range underflowed
        zp = np.clip(qmin - np.rint(lo / scale), qmin, qmax).astype(np.int32)
        q = np.clip(np.rint(rows / scale[:, None]) + zp[:, None], qmin, qmax).astype(np.int8)
    # back to the weight's layout
    if axis is None:
        return q.reshape(w.shape), scale.reshape(()), zp.reshape(())
    moved = np.moveaxis(np.empty_like(w), axis, 0).shape
    return np.moveaxis(q.reshape(moved), 0, axis).copy(), scale, zp


def integer_weight(qweight: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """``q - zp`` as an integer-valued float64 array (the kernel operand of the simulated integer forward)."""
    zp = np.asarray(zero_point)
    if zp.ndim:
        zp = zp.reshape(_bshape(qweight.ndim, channel_axis(qweight)))
    return np.subtract(qweight, zp, dtype=np.float64)  # one float64 array, not two (same exact values)


def dequantize_weight(qweight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """``(q - zp) * scale`` in float32, broadcasting per-channel scales over the weight's channel axis."""
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.asarray(zero_point, dtype=np.float32)
    if scale.ndim:
        shape = _bshape(qweight.ndim, channel_axis(qweight))
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    with np.errstate(over="ignore"):
        out = ((qweight.astype(np.float32) - zp) * scale).astype(np.float32)
    # a weight near ±3.4e38 may round to the grid point one step beyond float32's range: keep it finite
    big = np.finfo(np.float32).max
    return np.clip(out, -big, big, out=out)


def activation_qparams(lo: float, hi: float, scheme: str) -> tuple[np.float32, np.int32, int, int]:
    """Scale, zero point and integer range ``(scale, zp, qmin, qmax)`` for an activation range ``[lo, hi]``."""
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    if scheme == "symmetric":
        qmin, qmax = -127, 127
        amax = max(abs(lo), abs(hi))
        scale = np.float32(amax / np.float32(qmax)) if amax > 0 else np.float32(1)
        return scale, np.int32(0), qmin, qmax
    qmin, qmax = 0, 255
    scale = np.float32((hi - lo) / np.float32(255)) if hi > lo else np.float32(1)
    zp = np.int32(np.clip(-np.rint(lo / scale), qmin, qmax))
    return scale, zp, qmin, qmax


def calibration_range(x: np.ndarray, scheme: str, method: str) -> tuple[float, float]:
    """The activation range ``(lo, hi)`` of calibration inputs ``x`` (any shape) by ``method``."""
    x = np.asarray(x, dtype=np.float32).ravel()
    if method == "minmax":
        return float(x.min()), float(x.max())
    if scheme == "symmetric":
        a = float(np.percentile(np.abs(x), PERCENTILE))
        return -a, a
    return float(np.percentile(x, 100 - PERCENTILE)), float(np.percentile(x, PERCENTILE))


def fake_quantize_input(x: np.ndarray, scale: np.float32, zero_point: np.int32, qmin: int,
                        qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer activation operand ``x_q - zp`` (float64, integer valued) and the in-range mask (for the STE)."""
    x = np.asarray(x, dtype=np.float32)
    t = np.rint(x / np.float32(scale)) + np.float32(zero_point)
    inside = (t >= qmin) & (t <= qmax)
    q = np.clip(t, qmin, qmax)
    return q.astype(np.float64) - float(zero_point), inside


# --------------------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------------------



class QuantizedLayer(L.Layer):
    """Shared implementation of :class:`QuantizedDense` and :class:`QuantizedConv` (see the module docstring).

    ``forward`` computes in float64 on integer-valued operands through an internal copy of the float layer
    whose weight is ``q - zp`` and which has no bias and no activation; bias and activation are applied here.
    """

    flux_fields: dict[str, str] = {}

    def __init__(self, float_layer: Any, bits: int = 8, scheme: str = "symmetric",
                 granularity: str = "per_channel") -> None:
        self.float_layer = float_layer
        self.bits = int(bits)
        self.scheme = scheme
        self.granularity = granularity
        self.qmin, self.qmax = qrange(self.bits, scheme)
        self.act_scale: np.float32 | None = None
        self.act_zero_point: np.int32 | None = None
        self.act_qmin: int | None = None
        self.act_qmax: int | None = None
        self.method: str | None = None
        self._stale = True
        self.requantize()

    # -- naming --------------------------------------------------------------------------------------------
    @property
    def flux_name(self) -> str:
        return type(self).__name__

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """The shadow layer's masks (shared dict): pruned weights stay zero through QAT."""
        return self.float_layer.masks

    @property
    def calibrated(self) -> bool:
        return self.act_scale is not None

    def _out_axis(self, ndim: int) -> int:
        """Channel axis of this layer's *output*: last for Dense ``(..., out)``, 1 for Conv ``(N, C, H, W)``."""
        return ndim - 1

    # -- quantization ----------------------------------------------------------------------------------------
    def requantize(self) -> None:
        """Recompute ``qweight``, ``w_scale``, ``w_zero_point`` from the shadow weight (after it changed)."""
        mask = self.masks.get("weight")
        self.set_integer_weights(*quantize_weight(self.float_layer.weight, self.bits, self.scheme,
                                                  self.granularity, mask))

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

    def weight_dequantized(self) -> np.ndarray:
        """The float32 weight the forward effectively uses: ``(q - zp) * scale``."""
        if self._stale:
            self.requantize()
        return dequantize_weight(self.qweight, self.w_scale, self.w_zero_point)

    def _out_scale(self, ndim: int) -> np.ndarray:
        """``s_a * s_w`` in float64, shaped to broadcast over an output of ``ndim`` dims."""
        s = np.asarray(self.w_scale, dtype=np.float64)
        if self.calibrated:
            s = s * np.float64(self.act_scale)
        if s.ndim:
            s = s.reshape(_bshape(ndim, self._out_axis(ndim)))
        return s

    # -- layer contract --------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = False, rng: Any = None) -> tuple[np.ndarray, tuple]:
        if self._stale:
            self.requantize()
        dtype = self.float_layer.weight.dtype
        x = np.asarray(x, dtype=dtype)
        if self.calibrated:
            xi, inside = fake_quantize_input(x, self.act_scale, self.act_zero_point, self.act_qmin, self.act_qmax)
        else:
            xi, inside = x.astype(np.float64), None
        acc, icache = self._inner.forward(xi, train=train, rng=rng)
        z = np.asarray(acc, dtype=np.float64) * self._out_scale(np.ndim(acc))
        bias = self.float_layer.bias
        if bias is not None:
            z = z + np.asarray(bias, dtype=np.float64).reshape(_bshape(z.ndim, self._out_axis(z.ndim)))
        z = z.astype(dtype)
        y, acache = self.float_layer.activation.forward(z, train=train, rng=rng)
        return y, (icache, acache, inside, z.ndim)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[0]

    def backward(self, cache: tuple, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Straight-through estimator: gradients w.r.t. the shadow weight as if ``w_dq = w``."""
        icache, acache, inside, ndim = cache
        dz, _ = self.float_layer.activation.backward(acache, dy)
        dz = np.asarray(dz, dtype=np.float64)
        dxi, g = self._inner.backward(icache, dz * self._out_scale(ndim))
        dtype = self.float_layer.weight.dtype
        s_w = np.asarray(self.w_scale, dtype=np.float64)
        if s_w.ndim:
            s_w = s_w.reshape(_bshape(self.qweight.ndim, channel_axis(self.qweight)))
        grads = {"weight": (np.asarray(g["weight"]) / s_w).astype(dtype)}
        if self.float_layer.bias is not None:
            axes = tuple(a for a in range(ndim) if a != self._out_axis(ndim))
            grads["bias"] = dz.sum(axis=axes).astype(dtype)
        dx = np.asarray(dxi, dtype=np.float64)
        if self.calibrated:
            dx = np.where(inside, dx / np.float64(self.act_scale), 0.0)
        self._stale = True  # the optimiser is about to change the shadow weights
        return dx.astype(dtype), grads

    def params(self) -> dict[str, np.ndarray]:
        p = {"weight": self.float_layer.weight}
        if self.float_layer.bias is not None:
            p["bias"] = self.float_layer.bias
        return p

    def output_shape(self, in_shape: tuple) -> tuple:
        return self.float_layer.output_shape(in_shape)

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
    if "weight" not in getattr(layer, "compressible", ()) or \
            layer.out_axes.get("weight") != channel_axis(layer.weight):
        return None
    return QuantizedDense if layer.out_axes["weight"] == 0 else QuantizedConv


def as_float_layer(layer: Any) -> Any:
    """The float equivalent of a leaf: quantized -> its shadow layer, shared -> reconstructed, else itself."""
    if isinstance(layer, QuantizedLayer):
        return layer.float_layer
    to_float = getattr(layer, "to_float", None)
    return to_float() if callable(to_float) else layer


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
            return layer.dequantize() if isinstance(layer, QuantizedLayer) else layer.copy()

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


def _validate_quantize(model: Any, bits: Any, scheme: Any, granularity: Any, calibration: Any,
                       method: Any) -> tuple[dict[str, int | None], np.ndarray | None]:
    if not getattr(model, "container", False):
        raise ValueError(f"model must be a Chain, got {type(model).__name__}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
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
    return per_layer, X


def _calibrate(model: Any, X: np.ndarray, targets: set[str], scheme: str, method: str,
               batchsize: int = 1024) -> dict[str, tuple[float, float]]:
    """Input ranges of the target layers: run the float model over ``X``; percentile uses all inputs seen."""
    leaves = list(modules(model))
    seen: dict[str, list[np.ndarray]] = {p: [] for p in targets}
    for start in range(0, len(X), batchsize):  # loop over batches, not samples
        x = X[start:start + batchsize]
        for path, layer in leaves:
            if path in targets:
                seen[path].append(x if method == "percentile" else np.array([x.min(), x.max()]))
            x = as_float_layer(layer)(x)
    return {p: calibration_range(np.concatenate([a.ravel() for a in v]), scheme, method) for p, v in seen.items()}


@dispatch("quantize")
def quantize(model: Any, bits: int | Mapping[Any, int | None] = 8, scheme: str = "symmetric",
             granularity: str = "per_tensor", calibration: np.ndarray | None = None,
             method: str = "minmax") -> Any:
    """Quantize a Chain's Dense/Conv weights to integers (and calibrate input activations).

    Parameters
    ----------
    model : Chain (not modified). Leaves already quantized are re-quantized from their shadow weights.
    bits : 1..8 (1 = binary ±α), or a dict ``{path_or_index: bits}`` for mixed precision; keys are Flux paths
        (``"layers[1]"``) or 0-based indices ``model[i]``; layers not in the dict (or mapped to ``None``) stay float.
    scheme : ``"symmetric"`` (zero point 0, int8 range [-127, 127]) or ``"affine"`` (int8 [-128, 127] with an
        integer zero point).
    granularity : ``"per_tensor"`` (one scale per weight) or ``"per_channel"`` (one per output channel: Dense
        rows, Conv axis 3).
    calibration : optional inputs ``(N, *input_shape)``; when given, each quantized layer's input activation gets
        an 8-bit scale/zero point (static quantization) and the forward fake-quantizes it.
    method : activation range from calibration: ``"minmax"`` or ``"percentile"`` (``PERCENTILE`` = 99.99).

    Returns
    -------
    QuantizedChain — forward simulates the integer arithmetic; ``records`` gains a ``"quantize"`` entry.

    Raises
    ------
    ValueError for unsupported bits/scheme/granularity/method, calibration data of the wrong shape, bad keys.
    """
    per_layer, X = _validate_quantize(model, bits, scheme, granularity, calibration, method)
    targets = {p for p, b in per_layer.items() if b is not None}
    ranges = _calibrate(model, X, targets, scheme, method) if X is not None else {}
    summary: dict[str, dict[str, Any]] = {}

    def fn(path: str, layer: Any) -> Any:
        b = per_layer.get(path)
        if b is None:
            return layer.copy()
        base = as_float_layer(layer).copy()
        q = quantized_class(base)(base, b, scheme, granularity)  # type: ignore[misc]
        if path in ranges:
            q.set_activation_range(*ranges[path], method)
        err = float(np.abs(q.weight_dequantized() - base.weight).max())
        summary[path] = {"bits": b, "max_abs_error": err,
                         "act_range": list(ranges[path]) if path in ranges else None}
        return q

    out = map_layers(fn, model, as_type=QuantizedChain)
    out.records.append({"method": "quantize",
                        "settings": {"bits": bits if not isinstance(bits, Mapping) else
                                     {str(k): v for k, v in bits.items()},
                                     "scheme": scheme, "granularity": granularity,
                                     "calibrated": X is not None, "method": method if X is not None else None},
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
