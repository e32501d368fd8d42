"""pyflux-compress: compress Flux.jl-style ``Chain`` models from Python.

Build Flux models with Flux's names (``Chain``, ``Dense``, ``Conv`` ...), train them on the NumPy engine,
compress them (pruning, quantization, weight sharing, low-rank, distillation), read and write Flux JLD2
checkpoints, and deploy through ONNX and onnxruntime::

    import pyflux_compress as pfc
    model = pfc.parse("Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))")
    Xtr, ytr, Xte, yte = pfc.datasets.load("fashion-mnist")
    pfc.fit(model, Xtr.reshape(len(Xtr), -1), ytr, epochs=3)
    small = pfc.prune(model, 0.9, scope="global")

Importing this package is cheap: every public name is resolved lazily on first use, so
``import pyflux_compress`` never imports juliacall, onnx, onnxruntime, h5py or torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_LAZY: dict[str, str] = {}


def _export(module: str, *names: str) -> None:
    for name in names:
        _LAZY[name] = module


_export(".model.layers", "Layer", "Dense", "Conv", "CrossCor", "MaxPool", "MeanPool", "GlobalMeanPool",
        "Flatten", "flatten", "BatchNorm", "Dropout", "ConvTranspose", "DepthwiseConv", "SkipConnection", "Parallel",
        "LayerNorm", "Scale", "GlobalMaxPool", "AdaptiveMaxPool", "AdaptiveMeanPool", "Upsample", "PixelShuffle",
        "GroupNorm", "InstanceNorm", "AlphaDropout", "Embedding", "onehotbatch", "LSTMCell", "LSTM", "RNNCell", "RNN", "GRUCell", "GRU", "GRUv3Cell", "GRUv3",
        "LastStep", "laststep", "EmbeddingBag", "MultiHeadAttention", "First", "first", "make_causal_mask")
_export(".model.activations", "Activation", "relu", "sigmoid", "σ", "tanh", "softmax", "leakyrelu", "elu",
        "gelu", "swish", "identity", "hardsigmoid", "hardσ", "hardtanh", "relu6", "rrelu", "selu", "celu",
        "gelu_tanh", "gelu_erf", "hardswish", "lisht", "mish", "softplus", "softsign", "logsigmoid", "logσ",
        "logcosh", "tanhshrink", "softshrink", "trelu", "thresholdrelu", "tanh_fast", "sigmoid_fast", "logsoftmax")
_export(".model.chain", "Chain")
_export(".model.walk", "modules", "map_layers")
_export(".model.registry", "register_layer")
_export(".model.syntax", "parse", "FluxSyntaxError")
_export(".train.fit", "fit", "predict", "accuracy", "History")
_export(".train.optimisers", "Adam", "SGD")
_export(".backends", "backend", "set_backend", "backend_info")
_export(".compression.stats", "sparsity", "count_params")
_export(".compression.prune", "prune", "PolynomialDecay", "prune_iteratively")
_export(".compression.structured", "prune_structured")
_export(".compression.hidden_units", "prune_hidden_units")
_export(".compression.heads", "prune_heads")
_export(".compression.sparsify", "sparsify")
_export(".compression.lowrank", "lowrank")
_export(".compression.distill", "distill")
_export(".compression.quantize", "quantize", "QuantizedChain")
_export(".compression.fold", "fold_batchnorm")
_export(".compression.sensitivity", "sensitivity")
_export(".compression.sharing", "share_weights")
_export(".compression.archive", "save_compressed", "load_compressed", "size_report", "ArchiveError")
_export(".io.checkpoint", "load", "save", "load_state")
_export(".io.onnx", "export_onnx", "import_onnx", "choose_format")
_export(".deploy.predictor", "Predictor")
_export(".deploy.report", "report")
_export(".deploy.sweep", "sweep")
_export(".search.autocompress", "autocompress", "SearchResult")

# submodules reachable as attributes: pfc.datasets, pfc.losses, pfc.jld2, pfc.registry, pfc.threads
_SUBMODULES = {"datasets": ".datasets", "losses": ".train.losses", "jld2": ".io.jld2", "registry": ".model.registry",
               "threads": ".threads"}

__all__ = sorted([*_LAZY, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(_SUBMODULES[name], __name__)
        globals()[name] = module
        return module
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # cache: later look-ups are plain attribute access
        return value
    raise AttributeError(f"module 'pyflux_compress' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import datasets  # noqa: F401
    from .io import jld2  # noqa: F401
    from .model.chain import Chain  # noqa: F401
    from .model.layers import BatchNorm, Conv, CrossCor, Dense, Dropout, Flatten, GlobalMeanPool  # noqa: F401
    from .model.layers import Layer, MaxPool, MeanPool, flatten  # noqa: F401
