"""Recurrent layers as Flux >= 0.15 defines them: RNN/LSTM/GRU/GRUv3 and their cells.

Forward against a transcription of Flux's cell formulas (one time step at a time, Flux's (features, batch)
layout), BPTT against finite differences, Flux.state / JLD2 both ways (also Flux <= 0.14 ``Recur`` structs),
ONNX recurrent ops with onnxruntime parity and import back.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.io.jld2 import JuliaStruct, JuliaType
from pyflux_compress.io.checkpoint import rebuild

KINDS = ["RNN", "LSTM", "GRU", "GRUv3"]
sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731


def flux_reference(layer, x):
    """Flux's formulas verbatim in Flux's layout: x (in, len, batch) -> (out, len, batch)."""
    c = layer.cell
    Wi, Wh = c.Wi.astype(np.float64), c.Wh.astype(np.float64)
    b = np.zeros(Wi.shape[0]) if c.bias is None else c.bias.astype(np.float64)
    X = np.transpose(x, (2, 1, 0)).astype(np.float64)   # (in, len, batch)
    H, B = c.hidden, X.shape[2]
    h, cs = np.zeros((H, B)), np.zeros((H, B))
    out = []
    for t in range(X.shape[1]):
        xt = X[:, t, :]
        if layer.flux_name == "RNN":
            h = np.tanh(Wi @ xt + Wh @ h + b[:, None])
        elif layer.flux_name == "LSTM":
            g = Wi @ xt + Wh @ h + b[:, None]
            i, f, cc, o = np.split(g, 4)
            cs = sig(f) * cs + sig(i) * np.tanh(cc)
            h = sig(o) * np.tanh(cs)
        else:
            gx, bs = np.split(Wi @ xt, 3), np.split(b[:, None], 3)
            gh = np.split(Wh @ h, 3)
            r = sig(gx[0] + gh[0] + bs[0])
            z = sig(gx[1] + gh[1] + bs[1])
            if layer.flux_name == "GRU":
                ht = np.tanh(gx[2] + r * gh[2] + bs[2])
            else:
                ht = np.tanh(gx[2] + c.Wh_htilde.astype(np.float64) @ (r * h) + bs[2])
            h = (1 - z) * ht + z * h
        out.append(h)
    return np.transpose(np.stack(out, axis=1), (2, 1, 0))


def make(kind, n_in=3, n_out=4, seed=0, **kw):
    return getattr(pfc, kind)(n_in, n_out, seed=seed, **kw)


def data(n=5, length=6, n_in=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, length, n_in)).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_flux_formulas(kind):
    layer = make(kind)
    layer.cell.bias[...] = np.random.default_rng(5).normal(size=layer.cell.bias.shape)
    x = data()
    y = layer(x)
    assert y.shape == (5, 6, 4) and y.dtype == np.float32
    np.testing.assert_allclose(y, flux_reference(layer, x), rtol=1e-5, atol=1e-6)
    # the cell alone is one step from the zero state; the layer's last output is the final state
    first = layer.cell(x[:, 0])
    first = first[0] if kind == "LSTM" else first
    np.testing.assert_allclose(first, y[:, 0], rtol=1e-6, atol=1e-7)
    ys, st = layer.run(x)
    np.testing.assert_array_equal((st[0] if kind == "LSTM" else st), y[:, -1])
    # an initial state is honoured: running the second half from the state after the first half
    y1, s1 = layer.run(x[:, :3])
    y2, _ = layer.run(x[:, 3:], s1)
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, rtol=1e-6, atol=1e-7)
    # unbatched (len, in) and return_state
    np.testing.assert_allclose(layer(x[2]), y[2], rtol=1e-6, atol=1e-7)
    ys, st2 = make(kind, return_state=True)(x)
    assert ys.shape == y.shape


@pytest.mark.parametrize("kind", KINDS)
def test_bptt_gradient_check(kind):
    model = pfc.Chain(make(kind, seed=2), pfc.flatten, pfc.Dense(24, 2, seed=3)).astype(np.float64)
    x = data(n=3, length=6).astype(np.float64)
    y, cache = model.forward(x)
    dy = np.random.default_rng(4).normal(size=y.shape)
    dx, grads = model.backward(cache, dy)
    eps = 1e-6
    rng = np.random.default_rng(0)

    def loss():
        return float((model(x) * dy).sum())

    for name, arr in model[0].params().items():
        for idx in [tuple(rng.integers(0, s) for s in arr.shape) for _ in range(12)]:
            old = arr[idx]
            arr[idx] = old + eps
            up = loss()
            arr[idx] = old - eps
            down = loss()
            arr[idx] = old
            np.testing.assert_allclose(grads[f"layers[1].{name}"][idx], (up - down) / (2 * eps), rtol=1e-5,
                                       atol=1e-8, err_msg=f"{kind}.{name}{idx}")
    for idx in [(0, 0, 0), (2, 5, 1), (1, 3, 2)]:
        old = x[idx]
        x[idx] = old + eps
        up = loss()
        x[idx] = old - eps
        down = loss()
        x[idx] = old
        np.testing.assert_allclose(dx[idx], (up - down) / (2 * eps), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("arch", ["Chain(RNN(3 => 4, tanh), flatten, Dense(24 => 2))",
                                  "Chain(RNN(3 => 4, relu; bias=false), flatten, Dense(24 => 2))",
                                  "Chain(LSTM(3 => 4), flatten, Dense(24 => 2))",
                                  "Chain(GRU(3 => 4), flatten, Dense(24 => 2))",
                                  "Chain(GRUv3(3 => 4), flatten, Dense(24 => 2))"])
def test_syntax_jld2_onnx(arch, tmp_path):
    model = pfc.parse(arch, seed=4)
    assert str(model) == arch and str(pfc.parse(str(model))) == arch
    x = data()
    # JLD2: Flux.state nesting (cell = (Wi, Wh, bias|b, ...),) both ways, bit-exact
    st = pfc.io.checkpoint.state(model)
    rnn_state = st["layers"][0]["cell"]
    assert list(rnn_state.keys()) == list(model[0].cell.flux_fields)
    pfc.save(tmp_path / "m.jld2", model)
    back = pfc.load(tmp_path / "m.jld2")
    assert str(back) == arch
    for k, v in model.params().items():
        np.testing.assert_array_equal(back.params()[k], v)
    fresh = pfc.parse(arch, seed=77)
    pfc.load_state(fresh, tmp_path / "m.jld2")
    np.testing.assert_array_equal(fresh(x), model(x))
    # ONNX recurrent op, onnxruntime parity, import back
    ort = pytest.importorskip("onnxruntime")
    path = pfc.export_onnx(model, tmp_path / "m.onnx", input_shape=(6, 3))
    import onnx
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert model[0].onnx_op in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], model(x), rtol=1e-5, atol=1e-5)
    imported = pfc.import_onnx(path)
    assert str(imported) == arch
    np.testing.assert_allclose(imported(x), model(x), rtol=1e-6, atol=1e-6)


def _t(name, *params):
    return JuliaType(name, tuple(params))


def test_flux_structs_015_and_recur_014():
    lstm = make("LSTM", seed=8)
    arr = _t("Core.Array")
    cell_t = _t("Flux.LSTMCell", arr, arr, arr)
    cell = JuliaStruct(str(cell_t), {"Wi": lstm.cell.Wi, "Wh": lstm.cell.Wh, "bias": lstm.cell.bias}, cell_t)
    # Flux 0.16.1: LSTM{return_state, M}
    lay_t = _t("Flux.LSTM", True, cell_t)
    chain = JuliaStruct("Flux.Chain", {"layers": (JuliaStruct(str(lay_t), {"cell": cell}, lay_t),)},
                        _t("Flux.Chain"))
    m = rebuild(chain, "model")
    assert str(m) == "Chain(LSTM(3 => 4; return_state=true))"
    np.testing.assert_array_equal(m[0].cell.Wh, lstm.cell.Wh)
    # Flux 0.14: Recur(LSTMCell(Wi, Wh, b, state0), state)
    old_t = _t("Flux.LSTMCell", arr, arr, _t("Core.Tuple"))
    zeros = np.zeros((4, 1), np.float32)
    old = JuliaStruct(str(old_t), {"Wi": lstm.cell.Wi, "Wh": lstm.cell.Wh, "b": lstm.cell.bias,
                                   "state0": (zeros, zeros)}, old_t)
    rec_t = _t("Flux.Recur", old_t, _t("Core.Tuple"))
    chain14 = JuliaStruct("Flux.Chain", {"layers": (JuliaStruct(str(rec_t), {"cell": old, "state": (zeros, zeros)},
                                                                rec_t),)}, _t("Flux.Chain"))
    m14 = rebuild(chain14, "model")
    assert str(m14) == "Chain(LSTM(3 => 4))"
    x = data()
    np.testing.assert_array_equal(m14(x), lstm(x))
    # GRUv3 in 0.14 stored Wh as (2out, out)
    g = make("GRUv3", seed=9)
    g3_t = _t("Flux.GRUv3Cell", arr, arr, arr, arr, arr)
    g3 = JuliaStruct(str(g3_t), {"Wi": g.cell.Wi, "Wh": g.cell.Wh[:8], "b": g.cell.bias, "Wh_h̃": g.cell.Wh_htilde,
                                 "state0": np.zeros((4, 1), np.float32)}, g3_t)
    rg_t = _t("Flux.Recur", g3_t, arr)
    mg = rebuild(JuliaStruct("Flux.Chain", {"layers": (JuliaStruct(str(rg_t), {"cell": g3, "state": None},
                                                                   rg_t),)}, _t("Flux.Chain")), "model")
    g.cell.Wh[8:] = 0
    np.testing.assert_allclose(mg(x), g(x), rtol=1e-6)
    # a learnt non-zero state0 is refused, naming the path
    bad = JuliaStruct(str(old_t), {"Wi": lstm.cell.Wi, "Wh": lstm.cell.Wh, "b": lstm.cell.bias,
                                   "state0": (zeros + 1, zeros)}, old_t)
    with pytest.raises(ValueError, match=r"layers\[1\].*state0"):
        rebuild(JuliaStruct("Flux.Chain", {"layers": (JuliaStruct(str(rec_t), {"cell": bad, "state": None},
                                                                  rec_t),)}, _t("Flux.Chain")), "model")


@pytest.mark.parametrize("kind", KINDS)
def test_prune_quantize_and_hidden_units(kind):
    model = pfc.Chain(make(kind, seed=2), pfc.flatten, pfc.Dense(24, 2, seed=3))
    pruned = pfc.prune(model, 0.5)
    assert {"layers[1].Wi", "layers[1].Wh"} <= set(pruned.records[-1]["per_layer"])
    assert np.mean(pruned[0].Wi == 0) == pytest.approx(0.5, abs=0.02)
    assert np.count_nonzero(model[0].Wi == 0) == 0
    # gate-coupled hidden-unit slicing: the kept units compute exactly what they computed before
    x = data()
    layer = model[0].copy()
    keep = np.array([0, 2, 3])
    layer.keep_hidden(keep)
    assert layer.hidden == 3 and layer.Wi.shape[0] == layer.cell.gates * 3
    # units 1 removed changes the others unless its outgoing recurrent weights are zero: zero them first
    ref = model[0].copy()
    ref.Wh[:, 1] = 0
    if kind == "GRUv3":
        ref.cell.Wh_htilde[:, 1] = 0
    layer = ref.copy()
    layer.keep_hidden(keep)
    np.testing.assert_allclose(layer(x), ref(x)[:, :, keep], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_prune_hidden_units_gate_coupled(kind):
    model = pfc.Chain(make(kind, seed=2), pfc.tanh, make(kind, 4, 5, seed=3), pfc.flatten, pfc.Dense(30, 2, seed=4))
    small = pfc.prune_hidden_units(model, 0.5)
    rec = small.records[-1]
    assert rec["per_layer"] == {"layers[1]": 0.5, "layers[3]": 0.6}   # round(2.5) = 3 of 5
    assert small[0].hidden == 2 and small[2].in_features == 2 and small[2].hidden == 2
    assert small[4].in_features == 6 * 2 and rec["params_after"] < rec["params_before"]
    assert str(small) == (f"Chain({kind}(3 => 2{', tanh' if kind == 'RNN' else ''}), tanh, "
                          f"{kind}(2 => 2{', tanh' if kind == 'RNN' else ''}), flatten, Dense(12 => 2))")
    # exactness: silence the units pruning removed (zero incoming gate rows: their state stays 0 in every cell
    # type), prune again: the same units go, and the smaller model computes exactly the same outputs
    ref = model.copy()
    for i in (0, 2):
        cell = ref[i].cell
        drop = np.setdiff1d(np.arange(cell.hidden), rec["kept"][f"layers[{i + 1}]"])
        rows = np.concatenate([drop + k * cell.hidden for k in range(cell.gates)])
        cell.Wi[rows] = 0
        cell.Wh[rows] = 0
        cell.bias[rows] = 0
        if kind == "GRUv3":
            cell.Wh_htilde[drop] = 0
    x = data()
    ref_small = pfc.prune_hidden_units(ref, 0.5)
    assert ref_small.records[-1]["kept"] == rec["kept"]
    np.testing.assert_allclose(ref_small(x), ref(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no recurrent layer"):
        pfc.prune_hidden_units(pfc.parse("Chain(Dense(2 => 3))"), 0.5)


def test_bad_input_and_syntax_errors_name_the_layer():
    lstm = make("LSTM")
    with pytest.raises(ValueError, match=r"LSTM\(3 => 4\) expects input \(N, len, 3\)"):
        lstm(np.zeros((2, 5, 7), np.float32))
    with pytest.raises(ValueError, match=r"state must have 2 part"):
        lstm.run(data(), np.zeros(4))
    with pytest.raises(ValueError, match=r"state must have shape \(4,\) or \(5, 4\)"):
        make("GRU").run(data(), np.zeros(3))
    with pytest.raises(ValueError, match="return_state=true returns"):
        pfc.Chain(make("LSTM", return_state=True), pfc.flatten).forward(data())
    with pytest.raises(ValueError, match=r"per-sample input \(len, 3\)"):
        pfc.parse("Chain(LSTM(3 => 4), flatten, Dense(24 => 2))")(np.zeros((2, 6, 5)))
    with pytest.raises(pfc.FluxSyntaxError, match=r"expected LSTM\(in => out\)"):
        pfc.parse("LSTM(3, 4)")
    with pytest.raises(pfc.FluxSyntaxError, match="return_state"):
        pfc.parse("LSTMCell(3 => 4; return_state=true)")
    assert str(pfc.parse("RNN(2 => 3, relu; return_state=true)")) == "RNN(2 => 3, relu; return_state=true)"
    assert str(pfc.parse("GRU(2 => 3; bias=false, return_state=true)")) == "GRU(2 => 3; bias=false, return_state=true)"
    with pytest.raises(ValueError, match="ONNX RNN form"):
        pfc.export_onnx(pfc.Chain(pfc.RNN(3, 4, pfc.gelu), pfc.flatten), "/nonexistent/x.onnx", input_shape=(6, 3))


@pytest.mark.parametrize("cell", ["RNNCell(3 => 4, tanh)", "GRUCell(3 => 4)", "GRUv3Cell(3 => 4)"])
def test_cells_as_layers_gradient_and_state(cell, tmp_path):
    arch = f"Chain({cell}, Dense(4 => 2))"
    model = pfc.parse(arch, seed=6)
    assert str(model) == arch
    m64 = model.astype(np.float64)
    x = np.random.default_rng(0).normal(size=(5, 3))
    y, cache = m64.forward(x)
    dy = np.random.default_rng(1).normal(size=y.shape)
    _, grads = m64.backward(cache, dy)
    w = m64[0].Wi
    eps = 1e-6
    for idx in [(0, 0), (w.shape[0] // 2, 2), (w.shape[0] - 1, 1)]:
        old = w[idx]
        w[idx] = old + eps
        up = float((m64(x) * dy).sum())
        w[idx] = old - eps
        down = float((m64(x) * dy).sum())
        w[idx] = old
        np.testing.assert_allclose(grads[f"layers[1].Wi"][idx], (up - down) / (2 * eps), rtol=1e-5, atol=1e-9)
    pfc.save(tmp_path / "c.jld2", model)
    back = pfc.load(tmp_path / "c.jld2")
    assert str(back) == arch
    np.testing.assert_array_equal(back(x.astype(np.float32)), model(x.astype(np.float32)))


def test_lstm_cell_returns_its_state_as_flux():
    cell = pfc.LSTMCell(3, 4, seed=0)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    h, c = cell(x)
    h2, c2 = cell(x, (h, c))
    ref = pfc.LSTM(cell).run(np.stack([x, x], axis=1))[1]
    np.testing.assert_allclose(h2, ref[0], rtol=1e-6)
    np.testing.assert_allclose(c2, ref[1], rtol=1e-6)
    with pytest.raises(ValueError, match=r"LSTMCell\(3 => 4\) returns its state"):
        pfc.Chain(cell, pfc.Dense(4, 2))(x)


def test_corpus_flux014_recur_lstm_checkpoint():
    """A real Flux 0.14 file: Chain(Recur(LSTMCell(4, 64)), <closure>, Dense) -> the Recur is LSTM(4 => 64)."""
    from _corpus import CORPUS
    f = CORPUS / "dpshade22__JuliaMidiParsing__trained_model.jld2"
    if not f.is_file():
        pytest.skip("JLD2 corpus not available")
    recur = pfc.jld2.load(f, "model").layers[0]
    lstm = rebuild(recur, "model.layers[1]")
    assert str(lstm) == "LSTM(4 => 64)"
    cell = recur.fields["cell"].fields
    np.testing.assert_array_equal(lstm.cell.Wi, cell["Wi"])
    np.testing.assert_array_equal(lstm.cell.Wh, cell["Wh"])
    np.testing.assert_array_equal(lstm.cell.bias, cell["b"])
    # 0.14 applied the cell one step per call: the 0.15 layer's outputs are those steps
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    h, c = np.zeros((2, 64), np.float32), np.zeros((2, 64), np.float32)
    for t in range(3):
        h, c = lstm.cell(x[:, t], (h, c))
    np.testing.assert_allclose(lstm(x)[:, -1], h, rtol=1e-5, atol=1e-6)
