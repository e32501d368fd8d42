"""fp32 ONNX export: onnxruntime output == NumPy forward (1e-5 relative) on 1000 real Fashion-MNIST test images."""
from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pyflux_compress.io.onnx import (UnsupportedLayerError, export_onnx, ir_version_for,  # noqa: E402
                                     ort_max_ir_version, to_onnx_model)
from pyflux_compress.model import activations as A  # noqa: E402
from pyflux_compress.model import layers as L  # noqa: E402
from pyflux_compress.model.chain import Chain  # noqa: E402

ISSUE2_CNN = "Chain(Conv((3, 3), 1 => 8, relu), MaxPool((2, 2)), Conv((3, 3), 8 => 16, relu), MaxPool((2, 2)), " \
             "flatten, Dense(400 => 10))"


@pytest.fixture(scope="module")
def images(fmnist):
    """1000 real test images (N, 1, 28, 28) float32 in [0, 1]."""
    return np.ascontiguousarray(fmnist[2][:1000])


def ort_run(model, x, **kw) -> np.ndarray:
    proto = to_onnx_model(model, **kw)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["output"], {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


def assert_parity(model, x, **kw):
    """onnxruntime vs NumPy forward: max |diff| <= 1e-5 * max |y| (relative to the output's scale)."""
    want = model(x)
    got = ort_run(model, x, **kw)
    assert got.shape == want.shape
    rel = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
    assert rel <= 1e-5, f"relative error {rel:.3g} for {model}"


def _bn(chs, act=A.identity, seed=0):
    rng = np.random.default_rng(seed)
    bn = L.BatchNorm(chs, act)
    bn.mu = rng.standard_normal(chs).astype(np.float32) * 0.3
    bn.sigma2 = rng.uniform(0.2, 2.0, chs).astype(np.float32)
    bn.gamma = rng.standard_normal(chs).astype(np.float32)
    bn.beta = rng.standard_normal(chs).astype(np.float32)
    return bn


# one entry per layer type / option; asymmetric kernels, strides, pads and dilations catch any axis swap
LAYER_CASES = {
    "conv": lambda: Chain(L.Conv((3, 2), (1, 4), A.relu, stride=(2, 1), pad=(1, 0, 2, 1), dilation=(1, 2), seed=1)),
    "conv_nobias": lambda: Chain(L.Conv((5, 3), (1, 3), bias=False, pad=(2, 2, 1, 1), seed=2)),
    "crosscor": lambda: Chain(L.CrossCor((3, 2), (1, 4), A.tanh, stride=(1, 2), pad=(0, 1, 1, 2), seed=3)),
    "maxpool": lambda: Chain(L.MaxPool((3, 2), pad=(1, 0, 0, 1), stride=(2, 1))),
    "meanpool": lambda: Chain(L.MeanPool((2, 3), pad=(1, 1, 0, 1))),
    "globalmeanpool": lambda: Chain(L.Conv((3, 3), (1, 5), seed=4), L.GlobalMeanPool(), L.flatten),
    "batchnorm_4d": lambda: Chain(L.Conv((3, 3), (1, 3), seed=5), _bn(3, A.relu)),
    "batchnorm_2d": lambda: Chain(L.flatten, L.Dense(784, 16, seed=6), _bn(16, A.elu, seed=1)),
    "dropout": lambda: Chain(L.flatten, L.Dropout(0.5), L.Dense(784, 10, seed=7)),
    "dense_nobias": lambda: Chain(L.flatten, L.Dense(784, 10, bias=False, seed=8)),
    **{f"act_{a.name}": (lambda a=a: Chain(L.flatten, L.Dense(784, 32, a, seed=9), L.Dense(32, 10, seed=10), a))
       for a in (A.relu, A.sigmoid, A.tanh, A.softmax, A.leakyrelu, A.elu, A.gelu, A.swish, A.identity)},
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_parity_on_real_images(case, images):
    model = LAYER_CASES[case]()
    x = images * 2 - 1  # centred data gives every activation both signs
    assert_parity(model, x, input_shape=(1, 28, 28))


def test_article_mlp_parity(trained_mlp, fmnist_flat):
    x = fmnist_flat[2][:1000]
    assert_parity(trained_mlp, x)
    assert (ort_run(trained_mlp, x).argmax(1) == trained_mlp(x).argmax(1)).all()


def test_issue2_cnn_parity(images):
    model = Chain(L.Conv((3, 3), (1, 8), A.relu, seed=0), L.MaxPool((2, 2)), L.Conv((3, 3), (8, 16), A.relu, seed=1),
                  L.MaxPool((2, 2)), L.flatten, L.Dense(400, 10, seed=2))
    assert str(model) == ISSUE2_CNN
    assert_parity(model, images)


def test_flatten_needs_no_transpose(images):
    """ONNX Flatten(axis=1) on NCHW == Flux's column-major flatten of the WHCN array (so no Transpose)."""
    x = images[:7] * np.arange(1, 8, dtype=np.float32)[:, None, None, None]
    model = Chain(L.Conv((3, 3), (1, 4), seed=0), L.flatten)
    proto = to_onnx_model(model)
    assert "Transpose" not in {n.op_type for n in proto.graph.node}
    feats = model[0](x)  # (N, C, H, W)
    whcn = feats.transpose(3, 2, 1, 0)  # the same array as Flux holds it
    flux_flat = whcn.reshape(-1, whcn.shape[-1], order="F").T  # Flux: reshape(x, :, N), column-major
    np.testing.assert_allclose(ort_run(model, x), flux_flat, rtol=1e-5, atol=1e-6)


def test_conv_kernel_is_flipped_for_conv_not_crosscor(images):
    w = np.random.default_rng(0).standard_normal((3, 2, 1, 2)).astype(np.float32)
    conv = L.Conv(w, False)
    cross = L.CrossCor(w.copy(), False)
    for m in (conv, cross):
        assert_parity(Chain(m), images[:50])
    # the two differ, so a wrong flip could not pass both
    assert np.abs(conv(images[:5]) - cross(images[:5])).max() > 1e-3


def test_ir_version_is_what_installed_onnxruntime_accepts(tmp_path, images):
    model = Chain(L.Conv((3, 3), (1, 2), seed=0), L.flatten)
    path = export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert proto.ir_version == ir_version_for(17) == min(ort_max_ir_version(), onnx.IR_VERSION)
    assert proto.opset_import[0].version == 17
    ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    if proto.ir_version < onnx.IR_VERSION:  # it is the maximum: one more is rejected
        proto.ir_version += 1
        with pytest.raises(Exception):
            ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def test_io_names_and_dynamic_batch(images):
    model = Chain(L.Conv((3, 3), (1, 2), seed=0), L.flatten, L.Dense(1352, 3, seed=1))
    proto = to_onnx_model(model)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("input", "output")
    assert inp.type.tensor_type.shape.dim[0].dim_param == "N"
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3, 17):
        assert sess.run(None, {"input": images[:n]})[0].shape == (n, 3)
    fixed = to_onnx_model(model, dynamic_batch=False, input_shape=(1, 28, 28))
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 28, 28]


