"""The shared argument checks in pyflux_compress/_validate.py."""
from __future__ import annotations

import numpy as np
import pytest

from pyflux_compress._validate import (check_array, check_bool, check_fraction, check_in, check_int,
                                       check_positive, check_rng, check_tuple)


def test_check_in():
    assert check_in("scheme", "affine", ("symmetric", "affine")) == "affine"
    assert check_in("bits", np.int64(8), (2, 4, 8)) == 8
    with pytest.raises(ValueError, match=r"scheme must be one of 'symmetric', 'affine'; got 'afine'"):
        check_in("scheme", "afine", ("symmetric", "affine"))
    with pytest.raises(ValueError, match="bits must be one of"):
        check_in("bits", True, (1, 2))  # bool is not the integer 1 here
    with pytest.raises(ValueError):
        check_in("flag", 1, (True, False))


def test_check_fraction_and_numbers():
    assert check_fraction("amount", 0.5) == 0.5
    assert check_fraction("amount", 1) == 1.0
    with pytest.raises(ValueError, match=r"amount must be in \[0.0, 1.0\); got 1.0"):
        check_fraction("amount", 1.0, 0.0, 1.0, inclusive=(True, False))
    for bad in (float("nan"), "0.5", None, True):
        with pytest.raises(ValueError, match="amount"):
            check_fraction("amount", bad)
    assert check_int("epochs", np.int32(3), min=1) == 3
    with pytest.raises(ValueError, match="epochs must be >= 1; got 0"):
        check_int("epochs", 0, min=1)
    with pytest.raises(ValueError, match="epochs must be an integer"):
        check_int("epochs", 2.0)
    assert check_positive("lr", 1e-3) == 1e-3
    with pytest.raises(ValueError, match="lr must be > 0"):
        check_positive("lr", 0)
    assert check_positive("decay", 0, strict=False) == 0.0
    assert check_bool("affine", np.bool_(True)) is True
    with pytest.raises(ValueError, match="affine must be True or False"):
        check_bool("affine", 1)


def test_check_tuple():
    assert check_tuple("stride", 2, 2) == (2, 2)
    assert check_tuple("pad", [0, 1, 2, 3], 4) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match=r"stride must be an integer or a tuple of 2 integers"):
        check_tuple("stride", (1, 2, 3), 2)
    with pytest.raises(ValueError, match=r"stride\[1\] must be >= 1"):
        check_tuple("stride", (1, 0), 2, min=1)


def test_check_array():
    x = check_array("X", [[1, 2], [3, 4]], ndim=2, dtype=np.float32)
    assert x.dtype == np.float32 and x.shape == (2, 2)
    assert check_array("X", np.zeros((3, 4)), shape=(None, 4)).shape == (3, 4)
    with pytest.raises(ValueError, match=r"X must have shape \(\*, 5\); got \(3, 4\)"):
        check_array("X", np.zeros((3, 4)), shape=(None, 5))
    with pytest.raises(ValueError, match=r"X must have 2 or 4 dimensions; got shape \(3,\)"):
        check_array("X", np.zeros(3), ndim=(2, 4))
    with pytest.raises(ValueError, match="X must be a numeric array"):
        check_array("X", ["a", object()])
    with pytest.raises(ValueError, match="X must be a numeric array"):
        check_array("X", "abc", dtype=np.float32)
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        check_array("X", [1.0, np.inf], finite=True)


def test_check_rng():
    assert isinstance(check_rng(), np.random.Generator)
    assert check_rng(seed=1).random() == np.random.default_rng(1).random()
    g = np.random.default_rng(0)
    assert check_rng(rng=g) is g
    with pytest.raises(ValueError, match="either seed or rng"):
        check_rng(1, g)
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        check_rng(rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="seed must be an integer"):
        check_rng(seed=1.5)
