"""Unstructured magnitude pruning: ``prune``, the gradual schedule ``PolynomialDecay`` and ``prune_iteratively``.

Magnitude pruning zeroes the ``k = round(sparsity * n)`` weights of smallest ``|w|`` — per layer
(``scope="layer"``: each layer loses exactly that fraction) or under one threshold shared by all layers
(``scope="global"``: the model loses exactly that fraction; layers with many small weights lose more).
Ties at the threshold are broken deterministically: among weights whose ``|w|`` equals the threshold, the
first ones in model order (layer walk order, then C order inside a weight array) are pruned.

The pruned copy carries bool masks (``layer.masks["weight"]``, True = kept); ``pfc.fit`` re-applies them
after every optimiser step so fine-tuning keeps the pruned weights at exactly zero.

Honest note: a masked dense array is exactly as large and as slow as before. Unstructured sparsity pays off
only in storage (sparse/compressed archives); for a smaller, faster dense model use
:func:`pyflux_compress.prune_structured` or :func:`pyflux_compress.lowrank`.

Speed. The k-th smallest ``|w|`` over many arrays is found without sorting and without materialising ``|w|``
for the whole model: a fixed-seed random sample of 65,536 magnitudes brackets the threshold, one streaming
pass (cache-sized chunks) counts the weights below the bracket and collects the ~1 % inside it, and an
``np.partition`` of that small set gives the exact threshold. A second streaming pass writes masks and zeros.
If the bracket ever misses (adversarial data), an exact full ``np.partition`` is used instead, so the result
never depends on the sample — only the speed does.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .._validate import check_fraction, check_in, check_int
from ..backends import NonFiniteArray, kernel
from ._common import (Target, add_record, check_finite, check_model, copy_sharing, iter_chunks,
                      non_finite_message, prunable, retarget, set_mask)

__all__ = ["prune", "PolynomialDecay", "prune_iteratively", "validate_prune"]

SCOPES = ("layer", "global")
_CHUNK = 1 << 16      # elements per streaming block (256 KiB of float32: stays in L2 cache)
_SMALL = 1 << 18      # below this many weights an exact np.partition of |w| is cheapest
_SAMPLE = 1 << 16     # sample size used to bracket the threshold of large models


# ----------------------------------------------------------------------------------------------------------
# the selection kernel (works on a list of arrays, in place)


class _NonFinite(NonFiniteArray):
    """Raised by the kernel (before anything is written) when an input array holds NaN or Inf."""

    def __init__(self, flats: Sequence[np.ndarray]) -> None:
        super().__init__(next(i for i, f in enumerate(flats) if not np.isfinite(f).all()))


def n_to_prune(sparsity: float, n: int) -> int:
    """``round(sparsity * n)`` with halves rounded up (Python's ``round`` would round half to even)."""
    return min(n, int(np.floor(sparsity * n + 0.5)))


def _kth_smallest_abs(flats: Sequence[np.ndarray], k: int) -> tuple[float, int, list[tuple[int, int]]]:
    """The ``k``-th smallest ``|w|`` (1-based) over the concatenation of the 1-D arrays ``flats``.

    Returns ``(t, n_less, ties)``: the threshold, how many magnitudes are strictly below it, and the
    positions ``(array index, flat index)`` of all magnitudes equal to it, in model order.
    """
    sizes = np.array([f.size for f in flats], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offsets[-1])
    if n > _SMALL:
        found = _bracketed_select(flats, offsets, k)
        if found is not None:
            return found
    # exact: |w| of everything, one partition
    buf = np.concatenate([np.abs(f) for f in flats]) if len(flats) > 1 else np.abs(flats[0])
    if not np.isfinite(buf.max()):
        raise _NonFinite(flats)
    t = np.partition(buf, k - 1)[k - 1]
    eq = np.flatnonzero(buf == t)
    which = np.searchsorted(offsets, eq, side="right") - 1
    ties = [(int(a), int(i - offsets[a])) for a, i in zip(which, eq)]
    return t, int(np.count_nonzero(buf < t)), ties


def _bracketed_select(flats, offsets, k):
    """Sample-bracketed exact selection (see the module docstring); None when the bracket misses."""
    n = int(offsets[-1])
    rng = np.random.default_rng(0x5EED)  # fixed: the result is exact anyway, this keeps timings repeatable
    idx = rng.integers(0, n, _SAMPLE)
    which = np.searchsorted(offsets, idx, side="right") - 1
    sample = np.empty(_SAMPLE, dtype=np.float64)
    for a, f in enumerate(flats):
        sel = which == a
        sample[sel] = np.abs(f[idx[sel] - offsets[a]])
    sample.sort()
    p = k / n
    # 7 binomial standard deviations of the sample quantile: a miss is ~1e-12 likely for random data
    margin = 7.0 * np.sqrt(p * (1 - p) / _SAMPLE) + 4.0 / _SAMPLE
    lo = sample[int(np.floor((p - margin) * _SAMPLE))] if p - margin > 0 else -1.0
    hi = sample[int(np.ceil((p + margin) * _SAMPLE))] if p + margin < 1 else np.inf

    dtype = np.result_type(*flats)
    lo, hi = dtype.type(lo), dtype.type(hi)   # same dtype as the weights: a float64 scalar would upcast
    below = 0
    cands: list[np.ndarray] = []
    origin: list[tuple[int, int]] = []   # (array index, chunk start) of every chunk in `cands`
    tmp = np.empty(_CHUNK, dtype=dtype)
    b_lo = np.empty(_CHUNK, dtype=bool)
    b_in = np.empty(_CHUNK, dtype=bool)
    top = []                              # chunk maxima: NaN/Inf anywhere shows up here, for free
    for a, f in enumerate(flats):
        for start, chunk in iter_chunks(f, _CHUNK):
            m = chunk.size
            mag = np.abs(chunk, out=tmp[:m])
            top.append(mag.max())
            below += np.count_nonzero(np.less(mag, lo, out=b_lo[:m]))
            np.less_equal(mag, hi, out=b_in[:m])
            np.logical_xor(b_in[:m], b_lo[:m], out=b_in[:m])      # lo <= |w| <= hi
            cands.append(mag[b_in[:m]])
            origin.append((a, start))
    if not np.isfinite(max(top)):
        raise _NonFinite(flats)
    j = k - below
    counts = np.array([c.size for c in cands], dtype=np.int64)
    if not 1 <= j <= int(counts.sum()):
        return None
    c = np.concatenate(cands)
    t = np.partition(c, j - 1)[j - 1]
    n_less = below + int(np.count_nonzero(c < t))
    # positions of |w| == t: find the chunks holding them, then re-scan only those chunks
    eq = np.flatnonzero(c == t)
    chunk_of = np.unique(np.searchsorted(np.cumsum(counts), eq, side="right"))
    ties: list[tuple[int, int]] = []
    for ci in chunk_of:
        a, start = origin[ci]
        block = flats[a][start:start + _CHUNK]
        ties.extend((a, start + int(i)) for i in np.flatnonzero(np.abs(block) == t))
    return t, n_less, ties


@kernel("magnitude_prune")
def _prune_arrays(arrays: Sequence[np.ndarray], k: int, out: Sequence[np.ndarray] | None = None
                  ) -> list[np.ndarray]:
    """Zero the ``k`` smallest ``|w|`` over all ``arrays``; return the bool keep-masks.

    The pruned values are written to ``out`` (arrays of the same shapes) when given — ``arrays`` are then
    only read — else in place.
    """
    if out is None:
        out = arrays
    # reshape(-1) of a non-C-contiguous array (Julia's memory order, as pfc.load returns weights) is a copy:
    # fine for reading, but writes must go to C-ordered buffers that are copied back at the end
    flats = [a.reshape(-1) for a in arrays]
    c_out = [o if o.flags.c_contiguous else np.empty(o.shape, dtype=o.dtype) for o in out]
    dsts = [o.reshape(-1) for o in c_out]
    if k <= 0:
        if not all(np.isfinite(f).all() for f in flats):
            raise _NonFinite(flats)
        for f, d in zip(flats, dsts):
            if d is not f:
                np.copyto(d, f)
        _copy_back(out, c_out)
        return [np.ones(a.shape, dtype=bool) for a in arrays]
    t, n_less, ties = _kth_smallest_abs(flats, k)
    # ties in model order: the first (k - n_less) are pruned, the rest are kept
    kept_ties = [(a, i, flats[a][i]) for a, i in ties[k - n_less:]]
    masks = []
    tmp = np.empty(min(_CHUNK, max(f.size for f in flats)), dtype=np.result_type(*flats))
    for f, d, arr in zip(flats, dsts, arrays):
        mask = np.empty(f.size, dtype=bool)
        for start, chunk in iter_chunks(f, _CHUNK):
            m = chunk.size
            np.greater(np.abs(chunk, out=tmp[:m]), t, out=mask[start:start + m])
            np.multiply(chunk, mask[start:start + m], out=d[start:start + m])
        masks.append(mask.reshape(arr.shape))
    for a, i, value in kept_ties:
        dsts[a][i] = value
        masks[a].reshape(-1)[i] = True
    _copy_back(out, c_out)
    return masks


def _copy_back(out: Sequence[np.ndarray], c_out: Sequence[np.ndarray]) -> None:
    for o, c in zip(out, c_out):
        if c is not o:
            np.copyto(o, c)


def prune_targets(targets: Sequence[Target], sparsity: float, scope: str, fresh: bool = False
                   ) -> dict[str, float]:
    """Prune ``targets`` (weights zeroed, masks set); return ``{target key: pruned fraction}``.

    ``fresh=True`` writes the pruned values to new arrays that replace the layers' attributes (used on a
    copy whose target arrays are still shared with the input model), else the arrays are pruned in place.
    """
    arrays = [t.array() for t in targets]
    out = [np.empty(a.shape, dtype=a.dtype) for a in arrays] if fresh else arrays  # fresh: C order
    try:
        if scope == "global":
            masks = _prune_arrays(arrays, n_to_prune(sparsity, sum(a.size for a in arrays)), out)
        else:
            masks = []
            for i, (a, o) in enumerate(zip(arrays, out)):
                try:
                    masks.append(_prune_arrays([a], n_to_prune(sparsity, a.size), [o])[0])
                except NonFiniteArray as err:
                    err.index = i
                    raise
    except NonFiniteArray as err:   # raised by a read pass, before that array was written: name the parameter
        t = targets[err.index]
        raise ValueError(non_finite_message("model", t.path, t.name, t.layer)) from None
    per_layer = {}
    for t, mask, new in zip(targets, masks, out):
        if fresh:
            setattr(t.layer, t.name, new)
        set_mask(t.layer, t.name, mask)
        per_layer[t.key] = float(1.0 - np.count_nonzero(mask) / mask.size) if mask.size else 0.0
    return per_layer


# ----------------------------------------------------------------------------------------------------------
# public API


def validate_prune(model: Any, sparsity: Any, scope: Any = "layer", include: Any = None
                   ) -> tuple[float, str, list[Target]]:
    """Check the arguments of :func:`prune`; return ``(sparsity, scope, targets)``."""
    check_model(model)
    sparsity = check_fraction("sparsity", sparsity, 0.0, 1.0, inclusive=(True, False))
    scope = check_in("scope", scope, SCOPES)
    targets = prunable(model, include)
    if not targets:
        raise ValueError("model has no prunable weights (Dense/Conv/CrossCor); nothing to prune")
    # the arrays to prune are checked for NaN/Inf by the kernel's first read pass (prune() writes only to
    # its fresh copy, so the input is never touched); everything else is checked here
    check_finite(model, skip=[t.array() for t in targets])
    return sparsity, scope, targets


def prune(model: Any, sparsity: float, scope: str = "layer", include: Any = None) -> Any:
    """Magnitude pruning: zero the smallest ``|w|`` to reach ``sparsity`` exactly.

    Parameters
    ----------
    model : Chain
        Not modified.
    sparsity : float in [0, 1)
        Fraction of the selected weights set to zero: ``round(sparsity * n)`` of them.
    scope : {"layer", "global"}
        ``"layer"``: every selected array loses exactly ``sparsity`` of its entries. ``"global"``: one
        threshold over all selected arrays; the total is exact and layers differ.
    include : None, str or list of str
        Which parameters: ``None`` = the weights (not biases) of every Dense/Conv/CrossCor; else layer paths
        (``"layers[1]"``), parameter paths (``"layers[1].bias"``) or layer types (``"Dense"``).

    Returns
    -------
    Chain
        A copy with the same shapes, the pruned weights set to 0.0, ``layer.masks[name]`` (bool, True =
        kept) on every pruned layer, and a record ``{"method": "prune", "settings": {...},
        "per_layer": {path: sparsity}}`` appended to ``.records``. Shapes and dense size are unchanged.

    Raises
    ------
    ValueError
        sparsity outside [0, 1), unknown scope, an ``include`` entry matching no layer, NaN/Inf weights.
    """
    sparsity, scope, targets = validate_prune(model, sparsity, scope, include)
    # copy everything but the arrays being pruned: their pruned versions are written straight into new
    # arrays (one memory pass instead of copy + prune)
    result = copy_sharing(model, [t.array() for t in targets])
    per_layer = prune_targets(retarget(targets, result), sparsity, scope, fresh=True)
    sizes = {t.key: t.array().size for t in targets}
    total = sum(per_layer[k] * sizes[k] for k in per_layer) / sum(sizes.values())
    add_record(result, "prune", {"sparsity": sparsity, "scope": scope, "include": include},
               per_layer, total_sparsity=float(total))
    return result


class PolynomialDecay:
    """Gradual pruning schedule of Zhu & Gupta (2017), "To prune, or not to prune".

    At steps ``t = begin, begin + frequency, ...`` up to ``end`` the selected weights are pruned (in place,
    masks updated) to

        s_t = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** 3

    i.e. ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n Δt))^3`` with ``t0 = begin``, ``n Δt = end - begin``,
    ``Δt = frequency``. Sparsity rises fast at first and levels off at ``final``; ``end`` always prunes to
    ``final`` exactly (even when ``end - begin`` is not a multiple of ``frequency``). Between pruning steps
    the masks keep pruned weights at zero.

    Use it as ``pfc.fit(model, X, y, pruning=PolynomialDecay(0.0, 0.9, begin=0, end=1000, frequency=100))``:
    fit calls :meth:`on_step` before each optimiser step (``step`` counts optimiser steps from 0 in each call).
    The schedule keeps its own clock per model: when a later ``fit`` call starts counting again, its steps
    continue where the previous call stopped, so three ``fit(epochs=1)`` calls prune like one ``fit(epochs=3)``.

    Parameters
    ----------
    initial, final : float in [0, 1), ``initial <= final``
    begin, end : int, ``0 <= begin < end`` (optimiser steps)
    frequency : int >= 1 (steps between pruning events)
    scope, include : as in :func:`prune`
    """

    def __init__(self, initial: float, final: float, begin: int, end: int, frequency: int = 100, *,
                 scope: str = "layer", include: Any = None) -> None:
        self.initial = check_fraction("initial", initial, 0.0, 1.0, inclusive=(True, False))
        self.final = check_fraction("final", final, 0.0, 1.0, inclusive=(True, False))
        if self.final < self.initial:
            raise ValueError(f"final must be >= initial; got initial={initial}, final={final}")
        self.begin = check_int("begin", begin, min=0)
        self.end = check_int("end", end, min=self.begin + 1)
        self.frequency = check_int("frequency", frequency, min=1)
        self.scope = check_in("scope", scope, SCOPES)
        self.include = include
        self.history: list[tuple[int, float]] = []   # (step, sparsity) of every pruning event
        self._record: dict | None = None
        self._clock: dict[int, tuple[int, int]] = {}  # id(model) -> (last step passed in, offset to schedule time)

    def sparsity_at(self, step: int) -> float:
        """Target sparsity at optimiser ``step`` (``initial`` before ``begin``, ``final`` after ``end``)."""
        frac = min(max((step - self.begin) / (self.end - self.begin), 0.0), 1.0)
        return self.final + (self.initial - self.final) * (1.0 - frac) ** 3

    def due(self, step: int) -> bool:
        """Whether ``step`` is a pruning event."""
        return self.begin <= step <= self.end and ((step - self.begin) % self.frequency == 0
                                                   or step == self.end)

    def on_step(self, model: Any, step: int) -> None:
        """Prune ``model`` in place to :meth:`sparsity_at` ``(t)`` when schedule time ``t`` is due; else do
        nothing. ``t = step`` within one fit call; a ``step`` not above the previous one (a new fit call) continues
        the clock from the previous call's last step."""
        last, offset = self._clock.get(id(model), (None, 0))
        if last is not None and step <= last:
            offset += last + 1 - step
        self._clock[id(model)] = (step, offset)
        step += offset
        if not self.due(step):
            return
        s = self.sparsity_at(step)
        targets = prunable(model, self.include)
        per_layer = prune_targets(targets, s, self.scope)
        self.history.append((int(step), s))
        settings = {"initial": self.initial, "final": self.final, "begin": self.begin, "end": self.end,
                    "frequency": self.frequency, "scope": self.scope, "include": self.include}
        # one record per schedule and model, kept current (records stay plain data: JSON-able)
        records = getattr(model, "records", None) or []
        if self._record is not None and any(r is self._record for r in records):
            self._record["per_layer"] = per_layer
            self._record["history"] = list(self.history)
        else:
            self._record = add_record(model, "polynomial_decay", settings, per_layer,
                                      history=list(self.history))

    def __repr__(self) -> str:
        return (f"PolynomialDecay(initial={self.initial}, final={self.final}, begin={self.begin}, "
                f"end={self.end}, frequency={self.frequency})")


def prune_iteratively(model: Any, X: Any, y: Any, sparsities: Sequence[float], epochs: int = 1, *,
                      scope: str = "layer", include: Any = None, **fit_kwargs: Any) -> Any:
    """Prune, fine-tune, repeat: for each ``s`` in ``sparsities``, prune to ``s`` then ``pfc.fit`` ``epochs``.

    Parameters
    ----------
    model : Chain (not modified)
    X, y : training data as for ``pfc.fit``
    sparsities : increasing sequence of floats in [0, 1), e.g. ``[0.5, 0.75, 0.9]``
    epochs : int >= 1, fine-tuning epochs after each pruning step
    scope, include : as in :func:`prune`
    **fit_kwargs : passed to ``pfc.fit`` (``batchsize``, ``opt``, ``loss``, ``seed``, ``progress``...)

    Returns
    -------
    Chain
        The pruned, fine-tuned copy (masks set); records of each prune step plus a final
        ``"prune_iteratively"`` record whose ``per_layer`` is the final per-layer sparsity.
    """
    from ..train.fit import fit  # engine import kept local: compression imports stay light

    check_model(model)
    if isinstance(sparsities, (int, float)):
        sparsities = [sparsities]
    if not isinstance(sparsities, (list, tuple, np.ndarray)) or len(sparsities) == 0:
        raise ValueError(f"sparsities must be a non-empty sequence of fractions in [0, 1); got {sparsities!r}")
    levels = [check_fraction(f"sparsities[{i}]", s, 0.0, 1.0, inclusive=(True, False))
              for i, s in enumerate(sparsities)]
    if any(b < a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"sparsities must be non-decreasing; got {levels}")
    epochs = check_int("epochs", epochs, min=1)
    for bad in ("epochs", "pruning"):
        if bad in fit_kwargs:
            raise ValueError(f"prune_iteratively: {bad!r} is not a fit keyword here (use the argument)")
    validate_prune(model, levels[0], scope, include)
    current = model
    for s in levels:
        current = prune(current, s, scope=scope, include=include)
        fit(current, X, y, epochs=epochs, **fit_kwargs)
    per_layer = current.records[-1]["per_layer"] if current.records else {}
    add_record(current, "prune_iteratively", {"sparsities": levels, "epochs": epochs, "scope": scope,
                                              "include": include}, per_layer)
    return current
