"""The julia backend's kernels: array-level work computed by the bundled Julia package FluxCompress.

Imported only when the julia backend is active and a kernel is called; importing this module does not start
Julia — :func:`julia` does, on first use, through juliacall. This module knows nothing about layers or models:
``backends.kernel`` routes each registered kernel here by name (:data:`KERNELS`), with the numpy kernel's
arguments, and each twin below returns what the numpy kernel returns. Models, argument checks and records are
built once, in Python, for both backends (``pyflux_compress.compression``).

How values cross the bridge (PythonCall 0.9 conversion rules; checked in JuliaPy/PythonCall.jl):

* Python -> Julia (``docs/src/conversion-to-julia.md``: arguments of a Julia function called from Python are
  converted with ``T=Any``): a numpy array becomes a ``PyArray`` that wraps the same memory with NumPy's strides
  (``src/Wrap/PyArray.jl``, ``pyarray_get_strides``), so a C-ordered weight is a strided, non-column-major
  array in Julia — fine for indexing, wrong for anything that hands ``pointer(w)`` to BLAS; every FluxCompress
  kernel that calls BLAS/LAPACK copies to a dense ``Array`` first. A ``tuple`` becomes a ``Tuple`` (elements
  converted the same way), a ``list`` only a ``PyList`` of Python objects: lists of arrays are sent as tuples.
  ``None`` -> ``nothing``, ``int`` -> ``Int``, ``float`` -> ``Float64``, ``str`` -> ``String``.
* Julia -> Python (``docs/src/conversion-to-python.md``): ``Tuple`` and ``Pair`` become ``tuple``; an
  ``AbstractArray`` becomes a ``juliacall.ArrayValue`` whose ``__array_interface__`` reports Julia's
  column-major strides (``src/JlWrap/array.jl``, ``pyjlarray_array_interface``), so ``np.asarray`` of it is an
  F-ordered view; anything else (a ``NamedTuple``, a struct) is an ``AnyValue`` whose attributes are the Julia
  fields (``getproperty``). Kernels return concrete ``Array``s (``Array{Bool}``, never a ``BitArray``, which
  has no array interface and would be copied element by element).
* Indices: Julia's are 1-based; the conversion to 0-based happens here, next to the call.
"""
from __future__ import annotations

import os
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from . import NonFiniteArray, detect

__all__ = ["julia", "KERNELS"]

_JL: Any = None


# ------------------------------------------------------------------------------------------------ start-up
def julia() -> Any:
    """juliacall's ``Main`` with FluxCompress loaded; starts Julia on first call.

    Never downloads Julia: the executable found by :func:`detect.find_julia` is pinned through
    ``PYTHON_JULIAPKG_EXE`` before juliacall is imported (juliapkg would otherwise install one).
    ``PYTHON_JULIAPKG_OFFLINE`` is honoured: juliapkg then skips package installation, which works only
    when the project was resolved before (checked first, with a clear error).
    """
    global _JL
    if _JL is not None:
        return _JL
    info = detect.find_julia()
    if not info.found:
        raise RuntimeError(detect.missing_julia_message(info))
    if info.offline and not info.resolved:
        raise RuntimeError(f"PYTHON_JULIAPKG_OFFLINE is set but the juliapkg project {info.project} was never "
                           "resolved, so FluxCompress/Flux/JLD2 are not installed there; run once without it.")
    if not detect.juliacall_available():
        raise RuntimeError(f"Julia found at {info.executable}, but the Python package juliacall is missing: "
                           "pip install juliacall")
    os.environ.setdefault("PYTHON_JULIAPKG_EXE", str(info.executable))
    from juliacall import Main as jl  # noqa: PLC0415 - starts Julia; juliapkg reads our juliapkg.json

    jl.seval("import FluxCompress")
    _JL = jl
    return jl


def _fc() -> Any:
    return julia().FluxCompress


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    """A Julia array (ArrayValue) as numpy: a view of Julia's column-major memory, cast only when asked."""
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def _check_finite(arrays: Sequence[np.ndarray]) -> None:
    for i, a in enumerate(arrays):
        if not np.isfinite(a).all():
            raise NonFiniteArray(i)


# ------------------------------------------------------------------------------------------------ kernels
def magnitude_prune(arrays: Sequence[np.ndarray], k: int, out: Sequence[np.ndarray] | None = None
                    ) -> list[np.ndarray]:
    """Twin of ``compression.prune`` kernel ``magnitude_prune``: Julia selects the masks, numpy applies them."""
    _check_finite(arrays)
    masks = [_np(m, bool) for m in _fc().kernel_magnitude_masks(tuple(arrays), int(k))]
    for a, o, m in zip(arrays, arrays if out is None else out, masks):
        np.multiply(a, m, out=o)
    return masks


