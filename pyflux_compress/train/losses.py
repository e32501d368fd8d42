"""Loss functions with Flux's definitions (``Flux.Losses``), each returning its value and gradient.

Conventions (batch-first arrays; Flux's ``dims=1`` class dimension is our *last* numpy axis):

* ``yhat``: model output ``(N, K)`` (or ``(..., K)``); ``target``: an array of the same shape, or int class
  labels ``(N,)`` which are one-hot encoded over ``K`` (for ``binarycrossentropy`` with ``K == 1`` the labels
  are the 0/1 targets themselves).
* Aggregation is Flux's default ``agg=mean``: the class-summing losses (``crossentropy``,
  ``logitcrossentropy``, ``kldivergence``) average over every position but the class axis (i.e. over the
  batch); the elementwise losses (``mse``, ``binarycrossentropy``) average over every element, as in Flux.
* ``ϵ`` is ``eps(eltype(yhat))`` as in Flux (``1.19e-7`` for float32).
* Values are Python floats; gradients ``dL/dyhat`` have ``yhat``'s shape and dtype.

Use ``get(name_or_loss)`` to look one up: ``get("logitcrossentropy")``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model.activations import logsoftmax

__all__ = ["Loss", "CrossEntropy", "LogitCrossEntropy", "MSE", "KLDivergence", "BinaryCrossEntropy",
           "crossentropy", "logitcrossentropy", "mse", "kldivergence", "binarycrossentropy", "get", "NAMES"]


class Loss:
    """Base class: a loss is an object with ``name``, ``__call__`` (value) and ``value_and_grad``."""

    name: str = "loss"
    takes_labels = False  # _compute receives int labels as they are (else one-hot rows)

    def __call__(self, yhat: Any, target: Any) -> float:
        """The mean loss (a Python float)."""
        return self.value_and_grad(yhat, target, need_grad=False)[0]

    def value_and_grad(self, yhat: Any, target: Any, need_grad: bool = True) -> tuple[float, np.ndarray | None]:
        """``(mean loss, dL/dyhat)``; the gradient has ``yhat``'s shape and dtype (None if not ``need_grad``)."""
        yhat = _as_float_array(yhat)
        target = _as_target(target, yhat, self.name)
        if target.dtype.kind == "i" and not self.takes_labels:  # one-hot unless the loss indexes by label
            target = _onehot(target, yhat.shape[-1], yhat.dtype)
        return self._compute(yhat, target, need_grad)

    def _compute(self, yhat: np.ndarray, target: np.ndarray, need_grad: bool):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


# ----------------------------------------------------------------------------------------------------------
# helpers


def _as_float_array(yhat: Any) -> np.ndarray:
    yhat = np.asarray(yhat)
    if yhat.dtype.kind != "f":
        yhat = yhat.astype(np.float32)
    if yhat.ndim == 0:
        raise ValueError("yhat must have at least 1 dimension (classes on the last axis); got a scalar")
    return yhat


def _as_target(target: Any, yhat: np.ndarray, loss_name: str) -> np.ndarray:
    """Dense targets of ``yhat``'s shape and dtype, or int labels ``(N,)`` kept as int64 (handled per loss)."""
    target = np.asarray(target)
    if target.dtype.kind in "iub" and target.ndim == yhat.ndim - 1 and target.shape == yhat.shape[:-1]:
        k = yhat.shape[-1]
        if k == 1 and target.dtype.kind != "b" and loss_name != "binarycrossentropy":
            raise ValueError(f"{loss_name}: int labels need yhat with one column per class; yhat has 1 column")
        labels = target.astype(np.int64, copy=False)
        hi = 1 if k == 1 else k - 1
        if labels.size and (labels.min() < 0 or labels.max() > hi):
            raise ValueError(f"target labels must be in 0..{hi} (yhat has {k} classes on its last axis); "
                             f"got min {labels.min()}, max {labels.max()}")
        if k == 1:  # binary targets given as labels
            return labels.reshape(yhat.shape).astype(yhat.dtype)
        return labels
    if target.shape != yhat.shape:
        raise ValueError(f"target must be int labels of shape {yhat.shape[:-1]} or an array of yhat's shape "
                         f"{yhat.shape}; got {target.dtype} {target.shape}")
    return target.astype(yhat.dtype, copy=False)


def _onehot(labels: np.ndarray, k: int, dtype: np.dtype) -> np.ndarray:
    out = np.zeros((*labels.shape, k), dtype=dtype)
    np.put_along_axis(out, labels[..., None], 1, axis=-1)
    return out


