"""Embedding (Flux ``Embedding(vocab => dim)``): ids 0-based, one-hot bool input, gradients, JLD2, ONNX Gather."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc

ARCH = "Chain(Embedding(11 => 4), flatten, Dense(20 => 3))"


@pytest.fixture
def model():
    return pfc.parse(ARCH, seed=3)


@pytest.fixture
def ids():
    return np.random.default_rng(0).integers(0, 11, size=(7, 5))


def test_parse_print_and_lookup(model, ids):
    assert str(model) == ARCH and str(pfc.parse(str(model))) == ARCH
    emb = model[0]
    assert emb.weight.shape == (4, 11) and emb.weight.dtype == np.float32   # Flux's (dim, vocab)
    out = emb(ids)
    assert out.shape == (7, 5, 4)
    # id j reads column j (Flux's 1-based column j+1)
    np.testing.assert_array_equal(out[2, 3], emb.weight[:, ids[2, 3]])
    # float ids (what pfc.fit passes) and bool one-hot (Flux's weight * onehotbatch) give the same
    np.testing.assert_array_equal(emb(ids.astype(np.float32)), out)
    oh = pfc.onehotbatch(ids, 11)
    assert oh.shape == (7, 5, 11) and oh.dtype == np.bool_
    np.testing.assert_allclose(emb(oh), out, rtol=1e-6)
    assert emb(np.array(4)).shape == (4,)


def test_bad_input_names_layer(model):
    emb = model[0]
    with pytest.raises(ValueError, match=r"Embedding\(11 => 4\).*0\.\.10"):
        emb(np.array([[11]]))
    with pytest.raises(ValueError, match="whole-number"):
        emb(np.array([[1.5]]))
    with pytest.raises(ValueError, match="last axis 11"):
        emb(np.zeros((2, 3), bool))
    with pytest.raises(pfc.FluxSyntaxError, match="expected Embedding"):
        pfc.parse("Embedding(3, 4)")
    with pytest.raises(ValueError, match="onehotbatch"):
        pfc.onehotbatch([3, 12], 11)


@pytest.mark.parametrize("onehot", [False, True])
def test_gradient_check(model, ids, onehot):
    # one-hot input is checked on the bare layer: a Chain's shape check reads per-sample shapes as ids
    m64 = model.astype(np.float64)
    if onehot:
        m64 = pfc.Chain(m64[0])
    x = pfc.onehotbatch(ids, 11) if onehot else ids
    y, cache = m64.forward(x)
    dy = np.random.default_rng(1).normal(size=y.shape)
    _, grads = m64.backward(cache, dy)
    w = m64[0].weight
    numeric = np.zeros_like(w)
    eps = 1e-6
    for i in np.ndindex(w.shape):
        w[i] += eps
        up = float((m64(x) * dy).sum())
        w[i] -= 2 * eps
        down = float((m64(x) * dy).sum())
        w[i] += eps
        numeric[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grads["layers[1].weight"], numeric, rtol=1e-6, atol=1e-8)
    if onehot:
        return
    unused = np.setdiff1d(np.arange(11), ids)
    assert np.all(grads["layers[1].weight"][:, unused] == 0)


def test_training_on_ids():
    # the label is whether token 3 occurs in the sequence: learnable only through the table
    rng = np.random.default_rng(0)
    X = rng.integers(0, 11, size=(256, 5))
    y = (X == 3).any(axis=1).astype(np.int64)
    model = pfc.parse("Chain(Embedding(11 => 4), flatten, Dense(20 => 2))", seed=0)
    before = pfc.accuracy(model, X, y)
    pfc.fit(model, X, y, epochs=40, batchsize=32, opt=pfc.Adam(0.03), progress=False)
    assert pfc.accuracy(model, X, y) > max(0.9, before)


def test_jld2_round_trip(model, ids, tmp_path):
    path = tmp_path / "emb.jld2"
    pfc.save(path, model)
    back = pfc.load(path)
    assert str(back) == ARCH
    np.testing.assert_array_equal(back[0].weight, model[0].weight)
    fresh = pfc.parse(ARCH, seed=99)
    pfc.load_state(fresh, path)
    np.testing.assert_array_equal(fresh(ids), model(ids))


def test_onnx_parity_and_import(model, ids, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = pfc.export_onnx(model, tmp_path / "emb.onnx", input_shape=(5,))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": ids.astype(np.float32)})[0]
    np.testing.assert_allclose(out, model(ids), rtol=1e-5, atol=1e-6)
    back = pfc.import_onnx(path)
    assert str(back) == ARCH
    np.testing.assert_array_equal(back[0].weight, model[0].weight)


def test_prune_and_modules(model):
    assert [(p, type(l).__name__) for p, l in pfc.modules(model)][0] == ("layers[1]", "Embedding")
    pruned = pfc.prune(model, 0.5)
    assert "layers[1]" in pruned.records[-1]["per_layer"]
    assert np.count_nonzero(pruned[0].weight == 0) == 22
    assert np.count_nonzero(model[0].weight == 0) == 0                # pure


def test_lowrank_factorises_the_table(ids):
    model = pfc.parse("Chain(Embedding(40 => 16), flatten, Dense(80 => 3))", seed=0)
    emb = model[0]
    u, s, vt = np.linalg.svd(np.random.default_rng(0).normal(size=(16, 4)) @ np.random.default_rng(1).normal(size=(4, 40)),
                             full_matrices=False)
    emb.weight[...] = (u[:, :4] * s[:4]) @ vt[:4] + 1e-4 * np.random.default_rng(2).normal(size=(16, 40))
    small = pfc.lowrank(model, rank={"layers[1]": 4})
    assert str(small).startswith("Chain(Embedding(40 => 4), Dense(4 => 16; bias=false), flatten")
    assert small.records[-1]["per_layer"] == {"layers[1]": 4}
    assert small.records[-1]["params_after"] < small.records[-1]["params_before"]
    np.testing.assert_allclose(small(ids), model(ids), atol=1e-2)
    x = np.random.default_rng(3).integers(0, 40, size=(6, 5))
    np.testing.assert_allclose(small[1](small[0](x)), emb(x), atol=1e-3)


def test_import_bare_gather_on_integer_ids(tmp_path):
    """A foreign graph (integer ids input, Gather then Gemm) imports as Embedding + Dense."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    table = rng.normal(size=(9, 3)).astype(np.float32)
    w = rng.normal(size=(2, 3)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "input"], ["e"], axis=0),
             helper.make_node("Gemm", ["e", "w"], ["output"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.INT64, ["N"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "g.onnx"))
    back = pfc.import_onnx(tmp_path / "g.onnx")
    assert str(back) == "Chain(Embedding(9 => 3), Dense(3 => 2; bias=false))"
    np.testing.assert_array_equal(back[0].weight, table.T)


def test_quantize_quantizes_the_table_per_token(model, ids):
    # (tests/test_sequence_quant.py checks the int8 ONNX form and QAT of the table)
    q = pfc.quantize(model, bits=8, granularity="per_channel")
    assert type(q[0]).__name__ == "QuantizedEmbedding" and {"layers[1]", "layers[3]"} <= set(q.records[-1]["per_layer"])
    assert q[0].w_scale.shape == (model[0].vocab,)
    np.testing.assert_allclose(q(ids), model(ids), atol=0.05)
