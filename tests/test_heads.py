"""prune_heads: whole attention heads removed (q/k/v rows and out_proj columns coupled), on sklearn digits
read as 8 tokens (rows) of 8 pixels."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc

ARCH = ("Chain(Dense(8 => 16), SkipConnection(Chain(LayerNorm(16), MultiHeadAttention(16; nheads=4, bias=true), "
        "first), +), flatten, Dense(128 => 10))")


@pytest.fixture(scope="module")
def trained():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 8, 8)
    model = pfc.parse(ARCH, seed=0)
    pfc.fit(model, X[:1200], y[:1200], epochs=6, batchsize=32, opt=pfc.Adam(3e-3), progress=False)
    return model, X[1200:], y[1200:]


def test_prune_heads_shrinks_and_records(trained):
    model, X, y = trained
    acc = pfc.accuracy(model, X, y)
    assert acc > 0.8
    half = pfc.prune_heads(model, 0.5)
    mha, orig = half[1].layers[1], model[1].layers[1]
    assert orig.nheads == 4 and mha.nheads == 2                            # pure: the input is untouched
    assert mha.q_proj.weight.shape == (8, 16) and mha.out_proj.weight.shape == (16, 8)
    rec = half.records[-1]
    assert rec["method"] == "prune_heads" and rec["per_layer"] == {"layers[2].layers.layers[2]": 0.5}
    kept = rec["kept"]["layers[2].layers.layers[2]"]
    assert kept == sorted(np.argsort(orig.head_scores(), kind="stable")[2:].tolist())
    assert rec["params_before"] - rec["params_after"] == 3 * 8 * 16 + 3 * 8 + 16 * 8
    # the result equals the original with the removed heads' out_proj columns zeroed
    ref = model.copy()
    for h in set(range(4)) - set(kept):
        ref[1].layers[1].out_proj.weight[:, 4 * h:4 * h + 4] = 0
    np.testing.assert_allclose(half(X), ref(X), atol=1e-4)
    assert str(pfc.parse(str(half))) == str(half)
    acc_half = pfc.accuracy(half, X, y)
    print(f"digits: {acc:.3f} -> {acc_half:.3f} with half the heads")


def test_prune_heads_validation(trained):
    model = trained[0]
    with pytest.raises(ValueError, match="fraction"):
        pfc.prune_heads(model, 1.0)
    with pytest.raises(ValueError, match="no attention layer"):
        pfc.prune_heads(pfc.parse("Chain(Dense(2 => 3))"), 0.5)
    assert pfc.prune_heads(model, 0.0)[1].layers[1].nheads == 4
    assert pfc.prune_heads(model, 0.99)[1].layers[1].nheads == 1          # at least one head stays
