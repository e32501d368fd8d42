"""examples/vit_fashion_mnist.py runs end to end with small settings; the numbers it prints hold."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "vit_fashion_mnist.py"


def test_vit_example_small(tmp_path):
    pytest.importorskip("onnxruntime")
    import pyflux_compress as pfc
    try:
        pfc.datasets.load("fashion-mnist")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST not installed")
    env = {**os.environ, "PYFLUX_EXAMPLE_FAST": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--dim", "32", "--heads", "4", "--out", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = r.stdout
    acc = float(re.search(r"trained 1 epoch\(s\) on 2,000 images in \d+ s: test accuracy (\d+\.\d+)%", out)[1])
    assert acc > 40                                       # 10 classes: chance is 10%
    assert re.search(r"ONNX fp32: onnxruntime vs NumPy max relative \|diff\| \S+ \(<= 1e-5: True\)", out), out
    m = re.search(r"whole heads pruned 4 -> 2 per block: ([\d,]+) -> ([\d,]+) bytes", out)
    assert m and int(m[2].replace(",", "")) < int(m[1].replace(",", "")), out
    assert re.search(r"integer ops \['MatMulInteger'\]", out), out
    assert "JLD2 round trip: architecture True, weights bit-exact True" in out
