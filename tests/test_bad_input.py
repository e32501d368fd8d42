"""Regression tests for the silent wrong results and unbounded inputs of issue 15: non-finite training data,
sparsity of quantized and weight-shared models, affine scales of huge weights, and bounded ``parse``."""
from __future__ import annotations

import time

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.model.syntax import FluxSyntaxError

MLP = "Chain(Dense(20 => 16, relu), Dense(16 => 4))"


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 20)).astype(np.float32)
    return X, rng.integers(0, 4, 64)


# ---------------------------------------------------------------------------------------------- fit


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fit_rejects_non_finite_X_naming_the_first_bad_sample(data, bad):
    X, y = data
    X = X.copy()
    X[37, 5] = bad
    X[50, 0] = bad
    model = pfc.parse(MLP, seed=0)
    before = model[0].weight.copy()
    with pytest.raises(ValueError, match=r"X contains NaN or Inf: first at sample 37 .*flat element 5.*"
                                         r"2 of 64 samples"):
        pfc.fit(model, X, y, progress=False)
    np.testing.assert_array_equal(model[0].weight, before)  # nothing trained


def test_fit_rejects_values_that_overflow_float32(data):
    X, y = data
    X = X.astype(np.float64)
    X[3, 1] = 1e300  # finite in float64, Inf once converted to the model's float32
    with pytest.raises(ValueError, match=r"X contains NaN or Inf: first at sample 3"):
        pfc.fit(pfc.parse(MLP, seed=0), X, y, progress=False)


def test_fit_rejects_non_finite_targets_and_validation(data):
    X, y = data
    targets = np.eye(4, dtype=np.float32)[y]
    targets[9, 2] = np.nan
    with pytest.raises(ValueError, match=r"y contains NaN or Inf: first at sample 9"):
        pfc.fit(pfc.parse(MLP, seed=0), X, targets, loss="mse", progress=False)
    Xv = X[:8].copy()
    Xv[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"validation\[0\] contains NaN or Inf: first at sample 2"):
        pfc.fit(pfc.parse(MLP, seed=0), X, y, validation=(Xv, y[:8]), progress=False)


def test_fit_still_trains_on_finite_data(data):
    X, y = data
    model = pfc.parse(MLP, seed=0)
    h = pfc.fit(model, X, y, epochs=2, progress=False)
    assert np.isfinite(h.loss).all() and all(np.isfinite(p).all() for p in model.params().values())


# --------------------------------------------------------------------------------- sparsity / inspect


@pytest.fixture
def pruned():
    model = pfc.parse("Chain(Dense(64 => 32, relu), Dense(32 => 10))", seed=0)
    # shift the weights away from 0 so that an affine zero point is not 0 (the case the old count got wrong)
    for layer in model.layers:
        layer.weight += 0.05
    return pfc.prune(model, 0.9, scope="global")


@pytest.mark.parametrize("scheme,granularity", [("affine", "per_channel"), ("affine", "per_tensor"),
                                                ("symmetric", "per_channel"), ("symmetric", "per_tensor")])
def test_sparsity_of_quantized_models(pruned, scheme, granularity):
    want = pfc.sparsity(pruned)
    q = pfc.quantize(pruned, 8, scheme=scheme, granularity=granularity)
    got = pfc.sparsity(q)
    assert got["total"] == pytest.approx(want["total"], abs=1e-12)
    assert got["per_layer"] == pytest.approx(want["per_layer"], abs=1e-12)
    if scheme == "affine":  # the zero point is not 0, so counting nonzero integer codes would be wrong
        assert any(np.any(l.w_zero_point != 0) for _, l in q.quantized_layers())
    # the stored integers agree: the dequantized weight is 0 exactly where the float weight was pruned
    for path, layer in q.quantized_layers():
        np.testing.assert_array_equal(layer.weight_dequantized() == 0, layer.float_layer.weight == 0)


def test_sparsity_of_weight_shared_models(pruned):
    shared = pfc.share_weights(pruned, bits=4)
    assert pfc.sparsity(shared)["total"] == pytest.approx(pfc.sparsity(pruned)["total"], abs=1e-12)
    assert pfc.sparsity(shared)["total"] > 0.85


def test_sparsity_include_on_quantized_models(pruned):
    q = pfc.quantize(pruned, 8, scheme="affine", granularity="per_channel")
    one = pfc.sparsity(q, include="layers[2]")
    assert list(one["per_layer"]) == ["layers[2]"]
    assert one["total"] == pytest.approx(pfc.sparsity(pruned, include="layers[2]")["total"])
    assert pfc.sparsity(q, include="QuantizedDense")["total"] == pytest.approx(pfc.sparsity(pruned)["total"])


