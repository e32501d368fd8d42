"""Structured pruning: neurons and filters physically removed, dependencies followed to the next layer."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc

CNN = ("Chain(Conv((3, 3), 1 => 8, relu), BatchNorm(8), MaxPool((2, 2)), Conv((3, 3), 8 => 16, relu), "
       "MaxPool((2, 2)), flatten, Dropout(0.2), Dense(400 => 10))")


def _randomise_batchnorm(model, rng):
    for _, layer in model.walk():
        if layer.flux_name == "BatchNorm":
            for name in ("beta", "gamma", "mu", "sigma2"):
                setattr(layer, name, rng.uniform(0.5, 1.5, layer.chs).astype(np.float32))


def test_mlp_rows_and_next_columns_are_removed(rng):
    m = pfc.parse("Chain(Dense(12 => 8, relu), Dropout(0.1), Dense(8 => 6, tanh), Dense(6 => 3))", seed=0)
    p = pfc.prune_structured(m, 0.5, criterion="l2")
    assert [layer.weight.shape for _, layer in p.walk() if layer.params()] == [(4, 12), (3, 4), (3, 3)]
    rec = p.records[-1]
    assert rec["method"] == "prune_structured"
    assert rec["per_layer"] == {"layers[1]": 0.5, "layers[3]": 0.5}
    assert "layers[4]" in rec["skipped"]                         # the output layer keeps its outputs
    assert rec["params_after"] == pfc.count_params(p, nonzero=False)["total"] < rec["params_before"]
    # the kept units are the largest-L2 rows, in their original order
    norms = np.linalg.norm(m[0].weight, axis=1)
    kept = rec["kept"]["layers[1]"]
    assert kept == sorted(np.argsort(norms)[-4:].tolist())
    np.testing.assert_array_equal(p[0].weight, m[0].weight[kept])
    np.testing.assert_array_equal(p[2].weight, m[2].weight[np.ix_(rec["kept"]["layers[3]"], kept)])
    # input untouched
    assert m[0].weight.shape == (8, 12) and m.records == []
    X = rng.standard_normal((5, 12)).astype(np.float32)
    np.testing.assert_array_equal(p[0](X), m[0](X)[:, kept])
    assert p(X).shape == (5, 3)


def test_removed_units_are_equivalent_to_zeroed_units(rng):
    """Dropping a relu unit = zeroing its weights and bias: the outputs must agree (checks the columns)."""
    m = pfc.parse("Chain(Conv((3, 3), 2 => 6, relu), MaxPool((2, 2)), flatten, Dense(150 => 7, relu), "
                  "Dense(7 => 4))", seed=3)
    for _, layer in m.walk():
        if layer.params():
            layer.bias[:] = -0.01                       # nonzero biases, so the slicing of bias matters
    p = pfc.prune_structured(m, 0.5, criterion="l1")
    rec = p.records[-1]
    z = m.copy()
    for path, index in (("layers[1]", 0), ("layers[4]", 3)):
        drop = np.setdiff1d(np.arange(6 if index == 0 else 7), rec["kept"][path])
        w = z[index].weight
        if w.ndim == 4:
            w[..., drop] = 0
        else:
            w[drop] = 0
        z[index].bias[drop] = -1.0                      # relu(-1) = 0: the unit is silent
    X = rng.standard_normal((4, 2, 12, 12)).astype(np.float32)
    assert p[3].weight.shape == (3, 3 * 5 * 5)   # 7 - round(3.5) units; 3 of 6 filters x 5*5 columns
    np.testing.assert_allclose(p(X), z(X), rtol=1e-5, atol=1e-6)


def test_cnn_filters_through_batchnorm_pooling_flatten(rng):
    m = pfc.parse(CNN, seed=0)
    _randomise_batchnorm(m, rng)
    X = rng.standard_normal((6, 1, 28, 28)).astype(np.float32)
    p = pfc.prune_structured(m, 0.5)
    shapes = [(path, layer.weight.shape) for path, layer in p.walk() if layer.flux_name in ("Conv", "Dense")]
    assert shapes == [("layers[1]", (3, 3, 1, 4)), ("layers[4]", (3, 3, 4, 8)), ("layers[8]", (10, 8 * 5 * 5))]
    assert p[1].chs == 4 and p[1].mu.shape == (4,)
    kept = p.records[-1]["kept"]["layers[1]"]
    # unpruned channels compute exactly what they did, through conv, BatchNorm and pooling
    np.testing.assert_array_equal(p[0](X), m[0](X)[:, kept])
    np.testing.assert_array_equal(p[:3](X), m[:3](X)[:, kept])
    assert p(X).shape == (6, 10)
    assert str(p).startswith("Chain(Conv((3, 3), 1 => 4, relu), BatchNorm(4)")


def test_core_issue_cnn_on_fashion_mnist_images(fmnist):
    """The core issue's CNN (tests/test_train.py): filters removed through MaxPool and flatten."""
    core = ("Chain(Conv((3, 3), 1 => 8, relu), MaxPool((2, 2)), Conv((3, 3), 8 => 16, relu), MaxPool((2, 2)), "
            "flatten, Dense(400 => 10))")
    m = pfc.parse(core, seed=0)
    X = fmnist[2][:32]
    p = pfc.prune_structured(m, 0.5, criterion="l2")
    assert str(p) == ("Chain(Conv((3, 3), 1 => 4, relu), MaxPool((2, 2)), Conv((3, 3), 4 => 8, relu), "
                      "MaxPool((2, 2)), flatten, Dense(200 => 10))")
    kept = p.records[-1]["kept"]
    np.testing.assert_array_equal(p[0](X), m[0](X)[:, kept["layers[1]"]])
    # the Dense keeps exactly the 5x5 column blocks of the kept second-layer filters
    cols = (np.array(kept["layers[3]"])[:, None] * 25 + np.arange(25)).ravel()
    np.testing.assert_array_equal(p[5].weight, m[5].weight[:, cols])
    assert p(X).shape == (32, 10)


