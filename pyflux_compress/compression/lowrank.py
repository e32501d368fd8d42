"""Low-rank factorisation of Dense layers (and Embedding tables) by truncated SVD: ``lowrank``.

``Embedding(vocab => dim)`` (table ``W (dim, vocab)``) becomes ``Embedding(vocab => r)`` + ``Dense(r => dim;
bias=false)`` (the layer's own ``factorise``): the same lookup through a rank-``r`` table.

``Dense(in => out, σ)`` with weight ``W (out, in)`` becomes two Dense layers, inline in the same Chain::

    W ≈ U_r S_r V_r^T = (U_r S_r^½) (S_r^½ V_r^T)
    Dense(in => r)          weight S_r^½ V_r^T (r, in), no bias, identity
    Dense(r => out, σ)      weight U_r S_r^½ (out, r), the original bias and activation

This is done only where it saves parameters, ``r * (in + out) < in * out``; it really shrinks the dense
model (fewer parameters, fewer multiply-adds, a smaller file). The rank ``r`` is chosen per layer as the
smallest that keeps the fraction ``energy`` of ``sum(s_i^2)`` (the squared Frobenius norm of ``W``), or
given. The survey's "matrix factorisation: SVD" (section 1) is exactly this; Conv layers are left alone.

Unless named in a ``rank`` dict, two kinds of layers are never factorised: the model's output layer (the last
Dense: its few parameters carry the class scores, and a rank cut there costs the most accuracy -- measured
0.8587 -> 0.783 for rank 8 of a 64 -> 10 classifier) and layers whose saving is below ``MIN_SAVING`` of the
model's parameters (a negligible gain for a sure loss). Both appear in the record's ``skipped``.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._validate import check_fraction, check_int
from ..backends import kernel
from ..model.walk import ROOT
from ._common import add_record, check_finite, check_model, leaves

__all__ = ["lowrank", "validate_lowrank", "rank_for_energy", "MIN_SAVING"]

MIN_SAVING = 0.01  # a factorisation must save at least this fraction of the model's parameters


def rank_for_energy(s: np.ndarray, energy: float) -> int:
    """Smallest ``r`` with ``sum(s[:r]**2) >= energy * sum(s**2)`` (``s`` sorted descending)."""
    e = np.cumsum(s.astype(np.float64) ** 2)
    if e[-1] == 0:
        return 1
    return int(min(len(s), np.searchsorted(e / e[-1], energy - 1e-12) + 1))


def validate_lowrank(model: Any, rank: Any, energy: Any) -> tuple[Any, float]:
    """Check the arguments of :func:`lowrank`; return ``(rank, energy)`` (rank: None, int or {path: int})."""
    check_model(model)
    energy = check_fraction("energy", energy, 0.0, 1.0, inclusive=(False, True))
    if rank is None:
        pass
    elif isinstance(rank, numbers.Integral) and not isinstance(rank, bool):
        rank = check_int("rank", rank, min=1)
    elif isinstance(rank, dict):
        dense_paths = [p for p, layer in leaves(model) if _factorisable(layer)]
        for path, r in rank.items():
            if path not in dense_paths:
                raise ValueError(f"rank: {path!r} is not a Dense (or Embedding) layer path; such layers: "
                                 f"{dense_paths}")
            check_int(f"rank[{path!r}]", r, min=1)
    else:
        raise ValueError(f"rank must be None (choose by energy), an int >= 1, or a dict {{path: int}}; "
                         f"got {rank!r}")
    check_finite(model)
    return rank, energy


@kernel("svd")
def svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of ``w (out, in)`` in float64: ``(u (out, p), s (p,) descending, vt (p, in))``, p = min."""
    return np.linalg.svd(np.asarray(w, dtype=np.float64), full_matrices=False)


@kernel("singular_values")
def singular_values(w: np.ndarray) -> np.ndarray:
    """Singular values of ``w`` in float64, descending."""
    return np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False)


def _factorisable(layer: Any) -> bool:
    """A layer declaring ``factorise(r, svd)`` (Dense; Embedding: a table ``(dim, vocab)`` as two factors)."""
    return callable(getattr(layer, "factorise", None))


def _factorise(layer: Any, r: int) -> list[Any]:
    return list(layer.factorise(r, svd=svd))


def _rewrite(chain: Any, prefix: str, choose) -> None:
    """Replace, in place, every Dense of ``chain`` (recursively) for which ``choose`` returns a rank."""
    from ..model.chain import Chain

    new_layers = []
    for i, layer in enumerate(chain.layers):
        path = f"{prefix}layers[{i + 1}]"
        if isinstance(layer, Chain):
            _rewrite(layer, path + ".", choose)
            new_layers.append(layer)
            continue
        if getattr(layer, "container", False):
            new_layers.append(_rewrite_children(layer, path + ".", choose))
            continue
        r = choose(path, layer)
        if r is None:
            new_layers.append(layer)
        else:
            new_layers.extend(_factorise(layer, r))
    chain.layers[:] = new_layers


