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
import inspect
import os
import sys
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

BACKENDS = ("numpy", "julia", "auto")
ENV_VAR = "PYFLUX_COMPRESS_BACKEND"

_active: str | None = None  # resolved name: "numpy" or "julia"
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


def dispatch(op: str) -> Callable[[F], F]:
    """Route a public operation to the active backend.

    The decorated function is the numpy implementation. When the julia backend is active, arguments are first
    checked by ``validate_<op>(*args, **kwargs)`` from the decorated function's module when it defines one
    (so bad input raises the same ValueError on both backends), then the call goes to
    ``pyflux_compress.backends.julia.<op>`` with the same arguments.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if backend() == "julia":
                validate = getattr(sys.modules.get(func.__module__), f"validate_{op}", None)
                if callable(validate):
                    _run_validator(validate, func, args, kwargs)
                julia = importlib.import_module(".julia", __name__)
                return getattr(julia, op)(*args, **kwargs)
            return func(*args, **kwargs)

        wrapper.__wrapped_numpy__ = func  # type: ignore[attr-defined]  # parity tests call it directly
        wrapper.__dispatch_op__ = op  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _run_validator(validate: Callable[..., Any], func: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Call ``validate`` with the public call's arguments, by name, defaults filled in from ``func``.

    Validators take the public function's parameter names (some take all of them positionally, without
    defaults), so the call is bound to ``func``'s signature first; a call ``func`` itself would reject raises
    the same TypeError here.
    """
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    params = inspect.signature(validate).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    validate(**{k: v for k, v in bound.arguments.items() if accepts_any or k in params})


def _reset() -> None:
    """Forget the resolved backend (tests use it to re-read PYFLUX_COMPRESS_BACKEND)."""
    global _active, _reason
    _active, _reason = None, ""
