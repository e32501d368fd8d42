"""Structured pruning that physically shrinks the model: ``prune_structured``.

Whole units are removed — Dense neurons (rows of ``weight``, entries of ``bias``), Conv filters
(``weight[:, :, :, o]``), ConvTranspose output channels (``weight[:, :, o, :]``) — together with the inputs of
every layer that reads them, so ``Dense(128 => 64)`` followed by ``Dense(64 => 10)`` becomes
``Dense(128 => 32)`` and ``Dense(32 => 10)``. The smaller arrays are dense: fewer parameters, fewer FLOPs, a
smaller file, a faster CPU forward pass.

Which channels go together is decided by the dependency-group planner (compression/channel_groups.py, in the
spirit of torch-pruning's DepGraph), from each layer's declarations (``structured`` role, ``out_axes``,
``in_axes``, ``slice_outputs`` / ``slice_inputs``):

* through channel-wise layers (activations, Dropout, pooling, BatchNorm, Upsample, a depthwise Conv with one
  filter per channel) a channel stays itself; their per-channel arrays are sliced;
* across ``flatten`` channel ``c`` of ``(N, C, H, W)`` is the block of Dense input columns ``c*H*W:(c+1)*H*W``;
* ``SkipConnection(layer, +)`` / ``Parallel(+, ...)`` add channels: the channels added together are one group,
  pruned together on every side — a ResNet's residual stream shrinks with the stem, every block's last conv
  (and BatchNorm) and every consumer of the sums;
* concatenation (``cat`` along channels) keeps each branch's channels separate, at their offsets in the
  consumer's inputs;
* a ``GroupNorm(chs, G)`` (structured role "grouped", ``channel_blocks()``) has each of its G contiguous groups
  lose ``round(fraction * chs/G)`` channels, so kept channels stay in their groups.

A *family* (the channels of one plain layer, or of one residual stream) loses ``round(fraction * size)``
channels, the ones whose producers' incoming weights together have the smallest norm. Channels that must
stay (the model's input and outputs, channels read by a layer the planner cannot see through — LayerNorm,
attention, recurrent layers, a grouped convolution with several channels per group, a Dense reading
a 4-D tensor without flatten — and anything combined with those) are kept; the record says why.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_fraction, check_in
from ..backends import kernel
from ._common import add_record, check_finite, check_model, leaves
from .channel_groups import ChannelGraph, grouped_channels, trace_channels

__all__ = ["prune_structured", "validate_prune_structured"]

CRITERIA = ("l1", "l2")


def unit_norms(weight: np.ndarray, out_axis: int, criterion: str) -> np.ndarray:
    """L1/L2 norm (float64) of each unit's incoming weights: every axis of ``weight`` but its output axis
    (``out_axes``); ``hidden_units`` uses it on a recurrent cell's gate-coupled rows."""
    w = weight.astype(np.float64)
    axes = tuple(a for a in range(w.ndim) if a != out_axis)
    return np.abs(w).sum(axis=axes) if criterion == "l1" else np.sqrt((w * w).sum(axis=axes))


@kernel("select_units")
def select_units(weight: np.ndarray, out_axis: int, n_remove: int, criterion: str) -> np.ndarray:
    """Sorted 0-based indices of the units along ``out_axis`` that stay when the ``n_remove`` weakest go.

    Weakest = lowest L1/L2 norm of the unit's incoming weights; ties: the lower index goes first.
    """
    order = np.argsort(unit_norms(weight, out_axis, criterion), kind="stable")
    return np.sort(order[n_remove:])


