"""How sparse and how large a model is: ``sparsity(model)`` and ``count_params(model, nonzero=True)``.

Both report per layer (Flux-style paths from ``Chain.walk()``) and in total, as plain dicts that print well
and serialise to JSON::

    >>> pfc.sparsity(pruned)
    {'total': 0.9, 'per_layer': {'layers[1]': 0.91, 'layers[2]': 0.83, 'layers[3]': 0.62}}
    >>> pfc.count_params(pruned)
    {'total': 10993, 'per_layer': {'layers[1]': 9161, ...}}
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_bool
from ..model.summary import effective_array
from ._common import Target, array_sparsity, check_model, leaves, prunable

__all__ = ["sparsity", "count_params"]


def sparsity(model: Any, include: Any = None) -> dict:
    """Fraction of zeros among the prunable weights, as the model computes with them.

    Quantized layers count the integer codes equal to their zero point (the weights that dequantize to exactly
    0: ``q == 0`` for the symmetric scheme, ``q == zp`` for the affine one); weight-shared layers count zeros of
    their effective weight ``where(mask, centroids[index], 0)``.

    Parameters
    ----------
    model : Chain or Layer
    include : as in :func:`pyflux_compress.prune` — by default the weights (not biases) of every
        Dense/Conv/CrossCor (also when quantized or weight-shared), i.e. exactly what ``prune`` acts on.

    Returns
    -------
    dict
        ``{"total": float, "per_layer": {path: float}}``; ``total`` weighs layers by their size
        (0.0 for a model without such weights).
    """
    check_model(model)
    if include is None:
        targets = _default_weights(model)
    else:
        targets = prunable(model, include)
    per_layer, zeros, n = {}, 0, 0
    for t in targets:
        arr = effective_array(t.layer, t.name)
        per_layer[t.key] = array_sparsity(arr)
        zeros += arr.size - np.count_nonzero(arr)
        n += arr.size
    return {"total": float(zeros / n) if n else 0.0, "per_layer": per_layer}


def _default_weights(model: Any) -> list[Target]:
    """Each leaf's ``compressible`` parameters; a quantized or weight-shared wrapper has those of its float layer
    (its forward uses them in integer or codebook form)."""
    targets = []
    for path, layer in leaves(model):
        names = getattr(layer, "compressible", ()) or getattr(getattr(layer, "float_layer", None), "compressible", ())
        targets += [Target(path, layer, name) for name in names]
    return targets


def count_params(model: Any, nonzero: bool = True) -> dict:
    """Number of trainable parameters (weights, biases, BatchNorm scale/shift), per layer and in total.

    Parameters
    ----------
    model : Chain or Layer
    nonzero : bool
        True: count only nonzero entries (what a sparse format would store); False: every entry (the dense
        size; a pruned model has as many as before, a structurally pruned or low-rank one fewer).

    Returns
    -------
    dict
        ``{"total": int, "per_layer": {path: int}}`` — layers without parameters are left out.
    """
    check_model(model)
    nonzero = check_bool("nonzero", nonzero)
    per_layer = {}
    for path, layer in leaves(model):
        params = layer.params()
        if params:
            per_layer[path] = int(sum(np.count_nonzero(a) if nonzero else a.size for a in params.values()))
    return {"total": int(sum(per_layer.values())), "per_layer": per_layer}
