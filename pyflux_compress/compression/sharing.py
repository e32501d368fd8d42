"""Weight sharing (Deep Compression's "trained quantization"): k-means codebooks per layer.

``share_weights(model, bits=5)`` clusters each Dense/Conv layer's *nonzero* weights into ``2**bits`` centroids
(1-D k-means with linear initialization over ``[min, max]``, as Han et al. recommend) and replaces the layer by a
:class:`SharedDense` / :class:`SharedConv`:

* ``centroids`` — float32 ``(k,)``, the trainable codebook (``params()["centroids"]``);
* ``index`` — uint8 (k <= 256) or uint16, same shape as the weight, the cluster of each weight (0 where pruned);
* ``mask`` — bool, same shape as the weight; False = pruned: the weight is exactly 0 and stays 0;
* ``float_layer`` — the float template (bias, activation, stride, ...); ``bias`` is trained as usual.

The effective weight is ``where(mask, centroids[index], 0)``. Fine-tuning with ``pfc.fit`` updates the
centroids with the gradient summed over each cluster (``np.bincount``), so weights of a cluster stay tied.
``layer.to_float()`` / :func:`unshare` give back plain float layers (with a pruning mask).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..backends import kernel
from ..model.walk import map_layers, modules
from .quantize import quantized_class, resolve_layer_keys
from .wrapper import WrappedLayer, as_float_layer

SHARING_BITS = tuple(range(1, 17))
MAX_ITER = 100  # k-means iterations (1-D k-means converges in a few dozen)


@kernel("kmeans_1d")
def kmeans_1d(values: np.ndarray, k: int, max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray, int]:
    """1-D k-means with linear initialization; vectorized (sorted centroids -> ``searchsorted`` on midpoints).

    Parameters
    ----------
    values : 1-D float array (n,), n >= 1.
    k : number of clusters (clipped to n).

    Returns
    -------
    (centroids float32 (k,) sorted ascending, labels int64 (n,), iterations run)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    k = max(1, min(int(k), v.size))
    c = np.linspace(v.min(), v.max(), k)
    labels = np.zeros(v.size, dtype=np.int64)
    it = 0
    for it in range(1, max_iter + 1):  # loop over iterations; each one is vectorized over all weights
        new_labels = np.searchsorted((c[1:] + c[:-1]) / 2, v)
        counts = np.bincount(new_labels, minlength=k)
        sums = np.bincount(new_labels, weights=v, minlength=k)
        c_new = np.where(counts > 0, sums / np.maximum(counts, 1), c)  # empty clusters keep their centroid
        done = it > 1 and np.array_equal(new_labels, labels)
        labels, c = new_labels, c_new
        if done:
            break
        order = np.argsort(c, kind="stable")
        if np.any(order != np.arange(k)):  # keep centroids sorted for the midpoint search
            c = c[order]
            labels = np.argsort(order)[labels]
    c32 = c.astype(np.float32)
    # final assignment against the float32 centroids actually stored
    labels = np.searchsorted((c32[1:].astype(np.float64) + c32[:-1]) / 2, v)
    return c32, labels, it


class SharedLayer(WrappedLayer):
    """Common code of :class:`SharedDense` and :class:`SharedConv` (see the module docstring)."""

    def __init__(self, float_layer: Any, centroids: np.ndarray, index: np.ndarray, mask: np.ndarray,
                 bits: int) -> None:
        self.float_layer = float_layer
        self.float_layer.masks = {}
        self.centroids = np.asarray(centroids, dtype=float_layer.weight.dtype)
        self.index = index
        self.mask = np.asarray(mask, dtype=bool)
        self.bits = int(bits)
        self.float_layer.weight = self.weight

    @property
    def masks(self) -> dict[str, np.ndarray]:
        return {}  # pruned weights stay 0 by construction (the mask is applied when the weight is rebuilt)

    @property
    def weight(self) -> np.ndarray:
        """The effective weight ``where(mask, centroids[index], 0)`` (a new array)."""
        return np.where(self.mask, self.centroids[self.index], 0).astype(self.centroids.dtype)

    def forward(self, x: np.ndarray, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        self.float_layer.weight = self.weight  # centroids may have changed since the last call
        return self.float_layer.forward(x, train=train, rng=rng)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        dx, g = self.float_layer.backward(cache, dy)
        dw = np.asarray(g["weight"])
        dc = np.bincount(self.index[self.mask], weights=dw[self.mask], minlength=self.centroids.size)
        grads = {"centroids": dc.astype(self.centroids.dtype)}
        if self.float_layer.bias is not None:
            grads["bias"] = g["bias"]
        return dx, grads

    def params(self) -> dict[str, np.ndarray]:
        p = {"centroids": self.centroids}
        if self.float_layer.bias is not None:
            p["bias"] = self.float_layer.bias
        return p

    def copy(self) -> "SharedLayer":
        return type(self)(self.float_layer.copy(), self.centroids.copy(), self.index.copy(), self.mask.copy(),
                          self.bits)

    def to_float(self) -> Any:
        """A plain float layer with the shared weight; carries a pruning mask when some weights are pruned."""
        layer = self.float_layer.copy()
        layer.weight = self.weight
        layer.masks = {} if self.mask.all() else {"weight": self.mask.copy()}
        return layer

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.float_layer!r}, bits={self.bits}, {self.centroids.size} centroids)"


