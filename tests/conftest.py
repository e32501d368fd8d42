"""Shared fixtures. Expensive things (datasets, the trained article MLP) are built once per session.

Tests must not mutate session fixtures: copy first (``model.copy()``); compression functions are pure anyway.
"""
from __future__ import annotations

import numpy as np
import pytest

ARTICLE_MLP = "Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def fmnist():
    """Fashion-MNIST as (Xtrain (60000,1,28,28) float32, ytrain int64, Xtest (10000,1,28,28), ytest)."""
    from pyflux_compress import datasets

    try:
        return datasets.load("fashion-mnist")
    except (FileNotFoundError, OSError) as err:  # pragma: no cover - CI installs the Debian package
        pytest.skip(f"Fashion-MNIST not installed: {err}")


@pytest.fixture(scope="session")
def fmnist_flat(fmnist):
    """Fashion-MNIST flattened for MLPs: (Xtrain (60000,784), ytrain, Xtest (10000,784), ytest)."""
    Xtr, ytr, Xte, yte = fmnist
    return Xtr.reshape(len(Xtr), -1), ytr, Xte.reshape(len(Xte), -1), yte


@pytest.fixture(scope="session")
def trained_mlp(fmnist_flat):
    """The article's MLP trained 3 epochs on Fashion-MNIST (seed 0). Do not mutate: copy first."""
    import pyflux_compress as pfc

    Xtr, ytr, _, _ = fmnist_flat
    model = pfc.parse(ARTICLE_MLP, seed=0)
    pfc.fit(model, Xtr, ytr, epochs=3, batchsize=128, opt=pfc.Adam(1e-3), progress=False, seed=0)
    return model


@pytest.fixture(scope="session")
def trained_mlp_accuracy(trained_mlp, fmnist_flat):
    import pyflux_compress as pfc

    _, _, Xte, yte = fmnist_flat
    return pfc.accuracy(trained_mlp, Xte, yte)
