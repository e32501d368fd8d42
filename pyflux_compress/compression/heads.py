"""Structured pruning of whole attention heads: ``prune_heads``.

A head ``h`` of a ``MultiHeadAttention`` owns the contiguous rows ``h*d:(h+1)*d`` of ``q_proj`` and ``k_proj``
(``d = qk ÷ nheads``), the rows ``h*e:(h+1)*e`` of ``v_proj`` (``e = v ÷ nheads``) and the same columns of
``out_proj`` (NNlib splits features into heads column-major). Removing the head removes all of them together,
which is exactly the layer without that head's contribution; ``nheads`` shrinks, the output size does not, so
nothing outside the layer changes. Targets are layers declaring ``keep_heads`` / ``head_scores``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_fraction
from ..model.walk import modules
from ._common import add_record, check_finite, check_model

__all__ = ["prune_heads", "validate_prune_heads"]


def _has_heads(layer: Any) -> bool:
    return callable(getattr(layer, "keep_heads", None)) and callable(getattr(layer, "head_scores", None))


def validate_prune_heads(model: Any, fraction: Any) -> float:
    """Check the arguments of :func:`prune_heads`; return ``fraction``."""
    check_model(model)
    fraction = check_fraction("fraction", fraction, 0.0, 1.0, inclusive=(True, False))
    check_finite(model)
    if not any(_has_heads(layer) for _, layer in modules(model, containers=True)):
        raise ValueError("model has no attention layer (MultiHeadAttention) to prune heads of")
    return fraction


def prune_heads(model: Any, fraction: float) -> Any:
    """Remove the weakest ``fraction`` of heads of every MultiHeadAttention, physically.

    Parameters
    ----------
    model : Chain (not modified)
    fraction : float in [0, 1)
        ``round(fraction * nheads)`` heads go from each attention layer (at least one head stays). Head
        importance: the L2 norm of the head's q/k/v rows and out_proj columns together (``head_scores``);
        ties remove the lower index first.

    Returns
    -------
    Chain
        A smaller copy. Record: ``{"method": "prune_heads", "settings", "per_layer": {path: fraction removed},
        "kept": {path: [head indices]}, "params_before", "params_after"}``.
    """
    fraction = validate_prune_heads(model, fraction)
    result = model.copy()
    before = sum(a.size for a in result.params().values())
    per_layer: dict[str, float] = {}
    kept: dict[str, list[int]] = {}
    for path, layer in modules(result, containers=True):
        if not _has_heads(layer):
            continue
        n = layer.nheads
        n_remove = min(int(np.floor(fraction * n + 0.5)), n - 1)
        keep = np.sort(np.argsort(layer.head_scores(), kind="stable")[n_remove:])
        layer.keep_heads(keep)
        per_layer[path] = float(n_remove / n)
        kept[path] = keep.tolist()
    after = sum(a.size for a in result.params().values())
    add_record(result, "prune_heads", {"fraction": fraction}, per_layer, kept=kept, params_before=int(before),
               params_after=int(after))
    return result
