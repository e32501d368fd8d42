"""Flux layers on NumPy, one file per layer; importing this package registers them all.

Every layer implements the contract of :class:`~.base.Layer` (docs/ARCHITECTURE.md): forward/backward on
batch-first data, ``params()`` in Flux's field order with Flux's shapes (Dense ``(out, in)``, Conv ``(kw, kh,
cin, cout)``), ``repr`` in Flux syntax, and the declarations the rest of the package reads (registry).
"""
from __future__ import annotations

# registration order is the order of "supported ..." listings in error messages
from .dense import Dense  # isort: skip
from .conv import Conv, CrossCor, DepthwiseConv  # isort: skip
from .pool import GlobalMeanPool, MaxPool, MeanPool  # isort: skip
from .flatten import Flatten, flatten  # isort: skip
from .batchnorm import BatchNorm  # isort: skip
from .dropout import Dropout  # isort: skip
from .convtranspose import ConvTranspose  # isort: skip
from .skipconnection import SkipConnection  # isort: skip
from .parallel import Parallel  # isort: skip
from .layernorm import LayerNorm  # isort: skip
from .scale import Scale  # isort: skip
from .globalmaxpool import GlobalMaxPool  # isort: skip
from .adaptivepool import AdaptiveMaxPool, AdaptiveMeanPool  # isort: skip
from .upsample import Upsample  # isort: skip
from .pixelshuffle import PixelShuffle  # isort: skip
from .groupnorm import GroupNorm  # isort: skip
from .instancenorm import InstanceNorm  # isort: skip
from .alphadropout import AlphaDropout  # isort: skip
from .embedding import Embedding, onehotbatch  # isort: skip
from .laststep import LastStep, laststep  # isort: skip
from .embeddingbag import EmbeddingBag  # isort: skip
from .rnn import RNN, RNNCell  # isort: skip
from .lstm import LSTM, LSTMCell  # isort: skip
from .gru import GRU, GRUCell  # isort: skip
from .gruv3 import GRUv3, GRUv3Cell  # isort: skip
from .recur import Recur  # isort: skip
from .attention import First, MultiHeadAttention, first, make_causal_mask  # isort: skip
from ..syntax import SamePad  # isort: skip
from .base import Grads, Layer  # isort: skip

__all__ = ["Layer", "Dense", "Conv", "CrossCor", "MaxPool", "MeanPool", "GlobalMeanPool", "Flatten", "flatten",
           "BatchNorm", "Dropout", "SamePad", "Grads", "ConvTranspose", "DepthwiseConv", "SkipConnection",
           "Parallel", "LayerNorm", "Scale", "GlobalMaxPool", "AdaptiveMaxPool", "AdaptiveMeanPool", "Upsample",
           "PixelShuffle", "GroupNorm", "InstanceNorm", "AlphaDropout", "Embedding", "onehotbatch", "LSTMCell", "LSTM", "RNNCell", "RNN", "GRUCell", "GRU", "GRUv3Cell", "GRUv3",
           "LastStep", "laststep", "EmbeddingBag", "MultiHeadAttention", "First", "first", "make_causal_mask"]
