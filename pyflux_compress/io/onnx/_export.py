"""fp32 export: each layer writes its own ONNX nodes (``layer.to_onnx(g, x) -> y``, declared in the layer's
file; format details live in ``_graph.py``). This module walks the model, names failing layers by their path
and keeps the helpers the quantized export (``_quant.py``) builds on.

Layout conversions (Flux -> ONNX) are documented and tested next to each layer: Dense ``weight (out, in)`` is
Gemm's ``B``; Conv kernels are flipped and permuted (``layers/conv.py``); Flux's column-major flatten of WHCN is
ONNX ``Flatten(axis=1)`` of NCHW (docs/ARCHITECTURE.md "Flux flatten"); BatchNorm exports its running
statistics; Dropout is the identity.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...model import registry
from ...model.layers import Layer
from ...model.layers.conv import flux_conv_to_onnx, onnx_conv_to_flux, spatial_attrs
from ...model.walk import first_weight, map_layers
from ._graph import INPUT_NAME, GraphBuilder

__all__ = ["UnsupportedLayerError", "supported_layers", "SUPPORTED_ACTIVATIONS", "build_fp32", "emit_layer",
           "emit_dense", "emit_conv", "emit_activation", "ExportState", "layer_kind",
           "infer_input_shape", "flux_conv_to_onnx", "onnx_conv_to_flux", "spatial_attrs"]

SUPPORTED_ACTIVATIONS = ("identity", "relu", "sigmoid/σ", "tanh", "softmax", "leakyrelu", "elu", "gelu",
                         "swish")


class UnsupportedLayerError(ValueError):
    """A layer (or activation) that has no ONNX mapping; the message names it and the supported set."""


def supported_layers() -> str:
    """Flux names of the registered layers that export (they implement ``to_onnx``), plus the quantized ones."""
    names = registry.supported(lambda c: getattr(c, "to_onnx", None) is not Layer.to_onnx and
                               c.flux_name != "activation")
    return f"{names}, QuantizedDense, QuantizedConv"


def layer_kind(layer: Any) -> str:
    """Flux name of a layer: ``flux_name`` from the layer contract, else the class name."""
    return str(getattr(layer, "flux_name", None) or type(layer).__name__)


class ExportState:
    """What a custom (quantized) emitter knows besides the builder: the rank of the tensor flowing through."""

    def __init__(self, rank: int):
        self.rank = rank  # including the batch dim: 2 for (N, F), 4 for (N, C, H, W)


class _Emit(Layer):
    """A leaf during export: calls ``to_onnx`` (or a custom emitter), naming the path when it cannot."""

    def __init__(self, layer: Any, path: str, st: ExportState, custom: dict[str, Callable] | None) -> None:
        self.layer, self.path, self.st, self.custom = layer, path, st, custom

    def to_onnx(self, g: Any, x: str) -> str:
        kind = layer_kind(self.layer)
        self.st.rank = g.rank(x)
        if self.custom and kind in self.custom:
            g.current = x
            self.custom[kind](g, self.layer, self.st, self.path)
            return g.current
        try:
            return self.layer.to_onnx(g, x)
        except NotImplementedError:
            raise UnsupportedLayerError(
                f"{self.path}: layer {_short_repr(self.layer)} ({kind}) has no ONNX mapping; supported layers: "
                f"{supported_layers()}; activations: {', '.join(SUPPORTED_ACTIVATIONS)}") from None
        except UnsupportedLayerError:
            raise
        except ValueError as err:
            raise UnsupportedLayerError(f"{self.path}: {err}") from None


def emit_layer(b: GraphBuilder, layer: Any, st: ExportState, where: str,
               custom: dict[str, Callable] | None = None) -> None:
    """Translate ``layer`` (a leaf or a whole model) at ``b.current``; ``custom`` overrides leaves by Flux name."""
    tree = map_layers(lambda path, leaf: _Emit(leaf, path, st, custom), layer, path=where or "model")
    b.current = tree.to_onnx(b, b.current)
    st.rank = b.rank(b.current)


def build_fp32(model: Any, b: GraphBuilder, custom: dict[str, Callable] | None = None) -> None:
    """Append the whole model to ``b``."""
    emit_layer(b, model, ExportState(b.rank(INPUT_NAME)), "", custom)


def emit_dense(b: GraphBuilder, layer: Any, st: ExportState, where: str, *, weight: np.ndarray | None = None) -> None:
    """``layer.to_onnx`` at ``b.current`` with an overriding weight (the dequantized fp32 export)."""
    b.current = layer.to_onnx(b, b.current, weight=weight)


emit_conv = emit_dense


def emit_activation(b: GraphBuilder, act: Any, where: str) -> None:
    """Append activation ``act`` at ``b.current`` (identity adds nothing)."""
    emit_layer(b, act, ExportState(b.rank(b.current)), where)


def _short_repr(layer: Any) -> str:
    try:
        r = repr(layer)
    except Exception:  # noqa: BLE001 - a broken repr must not hide the real error
        r = type(layer).__name__
    return r if len(r) <= 80 else r[:77] + "..."


def infer_input_shape(model: Any) -> tuple:
    """Per-sample input shape from the first weight layer (``pfc.model.walk.first_weight``): ``(in,)`` for a
    matrix weight, ``(cin, "H", "W")`` (symbolic spatial dims) for a 2-D kernel. Anything else -> ValueError
    asking for ``input_shape``."""
    found = first_weight(model)
    if found is not None and found[2] == 2:
        return (found[1],)
    if found is not None and found[2] == 4:
        return (found[1], "H", "W")
    raise ValueError("input_shape: cannot infer the per-sample input shape from the first layers; pass "
                     "input_shape=(features,) or (channels, height, width)")