def _rewrite_children(layer: Any, prefix: str, choose) -> Any:
    """A non-Chain container (SkipConnection, MultiHeadAttention, ...) rebuilt with its factorisable children
    replaced by ``Chain(first, second)`` (a Chain stands wherever a layer does)."""
    from ..model.chain import Chain

    kids = {}
    for frag, child in layer.children().items():
        path = prefix + frag
        if isinstance(child, Chain):
            _rewrite(child, path + ".", choose)
            kids[frag] = child
        elif getattr(child, "container", False):
            kids[frag] = _rewrite_children(child, path + ".", choose)
        else:
            r = choose(path, child)
            kids[frag] = child if r is None else Chain(*_factorise(child, r))
    return layer.with_children(kids)


def lowrank(model: Any, rank: Any = None, energy: float = 0.95) -> Any:
    """Replace Dense layers by truncated-SVD pairs where that saves parameters.

    Parameters
    ----------
    model : Chain (not modified)
    rank : None, int or dict {path: int}
        None: per layer, the smallest rank keeping ``energy``. An int: that rank for every Dense (capped at
        ``min(in, out)``). A dict: ranks for the named layers (Flux-style paths, ``"layers[1]"``); the
        others are left alone.
    energy : float in (0, 1]
        Fraction of ``sum(singular values²)`` to keep when ``rank`` is None.

    Returns
    -------
    Chain
        A copy where each factorised ``Dense(in => out, σ)`` is replaced inline by ``Dense(in => r)``
        (no bias, identity) and ``Dense(r => out, σ)``; layers after it shift by one position. Masks of
        factorised layers are dropped (the factors are dense). Record ``"lowrank"``: ``per_layer``
        {path: rank}, ``energy_kept`` {path: fraction}, ``skipped`` {path: reason}, ``params_before``,
        ``params_after`` (paths are those of the input model).

    Raises
    ------
    ValueError
        energy outside (0, 1], a bad rank or a rank dict naming a non-Dense path, NaN/Inf weights.
    """
    rank, energy = validate_lowrank(model, rank, energy)
    result = model.copy()
    per_layer: dict[str, int] = {}
    kept: dict[str, float] = {}
    skipped: dict[str, str] = {}
    before = sum(a.size for _, layer in leaves(model) for a in layer.params().values())
    weighted = [p for p, layer in leaves(model) if hasattr(layer, "weight")]
    output = weighted[-1] if weighted and len(weighted) > 1 else None

    def choose(path: str, layer: Any) -> int | None:
        if not _factorisable(layer):
            return None
        if isinstance(rank, dict) and path not in rank:
            return None
        if not isinstance(rank, dict) and path == output:
            skipped[path] = "the output layer is not factorised (name it in a rank dict to force it)"
            return None
        out_f, in_f = layer.weight.shape
        s = singular_values(layer.weight)
        if rank is None:
            r = rank_for_energy(s, energy)
        else:
            r = min(rank if isinstance(rank, int) else int(rank[path]), min(in_f, out_f))
        if r * (in_f + out_f) >= in_f * out_f:
            skipped[path] = (f"rank {r} would need {r * (in_f + out_f)} weights, not fewer than the "
                             f"{in_f * out_f} of {layer!r}")
            return None
        saving = in_f * out_f - r * (in_f + out_f)
        if not isinstance(rank, dict) and saving < MIN_SAVING * before:
            skipped[path] = (f"rank {r} would save only {saving} of the model's {before} parameters "
                             f"(< {MIN_SAVING:.0%})")
            return None
        per_layer[path] = r
        total = float((s.astype(np.float64) ** 2).sum())
        kept[path] = float((s[:r] ** 2).sum() / total) if total else 1.0
        return r

    from ..model.chain import Chain

    if isinstance(result, Chain):
        _rewrite(result, "", choose)
    elif choose(ROOT, result) is not None:   # a bare Dense: return a Chain of the two factors
        result = Chain(*_factorise(result, per_layer[ROOT]))
        result.records = list(getattr(model, "records", []))
    after = sum(a.size for _, layer in leaves(result) for a in layer.params().values())
    add_record(result, "lowrank", {"rank": rank, "energy": energy}, per_layer, energy_kept=kept,
               skipped=skipped, params_before=int(before), params_after=int(after))
    return result
