"""Issue 12's layers: exact forward against references (adjoints, PyTorch), finite-difference backward."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.model import _conv
from pyflux_compress.model.connection import Connection
from pyflux_compress.model.layers import (AdaptiveMaxPool, AdaptiveMeanPool, ConvTranspose, GlobalMaxPool, LayerNorm,
                                         Parallel, PixelShuffle, Scale, SkipConnection, Upsample)


def fd_check(layer, x, rng, eps=1e-6, rtol=1e-5, atol=1e-7, n_probe=12):
    """Compare backward's input and parameter gradients with central differences (float64)."""
    layer = layer.astype(np.float64)
    x = np.asarray(x, np.float64)
    y, cache = layer.forward(x)
    g = rng.standard_normal(y.shape)
    dx, grads = layer.backward(cache, g)

    def loss():
        return float((layer.forward(x)[0] * g).sum())

    targets = [("x", x, dx)] + [(k, v, grads[k]) for k, v in layer.params().items()]
    for name, arr, got in targets:
        assert got.shape == arr.shape, name
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, size=min(n_probe, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            num = (up - down) / (2 * eps)
            assert abs(got.reshape(-1)[i] - num) <= atol + rtol * max(abs(num), 1.0), (name, i, got.reshape(-1)[i], num)


CT_CASES = [dict(), dict(stride=2), dict(stride=2, pad=1), dict(stride=(2, 3), pad=(1, 0, 2, 1), dilation=(1, 2)),
            dict(stride=2, pad="same"), dict(stride=3, pad=1, outpad=(1, 2)), dict(groups=2, stride=2, pad=1),
            dict(pad=3), dict(stride=2, pad=(0, 2, 1, 3), outpad=1)]


@pytest.mark.parametrize("kw", CT_CASES, ids=str)
def test_convtranspose_is_the_adjoint_of_flux_conv(kw, rng):
    ct = ConvTranspose((3, 4), (4, 6), seed=1, bias=False, **kw).astype(np.float64)
    x = rng.standard_normal((2, 4, 5, 7))
    y = ct(x)
    u = rng.standard_normal(y.shape)
    # <ConvT(x), u> = <x, Conv(u)> for Flux's true convolution with the same weight, stride, pad, dilation
    conv_u, _ = _conv.conv2d_forward(u, ct.weight, None, ct.stride, ct.pad, ct.dilation, flip=True,
                                       groups=ct.groups)
    assert conv_u.shape == x.shape
    np.testing.assert_allclose((y * u).sum(), (x * conv_u).sum(), rtol=1e-10)


@pytest.mark.parametrize("kw", CT_CASES, ids=str)
def test_convtranspose_matches_pytorch(kw, rng):
    torch = pytest.importorskip("torch")
    ct = ConvTranspose((3, 4), (4, 6), seed=1, **kw)
    ct.bias[...] = rng.standard_normal(6)
    x = rng.standard_normal((2, 4, 5, 7)).astype(np.float32)
    (sw, sh), (dw, dh), (ow, oh) = ct.stride, ct.dilation, ct.outpad
    w_lo, w_hi, h_lo, h_hi = ct.pad
    full = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(ct.onnx_kernel()), None,
                                                stride=(sh, sw), dilation=(dh, dw), groups=ct.groups).numpy()
    h, w = full.shape[2:]
    full = np.pad(full, ((0, 0), (0, 0), (0, oh), (0, ow)))   # PyTorch pads symmetrically: crop by hand
    ref = full[:, :, h_lo:h + oh - h_hi, w_lo:w + ow - w_hi] + ct.bias[None, :, None, None]
    np.testing.assert_allclose(ct(x), ref, rtol=1e-5, atol=1e-5)


