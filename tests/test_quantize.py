"""Quantization: rounding rules, per-channel scales, calibration, integer reference, QAT, errors, acceptance."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.compression.quantize import (QuantizedConv, QuantizedDense, activation_qparams,
                                                  dequantize_weight, integer_reference_forward, qrange,
                                                  quantize_weight)

SMALL = "Chain(Dense(20 => 16, relu), Dense(16 => 8, tanh), Dense(8 => 4))"


@pytest.fixture
def small(rng):
    return pfc.parse(SMALL, seed=3)


@pytest.fixture
def X20(rng):
    return rng.normal(size=(64, 20)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# array-level rules


def test_integer_ranges():
    assert qrange(8, "symmetric") == (-127, 127)
    assert qrange(8, "affine") == (-128, 127)
    assert qrange(4, "symmetric") == (-7, 7)
    assert qrange(4, "affine") == (-8, 7)
    assert qrange(1, "symmetric") == (-1, 1)


def test_round_half_to_even_and_clamp():
    # amax = 127 -> scale exactly 1, so w / scale are the exact ties below
    w = np.array([[127.0, 0.5, 1.5, 2.5, -2.5, -0.5, 3.5]], dtype=np.float32)
    q, scale, zp = quantize_weight(w, 8, "symmetric", "per_tensor")
    assert scale == np.float32(1.0) and zp == 0
    np.testing.assert_array_equal(q, [[127, 0, 2, 2, -2, 0, 4]])
    assert q.dtype == np.int8


def test_symmetric_per_channel_scales_and_error_bound(rng):
    w = rng.normal(size=(6, 30)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)[:, None]
    q, scale, zp = quantize_weight(w, 8, "symmetric", "per_channel")
    assert scale.shape == (6,) and scale.dtype == np.float32 and zp.shape == (6,) and not zp.any()
    np.testing.assert_array_equal(scale, (np.abs(w).max(axis=1) / np.float32(127)).astype(np.float32))
    assert q.min() >= -127 and q.max() <= 127
    assert np.all(np.abs(q).max(axis=1) == 127)  # the largest weight of each row maps to qmax
    err = np.abs(dequantize_weight(q, scale, zp) - w)
    assert np.all(err <= scale[:, None] / 2 * (1 + 1e-6))


def test_affine_zero_point_integer_and_zero_exact(rng):
    w = (rng.random((5, 40)) * 3 + 0.2).astype(np.float32)  # all positive: range extended to contain 0
    w[:, 0] = 0.0
    for bits in (8, 4):
        q, scale, zp = quantize_weight(w, bits, "affine", "per_channel")
        qmin, qmax = qrange(bits, "affine")
        assert zp.dtype == np.int32 and np.all((zp >= qmin) & (zp <= qmax))
        assert q.min() >= qmin and q.max() <= qmax
        deq = dequantize_weight(q, scale, zp)
        np.testing.assert_array_equal(deq[:, 0], 0.0)  # zero is exactly representable
        assert np.all(np.abs(deq - w) <= scale[:, None] * 0.5001)


def test_conv_per_channel_axis_is_output_channels(rng):
    w = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    w[..., 4] *= 100  # one output channel with a much larger range
    q, scale, _ = quantize_weight(w, 8, "symmetric", "per_channel")
    assert scale.shape == (5,) and q.shape == w.shape
    np.testing.assert_allclose(scale, np.abs(w).max(axis=(0, 1, 2)) / 127, rtol=1e-6)


def test_binary_alpha_is_mean_abs_per_channel(rng):
    w = rng.normal(size=(4, 10)).astype(np.float32)
    q, alpha, zp = quantize_weight(w, 1, "symmetric", "per_channel")
    assert set(np.unique(q)) <= {-1, 1}
    np.testing.assert_array_equal(q, np.where(w >= 0, 1, -1))
    np.testing.assert_allclose(alpha, np.abs(w).mean(axis=1), rtol=1e-6)
    mask = np.abs(w) > 0.5
    qm, am, _ = quantize_weight(np.where(mask, w, 0), 1, "symmetric", "per_channel", mask)
    assert np.all(qm[~mask] == 0)  # pruned weights stay zero
    np.testing.assert_allclose(am, [np.abs(w[i][mask[i]]).mean() for i in range(4)], rtol=1e-6)


def test_activation_qparams():
    s, zp, lo, hi = activation_qparams(-1.0, 3.0, "affine")
    assert (lo, hi) == (0, 255) and s == np.float32(4.0 / 255) and zp == np.int32(np.rint(1.0 / s))
    s, zp, lo, hi = activation_qparams(-1.0, 3.0, "symmetric")
    assert (lo, hi) == (-127, 127) and zp == 0 and s == np.float32(3.0 / 127)


# ---------------------------------------------------------------------------------------------------------
# the model-level API


def test_quantize_is_pure_and_records(small, X20):
    before = [l.weight.copy() for _, l in small.walk() if hasattr(l, "weight")]
    q = pfc.quantize(small, 8, granularity="per_channel")
    assert isinstance(q, pfc.QuantizedChain)
    after = [l.weight for _, l in small.walk() if hasattr(l, "weight")]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert q.records[-1]["method"] == "quantize" and set(q.records[-1]["per_layer"]) == {
        "layers[1]", "layers[2]", "layers[3]"}
    assert small.records == []
    for _, layer in q.quantized_layers():
        assert layer.qweight.dtype == np.int8 and layer.w_scale.shape == (layer.qweight.shape[0],)
        assert layer.w_zero_point.dtype == np.int32 and layer.act_scale is None
    np.testing.assert_allclose(q(X20), small(X20), atol=0.05)


def test_dequantize_returns_float_chain_matching_forward(small, X20):
    q = pfc.quantize(small, 4, scheme="affine", granularity="per_channel")
    d = q.dequantize()
    assert type(d) is pfc.Chain and str(d) == str(small)
    for (_, ql), (_, dl) in zip(q.quantized_layers(), d.walk()):
        np.testing.assert_array_equal(dl.weight, dequantize_weight(ql.qweight, ql.w_scale, ql.w_zero_point))
    np.testing.assert_allclose(d(X20), q(X20), rtol=1e-5, atol=1e-5)


def test_mixed_precision_dict(small):
    q = pfc.quantize(small, bits={0: 4, "layers[3]": 8})
    kinds = [type(l).__name__ for l in q.layers]
    assert kinds == ["QuantizedDense", "Dense", "QuantizedDense"]
    assert q[0].bits == 4 and q[2].bits == 8 and q[0].qweight.max() <= 7
    q2 = pfc.quantize(small, bits={"layers[1]": 1, 1: None, 2: 2})
    assert q2[0].bits == 1 and type(q2[1]).__name__ == "Dense" and q2[2].bits == 2


def test_calibration_minmax_and_percentile(small, X20):
    q = pfc.quantize(small, 8, scheme="affine", calibration=X20)
    layer = q[0]
    assert layer.calibrated and layer.act_qmin == 0 and layer.act_qmax == 255
    np.testing.assert_allclose(float(layer.act_scale), (X20.max() - min(X20.min(), 0)) / 255, rtol=1e-6)
    h = small[0](X20)  # input of layer 2 = output of layer 1 (float model)
    np.testing.assert_allclose(float(q[1].act_scale), (h.max() - min(h.min(), 0)) / 255, rtol=1e-6)
    qp = pfc.quantize(small, 8, scheme="symmetric", calibration=X20, method="percentile")
    assert float(qp[0].act_scale) <= float(pfc.quantize(small, 8, calibration=X20)[0].act_scale)
    assert qp.records[-1]["settings"]["method"] == "percentile"


@pytest.mark.parametrize("scheme", ["symmetric", "affine"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_integer_reference_exact(trained_mlp, fmnist_flat, scheme, granularity):
    """int8 x int8 -> int32 accumulation then scale == the simulated forward, bit for bit, layer by layer."""
    Xtr, _, Xte, _ = fmnist_flat
    q = pfc.quantize(trained_mlp, 8, scheme=scheme, granularity=granularity, calibration=Xtr[:512])
    x = Xte[:300]
    h_ref = x
    for _, layer in q.quantized_layers():
        sim = layer(h_ref)
        ref = integer_reference_forward(layer, h_ref)
        assert sim.dtype == np.float32
        np.testing.assert_array_equal(sim, ref)
        h_ref = ref
    np.testing.assert_array_equal(q(x), h_ref)


def test_accuracy_int8_and_int4_per_channel(trained_mlp, trained_mlp_accuracy, fmnist_flat):
    """Acceptance: int8 per-channel symmetric drops <= 0.5 pt, int4 per-channel <= 2 pt (no fine-tuning)."""
    _, _, Xte, yte = fmnist_flat
    acc8 = pfc.accuracy(pfc.quantize(trained_mlp, 8, "symmetric", "per_channel"), Xte, yte)
    acc4 = pfc.accuracy(pfc.quantize(trained_mlp, 4, "symmetric", "per_channel"), Xte, yte)
    assert trained_mlp_accuracy - acc8 <= 0.005, (trained_mlp_accuracy, acc8)
    assert trained_mlp_accuracy - acc4 <= 0.02, (trained_mlp_accuracy, acc4)
    # static (calibrated) int8 stays close too
    acc8s = pfc.accuracy(pfc.quantize(trained_mlp, 8, "symmetric", "per_channel",
                                      calibration=fmnist_flat[0][:1000]), Xte, yte)
    assert trained_mlp_accuracy - acc8s <= 0.01


def test_pruned_weights_stay_zero(small):
    pruned = pfc.prune(small, 0.6)
    for bits, scheme in ((8, "symmetric"), (4, "affine"), (1, "symmetric")):
        q = pfc.quantize(pruned, bits, scheme, "per_channel")
        for (_, ql), (_, pl) in zip(q.quantized_layers(), pruned.walk()):
            assert np.all(ql.weight_dequantized()[pl.weight == 0] == 0)


# ---------------------------------------------------------------------------------------------------------
# QAT (straight-through estimator)


def test_ste_gradients_equal_float_layer_on_dequantized_weights(small, X20, rng):
    q = pfc.quantize(small, 4, granularity="per_channel")
    float_eq = q.dequantize()
    y, cache = q.forward(X20, train=True)
    yf, cf = float_eq.forward(X20, train=True)
    np.testing.assert_allclose(y, yf, rtol=1e-5, atol=1e-6)
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx, g = q.backward(cache, dy)
    dxf, gf = float_eq.backward(cf, dy)
    assert set(g) == set(gf)
    for k in g:
        np.testing.assert_allclose(g[k], gf[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, dxf, rtol=1e-4, atol=1e-6)


def test_ste_zero_gradient_outside_calibrated_range(small, X20):
    q = pfc.quantize(small, 8, calibration=X20[:8] * 0.1)  # narrow range: most inputs are clipped
    layer = q[0]
    y, cache = layer.forward(X20, train=True)
    dx, _ = layer.backward(cache, np.ones_like(y))
    outside = np.abs(X20) > float(layer.act_scale) * 127.5
    assert outside.any() and np.all(dx[outside] == 0)


def test_qat_fit_trains_shadow_weights_and_requantizes(fmnist_flat, trained_mlp):
    Xtr, ytr, Xte, yte = fmnist_flat
    q = pfc.quantize(trained_mlp, 2, granularity="per_channel")
    before = pfc.accuracy(q, Xte[:2000], yte[:2000])
    shadow0 = q[0].float_layer.weight.copy()
    pfc.fit(q, Xtr[:6000], ytr[:6000], epochs=1, batchsize=64, opt=pfc.Adam(5e-4), progress=False)
    assert not np.array_equal(shadow0, q[0].float_layer.weight)
    after = pfc.accuracy(q, Xte[:2000], yte[:2000])
    assert after > before, (before, after)
    # inference after fit uses integer weights recomputed from the trained shadow weights
    fresh = q.copy().requantize()
    np.testing.assert_array_equal(q[0].qweight, fresh[0].qweight)
    np.testing.assert_array_equal(q(Xte[:100]), fresh(Xte[:100]))


def test_qat_keeps_pruning_masks(fmnist_flat, trained_mlp):
    Xtr, ytr, _, _ = fmnist_flat
    q = pfc.quantize(pfc.prune(trained_mlp, 0.8), 8, granularity="per_channel")
    pfc.fit(q, Xtr[:2000], ytr[:2000], epochs=1, batchsize=128, progress=False)
    for _, layer in q.quantized_layers():
        mask = layer.masks["weight"]
        assert np.all(layer.float_layer.weight[~mask] == 0) and np.all(layer.qweight[~mask] == 0)


# ---------------------------------------------------------------------------------------------------------
# Conv


def test_quantized_conv_matches_dequantized_float_conv_and_trains(rng):
    model = pfc.parse("Chain(Conv((3, 3), 1 => 4, relu), MaxPool((2, 2)), flatten, Dense(36 => 3))", seed=1)
    X = rng.random((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    q = pfc.quantize(model, 8, granularity="per_channel", calibration=X)
    assert isinstance(q[0], QuantizedConv) and isinstance(q[3], QuantizedDense)
    assert q[0].w_scale.shape == (4,)
    np.testing.assert_allclose(q(X), model(X), atol=0.05)
    d = pfc.quantize(model, 8, granularity="per_channel").dequantize()
    np.testing.assert_allclose(pfc.quantize(model, 8, granularity="per_channel")(X), d(X), atol=1e-5)
    h = pfc.fit(q, X, y, epochs=2, batchsize=8, progress=False)
    assert np.isfinite(h.loss).all()


# ---------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("bits", [0, 9, 16, 3.5, "8", True, None])
def test_bad_bits(small, bits):
    with pytest.raises(ValueError, match="bits"):
        pfc.quantize(small, bits)


def test_bad_scheme_granularity_method_and_keys(small):
    with pytest.raises(ValueError, match="scheme"):
        pfc.quantize(small, 8, scheme="asymmetric")
    with pytest.raises(ValueError, match="granularity"):
        pfc.quantize(small, 8, granularity="per_row")
    with pytest.raises(ValueError, match="method"):
        pfc.quantize(small, 8, calibration=np.zeros((2, 20)), method="kl-divergence")
    with pytest.raises(ValueError, match="binary"):
        pfc.quantize(small, 1, scheme="affine")
    with pytest.raises(ValueError, match="layers\\[7\\]"):
        pfc.quantize(small, {"layers[7]": 8})
    with pytest.raises(ValueError, match="out of range"):
        pfc.quantize(small, {5: 8})
    with pytest.raises(ValueError, match="model"):
        pfc.quantize("not a model", 8)


@pytest.mark.parametrize("calib", [np.zeros((10, 21)), np.zeros(20), np.zeros((0, 20)),
                                   np.full((3, 20), np.nan), [["a"] * 20]])
def test_bad_calibration(small, calib):
    with pytest.raises(ValueError, match="calibration"):
        pfc.quantize(small, 8, calibration=calib)


def test_nested_chain_paths_and_int_key(rng):
    m = pfc.parse("Chain(Chain(Dense(10 => 8, relu), Dense(8 => 6, relu)), Dense(6 => 3))", seed=0)
    X = rng.normal(size=(20, 10)).astype(np.float32)
    q = pfc.quantize(m, {0: 4}, calibration=X)  # index 0 = the nested Chain: both of its Dense layers
    assert [p for p, _ in q.quantized_layers()] == ["layers[1].layers[1]", "layers[1].layers[2]"]
    assert type(q[1]).__name__ == "Dense"
    np.testing.assert_allclose(q(X), m(X), atol=0.2)


def test_rounding_rules_hold_for_arbitrary_weights():
    """Property test: q stays in range, the error is at most half a step, zero maps to zero (all schemes)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)

    @settings(max_examples=60, deadline=None)
    @given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 7)), elements=finite),
           st.sampled_from([2, 4, 8]), st.sampled_from(["symmetric", "affine"]),
           st.sampled_from(["per_tensor", "per_channel"]))
    def check(w, bits, scheme, granularity):
        w = np.where(np.abs(w) < 1e-30, 0, w).astype(np.float32)  # no subnormals: keep the bound exact
        q, scale, zp = quantize_weight(w, bits, scheme, granularity)
        qmin, qmax = qrange(bits, scheme)
        assert q.min() >= qmin and q.max() <= qmax
        deq = dequantize_weight(q, scale, zp)
        s = scale[:, None] if scale.ndim else scale
        assert np.all(np.abs(deq.astype(np.float64) - w) <= s * (0.5 + 1e-3) + 1e-30)
        assert np.all(deq[w == 0] == 0)

    check()


def test_single_sample_and_extra_batch_dims(small, X20):
    q = pfc.quantize(small, 8, granularity="per_channel", calibration=X20)
    np.testing.assert_array_equal(q(X20[0]), q(X20[:1])[0])  # Flux-style model(rand(20)) -> 1-D output
    layer = q[0]
    np.testing.assert_array_equal(layer(X20.reshape(4, 16, 20)).reshape(64, -1), layer(X20))
