"""pfc.distill: Hinton KD (KL·T², blended with labels), the article's MSE variant, ensembles of teachers."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.compression.distill import _distill_loss, soft_targets

STUDENT = "Chain(Dense(784 => 32, relu), Dense(32 => 10))"


def _toy(rng, n=96):
    teacher = pfc.parse("Chain(Dense(12 => 16, relu), Dense(16 => 4))", seed=0)
    student = pfc.parse("Chain(Dense(12 => 5, relu), Dense(5 => 4))", seed=1)
    X = rng.standard_normal((n, 12)).astype(np.float32)
    y = rng.integers(0, 4, n)
    return teacher, student, X, y


@pytest.mark.parametrize("kind", ["kl", "mse"])
@pytest.mark.parametrize("labels", [False, True])
def test_loss_gradient_matches_finite_differences(rng, kind, labels):
    s = rng.standard_normal((5, 4))
    p = rng.dirichlet(np.ones(4), 5)
    y = rng.integers(0, 4, 5) if labels else None
    value, grad = _distill_loss(s, p, y, 3.0, 0.7, kind)
    h, num = 1e-6, np.zeros_like(s)
    for i in range(5):
        for j in range(4):
            d = np.zeros_like(s)
            d[i, j] = h
            num[i, j] = (_distill_loss(s + d, p, y, 3.0, 0.7, kind)[0]
                         - _distill_loss(s - d, p, y, 3.0, 0.7, kind)[0]) / (2 * h)
    np.testing.assert_allclose(grad, num, atol=1e-7)


def test_kl_is_hinton_t_squared_kl(rng):
    s, z = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    T = 4.0
    p = np.exp(z / T) / np.exp(z / T).sum(-1, keepdims=True)
    q = np.exp(s / T) / np.exp(s / T).sum(-1, keepdims=True)
    expected = T * T * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    assert _distill_loss(s, p, None, T, 0.9, "kl")[0] == pytest.approx(expected, rel=1e-9)
    assert _distill_loss(z, p, None, T, 0.9, "kl")[0] == pytest.approx(0.0, abs=1e-12)
    # blended: alpha * soft + (1 - alpha) * CE(labels)
    y = rng.integers(0, 5, 6)
    ce = pfc.losses.get("logitcrossentropy")(s, y)
    assert _distill_loss(s, p, y, T, 0.9, "kl")[0] == pytest.approx(0.9 * expected + 0.1 * ce, rel=1e-9)
    # the article's variant: mse(student output, softmax(teacher))
    assert _distill_loss(s, p, None, T, 0.9, "mse")[0] == pytest.approx(np.mean((s - p) ** 2), rel=1e-9)


def test_alpha_zero_is_plain_label_training(rng):
    """Same loop as pfc.fit: with alpha=0 the result is bit-identical to fit on the labels (same seed)."""
    teacher, student, X, y = _toy(rng)
    d = pfc.distill(teacher, student, X, y, alpha=0.0, epochs=2, batchsize=16, opt=pfc.Adam(1e-2), seed=3,
                    progress=False)
    f = student.copy()
    pfc.fit(f, X, y, epochs=2, batchsize=16, opt=pfc.Adam(1e-2), seed=3, progress=False)
    for k, v in f.params().items():
        np.testing.assert_array_equal(d.params()[k], v)


def test_deterministic_pure_and_recorded(rng):
    teacher, student, X, y = _toy(rng)
    before = {k: v.copy() for k, v in student.params().items()}
    a = pfc.distill(teacher, student, X, epochs=2, batchsize=16, seed=7, progress=False)
    b = pfc.distill(teacher, student, X, epochs=2, batchsize=16, seed=7, progress=False)
    c = pfc.distill(teacher, student, X, epochs=2, batchsize=16, seed=8, progress=False)
    for k in before:
        np.testing.assert_array_equal(student.params()[k], before[k])
        np.testing.assert_array_equal(a.params()[k], b.params()[k])
    assert any(not np.array_equal(a.params()[k], c.params()[k]) for k in before)
    rec = a.records[-1]
    assert rec["method"] == "distill" and rec["settings"]["temperature"] == 4.0
    assert rec["settings"]["labels"] is False and len(rec["history"]) == 2
    assert rec["history"][1] < rec["history"][0]          # it learns
    assert student.records == []


def test_student_learns_to_imitate(rng):
    teacher, student, X, _ = _toy(rng, n=256)
    d = pfc.distill(teacher, student, X, epochs=30, batchsize=32, opt=pfc.Adam(1e-2), progress=False)
    agree = lambda m: np.mean(m(X).argmax(1) == teacher(X).argmax(1))  # noqa: E731
    assert agree(d) > max(0.8, agree(student) + 0.2)


def test_ensemble_averages_soft_targets_and_softmax_is_skipped(rng):
    teacher, student, X, y = _toy(rng)
    other = pfc.parse("Chain(Dense(12 => 8, relu), Dense(8 => 4))", seed=5)
    p = soft_targets([teacher, other], X, 2.0)
    pa, pb = soft_targets([teacher], X, 2.0), soft_targets([other], X, 2.0)
    np.testing.assert_allclose(p, (pa + pb) / 2, rtol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    with_softmax = pfc.Chain(*teacher.layers, pfc.softmax)
    np.testing.assert_allclose(soft_targets([with_softmax], X, 2.0), pa, rtol=1e-6)
    one = pfc.distill(teacher, student, X, y, epochs=1, batchsize=32, progress=False)
    two = pfc.distill([teacher, with_softmax], student, X, y, epochs=1, batchsize=32, progress=False)
    for k, v in one.params().items():
        np.testing.assert_allclose(two.params()[k], v, rtol=1e-5, atol=1e-7)
    assert two.records[-1]["settings"]["teachers"] == 2


def test_pruned_student_stays_pruned(rng):
    teacher, student, X, y = _toy(rng)
    pruned = pfc.prune(student, 0.5)
    d = pfc.distill(teacher, pruned, X, y, epochs=2, batchsize=16, progress=False)
    for _, layer in d.walk():
        if layer.params():
            assert np.all(layer.weight[~layer.masks["weight"]] == 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature"), (dict(alpha=1.5), "alpha"), (dict(loss="ce"), "loss"),
    (dict(epochs=0), "epochs"), (dict(batchsize=0), "batchsize"), (dict(opt="adam"), "opt"),
])
def test_bad_arguments(rng, kwargs, match):
    teacher, student, X, y = _toy(rng)
    with pytest.raises(ValueError, match=match):
        pfc.distill(teacher, student, X, y, progress=False, **kwargs)


def test_bad_data(rng):
    teacher, student, X, y = _toy(rng)
    with pytest.raises(ValueError, match="X"):
        pfc.distill(teacher, student, X[:, :5], progress=False)
    with pytest.raises(ValueError, match="y"):
        pfc.distill(teacher, student, X, y[:5], progress=False)
    with pytest.raises(ValueError, match="y labels"):
        pfc.distill(teacher, student, X, y + 10, progress=False)
    with pytest.raises(ValueError, match="same classes"):
        pfc.distill(pfc.parse("Chain(Dense(12 => 3))"), student, X, progress=False)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pfc.distill(teacher, student, bad, progress=False)


def test_distilled_student_beats_label_training(trained_mlp, fmnist_flat):
    """Acceptance: Chain(Dense(784 => 32, relu), Dense(32 => 10)) on a 5,000-image labelled subset, same epochs
    and seed: distilled from the trained article MLP vs trained on the labels alone.

    T=2, alpha=0.5: with the issue's defaults (T=4, alpha=0.9) the distilled student of this weak 3-epoch
    teacher did *not* beat label training in short runs (benchmarks/results/prune.md has the numbers)."""
    Xtr, ytr, Xte, yte = fmnist_flat
    X, y = Xtr[:5000], ytr[:5000]
    student = pfc.parse(STUDENT, seed=1)
    labels_only = student.copy()
    pfc.fit(labels_only, X, y, epochs=8, batchsize=128, opt=pfc.Adam(1e-3), seed=0, progress=False)
    distilled = pfc.distill(trained_mlp, student, X, y, temperature=2.0, alpha=0.5, epochs=8, batchsize=128,
                            opt=pfc.Adam(1e-3), seed=0, progress=False)
    a_ce, a_kd = pfc.accuracy(labels_only, Xte, yte), pfc.accuracy(distilled, Xte, yte)
    print(f"\nstudent 784-32-10, 5000 images x 8 epochs: labels only {100 * a_ce:.2f}%, "
          f"distilled (KL, T=2, alpha=0.5) {100 * a_kd:.2f}%")
    assert a_kd > a_ce
