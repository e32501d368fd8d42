"""Structured pruning that physically shrinks the model: ``prune_structured``.

Whole units are removed — Dense neurons (rows of ``weight``, entries of ``bias``) and Conv filters
(``weight[:, :, :, o]``) — together with the inputs of the next weight layer that read them, so
``Dense(128 => 64)`` followed by ``Dense(64 => 10)`` becomes ``Dense(128 => 32)`` and ``Dense(32 => 10)``.
The smaller arrays are dense: fewer parameters, fewer FLOPs, a smaller file, a faster CPU forward pass.

Dependency tracking along the Chain (leaves in ``pfc.modules`` order), from each layer's declared ``structured``
role (docs/ARCHITECTURE.md). Between a unit-producing layer (role "units": Dense/Conv/CrossCor; sliced by its
``slice_outputs`` / ``slice_inputs``) and the next one, only these layers may appear:

* role "channelwise" (activations, ``Dropout``, pooling, ``BatchNorm``) — they keep channels apart; their
  per-channel arrays (``out_axes``: BatchNorm's ``beta``/``gamma``/``mu``/``sigma2``) are sliced to the kept channels;
* role "flatten" — channel ``c`` of an ``(N, C, H, W)`` tensor becomes the Dense input columns
  ``c*H*W : (c+1)*H*W`` (our C-order flatten of NCHW is Flux's column-major flatten of WHCN), so a removed
  filter removes that block of columns. ``H*W`` is inferred as ``in_features / C`` of the consuming Dense.

A producer followed by anything else (or by nothing: the last weight layer, whose outputs are the model's
outputs) is left as is; the record says why.

Non-sequential containers (``SkipConnection``, ``Parallel``): a producer is pruned only when it, the layers
in between and its consumer sit in the *same* Chain. Channels that cross a container boundary are combined
with others there (``+`` adds them to the skipped input, ``cat``/branches interleave them), so they are kept
as a coupled whole: a ResNet block's internal channels shrink, its residual stream keeps its width. A
depthwise convolution with one filter per channel (``DepthwiseConv(k, c => c)``) is channel-wise: its filters
follow the channels kept by the producer before it (MobileNet's pointwise -> depthwise -> pointwise). Other
grouped convolutions are neither pruned as producers nor sliced as consumers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_fraction, check_in
from ..backends import kernel
from ..model.chain import Chain
from ..model.walk import ROOT, join
from ._common import add_record, check_finite, check_model, leaves

__all__ = ["prune_structured", "validate_prune_structured"]

CRITERIA = ("l1", "l2")


def _role(layer: Any) -> str | None:
    """The layer's declared ``structured`` role: "units", "channelwise", "flatten" or None (opaque). A depthwise
    convolution with one filter per channel (``DepthwiseConv(k, c => c)``) keeps channels apart: channel-wise."""
    w = getattr(layer, "weight", None)
    groups = getattr(layer, "groups", 1)
    if groups > 1 and isinstance(w, np.ndarray) and w.ndim == 4 and w.shape[2] == 1 and w.shape[3] == groups:
        return "channelwise"
    return getattr(layer, "structured", None)


def _unit_norms(weight: np.ndarray, out_axis: int, criterion: str) -> np.ndarray:
    """Norm of each unit's incoming weights: every axis of ``weight`` but its output axis (``out_axes``)."""
    w = weight.astype(np.float64)
    axes = tuple(a for a in range(w.ndim) if a != out_axis)
    return np.abs(w).sum(axis=axes) if criterion == "l1" else np.sqrt((w * w).sum(axis=axes))


@kernel("select_units")
def select_units(weight: np.ndarray, out_axis: int, n_remove: int, criterion: str) -> np.ndarray:
    """Sorted 0-based indices of the units along ``out_axis`` that stay when the ``n_remove`` weakest go.

    Weakest = lowest L1/L2 norm of the unit's incoming weights; ties: the lower index goes first.
    """
    order = np.argsort(_unit_norms(weight, out_axis, criterion), kind="stable")
    return np.sort(order[n_remove:])


def _chain_of(model: Any) -> dict[str, int | None]:
    """Leaf path -> id of the Chain it sits in directly (None under SkipConnection/Parallel)."""
    out: dict[str, int | None] = {}

    def visit(node: Any, path: str) -> None:
        for frag, child in node.children().items():
            sub = join(path, frag)
            if getattr(child, "container", False):
                visit(child, sub)
            else:
                out[sub] = id(node) if isinstance(node, Chain) else None
    if getattr(model, "container", False):
        visit(model, ROOT)
    return out


