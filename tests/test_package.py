"""The package surface: every public name resolves, and ``import pyflux_compress`` stays cheap."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

import pyflux_compress as pfc

HEAVY = ("juliacall", "juliapkg", "onnx", "onnxruntime", "torch", "h5py", "scipy", "sklearn", "matplotlib")


@pytest.mark.parametrize("name", pfc.__all__)
def test_every_public_name_resolves(name):
    assert getattr(pfc, name) is not None
    assert name in dir(pfc)


def test_unknown_attribute_is_a_clear_error():
    with pytest.raises(AttributeError, match="no attribute 'Dens'"):
        pfc.Dens  # noqa: B018


def test_import_is_cheap_and_imports_no_heavy_dependency():
    code = ("import sys, pyflux_compress; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"import pyflux_compress imported {out.stdout.strip()}"
    # -X importtime: "import time: self [us] | cumulative [us] | module"; the package's own line is cumulative
    own = [line for line in out.stderr.splitlines() if re.search(r"\|\s*pyflux_compress$", line)]
    assert own, out.stderr[-2000:]
    cumulative_us = int(own[-1].split("|")[1])
    assert cumulative_us < 300_000, f"import pyflux_compress took {cumulative_us / 1e6:.3f} s (limit 0.3 s)"
