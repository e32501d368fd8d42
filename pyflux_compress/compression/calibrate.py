"""Calibration: activation range selection, MSE-optimal weight clipping, bias correction.

Activation ranges (``method=`` of ``pfc.quantize``), from the float inputs a layer sees on the calibration set:

* ``"minmax"`` — ``[min(x), max(x)]``;
* ``"percentile"`` — the ``PERCENTILE``-th (99.99) percentile of ``|x|`` (symmetric) or the ``(100 - p)``-th and
  ``p``-th percentiles (affine), linear interpolation;
* ``"mse"`` — the clipping range minimising the expected squared error of 8-bit quantization (clipping error of
  the values outside + ``scale² / 12`` rounding error of the values inside), searched on a 2048-bin histogram;
* ``"entropy"`` — TensorRT's KL-divergence calibration: the threshold whose 128-level (256 for non-negative
  data) quantized histogram is closest in KL divergence to the 2048-bin reference.

Weights: :func:`mse_weight_range` picks, per output channel, the clipping range ``α·[lo, hi]`` (α on a grid in
[0.2, 1]) that minimises the squared quantization error of that channel's weights (``weight_clip="mse"``).
:func:`bias_correction` returns the shift that makes a quantized layer's mean output per channel equal the float
layer's on the calibration inputs (Nagel et al. 2019's empirical bias correction).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model.activations import identity
from .schemes import Scheme

PERCENTILE = 99.99  # method="percentile"
ACT_METHODS = ("minmax", "percentile", "mse", "entropy")
WEIGHT_CLIPS = ("minmax", "mse")
BINS = 2048
CLIP_GRID = np.linspace(0.2, 1.0, 81)  # candidate fractions of the min-max weight range


def activation_range(x: np.ndarray, scheme: Scheme, method: str) -> tuple[float, float]:
    """The activation range ``(lo, hi)`` of calibration values ``x`` (any shape) chosen by ``method``."""
    x = np.asarray(x, dtype=np.float32).ravel()
    lo, hi = float(min(x.min(), 0.0)), float(max(x.max(), 0.0))
    if method == "minmax" or hi == lo:
        return float(x.min()), float(x.max())
    if method == "percentile":
        if scheme.name == "symmetric":
            a = float(np.percentile(np.abs(x), PERCENTILE))
            return -a, a
        return float(np.percentile(x, 100 - PERCENTILE)), float(np.percentile(x, PERCENTILE))
    # mse / entropy search a threshold t on the histogram of |x|; the range is [-t, t] clipped to [lo, hi]
    t = _mse_threshold(x, scheme) if method == "mse" else _entropy_threshold(x, lo >= 0)
    return max(lo, -t), min(hi, t)


def _abs_histogram(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(x)
    hist, edges = np.histogram(a, bins=BINS, range=(0.0, float(a.max())))
    return hist.astype(np.float64), edges


def _mse_threshold(x: np.ndarray, scheme: Scheme) -> float:
    """Threshold minimising clipping + rounding squared error of 8-bit quantization (one-sided when x >= 0)."""
    hist, edges = _abs_histogram(x)
    centers = (edges[:-1] + edges[1:]) / 2
    nonneg = x.min() >= 0
    # integer steps across the range: [0, t] uses 0..127 (int8) or 0..255 (uint8); [-t, t] 254 or 255
    affine = scheme.name == "affine"
    levels = (255 if affine else 127) if nonneg else (255 if affine else 254)
    cand = edges[8:]  # every bin edge from 8 bins up to the max
    # clipping error of bins above t: sum h * (c - t)^2 = S2 - 2 t S1 + t^2 S0 over the tail (cumulative sums)
    s0 = np.cumsum((hist)[::-1])[::-1]
    s1 = np.cumsum((hist * centers)[::-1])[::-1]
    s2 = np.cumsum((hist * centers ** 2)[::-1])[::-1]
    idx = np.searchsorted(centers, cand)  # first bin whose centre is above t
    idx = np.minimum(idx, BINS - 1)
    tail = np.where(centers[idx] > cand, s2[idx] - 2 * cand * s1[idx] + cand ** 2 * s0[idx], 0.0)
    inside = hist.sum() - np.where(centers[idx] > cand, s0[idx], 0.0)
    span = cand if nonneg else 2 * cand
    err = tail + inside * (span / levels) ** 2 / 12
    return float(cand[int(np.argmin(err))])


def _entropy_threshold(x: np.ndarray, nonneg: bool) -> float:
    """TensorRT's entropy calibration on the |x| histogram: argmin over thresholds of KL(P || Q)."""
    hist, edges = _abs_histogram(x)
    nq = 256 if nonneg else 128
    best, best_t = np.inf, float(edges[-1])
    for i in range(nq, BINS + 1, 16):  # thresholds at bin edges (coarse step: 16 bins)
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()  # outliers clipped into the last bin
        nz = p > 0
        # merge the i bins into nq groups, spread each group's mass over its non-empty bins
        groups = np.minimum((np.arange(i) * nq) // i, nq - 1)
        mass = np.bincount(groups, weights=hist[:i], minlength=nq)
        count = np.bincount(groups, weights=(hist[:i] > 0).astype(np.float64), minlength=nq)
        q = np.where(hist[:i] > 0, mass[groups] / np.maximum(count[groups], 1), 0.0)
        ps, qs = p[nz] / p.sum(), q[nz]
        if qs.sum() == 0:
            continue
        qs = np.maximum(qs / qs.sum(), 1e-12)
        kl = float(np.sum(ps * np.log(ps / qs)))
        if kl < best:
            best, best_t = kl, float(edges[i])
    return best_t


def mse_weight_range(rows: np.ndarray, scheme: Scheme, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel clipping range ``α·[lo, hi]`` (α in ``CLIP_GRID``) with the least squared error of ``rows``.

    ``rows`` is ``(C, n)``; returns ``(lo, hi)`` float32 ``(C,)``. Vectorized over channels; loops over the grid.
    """
    lo0, hi0 = scheme.weight_range(rows)
    best_err = np.full(rows.shape[0], np.inf)
    best_lo, best_hi = lo0.copy(), hi0.copy()
    for a in CLIP_GRID:  # 81 candidates, each one vectorized over all weights
        lo, hi = (lo0 * np.float32(a)).astype(np.float32), (hi0 * np.float32(a)).astype(np.float32)
        scale, zp = scheme.weight_params(lo, hi, bits)
        q = scheme.quantize(rows, scale, zp, bits)
        err = np.sum((scheme.dequantize(q, scale[:, None], zp[:, None]) - rows) ** 2, axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_lo, best_hi = np.where(better, lo, best_lo), np.where(better, hi, best_hi)
    return best_lo.astype(np.float32), best_hi.astype(np.float32)


def bias_correction(float_layer: Any, weight_q: np.ndarray, x_float: np.ndarray, x_quant: np.ndarray) -> np.ndarray:
    """Per-output-channel shift ``E[W x_float] - E[W_q x_quant]`` of one Dense/Conv layer on calibration data.

    ``weight_q`` is the dequantized weight (like ``float_layer.weight``); ``x_float`` / ``x_quant`` are the
    layer's inputs in the float model and in the quantized model (same samples). Adding the result to the bias
    removes the systematic output shift of quantization (including the one inherited from earlier layers).
    Returns float32 ``(out,)``.
    """
    probe = float_layer.copy()
    probe.bias, probe.activation, probe.masks = None, identity, {}
    ref = np.asarray(probe(x_float), np.float64)
    probe.weight = np.asarray(weight_q, dtype=float_layer.weight.dtype)
    diff = ref - np.asarray(probe(x_quant), np.float64)
    axes = tuple(a for a in range(diff.ndim) if a != (1 if diff.ndim > 2 else diff.ndim - 1))
    return diff.mean(axis=axes).astype(np.float32)
