"""fp32 export: translate each Flux layer of a Chain into ONNX nodes (format details live in ``_graph.py``).

Layout conversions (Flux -> ONNX), all proved numerically in tests/test_onnx_export.py:

* **Dense** ``weight (out, in)`` is already the ``B`` of ``Gemm(transB=1)``: ``y = x @ W.T + b``.
* **Conv** is a true convolution (NNlib flips the kernel), ONNX ``Conv`` is a cross-correlation, so
  ``W_onnx = flip(w, axes=(0, 1)).transpose(3, 2, 1, 0)``: Flux ``(kw, kh, cin, cout)`` -> ONNX
  ``(cout, cin, kh, kw)``. ``CrossCor`` skips the flip. Flux tuples list the first spatial dim first, which
  is the *last* numpy axis (W), so ``stride (sw, sh)`` -> ``strides [sh, sw]``, ``dilation (dw, dh)`` ->
  ``[dh, dw]``, ``pad (w_lo, w_hi, h_lo, h_hi)`` -> ``pads [h_lo, w_lo, h_hi, w_hi]``.
* **flatten**: Flux flattens WHCN column-major. Our data is NCHW = WHCN with the dims reversed, so
  Flux's order ``w + W*h + W*H*c`` is exactly the C-order (row-major) reshape of NCHW, which is what
  ONNX ``Flatten(axis=1)`` does. No Transpose is needed (see docs/ARCHITECTURE.md "Flux flatten").
* **BatchNorm** (inference) -> ``BatchNormalization`` with the running statistics.
* **Dropout** is the identity at inference and is dropped.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ._graph import GraphBuilder

# Flux layer names this exporter maps, shown in the "no ONNX mapping" error.
SUPPORTED_LAYERS = ("Chain", "Dense", "Conv", "CrossCor", "MaxPool", "MeanPool", "GlobalMeanPool", "flatten",
                    "BatchNorm", "Dropout", "QuantizedDense", "QuantizedConv")
SUPPORTED_ACTIVATIONS = ("identity", "relu", "sigmoid/σ", "tanh", "softmax", "leakyrelu", "elu", "gelu",
                         "swish")


class UnsupportedLayerError(ValueError):
    """A layer (or activation) that has no ONNX mapping; the message names it and the supported set."""


# ---------------------------------------------------------------------------------------------------
# helpers reading layers through the documented contract
# ---------------------------------------------------------------------------------------------------
def layer_kind(layer: Any) -> str:
    """Flux name of a layer: ``flux_name`` from the layer contract, else the class name."""
    return str(getattr(layer, "flux_name", None) or type(layer).__name__)


def activation_name(act: Any) -> str:
    """Canonical NNlib name of an activation (``None`` means identity). ``σ`` is ``sigmoid``."""
    if act is None:
        return "identity"
    for attr in ("name", "__name__"):
        name = getattr(act, attr, None)
        if isinstance(name, str) and name:
            break
    else:
        name = repr(act)
    name = name.strip()
    return {"σ": "sigmoid", "sigmoid_fast": "sigmoid", "tanh_fast": "tanh", "gelu_tanh": "gelu"}.get(name, name)


def is_activation(layer: Any) -> bool:
    """Activation objects used directly as Chain elements (Layers with no params and an NNlib name)."""
    return type(layer).__name__ == "Activation" or layer_kind(layer) == "Activation"


def flux_conv_to_onnx(weight: np.ndarray, flipped: bool) -> np.ndarray:
    """Flux kernel ``(kw, kh, cin, cout)`` -> ONNX ``(cout, cin, kh, kw)``; ``flipped`` for true convolution."""
    w = np.asarray(weight)
    if flipped:
        w = w[::-1, ::-1]
    return np.ascontiguousarray(w.transpose(3, 2, 1, 0))


def onnx_conv_to_flux(weight: np.ndarray, flipped: bool) -> np.ndarray:
    """Inverse of :func:`flux_conv_to_onnx`."""
    w = np.asarray(weight).transpose(3, 2, 1, 0)
    if flipped:
        w = w[::-1, ::-1]
    return np.ascontiguousarray(w)


def spatial_attrs(layer: Any, *, kernel: tuple | None = None) -> dict[str, list[int]]:
    """ONNX ``kernel_shape/strides/pads/dilations`` ([H, W] order) from Flux's (W-first) tuples."""
    attrs: dict[str, list[int]] = {}
    if kernel is not None:
        kw, kh = (int(v) for v in kernel)
        attrs["kernel_shape"] = [kh, kw]
    stride = _pair(getattr(layer, "stride", 1))
    attrs["strides"] = [stride[1], stride[0]]
    pad = _quad(getattr(layer, "pad", 0))
    attrs["pads"] = [pad[2], pad[0], pad[3], pad[1]]
    if hasattr(layer, "dilation"):
        dil = _pair(layer.dilation)
        attrs["dilations"] = [dil[1], dil[0]]
    return attrs


