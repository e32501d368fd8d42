"""pfc.lowrank: truncated-SVD factorisation of Dense layers where it saves parameters."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.compression.lowrank import rank_for_energy


def _low_rank_dense(rng, n_in, n_out, rank, noise=0.0):
    w = rng.standard_normal((n_out, rank)) @ rng.standard_normal((rank, n_in))
    return (w + noise * rng.standard_normal(w.shape)).astype(np.float32)


def test_exact_low_rank_weight_is_reproduced(rng):
    m = pfc.Chain(pfc.Dense(_low_rank_dense(rng, 60, 40, 5), np.arange(40, dtype=np.float32), pfc.relu),
                  pfc.Dense(40, 3, seed=0))
    lr = pfc.lowrank(m, energy=0.999)
    first, second = lr[0], lr[1]
    assert first.weight.shape == (5, 60) and first.bias is None and first.activation.name == "identity"
    assert second.weight.shape == (40, 5) and second.activation.name == "relu"
    np.testing.assert_array_equal(second.bias, np.arange(40))
    X = rng.standard_normal((7, 60)).astype(np.float32)
    np.testing.assert_allclose(lr(X), m(X), rtol=1e-4, atol=1e-3)
    rec = lr.records[-1]
    assert rec["method"] == "lowrank" and rec["per_layer"] == {"layers[1]": 5}
    assert rec["energy_kept"]["layers[1]"] == pytest.approx(1.0, abs=1e-6)
    assert "layers[2]" in rec["skipped"]              # rank 3 of a 40x3 layer saves nothing
    assert rec["params_after"] == pfc.count_params(lr, nonzero=False)["total"] == 5 * 60 + 40 * 5 + 40 + 123
    assert len(m) == 2 and m[0].weight.shape == (40, 60)   # input untouched


def test_rank_by_energy_matches_singular_values(rng):
    s = np.array([4.0, 2.0, 1.0, 1.0])          # energies 16, 4, 1, 1 of 22
    assert rank_for_energy(s, 16 / 22) == 1
    assert rank_for_energy(s, 0.8) == 2
    assert rank_for_energy(s, 1.0) == 4
    w = _low_rank_dense(rng, 50, 50, 50)
    m = pfc.Chain(pfc.Dense(w))
    r = pfc.lowrank(m, energy=0.6).records[-1]["per_layer"]["layers[1]"]
    sv = np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2
    assert sv[:r].sum() / sv.sum() >= 0.6 > sv[:r - 1].sum() / sv.sum()


def test_given_rank_int_and_dict_and_nesting(rng):
    m = pfc.parse("Chain(Dense(100 => 80, relu), Chain(Dense(80 => 60, relu), Dense(60 => 10)))", seed=0)
    lr = pfc.lowrank(m, rank=8)  # every Dense but the output layer
    assert lr.records[-1]["per_layer"] == {"layers[1]": 8, "layers[2].layers[1]": 8}
    assert "output layer" in lr.records[-1]["skipped"]["layers[2].layers[2]"]
    assert str(lr) == ("Chain(Dense(100 => 8; bias=false), Dense(8 => 80, relu), Chain(Dense(80 => 8; "
                       "bias=false), Dense(8 => 60, relu), Dense(60 => 10)))")
    forced = pfc.lowrank(m, rank={"layers[2].layers[2]": 8})  # named explicitly: factorised
    assert forced.records[-1]["per_layer"] == {"layers[2].layers[2]": 8}
    only = pfc.lowrank(m, rank={"layers[2].layers[1]": 4})
    assert [layer.weight.shape for _, layer in only.walk()] == [(80, 100), (4, 80), (60, 4), (10, 60)]
    X = rng.standard_normal((3, 100)).astype(np.float32)
    assert only(X).shape == (3, 10)


def test_output_layer_and_negligible_savings_are_skipped(trained_mlp, fmnist_flat):
    """Regression (issue 17): energy=0.9 factored the 64 -> 10 classifier at rank 8 to save 48 of 109,386
    parameters, which alone cost 7.6 accuracy points."""
    lr = pfc.lowrank(trained_mlp, energy=0.9)
    rec = lr.records[-1]
    assert "layers[3]" not in rec["per_layer"] and "output layer" in rec["skipped"]["layers[3]"]
    assert str(lr).endswith("Dense(64 => 10))")
    big = pfc.parse("Chain(Dense(400 => 300, relu), Dense(300 => 30, relu), Dense(30 => 10))", seed=0)
    small_gain = pfc.lowrank(big, rank=25).records[-1]  # layers[2] would save 9000 - 8250 = 750 < 1% of 129640
    assert list(small_gain["per_layer"]) == ["layers[1]"]
    assert "save only" in small_gain["skipped"]["layers[2]"]


def test_no_saving_no_change():
    m = pfc.parse("Chain(Dense(4 => 3, relu), Dense(3 => 2))", seed=0)
    lr = pfc.lowrank(m, energy=1.0)
    assert str(lr) == str(m)
    assert lr.records[-1]["per_layer"] == {} and len(lr.records[-1]["skipped"]) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(energy=0.0), "energy"), (dict(energy=1.5), "energy"), (dict(rank=0), "rank"),
    (dict(rank=2.5), "rank"), (dict(rank={"layers[9]": 2}), "layers\\[9\\]"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pfc.lowrank(pfc.parse("Chain(Dense(4 => 3, relu), Dense(3 => 2))"), **kwargs)


def test_article_mlp_energy_09(trained_mlp, trained_mlp_accuracy, fmnist_flat):
    _, _, Xte, yte = fmnist_flat
    lr = pfc.lowrank(trained_mlp, energy=0.9)
    rec = lr.records[-1]
    before = pfc.count_params(trained_mlp, nonzero=False)["total"]
    after = pfc.count_params(lr, nonzero=False)["total"]
    acc = pfc.accuracy(lr, Xte, yte)
    print(f"\nlowrank energy 0.9: ranks {rec['per_layer']}, params {before} -> {after}, accuracy "
          f"{100 * trained_mlp_accuracy:.2f}% -> {100 * acc:.2f}% ({100 * (acc - trained_mlp_accuracy):+.2f} points)")
    assert after < before and rec["params_after"] == after
    assert all(e >= 0.9 for e in rec["energy_kept"].values())
    assert acc > 0.5      # a sane model; the accuracy change itself is reported, not bounded
