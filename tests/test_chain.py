"""Chain: container protocol, nesting, walk paths, copies, shape errors, backward, summary."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.model.chain import Chain
from pyflux_compress.model.layers import BatchNorm, Conv, Dense, MaxPool, flatten

ARTICLE = "Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))"


@pytest.fixture
def mlp():
    return pfc.parse(ARTICLE, seed=0)


def test_indexing_slicing_iteration(mlp):
    assert len(mlp) == 3
    assert isinstance(mlp[0], Dense) and mlp[0].weight.shape == (128, 784)
    assert mlp[-1] is mlp[2]
    head = mlp[:2]
    assert isinstance(head, Chain) and len(head) == 2 and head[0] is mlp[0]  # slices share layers, like Flux
    assert str(head) == "Chain(Dense(784 => 128, relu), Dense(128 => 64, relu))"
    assert [type(layer) for layer in mlp] == [Dense, Dense, Dense]
    x = np.random.default_rng(0).random((4, 784), dtype=np.float32)
    np.testing.assert_allclose(mlp[2:](mlp[:2](x)), mlp(x), rtol=1e-6)
    with pytest.raises(IndexError, match="0-based"):
        mlp[3]
    with pytest.raises(TypeError):
        mlp["a"]


def test_single_sample_like_flux(mlp):
    x = np.random.default_rng(0).random(784, dtype=np.float32)
    y = mlp(x)
    assert y.shape == (10,)
    np.testing.assert_allclose(y, mlp(x[None])[0], rtol=1e-6)


def test_nesting_walk_and_params(mlp):
    nested = Chain(Dense(4, 3, seed=0), Chain(Dense(3, 3, pfc.relu, seed=1), Chain(Dense(3, 2, seed=2))), pfc.tanh)
    paths = [p for p, _ in nested.walk()]
    assert paths == ["layers[1]", "layers[2].layers[1]", "layers[2].layers[2].layers[1]", "layers[3]"]
    assert list(nested.params()) == ["layers[1].weight", "layers[1].bias", "layers[2].layers[1].weight",
                                     "layers[2].layers[1].bias", "layers[2].layers[2].layers[1].weight",
                                     "layers[2].layers[2].layers[1].bias"]
    assert nested.params()["layers[2].layers[1].weight"] is nested[1][0].weight  # live references
    assert str(nested) == "Chain(Dense(4 => 3), Chain(Dense(3 => 3, relu), Chain(Dense(3 => 2))), tanh)"
    assert nested.output_shape((4,)) == (2,)
    assert Chain([Dense(2, 2), pfc.relu]).layers[1] is pfc.relu  # Flux's Chain(vector)


def test_backward_through_nested_chain_matches_finite_differences():
    rng = np.random.default_rng(0)
    model = Chain(Dense(4, 5, pfc.tanh, seed=0), Chain(Dense(5, 3, pfc.elu, seed=1), BatchNorm(3)),
                  Dense(3, 2, seed=2)).astype(np.float64)
    x = rng.standard_normal((6, 4))
    g = rng.standard_normal((6, 2))
    y, cache = model.forward(x, train=True)
    dx, grads = model.backward(cache, g)
    assert list(grads) == list(model.params())
    eps = 1e-6
    for key, arr in model.params().items():
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            lp = np.sum(model.forward(x, train=True)[0] * g)
            flat[i] = old - eps
            lm = np.sum(model.forward(x, train=True)[0] * g)
            flat[i] = old
            assert abs((lp - lm) / (2 * eps) - grads[key].reshape(-1)[i]) < 1e-6, key
    # the input gradient can be skipped by training loops
    dx2, grads2 = model.backward(model.forward(x, train=True)[1], g, need_input_grad=False)
    assert dx2 is None
    for key in grads:
        np.testing.assert_allclose(grads2[key], grads[key], rtol=1e-10)
    assert dx.shape == x.shape


def test_copy_is_deep_and_records(mlp):
    twin = mlp.copy()
    assert twin is not mlp and twin[0] is not mlp[0]
    twin[0].weight[:] = 0
    assert mlp[0].weight.any()
    assert twin[0].activation is pfc.relu
    assert mlp.records == [] and twin.records == []
    twin.records.append({"method": "prune", "settings": {}, "per_layer": {}})
    assert mlp.records == []
    assert mlp.copy().records is not mlp.records


def test_shape_errors_name_the_layer(mlp):
    bad = pfc.parse("Chain(Dense(784 => 128, relu), Dense(100 => 64, relu), Dense(64 => 10))", seed=0)
    with pytest.raises(ValueError, match=r"layers\[2\] Dense\(100 => 64, relu\) expects 100 input features, "
                                         r"got 128"):
        bad(np.zeros((2, 784), np.float32))
    with pytest.raises(ValueError, match=r"layers\[1\] Dense\(784 => 128, relu\) expects 784 input features"):
        mlp(np.zeros((2, 100)))
    with pytest.raises(ValueError, match=r"layers\[1\].*add flatten"):
        mlp.output_shape((1, 28, 28))
    with pytest.raises(ValueError, match="numeric array"):
        mlp(["a", "b"])
    with pytest.raises(ValueError, match=r"layers\[2\] must be a layer"):
        Chain(Dense(2, 2), np.tanh)


def test_cnn_shapes_and_float32():
    cnn = pfc.parse("Chain(Conv((3, 3), 1 => 8, relu), MaxPool((2, 2)), Conv((3, 3), 8 => 16, relu), "
                    "MaxPool((2, 2)), flatten, Dense(400 => 10))", seed=0)
    assert cnn.output_shape((1, 28, 28)) == (10,)
    assert [s for _, _, s in cnn.shapes((1, 28, 28))] == [(8, 26, 26), (8, 13, 13), (16, 11, 11), (16, 5, 5),
                                                          (400,), (10,)]
    y = cnn(np.random.default_rng(0).random((3, 1, 28, 28)))
    assert y.shape == (3, 10) and y.dtype == np.float32
    with pytest.raises(ValueError, match=r"layers\[6\] Dense\(400 => 10\) expects 400 input features, got 576"):
        cnn(np.zeros((1, 1, 32, 32)))


def test_summary_mlp(mlp):
    text = mlp.summary()
    lines = text.splitlines()
    assert lines[0].startswith("Chain(") and "input (784,)" in lines[0]
    assert "Dense(784 => 128, relu)," in lines[1] and "# 100_480 parameters, output (128,)" in lines[1]
    assert "# 8_256 parameters" in lines[2] and "# 650 parameters, output (10,)" in lines[3]
    assert lines[4].startswith(")") and "Total: 6 arrays, 109_386 parameters" in lines[4]
    assert f"{109_386 * 4 / 1024:.3f} KiB" in lines[4]
    assert pfc.parse("Chain(Dense(784 => 128, relu))").summary() != ""  # unseeded parse works


def test_summary_cnn_batchnorm_and_nested():
    m = Chain(Conv((3, 3), (1, 8), pfc.relu, seed=0), BatchNorm(8), MaxPool((2, 2)),
              Chain(flatten, Dense(8 * 13 * 13, 10, seed=1)))
    assert "output" not in m.summary()  # a conv input size cannot be inferred
    text = m.summary((1, 28, 28))
    assert "# 80 parameters, output (8, 26, 26)" in text
    assert "# 16 parameters, plus 16, output (8, 26, 26)" in text  # BatchNorm: γ, β + running μ, σ²
    assert "  Chain(" in text and "    flatten," in text
    assert "Total: 6 trainable arrays, 13_626 parameters, plus 2 non-trainable, 16 parameters" in text
    with pytest.raises(ValueError, match=r"layers\[1\] Conv\(\(3, 3\), 1 => 8, relu\) expects 1 input channels"):
        m.summary((3, 28, 28))
    assert Dense(3, 2).output_shape((3,)) == (2,)
    from pyflux_compress.model.summary import summary
    assert "6 parameters" in summary(Dense(2, 2), (2,))


def test_conv_first_layer_skip_input_grad_same_param_grads():
    rng = np.random.default_rng(0)
    cnn = Chain(Conv((3, 3), (1, 2), pfc.relu, seed=0), MaxPool((2, 2)), flatten, Dense(18, 3, seed=1))
    x = rng.random((2, 1, 8, 8), dtype=np.float32)
    y, cache = cnn.forward(x, train=True)
    dx, g1 = cnn.backward(cache, np.ones_like(y))
    none, g2 = cnn.backward(cache, np.ones_like(y), need_input_grad=False)
    assert dx.shape == x.shape and none is None
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])
