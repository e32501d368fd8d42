"""Activations: NNlib's definitions, dtype handling, use as Chain elements, finite-difference gradients."""
from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.model.activations import ACTIVATIONS, Activation, get_activation
from pyflux_compress.model.layers import Dense, Layer

ALL = ["relu", "sigmoid", "tanh", "softmax", "leakyrelu", "elu", "gelu", "swish", "identity"]


def test_nnlib_values():
    x = np.array([-10.0, -1.0, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(pfc.relu(x), [0, 0, 0, 0.5, 2])
    np.testing.assert_allclose(pfc.leakyrelu(x), [-0.1, -0.01, 0, 0.5, 2])  # a = 0.01
    np.testing.assert_allclose(pfc.elu(np.float32([-10.0]))[0], -0.9999546, rtol=1e-6)  # NNlib docstring
    np.testing.assert_allclose(pfc.sigmoid(x), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(pfc.swish(x), x / (1 + np.exp(-x)))
    np.testing.assert_allclose(pfc.tanh(x), np.tanh(x))
    # NNlib's gelu is gelu_tanh (tanh approximation), not the erf form: gelu(1) = 0.84119..., erf gives 0.84134...
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(pfc.gelu(x), tanh_form, rtol=1e-12)
    assert abs(pfc.gelu(np.array([1.0]))[0] - 0.8411919906082768) < 1e-12
    assert pfc.sigmoid is pfc.σ and repr(pfc.sigmoid) == "σ"  # Julia prints sigmoid as σ
    assert pfc.identity(x) is x


def test_softmax_over_last_axis():
    x = np.random.default_rng(0).standard_normal((4, 7)) * 50  # large values: must not overflow
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = pfc.softmax(x)
        big = pfc.sigmoid(np.array([-1000.0, 1000.0]))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0)
    np.testing.assert_allclose(y, np.exp(x - x.max(1, keepdims=True)) / np.exp(x - x.max(1, keepdims=True))
                               .sum(1, keepdims=True))
    np.testing.assert_allclose(big, [0.0, 1.0])


@pytest.mark.parametrize("name", ALL)
def test_dtype_preserved_and_int_input(name):
    act = get_activation(name)
    assert act(np.ones((2, 3), np.float32)).dtype == np.float32
    assert act(np.ones((2, 3), np.float64)).dtype == np.float64
    assert act(np.ones((2, 3), np.int64)).dtype == np.float32


@pytest.mark.parametrize("name", ALL)
def test_activation_gradients_finite_difference(name):
    act = get_activation(name)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # keep clear of the kinks of relu/leakyrelu/elu
    g = rng.standard_normal(x.shape)
    y, cache = act.forward(x)
    dx, grads = act.backward(cache, g)
    assert grads == {}
    eps = 1e-6
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        num[i] = (np.sum(act(xp) * g) - np.sum(act(xm) * g)) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


def test_activation_is_a_layer_and_singleton():
    assert isinstance(pfc.relu, Layer) and isinstance(pfc.relu, Activation)
    model = pfc.Chain(Dense(3, 4, seed=0), pfc.relu, Dense(4, 2, seed=1), pfc.softmax)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x).sum(axis=1), 1.0, rtol=1e-6)
    assert str(model) == "Chain(Dense(3 => 4), relu, Dense(4 => 2), softmax)"
    # copies and pickles resolve to the same object, so `layer.activation is relu` is reliable
    assert copy.deepcopy(pfc.relu) is pfc.relu and pfc.relu.copy() is pfc.relu
    assert pickle.loads(pickle.dumps(pfc.gelu)) is pfc.gelu
    assert model.copy()[1] is pfc.relu
    assert pfc.relu.params() == {} and pfc.relu.output_shape((3, 4)) == (3, 4)
    pfc.relu.masks["w"] = np.ones(1)  # the singleton never keeps state
    assert pfc.relu.masks == {}


def test_get_activation_names():
    assert get_activation("NNlib.relu") is pfc.relu
    assert get_activation("σ") is pfc.sigmoid and get_activation("sigmoid") is pfc.sigmoid
    assert get_activation("gelu_tanh") is pfc.gelu
    assert get_activation(None) is pfc.identity
    assert set(ALL) <= set(ACTIVATIONS)
    with pytest.raises(ValueError, match="unknown activation 'rleu'"):
        get_activation("rleu")
    with pytest.raises(ValueError, match="activation must be"):
        get_activation(np.tanh)
