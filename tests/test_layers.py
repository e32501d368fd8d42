"""Layers: shapes, Flux semantics, convolution against independent references, and gradient checks."""
from __future__ import annotations

import numpy as np
import pytest

from pyflux_compress.model import _conv
from pyflux_compress.model.activations import identity, relu, tanh
from pyflux_compress.model.chain import Chain
from pyflux_compress.model.init import glorot_uniform, nfan
from pyflux_compress.model.layers import (BatchNorm, Conv, CrossCor, Dense, Dropout, Flatten, GlobalMeanPool,
                                          Layer, MaxPool, MeanPool, SamePad, flatten)

signal = pytest.importorskip("scipy.signal")


# ---------------------------------------------------------------------------------------------------------
# finite-difference gradient check (float64)
# ---------------------------------------------------------------------------------------------------------

def grad_check(layer: Layer, x: np.ndarray, *, train: bool = False, seed: int = 0, n_probe: int = 25,
               eps: float = 1e-6, tol: float = 1e-6) -> None:
    """Compare ``backward`` with central differences of ``L = sum(forward(x) * g)`` for x and every param.

    Probes ``n_probe`` random entries of each array (keeps the test fast); a fixed ``rng`` makes Dropout
    draw the same mask on every forward call.
    """
    gen = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)

    def loss(xx: np.ndarray) -> float:
        y, _ = layer.forward(xx, train=train, rng=np.random.default_rng(99))
        return float(np.sum(y * g))

    y, cache = layer.forward(x, train=train, rng=np.random.default_rng(99))
    g = gen.standard_normal(np.shape(y))
    dx, grads = layer.backward(cache, g)
    assert dx.shape == x.shape
    assert set(grads) == set(layer.params())

    targets = [("x", x, dx)] + [(name, arr, grads[name]) for name, arr in layer.params().items()]
    for name, arr, analytic in targets:
        assert analytic.shape == arr.shape, name
        flat = arr.reshape(-1)  # a view: perturbing it perturbs the array used by forward
        idx = gen.choice(flat.size, size=min(n_probe, flat.size), replace=False)
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            lp = loss(x)
            flat[i] = old - eps
            lm = loss(x)
            flat[i] = old
            num = (lp - lm) / (2 * eps)
            ana = analytic.reshape(-1)[i]
            assert abs(num - ana) <= tol * max(1.0, abs(num)), f"{layer!r} d/d{name}[{i}]: {ana} vs {num}"


# ---------------------------------------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------------------------------------

def test_dense_forms_shapes_and_flux_init(rng):
    d = Dense(784, 128, relu, seed=0)
    assert d.weight.shape == (128, 784) and d.bias.shape == (128,)
    assert d.weight.dtype == np.float32 and d.bias.dtype == np.float32
    assert not d.bias.any()
    assert Dense((784, 128), relu, seed=0).weight.shape == (128, 784)
    np.testing.assert_array_equal(Dense((784, 128), relu, seed=0).weight, d.weight)  # seed -> determinism
    assert not np.array_equal(Dense(784, 128, seed=1).weight, d.weight)
    assert Dense(2, 1, tanh, bias=False).bias is None
    # Flux glorot_uniform: U(-a, a), a = sqrt(6 / (in + out)); variance a^2 / 3
    a = np.sqrt(6 / (784 + 128))
    assert np.abs(d.weight).max() <= a
    assert abs(d.weight.std() - a / np.sqrt(3)) < 0.02 * a
    x = rng.standard_normal((5, 784)).astype(np.float32)
    y = d(x)
    np.testing.assert_allclose(y, np.maximum(x @ d.weight.T + d.bias, 0), rtol=1e-5, atol=1e-6)
    assert y.dtype == np.float32 and y.shape == (5, 128)
    assert d(x[0]).shape == (128,)  # a single sample


def test_dense_from_arrays_and_errors():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    d = Dense(w, np.array([1.0, 2.0], np.float32), relu)
    np.testing.assert_array_equal(d(np.ones((1, 3), np.float32)), [[4.0, 14.0]])
    assert Dense(w, False).bias is None
    with pytest.raises(ValueError, match=r"Dense\(3 => 2, relu\) expects 3 input features"):
        d(np.ones((4, 5)))
    with pytest.raises(ValueError, match="bias must have shape"):
        Dense(w, np.zeros(3))
    with pytest.raises(ValueError, match="Dense in"):
        Dense(0, 3)
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(3, 2, "relux")
    with pytest.raises(ValueError, match=r"expects 128 input features, got 100"):
        Dense(128, 64).output_shape((100,))


