"""Optimisers with Optimisers.jl's update rules: ``Adam`` and ``SGD`` (Descent / Momentum / Nesterov).

An optimiser updates parameter arrays **in place**: ``opt.step(params, grads)`` with two equally long lists of
arrays. State (moments, velocities, step counts) is kept per parameter array, keyed by ``id(array)``; if a
parameter array is replaced by a new object, its state starts afresh. ``lr`` may be changed between steps
(learning-rate schedules).

``weight_decay`` is *coupled* L2 regularisation: ``weight_decay * x`` is added to the gradient before the rule
runs, i.e. Optimisers.jl's ``OptimiserChain(WeightDecay(λ), rule)`` (and PyTorch's ``weight_decay`` argument).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["Optimiser", "Adam", "SGD"]


def _check_number(name: str, value: Any, *, low: float = 0.0, low_open: bool = False,
                  high: float | None = None, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    value = float(value)
    bad_low = value <= low if low_open else value < low
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high if high is not None else 'inf'}{hi}; got {value!r}")
    return value


class Optimiser:
    """Base class: per-array state keyed by ``id`` plus the shared ``step`` loop."""

    def __init__(self) -> None:
        # id(param) -> (param, state); the param reference guards against a recycled id of a freed array
        self._state: dict[int, tuple[np.ndarray, Any]] = {}

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """Update every ``params[i]`` in place from ``grads[i]`` (same shape)."""
        if len(params) != len(grads):
            raise ValueError(f"params and grads must have the same length; got {len(params)} and {len(grads)}")
        for x, g in zip(params, grads):
            if g is None:
                continue
            if x.shape != g.shape:
                raise ValueError(f"gradient shape {g.shape} does not match parameter shape {x.shape}")
            entry = self._state.get(id(x))
            if entry is None or entry[0] is not x:
                entry = (x, self._init_state(x))
                self._state[id(x)] = entry
            self._update(x, g, entry[1])

    def reset(self) -> None:
        """Forget all per-array state (moments, velocities, step counts)."""
        self._state.clear()

    def _decayed(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        if self.weight_decay:  # type: ignore[attr-defined]
            return g + x.dtype.type(self.weight_decay) * x  # type: ignore[attr-defined]
        return g

    def _init_state(self, x: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _update(self, x: np.ndarray, g: np.ndarray, state: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class Adam(Optimiser):
    """Adam (Optimisers.jl ``Adam(η, β, ϵ)``), per array with ``t`` = its own step count::

        m = β1 m + (1-β1) g;   v = β2 v + (1-β2) g²
        x -= η · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + ϵ)

    Args:
        lr: learning rate η > 0.  beta: (β1, β2), each in [0, 1).  eps: ϵ > 0.
        weight_decay: coupled L2 coefficient λ >= 0 (``g += λ x`` first).
    """

    def __init__(self, lr: float = 1e-3, beta: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.lr = _check_number("lr", lr, low_open=True)
        if not isinstance(beta, (tuple, list)) or len(beta) != 2:
            raise ValueError(f"beta must be a pair (β1, β2); got {beta!r}")
        self.beta = (_check_number("beta[0]", beta[0], high=1, high_open=True),
                     _check_number("beta[1]", beta[1], high=1, high_open=True))
        self.eps = _check_number("eps", eps, low_open=True)
        self.weight_decay = _check_number("weight_decay", weight_decay)

    def _init_state(self, x):
        # [m, v, scratch buffer, β1^t, β2^t]; Optimisers.jl starts βt at β (so step 1 divides by 1-β)
        return [np.zeros_like(x), np.zeros_like(x), np.empty_like(x), self.beta[0], self.beta[1]]

    def _update(self, x, g, state):
        m, v, tmp, b1t, b2t = state
        b1, b2 = self.beta
        t = x.dtype.type
        g = self._decayed(x, g)
        # in-place moment updates: no temporaries beyond the per-array scratch buffer
        m *= t(b1)
        np.multiply(g, t(1 - b1), out=tmp)
        m += tmp
        v *= t(b2)
        np.multiply(g, g, out=tmp)
        tmp *= t(1 - b2)
        v += tmp
        # x -= lr/(1-β1^t) * m / (sqrt(v/(1-β2^t)) + ϵ)
        np.multiply(v, t(1 / (1 - b2t)), out=tmp)
        np.sqrt(tmp, out=tmp)
        tmp += t(self.eps)
        np.divide(m, tmp, out=tmp)
        tmp *= t(self.lr / (1 - b1t))
        x -= tmp
        state[3], state[4] = b1t * b1, b2t * b2

    def __repr__(self) -> str:
        wd = f", weight_decay={self.weight_decay}" if self.weight_decay else ""
        return f"Adam(lr={self.lr}, beta={self.beta}, eps={self.eps}{wd})"


class SGD(Optimiser):
    """Stochastic gradient descent; Optimisers.jl ``Descent`` / ``Momentum`` / ``Nesterov``::

        momentum == 0:  x -= η g
        momentum ρ > 0: v = ρ v + η g;  x -= v                 (Momentum)
        nesterov:       v = ρ v + η g;  x -= ρ v + η g          (Nesterov; = x -= ρ² v_old + (1+ρ) η g)

    (Equal to PyTorch's SGD for a constant learning rate.)

    Args:
        lr: learning rate η > 0.  momentum: ρ in [0, 1).  nesterov: needs momentum > 0.
        weight_decay: coupled L2 coefficient λ >= 0 (``g += λ x`` first).
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.lr = _check_number("lr", lr, low_open=True)
        self.momentum = _check_number("momentum", momentum, high=1, high_open=True)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be True or False; got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0; got momentum=0")
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_number("weight_decay", weight_decay)

    def _init_state(self, x):
        return np.zeros_like(x) if self.momentum else None

    def _update(self, x, g, velocity):
        t = x.dtype.type
        g = self._decayed(x, g)
        if velocity is None:
            x -= t(self.lr) * g
            return
        velocity *= t(self.momentum)
        velocity += t(self.lr) * g
        if self.nesterov:
            x -= t(self.momentum) * velocity + t(self.lr) * g
        else:
            x -= velocity

    def __repr__(self) -> str:
        extra = "".join([f", momentum={self.momentum}" if self.momentum else "",
                         ", nesterov=True" if self.nesterov else "",
                         f", weight_decay={self.weight_decay}" if self.weight_decay else ""])
        return f"SGD(lr={self.lr}{extra})"
