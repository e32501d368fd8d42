"""import_onnx: our own exports round-trip; torch.onnx exports of nn.Sequential come in and match torch."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pyflux_compress.io.onnx import export_onnx, import_onnx  # noqa: E402
from pyflux_compress.model import activations as A  # noqa: E402
from pyflux_compress.model import layers as L  # noqa: E402
from pyflux_compress.model.chain import Chain  # noqa: E402

from test_onnx_export import LAYER_CASES  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.fixture(scope="module")
def images(fmnist):
    return np.ascontiguousarray(fmnist[2][:300])


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_round_trip_every_layer_type(case, images, tmp_path):
    model = LAYER_CASES[case]()
    path = export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 28, 28))
    back = import_onnx(path)
    x = images * 2 - 1
    np.testing.assert_allclose(back(x), model(x), rtol=1e-6, atol=1e-6)
    # CrossCor comes back as the equivalent flipped Conv, Dropout is gone, and a standalone activation after a
    # Dense is folded into it (Dense(32 => 10), elu -> Dense(32 => 10, elu)): same function, Flux's usual form
    if not case.startswith(("crosscor", "dropout", "act_")):
        assert str(back) == str(model)


def test_round_trip_issue2_cnn(images, tmp_path):
    model = Chain(L.Conv((3, 3), (1, 8), A.relu, seed=0), L.MaxPool((2, 2)), L.Conv((3, 3), (8, 16), A.relu, seed=1),
                  L.MaxPool((2, 2)), L.flatten, L.Dense(400, 10, seed=2))
    back = import_onnx(export_onnx(model, tmp_path / "cnn.onnx"))
    assert str(back) == str(model)
    np.testing.assert_array_equal(back[0].weight, model[0].weight)
    np.testing.assert_allclose(back(images), model(images), rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch warns that the TorchScript exporter is legacy
def test_torch_sequential_imports_and_matches_torch(images, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    nn = torch.nn
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 6, (3, 5), stride=(1, 2), padding=(1, 2)), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 8, 3), nn.ReLU(), nn.MaxPool2d(2, stride=2), nn.Flatten(),
                        nn.Linear(8 * 6 * 2, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    x = torch.from_numpy(images.copy())
    with torch.no_grad():
        want = seq(x).numpy()
    path = str(tmp_path / "torch.onnx")
    try:  # the legacy TorchScript exporter works offline; the dynamo exporter needs onnxscript
        torch.onnx.export(seq, (x[:2],), path, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}}, dynamo=False)
    except Exception as err:  # pragma: no cover - depends on the torch build
        pytest.skip(f"torch.onnx.export(dynamo=False) unavailable here: {err}")
    model = import_onnx(path)
    np.testing.assert_allclose(model(images), want, rtol=1e-4, atol=1e-5)
    assert [type(l).__name__ for l in model.layers] == ["Conv", "MaxPool", "Conv", "MaxPool", "Flatten", "Dense",
                                                        "Dense"]


def _handmade(nodes, inits, in_shape, opset=17):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[numpy_helper.from_array(v, k)
                                                                  for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_matmul_add_and_reshape_patterns(images, tmp_path):
    """Reshape(N, -1) + MatMul + Add (another common torch/keras pattern) imports as flatten + Dense."""
    rng = np.random.default_rng(0)
    inits = {"shape": np.array([0, -1], np.int64), "W": rng.standard_normal((784, 12)).astype(np.float32),
             "b": rng.standard_normal(12).astype(np.float32)}
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]), helper.make_node("Softmax", ["a"], ["y"], axis=-1)]
    proto = _handmade(nodes, inits, ["N", 1, 28, 28])
    path = tmp_path / "mm.onnx"
    path.write_bytes(proto.SerializeToString())
    model = import_onnx(path)
    assert str(model) == "Chain(flatten, Dense(784 => 12, softmax))"
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": images})[0]
    np.testing.assert_allclose(model(images), want, rtol=1e-5, atol=1e-6)


def test_unsupported_op_names_node_and_supported_set(tmp_path):
    proto = _handmade([helper.make_node("Erf", ["x"], ["y"], name="weird")], {}, ["N", 4])
    path = tmp_path / "erf.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match=r"weird.*Erf.*supported ops: Gemm"):
        import_onnx(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_onnx(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 definitely not a protobuf \xff" * 10)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        import_onnx(bad)
