"""Calibration (activation ranges, MSE weight clipping, bias correction) and AdaRound, on small layers."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.compression.calibrate import activation_range, mse_weight_range
from pyflux_compress.compression.quantize import quantize_weight
from pyflux_compress.compression.schemes import SCHEMES, get_scheme


def q8_error(x, lo, hi, scheme):
    s, zp, qmin, qmax = get_scheme(scheme).activation_params(lo, hi)
    xq = (np.clip(np.rint(x / s) + zp, qmin, qmax) - zp) * s
    return float(np.mean((xq - x) ** 2))


@pytest.mark.parametrize("scheme", ["symmetric", "affine"])
def test_activation_ranges_on_heavy_tails(rng, scheme):
    """Outliers: minmax keeps them, percentile and entropy clip them, mse has the least 8-bit error of all
    (with 2 outliers in 200k values, keeping most of their range is what minimises the squared error)."""
    x = np.concatenate([np.abs(rng.standard_normal(200_000)), [60.0, 80.0]]).astype(np.float32)  # post-relu
    ranges = {m: activation_range(x, get_scheme(scheme), m) for m in ("minmax", "percentile", "mse", "entropy")}
    assert ranges["minmax"][1] == 80.0
    for m in ("percentile", "entropy"):
        lo, hi = ranges[m]
        assert lo <= 1e-3 and 2.0 < hi < 20.0, (m, ranges[m])
    errs = {m: q8_error(x, *r, scheme) for m, r in ranges.items()}
    assert errs["mse"] <= min(errs.values()) * 1.02 and errs["mse"] < errs["minmax"], errs
    dense = np.abs(rng.standard_normal(50_000)).astype(np.float32)  # no outliers: mse stays near the max
    assert activation_range(dense, get_scheme(scheme), "mse")[1] >= 0.7 * dense.max()


def test_mse_weight_clip_beats_minmax_at_low_bits(rng):
    w = rng.standard_t(3, size=(16, 200)).astype(np.float32)  # heavy-tailed rows
    for scheme in SCHEMES:
        for bits in (2, 3, 4):
            errs = {}
            for clip in ("minmax", "mse"):
                q, s, zp = quantize_weight(w, bits, scheme, "per_channel", clip=clip)
                errs[clip] = np.mean(((q.astype(np.float32) - zp[:, None]) * s[:, None] - w) ** 2)
            assert errs["mse"] < errs["minmax"], (scheme, bits, errs)
    lo, hi = mse_weight_range(w, get_scheme("symmetric"), 2)
    assert np.all(hi <= np.abs(w).max(axis=1)) and np.all(lo == -hi)


@pytest.fixture(scope="module")
def small_cnn(fmnist):
    Xtr, ytr, _, _ = fmnist
    m = pfc.parse("Chain(Conv((5, 5), 1 => 6, relu), MaxPool((2, 2)), Conv((5, 5), 6 => 12, relu), MaxPool((2, 2)),"
                  " flatten, Dense(192 => 10))", seed=0)
    pfc.fit(m, Xtr[:3000], ytr[:3000], epochs=1, batchsize=64, opt=pfc.Adam(3e-3), progress=False, seed=0)
    return m


def test_bias_correction_and_adaround_reduce_output_error(small_cnn, fmnist):
    """At 2 bits, each PTQ option brings the quantized logits closer to the float ones on held-out images."""
    Xtr, _, Xte, _ = fmnist
    cal, x = Xtr[3000:3128], Xte[:300]
    ref = small_cnn(x)

    def err(**kw):
        q = pfc.quantize(small_cnn, 2, granularity="per_channel", calibration=cal, **kw)
        return float(np.mean((q(x) - ref) ** 2)), q

    e_plain, _ = err()
    e_mse, _ = err(weight_clip="mse")
    e_bc, qbc = err(weight_clip="mse", bias_correction=True)
    e_ada, qada = err(weight_clip="mse", rounding="adaround", bias_correction=True)
    assert e_mse < e_plain and e_bc < e_mse and e_ada < e_bc, (e_plain, e_mse, e_bc, e_ada)
    rec = qada.records[-1]
    assert rec["settings"]["rounding"] == "adaround" and rec["settings"]["weight_clip"] == "mse"
    layer = qada.quantized_layers()[0][1]
    assert layer.qweight.min() >= layer.qmin and layer.qweight.max() <= layer.qmax
    # AdaRound only chooses between the two neighbours of w / s
    t = layer.float_layer.weight / layer.w_scale.reshape(1, 1, 1, -1)
    assert np.all((layer.qweight == np.floor(t)) | (layer.qweight == np.floor(t) + 1)
                  | (layer.qweight == layer.qmin) | (layer.qweight == layer.qmax))


def test_ptq_options_need_calibration(small_cnn):
    with pytest.raises(ValueError, match="adaround.*calibration"):
        pfc.quantize(small_cnn, 4, rounding="adaround")
    with pytest.raises(ValueError, match="bias_correction.*calibration"):
        pfc.quantize(small_cnn, 4, bias_correction=True)
    with pytest.raises(ValueError, match="weight_clip"):
        pfc.quantize(small_cnn, 4, weight_clip="l1")
    with pytest.raises(ValueError, match="rounding"):
        pfc.quantize(small_cnn, 4, rounding="stochastic")


def test_adaround_reconstructs_the_output_after_the_activation(trained_mlp, fmnist_flat):
    """AdaRound fits f(W~ x + b) to f(W x + b) (f = relu here): its relu output is closer to the float layer's
    than when it fits the pre-activation W~ x, whose errors relu partly clips away. (On held-out images the two
    are within a few percent of each other for this layer; on LeNet's accuracy the activation-aware objective
    measured equal or better: benchmarks/results/ptq.md.)"""
    from pyflux_compress.compression import adaround as AR

    cal = fmnist_flat[0][:512]
    layer = trained_mlp.layers[0]
    q = pfc.quantize(trained_mlp, bits={"layers[1]": 2}, granularity="per_channel", weight_clip="mse")
    ql = q.layers[0]
    s, zp = ql.w_scale.reshape(-1, 1), ql.w_zero_point.reshape(-1, 1)
    ref = layer(cal)
    errors = {}
    for act in (True, False):
        target = layer(cal) if act else cal @ layer.weight.T
        qw = AR.adaround_weight(layer, s, zp, (ql.qmin, ql.qmax), cal, target.astype(np.float64), activation=act)
        probe = layer.copy()
        probe.weight = (s * qw).astype(np.float32)
        errors[act] = float(np.mean((probe(cal) - ref) ** 2))
    assert errors[True] < errors[False], errors


def test_adaround_iters_is_validated_and_recorded(small_cnn, fmnist):
    Xtr = fmnist[0]
    with pytest.raises(ValueError, match="adaround_iters"):
        pfc.quantize(small_cnn, 4, calibration=Xtr[:64], rounding="adaround", adaround_iters=0)
    with pytest.raises(ValueError, match="adaround_iters"):
        pfc.quantize(small_cnn, 4, calibration=Xtr[:64], rounding="adaround", adaround_iters=2.5)
    q = pfc.quantize(small_cnn, 4, calibration=Xtr[:64], rounding="adaround", adaround_iters=20)
    assert q.records[-1]["settings"]["adaround_iters"] == 20