def test_dropout_is_dropped():
    proto = to_onnx_model(Chain(L.Dense(4, 3, seed=0), L.Dropout(0.5), L.Dense(3, 2, seed=1)))
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Gemm"]


class Mystery(L.Layer):
    flux_name = "Mystery"

    def forward(self, x, train=False, rng=None):
        return x, None

    def __repr__(self):
        return "Mystery()"


def test_unsupported_layer_names_layer_and_supported_set(tmp_path):
    model = Chain(L.Dense(4, 3, seed=0), Chain(A.relu, Mystery()))
    with pytest.raises(UnsupportedLayerError) as err:
        export_onnx(model, tmp_path / "m.onnx")
    msg = str(err.value)
    assert "layers[2].layers[2]" in msg and "Mystery" in msg and "Dense" in msg and "Conv" in msg
    assert not os.listdir(tmp_path)  # nothing half-written


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(Chain(L.Dense(4, 3, seed=0)), path)
    before = path.read_bytes()
    with pytest.raises(UnsupportedLayerError):
        export_onnx(Chain(Mystery()), path, input_shape=(4,))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


@pytest.mark.parametrize("kwargs, word", [({"opset": 9}, "opset"), ({"format": "int8"}, "format"),
                                          ({"sparse": "yes"}, "sparse"), ({"format": "qdq"}, "QuantizedChain")])
