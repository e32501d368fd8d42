"""export_onnx(format="auto") / choose_format: every candidate measured, the choice within tolerance, the
measurements stored in the file. Latency *values* are not asserted (benchmarks/bench_onnx_auto.py does that)."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import pyflux_compress as pfc  # noqa: E402
from pyflux_compress.io.onnx import FormatChoice, choose_format, export_onnx  # noqa: E402

CNN = "Chain(Conv((3, 3), 1 => 4, relu), MaxPool((2, 2)), flatten, Dense(676 => 10))"


@pytest.fixture(scope="module")
def cnn_and_data(fmnist):
    X = np.ascontiguousarray(fmnist[0][:600])
    model = pfc.parse(CNN, seed=0)
    pfc.fit(model, X, fmnist[1][:600], epochs=1, batchsize=64, progress=False, threads=1)
    return model, np.ascontiguousarray(fmnist[2][:300])


def test_auto_measures_every_candidate_and_picks_the_fastest_eligible(cnn_and_data):
    model, data = cnn_and_data
    c = choose_format(model, data, batch_size=32, threads=1, tolerance=0.05, seconds=0.5)
    assert isinstance(c, FormatChoice)
    assert set(c.latency_ms) == {"fp32", "dynamic", "qdq", "dynamic (Dense only)", "qdq (Dense only)"}
    assert all(v > 0 for v in c.latency_ms.values())
    assert c.error["fp32"] == 0.0  # onnxruntime fp32 vs the NumPy forward: same predictions
    eligible = {k: v for k, v in c.latency_ms.items() if k not in c.rejected}
    fastest = min(eligible, key=eligible.get)
    # the fastest eligible form, unless it is within the noise margin of exact fp32
    assert c.label == fastest or (c.label == "fp32" and eligible[fastest] > 0.95 * c.latency_ms["fp32"])
    assert c.format == {"fp32": "fp32"}.get(c.label, c.label.split()[0])
    assert c.label in c.table() and "**chosen**" in c.table()


def test_zero_tolerance_rejects_forms_that_change_predictions(cnn_and_data):
    model, data = cnn_and_data
    c = choose_format(model, data, batch_size=8, threads=1, tolerance=0.0, seconds=0.3)
    for label, err in c.error.items():
        assert (label in c.rejected) == (err > 0), label
    assert c.error[c.label] == 0.0


def test_export_auto_writes_the_choice_and_its_measurements(cnn_and_data, tmp_path):
    model, data = cnn_and_data
    path = export_onnx(model, tmp_path / "m.onnx", format="auto", data=data, batch_size=16, threads=1)
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    auto = json.loads(props["pyflux_compress.auto"])
    assert props["pyflux_compress.format"] == auto["format"]
    assert set(auto["latency_ms"]) >= {"fp32", "dynamic", "qdq"} and auto["batch_size"] == 16
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": data[:50]})[0]
    assert np.mean(out.argmax(1) == model(data[:50]).argmax(1)) >= 0.95


def test_quantized_chain_is_not_requantized(cnn_and_data):
    model, data = cnn_and_data
    q = pfc.quantize(model, 8, granularity="per_channel")  # no calibration: no qdq candidate
    c = choose_format(q, data, batch_size=4, threads=1, tolerance=1.0, seconds=0.2)
    assert set(c.latency_ms) == {"fp32", "dynamic"}
    assert c.model is q


def test_auto_errors_name_the_argument(cnn_and_data):
    model, data = cnn_and_data
    with pytest.raises(ValueError, match="needs data="):
        export_onnx(model, "unused.onnx", format="auto")
    with pytest.raises(ValueError, match="tolerance"):
        choose_format(model, data, tolerance=2)
    with pytest.raises(ValueError, match="batch_size"):
        choose_format(model, data, batch_size=0)
    with pytest.raises(ValueError, match=r"format: expected one of .*'auto'"):
        export_onnx(model, "unused.onnx", format="fastest")