def test_zero_fraction_is_identity(rng):
    m = pfc.parse(CNN, seed=1)
    p = pfc.prune_structured(m, 0.0)
    X = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(p(X), m(X))


def test_unknown_layers_stop_the_dependency():
    m = pfc.parse("Chain(Dense(10 => 8, relu), softmax, Dense(8 => 3))", seed=0)
    # softmax is an activation: pass-through (it mixes units, but removing inputs is still consistent)
    p = pfc.prune_structured(m, 0.25)
    assert p[0].weight.shape == (6, 10)
    conv_to_dense = pfc.parse("Chain(Conv((3, 3), 1 => 4), Dense(6 => 2))", seed=0)
    rec = pfc.prune_structured(conv_to_dense, 0.5).records[-1]
    assert "flatten" in rec["skipped"]["layers[1]"] and rec["per_layer"] == {}


@pytest.mark.parametrize("fraction, criterion, match", [
    (1.0, "l1", "fraction"), (-0.2, "l1", "fraction"), (0.5, "max", "criterion"),
    (0.9, "l1", "would remove all"),
])
def test_bad_arguments(fraction, criterion, match):
    m = pfc.parse("Chain(Dense(10 => 2, relu), Dense(2 => 3))", seed=0)
    with pytest.raises(ValueError, match=match):
        pfc.prune_structured(m, fraction, criterion=criterion)


def test_article_mlp_half_the_neurons(trained_mlp, trained_mlp_accuracy, fmnist_flat):
    Xtr, ytr, Xte, yte = fmnist_flat
    p = pfc.prune_structured(trained_mlp, 0.5)
    assert [layer.weight.shape for _, layer in p.walk()] == [(64, 784), (32, 64), (10, 32)]
    before = pfc.accuracy(p, Xte, yte)
    pfc.fit(p, Xtr, ytr, epochs=1, batchsize=128, opt=pfc.Adam(1e-3), progress=False, seed=0)
    acc = pfc.accuracy(p, Xte, yte)
    rec = p.records[-1]
    print(f"\nstructured 50%: params {rec['params_before']} -> {rec['params_after']}; accuracy "
          f"{100 * trained_mlp_accuracy:.2f}% -> {100 * before:.2f}% (pruned) -> {100 * acc:.2f}% (fine-tuned)")
    assert 100 * (trained_mlp_accuracy - acc) <= 1.5


def test_kept_outputs_equal_to_rounding_and_docs_say_so(rng):
    """Regression (issue 17): the docs promised bit-identical kept outputs; a Conv keeping 1 filter moved the
    next layer's outputs by 7e-7. The promise is now 'up to float32 rounding', and that holds."""
    from pathlib import Path

    m = pfc.parse("Chain(Conv((3, 3), 3 => 8, relu), flatten, Dense(800 => 10))", seed=0)
    X = rng.standard_normal((8, 3, 12, 12)).astype(np.float32)
    p = pfc.prune_structured(m, 0.875)  # the Conv keeps 1 filter; the output layer keeps its 10 outputs
    kept = p.records[-1]["kept"]["layers[1]"]
    assert len(kept) == 1
    z = m.copy()  # the same model with the removed filters zeroed
    drop = np.setdiff1d(np.arange(8), kept)
    z[0].weight[..., drop] = 0
    z[0].bias[drop] = 0
    ref, got = z(X), p(X)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    for doc in (pfc.prune_structured.__doc__,
                (Path(__file__).parents[1] / "docs" / "compression.md").read_text(encoding="utf-8")):
        assert "bit-identical" not in doc and "float32 rounding" in doc