def test_bad_arguments(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=word):
        export_onnx(Chain(L.Dense(4, 3, seed=0)), tmp_path / "m.onnx", **kwargs)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        export_onnx(Chain(L.Dense(4, 3, seed=0)), tmp_path / "nope" / "m.onnx")


def test_sparse_weights_smaller_file_same_output(tmp_path, fmnist_flat):
    """Pruned weights in COO form: smaller file, identical onnxruntime output; the file passes the full ONNX
    checker and runs in onnx's ReferenceEvaluator (regression, issue 17: sparse_initializer fed to Gemm did
    not), and imports back."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    model = Chain(L.Dense(784, 128, A.relu, seed=0), L.Dense(128, 10, seed=1))
    for layer in model.layers:  # 90% unstructured sparsity
        layer.weight = np.where(rng.random(layer.weight.shape) < 0.9, 0, layer.weight).astype(np.float32)
    dense = export_onnx(model, tmp_path / "dense.onnx")
    sparse = export_onnx(model, tmp_path / "sparse.onnx", sparse=True)
    proto = onnx.load(sparse)
    assert sum(n.op_type == "ScatterElements" for n in proto.graph.node) == 2
    assert os.path.getsize(sparse) < 0.25 * os.path.getsize(dense)
    onnx.checker.check_model(proto, full_check=True)
    x = fmnist_flat[2][:200]
    run = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
           for p in (dense, sparse)]
    np.testing.assert_array_equal(run[0], run[1])
    ref = ReferenceEvaluator(proto).run(None, {"input": x})[0]
    np.testing.assert_allclose(ref, run[0], rtol=1e-5, atol=1e-5)
    from pyflux_compress.io.onnx import import_onnx
    np.testing.assert_allclose(import_onnx(sparse)(x), model(x), rtol=1e-6, atol=1e-6)


def test_structurally_smaller_model_just_exports(tmp_path, fmnist_flat):
    """A physically smaller (structurally pruned) Chain is an ordinary Chain: the file shrinks with it."""
    big = Chain(L.Dense(784, 128, A.relu, seed=0), L.Dense(128, 10, seed=1))
    small = Chain(L.Dense(784, 64, A.relu, seed=0), L.Dense(64, 10, seed=1))
    sizes = [os.path.getsize(export_onnx(m, tmp_path / f"{i}.onnx")) for i, m in enumerate((big, small))]
    assert sizes[1] < 0.55 * sizes[0]
    assert_parity(small, fmnist_flat[2][:100])


def test_shape_mismatch_is_named_before_export(tmp_path):
    model = Chain(L.Dense(784, 10, seed=0))
    with pytest.raises(ValueError, match="784"):
        export_onnx(model, tmp_path / "m.onnx", input_shape=(785,))
    with pytest.raises(ValueError, match="MeanPool"):
        export_onnx(Chain(L.Dense(784, 10, seed=0), L.MeanPool((2, 2))), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_weight_shared_model_exports(tmp_path, rng):
    """Regression (issue 17): a weight-shared model asked for input_shape, then had "no ONNX mapping"."""
    import pyflux_compress as pfc

    for model, x in ((Chain(L.Dense(20, 16, A.relu, seed=0), L.Dense(16, 4, seed=1)),
                      rng.standard_normal((5, 20)).astype(np.float32)),
                     (Chain(L.Conv((3, 3), (2, 4), A.relu),
                            L.Flatten(), L.Dense(4 * 6 * 6, 3, seed=1)),
                      rng.standard_normal((5, 2, 8, 8)).astype(np.float32))):
        shared = pfc.share_weights(model, bits=3)
        path = export_onnx(shared, tmp_path / "shared.onnx")
        got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        np.testing.assert_allclose(got, shared(x), rtol=1e-5, atol=1e-5)
        assert len(np.unique(onnx.numpy_helper.to_array(onnx.load(path).graph.initializer[0]))) <= 8
