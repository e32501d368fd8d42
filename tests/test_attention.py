"""MultiHeadAttention (Flux src/layers/attention.jl) and ``first``: forward against torch's reference
attention, gradient checks (with and without a causal mask), JLD2 both ways, ONNX parity, head pruning and the
registry-driven compressions."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc

ARCH = "Chain(Dense(4 => 8), MultiHeadAttention(8; nheads=2, bias=true), first, Dense(8 => 3))"


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)


@pytest.fixture
def model():
    return pfc.parse(ARCH, seed=1)


def test_fields_and_syntax():
    m = pfc.MultiHeadAttention(8, seed=0)
    assert list(m.flux_state()) == ["nheads", "q_proj", "k_proj", "v_proj", "attn_drop", "out_proj"]
    assert m.nheads == 8 and m.q_proj.bias is None and m.attn_drop.p == 0.0       # Flux defaults
    assert str(m) == "MultiHeadAttention(8; nheads=8)"
    for s in ["MultiHeadAttention(8 => (16, 8) => 4; nheads=4, bias=true)",
              "MultiHeadAttention((8, 6, 6) => 16 => 4; nheads=4)",
              "MultiHeadAttention(8 => 16 => 4; nheads=2, dropout_prob=0.1)", ARCH]:
        assert str(pfc.parse(s)) == s
    m = pfc.parse("MultiHeadAttention((8, 6, 6) => (16, 12) => 4; nheads=4)")
    assert [p.weight.shape for p in (m.q_proj, m.k_proj, m.v_proj, m.out_proj)] == [(16, 8), (16, 6), (12, 6),
                                                                                       (4, 12)]
    with pytest.raises(ValueError, match="divisible by nheads"):
        pfc.MultiHeadAttention(10, nheads=3)
    with pytest.raises(ValueError, match="dims"):
        pfc.MultiHeadAttention("x")
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*\(N, len, features\)"):
        pfc.MultiHeadAttention(8, nheads=2)(np.zeros((2, 8), np.float32))


@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_torch(causal):
    torch = pytest.importorskip("torch")
    m = pfc.MultiHeadAttention(8, nheads=2, bias=True, seed=0)
    x = np.random.default_rng(1).normal(size=(3, 5, 8)).astype(np.float32)
    mask = pfc.make_causal_mask(x) if causal else None
    t = torch.nn.MultiheadAttention(8, 2, bias=True, batch_first=True)
    with torch.no_grad():
        t.in_proj_weight.copy_(torch.tensor(np.concatenate([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight])))
        t.in_proj_bias.copy_(torch.tensor(np.concatenate([m.q_proj.bias, m.k_proj.bias, m.v_proj.bias])))
        t.out_proj.weight.copy_(torch.tensor(m.out_proj.weight))
        t.out_proj.bias.copy_(torch.tensor(m.out_proj.bias))
        xt = torch.tensor(x)
        yt, at = t(xt, xt, xt, attn_mask=None if mask is None else torch.tensor(~mask),
                   average_attn_weights=False)
    y, a = m(x, mask=mask)
    assert y.shape == (3, 5, 8) and a.shape == (3, 2, 5, 5)
    np.testing.assert_allclose(y, yt.numpy(), atol=1e-5)
    np.testing.assert_allclose(a, at.numpy(), atol=1e-6)
    if causal:
        assert np.all(a[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0)


def test_causal_mask_is_nnlib_triu_reversed():
    # NNlib: make_causal_mask(x) = triu(trues(len, len)), [kv, q]: key i visible to query j when i <= j
    flux = np.triu(np.ones((4, 4), bool))
    np.testing.assert_array_equal(pfc.make_causal_mask(4), flux.T)


def _numeric_check(f, arrays, eps=1e-6, n=12, seed=0):
    """Compare analytic grads to central differences at ``n`` random entries of each array."""
    rng = np.random.default_rng(seed)
    for arr, grad in arrays:
        for i in rng.choice(arr.size, size=min(n, arr.size), replace=False):
            idx = np.unravel_index(i, arr.shape)
            old = arr[idx]
            arr[idx] = old + eps
            up = f()
            arr[idx] = old - eps
            down = f()
            arr[idx] = old
            assert abs((up - down) / (2 * eps) - grad[idx]) < 1e-6 * max(1.0, abs(grad[idx])), idx


@pytest.mark.parametrize("mask", [None, "causal", "random"])
def test_gradient_check(mask):
    m = pfc.MultiHeadAttention((6, (12, 6)), nheads=3, bias=True, seed=2).astype(np.float64)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 6))
    mk = {None: None, "causal": pfc.make_causal_mask(x), "random": rng.random((2, 1, 4, 4)) > 0.3}[mask]
    if mask == "random":
        mk[..., 0] = True                        # every query sees at least one key
    dy, da = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 3, 4, 4))

    def loss():
        (y, a), _ = m.forward(x, mask=mk)
        return float((y * dy).sum() + (a * da).sum())

    _, cache = m.forward(x, mask=mk)
    dx, grads = m.backward(cache, (dy, da))
    params = m.params()
    assert set(grads) == set(params)
    _numeric_check(loss, [(params[k], grads[k]) for k in params] + [(x, dx)])


def test_gradient_check_cross_attention():
    m = pfc.MultiHeadAttention(((6, 5, 3), (8, 4), 7), nheads=2, seed=4).astype(np.float64)
    rng = np.random.default_rng(5)
    q, k, v = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 4, 5)), rng.normal(size=(2, 4, 3))
    dy = rng.normal(size=(2, 3, 7))

    def loss():
        return float((m(q, k, v)[0] * dy).sum())

    _, cache = m.forward((q, k, v))
    (dq, dk, dv), grads = m.backward(cache, dy)
    _numeric_check(loss, [(q, dq), (k, dk), (v, dv), (m.k_proj.weight, grads["k_proj.weight"])])


def test_chain_training_reduces_loss(model, x):
    y = np.array([0, 1, 2])
    m64 = model.astype(np.float64)
    X = x.astype(np.float64)
    out, cache = m64.forward(X)
    dy = np.random.default_rng(6).normal(size=out.shape)
    _, grads = m64.backward(cache, dy)
    w = m64[1].v_proj.weight
    g = grads["layers[2].v_proj.weight"]
    _numeric_check(lambda: float((m64(X) * dy).sum()), [(w, g)])
    Xt = np.repeat(x, 8, axis=0)
    yt = np.tile(y, 8)
    hist = pfc.fit(model, Xt, np.eye(3)[yt][:, None, :].repeat(5, 1), epochs=30, batchsize=8, loss="mse",
                   opt=pfc.Adam(1e-2), progress=False)
    assert hist.loss[-1] < 0.5 * hist.loss[0]


def test_jld2_round_trip(model, x, tmp_path):
    path = tmp_path / "mha.jld2"
    pfc.save(path, model)
    back = pfc.load(path)
    assert str(back) == ARCH
    np.testing.assert_array_equal(back[1].k_proj.weight, model[1].k_proj.weight)
    np.testing.assert_array_equal(back(x), model(x))
    fresh = pfc.parse(ARCH, seed=99)
    pfc.load_state(fresh, path)
    np.testing.assert_array_equal(fresh[1].out_proj.bias, model[1].out_proj.bias)
    np.testing.assert_array_equal(fresh(x), model(x))


def test_onnx_parity(model, x, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = pfc.export_onnx(model, tmp_path / "mha.onnx", input_shape=(5, 4))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"MatMul", "Reshape", "Transpose", "Softmax"} <= ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xb = np.random.default_rng(7).normal(size=(16, 5, 4)).astype(np.float32)
    out = sess.run(None, {sess.get_inputs()[0].name: xb})[0]
    assert np.abs(out - model(xb)).max() <= 1e-5


def test_keep_heads_is_exact_head_removal():
    m = pfc.MultiHeadAttention(8, nheads=4, bias=True, seed=8)
    x = np.random.default_rng(9).normal(size=(2, 5, 8)).astype(np.float32)
    small = m.copy()
    small.keep_heads([0, 2])
    assert small.nheads == 2 and small.q_proj.weight.shape == (4, 8) and small.out_proj.weight.shape == (8, 4)
    # reference: zero heads 1 and 3's out_proj columns in the full layer (their contribution)
    ref = m.copy()
    for h in (1, 3):
        ref.out_proj.weight[:, 2 * h:2 * h + 2] = 0
    np.testing.assert_allclose(small(x)[0], ref(x)[0], atol=1e-5)
    np.testing.assert_allclose(small(x)[1], m(x)[1][:, [0, 2]], atol=1e-6)
    assert np.argsort(m.head_scores()).shape == (4,)
    with pytest.raises(ValueError, match="heads to keep"):
        m.copy().keep_heads([4])


def test_registry_compressions(model, x):
    paths = [p for p, _ in pfc.modules(model)]
    assert "layers[2].q_proj" in paths and "layers[2].out_proj" in paths
    pruned = pfc.prune(model, 0.5)
    assert "layers[2].v_proj" in pruned.records[-1]["per_layer"]
    w = pruned[1].v_proj.weight
    assert np.count_nonzero(w == 0) == w.size // 2
    q = pfc.quantize(model, bits=8)
    assert "layers[2].q_proj" in q.records[-1]["per_layer"]
    np.testing.assert_allclose(q(x), model(x), atol=0.05)


def test_gradient_check_through_attention_dropout():
    m = pfc.MultiHeadAttention(6, nheads=2, dropout_prob=0.3, seed=10).astype(np.float64)
    rng = np.random.default_rng(11)
    x, dy = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 4, 6))

    def run():
        return m.forward(x, train=True, rng=np.random.default_rng(12))   # the same dropout mask every time

    (_, alpha), cache = run()
    assert np.any(alpha == 0) and not np.any(m(x)[1] == 0)            # dropout acts in training only
    _, grads = m.backward(cache, dy)
    _numeric_check(lambda: float((run()[0][0] * dy).sum()), [(m.q_proj.weight, grads["q_proj.weight"]),
                                                             (m.v_proj.weight, grads["v_proj.weight"])])


def test_summary_reads_the_tuple(model):
    text = model.summary((5, 4))
    assert "first," in text and "output (5, 8)" in text.split("first,")[1].splitlines()[0]
    assert model.output_shape((5, 4)) == (5, 3)
