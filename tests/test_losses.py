"""Losses: Flux definitions (values checked against hand formulas), gradients by finite differences, targets."""
from __future__ import annotations

import numpy as np
import pytest

from pyflux_compress.train import losses

ALL = list(losses.NAMES)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _inputs(name, rng, shape=(5, 4)):
    """(yhat, target) in each loss's domain: logits for logitcrossentropy/mse, probabilities otherwise."""
    z = rng.normal(size=shape)
    if name in ("logitcrossentropy", "mse"):
        yhat = z
    elif name == "binarycrossentropy":
        yhat = 1 / (1 + np.exp(-z))
    else:
        yhat = _softmax(z)
    if name == "binarycrossentropy":
        target = (rng.random(shape) < 0.5).astype(np.float64)
    else:
        target = _softmax(rng.normal(size=shape) * 2)
    return yhat, target


@pytest.mark.parametrize("name", ALL)
def test_gradient_matches_finite_differences(name, rng):
    loss = losses.get(name)
    yhat, target = _inputs(name, rng)
    value, grad = loss.value_and_grad(yhat, target)
    assert grad.shape == yhat.shape and grad.dtype == np.float64
    h = 1e-6
    numeric = np.empty_like(yhat)
    for i in np.ndindex(yhat.shape):  # tiny array: a loop over 20 entries is the clearest reference
        up, down = yhat.copy(), yhat.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (loss(up, target) - loss(down, target)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
    assert value == pytest.approx(loss(yhat, target))


@pytest.mark.parametrize("name", ["crossentropy", "logitcrossentropy", "mse", "kldivergence"])
def test_int_labels_equal_onehot_targets(name, rng):
    yhat, _ = _inputs(name, rng, (6, 3))
    labels = rng.integers(0, 3, size=6)
    onehot = np.eye(3)[labels]
    v1, g1 = losses.get(name).value_and_grad(yhat, labels)
    v2, g2 = losses.get(name).value_and_grad(yhat, onehot)
    assert v1 == pytest.approx(v2, rel=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)


def test_values_follow_flux_formulas(rng):
    """Hand-written Flux definitions (agg = mean, ϵ = eps(Float64) for float64 input)."""
    eps = np.finfo(np.float64).eps
    z = rng.normal(size=(4, 5))
    p, q = _softmax(z), _softmax(rng.normal(size=(4, 5)))
    labels = np.array([0, 3, 4, 1])
    y = np.eye(5)[labels]
    # logitcrossentropy: mean over the batch of -sum(y .* logsoftmax(z))
    logsm = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert losses.logitcrossentropy(z, labels) == pytest.approx(-np.mean(logsm[np.arange(4), labels]))
    # crossentropy on probabilities (with ϵ)
    assert losses.crossentropy(p, q) == pytest.approx(-np.mean(np.sum(q * np.log(p + eps), axis=1)))
    # mse: mean over ALL elements (Flux), not per sample
    assert losses.mse(z, y) == pytest.approx(np.mean((z - y) ** 2))
    # kldivergence(ŷ, y) = KL(y || ŷ), zero for identical distributions
    kl = np.mean(np.sum(q * np.log(q) - q * np.log(p + eps), axis=1))
    assert losses.kldivergence(p, q) == pytest.approx(kl, rel=1e-6)
    assert losses.kldivergence(q, q) == pytest.approx(0.0, abs=1e-6)
    # kldivergence with zeros in the target: 0 log 0 = 0 (no NaN)
    assert np.isfinite(losses.kldivergence(p, y))
    # binarycrossentropy: elementwise mean
    s = 1 / (1 + np.exp(-z))
    t = (rng.random((4, 5)) < 0.5).astype(float)
    ref = np.mean(-t * np.log(s + eps) - (1 - t) * np.log(1 - s + eps))
    assert losses.binarycrossentropy(s, t) == pytest.approx(ref)


def test_logitcrossentropy_is_stable_and_matches_crossentropy_of_softmax(rng):
    z = rng.normal(size=(8, 10)) * 3
    labels = rng.integers(0, 10, 8)
    assert losses.logitcrossentropy(z, labels) == pytest.approx(losses.crossentropy(_softmax(z), labels), rel=1e-6)
    big = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)  # naive softmax overflows here
    value, grad = losses.logitcrossentropy.value_and_grad(big, np.array([0]))
    assert value == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(grad)) and grad.dtype == np.float32


def test_float32_in_float32_out(rng):
    z = rng.normal(size=(16, 10)).astype(np.float32)
    for name in ("logitcrossentropy", "mse"):
        value, grad = losses.get(name).value_and_grad(z, rng.integers(0, 10, 16))
        assert isinstance(value, float) and grad.dtype == np.float32


def test_logitcrossentropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    z = rng.normal(size=(7, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 7)
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(labels))
    ref.backward()
    value, grad = losses.logitcrossentropy.value_and_grad(z, labels)
    assert value == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_binary_labels_with_single_column(rng):
    s = 1 / (1 + np.exp(-rng.normal(size=(6, 1))))
    labels = np.array([0, 1, 1, 0, 1, 0])
    assert losses.binarycrossentropy(s, labels) == pytest.approx(
        losses.binarycrossentropy(s, labels[:, None].astype(float)))


def test_get_and_errors(rng):
    assert losses.get("mse") is losses.mse
    assert losses.get(losses.kldivergence) is losses.kldivergence
    assert {losses.get(n).name for n in ALL} == set(ALL)
    with pytest.raises(ValueError, match="loss must be one of .*logitcrossentropy"):
        losses.get("cross_entropy")
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.get(42)
    z = rng.normal(size=(4, 3))
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        losses.logitcrossentropy(z, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="target must be int labels of shape"):
        losses.mse(z, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        losses.mse(1.0, 1.0)
    assert repr(losses.mse) == "mse"
