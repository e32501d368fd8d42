"""Training loop (``fit``), batched inference (``predict``) and ``accuracy`` for any model with the Layer interface.

``fit`` only relies on the generic contract of docs/ARCHITECTURE.md — ``model.forward(x, train=True, rng=rng)
-> (y, cache)``, ``model.backward(cache, dy) -> (dx, grads)``, ``model.params()`` (live arrays, same keys as
``grads``), ``pfc.modules(model)`` and each leaf's optional ``masks`` — so compressed layers (QuantizedDense,
SharedDense, ...) train through the same code. If ``model.backward`` accepts ``need_input_grad`` (Chain does),
fit passes ``False``: training never needs the gradient with respect to the data, and skipping it saves the
first layer's largest product.

Data is batch-first: ``X`` is ``(N, features)`` or ``(N, C, H, W)``; ``y`` is int labels ``(N,)`` or targets
shaped like the model output ``(N, K)``.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .._validate import check_array, check_bool, check_int
from ..model.walk import first_weight, modules
from ..threads import threads_keyword
from . import losses as _losses
from .optimisers import Adam
from .parallel import infer
from .step import Step, train_step

__all__ = ["fit", "predict", "accuracy", "History"]


@dataclass
class History:
    """Per-epoch training record returned by :func:`fit` (one entry per completed epoch).

    ``loss``/``accuracy`` are averages over the epoch's training batches (measured while training, with the
    weights changing); ``val_loss``/``val_accuracy`` are measured on ``validation`` at the end of each epoch
    (empty lists without ``validation``). Accuracy lists stay empty when targets are not class labels or one-hot
    rows. ``seconds`` is the wall-clock time of each epoch's training steps (validation excluded).
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict[str, list[float]]:
        return {k: list(getattr(self, k)) for k in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")}

    def __repr__(self) -> str:
        if not self.loss:
            return "History(0 epochs)"
        parts = [f"{k} {v[-1]:.4f}" for k, v in self.as_dict().items() if v and k != "seconds"]
        parts.append(f"{sum(self.seconds) / len(self.seconds):.2f} s/epoch")
        return f"History({self.epochs} epoch{'s' if self.epochs != 1 else ''}; last: {', '.join(parts)})"


# ----------------------------------------------------------------------------------------------------------
# argument checks (everything is validated before the first step, with errors naming the argument)


def _check_model(model: Any) -> None:
    missing = [m for m in ("forward", "backward", "params") if not callable(getattr(model, m, None))]
    if missing:
        raise ValueError(f"model must implement the Layer interface (forward, backward, params); "
                         f"{type(model).__name__} lacks {', '.join(missing)}")


def _model_dtype(model: Any) -> np.dtype:
    """The dtype the model computes in: that of its first parameter (float32 for a parameter-free model)."""
    for p in model.params().values():
        return np.asarray(p).dtype
    return np.dtype(np.float32)


def _expected_input(model: Any) -> str | None:
    """Human description of the input the first layer wants, e.g. ``"(N, 784)"``, or None if unknown."""
    found = first_weight(model)
    if found is None or found[2] not in (2, 4):
        return None
    first, n, ndim = found
    if ndim == 2:
        return f"(N, {n}) (the model starts with {first!r}: {n} features)"
    return f"(N, {n}, H, W) (the model starts with {first!r}: {n} input channels)"


def _check_X(name: str, X: Any, model: Any, dtype: np.dtype, finite: bool = False) -> tuple[np.ndarray, tuple]:
    """Convert ``X`` to the model dtype (a copy only if the dtype differs); returns it and the output shape.

    ``finite``: also refuse NaN/Inf (checked after the conversion, which can overflow float64 to Inf).
    """
    arr = check_array(name, X)
    if arr.ndim < 2:
        want = _expected_input(model) or "(N, features...)"
        raise ValueError(f"{name} must be a batch shaped {want}; got shape {arr.shape}")
    if len(arr) == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    output_shape = getattr(model, "output_shape", None)
    out: tuple = ()
    if callable(output_shape):
        try:
            out = tuple(output_shape(tuple(arr.shape[1:])))
        except ValueError as err:
            want = _expected_input(model)
            hint = f"; expected {want}" if want else ""
            if arr.ndim == 4 and want and want.startswith("(N, ") and "H, W" not in want:
                hint += "; flatten images first with X.reshape(len(X), -1)"
            raise ValueError(f"{name} has shape {arr.shape}, which the model cannot take{hint} ({err})") from None
    if arr.dtype != dtype:
        with np.errstate(over="ignore"):  # values past float32's range become Inf: refused just below
            arr = arr.astype(dtype)  # one up-front conversion instead of one per batch
    if finite:
        check_array(name, arr, finite=True)  # one NaN pixel would turn every first-layer weight NaN
    return arr, out


def _check_y(name: str, y: Any, n: int, out_shape: tuple, xname: str) -> np.ndarray:
    """Int labels ``(N,)`` in ``0..K-1`` (K = last output dim) or float targets ``(N, *out_shape)``."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array of labels or targets; got {type(y).__name__} ({err})") from None
    if arr.ndim == 0 or len(arr) != n:
        raise ValueError(f"{name} must have one entry per sample of {xname} ({n}); got shape {arr.shape}")
    if arr.dtype.kind in "iu" and arr.ndim == 1:
        k = out_shape[-1] if out_shape else None
        if k is not None and (arr.min() < 0 or arr.max() >= max(k, 2)):
            raise ValueError(f"{name} labels must be in 0..{max(k, 2) - 1} (the model outputs {k} values); "
                             f"got min {arr.min()}, max {arr.max()}")
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind not in "fb":
        raise ValueError(f"{name} must be int labels (N,) or float targets (N, ...); got dtype {arr.dtype}")
    if out_shape and arr.shape[1:] != out_shape:
        raise ValueError(f"{name} must be int labels ({n},) or targets of the model's output shape "
                         f"({n}, {', '.join(map(str, out_shape))}); got {arr.shape}")
    check_array(name, arr, finite=True)  # a NaN target poisons the loss and every weight
    return arr


def _accepts(fn: Callable, kwarg: str) -> bool:
    try:
        return kwarg in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins / C callables without a signature
        return False


def _has_classes(y: np.ndarray) -> bool:
    """Accuracy is meaningful for int labels or one-hot/probability rows with more than one class."""
    return y.dtype.kind == "i" or (y.ndim == 2 and y.shape[1] > 1)


def mask_targets(model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(param array, bool mask) for every mask of every leaf layer, checked against the parameter shapes."""
    pairs = []
    for path, layer in modules(model):
        masks = getattr(layer, "masks", None)
        if not masks:
            continue
        params = layer.params()
        for pname, mask in masks.items():
            param = params.get(pname)
            if param is None:
                param = getattr(layer, pname, None)
            if param is None:
                raise ValueError(f"{path}: mask for unknown parameter {pname!r} (has {sorted(params)})")
            mask = np.asarray(mask)
            if mask.shape != param.shape:
                raise ValueError(f"{path}: mask {pname!r} has shape {mask.shape}, parameter has {param.shape}")
            pairs.append((param, mask.astype(bool, copy=False)))
    return pairs


def apply_masks(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
    """Zero the masked entries of each parameter in place (``pairs`` from :func:`mask_targets`)."""
    for param, mask in pairs:
        np.multiply(param, mask, out=param)  # masked entries become exactly 0 (also -0.0 -> 0 is fine)


# ----------------------------------------------------------------------------------------------------------
# training


@threads_keyword
def fit(model: Any, X: Any, y: Any, *, epochs: int = 1, batchsize: int = 32, opt: Any = None,
        loss: str | Any = "logitcrossentropy", validation: tuple[Any, Any] | None = None,
        progress: bool = True, seed: int = 0, shuffle: bool = True, pruning: Any = None,
        callbacks: Sequence[Callable[[int, History], Any]] = ()) -> History:
    """Train ``model`` in place with minibatch gradient descent; returns the per-epoch :class:`History`.

    Args:
        model: a Chain (or any Layer). Trained in place.
        X: inputs ``(N, features)`` or ``(N, C, H, W)``; converted once to the model's dtype (float32).
        y: int class labels ``(N,)`` or targets shaped like the model output ``(N, K)``.
        epochs: passes over the data (>= 0).  batchsize: samples per step (the last batch may be smaller).
        opt: optimiser with ``step(params, grads)``; default ``Adam()`` (lr 1e-3). Its state persists across
            calls, so calling ``fit`` twice with the same optimiser continues training seamlessly.
        loss: a name from ``pfc.losses.NAMES`` or a loss object; the default expects logits.
        validation: optional ``(Xv, yv)`` evaluated (inference mode) after every epoch.
        progress: show a tqdm bar per epoch (postfix: running loss/accuracy, then validation figures).
        seed: seeds ``np.random.default_rng`` for shuffling and stochastic layers (Dropout): the same seed on
            the same model and data gives bit-identical weights.
        shuffle: reshuffle the samples every epoch.
        pruning: optional object with ``on_step(model, step)``, called before every optimiser step with the
            number of steps taken so far (0 for the first); e.g. ``compression.prune.PolynomialDecay``.
        callbacks: callables ``cb(epoch, history)`` run after every epoch (``epoch`` = 1, 2, ...); a callback
            returning ``False`` stops training early.
        threads: cores to use (whole steps on shards of the batch for per-sample conv models, else BLAS
            threads and the conv kernels' batch split; see docs/threads.md); None
            (default) = the cores other processes leave idle, at least 1. Results are bit-identical for the
            same ``seed`` and the same thread count; pass ``threads=`` for reproducible reruns (the default
            follows the machine's load, and another count sums products in another order, ~1e-8 apart).

    After every optimiser step the ``masks`` of every leaf layer are re-applied, so pruned weights stay 0.
    """
    _check_model(model)
    epochs = check_int("epochs", epochs, min=0)
    batchsize = check_int("batchsize", batchsize, min=1)
    progress = check_bool("progress", progress)
    shuffle = check_bool("shuffle", shuffle)
    seed = check_int("seed", seed)
    if opt is None:
        opt = Adam()
    elif not callable(getattr(opt, "step", None)):
        raise ValueError(f"opt must be an optimiser with step(params, grads), e.g. pfc.Adam(); got {opt!r}")
    loss_fn = _losses.get(loss)
    if pruning is not None and not callable(getattr(pruning, "on_step", None)):
        raise ValueError(f"pruning must have an on_step(model, step) method; got {pruning!r}")
    callbacks = tuple(callbacks)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise ValueError(f"callbacks[{i}] must be callable as cb(epoch, history); got {cb!r}")

    dtype = _model_dtype(model)
    X, out_shape = _check_X("X", X, model, dtype, finite=True)
    y = _check_y("y", y, len(X), out_shape, "X")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ValueError(f"validation must be a pair (Xv, yv); got {type(validation).__name__}")
        if np.shape(validation[0])[1:] != X.shape[1:]:
            raise ValueError(f"validation[0] must have per-sample shape {X.shape[1:]} like X; "
                             f"got {np.shape(validation[0])}")
        Xv, _ = _check_X("validation[0]", validation[0], model, dtype, finite=True)
        yv = _check_y("validation[1]", validation[1], len(Xv), out_shape, "validation[0]")
    if y.dtype.kind == "f" and y.dtype != dtype:
        y = y.astype(dtype)

    # training never needs dL/dX: let the model skip the first layer's input gradient when it can
    backward_kw = {"need_input_grad": False} if _accepts(model.backward, "need_input_grad") else {}
    rng = np.random.default_rng(seed)
    history = History()
    n = len(X)
    steps_per_epoch = math.ceil(n / batchsize)
    track_acc = _has_classes(y)
    labels_y = y.dtype.kind == "i"
    step = 0

    for epoch in range(1, epochs + 1):
        order = rng.permutation(n) if shuffle else None
        masks = mask_targets(model)
        step_of = Step(model, loss_fn, opt, backward_kw)  # arrays may have been replaced between epochs
        bar = progress_bar(progress, steps_per_epoch, f"epoch {epoch}/{epochs}")
        loss_sum, correct = 0.0, 0
        postfix_every = max(1, steps_per_epoch // 50)
        t0 = time.perf_counter()
        for b in range(steps_per_epoch):
            lo, hi = b * batchsize, min((b + 1) * batchsize, n)
            if order is None:
                xb, yb = X[lo:hi], y[lo:hi]  # views, no copy
            else:
                idx = order[lo:hi]
                xb, yb = X[idx], y[idx]  # one gather per batch
            if pruning is not None:
                pruning.on_step(model, step)
                masks = mask_targets(model)  # the hook may have changed masks or replaced arrays
                step_of = Step(model, loss_fn, opt, backward_kw)
            out, value = train_step(step_of, xb, yb, rng)  # the backend's kernel: forward, backward, update
            apply_masks(masks)
            step += 1

            loss_sum += value * (hi - lo)
            if track_acc:
                pred = out.argmax(axis=-1)
                correct += int(np.count_nonzero(pred == (yb if labels_y else yb.argmax(axis=-1))))
            if bar is not None:
                bar.update(1)
                if b % postfix_every == 0 or b == steps_per_epoch - 1:
                    post = {"loss": f"{loss_sum / hi:.4f}"}  # running means over the hi samples seen
                    if track_acc:
                        post["acc"] = f"{correct / hi:.4f}"
                    bar.set_postfix(post, refresh=False)
        history.seconds.append(time.perf_counter() - t0)
        history.loss.append(loss_sum / n)
        if track_acc:
            history.accuracy.append(correct / n)
        if validation is not None:
            vout = predict(model, Xv)
            history.val_loss.append(float(loss_fn(vout, yv)))
            if _has_classes(yv):
                history.val_accuracy.append(_accuracy_of(vout, yv))
        if bar is not None:  # the epoch's figures: loss, acc, val_loss, val_acc (those measured)
            short = {"loss": "loss", "accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}
            bar.set_postfix({short[k]: f"{v[-1]:.4f}" for k, v in history.as_dict().items() if k in short and v})
            bar.close()
        if any([cb(epoch, history) is False for cb in callbacks]):
            break
    return history


def progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar over ``total`` minibatches, or None when disabled (shared by fit and distill)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------------------
# inference


@threads_keyword
def predict(model: Any, X: Any, batchsize: int = 1024) -> np.ndarray:
    """Model outputs for every sample of ``X`` (inference mode), computed ``batchsize`` samples at a time.

    Returns an array ``(N, *output_shape)`` in the model's dtype. Batching bounds the memory of big inputs.
    ``threads``: cores to use (None: the idle cores, see ``pfc.threads``).
    """
    if not callable(model):
        raise ValueError(f"model must be callable (a Chain or Layer); got {type(model).__name__}")
    batchsize = check_int("batchsize", batchsize, min=1)
    dtype = _model_dtype(model) if callable(getattr(model, "params", None)) else np.dtype(np.float32)
    X, _ = _check_X("X", X, model, dtype)
    first = infer(model, X[:batchsize])  # sharded over threads
    if len(X) <= batchsize:
        return first
    out = np.empty((len(X), *first.shape[1:]), dtype=first.dtype)
    out[:len(first)] = first
    for lo in range(batchsize, len(X), batchsize):
        out[lo:lo + batchsize] = infer(model, X[lo:lo + batchsize])
    return out


def _accuracy_of(yhat: np.ndarray, y: np.ndarray) -> float:
    pred = yhat.argmax(axis=-1)
    truth = y if y.dtype.kind in "iu" else y.argmax(axis=-1)
    return float(np.mean(pred == truth))


def accuracy(model: Any, X: Any, y: Any, batchsize: int = 1024) -> float:
    """Fraction of samples whose argmax over the model output's last axis equals the label.

    ``y``: int labels ``(N,)`` or one-hot/probability rows ``(N, K)`` (their argmax is the label).
    """
    yhat = predict(model, X, batchsize=batchsize)
    yarr = _check_y("y", y, len(yhat), tuple(yhat.shape[1:]), "X")
    return _accuracy_of(yhat, yarr)
