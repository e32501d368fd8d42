"""The backend seam: which engine runs the compression operations.

Two backends implement the same public API:

* ``"numpy"`` — the embedded reference implementation (always available);
* ``"julia"`` — the bundled Julia package FluxCompress reached through juliacall
  (``pyflux_compress.backends.julia``), available only where a Julia runtime is already installed.

``"auto"`` picks julia only when a Julia executable is already installed, and never downloads anything.
The choice comes from :func:`set_backend` or the environment variable ``PYFLUX_COMPRESS_BACKEND``.

Public compression functions are decorated with :func:`dispatch`: under the numpy backend the decorated
function runs; under the julia backend the function of the same name in ``backends/julia.py`` runs.
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
_reason: str = ""


def _detect() -> Any:
    # imported lazily: detection code lives with the julia bridge's helpers but never imports juliacall
    return importlib.import_module(".backends.detect", __package__)


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
    info = _detect().find_julia()
    if name == "julia":
        if not info.found:
            raise RuntimeError(_detect().missing_julia_message(info))
        _active, _reason = "julia", f"selected explicitly; Julia at {info.executable}"
        return _active
    # auto
    if info.found:
        _active, _reason = "julia", f"auto: Julia found at {info.executable} ({info.how})"
    else:
        _active, _reason = "numpy", "auto: no Julia runtime installed (" + "; ".join(info.looked) + ")"
    return _active


def backend() -> str:
    """Name of the active backend (``"numpy"`` or ``"julia"``); resolves the environment variable once."""
    global _active, _reason
    if _active is None:
        requested = os.environ.get(ENV_VAR, "numpy").strip() or "numpy"
        if requested.lower() not in BACKENDS:
            raise ValueError(f"environment variable {ENV_VAR} must be one of {BACKENDS}, got {requested!r}")
        set_backend(requested)
        _reason = f"{_reason} (from {ENV_VAR}={requested})" if ENV_VAR in os.environ else "default"
    return _active  # type: ignore[return-value]


def backend_info() -> dict[str, Any]:
    """What was found and why the active backend was chosen.

    Returns a dict with ``backend``, ``reason``, and ``julia`` (a dict: ``found``, ``executable``, ``how``,
    ``looked`` — the places checked, ``offline`` — whether PYTHON_JULIAPKG_OFFLINE is set).
    """
    name = backend()
    info = _detect().find_julia()
    return {"backend": name, "reason": _reason, "julia": info.as_dict()}


def dispatch(op: str) -> Callable[[F], F]:
    """Route a public operation to the active backend.

    The decorated function is the numpy implementation. When the julia backend is active, the call goes to
    ``pyflux_compress.backends.julia.<op>`` with the same arguments.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if backend() == "julia":
                julia = importlib.import_module(".backends.julia", __package__)
                return getattr(julia, op)(*args, **kwargs)
            return func(*args, **kwargs)

        wrapper.__wrapped_numpy__ = func  # type: ignore[attr-defined]  # parity tests call it directly
        return wrapper  # type: ignore[return-value]

    return decorate
