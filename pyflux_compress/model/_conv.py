"""Vectorised 2-D convolution and pooling kernels on batch-first ``(N, C, H, W)`` arrays.

Conventions (Flux/NNlib order, see docs/ARCHITECTURE.md): every tuple lists the *first Flux spatial dim first*,
i.e. the last numpy axis (W) first:

* ``weight`` has Flux's kernel shape ``(kw, kh, cin // groups, cout)`` for Conv/CrossCor and
  ``(kw, kh, cout // groups, cin)`` for ConvTranspose (Flux's ``convfilter(k, reverse(in => out))``);
* ``stride = (sw, sh)``, ``dilation = (dw, dh)``, ``outpad = (ow, oh)``, pooling ``k = (kw, kh)``;
* ``pad = (w_lo, w_hi, h_lo, h_hi)``.

``flip=True`` is NNlib's true convolution (``Conv``, ``ConvTranspose``): output
``y[i, j] = Σ x[i*sh + a*dh, j*sw + b*dw] * w[kw-1-b, kh-1-a]``; ``flip=False`` is cross-correlation
(``CrossCor``, and ONNX's ``Conv``).

Public kernel API (stable; layers call only these):

=================================  ================================================================
``conv2d_forward``/``_backward``   Conv / CrossCor / grouped / depthwise layer pair (forward caches)
``conv_transpose2d_forward``/...   ConvTranspose layer pair: forward is NNlib's ``∇conv_data``
``conv2d``                         stateless forward (NNlib ``conv``)
``conv2d_grad_data``               NNlib ``∇conv_data``: dL/dx of a conv given dL/dy
``conv2d_grad_filter``             NNlib ``∇conv_filter``: dL/dweight of a conv given x and dL/dy
``out_size``, ``conv_transpose_out_size``, ``same_pad``, ``pad_nchw``, ``pool2d_forward``/``_backward``
=================================  ================================================================

How (why it is fast): the padded input is seen through ONE strided view ``(N, cin, kh, kw, Ho, Wo)`` and
copied once into a per-sample column matrix ``col (N, cin*kh*kw, Ho*Wo)``. Every product is then ONE
batched GEMM call over that buffer: forward ``y[n] = K @ col[n]`` (already NCHW, no transpose back), filter
gradient ``Σ_n dy[n] @ col[n].T``, data gradient ``dcol[n] = K.T @ dy[n]`` followed by the adjoint scatter
(one strided slice-add per kernel tap, never per pixel or sample). Groups are one more batch axis of the
same GEMM. The per-sample layout was measured faster than one big ``(cout, N*Ho*Wo)`` GEMM with OpenBLAS
(1.7-3.2x for LeNet's layers: a GEMM with 6-16 rows and 10^5 columns runs far below peak, many
cache-sized ones do not). Scratch buffers (padding, scatter targets) are reused across steps per thread.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["out_size", "conv_transpose_out_size", "pad_nchw", "same_pad", "ConvGeometry", "conv2d",
           "conv2d_grad_data", "conv2d_grad_filter", "conv2d_forward", "conv2d_backward",
           "conv_transpose2d_forward", "conv_transpose2d_backward", "pool2d_forward", "pool2d_backward"]

Pair = tuple[int, int]
Pad4 = tuple[int, int, int, int]


# ---------------------------------------------------------------------------------------------------------
# sizes and padding
# ---------------------------------------------------------------------------------------------------------

def out_size(n: int, k: int, stride: int, lo: int, hi: int, dilation: int = 1) -> int:
    """Output length along one axis: ``(n + lo + hi - dilation*(k-1) - 1) // stride + 1`` (may be <= 0)."""
    return (n + lo + hi - dilation * (k - 1) - 1) // stride + 1