def test_convtranspose_shapes_samepad_and_errors():
    x = np.zeros((1, 3, 100, 100), np.float32)
    assert ConvTranspose((5, 5), (3, 7), pad="same", stride=3)(x).shape == (1, 7, 300, 300)   # Flux docstring
    assert ConvTranspose((5, 5), (3, 7), stride=2)(x).shape == (1, 7, 203, 203)
    assert ConvTranspose((5, 5), (3, 7))(x).shape == (1, 7, 104, 104)
    ct = ConvTranspose((4, 4), (16, 8), "relu", stride=2, pad=1, groups=2, bias=False)
    assert repr(ct) == "ConvTranspose((4, 4), 16 => 8, relu, pad=1, stride=2, groups=2, bias=false)"
    assert ct.weight.shape == (4, 4, 4, 16)
    with pytest.raises(ValueError, match="divisible by groups=3"):
        ConvTranspose((3, 3), (4, 6), groups=3)
    with pytest.raises(ValueError, match="expects 16 input channels, got 3"):
        ct.output_shape((3, 5, 5))
    # the size checks Conv and ConvTranspose share (SpatialConv) name the layer, the input and the output
    with pytest.raises(ValueError, match=r"ConvTranspose.*input 1x1 \(HxW\) gives an empty output.*\(output -1x-1\)"):
        ConvTranspose((3, 3), (1, 1), pad=(2, 2))(np.zeros((1, 1, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"Conv.*input 2x2 \(HxW\) is smaller than its \(dilated\) kernel"):
        pfc.Conv((3, 3), (1, 1))(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="pad must be an int, a 2- or 4-tuple"):
        ConvTranspose((3, 3), (1, 1), pad="valid")


@pytest.mark.parametrize("kw", [dict(stride=2, pad=1), dict(groups=2, outpad=1, stride=2), dict(dilation=2)], ids=str)
def test_convtranspose_gradients(kw, rng):
    ct = ConvTranspose((3, 3), (4, 6), "tanh", seed=2, **kw)
    ct.bias[...] = rng.standard_normal(6)
    fd_check(ct, rng.standard_normal((2, 4, 4, 5)), rng)


@pytest.mark.parametrize("cin,cout,groups", [(4, 8, 2), (6, 6, 6), (3, 6, 3), (4, 4, 1)])
def test_grouped_and_depthwise_conv_layer_kernels_match_pytorch(cin, cout, groups, rng):
    torch = pytest.importorskip("torch")
    w = rng.standard_normal((3, 2, cin // groups, cout))
    b = rng.standard_normal(cout)
    x = rng.standard_normal((2, cin, 7, 6))
    for flip in (True, False):
        y, cache = _conv.conv2d_forward(x, w, b, (2, 1), (1, 0, 1, 1), (1, 2), flip=flip, groups=groups)
        k = w[::-1, ::-1] if flip else w               # Flux Conv is a true convolution: PyTorch's with a flip
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 0)))
        ref = torch.nn.functional.conv2d(torch.tensor(xp), torch.tensor(np.ascontiguousarray(k.transpose(3, 2, 1, 0))),
                                         torch.tensor(b), stride=(1, 2), dilation=(2, 1), groups=groups).numpy()
        np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
        g = rng.standard_normal(y.shape)
        dx, dw, db = _conv.conv2d_backward(cache, g)
        tx = torch.tensor(xp, requires_grad=True)
        tw = torch.tensor(np.ascontiguousarray(k.transpose(3, 2, 1, 0)), requires_grad=True)
        out = torch.nn.functional.conv2d(tx, tw, torch.tensor(b), stride=(1, 2), dilation=(2, 1), groups=groups)
        (out * torch.tensor(g)).sum().backward()
        np.testing.assert_allclose(dx, tx.grad.numpy()[:, :, 1:-1, 1:], rtol=1e-10, atol=1e-10)
        twg = tw.grad.numpy().transpose(3, 2, 1, 0)
        np.testing.assert_allclose(dw, twg[::-1, ::-1] if flip else twg, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(db, g.sum(axis=(0, 2, 3)), rtol=1e-10)


def test_skipconnection_residual_and_concat(rng):
    inner = pfc.Chain(pfc.Conv((3, 3), (3, 3), "relu", pad=1, seed=1), pfc.Conv((3, 3), (3, 3), pad=1, seed=2))
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    res = SkipConnection(inner, "+")
    np.testing.assert_allclose(res(x), inner(x) + x, rtol=1e-6)
    assert repr(res).endswith(", +)") and res.output_shape((3, 5, 5)) == (3, 5, 5)
    cat = SkipConnection(inner, ("cat", 3))
    np.testing.assert_array_equal(cat(x), np.concatenate([inner(x), x], axis=1))
    assert cat.output_shape((3, 5, 5)) == (6, 5, 5)
    assert repr(cat).endswith("(xs...) -> cat(xs...; dims=3))")
    fd_check(res, x, rng)
    fd_check(cat, x, rng)
    with pytest.raises(ValueError, match=r"\+ needs equal shapes"):
        SkipConnection(pfc.Conv((3, 3), (3, 4), pad=1), "+").output_shape((3, 5, 5))
    m = pfc.Chain(res, pfc.flatten, pfc.Dense(75, 2, seed=3))
    assert set(m.params()) == {"layers[1].layers.layers[1].weight", "layers[1].layers.layers[1].bias",
                               "layers[1].layers.layers[2].weight", "layers[1].layers.layers[2].bias",
                               "layers[3].weight", "layers[3].bias"}
    _, grads = m.backward(m.forward(x)[1], np.ones((2, 2), np.float32))
    assert set(grads) == set(m.params())


def test_parallel_plain_named_and_concat(rng):
    a, b = pfc.Dense(4, 3, "relu", seed=1), pfc.Dense(4, 3, seed=2)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    p = Parallel("+", a, b)
    np.testing.assert_allclose(p(x), a(x) + b(x), rtol=1e-6)
    assert repr(p) == "Parallel(+, Dense(4 => 3, relu), Dense(4 => 3))"
    v = Parallel("vcat", a, b, pfc.Dense(4, 2, seed=4))
    assert v(x).shape == (5, 8) and v.output_shape((4,)) == (8,)
    named = Parallel("+", α=a, β=b)
    assert repr(named) == "Parallel(+; α = Dense(4 => 3, relu), β = Dense(4 => 3))"
    assert list(named.children()) == ["layers.α", "layers.β"]
    assert set(named.params()) == {"layers.α.weight", "layers.α.bias", "layers.β.weight", "layers.β.bias"}
    fd_check(p, x, rng)
    fd_check(v, x, rng)
    fd_check(named, x, rng)


@pytest.mark.parametrize("affine,act", [(True, "identity"), (False, "identity"), (True, "tanh")])
def test_layernorm_forward_and_gradients(affine, act, rng):
    ln = LayerNorm(6, act, affine=affine)
    if affine:
        ln.scale[...] = rng.standard_normal(6)
        ln.bias[...] = rng.standard_normal(6)
    x = rng.standard_normal((4, 6)) * 3 + 1
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)                  # biased, as Flux 0.14's normalise
    z = (x - mu) / (sd + 1e-5)
    if affine:
        z = z * ln.scale + ln.bias
    want = np.tanh(z) if act == "tanh" else z
    np.testing.assert_allclose(ln.astype(np.float64)(x), want, rtol=1e-12)
    fd_check(ln, x, rng)
    img = LayerNorm((5, 4, 3))                        # Flux size (W, H, C): the (C, H, W) of each image
    fd_check(img, rng.standard_normal((2, 3, 4, 5)), rng)
    assert repr(LayerNorm(6, "relu", affine=False)) == "LayerNorm(6, relu; affine=false)"
    with pytest.raises(ValueError, match=r"last 1 axes to be \(6,\)"):
        ln.output_shape((5,))


def test_scale_gradients(rng):
    s = Scale(4)
    s.scale[...] = rng.standard_normal(4)
    s.bias[...] = rng.standard_normal(4)
    fd_check(s, rng.standard_normal((3, 4)), rng)
    assert repr(Scale(2, 3)) == "Scale(2, 3)"


def test_pools(rng):
    x = rng.standard_normal((2, 3, 7, 9))
    np.testing.assert_array_equal(GlobalMaxPool()(x), x.max(axis=(2, 3), keepdims=True))
    fd_check(GlobalMaxPool(), x, rng)
    ap = AdaptiveMaxPool((3, 2))                       # out (W, H) = (3, 2): H 7 -> stride 3, k 4; W 9 -> 3, 3
    y = ap(x)
    assert y.shape == (2, 3, 2, 3)
    np.testing.assert_array_equal(y[:, :, 1, 2], x[:, :, 3:7, 6:9].max(axis=(2, 3)))
    am = AdaptiveMeanPool((3, 2))
    np.testing.assert_allclose(am(x)[:, :, 0, 1], x[:, :, 0:4, 3:6].mean(axis=(2, 3)))
    fd_check(ap, x, rng)
    fd_check(am, x, rng)


def test_upsample_nearest_bilinear_against_pytorch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 4, 5))
    up = Upsample("nearest", scale=(3, 2))             # Flux order (W, H)
    np.testing.assert_array_equal(up(x), np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))
    bl = Upsample("bilinear", scale=2)
    ref = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=2, mode="bilinear", align_corners=True)
    np.testing.assert_allclose(bl(x), ref.numpy(), rtol=1e-12)
    assert repr(bl) == "Upsample(:bilinear, scale = 2)" and repr(Upsample(2)) == "Upsample(:nearest, scale = 2)"
    fd_check(up, x, rng)
    fd_check(bl, x, rng)
    sized = Upsample("bilinear", size=(7, 6))
    assert sized(x).shape == (2, 3, 6, 7)
    with pytest.raises(ValueError, match="exactly one of scale= and size="):
        Upsample("nearest")


