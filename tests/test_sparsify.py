"""pfc.sparsify: the article's sparsity level, and N:M semi-structured patterns (2:4)."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.compression.sparsify import nm_mask


def _mlp(seed=0):
    return pfc.parse("Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))", seed=seed)


def test_article_level_zeroes_the_smallest_half_of_each_layer():
    m = _mlp()
    s = pfc.sparsify(m, 0.5)
    for (path, layer), (_, orig) in zip(s.walk(), m.walk()):
        w, w0 = layer.weight, orig.weight
        assert np.count_nonzero(w == 0) == w.size // 2, path
        assert np.abs(w0[w == 0]).max() <= np.abs(w0[w != 0]).min()
        np.testing.assert_array_equal(layer.masks["weight"], w != 0)
    assert s.records[-1]["method"] == "sparsify" and s.records[-1]["per_layer"]["layers[2]"] == 0.5
    assert pfc.sparsity(m)["total"] == 0.0     # input untouched


def test_article_snippet_on_the_first_layer_only():
    s = pfc.sparsify(_mlp(), 0.5, include="layers[1]")
    assert pfc.sparsity(s)["per_layer"] == {"layers[1]": 0.5, "layers[2]": 0.0, "layers[3]": 0.0}


def test_two_four_pattern_on_dense():
    m = _mlp()
    s = pfc.sparsify(m, pattern="2:4")
    for path, layer in s.walk():
        w = layer.weight
        groups = (w != 0).reshape(w.shape[0], -1, 4)          # 4 consecutive inputs of one output row
        assert groups.sum(axis=-1).max() <= 2, path
        # the two kept are the two largest |w| of each group in the original weights
        orig = np.abs(dict(m.walk())[path].weight).reshape(w.shape[0], -1, 4)
        kept_min = np.where(groups, orig, np.inf).min(axis=-1)
        dropped_max = np.where(groups, -np.inf, orig).max(axis=-1)
        assert np.all(kept_min >= dropped_max), path
    assert pfc.sparsity(s)["total"] == pytest.approx(0.5)


def test_two_four_on_conv_groups_input_channels_and_keeps_masks(rng):
    m = pfc.parse("Chain(Conv((3, 3), 8 => 4, relu), flatten, Dense(2304 => 3))", seed=0)
    s = pfc.sparsify(m, pattern="2:4")
    w = s[0].weight                                             # (kw, kh, cin=8, cout)
    per_group = (w != 0).reshape(3, 3, 2, 4, 4).sum(axis=3)      # groups of 4 input channels
    assert per_group.max() <= 2
    # fine-tuning keeps the pattern
    X = rng.standard_normal((16, 8, 8, 8)).astype(np.float32)
    m2 = pfc.parse("Chain(Conv((3, 3), 8 => 4, relu), flatten, Dense(144 => 3))", seed=0)
    s2 = pfc.sparsify(m2, pattern="2:4")
    pfc.fit(s2, X, rng.integers(0, 3, 16), epochs=2, batchsize=8, progress=False)
    assert (s2[0].weight != 0).reshape(3, 3, 2, 4, 4).sum(axis=3).max() <= 2
    assert (s2[2].weight != 0).reshape(3, -1, 4).sum(axis=-1).max() <= 2


def test_nm_partial_trailing_group_and_ties():
    w = np.array([[1, -5, 3, 0.5, 2, 2, 2, 2, 9, 1, 4]], dtype=np.float32)   # 11 inputs: last group of 3
    keep = nm_mask(w, 2, 4)
    assert keep.astype(int).tolist() == [[0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1]]
    assert nm_mask(np.ones((2, 3), np.float32), 1, 4).astype(int).tolist() == [[1, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "level"), (dict(level=1.0), "level"), (dict(pattern="4:2"), "pattern"),
    (dict(pattern="2-4"), "pattern"), (dict(pattern=24), "pattern"), (dict(level=0.3, pattern="2:4"), "contradicts"),
    (dict(level=0.5, include=["layers[5]"]), "layers\\[5\\]"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pfc.sparsify(_mlp(), **kwargs)
