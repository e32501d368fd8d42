"""Magnitude pruning (pfc.prune), the Zhu & Gupta schedule (PolynomialDecay) and prune_iteratively."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.compression import prune as prune_mod


def _brute_force_keep(arrays, k):
    """Reference: stable sort of |w| in model order; the first k are pruned."""
    mags = np.concatenate([np.abs(a).ravel() for a in arrays])
    keep = np.ones(mags.size, dtype=bool)
    keep[np.argsort(mags, kind="stable")[:k]] = False
    return keep


def _weights(model):
    return [layer.weight for _, layer in model.walk() if layer.params()]


def _mlp(seed=0):
    return pfc.parse("Chain(Dense(20 => 16, relu), Dense(16 => 8, relu), Dense(8 => 3))", seed=seed)


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_exact_sparsity_and_smallest_weights_go(scope, sparsity):
    m = _mlp()
    p = pfc.prune(m, sparsity, scope=scope)
    ws, pws = _weights(m), _weights(p)
    if scope == "global":
        n = sum(w.size for w in ws)
        assert sum(int(np.count_nonzero(w == 0)) for w in pws) == round(sparsity * n)
        expected = _brute_force_keep(ws, prune_mod.n_to_prune(sparsity, n))
        got = np.concatenate([pl.masks["weight"].ravel() for _, pl in p.walk() if pl.params()])
        np.testing.assert_array_equal(got, expected)
    else:
        for w, pw in zip(ws, pws):
            assert np.count_nonzero(pw == 0) == prune_mod.n_to_prune(sparsity, w.size)
            np.testing.assert_array_equal(pw != 0, _brute_force_keep([w], prune_mod.n_to_prune(sparsity, w.size))
                                          .reshape(w.shape))
    for w, pw in zip(ws, pws):  # kept weights are untouched
        np.testing.assert_array_equal(pw[pw != 0], w[pw != 0])


def test_input_is_not_mutated_and_record_is_appended():
    m = _mlp()
    for _, layer in m.walk():
        if layer.params():
            layer.bias[:] = 0.01 * np.arange(1, layer.bias.size + 1)   # small: would be pruned if included
    before = [w.copy() for w in _weights(m)]
    p = pfc.prune(m, 0.5, scope="global")
    for w, b in zip(_weights(m), before):
        np.testing.assert_array_equal(w, b)
    assert all(not layer.masks for _, layer in m.walk())
    assert m.records == []
    for (_, a), (_, b) in zip(m.walk(), p.walk()):       # no array is shared with the input
        for name in a.params():
            assert not np.shares_memory(a.params()[name], b.params()[name])
    rec = p.records[-1]
    assert rec["method"] == "prune" and rec["settings"]["scope"] == "global"
    assert set(rec["per_layer"]) == {"layers[1]", "layers[2]", "layers[3]"}
    assert rec["total_sparsity"] == pytest.approx(0.5, abs=1e-3)
    for path, layer in p.walk():
        if layer.params():
            np.testing.assert_array_equal(layer.masks["weight"], layer.weight != 0)
            assert rec["per_layer"][path] == pytest.approx(1 - layer.masks["weight"].mean())
            np.testing.assert_array_equal(layer.bias, dict(m.walk())[path].bias)   # biases are not pruned


def test_ties_are_broken_in_model_order():
    m = _mlp()
    for w in _weights(m):
        w[...] = 0.5                      # every magnitude ties
    p = pfc.prune(m, 0.25, scope="global")
    keep = np.concatenate([w.ravel() != 0 for w in _weights(p)])
    k = prune_mod.n_to_prune(0.25, keep.size)
    assert not keep[:k].any() and keep[k:].all()


@pytest.mark.parametrize("seed", [0, 1])
def test_large_model_uses_the_fast_path_and_stays_exact(seed):
    rng = np.random.default_rng(seed)
    m = pfc.Chain(pfc.Dense(600, 500), pfc.Dense(500, 20))
    # rounded weights: many ties around the threshold, the hard case for the bracketed selection
    for w in _weights(m):
        w[...] = np.round(rng.standard_normal(w.shape), 2)
    assert sum(w.size for w in _weights(m)) > prune_mod._SMALL
    p = pfc.prune(m, 0.8, scope="global")
    k = prune_mod.n_to_prune(0.8, sum(w.size for w in _weights(m)))
    np.testing.assert_array_equal(np.concatenate([w.ravel() != 0 for w in _weights(p)]),
                                  _brute_force_keep(_weights(m), k))


def test_include_selects_layers_and_biases():
    m = _mlp()
    for _, layer in m.walk():
        if layer.params():
            layer.bias[:] = np.arange(1, layer.bias.size + 1)
    p = pfc.prune(m, 0.5, include=["layers[2]", "layers[3].bias"])
    assert set(p.records[-1]["per_layer"]) == {"layers[2]", "layers[3].bias"}
    assert np.count_nonzero(p[0].weight == 0) == 0
    assert np.count_nonzero(p[2].bias == 0) == round(0.5 * 3 + 1e-9)  # round-half-up: 2 of 3
    assert "bias" in p[2].masks and "weight" not in p[2].masks
    assert set(pfc.prune(m, 0.5, include="Dense").records[-1]["per_layer"]) == {"layers[1]", "layers[2]",
                                                                              "layers[3]"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsity=1.0), "sparsity"), (dict(sparsity=-0.1), "sparsity"), (dict(sparsity="half"), "sparsity"),
    (dict(sparsity=float("nan")), "sparsity"), (dict(sparsity=0.5, scope="model"), "scope"),
    (dict(sparsity=0.5, include=["layers[9]"]), "layers\\[9\\]"), (dict(sparsity=0.5, include=3), "include"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pfc.prune(_mlp(), **kwargs)


def test_nan_weights_are_rejected():
    m = _mlp()
    m[1].weight[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"layers\[2\]\.weight.*NaN"):
        pfc.prune(m, 0.5)
    m[1].weight[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        pfc.prune(m, 0.5, scope="global")


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_nan_found_by_the_fast_path_and_at_zero_sparsity(scope):
    m = pfc.Chain(pfc.Dense(600, 500), pfc.Dense(500, 20))      # > _SMALL weights: bracketed selection
    m[0].weight[300, 7] = -np.inf
    for s in (0.0, 0.9):
        with pytest.raises(ValueError, match=r"layers\[1\]\.weight.*NaN or Inf"):
            pfc.prune(m, s, scope=scope)
    m[0].weight[300, 7] = 0.0
    m[1].bias[3] = np.nan                                       # not pruned, still checked
    with pytest.raises(ValueError, match=r"layers\[2\]\.bias"):
        pfc.prune(m, 0.5, scope=scope)


def test_fit_keeps_masked_weights_at_zero(rng):
    m = _mlp()
    p = pfc.prune(m, 0.7, scope="global")
    X = rng.standard_normal((64, 20)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    masks = [layer.masks["weight"].copy() for _, layer in p.walk() if layer.params()]
    before = [w.copy() for w in _weights(p)]
    pfc.fit(p, X, y, epochs=2, batchsize=16, progress=False)
    for w, b, mask in zip(_weights(p), before, masks):
        assert np.all(w[~mask] == 0)
        assert not np.array_equal(w[mask], b[mask])      # the kept weights did train


# ---- PolynomialDecay ------------------------------------------------------------------------------------

def test_polynomial_decay_follows_zhu_gupta():
    s = pfc.PolynomialDecay(0.1, 0.9, begin=10, end=110, frequency=10)
    assert s.sparsity_at(0) == pytest.approx(0.1) and s.sparsity_at(10) == pytest.approx(0.1)
    assert s.sparsity_at(60) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5 ** 3)
    assert s.sparsity_at(110) == pytest.approx(0.9) and s.sparsity_at(500) == pytest.approx(0.9)
    values = [s.sparsity_at(t) for t in range(10, 111, 10)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert [t for t in range(0, 200) if s.due(t)] == list(range(10, 111, 10))


@pytest.mark.parametrize("kwargs, match", [
    (dict(initial=0.5, final=0.2, begin=0, end=10, frequency=1), "final"),
    (dict(initial=0.0, final=1.0, begin=0, end=10, frequency=1), "final"),
    (dict(initial=0.0, final=0.5, begin=5, end=5, frequency=1), "end"),
    (dict(initial=0.0, final=0.5, begin=0, end=10, frequency=0), "frequency"),
])
def test_polynomial_decay_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pfc.PolynomialDecay(**kwargs)


def test_polynomial_decay_during_fit_reaches_final(rng):
    m = _mlp()
    X = rng.standard_normal((96, 20)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    sched = pfc.PolynomialDecay(0.0, 0.8, begin=0, end=8, frequency=2)
    pfc.fit(m, X, y, epochs=2, batchsize=8, progress=False, pruning=sched)   # 24 steps
    assert [t for t, _ in sched.history] == [0, 2, 4, 6, 8]
    for path, s in pfc.sparsity(m)["per_layer"].items():
        assert s == pytest.approx(0.8, abs=0.02), path                      # masks held after step 8
    assert [r["method"] for r in m.records] == ["polynomial_decay"]


def test_prune_iteratively(rng):
    m = _mlp()
    X = rng.standard_normal((64, 20)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    p = pfc.prune_iteratively(m, X, y, [0.5, 0.8], epochs=1, batchsize=16, progress=False, scope="global")
    assert pfc.sparsity(p)["total"] == pytest.approx(0.8, abs=1e-3)
    assert [r["method"] for r in p.records] == ["prune", "prune", "prune_iteratively"]
    assert pfc.sparsity(m)["total"] == 0.0
    with pytest.raises(ValueError, match="non-decreasing"):
        pfc.prune_iteratively(m, X, y, [0.8, 0.5], epochs=1)
    with pytest.raises(ValueError, match="sparsities"):
        pfc.prune_iteratively(m, X, y, [0.5, 1.2], epochs=1)


# ---- acceptance: trained article MLP on Fashion-MNIST -----------------------------------------------------

def test_global_90_percent_with_finetune_keeps_accuracy(trained_mlp, trained_mlp_accuracy, fmnist_flat):
    # one fine-tuning epoch on the full training set: a 20k-image subset left a 1.06-point drop
    Xtr, ytr, Xte, yte = fmnist_flat
    p = pfc.prune(trained_mlp, 0.9, scope="global")
    print("\nper-layer sparsity after global 90% pruning:", pfc.sparsity(p)["per_layer"])
    assert pfc.sparsity(p)["total"] == pytest.approx(0.9, abs=1e-4)
    masks = {path: layer.masks["weight"].copy() for path, layer in p.walk() if layer.params()}
    pruned_acc = pfc.accuracy(p, Xte, yte)
    pfc.fit(p, Xtr, ytr, epochs=1, batchsize=128, opt=pfc.Adam(1e-3), progress=False, seed=0)
    acc = pfc.accuracy(p, Xte, yte)
    print(f"accuracy: trained {100 * trained_mlp_accuracy:.2f}%, pruned {100 * pruned_acc:.2f}%, "
          f"fine-tuned {100 * acc:.2f}%")
    for path, layer in p.walk():
        if layer.params():
            assert np.all(layer.weight[~masks[path]] == 0), f"{path}: pruned weights came back"
    assert 100 * (trained_mlp_accuracy - acc) <= 1.0


def test_polynomial_decay_continues_across_fit_calls(rng):
    """Regression (issue 17): three fit(epochs=1) calls used to restart the schedule at step 0 each time (and
    reset the masks), ending at 0.7056 instead of the final sparsity."""
    X = rng.normal(size=(64, 12)).astype(np.float32)
    y = rng.integers(0, 3, 64)

    def run(calls: int, epochs: int) -> tuple[float, list]:
        model = pfc.Chain(pfc.Dense(12, 16, pfc.relu, seed=0), pfc.Dense(16, 3, seed=1))
        sched = pfc.PolynomialDecay(0.0, 0.9, begin=0, end=23, frequency=2)  # 8 steps per epoch: 24 in all
        opt = pfc.Adam(1e-3)
        for _ in range(calls):
            pfc.fit(model, X, y, epochs=epochs, batchsize=8, opt=opt, pruning=sched, progress=False, seed=0)
        return pfc.sparsity(model)["total"], [t for t, _ in sched.history]

    once, steps_once = run(1, 3)
    thrice, steps_thrice = run(3, 1)
    assert once == pytest.approx(0.9, abs=0.01)
    assert thrice == pytest.approx(once, abs=1e-9)
    assert steps_thrice == steps_once  # same schedule times, no restart at 0