def nm_mask(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    return _np(_fc().kernel_nm_mask(weight, int(n), int(m)), bool)


def select_units(weight: np.ndarray, out_axis: int, n_remove: int, criterion: str) -> np.ndarray:
    return _np(_fc().kernel_select_units(weight, int(out_axis) + 1, int(n_remove), str(criterion)), np.int64) - 1


def quantize_weight(w: np.ndarray, bits: int, scheme: str, granularity: str,
                    mask: np.ndarray | None = None, clip: str = "minmax") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if clip != "minmax" or scheme not in ("symmetric", "affine"):
        # FluxCompress.kernel_quantize_array implements min-max ranges of these two schemes only
        raise ValueError(f"quantize: weight_clip={clip!r} with scheme={scheme!r} runs on the numpy backend only; "
                         "the julia backend has weight_clip='minmax' with scheme 'symmetric' or 'affine' "
                         "(pfc.set_backend('numpy') for the others)")
    r = _fc().kernel_quantize_array(np.asarray(w, dtype=np.float32), int(bits), str(scheme), str(granularity),
                                    None if mask is None else np.asarray(mask, dtype=bool))
    # a NamedTuple: attribute access (PythonCall wraps it as an AnyValue; getproperty gives the fields)
    return _np(r.q, np.int8), _np(r.scale, np.float32), _np(r.zero_point, np.int32)


def dequantize_weight(qweight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    return _np(_fc().kernel_dequantize_array(np.asarray(qweight, dtype=np.int8), np.asarray(scale, np.float32),
                                             np.asarray(zero_point, np.int32)), np.float32)


def kmeans_1d(values: np.ndarray, k: int, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray, int]:
    c, labels, it = _fc().kernel_kmeans_1d(np.asarray(values, dtype=np.float64).ravel(), int(k), int(max_iter))
    return _np(c, np.float32), _np(labels, np.int64) - 1, int(it)


def svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vt = _fc().kernel_svd(np.asarray(w, dtype=np.float64))
    return _np(u), _np(s), _np(vt)


def singular_values(w: np.ndarray) -> np.ndarray:
    return _np(_fc().kernel_singular_values(np.asarray(w, dtype=np.float64)))


def distill_loss_grad(s: np.ndarray, p: np.ndarray, yb: np.ndarray | None, T: float, alpha: float,
                      kind: str) -> tuple[float, np.ndarray]:
    """Twin of ``compression.distill`` kernel ``distill_loss_grad``; batch-first ``(B, K)`` arrays are Julia's
    ``(K, B)`` logits with the dims reversed (``.T``, no copy), labels go 1-based."""
    value, grad = _fc().kernel_distill_loss_grad(s.T, p.T, None if yb is None else np.asarray(yb) + 1, float(T),
                                                 float(alpha), str(kind))
    return float(value), _np(grad, s.dtype).T


# optimiser object -> its Julia training session (the rebuilt Flux model and the Optimisers.jl state), so that
# the optimiser's moments persist across steps and `fit` calls as the numpy optimiser's do; freed with it
_SESSIONS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def train_step(step: Any, xb: np.ndarray, yb: np.ndarray, rng: Any) -> tuple[np.ndarray, float]:
    """Twin of ``train.step`` kernel ``train_step``: Flux rebuilds the model from ``step.arch`` (once per
    session), takes ``step.arrays`` by Flux path (same shapes on both sides), runs ``Flux.withgradient`` and
    ``Optimisers.update!``; the new arrays are copied back into the Python layers. Data goes with the dims
    reversed (``.T``: Flux's features x batch), labels 1-based. Dropout draws from Julia's RNG, not ``rng``."""
    rule = step.rule
    if rule is None:
        raise ValueError(f"fit: the julia backend trains with pfc.Adam or pfc.SGD only; got {step.opt!r} "
                         "(pfc.set_backend('numpy') for other optimisers)")
    if step.loss_name is None:
        raise ValueError(f"fit: the julia backend trains with the named losses of pfc.losses.NAMES only; got "
                         f"{step.loss!r}")
    arrays = step.arrays
    if any(a.dtype != np.float32 for a in arrays.values()) or xb.dtype != np.float32:
        raise ValueError("fit: the julia backend trains float32 models only (Flux's default eltype); "
                         "model.astype(np.float32) or pfc.set_backend('numpy')")
    target = np.asarray(yb) + 1 if yb.dtype.kind in "iu" else yb.T
    session, value, out, new = _fc().kernel_train_step(_SESSIONS.get(step.opt), step.arch, tuple(arrays),
                                                      tuple(arrays.values()), xb.T, target, step.loss_name, rule)
    _SESSIONS[step.opt] = session
    for a, b in zip(arrays.values(), new):
        np.copyto(a, _np(b))
    return np.array(_np(out).T), float(value)


KERNELS: dict[str, Callable[..., Any]] = {
    "magnitude_prune": magnitude_prune, "nm_mask": nm_mask, "select_units": select_units,
    "quantize_weight": quantize_weight, "dequantize_weight": dequantize_weight, "kmeans_1d": kmeans_1d,
    "svd": svd, "singular_values": singular_values, "distill_loss_grad": distill_loss_grad,
    "train_step": train_step,
}
