"""ONNX import against hostile files: external data stays inside the model's folder, sizes are checked against
the bytes present before anything is allocated, and a looping graph is refused (issue 15)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

import pyflux_compress as pfc  # noqa: E402
from pyflux_compress.io.onnx._import import OnnxLoadError  # noqa: E402
from pyflux_compress.model import layers as L  # noqa: E402
from pyflux_compress.model.chain import Chain  # noqa: E402


def _model():
    return Chain(L.Dense(4, 3, seed=0))


def _external(tmp_path, location: str, *, folder: str = "models", payload: bytes | None = None):
    """Export a Dense(4 => 3) to ``folder/m.onnx`` with its weight moved to external data at ``location``.

    Returns (model path, the weight's true bytes). ``payload`` (default: the true bytes) is written to
    ``folder/location`` unless ``location`` points elsewhere (the caller then places files itself).
    """
    d = tmp_path / folder
    d.mkdir(parents=True, exist_ok=True)
    path = d / "m.onnx"
    pfc.export_onnx(_model(), path)
    proto = onnx.load(str(path))
    w = next(t for t in proto.graph.initializer if t.dims == [3, 4])
    raw = bytes(w.raw_data) if w.raw_data else np.asarray(w.float_data, np.float32).tobytes()
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        e = w.external_data.add()
        e.key, e.value = k, v
    path.write_bytes(proto.SerializeToString())
    if payload is not None:
        (d / location).write_bytes(payload)
    return path, raw


def test_external_data_is_read_beside_the_model_not_from_the_cwd(tmp_path, monkeypatch):
    path, raw = _external(tmp_path, "secret.bin")
    (path.parent / "secret.bin").write_bytes(raw)
    decoy = np.full(12, 7.0, np.float32).tobytes()
    (tmp_path / "secret.bin").write_bytes(decoy)  # ./secret.bin in the current directory
    monkeypatch.chdir(tmp_path)
    back = pfc.import_onnx(os.path.join("models", "m.onnx"))
    np.testing.assert_array_equal(back[0].weight, _model()[0].weight)
    # the Predictor reads the same bytes (onnxruntime gets a self-contained model)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(pfc.Predictor(os.path.join("models", "m.onnx")).predict(x), _model()(x),
                               rtol=1e-5, atol=1e-6)


def test_missing_external_file_is_not_looked_up_in_the_cwd(tmp_path, monkeypatch):
    path, raw = _external(tmp_path, "secret.bin")
    (tmp_path / "secret.bin").write_bytes(raw)  # only the cwd has it: must not be used
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"m\.onnx.*secret\.bin.*does not exist"):
        pfc.import_onnx(os.path.join("models", "m.onnx"))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "symlinked_folder"])
def test_external_data_outside_the_folder_is_refused(tmp_path, kind):
    outside = tmp_path / "outside.bin"
    path, raw = _external(tmp_path, "placeholder")
    outside.write_bytes(raw)
    location = {"dotdot": "../outside.bin", "absolute": str(outside), "symlink": "link.bin",
                "symlinked_folder": "sub/outside.bin"}[kind]
    if kind == "symlink":
        os.symlink(outside, path.parent / "link.bin")
    if kind == "symlinked_folder":
        os.symlink(tmp_path, path.parent / "sub")
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(OnnxLoadError, match=r"m\.onnx.*outside the model's folder.*refused") as err:
        pfc.import_onnx(path)
    assert location in str(err.value)
    with pytest.raises(ValueError, match="outside the model's folder"):
        pfc.Predictor(str(path))


def test_external_length_must_match_the_tensor(tmp_path):
    path, raw = _external(tmp_path, "w.bin", payload=b"\0" * 8)  # 8 bytes for a 48-byte tensor
    with pytest.raises(OnnxLoadError, match=r"w\.bin.*does not fit"):
        pfc.import_onnx(path)


def _graph_with(tensor=None, sparse=None, nodes=None):
    nodes = nodes or [helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          initializer=[tensor] if tensor is not None else [],
                          sparse_initializer=[sparse] if sparse is not None else [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_huge_dims_with_few_bytes_fail_fast(tmp_path):
    t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2**31, 2**31], raw_data=b"\0" * 16)
    p = tmp_path / "bomb.onnx"
    p.write_bytes(_graph_with(tensor=t).SerializeToString())
    t0 = time.perf_counter()
    with pytest.raises(OnnxLoadError, match=r"bomb\.onnx.*initializer 'W'.*need \d+ bytes; the file holds 16"):
        pfc.import_onnx(p)
    assert time.perf_counter() - t0 < 5  # generous: the check is a product of two ints


def test_sparse_initializer_dense_size_is_bounded(tmp_path, monkeypatch):
    values = helper.make_tensor("W", TensorProto.FLOAT, [1], [1.0])
    indices = helper.make_tensor("Wi", TensorProto.INT64, [1], [5])
    sp = helper.make_sparse_tensor(values, indices, [1_000_000, 1_000_000])
    p = tmp_path / "sparse_bomb.onnx"
    p.write_bytes(_graph_with(sparse=sp).SerializeToString())
    with pytest.raises(OnnxLoadError, match=r"sparse_bomb\.onnx.*densifies past the 1,073,741,824-byte limit"):
        pfc.import_onnx(p)
    # the limit is a keyword and an environment variable; a small model fits a small limit
    sp_ok = helper.make_sparse_tensor(values, indices, [3, 4])
    ok = tmp_path / "sparse_ok.onnx"
    ok.write_bytes(_graph_with(sparse=sp_ok).SerializeToString())
    assert pfc.import_onnx(ok, max_bytes=48)[0].weight.shape == (3, 4)
    with pytest.raises(OnnxLoadError, match="47-byte limit"):
        pfc.import_onnx(ok, max_bytes=47)
    monkeypatch.setenv("PYFLUX_ONNX_MAX_BYTES", "47")
    with pytest.raises(OnnxLoadError, match="PYFLUX_ONNX_MAX_BYTES"):
        pfc.import_onnx(ok)


def test_sparse_indices_out_of_range_are_refused(tmp_path):
    values = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    indices = helper.make_tensor("Wi", TensorProto.INT64, [2], [3, 12])  # 12 is past 3 x 4
    p = tmp_path / "sparse_idx.onnx"
    p.write_bytes(_graph_with(sparse=helper.make_sparse_tensor(values, indices, [3, 4])).SerializeToString())
    with pytest.raises(OnnxLoadError, match=r"sparse_idx\.onnx.*indices"):
        pfc.import_onnx(p)


def test_a_looping_graph_is_refused(tmp_path):
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 4], np.zeros(16, np.float32).tobytes(), raw=True)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["x"], transB=1)]  # writes its own input: a cycle
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[w])
    p = tmp_path / "loop.onnx"
    p.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(ValueError, match=r"loop\.onnx.*loops back"):
        pfc.import_onnx(p)


def test_cli_inspect_refuses_escaping_external_data(tmp_path, capsys):
    from pyflux_compress.cli import main

    path, raw = _external(tmp_path, "../outside.bin")
    (tmp_path / "outside.bin").write_bytes(raw)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "outside the model's folder" in err
