"""Grouped and depthwise 2-D convolution on top of ``model/_conv.py``'s dense kernels.

``groups = g`` splits the input channels into g blocks of ``cin/g`` and the output channels into g blocks of
``cout/g``; block j of the output sees only block j of the input (NNlib ``groups``). The Flux kernel of a
grouped ``Conv`` has shape ``(kw, kh, cin/g, cout)``.

* depthwise (``cin/g == 1``, Flux's ``DepthwiseConv``): one multiply-add per kernel offset over the whole
  batch, no im2col (a per-group GEMM would be ``cout`` tiny matrix products);
* otherwise one dense convolution per group.

Both return ``(y, cache)`` / take ``(cache, dy)`` like ``_conv.conv2d_forward`` / ``conv2d_backward``.
"""
from __future__ import annotations

import numpy as np

from . import _conv

__all__ = ["conv_forward", "conv_backward"]


def _window(xp: np.ndarray, a: int, b: int, sh: int, sw: int, ho: int, wo: int) -> np.ndarray:
    """The strided ``(..., ho, wo)`` view of padded ``xp`` seen by kernel offset (row a, column b)."""
    return xp[..., a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw]


def conv_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: tuple, pad: tuple,
                 dilation: tuple, flip: bool, groups: int) -> tuple[np.ndarray, tuple]:
    """Convolution of ``x (N, cin, H, W)`` with a Flux kernel ``(kw, kh, cin/groups, cout)``."""
    if groups == 1:
        y, c = _conv.conv2d_forward(x, weight, bias, stride, pad, dilation, flip=flip)
        return y, ("dense", c)
    kw, kh, cin_g, cout = weight.shape
    if cin_g == 1:
        return _depthwise_forward(x, weight, bias, stride, pad, dilation, flip, groups)
    cout_g = cout // groups
    ys, caches = [], []
    for j in range(groups):
        b = None if bias is None else bias[j * cout_g:(j + 1) * cout_g]
        y, c = _conv.conv2d_forward(np.ascontiguousarray(x[:, j * cin_g:(j + 1) * cin_g]),
                                    np.ascontiguousarray(weight[..., j * cout_g:(j + 1) * cout_g]), b,
                                    stride, pad, dilation, flip=flip)
        ys.append(y)
        caches.append(c)
    return np.concatenate(ys, axis=1), ("groups", caches, cout_g, bias is not None)


def conv_backward(cache: tuple, dy: np.ndarray, need_dx: bool = True
                  ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``(dx, dweight, dbias)`` for :func:`conv_forward`'s cache; ``need_dx=False`` skips dx."""
    kind = cache[0]
    if kind == "dense":
        return _conv.conv2d_backward(cache[1], dy, need_dx=need_dx)
    if kind == "depthwise":
        return _depthwise_backward(cache, dy, need_dx)
    _, caches, cout_g, has_bias = cache
    dxs, dws, dbs = [], [], []
    for j, c in enumerate(caches):
        dx, dw, db = _conv.conv2d_backward(c, np.ascontiguousarray(dy[:, j * cout_g:(j + 1) * cout_g]),
                                           need_dx=need_dx)
        dxs.append(dx)
        dws.append(dw)
        dbs.append(db)
    dx = np.concatenate(dxs, axis=1) if need_dx else None
    return dx, np.concatenate(dws, axis=3), (np.concatenate(dbs) if has_bias else None)


def _depthwise_forward(x, weight, bias, stride, pad, dilation, flip, groups):
    kw, kh, _, cout = weight.shape
    mult = cout // groups                       # output channels per input channel
    sw, sh = stride
    dw, dh = dilation
    n, c, h, w = x.shape
    ho = _conv.out_size(h, kh, sh, pad[2], pad[3], dh)
    wo = _conv.out_size(w, kw, sw, pad[0], pad[1], dw)
    xp = _conv.pad_nchw(x, pad)
    if mult > 1:                                # output channel o reads input channel o // mult
        xp = np.repeat(xp, mult, axis=1)
    k = weight[::-1, ::-1] if flip else weight  # true convolution flips the kernel
    y = np.zeros((n, cout, ho, wo), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            y += _window(xp, a * dh, b * dw, sh, sw, ho, wo) * k[b, a, 0][None, :, None, None]
    if bias is not None:
        y += bias[None, :, None, None]
    return y, ("depthwise", xp, k, stride, pad, dilation, flip, mult, bias is not None, c)


def _depthwise_backward(cache, dy, need_dx):
    _, xp, k, (sw, sh), pad, (dw, dh), flip, mult, has_bias, cin = cache
    kw, kh, _, cout = k.shape
    ho, wo = dy.shape[2:]
    dk = np.empty(k.shape, dtype=dy.dtype)
    for a in range(kh):
        for b in range(kw):
            dk[b, a, 0] = np.einsum("ncij,ncij->c", _window(xp, a * dh, b * dw, sh, sw, ho, wo), dy)
    dweight = np.ascontiguousarray(dk[::-1, ::-1] if flip else dk)
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    if not need_dx:
        return None, dweight, dbias
    dxp = np.zeros(xp.shape, dtype=dy.dtype)
    for a in range(kh):
        for b in range(kw):
            _window(dxp, a * dh, b * dw, sh, sw, ho, wo)[...] += dy * k[b, a, 0][None, :, None, None]
    if mult > 1:
        dxp = dxp.reshape(dxp.shape[0], cin, mult, *dxp.shape[2:]).sum(axis=2)
    w_lo, w_hi, h_lo, h_hi = pad
    dx = dxp[..., h_lo:dxp.shape[-2] - h_hi, w_lo:dxp.shape[-1] - w_hi]
    return np.ascontiguousarray(dx), dweight, dbias