def _pair(v: Any) -> tuple[int, int]:
    if np.ndim(v) == 0:
        return int(v), int(v)
    t = tuple(int(x) for x in v)
    if len(t) != 2:
        raise UnsupportedLayerError(f"only 2-D (image) layers export to ONNX; got the tuple {t}")
    return t  # type: ignore[return-value]


def _quad(v: Any) -> tuple[int, int, int, int]:
    """Flux pad: an int, a 2-tuple (per spatial dim, symmetric) or a 4-tuple (w_lo, w_hi, h_lo, h_hi)."""
    if np.ndim(v) == 0:
        return (int(v),) * 4  # type: ignore[return-value]
    t = tuple(int(x) for x in v)
    if len(t) == 2:
        return t[0], t[0], t[1], t[1]
    if len(t) != 4:
        raise UnsupportedLayerError(f"pad must have 1, 2 or 4 entries; got {t}")
    return t  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------------
def emit_activation(b: GraphBuilder, act: Any, where: str) -> None:
    """Append the nodes of activation ``act`` to the builder (identity adds nothing)."""
    name = activation_name(act)
    if name == "identity":
        return
    if callable(getattr(act, "to_onnx", None)):   # every model.activations object knows its ONNX form
        try:
            b.current = act.to_onnx(b, b.current)
        except ValueError as err:
            raise UnsupportedLayerError(f"{where}: {err}") from None
        return
    if name == "relu":
        b.apply("Relu")
    elif name == "sigmoid":
        b.apply("Sigmoid")
    elif name == "tanh":
        b.apply("Tanh")
    elif name == "softmax":  # NNlib softmax(dims=1) = over features = last numpy axis
        b.apply("Softmax", axis=-1)
    elif name == "leakyrelu":  # NNlib leakyrelu(x, a=0.01)
        b.apply("LeakyRelu", alpha=float(_first_attr(act, ("alpha", "a"), 0.01)))
    elif name == "elu":  # NNlib elu(x, α=1)
        b.apply("Elu", alpha=float(_first_attr(act, ("alpha", "α", "a"), 1.0)))
    elif name == "swish":  # NNlib swish(x) = x * σ(x)
        x = b.current
        (s,) = b.node("Sigmoid", [x])
        (y,) = b.node("Mul", [x, s], prefix="swish")
        b.current = y
    elif name == "gelu":
        _emit_gelu_tanh(b)
    else:
        raise UnsupportedLayerError(
            f"{where}: activation {name!r} has no ONNX mapping; supported activations: "
            f"{', '.join(SUPPORTED_ACTIVATIONS)}")


def _first_attr(obj: Any, names: tuple[str, ...], default: float) -> float:
    for n in names:
        v = getattr(obj, n, None)
        if isinstance(v, (int, float, np.floating)):
            return float(v)
    params = getattr(obj, "params", None)
    if isinstance(params, dict):
        for n in names:
            if n in params:
                return float(params[n])
    return default


def _emit_gelu_tanh(b: GraphBuilder) -> None:
    """NNlib's gelu (tanh form): ``0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))``.

    ONNX only gained ``Gelu`` (with ``approximate="tanh"``) in opset 20, so for older opsets it is composed
    from primitives.
    """
    x = b.current
    if b.opset >= 20:
        b.apply("Gelu", approximate="tanh")
        return
    c = b.const(b.fresh("gelu_c"), np.array(0.044715, np.float32))
    k = b.const(b.fresh("gelu_k"), np.array(math.sqrt(2.0 / math.pi), np.float32))
    half = b.const(b.fresh("gelu_half"), np.array(0.5, np.float32))
    one = b.const(b.fresh("gelu_one"), np.array(1.0, np.float32))
    (x2,) = b.node("Mul", [x, x], prefix="gelu")
    (x3,) = b.node("Mul", [x2, x], prefix="gelu")
    (cx3,) = b.node("Mul", [x3, c], prefix="gelu")
    (inner,) = b.node("Add", [x, cx3], prefix="gelu")
    (kin,) = b.node("Mul", [inner, k], prefix="gelu")
    (t,) = b.node("Tanh", [kin], prefix="gelu")
    (t1,) = b.node("Add", [t, one], prefix="gelu")
    (hx,) = b.node("Mul", [x, half], prefix="gelu")
    (y,) = b.node("Mul", [hx, t1], prefix="gelu")
    b.current = y


