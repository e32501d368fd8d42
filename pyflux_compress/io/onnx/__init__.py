"""ONNX export and import of Flux-style Chains (``pfc.export_onnx``, ``pfc.import_onnx``).

Format knowledge (opset, IR version, node/initializer helpers, atomic writes) is in ``_graph.py``;
layer translation in ``_export.py`` (fp32) and ``_quant.py`` (QDQ / dynamic int8); reading in ``_import.py``.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from ._export import SUPPORTED_ACTIVATIONS, UnsupportedLayerError, supported_layers
from ._graph import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, ir_version_for, ort_max_ir_version
from ._import import load_onnx_proto

__all__ = ["export_onnx", "import_onnx", "to_onnx_model", "UnsupportedLayerError", "supported_layers",
           "SUPPORTED_ACTIVATIONS", "DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "ir_version_for",
           "ort_max_ir_version", "FORMATS", "load_onnx_proto"]

FORMATS = ("fp32", "qdq", "dynamic")


def to_onnx_model(model: Any, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                  input_shape: Sequence[int | str] | None = None, format: str | None = None,
                  sparse: bool = False, batch_size: int = 1):
    """Build the ``onnx.ModelProto`` that :func:`export_onnx` would write (same arguments, no file)."""
    from . import _export
    from ._graph import GraphBuilder

    fmt = _validate(model, opset, format, sparse, dynamic_batch)
    shape = tuple(input_shape) if input_shape is not None else _export.infer_input_shape(model)
    if all(isinstance(d, int) for d in shape) and hasattr(model, "output_shape"):
        model.output_shape(shape)  # a shape mismatch raises the layer's own ValueError, naming the layer
    b = GraphBuilder(shape, opset, dynamic_batch=dynamic_batch, batch_size=batch_size, sparse=sparse)
    if fmt == "fp32":
        custom = None
        if _is_quantized(model):  # fp32 export of a QuantizedChain: its dequantized weights
            from ._quant import dequantized_emitters
            custom = dequantized_emitters()
        _export.build_fp32(model, b, custom)
    else:
        from ._quant import build_quantized
        build_quantized(model, b, fmt)
    doc = f"Exported by pyflux-compress ({fmt}{', sparse' if sparse else ''}) from: {_flux_syntax(model)}"
    onnx_model = b.to_model(doc=doc)
    from onnx import helper
    helper.set_model_props(onnx_model, {"flux_syntax": _flux_syntax(model), "pyflux_compress.format": fmt})
    return onnx_model


def export_onnx(model: Any, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                input_shape: Sequence[int | str] | None = None, format: str | None = None,
                sparse: bool = False) -> str:
    """Write ``model`` (a Chain or QuantizedChain) as an ONNX file onnxruntime can run; returns the path.

    Parameters
    ----------
    model : Chain / QuantizedChain / single layer
        Every registered layer with a ``to_onnx`` (``supported_layers()``: Dense as Gemm, Conv/CrossCor,
        pooling, flatten, BatchNorm (inference), Dropout (dropped), ...) and the NNlib activations listed in
        ``SUPPORTED_ACTIVATIONS``. Structurally pruned models are ordinary smaller Chains and just export.
    path : str or PathLike
        Destination ``.onnx``; written atomically (temp file + ``os.replace``).
    opset : int
        ONNX opset, 13..21 (default 17; 13 is the first with per-channel QuantizeLinear/DequantizeLinear,
        21 the first with INT4 tensors, used by ``format="dynamic"`` for <= 4-bit Dense). The IR version is the highest the installed
        onnxruntime loads (see ``ir_version_for``).
    dynamic_batch : bool
        Graph input ``input`` is ``(N, *input_shape)`` with symbolic N (else N = 1). Output is ``output``.
    input_shape : tuple, optional
        Per-sample input shape (without N). Default: ``(in,)`` for a Dense-first model,
        ``(cin, "H", "W")`` for a Conv-first model.
    format : {"fp32", "qdq", "dynamic"} or None
        None = "qdq" for a QuantizedChain with calibrated activations, "dynamic" for one without, else "fp32".
        "qdq": int8 per-channel weights + QuantizeLinear/DequantizeLinear on the calibrated activations, which
        onnxruntime fuses into integer kernels. "dynamic": DynamicQuantizeLinear + MatMulInteger for Dense
        (what ``onnxruntime.quantization.quantize_dynamic`` writes; Conv weight-only). "fp32" of a
        QuantizedChain writes its dequantized weights. Details and speed notes: ``_quant.py``, docs/deployment.md.
    sparse : bool
        Store weights whose COO form is smaller as ``sparse_initializer``. The *file* gets smaller; onnxruntime
        densifies sparse initializers when it loads the model, so inference speed and memory are the same as
        the dense export.

    Raises
    ------
    UnsupportedLayerError (a ValueError)
        A layer or activation with no ONNX mapping; the message names it (Flux-style path) and the supported set.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path: expected a file path (str or PathLike); got {type(path).__name__}")
    from ._graph import save_model_atomic

    onnx_model = to_onnx_model(model, opset=opset, dynamic_batch=dynamic_batch, input_shape=input_shape,
                               format=format, sparse=sparse)
    return save_model_atomic(onnx_model, path)


def import_onnx(path: str | os.PathLike):
    """Read an ONNX model of the supported ops back into a Chain (see ``_import.py`` for the op table)."""
    from ._import import import_onnx as _imp

    return _imp(path)


def _quantized_leaves(model: Any) -> list:
    """Leaves carrying integer weights (``qweight``: QuantizedDense / QuantizedConv)."""
    from ...model.walk import modules

    return [layer for _, layer in modules(model) if hasattr(layer, "qweight")]


def _is_quantized(model: Any) -> bool:
    return bool(_quantized_leaves(model))


def _has_act_scales(model: Any) -> bool:
    q = _quantized_leaves(model)
    return bool(q) and all(getattr(layer, "act_scale", None) is not None for layer in q)


def _validate(model: Any, opset: Any, format: str | None, sparse: Any, dynamic_batch: Any) -> str:
    if isinstance(opset, bool) or not isinstance(opset, int) or not 13 <= opset <= 21:
        raise ValueError(f"opset: expected an int in 13..21; got {opset!r}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS} or None; got {format!r}")
    if not isinstance(sparse, bool):
        raise ValueError(f"sparse: expected True or False; got {sparse!r}")
    if not isinstance(dynamic_batch, bool):
        raise ValueError(f"dynamic_batch: expected True or False; got {dynamic_batch!r}")
    if not callable(model):
        raise ValueError(f"model: expected a Chain or layer; got {type(model).__name__}")
    quantized = _is_quantized(model)
    if format is None:
        return ("qdq" if _has_act_scales(model) else "dynamic") if quantized else "fp32"
    if format in ("qdq", "dynamic") and not quantized:
        raise ValueError(f"format={format!r} needs a QuantizedChain (pfc.quantize(model, ...)); "
                         "this model has no quantized layers: use format='fp32'")
    if format == "qdq" and not _has_act_scales(model):
        raise ValueError("format='qdq' needs calibrated activation scales (quantize with calibration data); "
                         "this QuantizedChain has act_scale=None: use format='dynamic'")
    return format


def _flux_syntax(model: Any) -> str:
    try:
        return str(model)
    except Exception:  # noqa: BLE001
        return type(model).__name__
