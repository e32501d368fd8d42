"""Quantized export of a ``QuantizedChain`` (compression/quantize.py) in the two forms onnxruntime runs fast.

``format="qdq"`` (static, needs calibrated activations)
    Every quantized layer's *input* goes through ``QuantizeLinear -> DequantizeLinear`` with the layer's
    calibrated ``act_scale`` / ``act_zero_point`` (the scheme's ``act_dtype``: uint8 for ``affine`` and
    ``symmetric_weights``, int8 for ``symmetric``), and its weight is an int8 initializer behind
    ``DequantizeLinear`` (per-channel: ``axis=0`` of the ONNX weight, which is Gemm's ``B`` with ``transB=1``
    ``(out, in)`` and Conv's ``(cout, cin, kh, kw)``). The bias is stored as int32 with scale
    ``act_scale * w_scale`` (as ``onnxruntime.quantization.quantize_static`` does). onnxruntime's graph optimizer
    fuses ``DQ -> Gemm/Conv -> Q`` into integer kernels (QGemm / QLinearConv). BatchNorm is folded into the Conv
    before quantization (``pfc.quantize(fold=True)``), so a Conv+BN+relu block becomes one QLinearConv.
    Where the value is already integer (after a quantized layer of a scheme with ``integer_relu``), a QDQ pair
    also goes in front of the MaxPool / flatten / Dropout that precede the next quantized layer: those commute
    with the (monotone) quantization, so the result is unchanged while onnxruntime runs them on uint8
    (``NhwcMaxPool``). onnxruntime removes a Relu before ``QuantizeLinear`` only when the zero point is the
    type's minimum (uint8, zero point 0 after relu); with symmetric int8 activations the layers after a relu stay
    float Gemm/Conv on dequantized values (correct, not faster).

``format="dynamic"`` (no calibrated activations)
    Each layer is written as its simulated forward computes it. ``activations="dynamic"`` Dense:
    ``DynamicQuantizeLinear`` (uint8, per-call scale) + ``MatMulInteger`` with the int8 weight, then ``Cast``,
    ``Mul`` by ``x_scale * w_scale`` and ``Add`` bias -- the graph ``quantize_dynamic`` writes, which onnxruntime
    fuses into ``DynamicQuantizeMatMul``. Weights-only layers (``activations="float"``, the default without
    calibration) and every Conv (onnxruntime's CPU provider has no u8s8 ``ConvInteger``): the int8 weight
    behind ``DequantizeLinear`` and a float Gemm/Conv.

Bits below 8 are stored in int8 containers (exact values, int8 file size) -- except ``format="dynamic"`` with
``opset=21``: weights-only Dense layers of 2..4 bits get packed INT4 weights (half the int8 file);
onnxruntime 1.32 turned the activation-free last layer into its 4-bit ``MatMulNBits`` kernel but ran relu layers
as dequantize + float FusedGemm, so int4 is a file-size option, not a speed one. QDQ and Conv keep int8
containers (``MatMulInteger`` takes 8-bit inputs only; int4 QDQ fusion in onnxruntime was not verified).

Agreement with the simulated forward: the QuantizedChain computes ``acc * (s_a * s_w) + bias`` in float64 on the
integer operands; onnxruntime accumulates the same integers in int32 but rescales in float32 (and rounds the
bias to int32), so an element may land on the other side of a rounding boundary at the next layer's input:
at most one quantization step there.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from onnx import TensorProto

from ...model.chain import Chain
from ...model.walk import modules
from ._export import (ExportState, UnsupportedLayerError, build_fp32, emit_activation, emit_conv, emit_dense,
                      emit_layer, flux_conv_to_onnx, layer_kind, spatial_attrs)
from ._graph import GraphBuilder
from ...compression.schemes import get_scheme

QUANTIZED = ("QuantizedDense", "QuantizedConv")
# wrappers that write their own int8 graph (compression/quantize_sequence.py: their to_onnx) in every format
SEQUENCE_QUANTIZED = ("QuantizedRecurrent", "QuantizedEmbedding")
# layers a quantization commutes with (monotone / pure data movement): QDQ can move in front of them
_COMMUTING = ("MaxPool", "Flatten", "flatten", "Dropout", "AlphaDropout")


def dequantized_emitters() -> dict:
    """Emitters writing a quantized layer as its float layer with the dequantized weight (fp32 export)."""

    def dense(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
        emit_dense(b, layer.float_layer, st, where, weight=layer.weight_dequantized())

    def conv(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
        emit_conv(b, layer.float_layer, st, where, weight=layer.weight_dequantized())

    def sequence(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
        b.current = layer.dequantize().to_onnx(b, b.current)

    return {"QuantizedDense": dense, "QuantizedConv": conv, **{k: sequence for k in SEQUENCE_QUANTIZED}}


def export_view(model: Any) -> Any:
    """``model`` with every non-quantized wrapper leaf (weight-shared ``SharedDense``/``SharedConv``) replaced by
    the plain float layer it computes, so the exporters see only layers they map (the model itself if none)."""
    from ...compression.quantize import QuantizedLayer
    from ...compression.wrapper import WrappedLayer
    from ...model.walk import map_layers, modules

    def plain(layer: Any) -> Any:  # sequence-layer wrappers (QuantizedRecurrent/Embedding) write themselves
        return layer.to_float() if isinstance(layer, WrappedLayer) and not isinstance(layer, QuantizedLayer) \
            and layer_kind(layer) not in SEQUENCE_QUANTIZED else layer

    if not getattr(model, "container", False):
        return plain(model)
    if all(plain(l) is l for _, l in modules(model)):
        return model
    return map_layers(lambda p, l: plain(l), model)


def build_quantized(model: Any, b: GraphBuilder, fmt: str) -> None:
    """Append the quantized graph of ``model`` to ``b`` (only standard ONNX ops: no contrib domain needed)."""
    if fmt == "qdq":
        _build_qdq(model, b)
    elif fmt == "dynamic":
        build_fp32(model, b, {"QuantizedDense": _dynamic_dense, "QuantizedConv": _weight_only})
    else:  # pragma: no cover - validated by export_onnx
        raise ValueError(f"format: unknown quantized format {fmt!r}")


# ---------------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------------
def _weight_dq(b: GraphBuilder, p: str, q_onnx: np.ndarray, layer: Any) -> str:
    """int8 weight initializer (ONNX layout, scales along axis 0: Dense rows, Conv output channels, and for
    ConvTranspose its *input* channels, Flux's last kernel axis that per-channel quantization uses)
    behind ``DequantizeLinear``."""
    scale = np.asarray(layer.w_scale, np.float32)
    zp = np.asarray(layer.w_zero_point).astype(np.int8)
    inputs = [b.const(f"{p}_Wq", q_onnx.astype(np.int8), allow_sparse=True), b.const(f"{p}_Ws", scale),
              b.const(f"{p}_Wzp", zp)]
    attrs = {"axis": 0} if scale.ndim else {}
    (w,) = b.node("DequantizeLinear", inputs, prefix=f"{p}_Wdq", **attrs)
    return w


def _act_qdq(b: GraphBuilder, layer: Any) -> None:
    """``current = DQ(Q(current))`` with the layer's calibrated input scale / zero point."""
    zp_dtype = get_scheme(layer.scheme).act_dtype  # affine: uint8 [0, 255]; symmetric: int8
    p = b.fresh("act")
    s = b.const(f"{p}_s", np.asarray(layer.act_scale, np.float32))
    zp = b.const(f"{p}_zp", np.asarray(layer.act_zero_point).astype(zp_dtype))
    b.apply("QuantizeLinear", s, zp, prefix=f"{p}_q")
    b.apply("DequantizeLinear", s, zp, prefix=f"{p}_dq")


def _int32_bias(b: GraphBuilder, p: str, layer: Any) -> str | None:
    """Bias as int32 with scale ``act_scale * w_scale`` behind ``DequantizeLinear`` (QDQ convention)."""
    bias = layer.float_layer.bias
    if bias is None:
        return None
    scale = (np.asarray(layer.w_scale, np.float64) * np.float64(layer.act_scale)).astype(np.float32)
    scale = np.broadcast_to(scale, np.shape(bias)).copy()
    bq = np.clip(np.rint(np.asarray(bias, np.float64) / scale), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
    inputs = [b.const(f"{p}_bq", bq), b.const(f"{p}_bs", scale), b.const(f"{p}_bzp", np.zeros(bq.shape, np.int32))]
    (out,) = b.node("DequantizeLinear", inputs, prefix=f"{p}_bdq", axis=0)
    return out


def _conv_q_onnx(layer: Any) -> np.ndarray:
    fl = layer.float_layer
    if hasattr(fl, "onnx_kernel"):             # ConvTranspose: (cin, cout/g, kh, kw)
        return fl.onnx_kernel(layer.qweight)
    return flux_conv_to_onnx(layer.qweight, flipped=fl.flipped)


def _conv_node(b: GraphBuilder, p: str, layer: Any, inputs: list[str]) -> str:
    """The Conv (or, for a ConvTranspose float layer, ConvTranspose) node of a quantized conv."""
    fl = layer.float_layer
    if hasattr(fl, "onnx_attrs"):
        return b.node("ConvTranspose", inputs, prefix=p, **fl.onnx_attrs())[0]
    attrs = spatial_attrs(fl, kernel=np.shape(layer.qweight)[:2])
    return b.node("Conv", inputs, prefix=p, group=int(getattr(fl, "groups", 1) or 1), **attrs)[0]


# ---------------------------------------------------------------------------------------------------
# QDQ (static)
# ---------------------------------------------------------------------------------------------------
def _qdq_dense(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
    if st.rank != 2:
        raise UnsupportedLayerError(f"{where}: quantized Dense export needs 2-D (N, features) input")
    p = b.fresh("qdense")
    inputs = [b.current, _weight_dq(b, p, np.asarray(layer.qweight), layer)]
    bias = _int32_bias(b, p, layer)
    if bias is not None:
        inputs.append(bias)
    (y,) = b.node("Gemm", inputs, prefix=p, transB=1)
    b.current = y
    emit_activation(b, layer.float_layer.activation, where)


def _qdq_conv(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
    fl = layer.float_layer
    p = b.fresh("qconv")
    inputs = [b.current, _weight_dq(b, p, _conv_q_onnx(layer), layer)]
    # ConvTranspose's scales run along its input channels: they do not line up with the bias, keep it float
    bias = _int32_bias(b, p, layer) if not hasattr(fl, "onnx_kernel") else None
    if bias is not None:
        inputs.append(bias)
    elif fl.bias is not None:
        inputs.append(b.const(f"{p}_b", np.asarray(fl.bias, np.float32)))
    b.current = _conv_node(b, p, layer, inputs)
    emit_activation(b, fl.activation, where)


def _build_qdq(model: Any, b: GraphBuilder) -> None:
    """Emit leaves in order with each quantized layer's input QDQ placed in front of the commuting layers
    (MaxPool, flatten, Dropout) that precede it *and* again right before it. Re-quantizing a dequantized value
    with the same scale and zero point gives the same integers, so the second pair changes nothing
    numerically; it gives onnxruntime the ``DQ -> MaxPool -> Q`` and ``DQ -> Gemm`` patterns it fuses."""
    if any(getattr(c, "container", False) and not isinstance(c, Chain) for _, c in modules(model, containers=True)):
        # SkipConnection/Parallel are not sequential: each quantized layer gets its input QDQ right before it
        # and the containers compose the graph (no hoisting of the QDQ over MaxPool/flatten here)
        def with_act(emit: Callable) -> Callable:
            def run(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
                if getattr(layer, "act_scale", None) is not None:
                    _act_qdq(b, layer)
                emit(b, layer, st, where)
            return run
        build_fp32(model, b, {"QuantizedDense": with_act(_qdq_dense), "QuantizedConv": with_act(_qdq_conv)})
        return
    paths = [p for p, _ in modules(model)]
    leaves = [layer for _, layer in modules(model)]
    st = ExportState(rank=1 + len(b.input_shape))
    custom = {"QuantizedDense": _qdq_dense, "QuantizedConv": _qdq_conv}
    first_qdq: dict[int, int] = {}  # quantized leaf index -> leaf index where its first QDQ went
    for i, layer in enumerate(leaves):
        target = _quantized_ahead(leaves, i)
        if target is not None and i != target and target not in first_qdq and not _integer_before(leaves, i, target):
            target = None  # QDQ only right before the layer: see _integer_before
        if target is not None and (target not in first_qdq or i == target != first_qdq[target]):
            _act_qdq(b, leaves[target])
            first_qdq.setdefault(target, i)
        emit_layer(b, layer, st, paths[i], custom)


def _integer_before(leaves: list, i: int, target: int) -> bool:
    """Whether a QDQ pair in front of the commuting leaf ``i`` pays off: only when the value there is already
    integer in onnxruntime -- the graph input or the output of a statically quantized layer, with schemes that
    let onnxruntime drop a relu (``Scheme.integer_relu``). Then MaxPool runs as uint8 ``NhwcMaxPool`` between two
    QLinearConvs. After a float layer the uint8 MaxPool would run in onnxruntime's slow NCHW kernel (measured
    23.8 ms vs 4.8 ms for the float NCHWc MaxPool at batch 256), and with symmetric int8 activations the relu
    blocks the fusion anyway while opset 21 makes onnxruntime 1.32 fail on ``DQ -> MaxPool -> Q``
    (cf. microsoft/onnxruntime#25526)."""
    j = i - 1
    while j >= 0 and layer_kind(leaves[j]) in _COMMUTING:
        j -= 1
    if j < 0:
        return get_scheme(leaves[target].scheme).integer_relu
    prev = leaves[j]
    return layer_kind(prev) in QUANTIZED and getattr(prev, "act_scale", None) is not None \
        and get_scheme(prev.scheme).integer_relu


def _quantized_ahead(leaves: list, i: int) -> int | None:
    """Index of the quantized layer reached from leaf ``i`` through commuting layers only (or None)."""
    for j in range(i, len(leaves)):
        kind = layer_kind(leaves[j])
        if kind in QUANTIZED:
            return j if getattr(leaves[j], "act_scale", None) is not None else None
        if kind not in _COMMUTING:
            return None
    return None


# ---------------------------------------------------------------------------------------------------
# dynamic
# ---------------------------------------------------------------------------------------------------
def _dynamic_dense(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
    """``DynamicQuantizeLinear`` + ``MatMulInteger`` (weight ``(in, out)`` int8, per-column zero point) for a
    layer that simulates dynamic activations (``quantize(..., activations="dynamic")``).

    A weights-only layer (float activations) is written weight-only instead, so the file computes what
    ``pfc.predict`` computes: a packed INT4 weight with ``bits <= 4`` and ``opset >= 21`` (see
    :func:`_int4_dense`), else an int8 weight behind ``DequantizeLinear`` and a float Gemm."""
    if not layer.dynamic:
        if layer.bits <= 4 and b.opset >= 21 and layer.bits > 1:
            _int4_dense(b, layer, st, where)
        else:
            _weight_only(b, layer, st, where)
        return
    p = b.fresh("ddense")
    x_q, x_s, x_zp = b.node("DynamicQuantizeLinear", [b.current], outputs=3, prefix=f"{p}_dql")
    wq = np.ascontiguousarray(np.asarray(layer.qweight).astype(np.int8).T)  # (in, out)
    w_scale = np.asarray(layer.w_scale, np.float32)
    w_zp = np.asarray(layer.w_zero_point).astype(np.int8)
    ins = [x_q, b.const(f"{p}_Wq", wq, allow_sparse=True), x_zp, b.const(f"{p}_Wzp", w_zp)]
    (acc,) = b.node("MatMulInteger", ins, prefix=p)
    (accf,) = b.node("Cast", [acc], prefix=p, to=TensorProto.FLOAT)
    (scale,) = b.node("Mul", [x_s, b.const(f"{p}_Ws", w_scale)], prefix=f"{p}_scale")
    (y,) = b.node("Mul", [accf, scale], prefix=p)
    b.current = y
    if layer.float_layer.bias is not None:
        b.apply("Add", b.const(f"{p}_b", np.asarray(layer.float_layer.bias, np.float32)), prefix=p)
    emit_activation(b, layer.float_layer.activation, where)


def _weight_only(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
    """Dense (Gemm) or Conv with an int8 weight behind ``DequantizeLinear`` and float activations: exactly the
    simulated forward of a weights-only layer (Conv: onnxruntime's CPU provider has no u8s8 ``ConvInteger``)."""
    fl = layer.float_layer
    conv = layer_kind(layer) == "QuantizedConv"
    if not conv and st.rank != 2:
        raise UnsupportedLayerError(f"{where}: quantized Dense export needs 2-D (N, features) input")
    p = b.fresh("wconv" if conv else "wdense")
    q_onnx = _conv_q_onnx(layer) if conv else np.asarray(layer.qweight)
    inputs = [b.current, _weight_dq(b, p, q_onnx, layer)]
    if fl.bias is not None:
        inputs.append(b.const(f"{p}_b", np.asarray(fl.bias, np.float32)))
    if conv:
        b.current = _conv_node(b, p, layer, inputs)
    else:
        (b.current,) = b.node("Gemm", inputs, prefix=p, transB=1)
    emit_activation(b, fl.activation, where)


def _int4_dense(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
    """Weight-only int4 Dense: packed INT4 weight ``(in, out)`` -> ``DequantizeLinear(axis=1)`` -> ``MatMul``.

    INT4 tensors need opset 21. onnxruntime (checked with 1.32) can fuse ``DequantizeLinear(int4) -> MatMul`` into
    its ``MatMulNBits`` kernel (seen for an activation-free layer; a MatMul + Add + Relu became a float FusedGemm).
    Activations stay float: this equals the simulated forward of an uncalibrated (weight-only) layer.
    """
    import ml_dtypes  # shipped with onnx >= 1.16, which uses it for its 4-bit types

    p = b.fresh("i4dense")
    wq = b.const(f"{p}_Wq4", np.asarray(layer.qweight).T.astype(ml_dtypes.int4))  # (in, out), packed 2 per byte
    zp = b.const(f"{p}_Wzp4", np.asarray(layer.w_zero_point).astype(ml_dtypes.int4))
    scale = np.asarray(layer.w_scale, np.float32)
    attrs = {"axis": 1} if scale.ndim else {}
    (w,) = b.node("DequantizeLinear", [wq, b.const(f"{p}_Ws", scale), zp], prefix=f"{p}_Wdq", **attrs)
    b.apply("MatMul", w, prefix=p)
    if layer.float_layer.bias is not None:
        b.apply("Add", b.const(f"{p}_b", np.asarray(layer.float_layer.bias, np.float32)), prefix=p)
    emit_activation(b, layer.float_layer.activation, where)