def _rows(yhat: np.ndarray) -> int:
    """Number of positions averaged over by the class-summing losses: everything but the class axis."""
    return max(yhat.size // yhat.shape[-1], 1) if yhat.shape[-1] else 1


def _xlogx(x: np.ndarray) -> np.ndarray:
    """x*log(x) with 0*log(0) = 0 (Flux's ``xlogx``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0, x * np.log(np.where(x == 0, 1, x)))


# ----------------------------------------------------------------------------------------------------------
# losses


class CrossEntropy(Loss):
    """Flux ``crossentropy(ŷ, y)`` on probabilities: ``mean over rows of -sum(y .* log.(ŷ .+ ϵ))``."""

    name = "crossentropy"

    def _compute(self, yhat, target, need_grad):
        eps = np.finfo(yhat.dtype).eps
        m = _rows(yhat)
        p = yhat + eps
        with np.errstate(divide="ignore", invalid="ignore"):
            value = -float(np.sum(np.where(target == 0, 0, target * np.log(p)), dtype=np.float64)) / m
            grad = (-(target / p) / yhat.dtype.type(m)).astype(yhat.dtype, copy=False) if need_grad else None
        return value, grad


class LogitCrossEntropy(Loss):
    """Flux ``logitcrossentropy(ŷ, y)`` on logits: ``mean over rows of -sum(y .* logsoftmax(ŷ))`` (stable).

    Gradient: ``(softmax(ŷ) * sum(y) - y) / rows``; with int labels no one-hot matrix is ever built.
    """

    name = "logitcrossentropy"
    takes_labels = True

    def _compute(self, yhat, target, need_grad):
        m = _rows(yhat)
        logp = logsoftmax(yhat)
        if target.dtype.kind == "i":
            picked = np.take_along_axis(logp, target[..., None], axis=-1)
            value = -float(picked.sum(dtype=np.float64)) / m
            if not need_grad:
                return value, None
            grad = np.exp(logp)  # softmax, freshly allocated and C-contiguous: the 2-D view below is free
            grad.reshape(m, -1)[np.arange(m), target.reshape(-1)] -= 1
        else:
            value = -float(np.sum(target * logp, dtype=np.float64)) / m
            if not need_grad:
                return value, None
            grad = np.exp(logp) * target.sum(axis=-1, keepdims=True) - target
        grad *= yhat.dtype.type(1 / m)
        return value, grad


class MSE(Loss):
    """Flux ``mse(ŷ, y)``: ``mean(abs2.(ŷ .- y))`` over every element."""

    name = "mse"

    def _compute(self, yhat, target, need_grad):
        diff = yhat - target
        value = float(np.mean(np.square(diff, dtype=np.float64)))
        grad = diff * yhat.dtype.type(2 / max(diff.size, 1)) if need_grad else None
        return value, grad


class KLDivergence(Loss):
    """Flux ``kldivergence(ŷ, y)`` on probability distributions: ``mean(sum(xlogx.(y))) + crossentropy(ŷ, y)``.

    That is ``KL(y || ŷ)``; it is 0 when ``ŷ == y`` (up to ϵ). The gradient equals crossentropy's (the entropy
    term does not depend on ``ŷ``).
    """

    name = "kldivergence"

    def _compute(self, yhat, target, need_grad):
        entropy = float(np.sum(_xlogx(target), dtype=np.float64)) / _rows(yhat)
        ce, grad = CrossEntropy()._compute(yhat, target, need_grad)
        return entropy + ce, grad


class BinaryCrossEntropy(Loss):
    """Flux ``binarycrossentropy(ŷ, y)`` on probabilities: ``mean(-xlogy(y, ŷ+ϵ) - xlogy(1-y, 1-ŷ+ϵ))``."""

    name = "binarycrossentropy"

    def _compute(self, yhat, target, need_grad):
        eps = np.finfo(yhat.dtype).eps
        p, q = yhat + eps, 1 - yhat + eps
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(target == 0, 0, target * np.log(p)) + np.where(target == 1, 0, (1 - target) * np.log(q))
        n = max(yhat.size, 1)
        value = -float(np.sum(terms, dtype=np.float64)) / n
        grad = ((-target / p + (1 - target) / q) / yhat.dtype.type(n)).astype(yhat.dtype, copy=False) \
            if need_grad else None
        return value, grad


crossentropy = CrossEntropy()
logitcrossentropy = LogitCrossEntropy()
mse = MSE()
kldivergence = KLDivergence()
binarycrossentropy = BinaryCrossEntropy()

_REGISTRY: dict[str, Loss] = {l.name: l for l in (crossentropy, logitcrossentropy, mse, kldivergence,
                                                  binarycrossentropy)}
NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get(loss: str | Loss) -> Loss:
    """A loss object from its Flux name (``"logitcrossentropy"`` ...) or a loss object (returned as is).

    Any object with ``name`` and ``value_and_grad`` is accepted (duck typing), so custom losses plug into fit.
    """
    if isinstance(loss, str):
        if loss not in _REGISTRY:
            raise ValueError(f"loss must be one of {list(NAMES)} or a loss object; got {loss!r}")
        return _REGISTRY[loss]
    if callable(getattr(loss, "value_and_grad", None)):
        return loss
    raise ValueError(f"loss must be one of {list(NAMES)} or an object with value_and_grad(yhat, target); "
                     f"got {loss!r}")
