"""Recurrent layers as Flux >= 0.15 defines them: RNN/LSTM/GRU/GRUv3 and their cells.

Forward against a transcription of Flux's cell formulas (one time step at a time, Flux's (features, batch)
layout), BPTT against finite differences, Flux.state / JLD2 both ways (also Flux <= 0.14 ``Recur`` structs),
ONNX recurrent ops with onnxruntime parity and import back.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.io.jld2 import JuliaStruct, JuliaType
from pyflux_compress.io.checkpoint import rebuild

KINDS = ["RNN", "LSTM", "GRU", "GRUv3"]
sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731


def flux_reference(layer, x):
    """Flux's formulas verbatim in Flux's layout: x (in, len, batch) -> (out, len, batch)."""
    c = layer.cell
    Wi, Wh = c.Wi.astype(np.float64), c.Wh.astype(np.float64)
    b = np.zeros(Wi.shape[0]) if c.bias is None else c.bias.astype(np.float64)
    X = np.transpose(x, (2, 1, 0)).astype(np.float64)   # (in, len, batch)
    H, B = c.hidden, X.shape[2]
    h, cs = np.zeros((H, B)), np.zeros((H, B))
    out = []
    for t in range(X.shape[1]):
        xt = X[:, t, :]
        if layer.flux_name == "RNN":
            h = np.tanh(Wi @ xt + Wh @ h + b[:, None])
        elif layer.flux_name == "LSTM":
            g = Wi @ xt + Wh @ h + b[:, None]
            i, f, cc, o = np.split(g, 4)
            cs = sig(f) * cs + sig(i) * np.tanh(cc)
            h = sig(o) * np.tanh(cs)
        else:
            gx, bs = np.split(Wi @ xt, 3), np.split(b[:, None], 3)
            gh = np.split(Wh @ h, 3)
            r = sig(gx[0] + gh[0] + bs[0])
            z = sig(gx[1] + gh[1] + bs[1])
            if layer.flux_name == "GRU":
                ht = np.tanh(gx[2] + r * gh[2] + bs[2])
            else:
                ht = np.tanh(gx[2] + c.Wh_htilde.astype(np.float64) @ (r * h) + bs[2])
            h = (1 - z) * ht + z * h
        out.append(h)
    return np.transpose(np.stack(out, axis=1), (2, 1, 0))


def make(kind, n_in=3, n_out=4, seed=0, **kw):
    return getattr(pfc, kind)(n_in, n_out, seed=seed, **kw)


def data(n=5, length=6, n_in=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, length, n_in)).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_flux_formulas(kind):
    layer = make(kind)
    layer.cell.bias[...] = np.random.default_rng(5).normal(size=layer.cell.bias.shape)
    x = data()
    y = layer(x)
    assert y.shape == (5, 6, 4) and y.dtype == np.float32
    np.testing.assert_allclose(y, flux_reference(layer, x), rtol=1e-5, atol=1e-6)
    # the cell alone is one step from the zero state; the layer's last output is the final state
    first = layer.cell(x[:, 0])
    first = first[0] if kind == "LSTM" else first
    np.testing.assert_allclose(first, y[:, 0], rtol=1e-6, atol=1e-7)
    ys, st = layer.run(x)
    np.testing.assert_array_equal((st[0] if kind == "LSTM" else st), y[:, -1])
    # an initial state is honoured: running the second half from the state after the first half
    y1, s1 = layer.run(x[:, :3])
    y2, _ = layer.run(x[:, 3:], s1)
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, rtol=1e-6, atol=1e-7)
    # unbatched (len, in) and return_state
    np.testing.assert_allclose(layer(x[2]), y[2], rtol=1e-6, atol=1e-7)
    ys, st2 = make(kind, return_state=True)(x)
    assert ys.shape == y.shape


@pytest.mark.parametrize("kind", KINDS)
def test_bptt_gradient_check(kind):
    model = pfc.Chain(make(kind, seed=2), pfc.flatten, pfc.Dense(24, 2, seed=3)).astype(np.float64)
    x = data(n=3, length=6).astype(np.float64)
    y, cache = model.forward(x)
    dy = np.random.default_rng(4).normal(size=y.shape)
    dx, grads = model.backward(cache, dy)
    eps = 1e-6
    rng = np.random.default_rng(0)

    def loss():
        return float((model(x) * dy).sum())

    for name, arr in model[0].params().items():
        for idx in [tuple(rng.integers(0, s) for s in arr.shape) for _ in range(12)]:
            old = arr[idx]
            arr[idx] = old + eps
            up = loss()
            arr[idx] = old - eps
            down = loss()
            arr[idx] = old
            np.testing.assert_allclose(grads[f"layers[1].{name}"][idx], (up - down) / (2 * eps), rtol=1e-5,
                                       atol=1e-8, err_msg=f"{kind}.{name}{idx}")
    for idx in [(0, 0, 0), (2, 5, 1), (1, 3, 2)]:
        old = x[idx]
        x[idx] = old + eps
        up = loss()
        x[idx] = old - eps
        down = loss()
        x[idx] = old
        np.testing.assert_allclose(dx[idx], (up - down) / (2 * eps), rtol=1e-5, atol=1e-8)
