"""Knowledge distillation: train a small student to reproduce a (big) teacher's outputs — ``distill``.

Losses (``s`` = student logits, ``z`` = teacher logits, ``T`` = temperature, ``p = softmax(z / T)``; with a
list of teachers ``p`` is the average of their softened outputs — the ensemble distillation of the survey):

* ``loss="kl"`` — Hinton, Vinyals & Dean (2015)::

      soft = T² · KL(p ‖ softmax(s / T))          (T² keeps the gradient scale independent of T)
      L    = alpha · soft + (1 - alpha) · logitcrossentropy(s, y)      when labels y are given
      L    = soft                                                        without labels

* ``loss="mse"`` — the article's variant: ``Flux.mse(small_output, softmax(large_output))``, i.e. the mean
  squared error between the student's raw outputs and the teacher's softmax (``p`` with ``T = 1`` is the
  article exactly; other temperatures soften ``p`` the same way as above), blended with cross-entropy on
  ``y`` by ``alpha`` likewise.

Teachers and student output logits (a final ``softmax`` layer of a teacher is skipped to get them). The
teacher outputs are computed once, before training. The minibatch loop uses the engine's layer API
(``forward(train=True)`` / ``backward``), the engine's losses and optimisers, and keeps the student's masks
(a pruned student stays pruned).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .._validate import check_bool, check_fraction, check_in, check_int, check_positive
from ..backends import kernel
from ..threads import threads_keyword
from ._common import add_record, check_finite, check_inputs, check_labels, check_model

__all__ = ["distill", "validate_distill", "soft_targets"]

LOSSES = ("kl", "mse")


def _logits_model(model: Any) -> Any:
    """The model without a trailing ``softmax`` layer (distillation softens logits itself)."""
    layers = getattr(model, "layers", None)
    if layers and getattr(layers[-1], "name", None) == "softmax":
        return model[:-1]
    return model


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def soft_targets(teachers: Sequence[Any], X: np.ndarray, temperature: float) -> np.ndarray:
    """Average over ``teachers`` of ``softmax(logits / temperature)``, shape ``(N, K)`` float32."""
    from ..train.fit import predict

    total = None
    for t in teachers:
        p = _softmax(predict(_logits_model(t), X).astype(np.float64) / temperature)
        total = p if total is None else total + p
    return (total / len(teachers)).astype(np.float32)


def validate_distill(teacher: Any, student: Any, X: Any, y: Any, temperature: Any, alpha: Any, loss: Any,
                     epochs: Any, batchsize: Any, opt: Any, seed: Any, progress: Any) -> dict:
    """Check the arguments of :func:`distill`; return them normalised in a dict."""
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if not teachers:
        raise ValueError("teacher must be a model or a non-empty list of models")
    for i, t in enumerate(teachers):
        check_model(t, f"teacher[{i}]" if len(teachers) > 1 else "teacher")
    check_model(student, "student")
    check_finite(student, "student")
    X = check_inputs(student, X, "X", "student")
    out_s = _logits_model(student).output_shape(tuple(X.shape[1:]))
    for i, t in enumerate(teachers):
        name = f"teacher[{i}]" if len(teachers) > 1 else "teacher"
        check_inputs(t, X[:1], "X", name)
        out_t = _logits_model(t).output_shape(tuple(X.shape[1:]))
        if out_t != out_s:
            raise ValueError(f"{name} outputs {out_t} per sample but student outputs {out_s}; "
                             "they must predict the same classes")
    if y is not None:
        y = check_labels(y, len(X))
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise ValueError(f"y must be int class labels of shape ({len(X)},); got {y.dtype} {y.shape}")
        if y.min() < 0 or y.max() >= out_s[-1]:
            raise ValueError(f"y labels must be in 0..{out_s[-1] - 1}; got min {y.min()}, max {y.max()}")
        y = y.astype(np.int64)
    if opt is not None and not callable(getattr(opt, "step", None)):
        raise ValueError(f"opt must be an optimiser with step(params, grads), e.g. pfc.Adam(); got {opt!r}")
    return {
        "teachers": teachers, "X": X, "y": y,
        "temperature": check_positive("temperature", temperature),
        "alpha": check_fraction("alpha", alpha, 0.0, 1.0),
        "loss": check_in("loss", loss, LOSSES),
        "epochs": check_int("epochs", epochs, min=1),
        "batchsize": check_int("batchsize", batchsize, min=1),
        "seed": check_int("seed", seed),
        "progress": check_bool("progress", progress),
        "opt": opt,
    }


@kernel("distill_loss_grad")
def _distill_loss(s: np.ndarray, p: np.ndarray, yb: np.ndarray | None, T: float, alpha: float,
                  kind: str) -> tuple[float, np.ndarray]:
    """Blended distillation loss of student logits ``s (B, K)`` and its gradient ``dL/ds``."""
    from ..train import losses

    if kind == "kl":
        # KL(p || q_T) = CE(p, q_T) - H(p); logitcrossentropy(s/T, p) gives CE and (q_T - p)/B wrt s/T
        ce, g = losses.get("logitcrossentropy").value_and_grad(s / s.dtype.type(T), p)
        entropy = -float(np.sum(p * np.log(np.maximum(p, 1e-30)), dtype=np.float64)) / len(s)
        soft, dsoft = T * T * (ce - entropy), g * s.dtype.type(T)     # d(s/T)/ds = 1/T, times T²
    else:
        soft, dsoft = losses.get("mse").value_and_grad(s, p)
    if yb is None:
        return soft, dsoft
    hard, dhard = losses.get("logitcrossentropy").value_and_grad(s, yb)
    a = s.dtype.type(alpha)
    return alpha * soft + (1 - alpha) * hard, a * dsoft + (1 - a) * dhard


@threads_keyword
def distill(teacher: Any, student: Any, X: Any, y: Any = None, temperature: float = 4.0, alpha: float = 0.9,
            loss: str = "kl", epochs: int = 5, batchsize: int = 128, opt: Any = None, *, seed: int = 0,
            progress: bool = True) -> Any:
    """Train a copy of ``student`` on the softened outputs of ``teacher`` (a model or a list of models).

    Parameters
    ----------
    teacher : Chain or list of Chain — trained models; a list distills from the ensemble (averaged soft
        targets). Not modified.
    student : Chain — the (smaller) model to train, e.g. ``Chain(Dense(784 => 32, relu), Dense(32 => 10))``.
        Not modified: a trained copy is returned.
    X : array ``(N, features...)`` — transfer set (need not be labelled).
    y : int labels ``(N,)`` or None — when given, the loss blends in cross-entropy on the labels.
    temperature : float > 0 — softens the teacher's (and for "kl" the student's) logits.
    alpha : float in [0, 1] — weight of the soft (distillation) term when ``y`` is given.
    loss : {"kl", "mse"} — Hinton's KL·T² or the article's MSE to the teacher's softmax.
    epochs, batchsize : training length; ``opt`` an optimiser (default ``pfc.Adam(1e-3)``).
    seed : int — shuffling and Dropout; the same seed gives bit-identical results.
    progress : bool — a tqdm bar per epoch.
    threads : int or None — cores for the numpy engine (None: the idle cores, see ``pfc.threads``).

    Returns
    -------
    Chain
        The trained student copy, with a ``"distill"`` record (settings, ``history``: mean loss per epoch).

    Raises
    ------
    ValueError
        Bad temperature/alpha/loss/epochs/batchsize, ``X`` that does not fit the models, labels of the
        wrong shape or range, teacher and student with different output shapes, NaN/Inf weights or data.
    """
    a = validate_distill(teacher, student, X, y, temperature, alpha, loss, epochs, batchsize, opt, seed,
                         progress)
    from ..train.fit import apply_masks, mask_targets, progress_bar
    from ..train.optimisers import Adam

    X, y, T = a["X"], a["y"], a["temperature"]
    opt = a["opt"] if a["opt"] is not None else Adam(1e-3)
    result = student.copy()
    params = list(result.params().values())
    X = X.astype(params[0].dtype if params else np.float32, copy=False)   # the student's compute dtype
    P = soft_targets(a["teachers"], X, T)
    net = _logits_model(result)        # trains the same layer objects as `result`
    rng = np.random.default_rng(a["seed"])
    n, bs = len(X), a["batchsize"]
    steps = math.ceil(n / bs)
    history = []
    for epoch in range(1, a["epochs"] + 1):
        order = rng.permutation(n)
        masks = mask_targets(net)
        bar = progress_bar(a["progress"], steps, f"distill {epoch}/{a['epochs']}")
        total = 0.0
        for b in range(steps):
            idx = order[b * bs:(b + 1) * bs]
            s, cache = net.forward(X[idx], train=True, rng=rng)
            value, ds = _distill_loss(s, P[idx], None if y is None else y[idx], T, a["alpha"], a["loss"])
            _, grads = net.backward(cache, ds)
            params = net.params()
            keys = [k for k in params if grads.get(k) is not None]
            opt.step([params[k] for k in keys], [grads[k] for k in keys])
            apply_masks(masks)
            total += value * len(idx)
            if bar is not None:
                bar.update(1)
        history.append(total / n)
        if bar is not None:
            bar.set_postfix({"loss": f"{history[-1]:.4f}"})
            bar.close()
    add_record(result, "distill",
               {"temperature": T, "alpha": a["alpha"], "loss": a["loss"], "epochs": a["epochs"],
                "batchsize": bs, "opt": repr(opt), "seed": a["seed"], "teachers": len(a["teachers"]),
                "labels": y is not None, "samples": n},
               {}, history=history)
    return result
