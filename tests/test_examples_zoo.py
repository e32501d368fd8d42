"""The layer-zoo reference examples (ResNet, MobileNet-style, autoencoder) run end to end with small
settings and print every step's measurement."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMMON = [r"int8 \(per-channel weights, calibrated activations\): ",
          r"80% unstructured: weight sparsity 0\.800",
          r"ONNX fp32: ORT vs NumPy max relative \|diff\| \S+ \(<= 1e-5: True\)",
          r"JLD2 round trip: architecture True, weights bit-exact True"]
EXPECT = {
    "resnet_fashion_mnist.py": [r"trained 1 epoch\(s\) in \d+ s: test accuracy \d+\.\d+%",
                                r"50% structured: 28,458 -> 7,322 parameters",
                                # inner block channels and the residual stream (coupled across +) halve
                                r"SkipConnection\(Chain\(Conv\(\(3, 3\), 8 => 8, pad=1\), BatchNorm\(8, relu\), "
                                r"Conv\(\(3, 3\), 8 => 8, pad=1\), BatchNorm\(8\)\), \+\)"],
    # the depthwise filters follow the pointwise channels kept before them
    "mobilenet_fashion_mnist.py": [r"test accuracy \d+\.\d+%", r"Conv\(\(3, 3\), 16 => 16, pad=1, groups=16\)",
                                   r"Conv\(\(1, 1\), 16 => 32\)", r"Conv\(\(1, 1\), 32 => 64\)"],
    "autoencoder_fashion_mnist.py": [r"reconstruction MSE 0\.\d+", r"ConvTranspose\(\(4, 4\), 4 => 8, relu"],
}


@pytest.mark.parametrize("script", sorted(EXPECT))
def test_zoo_example_small(script, tmp_path):
    env = {**os.environ, "PYFLUX_EXAMPLE_FAST": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, str(EXAMPLES / script), "--epochs", "1", "--out", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for pattern in COMMON + EXPECT[script]:
        assert re.search(pattern, r.stdout), f"{script}: missing {pattern!r} in\n{r.stdout}"