def test_pixelshuffle_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 8, 3, 4))
    ps = PixelShuffle(2)
    np.testing.assert_array_equal(ps(x), torch.nn.functional.pixel_shuffle(torch.tensor(x), 2).numpy())
    fd_check(ps, x, rng)
    with pytest.raises(ValueError, match="divisible by r²=4"):
        ps.output_shape((6, 3, 3))


def test_connection_validation():
    with pytest.raises(ValueError, match="unsupported connection"):
        SkipConnection(pfc.Dense(2, 2), "*")
    assert Connection("cat", 1).julia() == "vcat"


def test_groupnorm_and_instancenorm_match_pytorch_and_gradients(rng):
    torch = pytest.importorskip("torch")
    from pyflux_compress.model.layers import GroupNorm, InstanceNorm

    x = rng.standard_normal((3, 6, 4, 5))
    gn = GroupNorm(6, 3, "relu").astype(np.float64)
    gn.gamma[...], gn.beta[...] = rng.standard_normal(6), rng.standard_normal(6)
    ref = torch.relu(torch.nn.functional.group_norm(torch.tensor(x), 3, torch.tensor(gn.gamma),
                                                    torch.tensor(gn.beta), eps=1e-5)).numpy()
    np.testing.assert_allclose(gn(x), ref, rtol=1e-10, atol=1e-12)
    fd_check(gn, x, rng)
    inn = InstanceNorm(6, affine=True).astype(np.float64)
    inn.gamma[...], inn.beta[...] = rng.standard_normal(6), rng.standard_normal(6)
    ref = torch.nn.functional.instance_norm(torch.tensor(x), weight=torch.tensor(inn.gamma),
                                            bias=torch.tensor(inn.beta), eps=1e-5).numpy()
    np.testing.assert_allclose(inn(x), ref, rtol=1e-10, atol=1e-12)
    fd_check(inn, x, rng)
    fd_check(InstanceNorm(6, "tanh"), x, rng)
    assert repr(GroupNorm(8, 4, "relu", affine=False)) == "GroupNorm(8, 4, relu, affine=false)"
    assert repr(InstanceNorm(3, affine=True)) == "InstanceNorm(3, affine=true)"
    with pytest.raises(ValueError, match="divisible by the number of groups"):
        GroupNorm(6, 4)
    with pytest.raises(ValueError, match="track_stats=true is not supported"):
        GroupNorm(4, 2, track_stats=True)          # Flux 0.15+'s GroupNorm has no running statistics


