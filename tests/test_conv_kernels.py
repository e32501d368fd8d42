"""Convolution kernels (model/_conv.py): groups, depthwise and ConvTranspose against a naive loop written in
Flux's WHCN indexing and against PyTorch, plus finite-difference checks of every gradient."""
from __future__ import annotations

import numpy as np
import pytest

from pyflux_compress.model import _conv


# ---------------------------------------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------------------------------------

def naive_conv(x, w, stride, pad, dilation, flip, groups):
    """NNlib grouped conv by loops in WHCN (0-based), independent of the kernels' axis bookkeeping.

    X[i, j, c, n] (i along W, j along H); group g reads channels g*cin_g.. and writes g*cout_g..;
    y[i, j, o, n] = Σ_{a, b, c} Xpad[i*sw + a*dw, j*sh + b*dh, g*cin_g + c, n] * w[a', b', c, o] with
    (a', b') = (kw-1-a, kh-1-b) for a true convolution (flip) and (a, b) otherwise.
    """
    X = x.transpose(3, 2, 1, 0)
    kw, kh, cin_g, cout = w.shape
    (sw, sh), (dw, dh) = stride, dilation
    w_lo, w_hi, h_lo, h_hi = pad
    Xp = np.pad(X, ((w_lo, w_hi), (h_lo, h_hi), (0, 0), (0, 0)))
    W_out = (Xp.shape[0] - dw * (kw - 1) - 1) // sw + 1
    H_out = (Xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    cout_g = cout // groups
    Y = np.zeros((W_out, H_out, cout, X.shape[3]))
    for o in range(cout):
        g = o // cout_g
        for i in range(W_out):
            for j in range(H_out):
                for a in range(kw):
                    for b in range(kh):
                        wa, wb = (kw - 1 - a, kh - 1 - b) if flip else (a, b)
                        patch = Xp[i * sw + a * dw, j * sh + b * dh, g * cin_g:(g + 1) * cin_g]  # (cin_g, N)
                        Y[i, j, o] += w[wa, wb, :, o] @ patch
    return Y.transpose(3, 2, 1, 0)


def naive_conv_transpose(x, w, stride, pad, dilation, flip, groups, outpad):
    """ConvTranspose by its definition: the adjoint of :func:`naive_conv` (a scatter loop), then cropped/padded.

    Every input pixel x[n, c, i, j] adds x * w into the full-size output at (i*s + a*d) before cropping the
    padding (Flux: ``∇conv_data`` of the conv whose input has the ConvTranspose's output size).
    """
    n, cin, H, W = x.shape
    kw, kh, cout_g, _ = w.shape
    (sw, sh), (dw, dh) = stride, dilation
    w_lo, w_hi, h_lo, h_hi = pad
    ow, oh = outpad
    Hf, Wf = (H - 1) * sh + dh * (kh - 1) + 1 + oh, (W - 1) * sw + dw * (kw - 1) + 1 + ow
    full = np.zeros((n, cout_g * groups, Hf + h_lo + h_hi, Wf + w_lo + w_hi))
    cin_g = cin // groups
    for c in range(cin):
        g = c // cin_g
        for i in range(H):
            for j in range(W):
                for a in range(kh):
                    for b in range(kw):
                        wb, wa = (kw - 1 - b, kh - 1 - a) if flip else (b, a)
                        full[:, g * cout_g:(g + 1) * cout_g, i * sh + a * dh, j * sw + b * dw] += \
                            x[:, c, i, j, None] * w[wb, wa, :, c][None]
    Ho = _conv.conv_transpose_out_size(H, kh, sh, h_lo, h_hi, dh, oh)
    Wo = _conv.conv_transpose_out_size(W, kw, sw, w_lo, w_hi, dw, ow)
    return full[:, :, h_lo:h_lo + Ho, w_lo:w_lo + Wo]


def torch_conv(x, w, stride, pad, dilation, flip, groups):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    wt = (w[::-1, ::-1] if flip else w).transpose(3, 2, 1, 0).copy()  # (cout, cin_g, kh, kw), correlation
    xt = F.pad(torch.from_numpy(x), pad)  # torch's pad tuple is (W lo, W hi, H lo, H hi): our order
    y = F.conv2d(xt, torch.from_numpy(wt), stride=stride[::-1], dilation=dilation[::-1], groups=groups)
    return y.numpy()


def torch_conv_transpose(x, w, stride, pad, dilation, flip, groups, outpad):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    wt = (w[::-1, ::-1] if flip else w).transpose(3, 2, 1, 0).copy()  # (cin, cout_g, kh, kw)
    full = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(wt), stride=stride[::-1],
                              dilation=dilation[::-1], groups=groups).numpy()
    w_lo, w_hi, h_lo, h_hi = pad
    full = np.pad(full, ((0, 0), (0, 0), (0, outpad[1]), (0, outpad[0])))  # outpad rows: nothing lands there
    return full[:, :, h_lo:full.shape[2] - h_hi, w_lo:full.shape[3] - w_hi]


