"""Training engine: issue 2's acceptance (article MLP and small CNN on Fashion-MNIST), optimiser rules checked by
hand, determinism, masks and the pruning hook, History/callbacks, predict/accuracy, and argument validation."""
from __future__ import annotations

import time

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.train.fit import History

SMALL_MLP = "Chain(Dense(784 => 32, relu), Dense(32 => 10))"
CNN = ("Chain(Conv((3, 3), 1 => 8, relu), MaxPool((2, 2)), Conv((3, 3), 8 => 16, relu), MaxPool((2, 2)), "
       "flatten, Dense(400 => 10))")


# ---------------------------------------------------------------------------------------------------------
# acceptance (issue 2)


def test_article_mlp_reaches_85_percent_in_3_epochs(trained_mlp_accuracy):
    """Article MLP, pfc.fit 3 epochs, batch 128, Adam(1e-3) on all 60000 images (session fixture)."""
    assert trained_mlp_accuracy >= 0.85


def test_small_cnn_reaches_85_percent_in_2_epochs(fmnist):
    """The issue's CNN, 2 epochs on a training subset (time budget), scored on the full 10000-image test set.

    Adam(3e-3) for epoch 1, then 5e-4 for epoch 2 (set by a callback, which also exercises callbacks).
    The same recipe in PyTorch (same architecture, Glorot init) reaches 0.858-0.863 over seeds.
    """
    Xtr, ytr, Xte, yte = fmnist
    n = 40000
    model = pfc.parse(CNN, seed=0)
    opt = pfc.Adam(3e-3)

    def decay(epoch, history):
        opt.lr = 5e-4

    t0 = time.perf_counter()
    history = pfc.fit(model, Xtr[:n], ytr[:n], epochs=2, batchsize=32, opt=opt, progress=False, seed=0,
                      callbacks=[decay])
    acc = pfc.accuracy(model, Xte, yte)
    print(f"CNN: 2 epochs on {n} images in {sum(history.seconds):.1f} s "
          f"(+ {time.perf_counter() - t0 - sum(history.seconds):.1f} s scoring); test accuracy {acc:.4f}")
    assert acc >= 0.85
    assert history.loss[1] < history.loss[0]


# ---------------------------------------------------------------------------------------------------------
# optimisers: each rule against a scalar hand computation


def _run(opt, x0, grads):
    x = np.array(x0, dtype=np.float64)
    for g in grads:
        opt.step([x], [np.array(g, dtype=np.float64)])
    return x


def test_sgd_plain_momentum_nesterov_by_hand():
    grads = [[1.0, 2.0], [0.5, -1.0]]
    # plain: x -= lr g
    np.testing.assert_allclose(_run(pfc.SGD(0.1), [1.0, -2.0], grads), [1 - 0.1 - 0.05, -2 - 0.2 + 0.1])
    # Momentum (Optimisers.jl): v = ρv + ηg ; x -= v
    #   step 1: v = [0.1, 0.2]            x = [0.9, -2.2]
    #   step 2: v = [0.09+0.05, 0.18-0.1] = [0.14, 0.08]; x = [0.76, -2.28]
    np.testing.assert_allclose(_run(pfc.SGD(0.1, momentum=0.9), [1.0, -2.0], grads), [0.76, -2.28])
    # Nesterov: v = ρv + ηg ; x -= ρv + ηg
    #   step 1: v = [0.1, 0.2];  x -= [0.09+0.1, 0.18+0.2]          -> [0.81, -2.38]
    #   step 2: v = [0.14, 0.08]; x -= [0.126+0.05, 0.072-0.1]       -> [0.634, -2.352]
    np.testing.assert_allclose(_run(pfc.SGD(0.1, momentum=0.9, nesterov=True), [1.0, -2.0], grads),
                               [0.634, -2.352])
    # coupled weight decay: g += λx  ->  x = 1 - 0.1 (1 + 0.5*1) = 0.85
    np.testing.assert_allclose(_run(pfc.SGD(0.1, weight_decay=0.5), [1.0], [[1.0]]), [0.85])


def test_adam_by_hand():
    lr, (b1, b2), eps = 0.1, (0.9, 0.999), 1e-8
    grads = [[1.0, -2.0], [0.5, 0.5], [-0.25, 3.0]]
    # first step of Adam moves every coordinate by lr * sign(g) (bias correction makes mhat = g, vhat = g²)
    np.testing.assert_allclose(_run(pfc.Adam(lr), [0.0, 0.0], grads[:1]), [-0.1, 0.1], rtol=1e-7)
    # scalar reference, one coordinate at a time (Optimisers.jl's formula)
    expected = []
    for i in range(2):
        x, m, v = 0.0, 0.0, 0.0
        for t, g in enumerate(grads, start=1):
            m = b1 * m + (1 - b1) * g[i]
            v = b2 * v + (1 - b2) * g[i] ** 2
            x -= lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)) ** 0.5 + eps)
        expected.append(x)
    np.testing.assert_allclose(_run(pfc.Adam(lr), [0.0, 0.0], grads), expected, rtol=1e-12)
    # state is per array: a second array gets its own moments and step count
    opt = pfc.Adam(lr)
    a, b = np.zeros(2), np.zeros(2)
    opt.step([a], [np.array(grads[0])])
    opt.step([a, b], [np.array(grads[1]), np.array(grads[0])])
    np.testing.assert_allclose(b, [-0.1, 0.1], rtol=1e-7)


