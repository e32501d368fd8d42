"""Predictor: the article's deployment step (load -> predict) through onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from pyflux_compress.deploy.predictor import Predictor  # noqa: E402
from pyflux_compress.io.onnx import export_onnx  # noqa: E402
from pyflux_compress.model import activations as A  # noqa: E402
from pyflux_compress.model import layers as L  # noqa: E402
from pyflux_compress.model.chain import Chain  # noqa: E402


def mlp():
    return Chain(L.Dense(784, 128, A.relu, seed=0), L.Dense(128, 64, A.relu, seed=1), L.Dense(64, 10, seed=2))


def cnn():
    return Chain(L.Conv((3, 3), (1, 8), A.relu, seed=0), L.MaxPool((2, 2)), L.Conv((3, 3), (8, 16), A.relu, seed=1),
                 L.MaxPool((2, 2)), L.flatten, L.Dense(400, 10, seed=2))


@pytest.fixture(scope="module")
def x_flat(fmnist):
    return np.ascontiguousarray(fmnist[2][:256].reshape(256, -1))


def test_predict_from_onnx_path_and_model_agree(tmp_path, x_flat):
    model = mlp()
    path = export_onnx(model, tmp_path / "m.onnx")
    for source in (path, model):
        pred = Predictor(source, threads=1)
        y = pred.predict(x_flat)
        assert y.shape == (256, 10) and y.dtype == np.float32
        np.testing.assert_allclose(y, model(x_flat), rtol=1e-5, atol=1e-5)
    assert "784" in repr(pred)


def test_single_sample_like_the_article(x_flat):
    """predict(model, rand(784)): a 1-D sample in, a 1-D output out."""
    model = mlp()
    pred = Predictor(model)
    sample = np.random.default_rng(0).random(784)
    y = pred.predict(sample)
    assert y.shape == (10,)
    np.testing.assert_allclose(y, model(sample[None].astype(np.float32))[0], rtol=1e-5, atol=1e-5)


def test_cnn_predictor(fmnist):
    model = cnn()
    x = fmnist[2][:64]
    pred = Predictor(model)
    np.testing.assert_allclose(pred.predict(x), model(x), rtol=1e-5, atol=1e-5)
    assert pred.predict(x[0]).shape == (10,)  # one (C, H, W) sample


def test_from_jld2_checkpoint(tmp_path, x_flat):
    checkpoint = pytest.importorskip("pyflux_compress.io.checkpoint")
    model = mlp()
    path = tmp_path / "model.jld2"
    checkpoint.save(path, model)
    pred = Predictor(path)
    np.testing.assert_allclose(pred.predict(x_flat), model(x_flat), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, given", [(np.zeros((3, 785)), "(3, 785)"), (np.zeros((2, 28, 28)), "(2, 28, 28)"),
                                        (np.zeros(10), "(10,)")])
def test_wrong_shape_names_expected_and_given(bad, given):
    pred = Predictor(mlp())
    with pytest.raises(ValueError) as err:
        pred.predict(bad)
    assert "(N, 784)" in str(err.value) and given in str(err.value)


def test_non_numeric_input():
    with pytest.raises(ValueError, match="numeric"):
        Predictor(mlp()).predict([["a", "b"]])


def test_missing_and_corrupt_onnx(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Predictor(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        Predictor(bad)
    with pytest.raises(ValueError, match=".onnx or .jld2"):
        Predictor(tmp_path / "model.txt")


def test_bad_arguments():
    with pytest.raises(ValueError, match="threads"):
        Predictor(mlp(), threads=0)
    pred = Predictor(mlp())
    with pytest.raises(ValueError, match="batch_sizes"):
        pred.benchmark(batch_sizes=(0, 4))
    with pytest.raises(ValueError, match="seconds"):
        pred.benchmark(seconds=-1)


def test_benchmark_reports_latency_and_throughput():
    pred = Predictor(mlp(), threads=1)
    res = pred.benchmark(batch_sizes=(1, 32), seconds=0.05)
    assert [r.batch_size for r in res.rows] == [1, 32]
    for r in res.rows:
        assert 0 < r.p50_ms <= r.p95_ms and r.calls >= 5
        assert r.throughput == pytest.approx(r.batch_size / (r.mean_ms / 1e3), rel=1e-9)  # samples per second
        # no timed assertion: the time the calls took depends on the machine's load (benchmarks/ measure it)
    assert "p50 ms" in repr(res) and "samples/s" in repr(res)
    assert res[32].batch_size == 32


def test_benchmark_cnn_needs_concrete_shape():
    pred = Predictor(cnn())
    with pytest.raises(ValueError, match="input_shape"):
        pred.benchmark(batch_sizes=(1,), seconds=0.01)
    res = pred.benchmark(batch_sizes=(2,), seconds=0.01, input_shape=(1, 28, 28))
    assert res[2].calls >= 5
