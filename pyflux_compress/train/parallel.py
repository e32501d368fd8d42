"""Data parallelism within one training step and one inference batch (``threads > 1``).

Why: per layer, a LeNet-sized step is a dozen numpy calls on arrays of 10^4-10^6 values. Splitting each *kernel*
over threads (the conv kernels do) leaves relu, pooling, the Dense layers, the loss and the per-call overhead on
one thread, so a second core barely helped (LeNet-5 at 2 threads: 1.65x torch's epoch). Here the *whole model*
runs on ``threads`` contiguous shards of the batch at once, one shard per thread (numpy's ufuncs and BLAS release
the GIL), each with single-threaded BLAS and no nested batch split:

1. forward of every shard (in parallel), outputs concatenated in shard order;
2. the loss and its gradient on the **full** batch (so any loss, mean or not, keeps its exact meaning);
3. backward of every shard on its slice of that gradient (in parallel);
4. the shards' parameter gradients summed in shard order (a fixed order: reruns are bit-identical for the
   same seed and thread count; another thread count sums in another order, ~1e-7 relative apart).

Only models with a convolution are sharded (:func:`worth_sharding`): a Dense-only model's step is a few large
GEMMs that BLAS threads already split, and sharding it measured no faster on the main thread for +50% CPU
(the article MLP at batch 128). Only models whose every layer treats samples independently and keeps no
state are sharded (each layer class declares it for itself: ``batch_mode`` / ``batch_kind``, read by
:func:`shardable`): BatchNorm in training mode needs full-batch statistics and updates its running statistics
in ``forward``, so such models (and layers that declare nothing, e.g. compressed ones) keep the sequential
path, unchanged. Dropout draws its masks from one generator per shard, seeded from ``rng`` once per step (only when
the model has a Dropout), so its masks are deterministic given ``seed`` and the thread count.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from .. import threads
from ..model.walk import modules

__all__ = ["MIN_SHARD", "shardable", "worth_sharding", "shards", "forward_backward", "infer"]

#: fewest samples per shard: below this a thread's hand-over (~20-50 µs) outweighs what it saves
MIN_SHARD = 16


def shardable(model: Any, train: bool = True) -> str | None:
    """Whether ``model`` may run on shards of a batch: ``"plain"``, ``"random"`` (has Dropout: needs
    per-shard generators when training) or None (some layer needs the whole batch or declares nothing).
    Each layer says so itself (``batch_mode`` / ``batch_kind`` in its own file; containers combine their
    children's)."""
    kind = getattr(model, "batch_kind", None)
    return kind(train) if kind is not None else None


def worth_sharding(model: Any) -> bool:
    """True if ``model`` has a spatial kernel (a layer with a 4-D weight: Conv, CrossCor, ConvTranspose):
    per-sample work of many mid-sized numpy calls, which is what running whole shards on threads speeds up
    (LeNet-5); see the module doc for Dense-only models."""
    return any(getattr(getattr(layer, "weight", None), "ndim", 0) == 4 for _, layer in modules(model))


def shards(n: int) -> int:
    """How many shards a batch of ``n`` samples is cut into under the threads in force (1 = do not shard)."""
    return max(1, min(threads.active(), n // MIN_SHARD))


def _bounds(n: int, k: int) -> list[tuple[int, int]]:
    return [(n * i // k, n * (i + 1) // k) for i in range(k)]


def forward_backward(model: Any, xb: np.ndarray, yb: np.ndarray, loss_fn: Any, rng: np.random.Generator,
                     backward_kw: dict) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
    """Forward, loss and backward of one training batch: ``(outputs (N, ...), mean loss, grads by param key)``.

    Sharded over the threads in force when the model allows it (see the module doc), else the model's own
    sequential ``forward``/``backward``; both give the same gradients up to float summation order.
    """
    k = shards(len(xb))
    kind = shardable(model, train=True) if k > 1 and worth_sharding(model) else None
    if kind is None:
        out, cache = model.forward(xb, train=True, rng=rng)
        value, dout = loss_fn.value_and_grad(out, yb)
        _, grads = model.backward(cache, dout, **backward_kw)
        return out, value, grads
    bounds = _bounds(len(xb), k)
    gens: list[Any] = [rng] * k
    if kind == "random":  # one generator per shard, seeded in shard order: deterministic per seed and threads
        gens = [np.random.default_rng(s) for s in rng.integers(0, 2 ** 63 - 1, size=k)]

    def fwd(i: int) -> tuple[np.ndarray, Any]:
        lo, hi = bounds[i]
        return model.forward(xb[lo:hi], train=True, rng=gens[i])

    results = threads.map_tasks(fwd, k)
    out = np.concatenate([r[0] for r in results])
    value, dout = loss_fn.value_and_grad(out, yb)

    def bwd(i: int) -> dict[str, np.ndarray]:
        lo, hi = bounds[i]
        return model.backward(results[i][1], dout[lo:hi], **backward_kw)[1]

    parts = threads.map_tasks(bwd, k)
    grads = {key: functools.reduce(np.add, [p[key] for p in parts]) if g is not None else None
             for key, g in parts[0].items()}
    return out, value, grads


def infer(model: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """``model(x)`` (inference), run on shards of ``x`` over the threads in force when the model allows it."""
    k = shards(len(x))
    if k == 1 or shardable(model, train=False) is None or not worth_sharding(model):
        return np.asarray(model(x))
    bounds = _bounds(len(x), k)
    return np.concatenate(threads.map_tasks(lambda i: np.asarray(model(x[slice(*bounds[i])])), k))
