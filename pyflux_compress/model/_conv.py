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

import functools
import threading
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import threads

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


_CHUNK_BYTES = 5 << 18  # 1.25 MB of column matrix per sample range


def _chunks(geo: ConvGeometry) -> int:
    """Sample ranges a pass is cut into: enough that one range's column matrix is ~1.25 MB (it is then still
    in cache when the GEMM reads it), and a multiple of the threads in force. In a LeNet training step 8
    ranges of 16 samples measured ~10% less CPU than one range (warm micro-benchmarks, where everything stays
    cached, showed no gain: the win is the im2col/GEMM hand-over, not the arithmetic)."""
    t = threads.active()
    per_sample = geo.cin * geo.kh * geo.kw * geo.ho * geo.wo * 4
    cache_bound = -(-geo.n * per_sample // _CHUNK_BYTES)
    return min(geo.n, max(t, -(-cache_bound // t) * t))


def _im2col_into(x: np.ndarray, geo: ConvGeometry, col: np.ndarray) -> None:
    """Fill ``col (n, cin*kh*kw, Ho*Wo)`` with ``col[n, (c, a, b), (i, j)] = xpad[n, c, i*sh + a*dh, j*sw + b*dw]``.

    One copy from one strided view of the padded input; the innermost axis walks output columns.
    """
    xp = _pad_into(x, geo.pad, "im2col_pad")
    n = x.shape[0]
    s_n, s_c, s_h, s_w = xp.strides
    view = as_strided(xp, (n, geo.cin, geo.kh, geo.kw, geo.ho, geo.wo),
                      (s_n, s_c, s_h * geo.dh, s_w * geo.dw, s_h * geo.sh, s_w * geo.sw), writeable=False)
    np.copyto(col.reshape(view.shape), view)


def _grad_data_into(dy: np.ndarray, kmat: np.ndarray, geo: ConvGeometry, dx: np.ndarray) -> None:
    """``dx (n, cin, H, W)`` from ``dy (n, cout, Ho, Wo)``: ``dcol = K.T @ dy`` then the adjoint of im2col.

    Done with the sample axis innermost ("CHWN"): ``dy`` is transposed once to ``(cout, Ho, Wo, n)``; then per
    kernel *row* one GEMM (per group) gives that row's ``kw`` slabs ``(cin, Ho, Wo, n)``, each added at its
    tap's offset into a ``(cin, Hp, Wp, n)`` buffer whose rows are contiguous runs of ``Wo*n`` values (in NCHW
    they were runs of ``Wo``: that scatter measured 3-4x slower); one transpose back to NCHW. Measured on
    LeNet's second layer: 12% faster than one GEMM per tap (6 output rows starve the GEMM kernel) and 20%
    faster than one GEMM for all taps followed by the scatter (the whole ``dcol`` round trip through memory).
    One slice-add per kernel tap — never per pixel or sample.
    """
    n = dy.shape[0]
    g, ho, wo, kh, kw = geo.groups, geo.ho, geo.wo, geo.kh, geo.kw
    cin_g, cout_g = geo.cin // g, geo.cout // g
    w_lo, w_hi, h_lo, h_hi = geo.pad
    dyt = _take("dy_chwn", (geo.cout, ho, wo, n), dy.dtype)
    np.copyto(dyt, dy.transpose(1, 2, 3, 0))
    dyg = dyt.reshape(g, cout_g, -1)
    # rows of K.T ordered (kernel row a, column b, input channel c) per group
    krows = kmat.reshape(g, cout_g, cin_g, kh, kw).transpose(3, 0, 4, 2, 1).reshape(kh, g, kw * cin_g, cout_g)
    krows = np.ascontiguousarray(krows)
    slab = _take("dcol_row", (g, kw * cin_g, ho * wo * n), dy.dtype)
    slab6 = slab.reshape(g, kw, cin_g, ho, wo, n)
    dxp = _take("dx_chwn", (geo.cin, geo.h + h_lo + h_hi, geo.w + w_lo + w_hi, n), dy.dtype)
    dxp.fill(0)
    dxg = dxp.reshape(g, cin_g, *dxp.shape[1:])
    for a in range(kh):
        np.matmul(krows[a], dyg, out=slab)
        r = a * geo.dh
        for b in range(kw):
            c = b * geo.dw
            dxg[:, :, r:r + geo.sh * (ho - 1) + 1:geo.sh, c:c + geo.sw * (wo - 1) + 1:geo.sw] += slab6[:, b]
    np.copyto(dx, dxp[:, h_lo:h_lo + geo.h, w_lo:w_lo + geo.w].transpose(3, 0, 1, 2))


def _grouped(a: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``(n, C, ...)`` -> ``(n, groups, C // groups, prod(...))`` view (channels of one group are adjacent)."""
    return a.reshape(a.shape[0], geo.groups, a.shape[1] // geo.groups, -1)


def _forward_pass(x: np.ndarray, kmat: np.ndarray, geo: ConvGeometry, col: np.ndarray | None
                  ) -> np.ndarray:
    """``y (N, cout, Ho, Wo) = K @ im2col(x)``: per sample range, the im2col copy then one batched GEMM
    (``np.matmul`` over samples and groups) written straight into ``y``, which is NCHW with no transpose.
    ``col`` (N, cin*kh*kw, Ho*Wo) keeps the columns for the backward pass; None uses scratch."""
    y = np.empty((geo.n, geo.cout, geo.ho, geo.wo), dtype=np.result_type(x, kmat))

    def work(lo: int, hi: int) -> None:
        c = col[lo:hi] if col is not None else _take("im2col", (hi - lo, geo.groups * geo.taps, geo.ho * geo.wo),
                                                      x.dtype)
        _im2col_into(x[lo:hi], geo, c)
        np.matmul(kmat, _grouped(c, geo), out=_grouped(y[lo:hi], geo))

    threads.map_chunks(work, geo.n, _chunks(geo))
    return y


def _backward_pass(dy: np.ndarray, kmat: np.ndarray | None, geo: ConvGeometry, col: np.ndarray | None,
                   need_dx: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The two gradients of ``y = conv(x)`` from ``dy (N, cout, Ho, Wo)``, per sample range:

    * with ``col`` (im2col of x): ``dk (groups, taps, cout_g) = Σ_n col[n] @ dy[n].T`` (batched GEMM + sum);
    * with ``need_dx``: ``dx`` by :func:`_grad_data_into`.

    Returns ``(dx (N, cin, H, W) or None, dk or None)``.
    """
    dx = np.empty((geo.n, geo.cin, geo.h, geo.w), dtype=dy.dtype) if need_dx else None

    def filter_work(lo: int, hi: int) -> np.ndarray:
        dyg = _grouped(dy[lo:hi], geo)  # (n, G, cout_g, P)
        return np.matmul(_grouped(col[lo:hi], geo), dyg.transpose(0, 1, 3, 2)).sum(axis=0)

    # cache-sized sample ranges for both (one range per thread measured 3% slower for the data gradient)
    dk = None
    if col is not None:
        dk = functools.reduce(np.add, threads.map_chunks(filter_work, geo.n, _chunks(geo)))
    if dx is not None:
        threads.map_chunks(lambda lo, hi: _grad_data_into(dy[lo:hi], kmat, geo, dx[lo:hi]), geo.n, _chunks(geo))
    return dx, dk


def _dk_to_weight(dk: np.ndarray, geo: ConvGeometry, dtype: np.dtype) -> np.ndarray:
    """``(groups, cin_g*kh*kw, cout_g)`` -> Flux kernel ``(kw, kh, cin_g, cout)`` (flipped back for Conv)."""
    g, cin_g = geo.groups, geo.cin // geo.groups
    w = dk.reshape(g, cin_g, geo.kh, geo.kw, geo.cout // g).transpose(3, 2, 1, 0, 4)  # (kw, kh, cin_g, G, cout_g)
    w = w.reshape(geo.kw, geo.kh, cin_g, geo.cout)
    if geo.flip:
        w = w[::-1, ::-1]
    return np.ascontiguousarray(w, dtype=dtype)


def _check_dy(dy: np.ndarray, geo: ConvGeometry, who: str) -> np.ndarray:
    expect = (geo.n, geo.cout, geo.ho, geo.wo)
    if dy.shape != expect:
        raise ValueError(f"{who}: gradient must have shape {expect}; got {dy.shape}")
    return np.ascontiguousarray(dy)


def _new_col(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    return np.empty((geo.n, geo.cin * geo.kh * geo.kw, geo.ho * geo.wo), dtype=x.dtype)


def conv2d(x: np.ndarray, weight: np.ndarray, stride: Pair = (1, 1), pad: Pad4 = (0, 0, 0, 0),
           dilation: Pair = (1, 1), flip: bool = True, groups: int = 1) -> np.ndarray:
    """NNlib ``conv``: ``x (N, cin, H, W)``, ``weight (kw, kh, cin // groups, cout)`` -> ``(N, cout, Ho, Wo)``.

    ``groups`` splits the channels into independent convolutions (``groups == cin`` with
    ``cout = m * cin`` is depthwise). No bias, no activation. Keeps no column matrix (inference).
    """
    geo = ConvGeometry.of(x.shape, weight.shape, weight.shape[3], stride, pad, dilation, groups, flip)
    return _forward_pass(np.ascontiguousarray(x), _kernel_matrix(weight, geo), geo, None)


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
    return _backward_pass(dy, _kernel_matrix(weight, geo), geo, None, True)[0]  # type: ignore[return-value]


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
    x = np.ascontiguousarray(x)
    col = _new_col(x, geo)
    threads.map_chunks(lambda lo, hi: _im2col_into(x[lo:hi], geo, col[lo:hi]), geo.n, _chunks(geo))
    return _dk_to_weight(_backward_pass(dy, None, geo, col, False)[1], geo, x.dtype)


# ---------------------------------------------------------------------------------------------------------
# layer pairs (forward returns a cache, backward consumes it)
# ---------------------------------------------------------------------------------------------------------

def _bias_grad(dy: np.ndarray) -> np.ndarray:
    """``Σ dy`` over samples and pixels per channel: batch axis first (contiguous), then the pixels (2x faster
    than one reduction over axes (0, 2, 3))."""
    return dy.sum(axis=0).reshape(dy.shape[1], -1).sum(axis=1)


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
    x = np.ascontiguousarray(x)
    col = _new_col(x, geo)
    kmat = _kernel_matrix(weight, geo)
    y = _add_bias(_forward_pass(x, kmat, geo, col), bias)
    return y, (geo, col, kmat, weight.dtype, bias is not None)


def conv2d_backward(cache: tuple, dy: np.ndarray, need_dx: bool = True
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Given ``dL/dy (N, cout, Ho, Wo)``, return ``(dx (N, cin, H, W) or None, dweight (kw, kh, cin_g, cout),
    dbias (cout,) or None)``. ``need_dx=False`` skips ``dx`` — a model's first layer never needs it.
    """
    geo, col, kmat, wdtype, has_bias = cache
    dy = _check_dy(dy, geo, "conv2d_backward")
    dx, dk = _backward_pass(dy, kmat, geo, col, need_dx)
    return dx, _dk_to_weight(dk, geo, wdtype), _bias_grad(dy) if has_bias else None


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
    y = _add_bias(_backward_pass(x, kmat, geo, None, True)[0], bias)  # type: ignore[arg-type]
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
    dy = np.ascontiguousarray(dy)
    col = _new_col(dy, geo)
    dx = _forward_pass(dy, kmat, geo, col) if need_dx else None
    if dx is None:
        threads.map_chunks(lambda lo, hi: _im2col_into(dy[lo:hi], geo, col[lo:hi]), geo.n, _chunks(geo))
    dk = _backward_pass(x, kmat, geo, col, False)[1]
    return dx, _dk_to_weight(dk, geo, wdtype), _bias_grad(dy) if has_bias else None


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
    (padding counts as zeros). Max pooling records, per output, which tap held the *first* maximum (uint8),
    so the backward pass is one compare and one multiply per tap. Sample ranges run on the threads in force.
    """
    kw, kh = k
    sw, sh = stride
    xp = pad_nchw(x, pad, -np.inf if mode == "max" else 0.0)
    ho = out_size(x.shape[2], kh, sh, pad[2], pad[3])
    wo = out_size(x.shape[3], kw, sw, pad[0], pad[1])
    y = np.empty(x.shape[:2] + (ho, wo), dtype=xp.dtype)
    winner = np.zeros(y.shape, dtype=np.uint8) if mode == "max" and kh * kw < 256 else None

    def work(lo: int, hi: int) -> None:
        yr, xr = y[lo:hi], xp[lo:hi]
        wr = winner[lo:hi] if winner is not None else None
        greater = np.empty(yr.shape, dtype=bool) if wr is not None else None
        yr[...] = _offset_slice(xr, 0, 0, sh, sw, ho, wo)
        tap = 0
        for a in range(kh):
            for b in range(kw):
                if a or b:
                    v = _offset_slice(xr, a, b, sh, sw, ho, wo)
                    if mode != "max":
                        yr += v
                    elif wr is not None:
                        v = np.ascontiguousarray(v)  # the strided tap is read three times: one copy is cheaper
                        np.greater(v, yr, out=greater)  # strictly: a tie keeps the earlier tap (NNlib's first max)
                        # winner = max(winner, tap * greater): later taps only win where strictly greater
                        # (measured 5x faster than copyto(where=) or boolean-mask assignment)
                        g8 = greater.view(np.uint8)
                        np.multiply(g8, np.uint8(tap), out=g8)
                        np.maximum(wr, g8, out=wr)
                        np.maximum(yr, v, out=yr)
                    else:
                        np.maximum(yr, v, out=yr)
                tap += 1
        if mode != "max":
            yr /= np.asarray(kh * kw, dtype=yr.dtype)

    threads.map_chunks(work, len(x), threads.active())
    keep = winner if winner is not None else (xp if mode == "max" else None)
    return y, (keep, y, xp.shape, k, stride, pad, mode)


def pool2d_backward(cache: tuple, dy: np.ndarray) -> np.ndarray:
    """Given ``dL/dy (N, C, Ho, Wo)``, return ``dL/dx (N, C, H, W)``.

    Max pooling sends each output's gradient to the *first* maximal entry of its window in (kh, kw) order,
    as NNlib's ``∇maxpool`` does, so ties (frequent after relu: all-zero windows) are not double counted.
    """
    keep, y, xp_shape, (kw, kh), (sw, sh), pad, mode = cache
    ho, wo = dy.shape[2:]
    # windows that do not overlap (stride >= k) own disjoint input entries: assign instead of accumulate
    overlap = sh < kh or sw < kw
    # entries no window covers (gaps between windows, padding, trailing rows/columns) must be zero
    gaps = (sh > kh or sw > kw or any(pad) or (ho - 1) * sh + kh != xp_shape[2]
            or (wo - 1) * sw + kw != xp_shape[3])
    dxp = np.zeros(xp_shape, dtype=dy.dtype) if overlap or gaps else np.empty(xp_shape, dtype=dy.dtype)

    def route(dxr: np.ndarray, a: int, b: int, values: np.ndarray) -> None:
        target = _offset_slice(dxr, a, b, sh, sw, ho, wo)
        if overlap:
            target += values
        else:
            target[...] = values

    def work(lo: int, hi: int) -> None:
        dyr, dxr = dy[lo:hi], dxp[lo:hi]
        if mode == "max" and keep.dtype == np.uint8:
            hit = np.empty(dyr.shape, dtype=bool)
            tap = 0
            for a in range(kh):
                for b in range(kw):
                    np.equal(keep[lo:hi], tap, out=hit)
                    if overlap:
                        route(dxr, a, b, dyr * hit)
                    else:
                        np.multiply(dyr, hit, out=_offset_slice(dxr, a, b, sh, sw, ho, wo))
                    tap += 1
        elif mode == "max":  # more than 255 taps: find first maxima by comparing with the input again
            xr, yr = keep[lo:hi], y[lo:hi]
            taken = np.zeros(yr.shape, dtype=bool)
            for a in range(kh):
                for b in range(kw):
                    hit = _offset_slice(xr, a, b, sh, sw, ho, wo) == yr
                    hit &= ~taken
                    taken |= hit
                    route(dxr, a, b, dyr * hit)
        else:
            scaled = dyr / np.asarray(kh * kw, dtype=dy.dtype)
            for a in range(kh):
                for b in range(kw):
                    route(dxr, a, b, scaled)

    threads.map_chunks(work, len(dy), threads.active())
    return _unpad(dxp, pad)
