"""Quantized ONNX export (QDQ static, dynamic) vs the QuantizedChain's simulated integer forward."""
from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto  # noqa: E402

from pyflux_compress.compression.quantize import quantize  # noqa: E402
from pyflux_compress.io.onnx import export_onnx, to_onnx_model  # noqa: E402
from pyflux_compress.model import activations as A  # noqa: E402
from pyflux_compress.model import layers as L  # noqa: E402
from pyflux_compress.model.chain import Chain  # noqa: E402


@pytest.fixture(scope="module")
def data(fmnist):
    """Calibration images (train) and 1000 real test images with labels."""
    Xtr, _, Xte, yte = fmnist
    return np.ascontiguousarray(Xtr[:256]), np.ascontiguousarray(Xte[:1000]), yte[:1000]


@pytest.fixture(scope="module")
def cnn(fmnist):
    """The issue-2 CNN, trained briefly (600 images, 1 epoch) so that accuracies mean something."""
    import pyflux_compress as pfc

    Xtr, ytr, _, _ = fmnist
    model = Chain(L.Conv((3, 3), (1, 8), A.relu, seed=0), L.MaxPool((2, 2)), L.Conv((3, 3), (8, 16), A.relu, seed=1),
                  L.MaxPool((2, 2)), L.flatten, L.Dense(400, 10, seed=2))
    pfc.fit(model, Xtr[:600], ytr[:600], epochs=1, batchsize=32, opt=pfc.Adam(3e-3), progress=False, seed=0)
    return model


def session(proto, optimized_path=None):
    opts = ort.SessionOptions()
    if optimized_path:
        opts.optimized_model_filepath = str(optimized_path)
        opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def last_layer_step_bound(qchain) -> np.ndarray:
    """Largest output change of the last quantized Dense if each of its quantized inputs moves by one step:
    ``act_scale * w_scale[o] * sum_i |q[o, i] - zp[o]|`` per output ``o``."""
    layer = qchain.quantized_layers()[-1][1]
    wi = layer.qweight.astype(np.float64) - np.asarray(layer.w_zero_point, np.float64).reshape(-1, 1)
    return float(layer.act_scale) * np.asarray(layer.w_scale, np.float64) * np.abs(wi).sum(axis=1)


def mlp(seed=0):
    return Chain(L.Dense(784, 128, A.relu, seed=seed), L.Dense(128, 64, A.relu, seed=seed + 1),
                 L.Dense(64, 10, seed=seed + 2))


@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
def test_qdq_mlp_within_one_step_of_simulation(trained_mlp, data, scheme, tmp_path):
    Xcal, Xte, yte = data
    x, xcal = Xte.reshape(len(Xte), -1), Xcal.reshape(len(Xcal), -1)
    q = quantize(trained_mlp, 8, scheme=scheme, granularity="per_channel", calibration=xcal)
    sim = q(x)
    got = session(to_onnx_model(q, format="qdq")).run(None, {"input": x})[0]
    bound = last_layer_step_bound(q)
    assert (np.abs(got - sim) <= bound + 1e-5 * np.abs(sim).max()).all()
    acc_ort, acc_sim = (got.argmax(1) == yte).mean(), (sim.argmax(1) == yte).mean()
    print(f"qdq {scheme}: accuracy onnxruntime {acc_ort:.4f}, simulated {acc_sim:.4f}")
    assert abs(acc_ort - acc_sim) <= 0.005 and acc_ort > 0.75


def test_qdq_affine_runs_integer_kernels(data, tmp_path):
    """onnxruntime fuses the affine QDQ MLP and CNN into integer kernels (QGemm / QLinearConv): no float Gemm."""
    Xcal, Xte, _ = data
    for model, xcal in ((mlp(), Xcal.reshape(len(Xcal), -1)),
                        (Chain(L.Conv((3, 3), (1, 4), A.relu, seed=0), L.MaxPool((2, 2)), L.flatten,
                               L.Dense(676, 10, seed=1)), Xcal)):
        q = quantize(model, 8, scheme="affine", granularity="per_channel", calibration=xcal)
        opt = tmp_path / "opt.onnx"
        session(to_onnx_model(q, format="qdq"), opt)
        ops = {n.op_type for n in onnx.load(opt).graph.node}
        assert "QGemm" in ops and not ops & {"Gemm", "FusedGemm", "MatMul"}, ops
        if "Conv" in str(model):
            assert "QLinearConv" in ops and not ops & {"Conv", "FusedConv"}, ops