class SharedDense(SharedLayer):
    """Weight-shared ``Dense``: ``index`` ``(out, in)``."""


class SharedConv(SharedLayer):
    """Weight-shared ``Conv`` / ``CrossCor``: ``index`` ``(kw, kh, cin, cout)``."""


def share_layer(layer: Any, bits: int) -> tuple[SharedLayer, dict[str, Any]]:
    """Cluster one float Dense/Conv layer; returns the shared layer and its record entry."""
    base = layer.copy()
    w = np.asarray(base.weight)
    mask = w != 0
    pmask = (getattr(layer, "masks", None) or {}).get("weight")
    if pmask is not None:
        mask &= np.asarray(pmask, dtype=bool)
    cls = SharedDense if w.ndim == 2 else SharedConv
    dtype = np.uint8 if bits <= 8 else np.uint16
    index = np.zeros(w.shape, dtype=dtype)
    if mask.any():
        centroids, labels, iters = kmeans_1d(w[mask], 2 ** bits)
        index[mask] = labels.astype(dtype)
    else:
        centroids, iters = np.zeros(1, dtype=np.float32), 0
    shared = cls(base, centroids, index, mask, bits)
    err = float(np.sqrt(np.mean((shared.weight - w) ** 2))) if w.size else 0.0
    return shared, {"bits": bits, "centroids": int(centroids.size), "nonzero": int(mask.sum()),
                    "iterations": iters, "rms_error": err}


def share_weights(model: Any, bits: int | Mapping[Any, int | None] = 5) -> Any:
    """Share weights within each Dense/Conv layer through a k-means codebook of ``2**bits`` centroids.

    Parameters
    ----------
    model : Chain (not modified). Zero weights (pruned) stay zero and are not clustered.
    bits : 1..16, or ``{path_or_index: bits}`` (Flux paths like ``"layers[1]"`` or 0-based ``model[i]``);
        layers not in the dict (or mapped to None) stay float. Deep Compression used 5 bits for FC layers.

    Returns
    -------
    Chain of :class:`SharedDense` / :class:`SharedConv` (other layers copied); ``records`` gains a
    ``"share_weights"`` entry with per-layer centroid counts, k-means iterations and RMS error.
    """
    if not getattr(model, "container", False):
        raise ValueError(f"model must be a Chain, got {type(model).__name__}")
    weighted = [p for p, l in modules(model) if quantized_class(as_float_layer(l)) is not None]
    if not weighted:
        raise ValueError("model has no Dense/Conv/CrossCor layer to share weights in")

    def check(v: Any, name: str) -> int | None:
        if v is None and isinstance(bits, Mapping):
            return None
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) not in SHARING_BITS:
            raise ValueError(f"{name} must be an integer in 1..16 (2**bits centroids), got {v!r}")
        return int(v)

    if isinstance(bits, Mapping):
        per = {p: check(v, f"bits[{p!r}]") for p, v in resolve_layer_keys(model, bits, "bits", weighted).items()}
    else:
        b = check(bits, "bits")
        per = {p: b for p in weighted}
    for p, l in modules(model):
        if per.get(p) is not None and not np.all(np.isfinite(as_float_layer(l).weight)):
            raise ValueError(f"layer {p} ({l!r}) has NaN/Inf weights; cannot share weights")

    summary: dict[str, Any] = {}

    def fn(path: str, layer: Any) -> Any:
        b = per.get(path)
        if b is None:
            return layer.copy()
        shared, rec = share_layer(as_float_layer(layer), b)
        summary[path] = rec
        return shared

    from ..model.chain import Chain

    out = map_layers(fn, model, as_type=Chain)
    out.records.append({"method": "share_weights",
                        "settings": {"bits": bits if not isinstance(bits, Mapping) else
                                     {str(k): v for k, v in bits.items()}},
                        "per_layer": summary})
    return out


def unshare(model: Any) -> Any:
    """A float Chain with every shared layer replaced by its plain layer (weights and pruning masks kept)."""
    from ..model.chain import Chain

    return map_layers(lambda p, l: l.to_float() if isinstance(l, SharedLayer) else l.copy(), model, as_type=Chain)