def test_inspect_reports_sparsity_of_an_affine_archive(pruned, tmp_path, capsys):
    from pyflux_compress.cli import main

    q = pfc.quantize(pruned, 8, scheme="affine", granularity="per_channel")
    path = tmp_path / "q.pfcz"
    pfc.save_compressed(path, q)
    assert main(["inspect", str(path), "--json"]) == 0
    import json
    info = json.loads(capsys.readouterr().out)
    weights = [r for r in info["parameters"] if r["path"].endswith(".weight")]
    zeros = sum(r["params"] - r["nonzero"] for r in weights)
    total = sum(r["params"] for r in weights)
    assert zeros / total == pytest.approx(pfc.sparsity(pruned)["total"], abs=1e-12)


# ------------------------------------------------------------------------------------ affine scale


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_affine_scale_finite_for_huge_finite_weights(granularity):
    model = pfc.parse("Chain(Dense(4 => 3))", seed=0)
    model[0].weight[...] = np.array([[3e38, -3e38, 1.0, 0.0], [3.4e38, -3.4e38, 0.5, 2.0], [1, 2, 3, 4]],
                                    np.float32)
    q = pfc.quantize(model, 8, scheme="affine", granularity=granularity)
    layer = q[0]
    assert np.all(np.isfinite(layer.w_scale)) and np.all(layer.w_scale > 0)
    w = layer.weight_dequantized()
    assert np.all(np.isfinite(w))
    # the extremes survive to within one step
    step = np.max(layer.w_scale)
    assert abs(float(w[0, 0]) - 3e38) <= step and abs(float(w[0, 1]) + 3e38) <= step
    x = np.array([[1e-38, 1e-38, 1.0, 1.0]], np.float32)
    assert np.all(np.isfinite(q(x)))


def test_affine_scale_unchanged_for_ordinary_weights():
    """The overflow guard leaves the bit-exact float32 rule alone wherever hi - lo is finite."""
    from pyflux_compress.compression.quantize import quantize_weight

    w = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    q, scale, zp = quantize_weight(w, 8, "affine", "per_channel")
    lo = np.minimum(w.min(axis=1), np.float32(0))
    hi = np.maximum(w.max(axis=1), np.float32(0))
    np.testing.assert_array_equal(scale, ((hi - lo) / np.float32(255)).astype(np.float32))


# ------------------------------------------------------------------------------------------- parse


def test_parse_deep_nesting_is_a_syntax_error():
    text = "Chain(" * 50_000 + "relu" + ")" * 50_000
    t0 = time.perf_counter()
    with pytest.raises(FluxSyntaxError, match="nested deeper than 100 levels"):
        pfc.parse(text)
    assert time.perf_counter() - t0 < 10
    for text in ("(" * 5000 + "1" + ")" * 5000, "-" * 5000 + "1"):
        with pytest.raises(FluxSyntaxError, match="nested deeper"):
            pfc.parse(text)
    # a realistic nesting depth still parses
    assert str(pfc.parse("Chain(" * 10 + "Dense(2 => 2)" + ")" * 10)).count("Chain") == 10


def test_parse_huge_layer_is_refused_before_allocating():
    t0 = time.perf_counter()
    with pytest.raises(FluxSyntaxError, match=r"Dense\(1000000000 => 1000000000\) would bring the model to "
                                              r"1,000,000,000,000,000,000 parameters.*max_params"):
        pfc.parse("Dense(1000000000 => 1000000000)")
    assert time.perf_counter() - t0 < 5
    with pytest.raises(FluxSyntaxError, match="max_params"):
        pfc.parse("Chain(Conv((3, 3), 100000 => 100000), Dense(10 => 10))")
    # the limit counts the whole model and can be raised (or lowered) with the keyword
    with pytest.raises(FluxSyntaxError, match=r"Dense\(10 => 10\).*110 parameters.*max_params=100"):
        pfc.parse("Chain(Dense(10 => 1), Dense(10 => 10))", max_params=100)
    assert pfc.parse("Chain(Dense(10 => 1), Dense(10 => 10))", max_params=110).layers[1].weight.shape == (10, 10)
    with pytest.raises(FluxSyntaxError, match=r"BatchNorm\(1000000000\)"):
        pfc.parse("Chain(Dense(2 => 2), BatchNorm(1000000000))")
    with pytest.raises(ValueError, match="max_params must be"):
        pfc.parse("Dense(1 => 1)", max_params=0)
