"""pfc.train.parallel: data parallelism within a training step and an inference batch.

Sharded (threads=2) and sequential (threads=1) training give the same gradients and weights to float tolerance
for LeNet-5 and for a BatchNorm model (which must stay on the sequential path: full-batch statistics); Dropout
masks come from one generator per shard; models that are not per-sample are never sharded.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress import threads
from pyflux_compress.train import losses, parallel

LENET5 = ("Chain(Conv((5, 5), 1 => 6, relu; pad=2), MaxPool((2, 2)), Conv((5, 5), 6 => 16, relu), MaxPool((2, 2)), "
          "flatten, Dense(400 => 120, relu), Dense(120 => 84, relu), Dense(84 => 10))")
BN_CNN = "Chain(Conv((3, 3), 1 => 4; pad=1), BatchNorm(4, relu), MaxPool((2, 2)), flatten, Dense(784 => 10))"


@pytest.fixture(scope="module")
def images(fmnist):
    Xtr, ytr, _, _ = fmnist
    return np.ascontiguousarray(Xtr[:256]), ytr[:256]


@pytest.fixture
def map_calls(monkeypatch):
    """Counts the parallel phases run through threads.map_tasks (by parallel.py, not by the conv kernels)."""
    calls = []
    real = threads.map_tasks

    def spy(fn, tasks):
        if fn.__module__ == parallel.__name__:  # not the conv kernels' own batch split
            calls.append(tasks)
        return real(fn, tasks)

    monkeypatch.setattr(parallel.threads, "map_tasks", spy)
    return calls


def _step(model, x, y, n_threads, rng=None):
    with threads.use(n_threads):
        return parallel.forward_backward(model, x, y, losses.get("logitcrossentropy"),
                                         rng or np.random.default_rng(0), {"need_input_grad": False})


def test_lenet_sharded_step_matches_sequential(images, map_calls):
    X, y = images
    model = pfc.parse(LENET5, seed=0)
    out1, value1, grads1 = _step(model, X[:96], y[:96], 1)
    assert map_calls == []  # one thread: the model's own sequential forward/backward
    out2, value2, grads2 = _step(model, X[:96], y[:96], 2)
    assert map_calls == [2, 2]  # forward and backward phases, two shards each
    np.testing.assert_allclose(out2, out1, rtol=1e-5, atol=1e-5)
    assert value2 == pytest.approx(value1, rel=1e-6)
    assert grads2.keys() == grads1.keys() == model.params().keys()
    for k in grads1:
        scale = np.abs(grads1[k]).max()
        np.testing.assert_allclose(grads2[k], grads1[k], rtol=1e-4, atol=1e-5 * scale, err_msg=k)


def test_lenet_fit_sharded_equals_unsharded_and_reruns_bit_identical(images):
    X, y = images
    weights = {}
    for n in (1, 2, 2):
        model = pfc.parse(LENET5, seed=0)
        h = pfc.fit(model, X, y, epochs=1, batchsize=64, progress=False, seed=5, threads=n)
        w = {k: v.copy() for k, v in model.params().items()}
        if n in weights:  # same seed and thread count: bit-identical
            assert all(np.array_equal(w[k], weights[n][0][k]) for k in w)
        weights[n] = (w, h.loss[0])
    (w1, loss1), (w2, loss2) = weights[1], weights[2]
    assert loss2 == pytest.approx(loss1, rel=1e-5)
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-3, atol=1e-5, err_msg=k)
    model = pfc.parse(LENET5, seed=0)
    np.testing.assert_allclose(pfc.predict(model, X, threads=2, batchsize=100), pfc.predict(model, X, threads=1),
                               rtol=1e-5, atol=1e-5)


def test_batchnorm_model_keeps_the_full_batch_path(images, map_calls):
    X, y = images
    model = pfc.parse(BN_CNN, seed=0)
    assert parallel.shardable(model, train=True) is None  # batch statistics: never sharded in training
    assert parallel.shardable(model, train=False) == "plain"  # inference uses the running statistics
    states = []
    for n in (1, 2):
        m = pfc.parse(BN_CNN, seed=0)
        pfc.fit(m, X, y, epochs=1, batchsize=64, progress=False, seed=1, threads=n)
        states.append({k: np.array(v) for k, v in {**m.params(), "mu": m[1].mu, "sigma2": m[1].sigma2}.items()})
    assert map_calls == []  # neither fit sharded a step
    for k in states[0]:
        np.testing.assert_allclose(states[1][k], states[0][k], rtol=1e-4, atol=1e-5, err_msg=k)
    m = pfc.parse(BN_CNN, seed=0)
    np.testing.assert_allclose(pfc.predict(m, X, threads=2), pfc.predict(m, X, threads=1), rtol=1e-5, atol=1e-6)
    assert map_calls == [2]  # inference was sharded


def test_dropout_draws_one_mask_per_shard_deterministically(map_calls):
    model = pfc.parse("Chain(Conv((1, 1), 1 => 1), flatten, Dense(8 => 64), Dropout(0.5), Dense(64 => 2))", seed=0)
    assert parallel.shardable(model) == "random"
    x = np.ones((64, 1, 1, 8), dtype=np.float32)  # every sample identical: only the dropout masks differ
    y = np.zeros(64, dtype=np.int64)
    out_a = _step(model, x, y, 2, np.random.default_rng(7))[0]
    out_b = _step(model, x, y, 2, np.random.default_rng(7))[0]
    assert map_calls == [2, 2, 2, 2]
    np.testing.assert_array_equal(out_a, out_b)  # same seed, same threads: same masks
    assert not np.array_equal(out_a[:32], out_a[32:])  # the two shards do not reuse one generator's draws


@pytest.mark.parametrize("arch", [
    "Chain(Dense(4 => 4), Dropout(0.5; dims=1))",  # one mask broadcast over the batch
    "Chain(Dense(4 => 4), Dropout(0.5; active=true))",  # draws in inference too
    "Chain(Dense(4 => 4), BatchNorm(4))",
    "Chain(Parallel(hcat, Dense(4 => 4), Dense(4 => 4)))",  # hcat joins along the batch axis of (N, F) data
])
def test_not_per_sample_models_are_not_sharded(arch):
    model = pfc.parse(arch)
    assert parallel.shardable(model, train=True) is None


def test_per_sample_containers_are_sharded(map_calls):
    model = pfc.parse("Chain(Conv((3, 3), 1 => 1; pad=1), flatten, SkipConnection(Chain(Dense(4 => 4, relu), "
                      "Dense(4 => 4)), +), Parallel(vcat, Dense(4 => 2), Dense(4 => 3)), LayerNorm(5), softmax)")
    assert parallel.shardable(model) == "plain"
    x = np.random.default_rng(0).standard_normal((64, 1, 2, 2)).astype(np.float32)
    y = np.arange(64) % 5
    out1, v1, g1 = _step(model, x, y, 1)
    out2, v2, g2 = _step(model, x, y, 2)
    assert map_calls == [2, 2]
    np.testing.assert_allclose(out2, out1, rtol=1e-5, atol=1e-6)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_dense_only_models_are_not_sharded(map_calls):
    model = pfc.parse("Chain(Dense(8 => 16, relu), Dense(16 => 2))", seed=0)
    assert parallel.shardable(model) == "plain" and not parallel.worth_sharding(model)
    x = np.ones((64, 8), dtype=np.float32)
    _step(model, x, np.zeros(64, dtype=np.int64), 2)
    assert map_calls == []


def test_small_batches_are_not_split():
    with threads.use(2):
        assert parallel.shards(2 * parallel.MIN_SHARD - 1) == 1
        assert parallel.shards(2 * parallel.MIN_SHARD) == 2
    assert parallel.shards(1000) == 1  # outside use(): one thread


def test_map_tasks_runs_every_task_serially_in_order():
    def task(i):
        return i, threads.active()

    with threads.use(2):
        out = threads.map_tasks(task, 5)
        assert threads.active() == 2  # the caller's count is restored after its own share
    assert out == [(i, 1) for i in range(5)]  # each task, the caller's too, runs without a nested split


def test_tune_malloc_is_applied_once_by_use():
    import sys

    with threads.use(1):
        pass
    applied = threads.tune_malloc()  # already tried by use(): the same answer, no second mallopt
    assert applied is threads.tune_malloc()
    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert applied is True
