"""Small scikit-learn-style argument checks shared by every module.

Each helper either returns the (normalised) value or raises ``ValueError`` naming the argument and what was
allowed, so public functions can validate everything up front in a few readable lines::

    bits = check_in("bits", bits, (2, 4, 8))
    amount = check_fraction("amount", amount, 0.0, 1.0, inclusive=(True, False))
    X = check_array("X", X, ndim=(2, 4), dtype=np.float32)
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "env_int",
    "check_in",
    "check_fraction",
    "check_int",
    "check_positive",
    "check_bool",
    "check_tuple",
    "check_array",
    "check_finite_array",
    "check_rng",
]


def _fmt(values: Iterable[Any]) -> str:
    return ", ".join(repr(v) for v in values)


def check_in(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; else ``ValueError`` listing the allowed values.

    Strings are compared case-sensitively; booleans never match the integers 0/1 (``True in (1, 2)`` would).
    """
    allowed = tuple(allowed)
    for a in allowed:
        if type(a) is bool or type(value) is bool:
            if a is value:
                return value
        elif isinstance(a, str) != isinstance(value, str):
            continue
        else:
            try:
                if a == value:
                    return value
            except Exception:  # pragma: no cover - exotic __eq__ (e.g. arrays)
                continue
    raise ValueError(f"{name} must be one of {_fmt(allowed)}; got {value!r}")


def check_fraction(name: str, value: Any, lo: float = 0.0, hi: float = 1.0,
                   inclusive: tuple[bool, bool] = (True, True)) -> float:
    """Return ``float(value)`` if ``lo <= value <= hi`` (each end open or closed per ``inclusive``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number in {_interval(lo, hi, inclusive)}; got {value!r}")
    v = float(value)
    lo_ok = v >= lo if inclusive[0] else v > lo
    hi_ok = v <= hi if inclusive[1] else v < hi
    if not (lo_ok and hi_ok) or np.isnan(v):
        raise ValueError(f"{name} must be in {_interval(lo, hi, inclusive)}; got {value!r}")
    return v


def _interval(lo: float, hi: float, inclusive: tuple[bool, bool]) -> str:
    return f"{'[' if inclusive[0] else '('}{lo}, {hi}{']' if inclusive[1] else ')'}"


def check_int(name: str, value: Any, min: int | None = None, max: int | None = None) -> int:
    """Return ``int(value)`` for an integer (numpy integers too, not bool/float) within ``[min, max]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    v = int(value)
    if min is not None and v < min:
        raise ValueError(f"{name} must be >= {min}; got {v}")
    if max is not None and v > max:
        raise ValueError(f"{name} must be <= {max}; got {v}")
    return v


def env_int(name: str, min: int = 0) -> int | None:
    """The integer in environment variable ``name`` (None when unset or blank); a ValueError naming the
    variable when it is not an integer >= ``min``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = min - 1
    if value < min:
        raise ValueError(f"environment variable {name} must be an integer >= {min}; got {text!r}")
    return value


def check_positive(name: str, value: Any, strict: bool = True) -> float:
    """Return ``float(value)`` if it is a real number > 0 (``>= 0`` with ``strict=False``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or np.isnan(float(value)):
        raise ValueError(f"{name} must be a {'positive' if strict else 'non-negative'} number; got {value!r}")
    v = float(value)
    if v < 0 or (strict and v == 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}; got {value!r}")
    return v


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool (``np.bool_`` accepted)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False; got {value!r}")


def check_tuple(name: str, value: Any, n: int, min: int | None = None) -> tuple[int, ...]:
    """Expand an int to an ``n``-tuple, or check an ``n``-tuple of ints (each ``>= min`` if given).

    Mirrors Flux's ``expand(Val(n), x)``: ``stride=2`` means ``(2, 2)`` for a 2-D convolution.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        items: Sequence[Any] = (value,) * n
    elif isinstance(value, (tuple, list)) and len(value) == n:
        items = value
    else:
        raise ValueError(f"{name} must be an integer or a tuple of {n} integers; got {value!r}")
    out = tuple(check_int(f"{name}[{i}]", v, min=min) for i, v in enumerate(items))
    return out


def check_array(name: str, x: Any, ndim: int | Sequence[int] | None = None,
                shape: Sequence[int | None] | None = None, dtype: Any = None,
                finite: bool = False) -> np.ndarray:
    """Convert ``x`` to an ndarray (``dtype`` if given) and check its rank / shape.

    ``ndim`` may be an int or a sequence of allowed ranks; ``shape`` may contain ``None`` wildcards.
    Non-numeric input raises ``ValueError`` naming ``name`` instead of a numpy traceback.
    """
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array; got {type(x).__name__} ({err})") from None
    if arr.dtype.kind not in "fiub":  # strings, Python objects, complex, datetimes
        raise ValueError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, numbers.Integral) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions; "
                             f"got shape {arr.shape}")
    if shape is not None:
        shape = tuple(shape)
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}; got {arr.shape}")
    if finite and arr.dtype.kind in "fc":
        check_finite_array(name, arr)
    return arr


def check_finite_array(name: str, arr: np.ndarray) -> None:
    """``ValueError`` naming the first sample (index on axis 0) of ``arr`` that holds NaN or Inf.

    Fast path: one reduction over the whole array; only a failing array is searched for the culprit.
    """
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(arr.sum()) or np.isfinite(arr).all():  # the sum may overflow on finite data
            return
    if arr.ndim == 0:
        raise ValueError(f"{name} is {arr.item()!r}; expected a finite number")
    bad_rows = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    i = int(np.argmax(bad_rows))
    row = arr[i].reshape(-1)
    j = int(np.argmax(~np.isfinite(row)))
    where = f"{name}[{i}]" if arr.ndim == 1 else f"sample {i} ({name}[{i}], flat element {j})"
    raise ValueError(f"{name} contains NaN or Inf: first at {where} = {row[j].item()!r}; "
                     f"{int(bad_rows.sum())} of {len(arr)} samples are not finite")


def check_rng(seed: Any = None, rng: Any = None, name: str = "rng") -> np.random.Generator:
    """Return a ``numpy.random.Generator``: ``rng`` if given, else one seeded with ``seed``.

    Passing both is an error (which one should win is ambiguous).
    """
    if rng is not None and seed is not None:
        raise ValueError(f"give either seed or {name}, not both")
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"{name} must be a numpy.random.Generator; got {type(rng).__name__}")
        return rng
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an integer or None; got {seed!r}")
    return np.random.default_rng(seed)
