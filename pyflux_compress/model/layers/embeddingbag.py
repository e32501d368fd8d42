"""Flux ``EmbeddingBag(vocab => dim, reduction = mean)`` (Flux >= 0.13.15, so every supported version): a lookup
table ``weight (dim, vocab)`` whose looked-up vectors of each *bag* of token ids are reduced to one.

Flux's struct is ``EmbeddingBag{F, W}(weight::W, reduction::F)``; ``reduction`` is any function taking ``dims``:
``mean`` (default), ``sum``, ``maximum`` here. Token ids are 0-based as for :class:`~.embedding.Embedding`.
Inputs (Flux's with dims reversed, batch-first):

* integer ids ``(..., len)``: each last-axis row is a bag -> ``(..., dim)`` (Flux: ``(len, ...)`` -> ``(dim, ...)``,
  "each bag along the first dimension"); one 1-D bag ``(len,)`` -> ``(dim,)``;
* a list of 1-D id arrays (bags of different lengths) -> ``(nbags, dim)`` (Flux's vector of vectors);
* ``layer(data, offsets)``: ``data`` split at 0-based ``offsets`` (``offsets[0] == 0``; Flux's 1-based ``at``);
* a bool one-hot array ``(..., len, vocab)`` -> ``(..., dim)`` (Flux's ``OneHotMatrix`` bag, ``onehotbatch``).

An empty bag is an error for ``mean`` / ``maximum`` (Julia gives NaN / throws) and zeros for ``sum``.
Backward: ``sum`` sends ``dy`` to every looked-up column, ``mean`` ``dy / len``, ``maximum`` to the first
maximal element of each bag and dimension. ONNX: ``Cast`` -> ``Gather`` -> ``ReduceMean`` / ``ReduceSum`` /
``ReduceMax`` over the bag axis (imported back by ``Embedding.from_onnx``, which sees the Gather first).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..registry import register_layer
from ..syntax import Pair, as_pair
from .base import Grads
from .embedding import Embedding

__all__ = ["EmbeddingBag", "REDUCTIONS"]

#: Flux reduction name -> (NumPy reduction over an axis, ONNX reduce op)
REDUCTIONS = {"mean": (np.mean, "ReduceMean"), "sum": (np.sum, "ReduceSum"), "maximum": (np.max, "ReduceMax")}


@register_layer
class EmbeddingBag(Embedding):
    """``EmbeddingBag(vocab => dim, reduction)``: ``weight (dim, vocab)``, ``reduction`` in ``REDUCTIONS``.

    Python: ``EmbeddingBag(vocab, dim, reduction="mean")``, ``EmbeddingBag((vocab, dim))`` or
    ``EmbeddingBag(weight, reduction)`` from a ``(dim, vocab)`` array."""

    flux_name = "EmbeddingBag"
    flux_fields = {"weight": "weight", "reduction": "reduction"}
    onnx_ops = ()          # the Gather belongs to Embedding, whose from_onnx builds an EmbeddingBag
    quantize_as = None     # the int8 lookup export (QuantizedEmbedding) has no reduction: stays float

    def __init__(self, vocab: Any, dim: Any = None, reduction: Any = "mean", *, init: Callable | None = None,
                 rng: np.random.Generator | None = None, seed: int | None = None) -> None:
        if isinstance(vocab, np.ndarray) and isinstance(dim, str):   # EmbeddingBag(weight, reduction)
            dim, reduction = None, dim
        if isinstance(vocab, (tuple, list)) and isinstance(dim, str):
            dim, reduction = None, dim
        super().__init__(vocab, dim, init=init, rng=rng, seed=seed)
        name = getattr(reduction, "name", reduction)
        if name not in REDUCTIONS:
            raise ValueError(f"EmbeddingBag: reduction must be one of {sorted(REDUCTIONS)}; got {reduction!r}")
        self.reduction = name

    # ---- forward / backward ----------------------------------------------------------------------------------
    def __call__(self, x: Any, offsets: Any = None) -> np.ndarray:
        if offsets is not None:
            x = self.split(x, offsets)
        return self.forward(x)[0]

    def split(self, data: Any, offsets: Any) -> list[np.ndarray]:
        """Flux's ``m(data, at)``: ``data`` cut into bags starting at 0-based ``offsets`` (``offsets[0] == 0``,
        increasing, all inside ``data``)."""
        data = self._ids(data)
        off = np.asarray(offsets)
        if data.ndim != 1 or off.ndim != 1 or off.dtype.kind not in "iu" or not len(off) or off[0] != 0 \
                or np.any(np.diff(off) < 0) or off[-1] > len(data):
            raise self._err(f": offsets must be increasing 0-based integers starting at 0 and at most len(data) "
                            f"= {len(data)} (Flux's 1-based `at` minus 1) for a 1-D data vector; got {offsets!r}")
        return np.split(data, off[1:])

    def _bags(self, x: Any) -> tuple[str, Any]:
        if isinstance(x, list):
            return "ragged", [self._ids(b) for b in x]
        if isinstance(x, np.ndarray) and x.dtype == np.bool_:
            if x.ndim < 2 or x.shape[-1] != self.vocab:
                raise self._err(f": a one-hot bag needs shape (..., len, {self.vocab}); got {x.shape} (Flux: "
                                "EmbeddingBag not defined for a one-hot vector)")
            return "onehot", x
        ids = self._ids(x)
        if ids.ndim == 0:
            raise self._err(" expects an array of indices (a bag), not just one (as Flux)")
        return "ids", ids

    def _reduce(self, e: np.ndarray) -> np.ndarray:
        """Reduce looked-up vectors ``(..., len, dim)`` over the bag axis."""
        if e.shape[-2] == 0 and self.reduction != "sum":
            raise self._err(f": an empty bag has no {self.reduction}")
        return REDUCTIONS[self.reduction][0](e, axis=-2).astype(self.weight.dtype, copy=False)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        kind, bags = self._bags(x)
        if kind == "ragged":
            es = [self.weight.T[b] for b in bags]
            return np.stack([self._reduce(e) for e in es]) if es else np.zeros((0, self.dim), self.weight.dtype), \
                (kind, bags, es)
        e = bags.astype(self.weight.dtype) @ self.weight.T if kind == "onehot" else self.weight.T[bags]
        return self._reduce(e), (kind, bags, e)

    def _de(self, e: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. the looked-up vectors ``e (..., len, dim)`` from ``dy (..., dim)``."""
        n = e.shape[-2]
        dy = np.asarray(dy, dtype=e.dtype)[..., None, :]
        if self.reduction == "sum":
            return np.broadcast_to(dy, e.shape)
        if self.reduction == "mean":
            return np.broadcast_to(dy / n, e.shape)
        first = np.argmax(e, axis=-2)[..., None, :]                         # maximum: the first maximal entry
        return np.where(np.arange(n)[:, None] == first, dy, 0).astype(e.dtype)

    def backward(self, cache: Any, dy: np.ndarray, need_input_grad: bool = True) -> tuple[Any, Grads]:
        kind, bags, e = cache
        grad_t = np.zeros((self.vocab, self.dim), dtype=np.asarray(dy).dtype)
        if kind == "ragged":
            for b, eb, d in zip(bags, e, dy):
                np.add.at(grad_t, b, self._de(eb, d))
            return None, {"weight": np.ascontiguousarray(grad_t.T)}
        de = self._de(e, dy)
        if kind == "onehot":
            oh = bags.reshape(-1, self.vocab).astype(de.dtype)
            dx = de @ self.weight if need_input_grad else None
            return dx, {"weight": de.reshape(-1, self.dim).T @ oh}
        np.add.at(grad_t, bags.reshape(-1), de.reshape(-1, self.dim))
        dx = np.zeros(bags.shape, dtype=self.weight.dtype) if need_input_grad else None
        return dx, {"weight": np.ascontiguousarray(grad_t.T)}

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if not in_shape:
            raise self._err(f" expects bags (..., len) of ids per sample; got per-sample shape {in_shape}")
        return in_shape[:-1] + (self.dim,)

    # ---- Flux text, state ------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        # Flux's show omits the reduction; it is printed when not the default so that the text rebuilds it
        red = "" if self.reduction == "mean" else f", {self.reduction}"
        return f"EmbeddingBag({self.vocab} => {self.dim}{red})"

    def flux_state(self) -> dict[str, Any]:
        return {"weight": self.weight, "reduction": ()}       # a function: Flux.state gives ()

    @classmethod
    def from_syntax(cls, call: Any) -> "EmbeddingBag":
        call.check_kw("init")
        call.no_init()
        args = call.args
        if not args or len(args) > 2 or not isinstance(args[0], Pair):
            raise ValueError("expected EmbeddingBag(vocab => dim[, mean|sum|maximum])")
        red = getattr(args[1], "name", args[1]) if len(args) == 2 else "mean"
        return cls(*as_pair(args[0], "EmbeddingBag size"), red, init=call.init, rng=call.rng)

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "EmbeddingBag":
        w = fields.get("weight")
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            raise ValueError(f"EmbeddingBag weight must be a (dim, vocab) matrix; got {type(w).__name__}")
        params = fields.get("#params", ())
        if not params:             # a Flux.state tree has no type parameters: the architecture text decides
            return cls(np.zeros(w.shape, np.float32))
        text = str(getattr(params[0], "name", params[0]))       # the struct's F: typeof(Statistics.mean), ...
        red = text.rsplit(".", 1)[-1].strip("#()")
        if red not in REDUCTIONS:
            raise ValueError(f"EmbeddingBag reduction {text} is not supported (supported: {sorted(REDUCTIONS)})")
        return cls(np.zeros(w.shape, np.float32), red)

    # ---- compression, ONNX -------------------------------------------------------------------------------------
    def factorise(self, r: int, svd: Callable | None = None) -> list:
        """Low rank for the linear reductions: ``[EmbeddingBag(vocab => r), Dense(r => dim; bias=false)]``
        (the Dense commutes with ``mean``/``sum``, not with ``maximum``)."""
        if self.reduction == "maximum":
            raise ValueError(f"{self!r}: low rank needs a linear reduction (mean, sum): a Dense after the bag does "
                             "not commute with maximum")
        emb, dense = super().factorise(r, svd)
        return [EmbeddingBag(emb.weight, self.reduction), dense]

    def to_onnx(self, g: Any, x: str, weight: np.ndarray | None = None) -> str:
        y = super().to_onnx(g, x, weight)                     # (..., len, dim)
        op = REDUCTIONS[self.reduction][1]
        p = g.fresh("embeddingbag")
        axes = np.array([-2], np.int64)
        if op == "ReduceSum" or g.opset >= 18:                # axes became an input (ReduceSum: opset 13)
            return g.node(op, [y, g.const(f"{p}_axes", axes)], prefix=p, rank=g.rank(y) - 1, keepdims=0)[0]
        return g.node(op, [y], prefix=p, rank=g.rank(y) - 1, keepdims=0, axes=[-2])[0]

    @classmethod
    def from_reduce(cls, table: np.ndarray, node: Any, r: Any) -> "EmbeddingBag":
        """The ``Reduce*`` node after an embedding ``Gather`` (``Embedding.from_onnx`` passes it): a bag layer
        when it reduces the bag axis (-2) without keepdims."""
        op = {o: name for name, (_, o) in REDUCTIONS.items()}[node.op_type]
        a = r.attrs(node)
        axes = list(a.get("axes", [])) or (r.const(node, 1).tolist() if r.has_input(node, 1) else [])
        if a.get("keepdims", 1) != 0 or axes != [-2]:
            raise r.error(node, "only a reduction of the bag axis (-2) with keepdims=0 imports as EmbeddingBag")
        return cls(np.ascontiguousarray(table.T, dtype=np.float32), op)

