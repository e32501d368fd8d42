"""``Chain``: Flux's sequential container.

``Chain(Dense(784, 128, relu), Dense(128, 10))`` applies its layers in order. It is itself a Layer, so chains
nest. Python indexing is 0-based (``chain[0]`` is Flux's ``chain[1]``); paths reported to users by
:meth:`Chain.walk` and in error messages are Flux-style and 1-based (``layers[3].layers[1]``), as Julia
users read them.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from .._validate import check_array
from .layers import Grads, Layer
from .registry import register_layer
from .walk import ROOT, join, modules

__all__ = ["Chain"]


@register_layer
class Chain(Layer):
    """A sequence of layers (or activations) applied in order.

    Attributes
    ----------
    layers : list of Layer
    records : list of dict — what compression did to this model (``{"method", "settings", "per_layer"}``),
        appended by compression functions on the copy they return.
    """

    flux_name = "Chain"
    flux_fields = {"layers": "layers"}
    container = True
    structured = "sequential"     # structured pruning traces data through the children in order
    input_grad_optional = True

    def __init__(self, *layers: Any, **named: Any) -> None:
        """``Chain(l1, l2, ...)``, ``Chain([l1, l2])`` (Flux's Chain of a vector) or Flux's named form
        ``Chain(enc = l1, dec = l2)`` (``names``; ``chain["enc"]``, paths ``layers.enc``)."""
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):  # Chain([l1, l2]) like Flux's Chain(vec)
            layers = tuple(layers[0])
        if named and layers:
            raise ValueError("Chain: give the layers either positionally or by name, not both")
        self.names: list[str] | None = list(named) if named else None
        layers = tuple(named.values()) if named else layers
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"Chain: element layers[{i + 1}] must be a layer or activation "
                                 f"(Dense, Conv, relu, flatten, ...); got {type(layer).__name__}: {layer!r}")
        self.layers: list[Layer] = list(layers)
        self.records: list[dict] = []

    # ---- container protocol --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        """``chain[i]`` (0-based) -> layer; ``chain[a:b]`` -> a new Chain sharing the same layer objects."""
        if isinstance(index, slice):
            return type(self)._from_layers(self, self.layers[index])
        if isinstance(index, str) and self.names and index in self.names:   # named Chain: chain["enc"]
            return self.layers[self.names.index(index)]
        if isinstance(index, (int, np.integer)):
            n = len(self.layers)
            if not -n <= index < n:
                raise IndexError(f"Chain index {index} out of range for a Chain of {n} layers (0-based)")
            return self.layers[index]
        raise TypeError(f"Chain indices must be integers or slices, not {type(index).__name__}")

    @classmethod
    def _from_layers(cls, template: "Chain", layers: list[Layer]) -> "Chain":
        # subclasses (e.g. QuantizedChain) may carry extra attributes: slice into a plain Chain of the
        # same class when its constructor accepts layers, else a plain Chain
        try:
            return cls(*layers)
        except TypeError:
            return Chain(*layers)

    def walk(self) -> Iterator[tuple[str, Layer]]:
        """``pfc.modules(self)``: ``(path, leaf)`` in order, paths like ``"layers[3].layers[2]"``."""
        return modules(self)

    # ---- tree ----------------------------------------------------------------------------------------
    def _fragments(self) -> list[str]:
        names = getattr(self, "names", None)
        return [f"layers.{n}" for n in names] if names else [f"layers[{i + 1}]" for i in range(len(self.layers))]

    def children(self) -> dict[str, Layer]:
        return dict(zip(self._fragments(), self.layers))

    def with_children(self, children: dict[str, Layer], as_type: type | None = None) -> "Chain":
        """A new chain (class ``as_type`` or this one's) of ``children``, carrying a copy of ``records``."""
        out = (as_type or type(self))(*children.values())
        if getattr(self, "names", None):
            out.names = list(self.names)
        out.records = [dict(r) for r in getattr(self, "records", [])]
        return out

    @classmethod
    def from_syntax(cls, call: Any) -> "Chain":
        if call.kwargs and call.args:
            raise ValueError("give the layers either positionally or by name (Chain(enc = ..., dec = ...))")
        if call.kwargs:
            return cls(**{k: call.layer(v) for k, v in call.kwargs.items()})
        if len(call.args) == 1 and isinstance(call.args[0], list):   # Flux's Chain([l1, l2]) (a Vector)
            return cls(*[call.layer(a) for a in call.args[0]])
        return cls(*[call.layer(a) for a in call.args])

    def flux_state(self) -> dict[str, Any]:
        if getattr(self, "names", None):         # Flux.state of a named Chain: layers is a NamedTuple
            return {"layers": dict(zip(self.names, self.layers))}
        return {"layers": tuple(self.layers)}

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable[[Any, str], Any]) -> "Chain":
        layers = fields.get("layers")
        if hasattr(layers, "items"):                  # a NamedTuple of layers (named Chain)
            return cls(**{k: build(v, f"layers.{k}") for k, v in layers.items()})
        if isinstance(layers, np.ndarray):          # a Vector of layers
            layers = tuple(layers.ravel())
        if not isinstance(layers, tuple):
            raise ValueError(f"Chain layers must be a tuple; got {type(layers).__name__}")
        return cls(*[build(v, f"layers[{i + 1}]") for i, v in enumerate(layers)])

    def to_onnx(self, g: Any, x: str) -> str:
        for layer in self.layers:
            x = layer.to_onnx(g, x)
        return x

    # ---- Layer interface -----------------------------------------------------------------------------
    def params(self) -> dict[str, np.ndarray]:
        """Every trainable array keyed ``"<path>.<name>"`` (e.g. ``"layers[1].weight"``), in order."""
        out: dict[str, np.ndarray] = {}
        for path, layer in self.walk():
            for name, arr in layer.params().items():
                out[f"{path}.{name}"] = arr
        return out

    def output_shape(self, in_shape: tuple) -> tuple:
        """Per-sample output shape; a mismatch raises ``ValueError`` naming the layer by its Flux path."""
        shapes = self.shapes(in_shape)
        return shapes[-1][2] if shapes else tuple(int(s) for s in in_shape)

    def shapes(self, in_shape: tuple) -> list[tuple[str, Layer, tuple]]:
        """``(path, layer, per-sample output shape)`` for every leaf layer, for a per-sample input shape."""
        out: list[tuple[str, Layer, tuple]] = []
        self._shapes(tuple(int(s) for s in in_shape), ROOT, out)
        return out

    def _shapes(self, shape: tuple, path: str, out: list) -> tuple:
        # nested Chains are sequential: descend; other containers (SkipConnection, Parallel) combine their
        # children's outputs, so they compute their own shape (naming the failing child in the error)
        for frag, layer in self.children().items():
            sub = join(path, frag)
            if isinstance(layer, Chain):
                shape = layer._shapes(shape, sub, out)
                continue
            try:
                shape = tuple(layer.output_shape(shape))
            except ValueError as err:
                raise ValueError(f"{sub} {err}") from None
            out.append((sub, layer, shape))
        return shape

    def _prepare(self, x: Any) -> tuple[np.ndarray, bool]:
        """Convert input, treat a 1-D array as one sample (Flux ``model(rand(784))``), validate shapes."""
        x = check_array("Chain input", x)
        single = x.ndim == 1
        if single:
            x = x[None, :]
        if x.ndim == 0:
            raise ValueError("Chain input must be an array with a batch axis, e.g. (N, features)")
        self.output_shape(x.shape[1:])  # cheap; names the failing layer before any numpy error
        return x, single

    def __call__(self, x: Any) -> np.ndarray:
        """Inference forward. ``x`` is batch-first; a 1-D sample gives a 1-D output."""
        x, single = self._prepare(x)
        for layer in self.layers:
            x = layer(x)
        return x[0] if single else x

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x, single = self._prepare(x)
        caches = []
        for layer in self.layers:
            x, cache = layer.forward(x, train=train, rng=rng)
            caches.append(cache)
        return (x[0] if single else x), (caches, single)

    def backward(self, cache: Any, dy: np.ndarray, need_input_grad: bool = True
                 ) -> tuple[np.ndarray | None, Grads]:
        """Reverse pass. ``grads`` keys are the Flux paths of :meth:`params` (``"layers[2].weight"``).

        ``need_input_grad=False`` (training loops) returns ``dx=None`` and lets the first Dense/Conv skip
        computing its input gradient — a third of that layer's backward work.
        """
        caches, single = cache
        dy = np.asarray(dy)
        if single:
            dy = dy[None]
        grads: Grads = {}
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if i == 0 and not need_input_grad and getattr(layer, "input_grad_optional", False):
                dy, g = layer.backward(caches[i], dy, need_input_grad=False)
            else:
                dy, g = layer.backward(caches[i], dy)
            prefix = self._fragments()[i] + "."
            for name, arr in g.items():
                grads[prefix + name] = arr
        # restore forward order of keys (nice for printing; dicts keep insertion order)
        ordered = {k: grads[k] for k in self.params() if k in grads}
        ordered.update({k: v for k, v in grads.items() if k not in ordered})
        if dy is None or not need_input_grad:
            return None, ordered
        return (dy[0] if single else dy), ordered

    def batch_kind(self, train: bool) -> str | None:
        return self.children_batch_kind(train)

    def __repr__(self) -> str:
        if getattr(self, "names", None):
            return "Chain(" + ", ".join(f"{n} = {layer!r}" for n, layer in zip(self.names, self.layers)) + ")"
        return "Chain(" + ", ".join(repr(layer) for layer in self.layers) + ")"

    __str__ = __repr__

    def summary(self, input_shape: tuple | None = None) -> str:
        """Flux-``show``-like multi-line description; see :func:`pyflux_compress.model.summary.summary`."""
        from .summary import summary

        return summary(self, input_shape)
