"""``laststep``: the last time step of a sequence, ``(N, len, F) -> (N, F)`` -- what Flux users write as
``x -> x[:, end, :]`` after a recurrent layer (Flux >= 0.15 layers return every step, ``(F, len, N)``).

Flux has no named layer for it, so this is a function layer (``flux_function``: no fields) that prints and parses
as ``laststep`` and writes ``x -> x[:, end, :]`` for Julia (:meth:`LastStep.julia`). ONNX: ``Gather(axis=1,
indices=-1)``, which is also what ``torch.onnx.export`` writes for ``y[:, -1, :]``, so a PyTorch LSTM/GRU
classifier imports (``Embedding.from_onnx`` hands a ``Gather`` of a non-constant tensor here).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register_layer
from .base import FunctionLayer, Grads

__all__ = ["LastStep", "laststep"]


@register_layer
class LastStep(FunctionLayer):
    """``x[:, -1, :]`` of a batch-first sequence ``(N, len, F)`` (Flux's ``x[:, end, :]`` of ``(F, len, N)``)."""

    flux_name = "laststep"
    onnx_ops = ()   # ONNX Gather belongs to Embedding, whose from_onnx hands a Gather of a non-constant here
    structured = "channelwise"   # keeps every feature (hidden unit) apart: structured pruning slices through it

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[1] == 0:
            raise self._err(f"expects a sequence batch (N, len, features) with len >= 1; got shape {x.shape}")
        return x[:, -1], x.shape

    def backward(self, cache: Any, dy: np.ndarray, need_input_grad: bool = True) -> tuple[Any, Grads]:
        dx = np.zeros(cache, dtype=np.asarray(dy).dtype)
        dx[:, -1] = dy
        return dx, {}

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or (isinstance(in_shape[0], int) and in_shape[0] < 1):
            raise self._err(f"expects per-sample input (len, features); got {in_shape}")
        return in_shape[1:]

    def julia(self) -> str:
        return "x -> x[:, end, :]"

    def to_onnx(self, g: Any, x: str) -> str:
        return g.node("Gather", [x, g.const(g.fresh("laststep_index"), np.array(-1, np.int64))], prefix="laststep",
                      rank=g.rank(x) - 1, axis=1)[0]

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "LastStep":
        idx = r.const(node, 1) if r.has_input(node, 1) else None
        if r.attrs(node).get("axis", 0) != 1 or idx is None or idx.shape != () or int(idx) != -1:
            raise r.error(node, "only Gather(axis=1, indices=-1) of a sequence (the last time step) imports here; "
                                "an embedding lookup needs a constant table")
        return laststep


laststep = LastStep.the()
