"""ONNX export and import of Flux-style Chains (``pfc.export_onnx``, ``pfc.import_onnx``).

Format knowledge (opset, IR version, node/initializer helpers, atomic writes) is in ``_graph.py``;
layer translation in ``_export.py`` (fp32) and ``_quant.py`` (QDQ / dynamic int8); reading in ``_import.py``;
``format="auto"`` (measure the forms, keep the fastest accurate one) in ``_auto.py``.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from ._auto import FormatChoice
from ._export import SUPPORTED_ACTIVATIONS, UnsupportedLayerError, supported_layers
from ._graph import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, ir_version_for, ort_max_ir_version
from ._import import OnnxLoadError, load_onnx_proto

__all__ = ["export_onnx", "import_onnx", "to_onnx_model", "UnsupportedLayerError", "supported_layers",
           "SUPPORTED_ACTIVATIONS", "DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "ir_version_for",
           "ort_max_ir_version", "FORMATS", "load_onnx_proto", "OnnxLoadError", "choose_format", "FormatChoice"]

FORMATS = ("fp32", "qdq", "dynamic")  # what a written file holds; export_onnx also takes "auto"


def to_onnx_model(model: Any, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                  input_shape: Sequence[int | str] | None = None, format: str | None = None,
                  sparse: bool = False, batch_size: int = 1, data: Any = None, threads: int | None = None,
                  tolerance: float = 0.01):
    """Build the ``onnx.ModelProto`` that :func:`export_onnx` would write (same arguments, no file)."""
    from . import _export
    from ._graph import GraphBuilder
    from ._quant import export_view

    model = export_view(model)  # weight-shared layers export as the float layers they compute
    auto = None
    if isinstance(format, str) and format == "auto":
        auto = choose_format(model, data, batch_size=batch_size, threads=threads, tolerance=tolerance,
                             opset=opset, input_shape=input_shape)
        model, format = auto.model, auto.format
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
    props = {"flux_syntax": _flux_syntax(model), "pyflux_compress.format": fmt}
    if auto is not None:  # what was measured, so the choice can be audited later
        import json

        props["pyflux_compress.auto"] = json.dumps(auto.as_dict())
    helper.set_model_props(onnx_model, props)
    return onnx_model


def export_onnx(model: Any, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                input_shape: Sequence[int | str] | None = None, format: str | None = None,
                sparse: bool = False, batch_size: int = 1, data: Any = None, threads: int | None = None,
                tolerance: float = 0.01) -> str:
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
    format : {"fp32", "qdq", "dynamic", "auto"} or None
        None = "qdq" for a QuantizedChain with calibrated activations, "dynamic" for one without, else "fp32".
        "auto" measures the candidate forms in onnxruntime on ``data`` at ``batch_size`` with ``threads``
        intra-op threads and writes the fastest whose predictions stay within ``tolerance`` (see
        :func:`choose_format`, which returns the measurements; they are also stored in the file's metadata
        ``pyflux_compress.auto``). A float model is quantized for the int8 candidates.
        "qdq": int8 per-channel weights + QuantizeLinear/DequantizeLinear on the calibrated activations, which
        onnxruntime fuses into integer kernels. Integer is not always faster: for a Conv+BatchNorm CNN with
        32/64 filters it is 1.6-1.7x faster than fp32 at batch 256, but with 16/32 filters on 26x26 maps
        onnxruntime's QLinearConv is about 1.4x *slower* than the float Conv (onnxruntime's own
        ``quantize_static`` file alike; ``benchmarks/bench_ptq.py``); "auto" measures and keeps fp32 there. "dynamic": DynamicQuantizeLinear + MatMulInteger for Dense
        (what ``onnxruntime.quantization.quantize_dynamic`` writes; Conv weight-only). "fp32" of a
        QuantizedChain writes its dequantized weights. Details and speed notes: ``_quant.py``, docs/deployment.md.
    sparse : bool
        Store weights whose COO form is smaller as ``sparse_initializer``. The *file* gets smaller; onnxruntime
        densifies sparse initializers when it loads the model, so inference speed and memory are the same as
        the dense export.
    batch_size : int
        The batch size the model will run at: the fixed batch dimension when ``dynamic_batch=False``, and the
        batch ``format="auto"`` measures latency at.
    data, threads, tolerance
        Only for ``format="auto"``: representative inputs ``(N, *input_shape)``, onnxruntime intra-op threads
        (None: ``pfc.threads`` default), and the accepted share of changed top-1 predictions (default 0.01).

    Raises
    ------
    UnsupportedLayerError (a ValueError)
        A layer or activation with no ONNX mapping; the message names it (Flux-style path) and the supported set.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path: expected a file path (str or PathLike); got {type(path).__name__}")
    from ._graph import save_model_atomic

    onnx_model = to_onnx_model(model, opset=opset, dynamic_batch=dynamic_batch, input_shape=input_shape,
                               format=format, sparse=sparse, batch_size=batch_size, data=data, threads=threads,
                               tolerance=tolerance)
    return save_model_atomic(onnx_model, path)


def choose_format(model: Any, data: Any, *, batch_size: int = 1, threads: int | None = None,
                  tolerance: float = 0.01, seconds: float = 3.0, opset: int = DEFAULT_OPSET,
                  input_shape: Sequence[int | str] | None = None) -> FormatChoice:
    """Measure fp32, dynamic and QDQ int8 forms of ``model`` in onnxruntime; return the fastest accurate one.

    The candidates (a CNN's also with only its Dense layers in int8) run at ``batch_size`` with ``threads``
    intra-op threads (None: ``pfc.threads`` default) in interleaved rounds within about ``seconds``; a form is
    eligible when its top-1 predictions on ``data`` (inputs ``(N, *input_shape)``) differ from ``model``'s on
    at most ``tolerance`` of them (relative RMS error for non-class outputs); a quantized form must beat fp32
    by 5%. Returns a :class:`FormatChoice` (``label``, ``format``, ``model`` to export, ``latency_ms``,
    ``error``, ``rejected``, ``table()``). ``export_onnx(..., format="auto")`` writes its choice. Details:
    ``_auto.py`` and docs/deployment.md.
    """
    from ._auto import choose_format as measure

    return measure(model, data, build=to_onnx_model, batch_size=batch_size, threads=threads, tolerance=tolerance,
                   seconds=seconds, opset=opset, input_shape=input_shape)


def import_onnx(path: str | os.PathLike, *, max_bytes: int | None = None):
    """Read an ONNX model of the supported ops back into a Chain (see ``_import.py`` for the op table).

    External data is read relative to the model's folder and never from outside it; ``max_bytes`` bounds the
    dense size of sparse initializers (default 1 GiB, or ``$PYFLUX_ONNX_MAX_BYTES``).
    """
    from ._import import import_onnx as _imp

    return _imp(path, max_bytes=max_bytes)


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
        raise ValueError(f"format: expected one of {FORMATS + ('auto',)} or None; got {format!r}")
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