@pytest.mark.parametrize("kind", ["adam", "adam_wd", "sgd", "momentum", "nesterov", "sgd_wd"])
def test_optimisers_match_torch(kind, rng):
    torch = pytest.importorskip("torch")
    ours, theirs_cls, kw = {
        "adam": (pfc.Adam(0.01), torch.optim.Adam, dict(lr=0.01)),
        "adam_wd": (pfc.Adam(0.01, weight_decay=0.1), torch.optim.Adam, dict(lr=0.01, weight_decay=0.1)),
        "sgd": (pfc.SGD(0.1), torch.optim.SGD, dict(lr=0.1)),
        "momentum": (pfc.SGD(0.1, momentum=0.9), torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
        "nesterov": (pfc.SGD(0.1, momentum=0.9, nesterov=True), torch.optim.SGD,
                     dict(lr=0.1, momentum=0.9, nesterov=True)),
        "sgd_wd": (pfc.SGD(0.1, momentum=0.5, weight_decay=0.01), torch.optim.SGD,
                   dict(lr=0.1, momentum=0.5, weight_decay=0.01)),
    }[kind]
    x = rng.normal(size=(3, 4))
    xt = torch.tensor(x.copy(), requires_grad=True)
    theirs = theirs_cls([xt], **kw)
    for _ in range(5):
        g = rng.normal(size=x.shape)
        ours.step([x], [g])
        xt.grad = torch.tensor(g)
        theirs.step()
    np.testing.assert_allclose(x, xt.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_optimiser_updates_float32_in_place():
    w = np.ones((2, 3), dtype=np.float32)
    ref = w
    pfc.Adam(0.5).step([w], [np.ones((2, 3), dtype=np.float32)])
    assert w is ref and w.dtype == np.float32 and np.allclose(w, 0.5)


def test_optimiser_argument_errors():
    with pytest.raises(ValueError, match="lr"):
        pfc.Adam(lr=-1)
    with pytest.raises(ValueError, match="beta"):
        pfc.Adam(beta=(0.9,))
    with pytest.raises(ValueError, match=r"beta\[1\]"):
        pfc.Adam(beta=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        pfc.SGD(nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        pfc.SGD(momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        pfc.SGD(weight_decay=-0.1)
    with pytest.raises(ValueError, match="gradient shape"):
        pfc.SGD().step([np.zeros(3)], [np.zeros(4)])


# ---------------------------------------------------------------------------------------------------------
# fit mechanics on small slices


@pytest.fixture(scope="module")
def small(fmnist_flat):
    Xtr, ytr, Xte, yte = fmnist_flat
    return Xtr[:1500], ytr[:1500], Xte[:500], yte[:500]


def _weights(model):
    return {k: v.copy() for k, v in model.params().items()}


def test_fit_is_deterministic_for_a_seed(small):
    X, y, _, _ = small
    arch = "Chain(Dense(784 => 32, relu), Dropout(0.2), Dense(32 => 10))"  # Dropout draws from fit's rng too
    # the same seed and the same thread count (the default count follows the machine's load: docs/threads.md)
    for threads in (1, 2):
        runs = []
        for seed in (3, 3, 4):
            model = pfc.parse(arch, seed=0)
            pfc.fit(model, X, y, epochs=2, batchsize=64, progress=False, seed=seed, threads=threads)
            runs.append(_weights(model))
        assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
        assert not all(np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_fit_learns_and_history_is_complete(small):
    X, y, Xv, yv = small
    model = pfc.parse(SMALL_MLP, seed=0)
    before = pfc.accuracy(model, Xv, yv)
    seen = []
    h = pfc.fit(model, X, y, epochs=3, batchsize=50, opt=pfc.SGD(0.1, momentum=0.9), validation=(Xv, yv),
                progress=False, callbacks=[lambda epoch, hist: seen.append((epoch, len(hist.loss)))])
    assert isinstance(h, History) and h.epochs == 3
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds"):
        assert len(getattr(h, key)) == 3, key
    assert h.loss[-1] < h.loss[0] and h.val_accuracy[-1] > before + 0.3
    assert h.val_accuracy[-1] == pytest.approx(pfc.accuracy(model, Xv, yv))
    assert h.val_loss[-1] == pytest.approx(pfc.losses.logitcrossentropy(pfc.predict(model, Xv), yv), rel=1e-5)
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert "3 epochs" in repr(h) and "val_accuracy" in repr(h)


def test_callback_returning_false_stops_early(small):
    X, y, _, _ = small
    model = pfc.parse(SMALL_MLP, seed=0)
    h = pfc.fit(model, X[:200], y[:200], epochs=5, progress=False, callbacks=[lambda e, hist: e < 2])
    assert h.epochs == 2


def test_masks_hold_and_pruning_hook_runs_before_each_step(small):
    X, y, _, _ = small
    model = pfc.parse(SMALL_MLP, seed=0)
    dense = model[0]
    rng = np.random.default_rng(0)
    mask = rng.random(dense.weight.shape) > 0.5
    dense.masks = {"weight": mask}
    before = dense.weight.copy()

    class Recorder:
        def __init__(self):
            self.steps = []

        def on_step(self, model, step):
            self.steps.append(step)
            if step == 5:  # a schedule may tighten masks mid-training; fit must honour the new mask
                model[1].masks = {"weight": np.zeros(model[1].weight.shape, dtype=bool)}

    hook = Recorder()
    pfc.fit(model, X[:640], y[:640], epochs=2, batchsize=64, progress=False, pruning=hook)
    assert hook.steps == list(range(20))
    assert np.all(dense.weight[~mask] == 0)
    # unmasked weights did train (except those fed by always-blank border pixels, whose gradient is 0)
    assert np.mean(dense.weight[mask] != before[mask]) > 0.5
    assert np.all(model[1].weight == 0)


def test_one_hot_targets_and_mse(small):
    X, y, _, _ = small
    model = pfc.parse(SMALL_MLP, seed=0)
    h = pfc.fit(model, X[:300], np.eye(10, dtype=np.float32)[y[:300]], loss="mse", epochs=2, progress=False)
    assert len(h.accuracy) == 2 and h.loss[1] < h.loss[0]


def test_progress_bar(small, capsys):
    X, y, Xv, yv = small
    pfc.fit(pfc.parse(SMALL_MLP, seed=0), X[:256], y[:256], epochs=1, batchsize=64, validation=(Xv, yv))
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "4/4" in err and "val_acc" in err


def test_predict_batches_and_accuracy(small, rng):
    X, y, _, _ = small
    model = pfc.parse(SMALL_MLP, seed=0)
    full = model(X)
    out = pfc.predict(model, X, batchsize=7)
    assert out.shape == (1500, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out, full, rtol=1e-6, atol=1e-6)
    acc = pfc.accuracy(model, X, y)
    assert acc == pytest.approx(np.mean(full.argmax(axis=1) == y))
    assert pfc.accuracy(model, X, np.eye(10)[y]) == acc


# ---------------------------------------------------------------------------------------------------------
# validation: clear errors before any step


def test_fit_rejects_bad_inputs(fmnist, small):
    X, y, Xv, yv = small
    Ximg = fmnist[0][:10]
    model = pfc.parse(SMALL_MLP, seed=0)
    cases = [
        (dict(X=X[:, :100], y=y), r"X has shape \(1500, 100\).*expected \(N, 784\)"),
        (dict(X=Ximg, y=y[:10]), r"X has shape \(10, 1, 28, 28\).*X.reshape\(len\(X\), -1\)"),
        (dict(X=X[0], y=y[:1]), r"X must be a batch shaped \(N, 784\)"),
        (dict(X=X, y=y[:-1]), r"y must have one entry per sample of X \(1500\)"),
        (dict(X=X, y=y + 5), r"y labels must be in 0\.\.9"),
        (dict(X=X, y=np.zeros((1500, 3))), r"y must be int labels \(1500,\) or targets"),
        (dict(X=np.array([["a"] * 784]), y=[0]), "X must be a numeric array"),
        (dict(X=X, y=y, epochs=-1), "epochs must be >= 0"),
        (dict(X=X, y=y, batchsize=0), "batchsize must be >= 1"),
        (dict(X=X, y=y, opt="adam"), "opt must be an optimiser"),
        (dict(X=X, y=y, loss="nll"), "loss must be one of"),
        (dict(X=X, y=y, validation=(Xv,)), "validation must be a pair"),
        (dict(X=X, y=y, validation=(Xv[:, :10], yv)), r"validation\[0\] must have per-sample shape \(784,\)"),
        (dict(X=X, y=y, validation=(Xv, yv[:3])), r"validation\[1\] must have one entry per sample"),
        (dict(X=X, y=y, pruning=object()), "pruning must have an on_step"),
        (dict(X=X, y=y, callbacks=[1]), r"callbacks\[0\] must be callable"),
        (dict(X=X, y=y, seed=1.5), "seed must be an integer"),
    ]
    w = _weights(model)
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            pfc.fit(model, progress=False, **kwargs)
    assert all(np.array_equal(w[k], v) for k, v in model.params().items())  # nothing trained
    with pytest.raises(ValueError, match="Layer interface"):
        pfc.fit(object(), X, y)
    model[0].masks = {"weight": np.ones((3, 3), dtype=bool)}
    with pytest.raises(ValueError, match=r"layers\[1\]: mask 'weight' has shape \(3, 3\)"):
        pfc.fit(model, X, y, progress=False)


def test_cnn_input_errors(fmnist):
    model = pfc.parse(CNN, seed=0)
    with pytest.raises(ValueError, match=r"expected \(N, 1, H, W\)"):
        pfc.fit(model, fmnist[0][:4].reshape(4, 1, 784, 1)[:, :, :100], fmnist[1][:4], progress=False)
