"""Helpers shared by the compression modules (pruning, structured pruning, sparsify, low-rank, distillation).

* :func:`check_model` / :func:`check_finite` — validate the model argument up front;
* :func:`prunable` — the ``(path, layer, param name)`` targets a pruning function works on, filtered by
  ``include`` (paths like ``"layers[1]"``, ``"layers[1].bias"``, or layer types like ``"Dense"``);
* :func:`add_record` — append the ``{"method", "settings", "per_layer"}`` record to the returned copy;
* :func:`check_inputs` — validate data ``X`` against the model's expected per-sample shape.

Paths are those of :func:`pyflux_compress.model.walk.modules`: ``layers[1]``, ``layers[3].layers[2]`` (a bare
layer passed as the model is ``model``). Which parameters are pruned by default is each layer's
``compressible`` declaration (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .._validate import check_array
from ..model.walk import modules


@dataclass(frozen=True)
class Target:
    """One prunable parameter: ``layer.params()[name]`` of the leaf at ``path``."""

    path: str
    layer: Any
    name: str

    @property
    def key(self) -> str:
        """Record key: the layer path for weights (the common case), ``path.name`` for other params."""
        return self.path if self.name == "weight" else f"{self.path}.{self.name}"

    def array(self) -> np.ndarray:
        return self.layer.params()[self.name]


def check_model(model: Any, name: str = "model") -> Any:
    """Raise ``ValueError`` unless ``model`` looks like a Chain/Layer (has ``copy`` and ``params``)."""
    if not (hasattr(model, "copy") and hasattr(model, "params")):
        raise ValueError(f"{name} must be a pyflux_compress Chain or Layer; got {type(model).__name__}")
    return model


def leaves(model: Any) -> list[tuple[str, Any]]:
    """``list(pfc.modules(model))``: ``[(path, leaf), ...]`` in order."""
    return list(modules(model))


def check_finite(model: Any, name: str = "model", skip: Sequence[np.ndarray] = ()) -> None:
    """``ValueError`` naming the first parameter holding NaN or Inf.

    Fast path: one summation per array (a NaN/Inf anywhere makes the sum non-finite); only when a sum is
    non-finite (or overflows) is the array inspected element by element. Arrays in ``skip`` are not
    checked (the pruning kernel checks the arrays it reads anyway, before writing anything).
    """
    skipped = {id(a) for a in skip}
    for path, layer in leaves(model):
        for pname, arr in layer.params().items():
            if arr.dtype.kind != "f" or arr.size == 0 or id(arr) in skipped:
                continue
            if np.isfinite(arr.sum()) or np.isfinite(arr).all():
                continue
            raise ValueError(non_finite_message(name, path, pname, layer))


def non_finite_message(name: str, path: str, pname: str, layer: Any) -> str:
    return f"{name}: parameter {path}.{pname} of {layer!r} contains NaN or Inf; compression needs finite weights"


def _default_targets(model: Any) -> list[Target]:
    return [Target(path, layer, name) for path, layer in leaves(model)
            for name in getattr(layer, "compressible", ()) if name in layer.params()]


def prunable(model: Any, include: Any = None, name: str = "include") -> list[Target]:
    """The parameters a pruning function works on.

    Parameters
    ----------
    model : Chain
    include : None, str or sequence of str
        ``None``: the ``compressible`` parameters of every layer (the ``weight`` of Dense/Conv/CrossCor;
        biases are never pruned by default).
        Otherwise each entry is a layer path (``"layers[2]"`` -> its weight), a parameter path
        (``"layers[2].bias"``), or a layer type (``"Dense"``, ``"Conv"`` -> the weights of all such layers).

    Raises
    ------
    ValueError
        For an entry that matches nothing; the message lists the available paths.
    """
    if include is None:
        return _default_targets(model)
    if isinstance(include, str):
        include = [include]
    if not isinstance(include, (list, tuple)) or not all(isinstance(s, str) for s in include):
        raise ValueError(f"{name} must be None, a string or a list of strings (layer paths such as "
                         f"'layers[1]', 'layers[1].bias', or layer types such as 'Dense'); got {include!r}")
    found: dict[tuple[str, str], Target] = {}
    all_leaves = leaves(model)
    for entry in include:
        hits: list[Target] = []
        for path, layer in all_leaves:
            params = layer.params()
            ltype = getattr(layer, "flux_name", type(layer).__name__)
            if entry == ltype or entry == path:
                if "weight" in params:
                    hits.append(Target(path, layer, "weight"))
            elif entry.startswith(path + ".") and entry[len(path) + 1:] in params:
                hits.append(Target(path, layer, entry[len(path) + 1:]))
        if not hits:
            available = [f"{p} ({getattr(lay, 'flux_name', type(lay).__name__)}: "
                         f"{', '.join(lay.params()) or 'no params'})" for p, lay in all_leaves]
            raise ValueError(f"{name}: {entry!r} matches no layer parameter; available layers: "
                             f"{'; '.join(available)}; or a layer type such as 'Dense'")
        for t in hits:
            found.setdefault((t.path, t.name), t)
    # keep model order (walk order) whatever the order of `include`
    order = {p: i for i, (p, _) in enumerate(all_leaves)}
    return sorted(found.values(), key=lambda t: (order[t.path], t.name != "weight", t.name))


def retarget(targets: Sequence[Target], model: Any) -> list[Target]:
    """The same targets (by path and param name) looked up in another model with the same structure (a copy)."""
    by_path = dict(leaves(model))
    return [Target(t.path, by_path[t.path], t.name) for t in targets]


def copy_sharing(model: Any, arrays: Sequence[np.ndarray]) -> Any:
    """A deep copy of ``model`` (like ``model.copy()``) that shares, instead of copying, ``arrays``.

    For functions that immediately replace those arrays with new ones: it saves a full copy of them. The
    caller must replace every shared array, or the copy and the input would alias.
    """
    memo = {id(a): a for a in arrays}
    return copy.deepcopy(model, memo)


def set_mask(layer: Any, name: str, mask: np.ndarray) -> None:
    """Attach a bool mask for parameter ``name`` (creating ``layer.masks`` if the layer has none)."""
    masks = getattr(layer, "masks", None)
    if masks is None:
        masks = {}
        layer.masks = masks
    masks[name] = mask


def add_record(model: Any, method: str, settings: dict, per_layer: dict, **extra: Any) -> dict:
    """Append ``{"method", "settings", "per_layer", **extra}`` to ``model.records`` (created if missing)."""
    rec = {"method": method, "settings": dict(settings), "per_layer": dict(per_layer), **extra}
    records = getattr(model, "records", None)
    if records is None:
        records = []
        model.records = records
    records.append(rec)
    return rec


def array_sparsity(arr: np.ndarray) -> float:
    """Fraction of exact zeros in ``arr`` (0.0 for an empty array)."""
    return 0.0 if arr.size == 0 else float(1.0 - np.count_nonzero(arr) / arr.size)


def check_inputs(model: Any, X: Any, name: str = "X", model_name: str = "model") -> np.ndarray:
    """Return ``X`` as a float array ``(N, ...)``, checked against the model's expected per-sample shape.

    The per-sample shape is checked with ``model.output_shape(X.shape[1:])``, which names the layer that
    rejects it; the error is re-raised naming ``name``.
    """
    X = check_array(name, X, finite=True)
    if X.dtype.kind != "f":
        X = X.astype(np.float32)
    if X.ndim < 2 or X.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (N, features...) with samples on axis 0; "
                         f"got shape {X.shape}")
    try:
        model.output_shape(tuple(X.shape[1:]))
    except ValueError as err:
        raise ValueError(f"{name} of shape {X.shape} does not fit {model_name}: {err}") from None
    return X


def check_labels(y: Any, n: int, name: str = "y") -> np.ndarray:
    """Integer class labels ``(n,)`` (or a float target array with ``n`` rows)."""
    y = check_array(name, y)
    if y.shape[:1] != (n,):
        raise ValueError(f"{name} must have one entry per sample ({n}); got shape {y.shape}")
    return y


def iter_chunks(flat: np.ndarray, size: int) -> Iterable[tuple[int, np.ndarray]]:
    """``(start, view)`` chunks of a 1-D array: the vectorized kernels stream through cache-sized blocks."""
    for start in range(0, flat.size, size):
        yield start, flat[start:start + size]
