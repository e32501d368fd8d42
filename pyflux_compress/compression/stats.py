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
from ._common import array_sparsity, check_model, leaves, prunable

__all__ = ["sparsity", "count_params"]


def sparsity(model: Any, include: Any = None) -> dict:
    """Fraction of exact zeros among the prunable weights.

    Parameters
    ----------
    model : Chain or Layer
    include : as in :func:`pyflux_compress.prune` — by default the weights (not biases) of every
        Dense/Conv/CrossCor, i.e. exactly what ``prune`` acts on.

    Returns
    -------
    dict
        ``{"total": float, "per_layer": {path: float}}``; ``total`` weighs layers by their size
        (0.0 for a model without such weights).
    """
    check_model(model)
    targets = prunable(model, include)
    per_layer = {t.key: array_sparsity(t.array()) for t in targets}
    n = sum(t.array().size for t in targets)
    zeros = sum(t.array().size - np.count_nonzero(t.array()) for t in targets)
    return {"total": float(zeros / n) if n else 0.0, "per_layer": per_layer}


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
