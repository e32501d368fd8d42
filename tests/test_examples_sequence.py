"""The sequence-model examples (LSTM, GRU on sequential Fashion-MNIST) run end to end with small settings and
print every step's measurement."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMMON = [r"trained 1 epoch\(s\) on 2,000 images in \d+ s: test accuracy \d+\.\d+%",
          r"ONNX fp32 \((LSTM|GRU) op\): ORT vs NumPy max relative \|diff\| \S+ \(<= 1e-5: True\)",
          r"fp32 op\s+\d+\.\d+%\s+\d+\.\d+ms\s+\d+\.\d+ms\s+\d+\.\d+ms\s+\d+\.\d+ms",
          r"fp32 unrolled\s+\d+\.\d+%",
          r"int8 pfc\s+\d+\.\d+%\s+\d+\.\d+ms.*DynamicQuantizeLinear, MatMulInteger",
          r"int8 pfc: test accuracy \d+\.\d+% in onnxruntime \(\d+\.\d+% simulated by pfc.predict\)",
          r"JLD2 round trip: architecture True, weights bit-exact True"]
EXPECT = {
    "lstm_fashion_mnist.py": [r"Chain\(LSTM\(28 => 32\), flatten, Dense\(896 => 10\)\), 41,738 -> 16,778",
                                 r"int8 ORT\s+\d+\.\d+%.*DynamicQuantizeLSTM"],
    "gru_fashion_mnist.py": [r"Chain\(GRU\(28 => 32\), flatten, Dense\(896 => 10\)\), 35,786 -> 14,826",
                             r"(?m)int8 ORT\s+\d+\.\d+%.*ms  DynamicQuantizeLinear, MatMulInteger$"],
}


@pytest.mark.parametrize("script", sorted(EXPECT))
def test_sequence_example_small(script, tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import pyflux_compress as pfc
        pfc.datasets.load("fashion-mnist")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST not installed")
    env = {**os.environ, "PYFLUX_EXAMPLE_FAST": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, str(EXAMPLES / script), "--epochs", "1", "--out", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for pattern in COMMON + EXPECT[script]:
        assert re.search(pattern, r.stdout), f"{script}: missing {pattern!r} in\n{r.stdout}"