def test_qdq_cnn_matches_simulation(cnn, data):
    Xcal, Xte, yte = data
    q = quantize(cnn, 8, scheme="affine", granularity="per_channel", calibration=Xcal)
    sim = q(Xte)
    got = session(to_onnx_model(q, format="qdq")).run(None, {"input": Xte})[0]
    assert (np.abs(got - sim) <= last_layer_step_bound(q) + 1e-5 * np.abs(sim).max()).all()
    acc_ort, acc_sim = (got.argmax(1) == yte).mean(), (sim.argmax(1) == yte).mean()
    print(f"qdq cnn: accuracy onnxruntime {acc_ort:.4f}, simulated {acc_sim:.4f}")
    assert abs(acc_ort - acc_sim) <= 0.005


def dynamic_reference(layer, x: np.ndarray) -> np.ndarray:
    """NumPy DynamicQuantizeLinear (uint8, range including 0) + integer matmul + rescale, per the ONNX spec."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    s = np.float32((hi - lo) / 255) if hi > lo else np.float32(1)
    zp = np.clip(np.rint(-lo / s), 0, 255)
    xq = np.clip(np.rint(x / s) + zp, 0, 255) - zp
    wi = layer.qweight.astype(np.float64) - np.asarray(layer.w_zero_point, np.float64).reshape(-1, 1)
    z = (xq @ wi.T) * (np.float64(s) * np.asarray(layer.w_scale, np.float64)) + layer.float_layer.bias
    return layer.float_layer.activation(z.astype(np.float32)), s


@pytest.mark.parametrize("scheme, granularity", [("symmetric", "per_channel"), ("affine", "per_tensor")])
def test_dynamic_dense_matches_simulation(data, scheme, granularity, tmp_path):
    """One Dense layer with dynamic activations: onnxruntime equals the spec'd dynamic integer computation, and
    so does the simulated forward (pfc.predict computes what the deployment runs)."""
    _, Xte, _ = data
    x = Xte.reshape(len(Xte), -1) * 2 - 0.5
    q = quantize(Chain(L.Dense(784, 32, A.relu, seed=3)), 8, scheme=scheme, granularity=granularity,
                 activations="dynamic")
    proto = to_onnx_model(q, format="dynamic")
    got = session(proto, tmp_path / "o.onnx").run(None, {"input": x})[0]
    assert "DynamicQuantizeMatMul" in {n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node}
    ref, _ = dynamic_reference(q[0], x)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q(x), ref, rtol=1e-5, atol=1e-5)


def test_predict_of_weights_only_model_matches_its_export(trained_mlp, data):
    """Regression (issue 17): a weights-only QuantizedChain's default export used to quantize activations
    dynamically (logits off by up to 0.11); now the file computes the simulated forward."""
    import pyflux_compress as pfc

    _, Xte, _ = data
    x = Xte.reshape(len(Xte), -1)[:500]
    for mode in ("float", "dynamic"):
        q = quantize(trained_mlp, 8, granularity="per_channel", activations=mode)
        got = session(to_onnx_model(q)).run(None, {"input": x})[0]
        assert np.abs(got - pfc.predict(q, x)).max() <= 1e-4 * np.abs(got).max(), mode


def test_dynamic_mlp_and_cnn_accuracy(trained_mlp, cnn, data):
    _, Xte, yte = data
    for model, x in ((trained_mlp, Xte.reshape(len(Xte), -1)), (cnn, Xte)):
        q = quantize(model, 8, granularity="per_channel", activations="dynamic")
        got = session(to_onnx_model(q)).run(None, {"input": x})[0]  # uncalibrated -> format "dynamic"
        sim = q(x)
        acc_ort, acc_sim = (got.argmax(1) == yte).mean(), (sim.argmax(1) == yte).mean()
        print(f"dynamic {type(model).__name__}: accuracy onnxruntime {acc_ort:.4f}, simulated {acc_sim:.4f}")
        assert abs(acc_ort - acc_sim) <= 0.005


def test_int8_file_is_about_a_quarter(tmp_path):
    model = mlp()
    q = quantize(model, 8, granularity="per_channel", activations="dynamic")
    fp = os.path.getsize(export_onnx(model, tmp_path / "fp.onnx"))
    for fmt in ("dynamic",):
        size = os.path.getsize(export_onnx(q, tmp_path / f"{fmt}.onnx", format=fmt))
        assert size <= 0.27 * fp, (fmt, size / fp)


def test_low_bits_and_binary_export_exactly(data):
    """int4 and binary weights are stored in int8 containers: the QDQ graph reproduces the simulation."""
    Xcal, Xte, _ = data
    x, xcal = Xte.reshape(len(Xte), -1)[:300], Xcal.reshape(len(Xcal), -1)
    for bits in (4, 1):
        q = quantize(mlp(), bits, scheme="affine" if bits > 1 else "symmetric", granularity="per_channel",
                     calibration=xcal)
        sim = q(x)
        got = session(to_onnx_model(q, format="qdq")).run(None, {"input": x})[0]
        assert (np.abs(got - sim) <= last_layer_step_bound(q) + 1e-5 * np.abs(sim).max()).all()


def test_fp32_export_of_quantized_chain_uses_dequantized_weights(data):
    _, Xte, _ = data
    x = Xte.reshape(len(Xte), -1)[:100]
    q = quantize(mlp(), 8, granularity="per_channel")
    got = session(to_onnx_model(q, format="fp32")).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, q.dequantize()(x), rtol=1e-5, atol=1e-5)


def test_qdq_needs_calibration(tmp_path):
    q = quantize(mlp(), 8)
    with pytest.raises(ValueError, match="calibrat"):
        export_onnx(q, tmp_path / "q.onnx", format="qdq")


def test_sparse_quantized_is_smaller(tmp_path):
    model = mlp()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        layer.weight = np.where(rng.random(layer.weight.shape) < 0.95, 0, layer.weight).astype(np.float32)
    q = quantize(model, 8, granularity="per_channel")
    dense = os.path.getsize(export_onnx(q, tmp_path / "d.onnx"))
    sparse = os.path.getsize(export_onnx(q, tmp_path / "s.onnx", sparse=True))
    assert sparse < 0.6 * dense


def test_int4_dynamic_opset21_packs_weights(data, tmp_path):
    """opset 21: 4-bit Dense weights are stored as packed INT4 (about half the int8 file) and still compute the
    weight-only simulated forward (onnxruntime may use MatMulNBits, which quantizes activations internally:
    hence the 2% tolerance relative to the output scale)."""
    _, Xte, yte = data
    x = Xte.reshape(len(Xte), -1)[:300]
    q = quantize(mlp(), 4, granularity="per_channel")
    int4 = export_onnx(q, tmp_path / "q4.onnx", format="dynamic", opset=21)
    int8 = export_onnx(q, tmp_path / "q8.onnx", format="dynamic")
    assert os.path.getsize(int4) < 0.55 * os.path.getsize(int8)
    types = {t.data_type for t in onnx.load(int4).graph.initializer}
    assert TensorProto.INT4 in types
    got = ort.InferenceSession(int4, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    sim = q(x)
    assert np.abs(got - sim).max() <= 0.02 * np.abs(sim).max()
    assert (got.argmax(1) == sim.argmax(1)).mean() >= 0.98


@pytest.mark.parametrize("opset", [17, 21])
def test_symmetric_conv_maxpool_qdq_loads_at_every_opset(cnn, data, opset, tmp_path):
    """Regression (issue 17): symmetric QDQ Conv -> MaxPool at opset 21 made onnxruntime 1.32 fail at its default
    optimisation level on a node it inserts itself; the exporter no longer emits that pattern."""
    Xcal, Xte, _ = data
    q = quantize(cnn, 8, scheme="symmetric", granularity="per_channel", calibration=Xcal)
    path = export_onnx(q, tmp_path / "q.onnx", format="qdq", opset=opset)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": Xte[:50]})[0]
    sim = q(Xte[:50])
    assert (np.abs(got - sim) <= last_layer_step_bound(q) + 1e-5 * np.abs(sim).max()).all()