# ---------------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------------
class ExportState:
    """What a layer translator knows besides the builder: the rank of the tensor flowing through."""

    def __init__(self, rank: int):
        self.rank = rank  # including the batch dim: 2 for (N, F), 4 for (N, C, H, W)


def emit_dense(b: GraphBuilder, layer: Any, st: ExportState, where: str, *, weight: np.ndarray | None = None) -> None:
    """Dense -> ``Gemm(transB=1)`` on 2-D input (Flux's ``(out, in)`` weight is Gemm's B as stored);
    ``MatMul`` + ``Add`` when the input has more than 2 dims (Flux applies Dense to the first dim)."""
    w = np.asarray(layer.weight if weight is None else weight, dtype=np.float32)
    bias = getattr(layer, "bias", None)
    p = b.fresh("dense")
    if st.rank == 2:
        inputs = [b.current, b.const(f"{p}_W", w, allow_sparse=True)]
        if bias is not None and not _is_false(bias):
            inputs.append(b.const(f"{p}_b", np.asarray(bias, np.float32)))
        (y,) = b.node("Gemm", inputs, prefix=p, transB=1)
        b.current = y
    else:
        b.apply("MatMul", b.const(f"{p}_WT", np.ascontiguousarray(w.T), allow_sparse=True), prefix=p)
        if bias is not None and not _is_false(bias):
            b.apply("Add", b.const(f"{p}_b", np.asarray(bias, np.float32)), prefix=p)
    emit_activation(b, getattr(layer, "activation", None), where)


def _is_false(v: Any) -> bool:
    return isinstance(v, bool) and not v


def emit_conv(b: GraphBuilder, layer: Any, st: ExportState, where: str, *, weight: np.ndarray | None = None) -> None:
    """Conv / CrossCor -> ONNX ``Conv`` (kernel flipped for Conv, permuted to (cout, cin, kh, kw))."""
    w = np.asarray(layer.weight if weight is None else weight, dtype=np.float32)
    if w.ndim != 4:
        raise UnsupportedLayerError(f"{where}: only 2-D convolutions export (weight ndim {w.ndim})")
    flipped = layer_kind(layer) != "CrossCor"
    p = b.fresh("conv")
    inputs = [b.current, b.const(f"{p}_W", flux_conv_to_onnx(w, flipped), allow_sparse=True)]
    bias = getattr(layer, "bias", None)
    if bias is not None and not _is_false(bias):
        inputs.append(b.const(f"{p}_b", np.asarray(bias, np.float32)))
    attrs = spatial_attrs(layer, kernel=w.shape[:2])
    attrs["group"] = int(getattr(layer, "groups", 1) or 1)
    (y,) = b.node("Conv", inputs, prefix=p, **attrs)
    b.current = y
    emit_activation(b, getattr(layer, "activation", None), where)