def test_nfan_matches_flux():
    assert nfan(128, 784) == (784, 128)  # Dense (out, in)
    assert nfan(3, 3, 1, 8) == (9, 72)  # Conv (kw, kh, cin, cout)
    assert nfan(7) == (1, 7)
    w = glorot_uniform(np.random.default_rng(0), 3, 3, 8, 16)
    assert w.dtype == np.float32 and np.abs(w).max() <= np.sqrt(6 / (72 + 144))


# ---------------------------------------------------------------------------------------------------------
# Conv: independent references
# ---------------------------------------------------------------------------------------------------------

def flux_conv_reference(x_nchw, w, b, stride, pad, dilation, flip):
    """Naive NNlib conv written in Flux's own WHCN indexing (0-based), independent of our axis bookkeeping.

    X[i, j, c, n] with i along W and j along H. NNlib's true convolution flips the kernel:
    y[i, j, o, n] = Σ_{a, b, c} Xpad[i*sw + a*dw, j*sh + b*dh, c, n] * w[kw-1-a, kh-1-b, c, o]  (+ bias[o]).
    """
    X = x_nchw.transpose(3, 2, 1, 0)  # NCHW -> WHCN
    kw, kh, cin, cout = w.shape
    (sw, sh), (dw, dh) = stride, dilation
    w_lo, w_hi, h_lo, h_hi = pad
    Xp = np.pad(X, ((w_lo, w_hi), (h_lo, h_hi), (0, 0), (0, 0)))
    W_out = (Xp.shape[0] - dw * (kw - 1) - 1) // sw + 1
    H_out = (Xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    Y = np.zeros((W_out, H_out, cout, X.shape[3]))
    for i in range(W_out):
        for j in range(H_out):
            for a in range(kw):
                for bb in range(kh):
                    k = w[kw - 1 - a, kh - 1 - bb] if flip else w[a, bb]  # (cin, cout)
                    Y[i, j] += np.einsum("cn,co->on", Xp[i * sw + a * dw, j * sh + bb * dh], k)
    Y += b[None, None, :, None]
    return Y.transpose(3, 2, 1, 0)  # WHCN -> NCHW


def scipy_conv_reference(x, w, b, stride, pad, dilation, flip):
    """scipy.signal.convolve (true convolution) / correlate per (sample, cin, cout), then stride by slicing."""
    kw, kh, cin, cout = w.shape
    (sw, sh), (dw, dh) = stride, dilation
    xp = _conv.pad_nchw(x, pad)
    n = x.shape[0]
    out = None
    for o in range(cout):
        acc = 0
        for c in range(cin):
            k_hw = w[:, :, c, o].T  # (kh, kw): H rows, W columns like the data
            kd = np.zeros((dh * (kh - 1) + 1, dw * (kw - 1) + 1))
            kd[::dh, ::dw] = k_hw  # dilation = kernel with holes
            op = signal.convolve if flip else signal.correlate
            acc = acc + np.stack([op(xp[s, c], kd, mode="valid") for s in range(n)])
        acc = acc[:, ::sh, ::sw] + b[o]
        out = acc[:, None] if out is None else np.concatenate([out, acc[:, None]], axis=1)
    return out


CONV_CASES = [
    dict(k=(3, 3), stride=1, pad=0, dilation=1),
    dict(k=(3, 2), stride=(2, 1), pad=0, dilation=1),
    dict(k=(3, 3), stride=1, pad=(1, 2), dilation=1),
    dict(k=(2, 3), stride=(1, 2), pad=(0, 1, 2, 1), dilation=1),
    dict(k=(3, 3), stride=1, pad=0, dilation=(2, 1)),
    dict(k=(2, 2), stride=2, pad=1, dilation=2),
]


@pytest.mark.parametrize("cls", [Conv, CrossCor])
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv_matches_references(cls, case, rng):
    layer = cls(case["k"], (2, 3), stride=case["stride"], pad=case["pad"], dilation=case["dilation"],
                rng=rng).astype(np.float64)
    layer.bias[:] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 9, 8))
    y = layer(x)
    flip = cls is Conv
    ref_flux = flux_conv_reference(x, layer.weight, layer.bias, layer.stride, layer.pad, layer.dilation, flip)
    ref_scipy = scipy_conv_reference(x, layer.weight, layer.bias, layer.stride, layer.pad, layer.dilation, flip)
    assert y.shape == ref_flux.shape == (2, 3) + layer.output_shape((2, 9, 8))[1:]
    np.testing.assert_allclose(y, ref_flux, atol=1e-5)
    np.testing.assert_allclose(y, ref_scipy, atol=1e-5)