def conv_transpose_out_size(n: int, k: int, stride: int, lo: int, hi: int, dilation: int = 1,
                            outpad: int = 0) -> int:
    """ConvTranspose output length along one axis, as Flux's ``conv_transpose_dims``:
    ``(n - 1)*stride + 1 + (k - 1)*dilation - (lo + hi) + outpad`` (may be <= 0)."""
    return (n - 1) * stride + 1 + (k - 1) * dilation - (lo + hi) + outpad


def same_pad(k: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    """Flux ``SamePad()``: per axis ``(cld(p, 2), fld(p, 2))`` with ``p = (k-1)*dilation`` (exact for stride 1)."""
    out: list[int] = []
    for ki, di in zip(k, dilation):
        p = (ki - 1) * di
        out += [-(-p // 2), p // 2]
    return tuple(out)


def pad_nchw(x: np.ndarray, pad: Pad4, value: float = 0.0) -> np.ndarray:
    """Pad the spatial axes of ``x (N, C, H, W)``; ``pad = (w_lo, w_hi, h_lo, h_hi)``. No copy if all zero."""
    w_lo, w_hi, h_lo, h_hi = pad
    if not any(pad):
        return x
    return np.pad(x, ((0, 0), (0, 0), (h_lo, h_hi), (w_lo, w_hi)), constant_values=value)


# ---------------------------------------------------------------------------------------------------------
# scratch buffers: reused across training steps, never escape the call that takes them
# ---------------------------------------------------------------------------------------------------------

_scratch = threading.local()
_SCRATCH_SLOTS = 8  # distinct (role, shape, dtype) buffers kept per thread; a model has a few conv layers


def _take(role: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised scratch array for ``role``; the same memory is returned for the same key next time.

    Only for buffers whose content is dead when the kernel returns (padding copies, scatter targets), so a
    cache kept by a caller never aliases it. Per thread, so concurrent kernels never share one.
    """
    pool: dict = getattr(_scratch, "pool", None) or {}
    _scratch.pool = pool
    key = (role, shape, np.dtype(dtype).str)
    buf = pool.pop(key, None)
    if buf is None:
        buf = np.empty(shape, dtype=dtype)
        while len(pool) >= _SCRATCH_SLOTS:  # drop the least recently used
            pool.pop(next(iter(pool)))
    pool[key] = buf  # re-insert: most recently used last
    return buf


def _pad_into(x: np.ndarray, pad: Pad4, role: str) -> np.ndarray:
    """Zero-padded copy of ``x (N, C, H, W)`` in a reused scratch buffer (``x`` itself when pad is zero)."""
    if not any(pad):
        return x
    w_lo, w_hi, h_lo, h_hi = pad
    n, c, h, w = x.shape
    xp = _take(role, (n, c, h + h_lo + h_hi, w + w_lo + w_hi), x.dtype)
    # zero only the border, then copy the interior
    xp[:, :, :h_lo] = 0
    xp[:, :, h_lo + h:] = 0
    xp[:, :, h_lo:h_lo + h, :w_lo] = 0
    xp[:, :, h_lo:h_lo + h, w_lo + w:] = 0
    xp[:, :, h_lo:h_lo + h, w_lo:w_lo + w] = x
    return xp


# ---------------------------------------------------------------------------------------------------------
# geometry and the three primitives
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvGeometry:
    """Everything about one convolution ``x (n, cin, h, w) -> y (n, cout, ho, wo)`` except the numbers.

    ``kh, kw`` kernel extent, ``sh, sw`` strides, ``dh, dw`` dilations, ``pad = (w_lo, w_hi, h_lo, h_hi)``,
    ``groups`` divides both ``cin`` and ``cout``, ``flip`` = true convolution.
    """

    n: int
    cin: int
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pad: Pad4
    groups: int
    flip: bool

    @property
    def ho(self) -> int:
        return out_size(self.h, self.kh, self.sh, self.pad[2], self.pad[3], self.dh)

    @property
    def wo(self) -> int:
        return out_size(self.w, self.kw, self.sw, self.pad[0], self.pad[1], self.dw)

    @property
    def taps(self) -> int:
        """Rows of one group's column matrix: ``cin // groups * kh * kw``."""
        return self.cin // self.groups * self.kh * self.kw

    @classmethod
    def of(cls, x_shape: tuple[int, ...], weight_shape: tuple[int, ...], cout: int, stride: Pair, pad: Pad4,
           dilation: Pair, groups: int, flip: bool) -> "ConvGeometry":
        """Validate and build; ``weight_shape = (kw, kh, cin // groups, ...)``; raises ValueError if inconsistent."""
        if len(x_shape) != 4:
            raise ValueError(f"conv input must be (N, C, H, W); got shape {tuple(x_shape)}")
        if len(weight_shape) != 4:
            raise ValueError(f"conv weight must be (kw, kh, cin/groups, cout); got shape {tuple(weight_shape)}")
        n, cin, h, w = (int(v) for v in x_shape)
        kw, kh, cin_g = (int(v) for v in weight_shape[:3])
        groups = int(groups)
        if groups < 1 or cin % groups or cout % groups:
            raise ValueError(f"conv groups={groups} must divide input channels {cin} and output channels {cout}")
        if cin_g * groups != cin:
            raise ValueError(f"conv weight has {cin_g} input channels per group; the input has {cin} channels "
                             f"in {groups} group(s) (expected {cin // groups} per group)")
        g = cls(n, cin, h, w, int(cout), kh, kw, int(stride[1]), int(stride[0]), int(dilation[1]),
                int(dilation[0]), tuple(int(p) for p in pad), groups, bool(flip))  # type: ignore[arg-type]
        if g.ho < 1 or g.wo < 1:
            raise ValueError(f"conv input {h}x{w} (HxW) with pad {pad} is smaller than its dilated "
                             f"{kh}x{kw} kernel")
        return g


def _kernel_matrix(weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Flux kernel -> ``(groups, cout_g, cin_g*kh*kw)``, rows matching the column matrix's ``(c, a, b)`` order.

    A ConvTranspose kernel ``(kw, kh, cout_T // groups, cin_T)`` is read the same way: its geometry is the
    convolution ``cout_T -> cin_T`` it transposes, whose kernel is exactly that array.
    """
    w = weight[::-1, ::-1] if geo.flip else weight
    k = w.transpose(3, 2, 1, 0)  # (cout, cin_g, kh, kw)
    return np.ascontiguousarray(k).reshape(geo.groups, geo.cout // geo.groups, geo.taps)


def _im2col(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``col (N, cin*kh*kw, Ho*Wo)`` with ``col[n, (c, a, b), (i, j)] = xpad[n, c, i*sh + a*dh, j*sw + b*dw]``.

    One copy from one strided view of the padded input; the innermost axis walks output columns (stride
    ``sw``), so runs stay long and the copy is cache friendly.
    """
    xp = _pad_into(x, geo.pad, "im2col_pad")
    s_n, s_c, s_h, s_w = xp.strides
    view = as_strided(xp, (geo.n, geo.cin, geo.kh, geo.kw, geo.ho, geo.wo),
                      (s_n, s_c, s_h * geo.dh, s_w * geo.dw, s_h * geo.sh, s_w * geo.sw), writeable=False)
    col = np.empty((geo.n, geo.cin, geo.kh, geo.kw, geo.ho, geo.wo), dtype=x.dtype)
    np.copyto(col, view)
    return col.reshape(geo.n, geo.cin * geo.kh * geo.kw, geo.ho * geo.wo)


def _col2im(dcol: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Adjoint of :func:`_im2col`: ``dx (N, cin, H, W)`` summing every column entry back where it was read."""
    n, cin, ho, wo = geo.n, geo.cin, geo.ho, geo.wo
    w_lo, w_hi, h_lo, h_hi = geo.pad
    hp, wp = geo.h + h_lo + h_hi, geo.w + w_lo + w_hi
    padded = any(geo.pad)
    dxp = _take("col2im", (n, cin, hp, wp), dcol.dtype) if padded else np.empty((n, cin, hp, wp), dcol.dtype)
    dxp.fill(0)
    d6 = dcol.reshape(n, cin, geo.kh, geo.kw, ho, wo)
    for a in range(geo.kh):  # one slice-add per kernel tap: overlapping windows need accumulation
        for b in range(geo.kw):
            r, c = a * geo.dh, b * geo.dw
            dxp[:, :, r:r + geo.sh * (ho - 1) + 1:geo.sh, c:c + geo.sw * (wo - 1) + 1:geo.sw] += d6[:, :, a, b]
    if not padded:
        return dxp
    return dxp[:, :, h_lo:h_lo + geo.h, w_lo:w_lo + geo.w].copy()


def _gemm_forward(kmat: np.ndarray, col: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``y (N, cout, Ho, Wo)`` = K @ col, one batched GEMM over samples (and groups)."""
    g = geo.groups
    if g == 1:
        y = np.matmul(kmat[0], col)  # (N, cout, Ho*Wo)
    else:
        y = np.matmul(kmat, col.reshape(geo.n, g, geo.taps, -1))  # (N, G, cout_g, Ho*Wo)
    return y.reshape(geo.n, geo.cout, geo.ho, geo.wo)


def _gemm_grad_filter(dy: np.ndarray, col: np.ndarray, geo: ConvGeometry, weight_dtype: np.dtype) -> np.ndarray:
    """Flux-shaped ``dweight (kw, kh, cin_g, cout)`` = Σ_n dy[n] @ col[n].T (one batched GEMM + a sum)."""
    g, n = geo.groups, geo.n
    dy3 = dy.reshape(n, g, geo.cout // g, -1)
    col4 = col.reshape(n, g, geo.taps, -1)
    dk = np.matmul(dy3, col4.transpose(0, 1, 3, 2)).sum(axis=0)  # (G, cout_g, taps)
    dk = dk.reshape(geo.cout, geo.cin // g, geo.kh, geo.kw).transpose(3, 2, 1, 0)  # (kw, kh, cin_g, cout)
    if geo.flip:
        dk = dk[::-1, ::-1]
    return np.ascontiguousarray(dk, dtype=weight_dtype)


def _gemm_grad_data(kmat: np.ndarray, dy: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``dx (N, cin, H, W)``: ``dcol[n] = K.T @ dy[n]`` in one batched GEMM, then the col2im scatter."""
    g, n = geo.groups, geo.n
    dy4 = dy.reshape(n, g, geo.cout // g, -1)
    dcol = np.matmul(kmat.transpose(0, 2, 1), dy4)  # (N, G, taps, Ho*Wo)
    return _col2im(dcol.reshape(n, geo.cin * geo.kh * geo.kw, -1), geo)


def _check_dy(dy: np.ndarray, geo: ConvGeometry, who: str) -> np.ndarray:
    expect = (geo.n, geo.cout, geo.ho, geo.wo)
    if dy.shape != expect:
        raise ValueError(f"{who}: gradient must have shape {expect}; got {dy.shape}")
    return np.ascontiguousarray(dy)


def conv2d(x: np.ndarray, weight: np.ndarray, stride: Pair = (1, 1), pad: Pad4 = (0, 0, 0, 0),
           dilation: Pair = (1, 1), flip: bool = True, groups: int = 1) -> np.ndarray:
    """NNlib ``conv``: ``x (N, cin, H, W)``, ``weight (kw, kh, cin // groups, cout)`` -> ``(N, cout, Ho, Wo)``.

    ``groups`` splits the channels into independent convolutions (``groups == cin`` with
    ``cout = m * cin`` is depthwise). No bias, no activation.
    """
    geo = ConvGeometry.of(x.shape, weight.shape, weight.shape[3], stride, pad, dilation, groups, flip)
    return _gemm_forward(_kernel_matrix(weight, geo), _im2col(np.ascontiguousarray(x), geo), geo)


def conv2d_grad_data(dy: np.ndarray, weight: np.ndarray, x_hw: Pair, stride: Pair = (1, 1),
                     pad: Pad4 = (0, 0, 0, 0), dilation: Pair = (1, 1), flip: bool = True,
                     groups: int = 1) -> np.ndarray:
    """NNlib ``∇conv_data``: given ``dy = dL/dy (N, cout, Ho, Wo)`` of ``conv2d(x, weight, ...)`` with
    ``x`` of spatial size ``x_hw = (H, W)`` (numpy order), return ``dL/dx (N, cin, H, W)``.

    ``weight (kw, kh, cin // groups, cout)``. Rows/columns of ``x`` the convolution never reads (possible
    when ``(H + pads - dilated k) % stride != 0``) get zero gradient. This is also ConvTranspose's forward.
    """
    h, w = x_hw
    x_shape = (dy.shape[0], weight.shape[2] * groups, h, w)
    geo = ConvGeometry.of(x_shape, weight.shape, weight.shape[3], stride, pad, dilation, groups, flip)
    dy = _check_dy(dy, geo, "conv2d_grad_data")
    return _gemm_grad_data(_kernel_matrix(weight, geo), dy, geo)


def conv2d_grad_filter(x: np.ndarray, dy: np.ndarray, k: Pair, stride: Pair = (1, 1), pad: Pad4 = (0, 0, 0, 0),
                       dilation: Pair = (1, 1), flip: bool = True, groups: int = 1) -> np.ndarray:
    """NNlib ``∇conv_filter``: ``dL/dweight (kw, kh, cin // groups, cout)`` of ``conv2d(x, weight, ...)``.

    ``x (N, cin, H, W)``, ``dy (N, cout, Ho, Wo)``, ``k = (kw, kh)``.
    """
    kw, kh = k
    cin, cout = x.shape[1], dy.shape[1]
    geo = ConvGeometry.of(x.shape, (kw, kh, cin // max(int(groups), 1), cout), cout, stride, pad, dilation,
                          groups, flip)
    dy = _check_dy(dy, geo, "conv2d_grad_filter")
    return _gemm_grad_filter(dy, _im2col(np.ascontiguousarray(x), geo), geo, x.dtype)


# ---------------------------------------------------------------------------------------------------------
# layer pairs (forward returns a cache, backward consumes it)
# ---------------------------------------------------------------------------------------------------------

def _add_bias(y: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y


def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: Pair, pad: Pad4,
                   dilation: Pair, flip: bool = True, groups: int = 1) -> tuple[np.ndarray, tuple]:
    """Conv/CrossCor layer forward: ``x (N, cin, H, W)``, ``weight (kw, kh, cin // groups, cout)``, ``bias
    (cout,)`` or None -> ``(y (N, cout, Ho, Wo), cache)``; ``cache`` is opaque, for :func:`conv2d_backward`.
    """
    geo = ConvGeometry.of(x.shape, weight.shape, weight.shape[3], stride, pad, dilation, groups, flip)
    col = _im2col(np.ascontiguousarray(x), geo)
    kmat = _kernel_matrix(weight, geo)
    y = _add_bias(_gemm_forward(kmat, col, geo), bias)
    return y, (geo, col, kmat, weight.dtype, bias is not None)


def conv2d_backward(cache: tuple, dy: np.ndarray, need_dx: bool = True
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Given ``dL/dy (N, cout, Ho, Wo)``, return ``(dx (N, cin, H, W) or None, dweight (kw, kh, cin_g, cout),
    dbias (cout,) or None)``. ``need_dx=False`` skips ``dx`` — a model's first layer never needs it.
    """
    geo, col, kmat, wdtype, has_bias = cache
    dy = _check_dy(dy, geo, "conv2d_backward")
    dweight = _gemm_grad_filter(dy, col, geo, wdtype)
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    dx = _gemm_grad_data(kmat, dy, geo) if need_dx else None
    return dx, dweight, dbias


def conv_transpose2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: Pair,
                             pad: Pad4, dilation: Pair, flip: bool = True, groups: int = 1,
                             outpad: Pair = (0, 0)) -> tuple[np.ndarray, tuple]:
    """Flux ``ConvTranspose`` forward: ``∇conv_data(x, weight)`` of the convolution it transposes, plus bias.

    ``x (N, cin, H, W)``, ``weight (kw, kh, cout // groups, cin)`` (Flux's layout), ``bias (cout,)`` or None;
    ``outpad = (ow, oh)`` adds rows/columns at the high end (each must be < its stride). Output
    ``(N, cout, Ho, Wo)`` with ``Ho = conv_transpose_out_size(H, kh, sh, h_lo, h_hi, dh, oh)``. Returns
    ``(y, cache)`` for :func:`conv_transpose2d_backward`.
    """
    geo = _transpose_geometry(x.shape, weight, stride, pad, dilation, groups, flip, outpad)
    x = _check_dy(x, geo, "conv_transpose2d_forward input")
    kmat = _kernel_matrix(weight, geo)
    y = _add_bias(_gemm_grad_data(kmat, x, geo), bias)
    return y, (geo, x, kmat, weight.dtype, bias is not None)


def conv_transpose2d_backward(cache: tuple, dy: np.ndarray, need_dx: bool = True
                              ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Given ``dL/dy (N, cout, Ho, Wo)`` of :func:`conv_transpose2d_forward`, return ``(dx (N, cin, H, W) or
    None, dweight (kw, kh, cout // groups, cin), dbias or None)``: ``dx`` is the forward conv of ``dy``,
    ``dweight`` its filter gradient with ``x`` in the role of ``dL/dy`` (both reuse one column matrix of dy).
    """
    geo, x, kmat, wdtype, has_bias = cache
    if dy.shape != (geo.n, geo.cin, geo.h, geo.w):
        raise ValueError(f"conv_transpose2d_backward: gradient must have shape {(geo.n, geo.cin, geo.h, geo.w)};"
                         f" got {dy.shape}")
    col = _im2col(np.ascontiguousarray(dy), geo)
    dweight = _gemm_grad_filter(x, col, geo, wdtype)
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    dx = _gemm_forward(kmat, col, geo) if need_dx else None
    return dx, dweight, dbias


def _transpose_geometry(x_shape: tuple[int, ...], weight: np.ndarray, stride: Pair, pad: Pad4, dilation: Pair,
                        groups: int, flip: bool, outpad: Pair) -> ConvGeometry:
    """The geometry of the convolution a ConvTranspose transposes: ``y_T (cout) -> x_T (cin)``."""
    if len(x_shape) != 4 or weight.ndim != 4:
        raise ValueError(f"conv_transpose: input must be (N, C, H, W) and weight (kw, kh, cout/groups, cin); "
                         f"got {tuple(x_shape)} and {weight.shape}")
    kw, kh, cout_g, cin = weight.shape
    if x_shape[1] != cin:
        raise ValueError(f"conv_transpose: weight expects {cin} input channels; the input has {x_shape[1]}")
    ow, oh = (int(v) for v in outpad)
    if not (0 <= ow < stride[0] and 0 <= oh < stride[1]):  # else the transposed conv's sizes disagree
        raise ValueError(f"conv_transpose: outpad {tuple(outpad)} must be >= 0 and < stride {tuple(stride)}")
    h = conv_transpose_out_size(x_shape[2], kh, stride[1], pad[2], pad[3], dilation[1], oh)
    w = conv_transpose_out_size(x_shape[3], kw, stride[0], pad[0], pad[1], dilation[0], ow)
    if h < 1 or w < 1:
        raise ValueError(f"conv_transpose: input {x_shape[2]}x{x_shape[3]} (HxW) gives an empty output "
                         f"({h}x{w}) with pad {tuple(pad)}")
    geo = ConvGeometry.of((x_shape[0], cout_g * groups, h, w), weight.shape, cin, stride, pad, dilation, groups,
                          flip)
    return geo  # outpad < stride guarantees (geo.ho, geo.wo) == x's (H, W)


# ---------------------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------------------

def _offset_slice(xp: np.ndarray, a: int, b: int, sh: int, sw: int, ho: int, wo: int) -> np.ndarray:
    """The ``(..., Ho, Wo)`` strided view of padded input seen by kernel offset ``(a, b)`` (rows a, cols b)."""
    return xp[..., a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw]


def _unpad(xp: np.ndarray, pad: Pad4) -> np.ndarray:
    w_lo, w_hi, h_lo, h_hi = pad
    return xp[..., h_lo:xp.shape[-2] - h_hi, w_lo:xp.shape[-1] - w_hi]


def pool2d_forward(x: np.ndarray, k: Pair, stride: Pair, pad: Pad4, mode: str) -> tuple[np.ndarray, tuple]:
    """Max (``mode="max"``) or mean pooling of ``x (N, C, H, W)``; returns ``(y (N, C, Ho, Wo), cache)``.

    A reduction over the ``kw*kh`` strided views of the (padded) input — no window copies. NNlib semantics:
    max pooling ignores padding (padded with -inf); mean pooling divides by the full window ``kw*kh``
    (padding counts as zeros).
    """
    kw, kh = k
    sw, sh = stride
    xp = pad_nchw(x, pad, -np.inf if mode == "max" else 0.0)
    ho = out_size(x.shape[2], kh, sh, pad[2], pad[3])
    wo = out_size(x.shape[3], kw, sw, pad[0], pad[1])
    y = _offset_slice(xp, 0, 0, sh, sw, ho, wo).copy()
    for a in range(kh):
        for b in range(kw):
            if a or b:
                v = _offset_slice(xp, a, b, sh, sw, ho, wo)
                if mode == "max":
                    np.maximum(y, v, out=y)
                else:
                    y += v
    if mode != "max":
        y /= np.asarray(kh * kw, dtype=y.dtype)
    return y, (xp if mode == "max" else None, y, xp.shape, k, stride, pad, mode)


def pool2d_backward(cache: tuple, dy: np.ndarray) -> np.ndarray:
    """Given ``dL/dy (N, C, Ho, Wo)``, return ``dL/dx (N, C, H, W)``.

    Max pooling sends each output's gradient to the *first* maximal entry of its window in (kh, kw) order,
    as NNlib's ``∇maxpool`` does, so ties (frequent after relu: all-zero windows) are not double counted.
    """
    xp, y, xp_shape, (kw, kh), (sw, sh), pad, mode = cache
    ho, wo = dy.shape[2:]
    dxp = np.zeros(xp_shape, dtype=dy.dtype)
    # windows that do not overlap (stride >= k) own disjoint input entries: assign instead of accumulate
    overlap = sh < kh or sw < kw
    if mode == "max":
        taken = np.zeros(y.shape, dtype=bool)  # outputs whose gradient was already routed to a first maximum
        for a in range(kh):
            for b in range(kw):
                hit = _offset_slice(xp, a, b, sh, sw, ho, wo) == y
                hit &= ~taken
                taken |= hit
                target = _offset_slice(dxp, a, b, sh, sw, ho, wo)
                if overlap:
                    target += dy * hit
                else:
                    np.multiply(dy, hit, out=target)
    else:
        scaled = dy / np.asarray(kh * kw, dtype=dy.dtype)
        for a in range(kh):
            for b in range(kw):
                target = _offset_slice(dxp, a, b, sh, sw, ho, wo)
                if overlap:
                    target += scaled
                else:
                    target[...] = scaled
    return _unpad(dxp, pad)
