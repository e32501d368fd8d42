"""Flux ``Embedding(vocab => dim)``: a lookup table ``weight (dim, vocab)``; ONNX ``Cast`` + ``Gather``.

Index convention (the one decision Flux cannot make for us): Flux indexes with 1-based Julia integers; here token
ids are **0-based** like every Python tokenizer and like the class labels ``pfc.fit`` takes, so Flux's
``m(x)`` is ``m(x - 1)`` here and column ``j`` of ``weight`` is token ``j`` (Flux's column ``j + 1``). The weight
array itself is Flux's, unchanged, so checkpoints move both ways without re-indexing.

Inputs, batch-first (Flux's arrays with dims reversed):

* integer ids of any shape ``S`` -> ``S + (dim,)`` (Flux: ``(dim, reverse(S)...)``). Float arrays whose values
  are whole numbers are accepted as ids too, because ``pfc.fit``/``pfc.predict`` convert ``X`` to float32
  (exact for ids below 2**24).
* a **boolean** one-hot array ``(..., vocab)`` (Flux's ``onehotbatch(ids, 0:V-1)`` reversed, see
  :func:`onehotbatch`) -> ``(..., dim)``, i.e. ``onehot @ weight.T`` as Flux's ``m.weight * x``. Like Flux,
  the element type decides: only ``bool`` arrays are read as one-hot.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_int, check_rng
from .. import registry
from ..registry import register_layer
from ..syntax import Pair, as_pair
from .base import Grads, Layer, svd_factors
from .dense import Dense
from .laststep import LastStep

__all__ = ["Embedding", "onehotbatch"]


def onehotbatch(ids: Any, vocab: int) -> np.ndarray:
    """Boolean one-hot encoding of 0-based ``ids`` (any shape ``S``) -> ``S + (vocab,)`` (Flux's
    ``onehotbatch(ids, 0:vocab-1)`` with dims reversed). ValueError for ids outside ``0..vocab-1``."""
    vocab = check_int("vocab", vocab, min=1)
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() >= vocab)):
        raise ValueError(f"onehotbatch: ids must be integers in 0..{vocab - 1}")
    return np.arange(vocab) == arr[..., None]


def _randn(rng: np.random.Generator, *dims: int) -> np.ndarray:
    """Flux's ``randn32``: standard normal Float32 (Embedding's default init)."""
    return rng.standard_normal(dims).astype(np.float32)


@register_layer
class Embedding(Layer):
    """Lookup table ``weight (dim, vocab)`` (Flux's field and shape); ids are 0-based (module docstring).

    ``Embedding(vocab, dim)`` or ``Embedding((vocab, dim))`` (Python for ``vocab => dim``), or Flux's
    ``Embedding(weight)`` from a ``(dim, vocab)`` array. ``init(rng, dim, vocab)`` defaults to ``randn32``.
    """

    flux_name = "Embedding"
    flux_fields = {"weight": "weight"}
    onnx_ops = ("Gather", "Cast")
    compressible = ("weight",)
    # the per-channel unit of a lookup table is one token's vector (a column): quantization scales per token
    # (pfc.quantize wraps it as QuantizedEmbedding, compression/quantize_sequence.py)
    out_axes = {"weight": 1}
    quantize_as = "table"
    input_grad_optional = True

    def __init__(self, vocab: Any, dim: Any = None, *, init: Callable | None = None,
                 rng: np.random.Generator | None = None, seed: int | None = None) -> None:
        if isinstance(vocab, np.ndarray):
            if vocab.ndim != 2 or vocab.dtype.kind != "f":
                raise ValueError(f"Embedding: weight must be a float (dim, vocab) matrix; got {vocab.dtype} "
                                 f"array of shape {vocab.shape}")
            self.weight = vocab
            return
        if isinstance(vocab, (tuple, list)):
            if len(vocab) != 2 or dim is not None:
                raise ValueError(f"Embedding: expected Embedding((vocab, dim)) or Embedding(vocab, dim); got {vocab!r}")
            vocab, dim = vocab
        if dim is None:
            raise ValueError("Embedding: give both sizes, e.g. Embedding(1000, 64) or Embedding((1000, 64))")
        n_vocab = check_int("Embedding vocab", vocab, min=1)
        n_dim = check_int("Embedding dim", dim, min=1)
        gen = check_rng(seed, rng)
        self.weight = np.asarray((init or _randn)(gen, n_dim, n_vocab), dtype=np.float32)

    @property
    def vocab(self) -> int:
        return int(self.weight.shape[1])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight}

    def _ids(self, x: Any) -> np.ndarray:
        """Validated 0-based int64 ids (float input must hold whole numbers)."""
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:
            raise self._err(f": input must be an array of token ids ({err})") from None
        if arr.dtype.kind == "f":
            ids = arr.astype(np.int64)
            if not np.array_equal(ids, arr):
                raise self._err(": float input must hold whole-number token ids (0-based); pass a bool array "
                                "for one-hot input")
        elif arr.dtype.kind in "iu":
            ids = arr.astype(np.int64, copy=False)
        else:
            raise self._err(f": input must be integer token ids or a bool one-hot array; got dtype {arr.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
            raise self._err(f": token ids must be in 0..{self.vocab - 1} (0-based; Flux's 1-based id k is k-1 "
                            f"here); got range {ids.min()}..{ids.max()}")
        return ids

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        if isinstance(x, np.ndarray) and x.dtype == np.bool_:  # Flux: m.weight * onehot
            if x.ndim == 0 or x.shape[-1] != self.vocab:
                raise self._err(f": a one-hot input needs last axis {self.vocab}; got shape {x.shape}")
            oh = x.astype(self.weight.dtype)
            return oh @ self.weight.T, ("onehot", oh)
        ids = self._ids(x)
        return self.weight.T[ids], ("ids", ids)

    def backward(self, cache: Any, dy: np.ndarray, need_input_grad: bool = True
                 ) -> tuple[np.ndarray | None, Grads]:
        """Scatter-add of ``dy`` into the looked-up columns; ids have no gradient (``dx`` is zeros)."""
        kind, x = cache
        dy2 = np.asarray(dy).reshape(-1, self.dim)
        if kind == "onehot":
            oh = x.reshape(-1, self.vocab)
            return (dy @ self.weight if need_input_grad else None), {"weight": dy2.T @ oh}
        grad_t = np.zeros((self.vocab, self.dim), dtype=dy2.dtype)
        np.add.at(grad_t, x.reshape(-1), dy2)
        dx = np.zeros(x.shape, dtype=self.weight.dtype) if need_input_grad else None
        return dx, {"weight": np.ascontiguousarray(grad_t.T)}

    def output_shape(self, in_shape: tuple) -> tuple:
        # per-sample ids of shape S -> S + (dim,). A one-hot (bool) input cannot be told apart by shape alone,
        # so shape checks assume ids (what pfc.fit passes): inside a Chain pass ids; one-hot input is for
        # the bare layer (Flux's OneHotMatrix is itself only a compact form of the ids)
        return tuple(in_shape) + (self.dim,)

    def __repr__(self) -> str:
        return f"Embedding({self.vocab} => {self.dim})"

    @classmethod
    def from_syntax(cls, call: Any) -> "Embedding":
        call.check_kw("init")
        call.no_init()
        if len(call.args) != 1 or not isinstance(call.args[0], Pair):
            raise ValueError("expected Embedding(vocab => dim)")
        return cls(*as_pair(call.args[0], "Embedding size"), init=call.init, rng=call.rng)

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "Embedding":
        w = fields.get("weight")
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            raise ValueError(f"Embedding weight must be a (dim, vocab) matrix; got {type(w).__name__}")
        return cls(np.zeros(w.shape, np.float32))

    def factorise(self, r: int, svd: Callable | None = None) -> list:
        """Rank-``r`` truncated SVD ``W ≈ (U_r S_r^½)(S_r^½ V_r^T)`` as ``[Embedding(vocab => r), Dense(r => dim;
        bias=false)]`` (used by ``pfc.lowrank``, which passes its ``svd`` kernel): ``Dense`` on ``(..., r)`` maps
        every looked-up row."""
        left, right = svd_factors(self.weight, r, svd)
        return [Embedding(right), Dense(left, False)]

    def to_onnx(self, g: Any, x: str, weight: np.ndarray | None = None) -> str:
        """The graph input is float: ``Cast`` to int64, then ``Gather(weight.T, ids, axis=0)``."""
        w = np.asarray(self.weight if weight is None else weight, dtype=np.float32)
        p = g.fresh("embedding")
        (ids,) = g.node("Cast", [x], prefix=p, to=7)  # TensorProto.INT64
        table = g.const(f"{p}_table", np.ascontiguousarray(w.T), allow_sparse=True)
        (y,) = g.node("Gather", [table, ids], prefix=p, rank=g.rank(x) + 1, axis=0)
        return y

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "Layer":
        if node.op_type == "Gather" and node.input[0] not in r.consts:   # not a table: a sequence's last step
            return LastStep.from_onnx(node, r)
        gather = node
        if node.op_type == "Cast":  # our export: Cast(x -> int) feeding Gather(table, ids) as the only consumer
            cons = r.consumers.get(node.output[0], [])
            if r.attrs(node).get("to") not in (6, 7) or len(cons) != 1 or cons[0].op_type != "Gather" \
                    or list(cons[0].input[1:2]) != [node.output[0]]:
                raise r.error(node, "only a Cast to int32/int64 feeding an embedding Gather imports")
            gather = cons[0]
            r.advanced = gather.output[0]
        if r.attrs(gather).get("axis", 0) != 0 or gather.input[0] not in r.consts:
            raise r.error(gather, "only Gather(constant table (vocab, dim), ids, axis=0) imports as Embedding")
        table = r.const(gather, 0)
        if table.ndim != 2:
            raise r.error(gather, f"the embedding table must be 2-D (vocab, dim); got shape {table.shape}")
        after = r.consumers.get(gather.output[0], [])
        if len(after) == 1 and after[0].op_type in ("ReduceMean", "ReduceSum", "ReduceMax"):   # a bag reduction
            r.advanced = after[0].output[0]
            return registry.by_name("EmbeddingBag").from_reduce(table, after[0], r)
        return cls(np.ascontiguousarray(table.T, dtype=np.float32))