# ---------------------------------------------------------------------------------------------------------
# cases: (k, cin, cout, groups, stride, pad, dilation)
# ---------------------------------------------------------------------------------------------------------

CASES = [
    ((3, 3), 2, 3, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    ((3, 2), 4, 6, 2, (2, 1), (1, 0, 2, 1), (1, 1)),
    ((2, 3), 3, 3, 3, (1, 2), (0, 1, 1, 1), (2, 1)),   # depthwise
    ((3, 3), 2, 4, 2, (2, 2), (1, 1, 1, 1), (2, 2)),   # depthwise, channel multiplier 2
    ((1, 1), 4, 2, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
]
IDS = [f"k{c[0]}-{c[1]}to{c[2]}-g{c[3]}-s{c[4]}-p{c[5]}-d{c[6]}" for c in CASES]


def _weights(rng, k, cin_g, cout):
    return rng.standard_normal((k[0], k[1], cin_g, cout))


@pytest.mark.parametrize("flip", [True, False], ids=["conv", "crosscor"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_matches_naive_loop_and_torch(case, flip, rng):
    k, cin, cout, groups, stride, pad, dil = case
    x = rng.standard_normal((2, cin, 9, 8))
    w = _weights(rng, k, cin // groups, cout)
    b = rng.standard_normal(cout)
    y, _ = _conv.conv2d_forward(x, w, b, stride, pad, dil, flip=flip, groups=groups)
    ref = naive_conv(x, w, stride, pad, dil, flip, groups) + b[None, :, None, None]
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-10)
    np.testing.assert_allclose(_conv.conv2d(x, w, stride, pad, dil, flip, groups),
                               torch_conv(x, w, stride, pad, dil, flip, groups), atol=1e-10)


@pytest.mark.parametrize("largest_outpad", [False, True], ids=["outpad0", "outpad-max"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_transpose_matches_naive_loop_and_torch(case, largest_outpad, rng):
    k, cout, cin, groups, stride, pad, dil = case  # transposed: in and out swap roles
    outpad = (stride[0] - 1, stride[1] - 1) if largest_outpad else (0, 0)
    x = rng.standard_normal((2, cin, 4, 5))
    w = rng.standard_normal((k[0], k[1], cout // groups, cin))  # Flux ConvTranspose layout
    b = rng.standard_normal(cout)
    y, _ = _conv.conv_transpose2d_forward(x, w, b, stride, pad, dil, True, groups, outpad)
    ref = naive_conv_transpose(x, w, stride, pad, dil, True, groups, outpad) + b[None, :, None, None]
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-10)
    np.testing.assert_allclose(y - b[None, :, None, None],
                               torch_conv_transpose(x, w, stride, pad, dil, True, groups, outpad), atol=1e-10)
    # it is ∇conv_data of the conv it transposes: <conv(z), x> == <z, convT(x)> for every z
    z = rng.standard_normal(y.shape)
    lhs = np.sum(_conv.conv2d(z, w, stride, pad, dil, True, groups) * x)
    assert abs(lhs - np.sum(z * (y - b[None, :, None, None]))) < 1e-8 * max(1.0, abs(lhs))


def _fd_check(f, args: list[np.ndarray], analytic: list[np.ndarray], rng, n_probe=12, eps=1e-6):
    """Central differences of the scalar ``f(*args)`` at random entries of every array in ``args``."""
    for arr, ana in zip(args, analytic):
        assert ana.shape == arr.shape
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, size=min(n_probe, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            lp = f(*args)
            flat[i] = old - eps
            lm = f(*args)
            flat[i] = old
            num = (lp - lm) / (2 * eps)
            assert abs(num - ana.reshape(-1)[i]) <= 1e-6 * max(1.0, abs(num)), (i, num, ana.reshape(-1)[i])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_gradients_finite_differences(case, rng):
    k, cin, cout, groups, stride, pad, dil = case
    x = rng.standard_normal((2, cin, 7, 6))
    w = _weights(rng, k, cin // groups, cout)
    b = rng.standard_normal(cout)
    y, cache = _conv.conv2d_forward(x, w, b, stride, pad, dil, True, groups)
    g = rng.standard_normal(y.shape)
    dx, dw, db = _conv.conv2d_backward(cache, g)
    assert _conv.conv2d_backward(cache, g, need_dx=False)[0] is None

    def loss(xx, ww, bb):
        return float(np.sum(_conv.conv2d_forward(xx, ww, bb, stride, pad, dil, True, groups)[0] * g))

    _fd_check(loss, [x, w, b], [dx, dw, db], rng)
    # the stateless primitives agree with the layer pair
    np.testing.assert_allclose(_conv.conv2d_grad_data(g, w, x.shape[2:], stride, pad, dil, True, groups), dx,
                               atol=1e-12)
    np.testing.assert_allclose(_conv.conv2d_grad_filter(x, g, k, stride, pad, dil, True, groups), dw, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_conv_transpose_gradients_finite_differences(case, rng):
    k, cout, cin, groups, stride, pad, dil = case
    outpad = (stride[0] - 1, 0)
    x = rng.standard_normal((2, cin, 4, 3))
    w = rng.standard_normal((k[0], k[1], cout // groups, cin))
    b = rng.standard_normal(cout)
    y, cache = _conv.conv_transpose2d_forward(x, w, b, stride, pad, dil, True, groups, outpad)
    g = rng.standard_normal(y.shape)
    dx, dw, db = _conv.conv_transpose2d_backward(cache, g)

    def loss(xx, ww, bb):
        return float(np.sum(_conv.conv_transpose2d_forward(xx, ww, bb, stride, pad, dil, True, groups,
                                                           outpad)[0] * g))

    _fd_check(loss, [x, w, b], [dx, dw, db], rng)


def test_float32_kernels_match_float64(rng):
    x = rng.standard_normal((3, 4, 12, 11))
    w = rng.standard_normal((3, 3, 2, 6))
    y64, c64 = _conv.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), True, 2)
    y32, c32 = _conv.conv2d_forward(x.astype(np.float32), w.astype(np.float32), None, (1, 1), (1, 1, 1, 1),
                                    (1, 1), True, 2)
    assert y32.dtype == np.float32 and y32.flags.c_contiguous
    np.testing.assert_allclose(y32, y64, atol=1e-4)
    g = rng.standard_normal(y64.shape)
    for a, b in zip(_conv.conv2d_backward(c32, g.astype(np.float32)), _conv.conv2d_backward(c64, g)):
        if a is not None:
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4)


def test_scratch_reuse_does_not_leak_between_calls(rng):
    # two forwards with the same shapes before either backward: caches must stay independent
    x1, x2 = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((2, 2, 6, 6))
    w = rng.standard_normal((3, 3, 2, 3))
    y1, c1 = _conv.conv2d_forward(x1, w, None, (1, 1), (1, 1, 1, 1), (1, 1))
    y2, c2 = _conv.conv2d_forward(x2, w, None, (1, 1), (1, 1, 1, 1), (1, 1))
    g = rng.standard_normal(y1.shape)
    dx1, dw1, _ = _conv.conv2d_backward(c1, g)
    _conv.conv2d_backward(c2, g)
    dx1b, dw1b, _ = _conv.conv2d_backward(c1, g)
    np.testing.assert_array_equal(dw1, dw1b)
    np.testing.assert_array_equal(dx1, dx1b)
    np.testing.assert_allclose(dw1, _conv.conv2d_grad_filter(x1, g, (3, 3), (1, 1), (1, 1, 1, 1)), atol=1e-12)


def test_bad_geometry_errors_name_the_problem(rng):
    x = rng.standard_normal((1, 4, 5, 5))
    with pytest.raises(ValueError, match="groups=3 must divide input channels 4"):
        _conv.conv2d(x, rng.standard_normal((3, 3, 1, 6)), groups=3)
    with pytest.raises(ValueError, match="2 input channels per group"):
        _conv.conv2d(x, rng.standard_normal((3, 3, 2, 6)), groups=1)
    with pytest.raises(ValueError, match="smaller than its dilated"):
        _conv.conv2d(x, rng.standard_normal((3, 3, 4, 2)), dilation=(3, 3))
    with pytest.raises(ValueError, match="outpad"):
        _conv.conv_transpose2d_forward(x, rng.standard_normal((3, 3, 2, 4)), None, (1, 1), (0, 0, 0, 0), (1, 1),
                                       outpad=(1, 0))
    with pytest.raises(ValueError, match="gradient must have shape"):
        _, cache = _conv.conv2d_forward(x, rng.standard_normal((3, 3, 4, 2)), None, (1, 1), (0, 0, 0, 0), (1, 1))
        _conv.conv2d_backward(cache, np.zeros((1, 2, 4, 4)))