def emit_pool(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
    """MaxPool -> ``MaxPool``; MeanPool -> ``AveragePool`` (NNlib divides by the full window, pad included)."""
    kind = layer_kind(layer)
    attrs = spatial_attrs(layer, kernel=_pair(layer.k))
    attrs.pop("dilations", None)
    if kind == "MaxPool":
        b.apply("MaxPool", prefix="maxpool", **attrs)
    else:
        b.apply("AveragePool", prefix="meanpool", count_include_pad=1, **attrs)


def emit_batchnorm(b: GraphBuilder, layer: Any, st: ExportState, where: str) -> None:
    """BatchNorm (inference, running statistics) -> ``BatchNormalization`` then λ."""
    if getattr(layer, "active", None) is True:
        raise UnsupportedLayerError(f"{where}: BatchNorm with active=true uses batch statistics at inference; "
                                    "set active=None/False before exporting")
    mu, var = getattr(layer, "mu", None), getattr(layer, "sigma2", None)
    if mu is None or var is None or not getattr(layer, "track_stats", True):
        raise UnsupportedLayerError(f"{where}: BatchNorm(track_stats=false) has no running statistics to export")
    chs = int(np.size(mu))
    gamma = getattr(layer, "gamma", None)
    beta = getattr(layer, "beta", None)
    gamma = np.ones(chs, np.float32) if gamma is None or not getattr(layer, "affine", True) else gamma
    beta = np.zeros(chs, np.float32) if beta is None or not getattr(layer, "affine", True) else beta
    p = b.fresh("bn")
    ins = [b.const(f"{p}_{n}", np.asarray(a, np.float32).reshape(chs))
           for n, a in (("scale", gamma), ("B", beta), ("mean", mu), ("var", var))]
    b.apply("BatchNormalization", *ins, prefix=p, epsilon=float(getattr(layer, "eps", 1e-5)))
    emit_activation(b, getattr(layer, "activation", None), where)


def emit_layer(b: GraphBuilder, layer: Any, st: ExportState, where: str,
               custom: dict[str, Callable] | None = None) -> None:
    """Translate one layer (recursing into nested Chains). ``custom`` overrides by Flux name (quantized export)."""
    kind = layer_kind(layer)
    if custom and kind in custom:
        custom[kind](b, layer, st, where)
        return
    if hasattr(layer, "layers") and kind in ("Chain", "QuantizedChain"):
        for i, sub in enumerate(layer.layers):
            emit_layer(b, sub, st, f"{where}.layers[{i + 1}]" if where else f"layers[{i + 1}]", custom)
        return
    if is_activation(layer):
        emit_activation(b, layer, where)
    elif kind == "Dense":
        emit_dense(b, layer, st, where)
    elif kind in ("Conv", "CrossCor"):
        emit_conv(b, layer, st, where)
    elif kind in ("MaxPool", "MeanPool"):
        emit_pool(b, layer, st, where)
    elif kind == "GlobalMeanPool":
        b.apply("GlobalAveragePool")
    elif kind in ("Flatten", "flatten"):
        b.apply("Flatten", axis=1)
        st.rank = 2
    elif kind == "BatchNorm":
        emit_batchnorm(b, layer, st, where)
    elif kind in ("Dropout", "AlphaDropout"):
        return  # identity at inference
    else:
        raise UnsupportedLayerError(
            f"{where or 'model'}: layer {_short_repr(layer)} ({kind}) has no ONNX mapping; supported layers: "
            f"{', '.join(SUPPORTED_LAYERS)}; activations: {', '.join(SUPPORTED_ACTIVATIONS)}")


def _short_repr(layer: Any) -> str:
    try:
        r = repr(layer)
    except Exception:  # noqa: BLE001 - a broken repr must not hide the real error
        r = type(layer).__name__
    return r if len(r) <= 80 else r[:77] + "..."


def leaf_layers(model: Any):
    """Leaf layers in order (flattening nested Chains)."""
    if layer_kind(model) in ("Chain", "QuantizedChain") and hasattr(model, "layers"):
        for sub in model.layers:
            yield from leaf_layers(sub)
    else:
        yield model


def infer_input_shape(model: Any) -> tuple:
    """Per-sample input shape from the first layer with a weight: Dense -> ``(in,)``; Conv -> ``(cin, "H", "W")``
    (symbolic spatial dims). Activations/Dropout before it are skipped, pooling only before a Conv.
    Anything else -> ValueError asking for ``input_shape``."""
    spatial_seen = False
    for layer in leaf_layers(model):
        kind = layer_kind(layer)
        if kind in ("Dropout", "AlphaDropout") or is_activation(layer):
            continue
        if kind in ("MaxPool", "MeanPool"):
            spatial_seen = True
            continue
        target = getattr(layer, "float_layer", layer)
        w = getattr(target, "weight", None)
        if kind in ("Dense", "QuantizedDense") and w is not None and not spatial_seen:
            return (int(np.shape(w)[1]),)
        if kind in ("Conv", "CrossCor", "QuantizedConv") and w is not None:
            return (int(np.shape(w)[2]) * int(getattr(target, "groups", 1) or 1), "H", "W")
        break
    raise ValueError("input_shape: cannot infer the per-sample input shape from the first layers; pass "
                     "input_shape=(features,) or (channels, height, width)")


def build_fp32(model: Any, b: GraphBuilder, custom: dict[str, Callable] | None = None) -> None:
    """Append the whole model to ``b``."""
    st = ExportState(rank=1 + len(b.input_shape))
    emit_layer(b, model, st, "", custom)