def _plan(model: Any, fraction: float, criterion: str) -> tuple[list[dict], dict[str, str]]:
    """Decide, from the unmodified weights, which units every prunable producer keeps.

    Returns ``(plans, skipped)``: one plan per producer to shrink (``producer``, ``between``, ``consumer``
    indices into the leaf list, ``keep`` indices, ``block`` = matrix columns per channel across a flatten)
    and ``{path: reason}`` for producers left alone.
    """
    items = leaves(model)
    producers = [i for i, (_, layer) in enumerate(items) if _role(layer) == "units"]
    plans, skipped = [], {}
    chain_of = _chain_of(model)
    for pi, ci in zip(producers, producers[1:] + [None]):
        path, layer = items[pi]
        if ci is None:
            skipped[path] = "last weight layer: its outputs are the model's outputs"
            continue
        between = list(range(pi + 1, ci))
        roles = [_role(items[i][1]) for i in between]
        odd = [f"{items[i][0]} ({items[i][1].flux_name})" for i, r in zip(between, roles)
               if r not in ("channelwise", "flatten")]
        if odd:
            skipped[path] = f"followed by {', '.join(odd)}, which structured pruning cannot see through"
            continue
        if getattr(layer, "groups", 1) != 1:
            skipped[path] = "grouped convolution"
            continue
        home = chain_of.get(path)
        if home is None or any(chain_of.get(items[i][0]) != home for i in between + [ci]):
            skipped[path] = ("its output channels leave its Chain (SkipConnection/Parallel combine them with "
                             "others): kept as a coupled whole")
            continue
        cpath, consumer = items[ci]
        if getattr(consumer, "groups", 1) != 1:
            skipped[path] = f"feeds the grouped convolution {cpath}: its channels are tied to the groups"
            continue
        n_units = layer.weight.shape[layer.out_axes["weight"]]
        block = 1
        if layer.weight.ndim == 4 and consumer.weight.ndim == 2:          # Conv -> ... -> flatten -> Dense
            if "flatten" not in roles:
                skipped[path] = f"Conv output reaches {cpath} ({consumer.flux_name}) without a flatten"
                continue
            block, rem = divmod(consumer.weight.shape[consumer.in_axes["weight"]], n_units)
            if rem:
                skipped[path] = (f"{cpath} has {consumer.weight.shape[1]} inputs, not a multiple of "
                                 f"the {n_units} channels")
                continue
        elif layer.weight.ndim == 2 and consumer.weight.ndim == 4:
            skipped[path] = f"{layer.flux_name} feeding a {consumer.flux_name}"
            continue
        elif layer.weight.ndim == 4 and "flatten" in roles:
            skipped[path] = "flatten between two convolutions"
            continue
        n_remove = int(np.floor(fraction * n_units + 0.5))
        if n_remove >= n_units:
            raise ValueError(f"fraction={fraction} would remove all {n_units} units of {path} ({layer!r}); "
                             f"use a fraction below {(n_units - 0.5) / n_units:.3f}")
        keep = select_units(layer.weight, layer.out_axes["weight"], n_remove, criterion)
        plans.append({"path": path, "producer": pi, "between": between, "consumer": ci, "keep": keep,
                      "block": block, "units": n_units})
    return plans, skipped


def _apply(model: Any, plans: list[dict]) -> None:
    """Slice producers' outputs, per-channel arrays in between (BatchNorm), and consumers' inputs (in place)."""
    items = leaves(model)
    for plan in plans:
        keep = plan["keep"]
        items[plan["producer"]][1].slice_outputs(keep)
        for i in plan["between"]:
            if hasattr(items[i][1], "slice_outputs"):  # activations (shared singletons) have nothing to slice
                items[i][1].slice_outputs(keep)
        b = plan["block"]
        cols = (keep[:, None] * b + np.arange(b)).reshape(-1)   # channel c -> columns c*b:(c+1)*b
        items[plan["consumer"]][1].slice_inputs(cols)


def validate_prune_structured(model: Any, fraction: Any, criterion: Any = "l1") -> tuple[float, str]:
    """Check the arguments of :func:`prune_structured`; return ``(fraction, criterion)``."""
    check_model(model)
    fraction = check_fraction("fraction", fraction, 0.0, 1.0, inclusive=(True, False))
    criterion = check_in("criterion", criterion, CRITERIA)
    check_finite(model)
    return fraction, criterion


def prune_structured(model: Any, fraction: float, criterion: str = "l1") -> Any:
    """Remove the weakest ``fraction`` of neurons/filters of every hidden weight layer, physically.

    Parameters
    ----------
    model : Chain (not modified)
    fraction : float in [0, 1)
        Fraction of the units (Dense outputs / Conv filters) removed from each layer that feeds another
        weight layer: ``round(fraction * units)``. The last weight layer keeps all its outputs.
    criterion : {"l1", "l2"}
        Unit importance: L1 or L2 norm of the unit's incoming weights (row of a Dense, filter of a Conv).
        Ties are broken by index (the lower index is removed first).

    Returns
    -------
    Chain
        A smaller copy. Kept units keep their weights (same values, same order), so before fine-tuning the
        kept channels of every shrunk layer's output are unchanged up to float32 rounding (sums over fewer
        terms, possibly ordered differently by BLAS: about 1e-7 relative, not bit for bit). Record:
        ``{"method": "prune_structured", "settings", "per_layer": {path: fraction removed},
        "kept": {path: [kept unit indices]}, "skipped": {path: reason}, "params_before", "params_after"}``.

    Raises
    ------
    ValueError
        fraction outside [0, 1) or so large that a layer would lose every unit; unknown criterion;
        NaN/Inf weights.
    """
    fraction, criterion = validate_prune_structured(model, fraction, criterion)
    result = model.copy()
    before = sum(a.size for _, layer in leaves(model) for a in layer.params().values())
    plans, skipped = _plan(result, fraction, criterion)
    _apply(result, plans)
    after = sum(a.size for _, layer in leaves(result) for a in layer.params().values())
    per_layer = {p["path"]: float(1.0 - len(p["keep"]) / p["units"]) for p in plans}
    add_record(result, "prune_structured", {"fraction": fraction, "criterion": criterion}, per_layer,
               kept={p["path"]: p["keep"].tolist() for p in plans}, skipped=skipped,
               params_before=int(before), params_after=int(after))
    return result
