"""The ResNet reference example runs end to end with small settings and prints every step's measurement."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "resnet_fashion_mnist.py"


def test_resnet_example_small(tmp_path):
    env = {**os.environ, "PYFLUX_EXAMPLE_FAST": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "1", "--out", str(tmp_path)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = r.stdout
    for pattern in [r"trained 1 epoch\(s\) in \d+ s: test accuracy \d+\.\d+%",
                    r"int8 \(per-channel weights, calibrated activations\): test accuracy \d+\.\d+%",
                    r"50% structured: 28,458 -> \d[\d,]+ parameters",
                    r"SkipConnection\(Chain\(Conv\(\(3, 3\), 16 => 8, pad=1\), BatchNorm\(8, relu\), "
                    r"Conv\(\(3, 3\), 8 => 16, pad=1\)",                       # inner channels halve, stream kept
                    r"80% unstructured: weight sparsity 0\.800",
                    r"ONNX fp32: ORT vs NumPy max relative \|diff\| \S+ \(<= 1e-5: True\)",
                    r"JLD2 round trip: architecture True, weights bit-exact True"]:
        assert re.search(pattern, out), f"missing {pattern!r} in\n{out}"