def test_conv_is_true_convolution_and_crosscor_is_not():
    # an asymmetric kernel distinguishes the two: Conv == CrossCor with the kernel flipped in both axes
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    c = Conv((3, 2), (1, 1), seed=0)
    cc = CrossCor(c.weight[::-1, ::-1].copy(), c.bias.copy())
    np.testing.assert_allclose(c(x), cc(x), atol=1e-6)
    assert not np.allclose(c(x), CrossCor(c.weight.copy(), c.bias.copy())(x), atol=1e-3)


def test_conv_forms_pad_and_repr():
    a = Conv((3, 3), (1, 8), relu, seed=0)
    b = Conv((3, 3), 1, 8, relu, seed=0)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert a.weight.shape == (3, 3, 1, 8) and a.weight.dtype == np.float32
    assert repr(a) == "Conv((3, 3), 1 => 8, relu)"
    assert Conv((3, 3), (1, 8), pad=1).pad == (1, 1, 1, 1)
    assert Conv((3, 3), (1, 8), pad=(1, 2)).pad == (1, 1, 2, 2)  # NNlib: one entry per spatial dim
    assert Conv((5, 3), (1, 8), pad="same").pad == (2, 2, 1, 1)
    assert Conv((4, 4), (1, 8), pad=SamePad(), dilation=(1, 2)).pad == (2, 1, 3, 3)  # cld, fld
    same = Conv((4, 3), (1, 2), pad=SamePad())
    assert same.output_shape((1, 7, 9)) == (2, 7, 9)
    assert same(np.zeros((1, 1, 7, 9))).shape == (1, 2, 7, 9)
    assert repr(Conv((3, 3), (1, 8), pad=(1, 2), stride=2, bias=False)) == \
        "Conv((3, 3), 1 => 8, pad=(1, 1, 2, 2), stride=2, bias=false)"
    with pytest.raises(ValueError, match=r"Conv\(\(3, 3\), 1 => 8, relu\) expects 1 input channels, got 3"):
        a(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="divisible by groups=2"):     # groups are supported (issue 12)
        Conv((3, 3), (3, 2), groups=2)
    with pytest.raises(ValueError, match="smaller than"):
        a.output_shape((1, 2, 2))


# ---------------------------------------------------------------------------------------------------------
# pooling, flatten
# ---------------------------------------------------------------------------------------------------------

def naive_pool(x, k, stride, pad, mode):
    kw, kh = k
    sw, sh = stride
    xp = _conv.pad_nchw(x, pad, -np.inf if mode == "max" else 0.0)
    ho = (xp.shape[2] - kh) // sh + 1
    wo = (xp.shape[3] - kw) // sw + 1
    y = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            y[:, :, i, j] = win.max(axis=(2, 3)) if mode == "max" else win.sum(axis=(2, 3)) / (kh * kw)
    return y


@pytest.mark.parametrize("cls,mode", [(MaxPool, "max"), (MeanPool, "mean")])
@pytest.mark.parametrize("kw", [dict(k=(2, 2)), dict(k=(3, 2), stride=(1, 2)), dict(k=(2, 2), pad=1),
                                dict(k=(3, 3), stride=2, pad=(1, 0))])
def test_pool_matches_naive(cls, mode, kw, rng):
    layer = cls(kw["k"], stride=kw.get("stride"), pad=kw.get("pad", 0))
    x = rng.standard_normal((2, 3, 7, 9))
    y = layer(x)
    ref = naive_pool(x, layer.k, layer.stride, layer.pad, mode)
    np.testing.assert_allclose(y, ref, atol=1e-12)
    assert y.shape[1:] == layer.output_shape((3, 7, 9))
    grad_check(layer, x)


def test_pool_repr_and_dtype():
    assert repr(MaxPool((2, 2))) == "MaxPool((2, 2))"
    assert repr(MeanPool((3, 3), stride=1, pad=1)) == "MeanPool((3, 3), pad=1, stride=1)"
    assert MaxPool((2, 2))(np.zeros((1, 1, 4, 4), np.float32)).dtype == np.float32


def test_global_mean_pool():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    y = GlobalMeanPool()(x)
    assert y.shape == (2, 3, 1, 1)  # Flux keeps singleton spatial dims
    np.testing.assert_allclose(y[:, :, 0, 0], x.mean(axis=(2, 3)))
    grad_check(GlobalMeanPool(), x)


