"""Structured pruning across SkipConnection / Parallel: channels that are added together are pruned together on
every side (the dependency-group planner, compression/channel_groups.py); concatenated channels keep their
offsets; depthwise convs follow their input; ConvTranspose's (kw, kh, cout, cin) kernel is cut on axis 2."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc

BLOCK = ("Chain(Conv((3, 3), 2 => 8, relu; pad=1), SkipConnection(Chain(Conv((3, 3), 8 => 8; pad=1), "
         "BatchNorm(8, relu), Conv((3, 3), 8 => 8; pad=1), BatchNorm(8)), +), relu, GlobalMeanPool(), flatten, "
         "Dense(8 => 3))")


def _randomise(model, rng):
    """Nonzero biases and BatchNorm statistics, so a wrong slice of any per-channel array shows."""
    for _, layer in pfc.modules(model):
        for name in ("bias", "beta", "mu"):
            a = getattr(layer, name, None)
            if isinstance(a, np.ndarray):
                a[...] = rng.uniform(-0.3, 0.3, a.shape)
        for name in ("gamma", "sigma2"):
            a = getattr(layer, name, None)
            if isinstance(a, np.ndarray):
                a[...] = rng.uniform(0.5, 1.5, a.shape)
    return model


def test_resnet_block_half_the_stream_equals_a_hand_built_smaller_model(rng):
    m = _randomise(pfc.parse(BLOCK, seed=0), rng)
    p = pfc.prune_structured(m, 0.5)
    rec = p.records[-1]
    assert str(p) == ("Chain(Conv((3, 3), 2 => 4, relu, pad=1), SkipConnection(Chain(Conv((3, 3), 4 => 4, pad=1), "
                      "BatchNorm(4, relu), Conv((3, 3), 4 => 4, pad=1), BatchNorm(4)), +), relu, GlobalMeanPool(), "
                      "flatten, Dense(4 => 3))")
    assert rec["params_after"] == p.nparams() < m.nparams() == rec["params_before"]
    # the stem and the block's last conv make the same (added) channels: one kept set for both
    stream = rec["kept"]["layers[1]"]
    assert rec["kept"]["layers[2].layers.layers[3]"] == stream and len(stream) == 4
    inner = rec["kept"]["layers[2].layers.layers[1]"]
    # the group's importance is the stem's and the last conv's filters together (L1)
    score = (np.abs(m[0].weight).sum(axis=(0, 1, 2)) + np.abs(m[1].layers[2].weight).sum(axis=(0, 1, 2)))
    assert stream == sorted(np.argsort(score, kind="stable")[4:].tolist())

    # the same network written by hand at the smaller width, weights cut from the original
    h = pfc.parse(str(p), seed=1)
    s, c1, bn1, c2, bn2, d = m[0], m[1].layers[0], m[1].layers[1], m[1].layers[2], m[1].layers[3], m[5]
    hs, hc1, hbn1, hc2, hbn2, hd = h[0], h[1].layers[0], h[1].layers[1], h[1].layers[2], h[1].layers[3], h[5]
    hs.weight[...], hs.bias[...] = s.weight[..., stream], s.bias[stream]
    hc1.weight[...], hc1.bias[...] = c1.weight[:, :, stream][..., inner], c1.bias[inner]
    hc2.weight[...], hc2.bias[...] = c2.weight[:, :, inner][..., stream], c2.bias[stream]
    for hb, b, keep in ((hbn1, bn1, inner), (hbn2, bn2, stream)):
        for name in ("beta", "gamma", "mu", "sigma2"):
            getattr(hb, name)[...] = getattr(b, name)[keep]
    hd.weight[...], hd.bias[...] = d.weight[:, stream], d.bias
    x = rng.standard_normal((5, 2, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(p(x), h(x), rtol=1e-6, atol=1e-6)
    assert p(x).shape == m(x).shape == (5, 3)
    # and it is the original network with the removed channels silenced on both sides of the +
    z = m.copy()
    drop, dropi = np.setdiff1d(np.arange(8), stream), np.setdiff1d(np.arange(8), inner)
    for conv, bn, gone in ((z[0], None, drop), (z[1].layers[0], z[1].layers[1], dropi),
                           (z[1].layers[2], z[1].layers[3], drop)):
        conv.weight[..., gone], conv.bias[gone] = 0, 0
        if bn is not None:
            bn.gamma[gone], bn.beta[gone] = 0, 0
    np.testing.assert_allclose(p(x), z(x), rtol=1e-5, atol=1e-6)


def test_two_residual_stages_and_a_transposed_conv_in_the_stream(rng):
    arch = ("Chain(Conv((3, 3), 1 => 6; pad=1), SkipConnection(Chain(Conv((3, 3), 6 => 6, relu; pad=1), "
            "ConvTranspose((3, 3), 6 => 6; pad=1)), +), SkipConnection(Chain(DepthwiseConv((3, 3), 6 => 6, relu; "
            "pad=1), Conv((1, 1), 6 => 6)), +), ConvTranspose((2, 2), 6 => 4; stride=2), Conv((1, 1), 4 => 2))")
    m = _randomise(pfc.parse(arch, seed=2), rng)
    p = pfc.prune_structured(m, 0.5)
    assert str(p) == ("Chain(Conv((3, 3), 1 => 3, pad=1), SkipConnection(Chain(Conv((3, 3), 3 => 3, relu, pad=1), "
                      "ConvTranspose((3, 3), 3 => 3, pad=1)), +), SkipConnection(Chain(Conv((3, 3), 3 => 3, relu, "
                      "pad=1, groups=3), Conv((1, 1), 3 => 3)), +), ConvTranspose((2, 2), 3 => 2, stride=2), "
                      "Conv((1, 1), 2 => 2))")
    kept = p.records[-1]["kept"]
    stream = kept["layers[1]"]
    # one stream through both blocks: the ConvTranspose (axis 2 = its outputs) and the pointwise conv join it
    assert kept["layers[2].layers.layers[2]"] == kept["layers[3].layers.layers[2]"] == stream
    assert "layers[3].layers.layers[1]" not in kept             # depthwise: channel-wise, follows the stream
    z = m.copy()
    drop = np.setdiff1d(np.arange(6), stream)
    z[0].weight[..., drop], z[0].bias[drop] = 0, 0
    z[1].layers[1].weight[:, :, drop, :], z[1].layers[1].bias[drop] = 0, 0
    z[2].layers[1].weight[..., drop], z[2].layers[1].bias[drop] = 0, 0
    z[2].layers[0].bias[drop] = -1.0                            # relu(depthwise) of a silent channel stays 0
    inner = np.setdiff1d(np.arange(6), kept["layers[2].layers.layers[1]"])
    z[1].layers[0].weight[..., inner], z[1].layers[0].bias[inner] = 0, 0
    dropt = np.setdiff1d(np.arange(4), kept["layers[4]"])
    z[3].weight[:, :, dropt, :], z[3].bias[dropt] = 0, 0
    x = rng.standard_normal((3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(p(x), z(x), rtol=1e-5, atol=1e-5)


def test_concatenation_keeps_branch_channels_at_their_offsets(rng):
    """cat(layer(x), x) along channels: the branch's channels and x's are separate groups; the consumer of the
    concatenation loses the removed ones of each at their offsets."""
    arch = ("Chain(Conv((3, 3), 1 => 4, relu; pad=1), SkipConnection(Conv((3, 3), 4 => 6, relu; pad=1), "
            "(xs...) -> cat(xs...; dims=3)), Conv((1, 1), 10 => 5, relu), GlobalMeanPool(), flatten, Dense(5 => 2))")
    m = _randomise(pfc.parse(arch, seed=3), rng)
    p = pfc.prune_structured(m, 0.5)
    kept = p.records[-1]["kept"]
    assert str(p).startswith("Chain(Conv((3, 3), 1 => 2, relu, pad=1), SkipConnection(Conv((3, 3), 2 => 3, relu, "
                             "pad=1), (xs...) -> cat(xs...; dims=3)), Conv((1, 1), 5 => 2, relu)")
    cols = kept["layers[2].layers"] + [6 + c for c in kept["layers[1]"]]       # offsets: branch first, then x
    np.testing.assert_array_equal(p[2].weight, m[2].weight[:, :, cols][..., kept["layers[3]"]])
    z = m.copy()
    for layer, n, keep in ((z[0], 4, kept["layers[1]"]), (z[1].layers, 6, kept["layers[2].layers"]),
                           (z[2], 5, kept["layers[3]"])):
        gone = np.setdiff1d(np.arange(n), keep)
        layer.weight[..., gone], layer.bias[gone] = 0, 0
    x = rng.standard_normal((3, 1, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(p(x), z(x), rtol=1e-5, atol=1e-6)


def test_parallel_sum_couples_branches_and_parallel_cat_offsets_them(rng):
    arch = ("Chain(Dense(6 => 8, relu), Parallel(+, Dense(8 => 4), Chain(Dense(8 => 6, relu), Dense(6 => 4))), "
            "relu, Parallel(vcat; a = Dense(4 => 4, relu), b = Dense(4 => 2, relu)), Dense(6 => 3))")
    m = _randomise(pfc.parse(arch, seed=4), rng)
    p = pfc.prune_structured(m, 0.5)
    kept = p.records[-1]["kept"]
    summed = kept["layers[2].layers[1]"]
    assert kept["layers[2].layers[2].layers[2]"] == summed and len(summed) == 2
    assert str(p) == ("Chain(Dense(6 => 4, relu), Parallel(+, Dense(4 => 2), Chain(Dense(4 => 3, relu), "
                      "Dense(3 => 2))), relu, Parallel(vcat; a = Dense(2 => 2, relu), b = Dense(2 => 1, relu)), "
                      "Dense(3 => 3))")
    cols = kept["layers[4].layers.a"] + [4 + c for c in kept["layers[4].layers.b"]]
    np.testing.assert_array_equal(p[4].weight, m[4].weight[:, cols])
    z = m.copy()
    for layer, n, key in ((z[0], 8, "layers[1]"), (z[1].layers[0], 4, "layers[2].layers[1]"),
                          (z[1].layers[1].layers[0], 6, "layers[2].layers[2].layers[1]"),
                          (z[1].layers[1].layers[1], 4, "layers[2].layers[2].layers[2]"),
                          (z[3].layers[0], 4, "layers[4].layers.a"), (z[3].layers[1], 2, "layers[4].layers.b")):
        gone = np.setdiff1d(np.arange(n), kept[key])
        layer.weight[gone], layer.bias[gone] = 0, 0
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(p(x), z(x), rtol=1e-5, atol=1e-6)


def test_channels_that_must_stay_are_kept_with_the_reason(rng):
    # the model's input is added to the block output: the stream is the input's channels, so it stays
    m = pfc.parse("Chain(SkipConnection(Chain(Conv((3, 3), 3 => 6, relu; pad=1), Conv((3, 3), 6 => 3; pad=1)), +), "
                  "LayerNorm(3), flatten, Dense(75 => 2))", seed=0)
    p = pfc.prune_structured(m, 0.5)
    rec = p.records[-1]
    assert str(p).startswith("Chain(SkipConnection(Chain(Conv((3, 3), 3 => 3, relu, pad=1), Conv((3, 3), 3 => 3, ")
    assert "combined by layers[1] (SkipConnection)" in rec["skipped"]["layers[1].layers.layers[2]"]


def test_groupnorm_groups_are_cut_evenly(rng):
    """GroupNorm(8, 2): channels 0-3 and 4-7 are normalised together; half of each group goes, so every kept
    channel stays in its group and G still divides chs."""
    g = _randomise(pfc.parse("Chain(Conv((3, 3), 1 => 8; pad=1), GroupNorm(8, 2, relu), Conv((3, 3), 8 => 4), "
                             "flatten, Dense(36 => 2))", seed=0), rng)
    p = pfc.prune_structured(g, 0.5)
    kept = p.records[-1]["kept"]["layers[1]"]
    assert str(p) == "Chain(Conv((3, 3), 1 => 4, pad=1), GroupNorm(4, 2, relu), Conv((3, 3), 4 => 2), flatten, " \
                     "Dense(18 => 2))"
    assert [c // 4 for c in kept] == [0, 0, 1, 1]
    score = np.abs(g[0].weight).sum(axis=(0, 1, 2))      # the strongest two filters of each group stay
    assert kept == sorted([*np.argsort(score[:4])[2:], *(4 + np.argsort(score[4:])[2:])])
    x = rng.standard_normal((3, 1, 5, 5)).astype(np.float32)
    ref = pfc.GroupNorm(4, 2, pfc.relu)
    ref.gamma[...], ref.beta[...] = g[1].gamma[kept], g[1].beta[kept]
    np.testing.assert_allclose(p[:2](x), ref(g[0](x)[:, kept]), rtol=1e-5, atol=1e-6)
    assert p(x).shape == (3, 2)
    with pytest.raises(ValueError, match="in one of its groups"):
        pfc.prune_structured(pfc.parse("Chain(Conv((3, 3), 1 => 8; pad=1), GroupNorm(8, 4), Conv((3, 3), 8 => 4), "
                                       "flatten, Dense(36 => 2))", seed=0), 0.75)
    # channels of two producers concatenated into one GroupNorm do not match its groups one to one: kept whole
    cat = pfc.parse("Chain(Conv((3, 3), 1 => 4; pad=1), SkipConnection(Conv((3, 3), 4 => 4; pad=1), "
                    "(xs...) -> cat(xs...; dims=3)), "
                    "GroupNorm(8, 2), Conv((3, 3), 8 => 2), flatten, Dense(18 => 2))", seed=0)
    rec = pfc.prune_structured(cat, 0.5).records[-1]
    assert "layers[3], whose groups they do not match" in rec["skipped"]["layers[1]"]


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_mobilenet_v2_inverted_residual(fraction, rng):
    """Expand (1x1) -> depthwise -> project (1x1) inside a SkipConnection: the expansion channels and the
    depthwise filters are one group, the projected channels join the residual stream."""
    arch = ("Chain(Conv((3, 3), 1 => 8, relu6; pad=1), SkipConnection(Chain(Conv((1, 1), 8 => 16), "
            "BatchNorm(16, relu6), DepthwiseConv((3, 3), 16 => 16; pad=1), BatchNorm(16, relu6), Conv((1, 1), 16 => 8), "
            "BatchNorm(8)), +), GlobalMeanPool(), flatten, Dense(8 => 4))")
    m = _randomise(pfc.parse(arch, seed=5), rng)
    p = pfc.prune_structured(m, fraction)
    n8, n16 = 8 - round(fraction * 8), 16 - round(fraction * 16)
    assert str(p) == arch.replace("1 => 8", f"1 => {n8}").replace("8 => 16", f"{n8} => {n16}").replace(
        "BatchNorm(16", f"BatchNorm({n16}").replace("16 => 16; pad=1", f"{n16} => {n16}; pad=1").replace(
        "16 => 8", f"{n16} => {n8}").replace("BatchNorm(8)", f"BatchNorm({n8})").replace(
        "Dense(8", f"Dense({n8}").replace("; ", ", ").replace("DepthwiseConv((3, 3), " + f"{n16} => {n16}, pad=1)",
                                                                f"Conv((3, 3), {n16} => {n16}, pad=1, groups={n16})")
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    assert p(x).shape == (2, 4) and np.isfinite(p(x)).all()
    # the depthwise filters are those of the kept expansion channels, in order
    kept = p.records[-1]["kept"]
    keep = kept["layers[2].layers.layers[1]"]
    np.testing.assert_array_equal(p[1].layers[2].weight, m[1].layers[2].weight[..., keep])
    assert kept["layers[2].layers.layers[5]"] == kept["layers[1]"]      # projection = residual stream
