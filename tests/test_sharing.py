"""Weight sharing: 1-D k-means, SharedDense/SharedConv, centroid fine-tuning, pruned weights stay zero."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.compression.sharing import SharedConv, SharedDense, kmeans_1d, unshare

SMALL = "Chain(Dense(20 => 16, relu), Dense(16 => 8, tanh), Dense(8 => 4))"


def test_kmeans_finds_separated_clusters(rng):
    centers = np.array([-2.0, 0.5, 3.0])
    v = np.concatenate([c + 0.01 * rng.normal(size=200) for c in centers])
    c, labels, iters = kmeans_1d(v, 3)
    assert c.dtype == np.float32 and np.all(np.diff(c) > 0)
    np.testing.assert_allclose(c, centers, atol=0.01)
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 200))
    assert iters < 100


def test_kmeans_linear_init_and_lloyd_fixed_point(rng):
    v = rng.normal(size=2000)
    c, labels, _ = kmeans_1d(v, 8)
    # at convergence every centroid is the mean of its members and every value sits with its nearest centroid
    for j in range(8):
        if np.any(labels == j):
            assert abs(v[labels == j].mean() - c[j]) < 1e-5
    nearest = np.abs(v[:, None] - c[None, :].astype(np.float64)).argmin(axis=1)
    assert np.mean(nearest == labels) > 0.999
    assert kmeans_1d(np.array([1.0, 1.0]), 4)[0].size == 2  # k clipped to n


def test_share_weights_codebook_and_zeros(rng):
    model = pfc.prune(pfc.parse(SMALL, seed=2), 0.5)
    s = pfc.share_weights(model, bits=3)
    assert [type(l) for l in s.layers] == [SharedDense, SharedDense, SharedDense]
    for (_, sl), (_, pl) in zip(s.walk(), model.walk()):
        w = sl.weight
        assert len(np.unique(w[w != 0])) <= 8 and sl.centroids.size <= 8
        np.testing.assert_array_equal(w == 0, pl.weight == 0)  # pruned stay zero, kept stay nonzero (here)
        assert sl.index.dtype == np.uint8 and sl.index.shape == pl.weight.shape
        assert np.all(sl.index[~sl.mask] == 0)
        np.testing.assert_array_equal(sl.bias, pl.bias)
    assert s.records[-1]["method"] == "share_weights" and model.records[-1]["method"] != "share_weights"
    assert pfc.share_weights(model, bits=9)[0].index.dtype == np.uint16


def test_share_weights_accuracy_5_bits(trained_mlp, trained_mlp_accuracy, fmnist_flat):
    _, _, Xte, yte = fmnist_flat
    acc = pfc.accuracy(pfc.share_weights(trained_mlp, bits=5), Xte[:3000], yte[:3000])
    base = pfc.accuracy(trained_mlp, Xte[:3000], yte[:3000])
    assert base - acc <= 0.01, (base, acc)


def test_centroid_gradient_is_sum_over_cluster(rng):
    s = pfc.share_weights(pfc.parse(SMALL, seed=4), bits=2)
    X = rng.normal(size=(10, 20)).astype(np.float32)
    y, cache = s.forward(X, train=True)
    dy = rng.normal(size=y.shape).astype(np.float32)
    _, g = s.backward(cache, dy)
    # reference: gradient of the equivalent float model w.r.t. the weight, summed per cluster with np.add.at
    f = unshare(s)
    _, cf = f.forward(X, train=True)
    _, gf = f.backward(cf, dy)
    layer = s[0]
    ref = np.zeros(layer.centroids.size)
    np.add.at(ref, layer.index[layer.mask], gf["layers[1].weight"][layer.mask])
    np.testing.assert_allclose(g["layers[1].centroids"], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g["layers[1].bias"], gf["layers[1].bias"], rtol=1e-6)


def test_fine_tuning_updates_centroids_keeps_ties_and_zeros(fmnist_flat, trained_mlp):
    Xtr, ytr, _, _ = fmnist_flat
    s = pfc.share_weights(pfc.prune(trained_mlp, 0.8), bits=4)
    c0 = s[0].centroids.copy()
    index0 = s[0].index.copy()
    pfc.fit(s, Xtr[:3000], ytr[:3000], epochs=1, batchsize=128, opt=pfc.Adam(1e-3), progress=False)
    assert not np.array_equal(c0, s[0].centroids)
    np.testing.assert_array_equal(index0, s[0].index)
    for _, layer in s.walk():
        w = layer.weight
        assert len(np.unique(w[layer.mask])) <= 16
        assert np.all(w[~layer.mask] == 0)


def test_unshare_and_conv(rng):
    model = pfc.parse("Chain(Conv((3, 3), 2 => 4, relu), flatten, Dense(144 => 3))", seed=0)
    s = pfc.share_weights(pfc.prune(model, 0.3), bits=4)
    assert isinstance(s[0], SharedConv) and isinstance(s[2], SharedDense)
    X = rng.random((5, 2, 8, 8)).astype(np.float32)
    f = unshare(s)
    assert type(f[0]).__name__ == "Conv" and "weight" in f[0].masks
    np.testing.assert_array_equal(f(X), s(X))
    h = pfc.fit(s, X, rng.integers(0, 3, 5), epochs=1, batchsize=5, progress=False)
    assert np.isfinite(h.loss).all()


@pytest.mark.parametrize("bits", [0, 17, 2.5, "5", None])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        pfc.share_weights(pfc.parse(SMALL), bits=bits)


def test_bad_model_and_keys():
    with pytest.raises(ValueError, match="model"):
        pfc.share_weights([1, 2, 3])
    with pytest.raises(ValueError, match="layers\\[9\\]"):
        pfc.share_weights(pfc.parse(SMALL), bits={"layers[9]": 4})
