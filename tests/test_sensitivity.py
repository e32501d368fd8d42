"""Sensitivity analysis: one layer quantized or pruned at a time; table, suggestions, errors."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc


@pytest.fixture(scope="module")
def table(trained_mlp, fmnist_flat):
    _, _, Xte, yte = fmnist_flat
    return pfc.sensitivity(trained_mlp, Xte[:1500], yte[:1500], bits=(8, 2), sparsities=(0.5, 0.95))


def test_table_shape_and_consistency(table, trained_mlp, fmnist_flat):
    _, _, Xte, yte = fmnist_flat
    X, y = Xte[:1500], yte[:1500]
    assert table.layers() == ["layers[1]", "layers[2]", "layers[3]"]
    assert len(table.rows) == 3 * (2 + 2)
    assert table.baseline == pfc.accuracy(trained_mlp, X, y)
    # each cell is exactly the accuracy of the model with that one layer changed
    q = pfc.quantize(trained_mlp, bits={"layers[2]": 2}, scheme="symmetric", granularity="per_channel")
    assert table.accuracy("layers[2]", "bits", 2) == pfc.accuracy(q, X, y)
    p = pfc.prune(trained_mlp, 0.95, scope="layer", include="layers[3]")
    assert table.accuracy("layers[3]", "sparsity", 0.95) == pfc.accuracy(p, X, y)
    for r in table.rows:
        assert r["drop"] == pytest.approx(table.baseline - r["accuracy"])


def test_int8_is_harmless_and_extremes_hurt(table):
    for layer in table.layers():
        assert table.baseline - table.accuracy(layer, "bits", 8) <= 0.01
    # 95% of the 640 output weights gone: the last layer is the most sensitive to pruning
    assert table.accuracy("layers[3]", "sparsity", 0.95) < table.accuracy("layers[1]", "sparsity", 0.95)


def test_suggestions_and_text(table):
    bits = table.suggest_bits(max_drop=0.01)
    assert set(bits) == set(table.layers()) and all(b in (2, 8, None) for b in bits.values())
    assert all(b is not None for b in bits.values())  # int8 always qualifies at 1 point
    sp = table.suggest_sparsity(max_drop=0.01)
    assert all(v in (0.0, 0.5, 0.95) for v in sp.values())
    text = repr(table)
    assert "layers[1] Dense(784 => 128, relu)" in text and "int2" in text and "95%" in text
    d = table.to_dict()
    assert d["baseline"] == table.baseline and len(d["rows"]) == len(table.rows)


def test_bad_arguments(trained_mlp, fmnist_flat):
    _, _, Xte, yte = fmnist_flat
    X, y = Xte[:50], yte[:50]
    with pytest.raises(ValueError, match="bits"):
        pfc.sensitivity(trained_mlp, X, y, bits=(8, 12))
    with pytest.raises(ValueError, match="sparsities"):
        pfc.sensitivity(trained_mlp, X, y, sparsities=(0.5, 1.0))
    with pytest.raises(ValueError, match="X"):
        pfc.sensitivity(trained_mlp, np.zeros((50, 100)), y)
    with pytest.raises(ValueError, match="y"):
        pfc.sensitivity(trained_mlp, X, y[:10])
    with pytest.raises(ValueError, match="setting"):
        pfc.sensitivity(trained_mlp, X, y, bits=(), sparsities=())


def test_suggest_bits_budgets_are_measured_on_the_combined_model(trained_mlp, fmnist_flat):
    """Issue 17: suggest_bits used to add up single-layer choices (combined drop 4.4 points for a 0.5 budget).
    Now every accepted step is measured on the whole quantized model, on the table's validation split."""
    Xtr, ytr, _, _ = fmnist_flat
    Xval, yval = Xtr[-1500:], ytr[-1500:]
    table = pfc.sensitivity(trained_mlp, Xval, yval, bits=(8, 4, 2, 1), sparsities=())
    policy = table.suggest_bits(max_drop=0.005)
    assert set(policy) == set(table.layers()) and policy.steps
    q = pfc.quantize(trained_mlp, bits=dict(policy), **table.quantize_options)
    acc = pfc.accuracy(q, Xval, yval)
    assert acc == pytest.approx(policy.accuracy) and policy.baseline - acc <= 0.005
    # checked on the half of the split the search never saw, with room for the sampling error of that half
    # and of a held-out split as large as the whole validation split:
    # margin = z(0.95) * sd(paired differences) * sqrt(1/750 + 1/1500)
    d = (pfc.predict(trained_mlp, Xval).argmax(1) == yval).astype(float) - (pfc.predict(q, Xval).argmax(1) == yval)
    part = d[np.random.default_rng(0).permutation(1500)[:750]]
    assert policy.confirm_drop == pytest.approx(part.mean())
    assert policy.margin == pytest.approx(1.6448536 * part.std() * np.sqrt(1 / 750 + 1 / 1500), rel=1e-6)
    assert policy.confirm_drop + policy.margin <= 0.005
    assert policy.drop == pytest.approx(d.mean())
    assert policy.size_bytes < 0.3 * policy.float_bytes  # at most int8 everywhere: about a quarter
    assert "bytes" in repr(policy) and "measured" in repr(policy)
    budget = int(0.6 * policy.size_bytes)
    small = table.suggest_bits(max_drop=None, budget_bytes=budget)
    assert small.size_bytes <= budget < policy.size_bytes
    assert table.size_bytes(dict(small)) == small.size_bytes
    with pytest.raises(ValueError, match="max_drop"):
        table.suggest_bits(max_drop=5)
    with pytest.raises(ValueError, match="holdout"):
        table.suggest_bits(max_drop=0.005, holdout=-1)
    with pytest.raises(ValueError, match="confirm"):
        table.suggest_bits(max_drop=0.005, confirm=1.0)
    with pytest.raises(ValueError, match="budget"):
        table.suggest_bits(max_drop=None)