def test_flatten_is_flux_column_major_order():
    """Proof that Flux's flatten equals a plain C-order reshape on our batch-first arrays.

    Flux holds this batch as a WHCN array X with X[w, h, c, n] == x[n, c, h, w] (our dims reversed).
    Flux.flatten(X) = reshape(X, :, N), which is column-major (first index fastest): row r of sample n is
    r = w + W*h + W*H*c. Reversing the dims of the result gives our (N, W*H*C) matrix. C-order
    x.reshape(N, -1) enumerates (c, h, w) with w fastest: the same index r. So they are equal.
    """
    n, c, h, w = 2, 3, 4, 5
    x = np.random.default_rng(0).standard_normal((n, c, h, w))
    X = x.transpose(3, 2, 1, 0)  # WHCN
    flux_flat = X.reshape(w * h * c, n, order="F")  # Flux.flatten: column-major reshape to (WHC, N)
    ours = flatten(x)
    np.testing.assert_array_equal(flux_flat.T, ours)
    np.testing.assert_array_equal(ours, x.reshape(n, -1))
    # the index formula, checked explicitly for one element
    assert ours[1, 2 + w * 3 + w * h * 1] == x[1, 1, 3, 2]
    assert isinstance(flatten, Flatten) and repr(flatten) == "flatten"
    assert flatten.output_shape((16, 5, 5)) == (400,)
    grad_check(flatten, x)


# ---------------------------------------------------------------------------------------------------------
# BatchNorm, Dropout
# ---------------------------------------------------------------------------------------------------------

def test_batchnorm_flux_semantics(rng):
    bn = BatchNorm(3)
    x = (rng.standard_normal((4, 3, 2, 5)) * 2 + 1).astype(np.float32)
    y_train, _ = bn.forward(x, train=True)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    m = 4 * 2 * 5
    np.testing.assert_allclose(y_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(bn.mu, 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.sigma2, 0.9 + 0.1 * var * m / (m - 1), rtol=1e-5)  # unbiased update
    # test mode uses the running statistics
    y_test = bn(x)
    ref = (x - bn.mu[None, :, None, None]) / np.sqrt(bn.sigma2[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y_test, ref, rtol=1e-5, atol=1e-5)
    mu_before = bn.mu.copy()
    bn(x)
    np.testing.assert_array_equal(bn.mu, mu_before)  # inference does not update stats
    # active=False forces test mode even when training
    bn.active = False
    np.testing.assert_allclose(bn.forward(x, train=True)[0], y_test, rtol=1e-6)
    # 2-D (N, C) input: statistics over the batch axis only
    bn2 = BatchNorm(3, relu)
    x2 = rng.standard_normal((6, 3))
    y2, _ = bn2.forward(x2, train=True)
    np.testing.assert_allclose(y2, np.maximum((x2 - x2.mean(0)) / np.sqrt(x2.var(0) + 1e-5), 0), rtol=1e-5)
    assert set(bn.params()) == {"beta", "gamma"} and set(bn.state()) == {"mu", "sigma2"}
    with pytest.raises(ValueError, match=r"BatchNorm\(3\) expects 3 channels"):
        BatchNorm(3)(np.zeros((2, 4, 3, 3)))


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_gradients(train, rng):
    bn = BatchNorm(3, tanh).astype(np.float64)
    bn.gamma[:] = rng.uniform(0.5, 1.5, 3)
    bn.beta[:] = rng.standard_normal(3)
    bn.mu[:] = rng.standard_normal(3)
    bn.sigma2[:] = rng.uniform(0.5, 2, 3)
    grad_check(bn, rng.standard_normal((4, 3, 3, 2)), train=train)
    grad_check(bn, rng.standard_normal((5, 3)), train=train)


def test_dropout(rng):
    d = Dropout(0.5, seed=0)
    x = np.ones((200, 50), np.float32)
    np.testing.assert_array_equal(d(x), x)  # test mode: identity
    y, _ = d.forward(x, train=True)
    kept = y != 0
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(y[kept], 2.0)  # scaled by 1/(1-p)
    assert Dropout(0.5, active=True)(x).min() == 0
    assert repr(Dropout(0.25)) == "Dropout(0.25)"
    with pytest.raises(ValueError, match="Dropout p"):
        Dropout(1.5)
    grad_check(Dropout(0.3).astype(np.float64), rng.standard_normal((4, 6)), train=True)
    # Flux dims=3 on WHCN is the channel dim: one mask entry per channel, shared over batch and space
    y3, _ = Dropout(0.5, dims=3, seed=1).forward(np.ones((4, 16, 3, 3)), train=True)
    assert np.all(y3 == y3[:1, :, :1, :1]) and 0 < (y3[0, :, 0, 0] == 0).sum() < 16
    grad_check(Dropout(0.5, dims=3), rng.standard_normal((2, 4, 3, 3)), train=True)


# ---------------------------------------------------------------------------------------------------------
# gradient checks for the parametrised layers
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [
    Dense(5, 4, tanh, seed=0),
    Dense(5, 4, relu, bias=False, seed=0),
    Conv((3, 2), (2, 3), tanh, seed=0),
    Conv((3, 3), (2, 2), relu, stride=2, pad=1, seed=0),
    Conv((2, 3), (2, 2), stride=(1, 2), pad=(0, 1, 2, 0), dilation=(2, 1), seed=0),
    CrossCor((3, 3), (2, 3), tanh, pad=1, dilation=2, seed=0),
    Conv((3, 3), (2, 2), bias=False, seed=0),
], ids=repr)
def test_param_layer_gradients(layer, rng):
    layer = layer.astype(np.float64)
    for p in layer.params().values():
        p[...] = rng.standard_normal(p.shape) * 0.5  # nonzero bias too
    x = rng.standard_normal((3, 5)) if isinstance(layer, Dense) else rng.standard_normal((2, 2, 7, 6))
    grad_check(layer, x)


def test_cnn_chain_gradient(rng):
    model = Chain(Conv((3, 3), (1, 2), tanh, seed=0), MaxPool((2, 2)), Conv((3, 3), (2, 3), relu, pad=1, seed=1),
                  MeanPool((2, 2)), flatten, Dense(12, 4, seed=2)).astype(np.float64)
    x = rng.standard_normal((2, 1, 10, 10))
    y, cache = model.forward(x)
    g = rng.standard_normal(y.shape)
    dx, grads = model.backward(cache, g)
    assert list(grads) == list(model.params())
    grad_check(model, x, n_probe=10)


def test_conv_float32_close_to_float64(rng):
    c = Conv((3, 3), (4, 8), relu, seed=0)
    x = rng.standard_normal((3, 4, 12, 12)).astype(np.float32)
    y32 = c(x)
    y64 = c.astype(np.float64)(x.astype(np.float64))
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, atol=1e-5)
    assert identity(y32) is y32


