"""Sequence layers beyond the float ONNX ops: the unrolled ONNX form, int8 recurrent and embedding quantization
(simulation == onnxruntime), PyTorch-exported LSTM/GRU import (fixtures in tests/data/torch_recurrent, made by
its make_fixtures.py; no torch needed here), GRU's PyTorch bias ``b_hn`` and the ``laststep`` layer."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

import pyflux_compress as pfc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

KINDS = ["RNN", "LSTM", "GRU", "GRUv3"]
TORCH = Path(__file__).parent / "data" / "torch_recurrent"


def seq_model(kind, seed=1, n_in=5, hidden=7, length=6):
    m = pfc.parse(f"Chain({kind}({n_in} => {hidden}), flatten, Dense({length * hidden} => 3))", seed=seed)
    m[0].cell.bias[:] = np.random.default_rng(seed).normal(size=m[0].cell.bias.shape)  # non-zero gate biases
    return m


def data(n=4, length=6, n_in=5, seed=2):
    return np.random.default_rng(seed).normal(size=(n, length, n_in)).astype(np.float32)


def run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("kind", KINDS)
def test_unrolled_fp32_form_matches_numpy(kind, tmp_path):
    m = seq_model(kind)
    m[0].onnx_form = "unrolled"
    p = pfc.export_onnx(m, tmp_path / "u.onnx", input_shape=(6, 5))
    assert kind.rstrip("v3") not in ops(p) and "MatMul" in ops(p)
    x = data()
    np.testing.assert_allclose(run(p, x), m(x), rtol=1e-5, atol=1e-5)
    m[0].onnx_form = "loop"
    with pytest.raises(ValueError, match="onnx_form must be one of"):
        pfc.export_onnx(m, tmp_path / "bad.onnx", input_shape=(6, 5))
    m[0].onnx_form = "unrolled"
    with pytest.raises(ValueError, match="fixed sequence length"):
        pfc.export_onnx(pfc.Chain(m[0]), tmp_path / "sym.onnx", input_shape=("L", 5))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheme,granularity", [("symmetric", "per_channel"), ("affine", "per_tensor")])
def test_int8_recurrent_simulation_equals_onnxruntime(kind, scheme, granularity, tmp_path):
    m = seq_model(kind)
    q = pfc.quantize(m, 8, scheme=scheme, granularity=granularity, activations="dynamic")
    layer = q[0]
    assert type(layer).__name__ == "QuantizedRecurrent" and layer.dynamic
    for name, (qw, s, zp) in layer.qweights.items():
        w = getattr(m[0], name)
        assert qw.dtype == np.int8 and qw.shape == w.shape
        assert s.shape == ((w.shape[0],) if granularity == "per_channel" else ())
        if scheme == "symmetric":   # one scale per gate unit (row): max|row| / 127
            np.testing.assert_allclose(s, np.abs(w).max(axis=1) / 127, rtol=1e-6)
    p = pfc.export_onnx(q, tmp_path / "q.onnx", input_shape=(6, 5))
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops(p) and not ops(p) & {"GRU", "LSTM", "RNN"}
    x = data()
    y = q(x)
    np.testing.assert_allclose(run(p, x), y, rtol=1e-5, atol=1e-5)
    assert 0 < np.abs(y - m(x)).max() < 0.1        # quantized (not the float model), and close to it
    # weights only: the ONNX recurrent op with the dequantized matrices
    w = pfc.quantize(m, 8, scheme=scheme, granularity=granularity)
    assert not w[0].dynamic
    pw = pfc.export_onnx(w, tmp_path / "w.onnx", input_shape=(6, 5))
    np.testing.assert_allclose(run(pw, x), w(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="quantization-aware training of a recurrent layer"):
        pfc.fit(q, x, np.array([0, 1, 2, 0]), epochs=1, progress=False)


def test_int8_product_is_the_integer_arithmetic():
    """``QuantizedRecurrent.product`` against an int32 reference: DynamicQuantizeLinear of the operand (uint8,
    range containing 0), int32 accumulation, one float32 rescale."""
    m = seq_model("GRU")
    q = pfc.quantize(m, 8, granularity="per_channel", activations="dynamic")[0]
    a = np.random.default_rng(5).normal(size=(3, 7)).astype(np.float32)
    lo, hi = np.float32(min(a.min(), 0)), np.float32(max(a.max(), 0))
    s_a = np.float32((hi - lo) / np.float32(255))
    zp = np.clip(np.rint(-lo / s_a), 0, 255).astype(np.int32)
    aq = np.clip(np.rint(a / s_a) + zp, 0, 255).astype(np.int32)
    qw, s_w, _ = q.qweights["Wh"]
    acc = (aq - zp) @ qw[7:14].astype(np.int32).T
    want = acc.astype(np.float32) * (s_a * s_w[7:14]).astype(np.float32)
    np.testing.assert_array_equal(q.product(a, "Wh", 7, 14), want)


def test_quantized_embedding_per_token_int8_export(tmp_path):
    m = pfc.parse("Chain(Embedding(11 => 5), GRU(5 => 4), flatten, Dense(24 => 3))", seed=3)
    ids = np.random.default_rng(0).integers(0, 11, (4, 6)).astype(np.float32)
    q = pfc.quantize(m, 8, granularity="per_channel", activations="dynamic")
    emb = q[0]
    assert type(emb).__name__ == "QuantizedEmbedding" and emb.w_scale.shape == (11,)
    np.testing.assert_allclose(emb.w_scale, np.abs(m[0].weight).max(axis=0) / 127, rtol=1e-6)   # per token
    np.testing.assert_array_equal(emb(ids), emb.weight_dequantized().T[ids.astype(int)])
    assert np.abs(emb.weight_dequantized() - m[0].weight).max() <= emb.w_scale.max() / 2 + 1e-7
    p = pfc.export_onnx(q, tmp_path / "e.onnx", input_shape=(6,))
    tables = [t for t in onnx.load(str(p)).graph.initializer if tuple(t.dims) == (11, 5)]
    assert [t.data_type for t in tables] == [onnx.TensorProto.INT8]     # the file holds the int8 table
    np.testing.assert_allclose(run(p, ids), q(ids), rtol=1e-5, atol=1e-5)
    # dequantize() gives the float model of the dequantized weights; format="fp32" writes exactly that
    d = q.dequantize()
    assert str(d) == str(m) and np.array_equal(d[0].weight, emb.weight_dequantized())
    np.testing.assert_array_equal(d[1].Wh, q[1].dequantize().Wh)
    pf = pfc.export_onnx(q, tmp_path / "f.onnx", input_shape=(6,), format="fp32")
    np.testing.assert_allclose(run(pf, ids), d(ids), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="layers\\[1\\]: QuantizedEmbedding .* has no archive form"):
        pfc.save_compressed(tmp_path / "q.pfcz", q)
    assert not (tmp_path / "q.pfcz").exists()
    # straight-through QAT of the table: fit changes the shadow table, the next forward requantizes it
    qm = pfc.quantize(pfc.Chain(m[0], pfc.flatten, pfc.Dense(30, 3, seed=1)), 8, granularity="per_channel")
    before = qm[0].qweight.copy()
    pfc.fit(qm, ids, np.array([0, 1, 2, 0]), epochs=3, opt=pfc.Adam(0.05), progress=False)
    qm(ids)
    assert not np.array_equal(before, qm[0].qweight) and not np.array_equal(qm[0].float_layer.weight, m[0].weight)
    np.testing.assert_allclose(qm[0].weight_dequantized(), qm[0].float_layer.weight, atol=qm[0].w_scale.max())


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_pytorch_exported_models_import_with_parity(kind, tmp_path):
    path = TORCH / f"torch_{kind}.onnx"
    m = pfc.import_onnx(path)
    assert str(m) == f"Chain({kind.upper()}(5 => 7), laststep, Dense(7 => 3))"
    x = np.random.default_rng(3).normal(size=(9, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(m(x), run(path, x), rtol=1e-5, atol=1e-5)
    # and back out through our exporter (the ONNX op with PyTorch's b_hn as Rb_h)
    back = pfc.export_onnx(m, tmp_path / "back.onnx", input_shape=(6, 5))
    np.testing.assert_allclose(run(back, x), m(x), rtol=1e-5, atol=1e-5)
    if kind == "gru":
        cell = m[0].cell
        assert cell.bias_hn is not None and np.abs(cell.bias_hn).max() > 0.1
        with pytest.raises(ValueError, match="b_hn"):
            pfc.save(tmp_path / "gru.jld2", m)
        m[0].onnx_form = "unrolled"       # the unrolled form adds b_hn too
        u = pfc.export_onnx(m, tmp_path / "u.onnx", input_shape=(6, 5))
        np.testing.assert_allclose(run(u, x), m(x), rtol=1e-5, atol=1e-5)


def test_gru_bias_hn_gradient_and_pruning():
    m = pfc.import_onnx(TORCH / "torch_gru.onnx").astype(np.float64)
    x = np.random.default_rng(1).normal(size=(3, 6, 5))
    y, cache = m.forward(x)
    dy = np.random.default_rng(2).normal(size=y.shape)
    _, grads = m.backward(cache, dy)
    b = m[0].cell.bias_hn
    eps = 1e-6
    for i in range(len(b)):
        old = b[i]
        b[i] = old + eps
        up = float((m(x) * dy).sum())
        b[i] = old - eps
        down = float((m(x) * dy).sum())
        b[i] = old
        np.testing.assert_allclose(grads["layers[1].bias_hn"][i], (up - down) / (2 * eps), rtol=1e-5, atol=1e-9)
    layer = m[0].copy()
    layer.keep_hidden(np.array([0, 3, 5]))
    np.testing.assert_array_equal(layer.cell.bias_hn, b[[0, 3, 5]])
    # through laststep (channelwise): the Dense after it loses the pruned units' columns
    small = pfc.prune_hidden_units(m, 0.5)
    keep = small.records[-1]["kept"]["layers[1]"]
    assert str(small) == "Chain(GRU(5 => 3), laststep, Dense(3 => 3))"
    np.testing.assert_array_equal(small[0].cell.bias_hn, b[keep])
    np.testing.assert_array_equal(small[2].weight, m[2].weight[:, keep])
    with pytest.raises(ValueError, match="layers\\[1\\].*b_hn"):     # the archive's Flux form has no b_hn
        pfc.save_compressed(Path(tempfile.mkdtemp()) / "g.pfcz", m)


def test_laststep_layer(tmp_path):
    m = pfc.parse("Chain(LSTM(3 => 4), laststep, Dense(4 => 2))", seed=0)
    assert str(m) == "Chain(LSTM(3 => 4), laststep, Dense(4 => 2))" and m[1].julia() == "x -> x[:, end, :]"
    x = np.random.default_rng(0).normal(size=(5, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(m[:2](x), m[0](x)[:, -1])
    assert m.output_shape((6, 3)) == (2,)
    dy = np.ones((5, 4), np.float32)
    dx, _ = pfc.laststep.backward(pfc.laststep.forward(m[0](x))[1], dy)
    assert dx.shape == (5, 6, 4) and dx[:, -1].sum() == 20 and dx[:, :-1].sum() == 0
    p = pfc.export_onnx(m, tmp_path / "l.onnx", input_shape=(6, 3))
    np.testing.assert_allclose(run(p, x), m(x), rtol=1e-5, atol=1e-6)
    assert str(pfc.import_onnx(p)) == str(m)
    with pytest.raises(ValueError, match="laststep"):
        pfc.laststep(np.zeros((2, 3)))
