"""Graph preparation for inference and quantization: fold BatchNorm, fuse stand-alone activations.

``fold_batchnorm(model)`` returns a new Chain in which

* every ``BatchNorm`` in inference mode (running statistics, ``active`` not True) that directly follows a
  ``Dense`` / ``Conv`` / ``CrossCor`` with the identity activation is folded into that layer::

      s  = γ / sqrt(σ² + ϵ)                      (per channel, float64)
      W' = W * s   (over the output-channel axis: Dense rows, Conv axis 3)
      b' = (b - μ) * s + β                       (b = 0 when the layer had no bias)

  and the BatchNorm's own activation λ becomes the layer's activation;
* a stand-alone activation element (``Chain(Conv(...), relu)``) that follows a Dense/Conv with the identity
  activation is moved into it.

Both rewrites are exact in real arithmetic; in float32 the folded forward agrees with the original to rounding
(tests/test_fold.py checks 1e-5). Quantizing the folded model gives one integer kernel per Conv/Dense (BN
would otherwise stay a float op between them), which is why ``pfc.quantize`` folds first.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import activations as A
from ..model import layers as L
from ..model.chain import Chain
from ..model.walk import modules

def _foldable(layer: Any) -> bool:
    """A layer with a declared compressible ``weight``, a bias slot and the identity activation (Dense, Conv,
    CrossCor, and any registered layer declaring the same: read from the registry declarations)."""
    return "weight" in getattr(layer, "compressible", ()) and hasattr(layer, "bias") \
        and getattr(layer, "activation", None) is A.identity


def _inference_bn(layer: Any) -> bool:
    return isinstance(layer, L.BatchNorm) and layer.track_stats and layer.active is not True


def fold_layer(layer: Any, bn: L.BatchNorm) -> Any:
    """A copy of Dense/Conv ``layer`` with the inference-mode ``bn`` that follows it folded in."""
    out = layer.copy()
    w = np.asarray(layer.weight, dtype=np.float64)
    axis = layer.out_axes["weight"]  # declared output-channel axis (Dense 0, Conv 3)
    if w.shape[axis] != bn.chs:
        raise ValueError(f"fold_batchnorm: {layer!r} has {w.shape[axis]} output channels but the BatchNorm "
                         f"after it normalises {bn.chs}")
    gamma = np.ones(bn.chs) if not bn.affine else np.asarray(bn.gamma, np.float64)
    beta = np.zeros(bn.chs) if not bn.affine else np.asarray(bn.beta, np.float64)
    s = gamma / np.sqrt(np.asarray(bn.sigma2, np.float64) + bn.eps)
    shape = [1] * w.ndim
    shape[axis] = -1
    dtype = layer.weight.dtype
    out.weight = (w * s.reshape(shape)).astype(dtype)
    b = np.zeros(bn.chs) if layer.bias is None else np.asarray(layer.bias, np.float64)
    out.bias = ((b - np.asarray(bn.mu, np.float64)) * s + beta).astype(dtype)
    out.activation = bn.activation
    mask = (getattr(layer, "masks", None) or {}).get("weight")
    out.masks = {"weight": mask.copy()} if mask is not None else {}
    return out


def fold_batchnorm(model: Any) -> Chain:
    """Fold inference BatchNorms and stand-alone activations into the Dense/Conv before them (new Chain).

    Parameters
    ----------
    model : Chain (not modified); nested Chains are folded inside themselves.

    Returns
    -------
    Chain with fewer layers; ``records`` gains a ``"fold_batchnorm"`` entry listing the folded layers by their
    Flux paths in the input model (none folded: no entry, and the result is a plain copy).
    """
    return fold_with_paths(model)[0]


def fold_with_paths(model: Any) -> tuple[Chain, dict[str, str]]:
    """:func:`fold_batchnorm` plus ``{old_path: new_path}`` for every leaf that survives (folded-into layers
    keep their own path's image, so a ``bits`` dict written for ``model`` can be translated)."""
    if not isinstance(model, Chain):
        raise ValueError(f"fold_batchnorm: model must be a Chain, got {type(model).__name__}")
    folded: list[str] = []
    paths: dict[str, str] = {}
    out = _fold_chain(model, "", "", folded, paths)
    out.records = [dict(r) for r in model.records]
    if folded:
        out.records.append({"method": "fold_batchnorm", "settings": {},
                            "per_layer": {p: "folded" for p in folded}})
    return out, paths


def _fold_chain(chain: Chain, prefix: str, new_prefix: str, folded: list[str], paths: dict[str, str]) -> Chain:
    new: list[Any] = []
    for i, layer in enumerate(chain.layers):
        path = f"{prefix}layers[{i + 1}]"
        prev = new[-1] if new else None
        if isinstance(layer, Chain):
            new.append(_fold_chain(layer, path + ".", f"{new_prefix}layers[{len(new) + 1}].", folded, paths))
        elif getattr(layer, "container", False):  # another container: copied as is, its leaves keep their paths
            new.append(layer.copy())
            target = f"{new_prefix}layers[{len(new)}]"
            for sub, _ in modules(layer):
                paths[f"{path}.{sub}"] = f"{target}.{sub}"
        elif prev is not None and _foldable(prev) and _inference_bn(layer):
            new[-1] = fold_layer(prev, layer)
            folded.append(path)
        elif prev is not None and _foldable(prev) and isinstance(layer, A.Activation):
            fused = prev.copy()
            fused.activation = layer
            new[-1] = fused
            folded.append(path)
        else:
            new.append(layer.copy())
            paths[path] = f"{new_prefix}layers[{len(new)}]"
    out = Chain(*new)
    if type(chain) is not Chain and len(new) == len(chain.layers):
        out.__class__ = type(chain)  # keep a subclass (QuantizedChain) when nothing was folded in it
    return out
