"""BatchNorm folding (compression/fold.py) and the integer kernels onnxruntime runs for a folded, quantized CNN."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.compression.fold import fold_batchnorm

CNN_BN = ("Chain(Conv((3, 3), 2 => 6), BatchNorm(6, relu), MaxPool((2, 2)), CrossCor((3, 3), 6 => 8), "
          "BatchNorm(8), relu, MaxPool((2, 2)), flatten, Dense(32 => 12), BatchNorm(12, relu), Dense(12 => 5))")


def randomise_bn(model, rng):
    for _, layer in model.walk():
        if isinstance(layer, pfc.BatchNorm):
            c = layer.chs
            layer.mu = rng.normal(size=c).astype(np.float32)
            layer.sigma2 = rng.uniform(0.2, 3, size=c).astype(np.float32)
            layer.gamma = rng.uniform(0.3, 2, size=c).astype(np.float32)
            layer.beta = rng.normal(size=c).astype(np.float32)
    return model


@pytest.fixture
def cnn(rng):
    return randomise_bn(pfc.parse(CNN_BN, seed=0), rng)


def test_fold_is_exact_to_1e5(cnn, rng):
    X = rng.standard_normal((16, 2, 14, 14)).astype(np.float32)
    f = fold_batchnorm(cnn)
    assert str(f) == ("Chain(Conv((3, 3), 2 => 6, relu), MaxPool((2, 2)), CrossCor((3, 3), 6 => 8, relu), "
                      "MaxPool((2, 2)), flatten, Dense(32 => 12, relu), Dense(12 => 5))")
    ref = cnn(X)
    assert np.abs(f(X) - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    assert list(f.records[-1]["per_layer"]) == ["layers[2]", "layers[5]", "layers[6]", "layers[10]"]
    assert str(cnn).startswith("Chain(Conv((3, 3), 2 => 6), BatchNorm")  # input untouched


def test_fold_leaves_what_it_cannot_fold(rng):
    m = pfc.parse("Chain(Dense(4 => 3, relu), BatchNorm(3), Dense(3 => 3), BatchNorm(3; active=true))", seed=0)
    f = fold_batchnorm(m)
    assert str(f) == str(m)  # BN after a non-identity activation, BN in batch-statistics mode
    assert all(r["method"] != "fold_batchnorm" for r in f.records)
    with pytest.raises(ValueError, match="Chain"):
        fold_batchnorm(pfc.Dense(3, 3))


def test_quantize_folds_and_keys_name_the_input_model(cnn, rng):
    X = rng.standard_normal((32, 2, 14, 14)).astype(np.float32)
    q = pfc.quantize(cnn, {"layers[4]": 4, "layers[9]": 8}, granularity="per_channel")
    layers = dict(q.quantized_layers())
    assert {p: l.bits for p, l in layers.items()} == {"layers[3]": 4, "layers[6]": 8}
    assert not any(isinstance(l, pfc.BatchNorm) for _, l in q.walk())
    q8 = pfc.quantize(cnn, 8, granularity="per_channel", calibration=X)
    ref = cnn(X)
    assert np.abs(q8(X) - ref).max() <= 0.05 * np.abs(ref).max()


def test_quantized_cnn_runs_integer_kernels_only(cnn, rng, tmp_path):
    """The QDQ export of a folded CNN becomes QLinearConv/QGemm throughout in onnxruntime's optimized model."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    X = np.abs(rng.standard_normal((64, 2, 14, 14))).astype(np.float32)
    for scheme in ("affine", "symmetric_weights"):
        q = pfc.quantize(cnn, 8, scheme=scheme, granularity="per_channel", calibration=X)
        path = pfc.export_onnx(q, tmp_path / f"{scheme}.onnx", format="qdq")
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / f"{scheme}_opt.onnx")
        opts.log_severity_level = 3
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
        assert ops.count("QLinearConv") == 2 and ops.count("QGemm") == 2, ops
        assert not {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "BatchNormalization"} & set(ops), ops
        got = sess.run(None, {"input": X[:16]})[0]
        sim = q(X[:16])
        assert np.abs(got - sim).max() <= 0.02 * np.abs(sim).max()


def test_every_scheme_round_trips_through_the_archive(cnn, rng, tmp_path):
    X = np.abs(rng.standard_normal((32, 2, 14, 14))).astype(np.float32)
    from pyflux_compress.compression.schemes import SCHEMES

    for scheme in SCHEMES:
        q = pfc.quantize(cnn, 8, scheme=scheme, granularity="per_channel", calibration=X)
        pfc.save_compressed(tmp_path / f"{scheme}.pfcz", q)
        back = pfc.load_compressed(tmp_path / f"{scheme}.pfcz")
        np.testing.assert_array_equal(back(X), q(X))


def test_fold_conv_transpose_along_its_declared_output_axis(rng):
    """ConvTranspose's weight keeps its output channels on another axis; folding reads the declaration."""
    m = randomise_bn(pfc.parse("Chain(ConvTranspose((3, 3), 4 => 6), BatchNorm(6, relu))", seed=0), rng)
    X = rng.standard_normal((4, 4, 8, 8)).astype(np.float32)
    f = fold_batchnorm(m)
    assert str(f) == "Chain(ConvTranspose((3, 3), 4 => 6, relu))"
    ref = m(X)
    assert np.abs(f(X) - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
