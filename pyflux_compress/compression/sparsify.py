"""Sparsification as in the article, and semi-structured N:M sparsity: ``sparsify``.

How we read the article's snippet::

    sparsity_level = 0.5
    model[1].w = sparsity_level . model[1].w

Taken literally (``.`` as the broadcast ``.*``, ``w`` as ``weight`` since Flux 0.13) it would multiply every
weight by 0.5 — which makes nothing sparse, while the text around it says sparsification "sets weights of
the model to 0 to reduce the number of parameters". We implement what it means: set the fraction
``sparsity_level`` of weights to zero, choosing those of smallest magnitude (which changes the function
least), in every Dense/Conv weight (the snippet touches ``model[1]`` only; pass ``include="layers[1]"``
for exactly that). ``sparsify(model, 0.5)`` therefore equals ``prune(model, 0.5, scope="layer")``, recorded
as ``"sparsify"``.

N:M sparsity (``pattern="2:4"``): in every group of M consecutive *input* weights of a unit at most N are
nonzero — the N largest ``|w|`` are kept. Groups run along Dense ``weight`` axis 1 (the inputs of each
output row) and along Conv input channels (``weight[i, j, :, o]`` for each kernel position and filter).
This is the layout sparse tensor cores accelerate (2:4 on NVIDIA Ampere+); on a CPU it gives the same
storage saving as other 50 % sparsity and no speedup. A trailing partial group (inputs not divisible by M)
keeps at most N as well.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .._validate import check_fraction
from ..backends import kernel
from ._common import add_record, check_finite, check_model, prunable, retarget, set_mask
from .prune import SCOPES, prune_targets

__all__ = ["sparsify", "nm_mask", "validate_sparsify"]


def parse_pattern(pattern: Any) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``; ValueError unless ``0 < N < M``."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pattern) if isinstance(pattern, str) else None
    if m is None or not 0 < int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"pattern must be a string 'N:M' with 0 < N < M, e.g. '2:4'; got {pattern!r}")
    return int(m.group(1)), int(m.group(2))


@kernel("nm_mask")
def nm_mask(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep-mask with at most ``n`` True in every group of ``m`` consecutive input weights.

    ``weight`` is a Dense ``(out, in)`` (groups along axis 1) or Conv ``(kw, kh, cin, cout)`` (groups along
    ``cin``). The ``n`` largest ``|w|`` of each group are kept; ties keep the earlier input.
    """
    if weight.ndim == 2:
        rows = np.abs(weight)                                            # (out, in)
    else:
        rows = np.abs(weight).transpose(0, 1, 3, 2).reshape(-1, weight.shape[2])   # (kw*kh*cout, cin)
    r, c = rows.shape
    pad = (-c) % m
    # padding gets magnitude -1: it is never among the kept n unless the real group has fewer than n
    mag = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1.0).reshape(r, -1, m)
    rank = np.argsort(np.argsort(-mag, axis=-1, kind="stable"), axis=-1, kind="stable")
    keep = (rank < n).reshape(r, -1)[:, :c]
    if weight.ndim == 2:
        return keep
    kw, kh, cin, cout = weight.shape
    return np.ascontiguousarray(keep.reshape(kw, kh, cout, cin).transpose(0, 1, 3, 2))


def validate_sparsify(model: Any, level: Any, pattern: Any, include: Any) -> tuple[float | None, tuple | None, list]:
    """Check the arguments of :func:`sparsify`; return ``(level, (n, m) or None, targets)``."""
    check_model(model)
    nm = None
    if pattern is not None:
        nm = parse_pattern(pattern)
        implied = 1.0 - nm[0] / nm[1]
        if level is not None and not np.isclose(check_fraction("level", level, 0.0, 1.0, (True, False)), implied):
            raise ValueError(f"level={level} contradicts pattern={pattern!r} (which means sparsity "
                             f"{implied:g}); give one of them")
        level = None
    elif level is None:
        raise ValueError("give a sparsity level in [0, 1) (e.g. sparsify(model, 0.5)) or a pattern like '2:4'")
    else:
        level = check_fraction("level", level, 0.0, 1.0, inclusive=(True, False))
    targets = prunable(model, include)
    if not targets:
        raise ValueError("model has no Dense/Conv weights to sparsify")
    if nm is not None:
        bad = [t.key for t in targets if t.array().ndim not in (2, 4)]
        if bad:
            raise ValueError(f"pattern needs 2-D Dense or 4-D Conv weights; {', '.join(bad)} are neither")
    check_finite(model)
    return level, nm, targets


def sparsify(model: Any, level: float | None = None, pattern: str | None = None, include: Any = None) -> Any:
    """Set weights to zero to reach a sparsity ``level``, or to an N:M ``pattern``.

    Parameters
    ----------
    model : Chain (not modified)
    level : float in [0, 1), optional
        Fraction of each selected weight array set to zero (the smallest ``|w|``; exact per layer).
    pattern : str, optional
        ``"N:M"``, e.g. ``"2:4"``: at most N nonzeros in every group of M consecutive input weights. Implies
        ``level = 1 - N/M`` (for inputs divisible by M).
    include : as in :func:`pyflux_compress.prune` (default: every Dense/Conv/CrossCor weight)

    Returns
    -------
    Chain
        A copy with the same shapes, zeros in place, ``masks["weight"]`` set (so ``pfc.fit`` keeps the
        pattern while fine-tuning), and a ``"sparsify"`` record with the per-layer sparsity.

    Raises
    ------
    ValueError
        Neither or contradicting ``level``/``pattern``, level outside [0, 1), malformed pattern,
        unknown ``include`` entries, NaN/Inf weights.
    """
    level, nm, targets = validate_sparsify(model, level, pattern, include)
    result = model.copy()
    targets = retarget(targets, result)
    if nm is None:
        per_layer = prune_targets(targets, level, SCOPES[0])
    else:
        per_layer = {}
        for t in targets:
            w = t.array()
            mask = nm_mask(w, *nm)
            np.multiply(w, mask, out=w)
            set_mask(t.layer, t.name, mask)
            per_layer[t.key] = float(1.0 - np.count_nonzero(mask) / mask.size)
    add_record(result, "sparsify", {"level": level, "pattern": pattern, "include": include}, per_layer)
    return result