def test_instancenorm_track_stats_follows_flux_and_pytorch(rng, tmp_path):
    """InstanceNorm(track_stats=true): per-sample normalisation in training, running μ/σ² (batch mean of the
    per-sample statistics, variance times m/(m-1)) in test mode -- Flux's _track_stats!; torch's
    instance_norm with running buffers computes the same update, so it is the reference."""
    from pyflux_compress.model.layers import InstanceNorm

    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from pyflux_compress.io.onnx import to_onnx_model

    x = rng.standard_normal((4, 3, 5, 6)) * 2 + 1
    inn = InstanceNorm(3, "relu", affine=True, track_stats=True, momentum=0.3).astype(np.float64)
    inn.gamma[...], inn.beta[...] = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for _ in range(3):                                   # training: batch statistics, running stats move
        y, _ = inn.forward(x, train=True)
        ref = torch.nn.functional.instance_norm(torch.tensor(x), rm, rv, torch.tensor(inn.gamma),
                                                torch.tensor(inn.beta), use_input_stats=True, momentum=0.3)
        np.testing.assert_allclose(y, torch.relu(ref).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(inn.mu, rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(inn.sigma2, rv.numpy(), rtol=1e-12)
    ref = torch.nn.functional.instance_norm(torch.tensor(x), rm, rv, torch.tensor(inn.gamma),
                                            torch.tensor(inn.beta), use_input_stats=False)
    np.testing.assert_allclose(inn(x), torch.relu(ref).numpy(), rtol=1e-10, atol=1e-12)   # test mode
    fd_check(inn, x, rng)                                # running statistics path
    fd_check(InstanceNorm(3, "tanh", track_stats=True, active=True), x, rng)   # batch statistics path
    assert repr(inn) == "InstanceNorm(3, relu, affine=true, track_stats=true, momentum=0.3)"
    m = pfc.Chain(inn.astype(np.float32))
    assert str(pfc.parse(str(m))) == str(m)
    pfc.save(tmp_path / "in.jld2", m)
    m2 = pfc.load(tmp_path / "in.jld2")
    assert np.array_equal(m2.layers[0].mu, m.layers[0].mu) and np.array_equal(m2.layers[0].sigma2, m.layers[0].sigma2)
    xf = x.astype(np.float32)
    np.testing.assert_array_equal(m2(xf), m(xf))
    proto = to_onnx_model(m, input_shape=(3, 5, 6))
    assert [n.op_type for n in proto.graph.node][0] == "BatchNormalization"   # running statistics
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["output"], {"input": xf})[0], m(xf), rtol=1e-5, atol=1e-5)


def test_alphadropout_keeps_selu_statistics_and_gradient(rng):
    from pyflux_compress.model.layers import AlphaDropout

    ad = AlphaDropout(0.2, seed=1)
    x = rng.standard_normal((400, 500))                 # zero mean, unit variance (SELU's fixed point)
    assert ad(x) is not None and np.array_equal(ad(x), x)      # inference: identity
    y, cache = ad.forward(x, train=True)
    assert abs(y.mean()) < 0.01 and abs(y.var() - 1) < 0.02   # what AlphaDropout is for
    a = 1 / np.sqrt(0.8 * (1 + 0.2 * 1.7580993408473766 ** 2))
    dropped = np.isclose(y, a * -1.7580993408473766 + a * 1.7580993408473766 * 0.2)
    assert abs(dropped.mean() - 0.2) < 0.01
    dx, _ = ad.backward(cache, np.ones_like(y))
    np.testing.assert_allclose(dx[~dropped], a)
    assert (dx[dropped] == 0).all()
    assert repr(AlphaDropout(0.1, active=True)) == "AlphaDropout(0.1, active=true)"
