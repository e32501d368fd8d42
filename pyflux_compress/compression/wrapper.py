"""The shared base of layers that wrap a float Dense/Conv: ``QuantizedLayer`` and ``SharedLayer``.

A wrapper keeps the float layer it was made from as ``float_layer`` (bias, activation, stride, ... and, for
quantization, the trainable shadow weight) and stores the weight in another form. Everything that only needs the
float template lives here: naming, shapes, the activation, and :meth:`WrappedLayer.to_float` — the plain float
layer the wrapper computes (what ``as_float_layer`` returns for any leaf).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model.layers import Layer


#: quantized wrapper classes of the layers that declare ``quantize_as`` (role -> class), beside QuantizedDense /
#: QuantizedConv: filled by compression/quantize_sequence.py ("recurrent", "table"), read by quantize.quantized_class
QUANTIZED_WRAPPERS: dict[str, type] = {}


class WrappedLayer(Layer):
    """Base of the wrapper layers (see the module docstring). Subclasses implement forward/backward/params."""

    flux_fields: dict[str, str] = {}
    float_layer: Any

    @property
    def flux_name(self) -> str:
        return type(self).__name__

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """The float layer's masks (the shared dict): pruned weights stay zero through QAT and re-quantization."""
        return self.float_layer.masks

    @property
    def bias(self) -> np.ndarray | None:
        return self.float_layer.bias

    @property
    def activation(self) -> Any:
        return self.float_layer.activation

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[0]

    def output_shape(self, in_shape: tuple) -> tuple:
        return self.float_layer.output_shape(in_shape)

    def to_float(self) -> Any:
        """The plain float layer this wrapper computes (the quantized layer's shadow itself; copy before editing)."""
        raise NotImplementedError


def as_float_layer(layer: Any) -> Any:
    """The float equivalent of a leaf: a wrapper's :meth:`~WrappedLayer.to_float`, any other layer itself."""
    return layer.to_float() if isinstance(layer, WrappedLayer) else layer
