"""The Julia project ships inside the installed package (issue 14 #3).

pyjuliapkg resolves a package's ``path`` in ``juliapkg.json`` relative to the folder of that json file
(JuliaPy/pyjuliapkg ``src/juliapkg/deps.py``, ``find_requirements``). ``pyflux_compress/juliapkg.json`` used to
say ``"../julia"``: after a non-editable install that is ``site-packages/julia``, which no wheel contains.
Here the wheel is built (offline: no build isolation) and its file list checked; ``.ci/check-wheel.sh`` goes
further in CI (fresh venv outside the clone).
"""
from __future__ import annotations

import json
import posixpath
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "pyflux_compress", src / "pyflux_compress",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel offline here: {done.stderr.strip()[-300:]}")
    return zipfile.ZipFile(next(out.glob("pyflux_compress-*.whl")))


def test_juliapkg_path_resolves_inside_the_wheel(wheel):
    names = set(wheel.namelist())
    spec = json.loads(wheel.read("pyflux_compress/juliapkg.json"))["packages"]["FluxCompress"]
    project = posixpath.normpath(posixpath.join("pyflux_compress", spec["path"]))
    assert project.startswith("pyflux_compress/"), f"juliapkg path {spec['path']!r} leaves the package"
    for needed in ("Project.toml", "src/FluxCompress.jl", "src/kernels.jl", "test/runtests.jl",
                   "test/fixtures/kernels.txt"):
        assert f"{project}/{needed}" in names, needed
    sources = sorted(p.name for p in (ROOT / "julia" / "src").glob("*.jl"))
    assert sorted(posixpath.basename(n) for n in names if n.startswith(f"{project}/src/")) == sources


def test_top_level_julia_is_the_packaged_folder():
    """One copy of the Julia sources: julia/ at the top is a pointer to pyflux_compress/julia."""
    assert (ROOT / "julia").resolve() == (ROOT / "pyflux_compress" / "julia").resolve()
