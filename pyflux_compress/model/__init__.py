"""Flux-style models on NumPy: layers, activations, ``Chain``, Flux syntax (``parse``/``str``), ``summary``.

Submodules: ``layers`` (Dense, Conv, ...), ``activations``, ``chain``, ``syntax`` (parse), ``summary``
(``summary.summary(model, input_shape)``, also ``Chain.summary``),
``init`` (Flux's glorot_uniform), ``_conv`` (vectorised convolution/pooling kernels), ``registry``
(``register_layer``: what each layer declares about itself), ``walk`` (``modules``, ``map_layers``).
"""
from __future__ import annotations

from .activations import (ACTIVATIONS, Activation, elu, gelu, get_activation, identity, leakyrelu, relu,
                          sigmoid, softmax, swish, tanh, σ)
from .chain import Chain
from .layers import (AdaptiveMaxPool, AdaptiveMeanPool, BatchNorm, Conv, ConvTranspose, CrossCor, Dense,
                     DepthwiseConv, Dropout, Flatten, GlobalMaxPool, GlobalMeanPool, Layer, LayerNorm, MaxPool,
                     MeanPool, Parallel, PixelShuffle, SamePad, Scale, SkipConnection, Upsample, flatten)
from .layers import AlphaDropout, GroupNorm, InstanceNorm
from .layers import GRU, LSTM, RNN, Embedding, EmbeddingBag, GRUCell, GRUv3, GRUv3Cell, LastStep, LSTMCell, RNNCell, laststep, onehotbatch
from .layers import First, MultiHeadAttention, first, make_causal_mask
from .registry import register_layer
from .syntax import FluxSyntaxError, parse
from .walk import map_layers, modules

__all__ = ["MultiHeadAttention", "First", "first", "make_causal_mask", "Layer", "Dense", "Conv", "CrossCor", "MaxPool", "MeanPool", "GlobalMeanPool", "Flatten", "flatten",
           "BatchNorm", "Dropout", "SamePad", "Chain", "Activation", "ACTIVATIONS", "get_activation", "relu",
           "sigmoid", "σ", "tanh", "softmax", "leakyrelu", "elu", "gelu", "swish", "identity", "parse",
           "FluxSyntaxError", "modules", "map_layers", "register_layer", "ConvTranspose", "DepthwiseConv",
           "SkipConnection", "Parallel", "LayerNorm", "Scale", "GlobalMaxPool", "AdaptiveMaxPool",
           "AdaptiveMeanPool", "Upsample", "PixelShuffle", "GroupNorm", "InstanceNorm", "AlphaDropout"]
__all__ += ["Embedding", "onehotbatch", "LSTMCell", "LSTM", "RNNCell", "RNN", "GRUCell", "GRU", "GRUv3Cell", "GRUv3", "LastStep",
            "laststep", "EmbeddingBag"]
