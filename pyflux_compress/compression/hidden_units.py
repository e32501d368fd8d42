"""Structured pruning of recurrent hidden units: ``prune_hidden_units``.

A hidden unit ``j`` of an LSTM owns row ``j`` of each of its four gate blocks (input, forget, cell, output)
in ``Wi``, ``Wh`` and ``bias``, plus column ``j`` of ``Wh`` (its recurrent output); a GRU unit owns three gate
rows (GRUv3: also row and column ``j`` of ``Wh_h̃``); an RNN unit one. Removing the unit removes all of them
together — pruning one gate of a unit and not the others would leave a unit that still feeds the recurrence.
The consumer's inputs that read the unit go too:

* a following recurrent layer: column ``j`` of its ``Wi``;
* ``flatten`` then ``Dense``: the output ``(N, len, H)`` flattens (C order, Flux's column-major flatten of
  ``(H, len, N)``) to columns ``t*H + j``, so the columns ``j, H + j, 2H + j, ...`` go;
* a ``Dense`` applied per time step: column ``j``.

Channel-wise leaves in between (activations, Dropout) pass through. Layers are taken from the top-level
Chain in order; a recurrent layer followed by anything else is skipped and the record says why.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_fraction, check_in
from ._common import add_record, check_finite, check_model, leaves
from .structured import CRITERIA, unit_norms

__all__ = ["prune_hidden_units", "validate_prune_hidden_units"]


def _is_recurrent(layer: Any) -> bool:
    return getattr(layer, "structured", None) == "recurrent"


def _hidden_unit_norms(layer: Any, criterion: str) -> np.ndarray:
    """Norm of each unit's incoming weights: its rows in every gate block of ``Wi`` and ``Wh`` (GRUv3: and
    of ``Wh_h̃``)."""
    cell = layer.cell
    h, g = cell.hidden, cell.gates
    rows = np.concatenate([cell.Wi, cell.Wh], axis=1).reshape(g, h, -1).transpose(1, 0, 2).reshape(h, -1)
    extra = getattr(cell, "Wh_htilde", None)
    if extra is not None:
        rows = np.concatenate([rows, extra], axis=1)
    return unit_norms(rows, 0, criterion)


def validate_prune_hidden_units(model: Any, fraction: Any, criterion: Any = "l1") -> tuple[float, str]:
    """Check the arguments of :func:`prune_hidden_units`; return ``(fraction, criterion)``."""
    check_model(model)
    fraction = check_fraction("fraction", fraction, 0.0, 1.0, inclusive=(True, False))
    criterion = check_in("criterion", criterion, CRITERIA)
    check_finite(model)
    if not any(_is_recurrent(layer) for _, layer in leaves(model)):
        raise ValueError("model has no recurrent layer (RNN, LSTM, GRU, GRUv3) to prune hidden units of")
    return fraction, criterion


def prune_hidden_units(model: Any, fraction: float, criterion: str = "l1") -> Any:
    """Remove the weakest ``fraction`` of hidden units of every recurrent layer, gate-coupled, physically.

    Parameters
    ----------
    model : Chain (not modified)
    fraction : float in [0, 1)
        ``round(fraction * hidden)`` units go from each recurrent layer whose consumer can be sliced.
    criterion : {"l1", "l2"}
        Unit importance: norm of the unit's rows in all gate blocks of ``Wi`` and ``Wh``; ties remove the
        lower index first.

    Returns
    -------
    Chain
        A smaller copy. Record: ``{"method": "prune_hidden_units", "settings", "per_layer": {path: fraction
        removed}, "kept": {path: [unit indices]}, "skipped": {path: reason}, "params_before", "params_after"}``.
    """
    fraction, criterion = validate_prune_hidden_units(model, fraction, criterion)
    result = model.copy()
    items = leaves(result)
    before = sum(a.size for _, layer in items for a in layer.params().values())
    per_layer: dict[str, float] = {}
    kept: dict[str, list[int]] = {}
    skipped: dict[str, str] = {}
    for i, (path, layer) in enumerate(items):
        if not _is_recurrent(layer):
            continue
        j = i + 1
        while j < len(items) and getattr(items[j][1], "structured", None) == "channelwise":
            j += 1
        flat = j < len(items) and getattr(items[j][1], "structured", None) == "flatten"
        k = j + 1 if flat else j
        consumer = items[k][1] if k < len(items) else None
        h = layer.hidden
        if consumer is None or not (_is_recurrent(consumer) or getattr(consumer, "flux_name", "") == "Dense"):
            skipped[path] = ("its outputs are the model's outputs" if consumer is None else
                             f"its consumer {items[k][0]} ({consumer!r}) is not a recurrent layer or Dense")
            continue
        n_in = consumer.in_features
        if flat and (_is_recurrent(consumer) or n_in % h):
            skipped[path] = f"flatten feeds {consumer!r}, whose {n_in} inputs are not len * {h} units"
            continue
        n_remove = int(np.floor(fraction * h + 0.5))
        if n_remove >= h:
            raise ValueError(f"fraction={fraction} would remove all {h} units of {path} ({layer!r})")
        order = np.argsort(_hidden_unit_norms(layer, criterion), kind="stable")
        keep = np.sort(order[n_remove:])
        layer.keep_hidden(keep)
        if _is_recurrent(consumer):
            consumer.keep_inputs(keep)
        else:
            steps = n_in // h if flat else 1
            consumer.slice_inputs((np.arange(steps)[:, None] * h + keep[None, :]).reshape(-1))
        per_layer[path] = float(n_remove / h)
        kept[path] = keep.tolist()
    after = sum(a.size for _, layer in items for a in layer.params().values())
    add_record(result, "prune_hidden_units", {"fraction": fraction, "criterion": criterion}, per_layer,
               kept=kept, skipped=skipped, params_before=int(before), params_after=int(after))
    return result
