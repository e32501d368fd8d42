"""pfc.threads: validation, BLAS limits applied and restored, nesting, the batch split of the conv kernels
(same numbers with 1 or 2 threads), and threads= on fit / predict / distill / backend_info."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress import threads
from pyflux_compress.model import _conv

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads() -> list[int]:
    return [d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_resolve_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer or None"):
        threads.resolve(bad)


def test_use_sets_and_restores_blas_threads_and_nests():
    before = blas_threads()
    assert threads.active() == 1
    with threads.use(1) as n:
        assert n == 1 and threads.active() == 1
        assert set(blas_threads()) == {1}
        with threads.use(None) as inner:  # None inside use() keeps the outer count, not the default policy
            assert inner == 1
        with threads.use(2):
            assert threads.active() == 2 and set(blas_threads()) == {2}
        assert threads.active() == 1 and set(blas_threads()) == {1}
    assert blas_threads() == before and threads.active() == 1


def test_default_policy_env_override_and_bounds(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "3")
    assert threads.default_threads() == 3
    monkeypatch.setenv(threads.ENV_VAR, "many")
    with pytest.raises(ValueError, match=threads.ENV_VAR):
        threads.default_threads()
    monkeypatch.delenv(threads.ENV_VAR)
    assert 1 <= threads.default_threads() <= threads.available_cores()
    assert threads.other_load() >= 0


def test_map_chunks_covers_the_range_in_order_on_two_threads():
    seen = []

    def work(lo, hi):
        seen.append((lo, hi))
        return threads.active()  # workers run without a use(): their kernels never split again

    with threads.use(2):
        out = threads.map_chunks(work, 10, 4)
    assert sorted(seen) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert len(out) == 4
    assert threads.map_chunks(lambda lo, hi: hi - lo, 3, 8) == [1, 1, 1]  # never more chunks than items


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_kernels_give_the_same_numbers_with_two_threads(groups, rng):
    x = rng.standard_normal((9, 4, 10, 9)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4 // groups, 6)).astype(np.float32)
    wt = rng.standard_normal((3, 3, 6 // groups, 4)).astype(np.float32)  # ConvTranspose 4 => 6
    b = rng.standard_normal(6).astype(np.float32)
    results = []
    for n in (1, 2):
        with threads.use(n):
            y, cache = _conv.conv2d_forward(x, w, b, (1, 2), (1, 0, 1, 1), (1, 1), True, groups)
            dx, dw, db = _conv.conv2d_backward(cache, y)
            yt, ct = _conv.conv_transpose2d_forward(x, wt, b, (2, 2), (0, 1, 1, 0), (1, 1), True, groups, (1, 1))
            dxt, dwt, _ = _conv.conv_transpose2d_backward(ct, yt)
        results.append((y, dx, dw, db, yt, dxt, dwt))
    for a, c in zip(*results):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-4)


def test_threads_keyword_on_entry_points(fmnist_flat):
    for fn in (pfc.fit, pfc.predict, pfc.distill):
        p = inspect.signature(fn).parameters["threads"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None
    X, y = fmnist_flat[0][:512], fmnist_flat[1][:512]
    outs = []
    for n in (1, 2):
        model = pfc.parse("Chain(Dense(784 => 16, relu), Dense(16 => 10))", seed=0)
        pfc.fit(model, X, y, epochs=1, batchsize=64, progress=False, threads=n)
        outs.append(pfc.predict(model, X[:100], threads=n))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        pfc.fit(pfc.parse("Chain(Dense(784 => 10))"), X, y, threads=0, progress=False)
    info = pfc.backend_info()["threads"]
    assert {"default", "source", "available_cores", "blas", "policy"} <= set(info)
