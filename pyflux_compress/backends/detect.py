"""Find an installed Julia without importing juliacall, running Julia, touching the network, or downloading.

The places are those juliapkg (the installer behind juliacall) would use, in its order
(JuliaPy/pyjuliapkg ``state.py`` / ``find_julia.py``):

1. ``PYTHON_JULIAPKG_EXE`` (or ``python -X juliapkg-exe=...``): an explicit executable;
2. an existing juliapkg install: the ``executable`` recorded in ``{project}/pyjuliapkg/meta.json`` by a
   previous ``juliapkg.resolve()``, or a Julia juliapkg downloaded into ``{project}/pyjuliapkg/install``;
   ``{project}`` is ``PYTHON_JULIAPKG_PROJECT``, else ``{venv or conda prefix}/julia_env``, else
   ``{depot}/environments/pyjuliapkg`` with ``{depot}`` the first entry of ``JULIA_DEPOT_PATH`` or ``~/.julia``;
3. a juliaup install listed in ``{depot}/juliaup/juliaup.json``;
4. ``julia`` on ``PATH``.

Everything here is a file-system look-up (a few ``stat`` calls and at most two small JSON reads), so it
takes milliseconds. ``PYTHON_JULIAPKG_OFFLINE=yes`` is reported; the bridge then forbids juliapkg from
resolving (installing packages) and needs a project resolved earlier.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

_EXT = ".exe" if os.name == "nt" else ""
# pyjuliapkg's boolean options take exactly "yes" or "no" (state.py: get_config_bool passes the options
# {"yes": True, "no": False} to get_config_opts, which raises for any other value): "true"/"1" are errors there.
_BOOL = {"yes": True, "no": False}


@dataclass
class JuliaInfo:
    """What :func:`find_julia` found.

    ``found``: a Julia executable exists; ``executable``: its path; ``how``: which rule found it;
    ``looked``: every place checked, in order, with what was there; ``offline``: PYTHON_JULIAPKG_OFFLINE;
    ``project``: the juliapkg project directory juliacall would use; ``resolved``: that project was
    resolved before (its ``meta.json`` exists), i.e. FluxCompress and Flux may already be installed.
    """

    found: bool
    executable: str | None = None
    how: str = ""
    looked: list[str] = field(default_factory=list)
    offline: bool = False
    project: str = ""
    resolved: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"found": self.found, "executable": self.executable, "how": self.how,
                "looked": list(self.looked), "offline": self.offline, "project": self.project,
                "resolved": self.resolved}


def _config(name: str) -> str | None:
    """juliapkg's configuration look-up: ``-X juliapkg-<name>`` first, then ``PYTHON_JULIAPKG_<NAME>``."""
    value = sys._xoptions.get("juliapkg-" + name.lower().replace("_", "-"))
    if isinstance(value, str):
        return value
    return os.environ.get("PYTHON_JULIAPKG_" + name.upper())


def offline_requested() -> bool:
    """True when PYTHON_JULIAPKG_OFFLINE (or ``-X juliapkg-offline``) is ``yes``; False when unset or ``no``.

    Raises ValueError naming the variable for any other value, as juliapkg itself would when juliacall starts.
    """
    value = _config("offline")
    if value is None:
        return False
    if value in _BOOL:
        return _BOOL[value]
    raise ValueError(f"PYTHON_JULIAPKG_OFFLINE must be 'yes' or 'no' (juliapkg accepts nothing else), got {value!r}")


def julia_depot() -> str:
    """First entry of JULIA_DEPOT_PATH, else ``~/.julia`` (juliapkg's rule)."""
    depot_path = os.environ.get("JULIA_DEPOT_PATH")
    if depot_path:
        return os.path.abspath(depot_path.split(";" if os.name == "nt" else ":")[0])
    return os.path.abspath(os.path.join(os.path.expanduser("~"), ".julia"))