def _group_weights(graph: ChannelGraph, family: list[int]) -> np.ndarray:
    """``(len(family), d)``: row ``k`` holds the incoming weights of every producer of group ``family[k]``
    (the producers' kernels with their output axis first, side by side). With one producer this is its
    kernel as rows, so the ranking is the single layer's."""
    row = {r: k for k, r in enumerate(family)}
    blocks = []
    for slot in graph.slots:
        if slot.kind != "out":
            continue
        pos = [(row[graph.find(e)], i) for i, e in enumerate(slot.elems) if graph.find(e) in row]
        if not pos:
            continue
        w = slot.layer.weight
        rows = np.moveaxis(w, slot.layer.out_axes["weight"], 0).reshape(w.shape[slot.layer.out_axes["weight"]], -1)
        block = np.zeros((len(family), rows.shape[1]), np.float64)
        for k, i in pos:              # |w|: the same L1/L2 norms; a channel a producer makes twice adds up
            block[k] += np.abs(rows[i])
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def _blocks(graph: ChannelGraph, families: list[list[int]], fixed: dict[int, str]) -> dict[int, list[list[int]]]:
    """``{family's first root: [roots of block 1, ...]}`` for families a GroupNorm cuts into contiguous groups.
    A family the GroupNorm's channels do not match one to one (a concatenation of several, say) is fixed."""
    first = {r: fam[0] for fam in families for r in fam}
    members = {fam[0]: fam for fam in families}
    out: dict[int, list[list[int]]] = {}

    def fix(head: int, why: str) -> None:
        fixed.setdefault(head, why)
        for r in members[head]:
            graph.fixed.setdefault(r, why)

    for path, elems, n_blocks in graph.blocks:
        roots = [graph.find(e) for e in elems]
        heads = {first.get(r) for r in roots}
        fam = next((f for f in families if f[0] in heads), None)
        if len(heads) != 1 or fam is None or sorted(roots) != sorted(fam) or len(set(roots)) != len(roots):
            for h in heads - {None}:
                fix(h, f"its channels reach {path}, whose groups they do not match one to one")
            continue
        size = len(roots) // n_blocks
        blocks = [roots[b * size:(b + 1) * size] for b in range(n_blocks)]
        if fam[0] in out and out[fam[0]] != blocks:
            fix(fam[0], f"two group normalisations ({path} and another) group its channels differently")
        out[fam[0]] = blocks
    return out


def _plan(model: Any, fraction: float, criterion: str) -> tuple[ChannelGraph, set[int], dict[str, str]]:
    """Trace the model and decide, from the unmodified weights, which groups go.

    Returns ``(graph, removed roots, {producer path: reason it keeps every output})``.
    """
    graph = trace_channels(model)
    families, fixed = grouped_channels(graph)
    parts = _blocks(graph, families, fixed)
    removed: set[int] = set()
    for fam in families:
        if fam[0] in fixed:
            continue
        for part in parts.get(fam[0], [fam]):      # a GroupNorm's groups are cut evenly, one by one
            n_remove = int(np.floor(fraction * len(part) + 0.5))
            if n_remove >= len(part):
                who = next(s for s in graph.slots if s.kind == "out" and any(graph.find(e) in fam for e in s.elems))
                raise ValueError(f"fraction={fraction} would remove all {len(part)} units of {who.path} "
                                 f"({who.layer!r}){' in one of its groups' if len(part) < len(fam) else ''}; use "
                                 f"a fraction below {(len(part) - 0.5) / len(part):.3f}")
            if n_remove:
                keep = set(select_units(_group_weights(graph, part), 0, n_remove, criterion).tolist())
                removed.update(r for k, r in enumerate(part) if k not in keep)
    skipped = {}
    for slot in graph.slots:
        if slot.kind == "out" and not any(graph.find(e) in removed for e in slot.elems):
            why = next((graph.reason(e) for e in slot.elems if graph.reason(e)), None)
            if why is not None:
                skipped[slot.path] = why
    return graph, removed, skipped


def _apply(graph: ChannelGraph, removed: set[int]) -> dict[str, tuple[np.ndarray, int]]:
    """Slice every slot to its kept indices (in place); return ``{producer path: (kept, units before)}``."""
    kept = {}
    for slot in graph.slots:
        keep = np.array([i for i, e in enumerate(slot.elems) if graph.find(e) not in removed], dtype=np.int64)
        if slot.kind == "out":
            kept[slot.path] = (keep, len(slot.elems))
        if len(keep) == len(slot.elems):
            continue
        if slot.kind == "in":
            slot.layer.slice_inputs(keep)
        else:
            slot.layer.slice_outputs(keep)
    return kept


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
    graph, removed, skipped = _plan(result, fraction, criterion)
    kept = {path: v for path, v in _apply(graph, removed).items() if path not in skipped}
    after = sum(a.size for _, layer in leaves(result) for a in layer.params().values())
    per_layer = {path: float(1.0 - len(keep) / n) for path, (keep, n) in kept.items()}
    add_record(result, "prune_structured", {"fraction": fraction, "criterion": criterion}, per_layer,
               kept={path: keep.tolist() for path, (keep, _) in kept.items()}, skipped=skipped,
               params_before=int(before), params_after=int(after))
    return result
