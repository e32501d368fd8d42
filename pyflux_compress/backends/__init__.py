"""The backend seam: which engine runs the compression operations.

Two backends implement the same public API:

* ``"numpy"`` — the embedded reference implementation (always available);
* ``"julia"`` — the bundled Julia package FluxCompress reached through juliacall
  (``pyflux_compress.backends.julia``), available only where a Julia runtime is already installed.

``"auto"`` picks julia only when a Julia executable is already installed, and never downloads anything.
The choice comes from :func:`set_backend` or the environment variable ``PYFLUX_COMPRESS_BACKEND``.

The seam is at the kernels (:func:`kernel`): only array-level work is dispatched — threshold/mask selection,
N:M masks, quantize/dequantize of an array, 1-D k-means, the SVD, structured-pruning unit selection, the
distillation loss gradient and the training step. The compression functions and ``fit`` themselves (argument
checks, model building, records, batching, masks) are Python and run the same on both backends.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

BACKENDS = ("numpy", "julia", "auto")
ENV_VAR = "PYFLUX_COMPRESS_BACKEND"

_active: str | None = None  # resolved name: "numpy" or "julia"
_KERNELS: dict[str, Callable[..., Any]] = {}
_reason: str = ""


def _detect() -> Any:
    # imported lazily: detection code lives with the julia bridge's helpers but never imports juliacall
    return importlib.import_module(".detect", __name__)


def set_backend(name: str) -> str:
    """Select the engine for compression operations.

    Parameters
    ----------
    name : {"numpy", "julia", "auto"}
        ``"auto"`` picks ``"julia"`` only when a Julia executable is already installed, else ``"numpy"``.

    Returns
    -------
    str
        The resolved backend name (``"numpy"`` or ``"julia"``).

    Raises
    ------
    ValueError
        For an unknown name.
    RuntimeError
        For ``"julia"`` when no Julia runtime is installed; the message says where it looked and how to
        install one.
    """
    global _active, _reason
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"set_backend: name must be one of {BACKENDS}, got {name!r}")
    name = name.lower()
    if name == "numpy":
        _active, _reason = "numpy", "selected explicitly"
        return _active
    detect = _detect()
    info = detect.find_julia()
    problem = _julia_problem(detect, info)
    if name == "julia":
        if problem is not None:
            raise RuntimeError(problem)
        _active, _reason = "julia", f"selected explicitly; Julia at {info.executable} ({info.how})"
        return _active
    # auto: julia only when everything it needs is already installed; never installs anything
    if problem is None:
        _active, _reason = "julia", f"auto: Julia found at {info.executable} ({info.how}) and juliacall installed"
    elif not info.found:
        _active, _reason = "numpy", "auto: no Julia runtime installed (" + "; ".join(info.looked) + ")"
    else:
        _active, _reason = "numpy", "auto: " + problem
    return _active


def _julia_problem(detect: Any, info: Any) -> str | None:
    """Why the julia backend cannot start here (None when it can); only file-system checks."""
    if not info.found:
        return detect.missing_julia_message(info)
    if not detect.juliacall_available():
        return (f"Julia was found at {info.executable} ({info.how}) but the Python package juliacall is not "
                "installed: `pip install juliacall` (it then installs FluxCompress and Flux into "
                f"{info.project} on first use).")
    if info.offline and not info.resolved:
        return (f"PYTHON_JULIAPKG_OFFLINE is set and the juliapkg project {info.project} was never resolved, "
                "so FluxCompress and Flux are not installed; unset PYTHON_JULIAPKG_OFFLINE once (with network) "
                "and call pfc.set_backend('julia') to install them.")
    return None


def backend() -> str:
    """Name of the active backend (``"numpy"`` or ``"julia"``); resolves the environment variable once."""
    global _active, _reason
    if _active is None:
        requested = os.environ.get(ENV_VAR, "numpy").strip() or "numpy"
        if requested.lower() not in BACKENDS:
            raise ValueError(f"environment variable {ENV_VAR} must be one of {BACKENDS}, got {requested!r}")
        set_backend(requested)
        _reason = (f"{_reason} (from {ENV_VAR}={requested})" if ENV_VAR in os.environ
                   else f"default (numpy; {ENV_VAR} unset)")
    return _active  # type: ignore[return-value]


def backend_info() -> dict[str, Any]:
    """What was found and why the active backend was chosen.

    Returns a dict with ``backend``, ``reason``, ``juliacall_installed`` (checked without importing it) and
    ``julia`` (a dict: ``found``, ``executable``, ``how``, ``looked`` — the places checked, ``offline`` —
    whether PYTHON_JULIAPKG_OFFLINE is set, ``project`` / ``resolved`` — the juliapkg project and whether it
    was installed before), and ``threads`` (``pfc.threads.info()``: the default thread count, why, and BLAS).
    """
    name = backend()
    detect = _detect()
    info = detect.find_julia()
    from .. import threads  # the numpy engine's thread policy and what it would choose now

    return {"backend": name, "reason": _reason, "juliacall_installed": detect.juliacall_available(),
            "julia": info.as_dict(), "threads": threads.info()}


def kernel(name: str) -> Callable[[F], F]:
    """Route one array-level kernel to the active backend.

    The decorated function is the numpy implementation of the kernel: it takes and returns arrays and plain
    numbers only (no layers, no models), except ``train_step``, whose ``Step`` also carries the model for the
    numpy step and gives the twin plain values (Flux syntax, arrays by path, loss name, optimiser rule). Under the julia backend the call goes to
    ``pyflux_compress.backends.julia.KERNELS[name]`` with the same arguments, which must return the same
    types. Everything around the kernels — argument validation, building models, records — is Python code that
    runs once for both backends, so results and records cannot differ by backend except through a kernel.
    """
    def decorate(func: F) -> F:
        old = _KERNELS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (func.__module__, func.__qualname__):
            raise ValueError(f"kernel {name!r} is registered twice ({old.__module__}.{old.__qualname__} and "
                             f"{func.__module__}.{func.__qualname__})")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if backend() == "julia":
                julia = importlib.import_module(".julia", __name__)
                return julia.KERNELS[name](*args, **kwargs)
            return func(*args, **kwargs)

        wrapper.__numpy_kernel__ = func  # type: ignore[attr-defined]  # parity tests call it directly
        wrapper.__kernel_name__ = name  # type: ignore[attr-defined]
        _KERNELS[name] = wrapper
        return wrapper  # type: ignore[return-value]

    return decorate


def kernels() -> dict[str, Callable[..., Any]]:
    """The registered kernels by name (each with ``__numpy_kernel__``, its numpy implementation)."""
    return dict(_KERNELS)


class NonFiniteArray(ValueError):
    """A kernel's input array ``index`` holds NaN or Inf (raised before anything is written)."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"array {index} contains NaN or Inf")


def _reset() -> None:
    """Forget the resolved backend (tests use it to re-read PYFLUX_COMPRESS_BACKEND)."""
    global _active, _reason
    _active, _reason = None, ""
