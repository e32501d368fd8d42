"""Flux ``Dropout`` (the identity at inference: dropped from ONNX graphs)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_bool, check_fraction, check_int, check_rng
from ..registry import register_layer
from ..syntax import Colon, Name, as_ints
from .base import Grads, Layer, as_data, float_dtype


@register_layer
class Dropout(Layer):
    """Flux ``Dropout(p)``: in training, zero each entry with probability ``p`` and scale the rest by
    ``1/(1-p)``; identity in test mode. ``active`` (None/True/False) overrides the mode like Flux's.
    ``rng`` is the layer's generator (Flux field ``rng``); ``forward(..., rng=)`` overrides it per call.
    ``dims`` are Flux dims (1-based, Flux order, so ``dims=1`` is our *last* axis) along which the mask varies;
    it is broadcast along the others. ``None`` is Flux's default ``dims=:`` (an independent mask per entry).
    """

    flux_name = "Dropout"
    flux_fields = {"p": "p", "dims": "dims", "active": "active", "rng": "rng"}
    onnx_ops = ("Dropout", "Identity")
    structured = "channelwise"

    def __init__(self, p: float, *, dims: Any = None, active: bool | None = None,
                 rng: np.random.Generator | None = None, seed: int | None = None) -> None:
        who = self.flux_name
        self.p = check_fraction(f"{who} p", p, 0.0, 1.0)
        if dims is None or (isinstance(dims, str) and dims == ":"):
            self.dims: tuple[int, ...] | None = None
        else:
            items = dims if isinstance(dims, (tuple, list)) else (dims,)
            self.dims = tuple(check_int(f"{who} dims", d, min=1) for d in items)
        self.active = None if active is None else check_bool(f"{who} active", active)
        self.rng = check_rng(seed, rng)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, float_dtype(x), self)
        on = self.active is True or (train and self.active is not False)
        if not on or self.p == 0:
            return x, None
        gen = self.rng if rng is None else rng
        # Flux _dropout_kernel: keep where rand > p, scaled by 1/(1-p)
        shape = x.shape
        if self.dims is not None:  # Flux dim d is numpy axis ndim - d; the mask is broadcast elsewhere
            shape = tuple(n if x.ndim - i in self.dims else 1 for i, n in enumerate(x.shape))
        keep = gen.random(shape, dtype=np.float32 if x.dtype == np.float32 else np.float64) > self.p
        scale = np.asarray(0.0 if self.p == 1 else 1 / (1 - self.p), dtype=x.dtype)
        mask = keep * scale
        return x * mask, mask

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        return (dy if cache is None else dy * cache), {}

    def batch_kind(self, train: bool) -> str | None:
        # a mask broadcast over the batch (``dims``) must stay one mask; ``active=true`` draws at inference too
        if getattr(self, "dims", None) is not None or self.active is True:
            return None
        return "random" if train else "plain"

    def __repr__(self) -> str:
        s = f"{self.flux_name}({self.p!r}"
        if self.dims is not None:
            s += f", dims={self.dims[0] if len(self.dims) == 1 else self.dims}"
        if self.active is not None:
            s += f", active={str(self.active).lower()}"
        return s + ")"

    @classmethod
    def from_syntax(cls, call: Any) -> "Dropout":
        call.check_kw("dims", "active", "rng")
        args, kwargs = call.args, call.kwargs
        if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], (int, float)):
            raise ValueError("expected Dropout(p) with a number p")
        dims = kwargs.get("dims")
        dims = None if dims is None or isinstance(dims, Colon) else as_ints(dims, "dims")
        active = kwargs.get("active")
        if isinstance(active, Name) and active.name == "nothing":
            active = None
        if "rng" in kwargs:
            raise ValueError("rng cannot be given in syntax; pass rng= to parse()")
        return cls(float(args[0]), dims=dims, active=active, rng=np.random.default_rng(call.rng.integers(2**63)))

    def flux_state(self) -> dict[str, Any]:
        state = super().flux_state()
        if "dims" in state and self.dims is None:
            state["dims"] = ()  # dims=: (Colon, a singleton) is () in Flux.state
        return state

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "Dropout":
        active = fields.get("active")
        return cls(float(fields["p"]), active=active if isinstance(active, bool) else None)

    def to_onnx(self, g: Any, x: str) -> str:
        return x  # the identity at inference

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> None:
        return None  # Dropout / Identity nodes are dropped