def test_suggest_bits_backs_off_what_the_confirmation_half_refutes(fmnist_flat):
    """A validation split arranged so that int2 costs nothing on the search half and everything on the
    confirmation half: the search accepts int2, the check on the untouched half undoes that step (int4 stays)."""
    Xtr, ytr, Xte, _ = fmnist_flat
    model = pfc.parse("Chain(Dense(784 => 10))", seed=0)
    pfc.fit(model, Xtr[:3000], ytr[:3000], epochs=1, batchsize=64, opt=pfc.Adam(1e-3), progress=False, seed=0)
    opts = {"scheme": "symmetric", "granularity": "per_channel"}
    pred = {b: pfc.predict(pfc.quantize(model, bits={"layers[1]": b}, **opts), Xte).argmax(1) for b in (8, 4, 2)}
    pf = pfc.predict(model, Xte).argmax(1)
    agree = np.flatnonzero((pred[8] == pf) & (pred[4] == pf) & (pred[2] == pf))  # int2 harmless here
    refute = np.flatnonzero((pred[8] == pf) & (pred[4] == pf) & (pred[2] != pf))  # int2 wrong, int4 right
    n = 200
    assert len(agree) >= n // 2 and len(refute) >= n // 2
    confirm = np.random.default_rng(0).permutation(n)[:n // 2]  # suggest_bits' fixed split
    idx = np.empty(n, int)
    idx[confirm] = refute[:n // 2]
    idx[np.setdiff1d(np.arange(n), confirm)] = agree[:n // 2]
    X, y = Xte[idx], pf[idx]  # labels = the float model's predictions: baseline 100 %
    table = pfc.sensitivity(model, X, y, bits=(8, 4, 2), sparsities=(), quantize_options=opts)
    policy = table.suggest_bits(max_drop=0.005)
    assert dict(policy) == {"layers[1]": 4}
    assert any(s.startswith("layers[1]: int2 (") for s in policy.steps)  # accepted by the search ...
    assert any(s.startswith("back off the last step") for s in policy.steps)  # ... refuted by the check
    assert policy.confirm_drop == 0.0 and policy.margin == 0.0
    whole = table.suggest_bits(max_drop=0.005, confirm=0.0)  # the search sees every image: rejects int2 itself
    assert dict(whole) == {"layers[1]": 4} and not any(s.startswith("back off") for s in whole.steps)