def juliapkg_project() -> str:
    """The Julia project directory juliapkg/juliacall would use in this Python environment."""
    project = _config("project")
    if project:
        return project
    prefix = sys.prefix if sys.prefix != sys.base_prefix else os.environ.get("CONDA_PREFIX")
    if prefix:
        return os.path.abspath(os.path.join(prefix, "julia_env"))
    return os.path.join(julia_depot(), "environments", "pyjuliapkg")


def _is_exe(path: str | None) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)  # type: ignore[arg-type]


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fp:
            data = json.load(fp)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _juliaup_executables(depot: str) -> list[str]:
    """Executables recorded by juliaup (newest entries last in the file order; we keep that order)."""
    meta = _read_json(os.path.join(depot, "juliaup", "juliaup.json")) or {}
    exes = []
    for info in (meta.get("InstalledVersions") or {}).values():
        if isinstance(info, dict) and isinstance(info.get("Path"), str):
            exes.append(os.path.abspath(os.path.join(depot, "juliaup", info["Path"], "bin", "julia" + _EXT)))
    return exes


def find_julia() -> JuliaInfo:
    """Look for an installed Julia in juliapkg's order without running it (see the module docstring).

    Returns
    -------
    JuliaInfo
        ``found`` is False when nothing is installed; ``looked`` then lists every place checked.
    """
    looked: list[str] = []
    offline = offline_requested()
    project = juliapkg_project()
    meta_path = os.path.join(project, "pyjuliapkg", "meta.json")
    resolved = os.path.isfile(meta_path)

    def hit(exe: str, how: str) -> JuliaInfo:
        return JuliaInfo(True, exe, how, looked, offline, project, resolved)

    exe = _config("exe")
    looked.append(f"PYTHON_JULIAPKG_EXE={exe!r}" if exe else "PYTHON_JULIAPKG_EXE (unset)")
    if exe:
        if _is_exe(exe):
            return hit(exe, "PYTHON_JULIAPKG_EXE")
        looked[-1] += " (not an executable file)"

    meta = _read_json(meta_path) if resolved else None
    recorded = meta.get("executable") if meta else None
    looked.append(f"juliapkg meta {meta_path} ({'executable ' + repr(recorded) if recorded else 'absent'})")
    if isinstance(recorded, str) and _is_exe(recorded):
        return hit(recorded, "existing juliapkg install (meta.json)")

    installed = os.path.join(project, "pyjuliapkg", "install", "bin", "julia" + _EXT)
    looked.append(f"juliapkg install {installed} ({'present' if _is_exe(installed) else 'absent'})")
    if _is_exe(installed):
        return hit(installed, "existing juliapkg install (downloaded Julia)")

    depot = julia_depot()
    ju = [e for e in _juliaup_executables(depot) if _is_exe(e)]
    looked.append(f"juliaup installs in {os.path.join(depot, 'juliaup')} ({ju[-1] if ju else 'none'})")
    if ju:
        return hit(ju[-1], "juliaup")

    on_path = shutil.which("julia")
    looked.append(f"`julia` on PATH ({on_path or 'not found'})")
    if on_path:
        return hit(on_path, "PATH")
    return JuliaInfo(False, None, "", looked, offline, project, resolved)


def missing_julia_message(info: JuliaInfo) -> str:
    """The error text for ``set_backend("julia")`` when no Julia is installed: where we looked and what to do."""
    return ("the julia backend needs an installed Julia runtime, and none was found. Looked at: "
            + "; ".join(info.looked)
            + ". Install Julia >= 1.10 (https://julialang.org/downloads/ or `juliaup add 1.10`), then either put "
              "`julia` on PATH or set PYTHON_JULIAPKG_EXE to its path, and `pip install juliacall`. "
              "pyflux-compress never downloads Julia itself; the numpy backend works without it: "
              "pfc.set_backend('numpy').")


def juliacall_available() -> bool:
    """Whether the ``juliacall`` package is installed, checked without importing it (importing starts Julia)."""
    import importlib.util

    return importlib.util.find_spec("juliacall") is not None