def test_cnn_matches_torch_forward_and_gradients():
    """End-to-end cross-check against PyTorch (skipped when torch is absent): same weights, same loss.

    torch's Conv2d is a cross-correlation with weight (cout, cin, kh, kw), so a Flux kernel maps to it by
    flipping both spatial axes and reversing the dims; torch flattens NCHW in C order, like Flux on WHCN.
    """
    torch = pytest.importorskip("torch")
    model = Chain(Conv((3, 3), (1, 4), relu, pad=1, seed=0), MaxPool((2, 2)), Conv((3, 2), (4, 6), tanh, stride=2,
                                                                                   seed=1),
                  MeanPool((2, 2)), flatten, Dense(6 * 1 * 1, 3, seed=2)).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((5, 1, 9, 10))
    ref = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(4, 6, (2, 3), stride=2), torch.nn.Tanh(), torch.nn.AvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(6, 3)).double()
    with torch.no_grad():
        for ours, theirs in ((model[0], ref[0]), (model[2], ref[3])):
            theirs.weight.copy_(torch.from_numpy(ours.weight[::-1, ::-1].transpose(3, 2, 1, 0).copy()))
            theirs.bias.copy_(torch.from_numpy(ours.bias))
        ref[7].weight.copy_(torch.from_numpy(model[5].weight))
        ref[7].bias.copy_(torch.from_numpy(model[5].bias))
    assert model.output_shape((1, 9, 10)) == (3,)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = ref(xt)
    g = np.random.default_rng(1).standard_normal((5, 3))
    (yt * torch.from_numpy(g)).sum().backward()
    y, cache = model.forward(x)
    dx, grads = model.backward(cache, g)
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-10)
    tw = ref[3].weight.grad.numpy()
    np.testing.assert_allclose(grads["layers[3].weight"], tw.transpose(3, 2, 1, 0)[::-1, ::-1], atol=1e-10)
    np.testing.assert_allclose(grads["layers[6].weight"], ref[7].weight.grad.numpy(), atol=1e-10)


def test_maxpool_ties_route_gradient_to_first_maximum():
    # NNlib's ∇maxpool gives a window's gradient to its first maximal entry only (ties are common after relu)
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2:, 2:] = [[5, 5], [1, 5]]
    y, cache = MaxPool((2, 2)).forward(x)
    dx, _ = MaxPool((2, 2)).backward(cache, np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, 0], expected)
    # overlapping windows (stride 1) accumulate
    dx1, _ = MaxPool((2, 2), stride=1).backward(MaxPool((2, 2), stride=1).forward(np.ones((1, 1, 3, 3)))[1],
                                                np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(dx1[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
