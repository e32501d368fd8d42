"""Find an installed Julia without importing juliacall, touching the network, or downloading anything."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JuliaInfo:
    found: bool
    executable: str | None = None
    how: str = ""
    looked: list[str] = field(default_factory=list)
    offline: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"found": self.found, "executable": self.executable, "how": self.how,
                "looked": list(self.looked), "offline": self.offline}


def find_julia() -> JuliaInfo:
    """Look for a Julia executable in the places juliapkg would use, in its order, without running it."""
    looked: list[str] = []
    offline = os.environ.get("PYTHON_JULIAPKG_OFFLINE", "").lower() in ("yes", "true", "1")
    exe = os.environ.get("PYTHON_JULIAPKG_EXE")
    looked.append(f"PYTHON_JULIAPKG_EXE={exe!r}" if exe else "PYTHON_JULIAPKG_EXE (unset)")
    if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
        return JuliaInfo(True, exe, "PYTHON_JULIAPKG_EXE", looked, offline)
    on_path = shutil.which("julia")
    looked.append(f"`julia` on PATH ({on_path or 'not found'})")
    if on_path:
        return JuliaInfo(True, on_path, "PATH", looked, offline)
    return JuliaInfo(False, None, "", looked, offline)


def missing_julia_message(info: JuliaInfo) -> str:
    return ("the julia backend needs an installed Julia runtime, and none was found. Looked at: "
            + "; ".join(info.looked)
            + ". Install Julia >= 1.10 (https://julialang.org/downloads/ or `juliaup`), then either put `julia` "
              "on PATH or set PYTHON_JULIAPKG_EXE to its path. pyflux-compress never downloads Julia itself; "
              "the numpy backend works without it: pfc.set_backend('numpy').")
