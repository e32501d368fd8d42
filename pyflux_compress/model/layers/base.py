"""The ``Layer`` base class: the engine interface plus everything a layer declares about itself.

A layer file (``dense.py``, ``conv.py``, ...) subclasses :class:`Layer`, overrides what differs from the
defaults below and decorates the class with ``@register_layer`` (docs/ARCHITECTURE.md, "Add a layer").
The rest of the package reads only these declarations, never the class name.
"""
from __future__ import annotations

import abc
import copy as _copy
from typing import Any, Callable

import numpy as np

from ..activations import Activation, get_activation, identity
from ..init import glorot_uniform
from ..walk import map_layers

__all__ = ["Layer", "FunctionLayer", "Grads", "as_data", "float_dtype", "tuple_str", "init_fn", "bias_array",
           "activation_of", "svd_factors"]

Grads = dict[str, np.ndarray]


class Layer(abc.ABC):
    """Base class of every layer.

    Engine interface: ``layer(x)``, ``forward(x, train, rng) -> (y, cache)``, ``backward(cache, dy) -> (dx,
    grads)``, ``params()`` (live references, Flux order), ``output_shape(per_sample_shape)`` (ValueError naming
    the layer), ``copy()``, ``repr`` (Flux syntax). ``masks`` (param name -> bool array) is created on first use.

    Declarations (class attributes / methods, defaults here), read by syntax, JLD2, ONNX, compression:
    """

    #: Flux type name (printing, ``Flux.<name>`` JLD2 structs) and other names ``parse`` accepts
    flux_name: str = "Layer"
    flux_aliases: tuple[str, ...] = ()
    #: a Flux *function* used as a layer (``flatten``): a bare name in syntax, ``()`` in ``Flux.state``
    flux_function: bool = False
    #: ``Flux.state`` fields in Flux's field order -> Python attribute
    flux_fields: dict[str, str] = {}
    #: index of the activation among the Julia struct's type parameters (``Dense{F,...}`` -> 0), or None
    flux_activation_param: int | None = None
    #: ONNX op types whose nodes :meth:`from_onnx` reads
    onnx_ops: tuple[str, ...] = ()
    #: parameters compression works on by default (pruned, quantized, shared)
    compressible: tuple[str, ...] = ()
    #: output-channel axis of every per-output-channel array (THE rule: quantization scales, structured
    #: pruning, per-channel statistics all read it); ``in_axes``: the input-channel axis of arrays reading them
    out_axes: dict[str, int] = {}
    in_axes: dict[str, int] = {}
    #: role in structured pruning: "units" (produces/consumes units: sliced by slice_outputs/slice_inputs),
    #: "channelwise" (keeps channels apart; its out_axes arrays are sliced), "flatten", or None (blocks it)
    structured: str | None = None
    #: quantization role for layers pfc.quantize wraps by role rather than as Dense/Conv: "recurrent" (gate
    #: matrices), "table" (embedding lookups); None: by the weight's axes (compression/quantize.py)
    quantize_as: str | None = None
    #: True for containers (Chain, ...): their children() are walked, they are not leaves
    container: bool = False
    #: backward accepts ``need_input_grad=False`` (skips dx: the first layer of a training step)
    input_grad_optional: bool = False

    # ---- masks: in the instance dict, created lazily so subclasses need not call super().__init__() -----
    @property
    def masks(self) -> dict[str, np.ndarray]:
        d = self.__dict__.get("_masks")
        if d is None:
            d = self.__dict__["_masks"] = {}
        return d

    @masks.setter
    def masks(self, value: dict[str, np.ndarray]) -> None:
        self.__dict__["_masks"] = dict(value)

    # ---- engine --------------------------------------------------------------------------------------
    def __call__(self, x: Any) -> np.ndarray:
        """Inference forward (test mode)."""
        return self.forward(x, train=False)[0]

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def params(self) -> dict[str, np.ndarray]:
        return {}

    def output_shape(self, in_shape: tuple) -> tuple:
        return tuple(in_shape)

    def copy(self) -> "Layer":
        """Deep copy: arrays are copied; activations (singletons) are shared."""
        return _copy.deepcopy(self)

    def astype(self, dtype: Any) -> "Layer":
        """Return a copy whose floating-point array attributes (params, running stats) have ``dtype``."""
        def cast(path: str, layer: Any) -> Any:
            for key, val in list(vars(layer).items()):
                if isinstance(val, np.ndarray) and val.dtype.kind == "f":
                    setattr(layer, key, val.astype(dtype))
                elif isinstance(val, Layer) and not isinstance(val, Activation):   # a held cell (LSTM.cell)
                    setattr(layer, key, val.astype(dtype))
            return layer

        return map_layers(cast, self.copy())

    def nparams(self) -> int:
        """Number of trainable scalars."""
        return int(sum(p.size for p in self.params().values()))

    # data dtype of this layer: that of its first parameter, float32 for parameter-free layers
    def _dtype(self) -> np.dtype:
        for p in self.params().values():
            return p.dtype
        return np.dtype(np.float32)

    def _err(self, msg: str) -> ValueError:
        return ValueError(f"{self!r} {msg}")

    # ---- tree (Functors-like) ------------------------------------------------------------------------
    def children(self) -> dict[str, "Layer"]:
        """Ordered ``{path fragment: child}`` (``"layers[1]"``, ``"connection"``); empty for leaves."""
        return {}

    def with_children(self, children: dict[str, "Layer"]) -> "Layer":
        """A new layer like this one with ``children`` (same keys as :meth:`children`) in their place."""
        return self

    # ---- Flux syntax ---------------------------------------------------------------------------------
    @classmethod
    def from_syntax(cls, call: Any) -> "Layer":
        """Build from a parsed call (``pyflux_compress.model.syntax.Call``); ``repr`` is the inverse."""
        raise ValueError(f"{cls.flux_name} cannot be written in Flux syntax")

    def julia(self) -> str:
        """Julia constructor text (Flux syntax evaluates in Julia as is)."""
        return repr(self)

    # ---- Flux.state / JLD2 ---------------------------------------------------------------------------
    def flux_state(self) -> dict[str, Any]:
        """``Flux.state`` field values by Flux name, in Flux's order (arrays, numbers, tuples, None, layers)."""
        return {jname: getattr(self, attr, None) for jname, attr in self.flux_fields.items()}

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable[[Any, str], Any]) -> "Layer":
        """A layer of the right sizes from Flux field values (a JLD2 struct or a state tree); the loader copies
        the arrays in afterwards. The activation field holds an :class:`Activation` or ``()`` (unknown).
        ``build(value, path_fragment)`` builds a child (containers only). ValueError if the fields do not fit."""
        raise ValueError(f"{cls.flux_name} cannot be rebuilt from a Flux struct or state")

    # ---- batches (train/parallel.py shards a batch over threads only where every layer allows it) -----------
    #: how this class treats the samples of a batch, declared by each class for itself (a subclass, e.g. a
    #: compressed layer, does not inherit it): "independent" (every sample on its own, nothing mutated),
    #: "inference" (independent at inference only: BatchNorm's batch statistics), None (needs the whole batch)
    batch_mode: str | None = None

    def batch_kind(self, train: bool) -> str | None:
        """How a batch may be cut into shards through this layer: ``"plain"``, ``"random"`` (draws from the RNG,
        so each shard needs its own generator) or None (the layer must see the whole batch)."""
        mode = type(self).__dict__.get("batch_mode")
        if mode == "independent" or (mode == "inference" and not train and getattr(self, "active", None) is not True):
            return "plain"
        return None

    def children_batch_kind(self, train: bool) -> str | None:
        """:meth:`batch_kind` of a container whose own combination is per sample: the children's, combined."""
        kinds = [child.batch_kind(train) for child in self.children().values()]
        return None if None in kinds else ("random" if "random" in kinds else "plain")

    @classmethod
    def yields_in_bare_state(cls, fields: dict[str, Any]) -> bool:
        """Whether a bare ``Flux.state`` tree (no type names) whose ``fields`` another layer also explains should
        go to that other layer: only where both compute the same at inference (default: never)."""
        return False

    # ---- ONNX ----------------------------------------------------------------------------------------
    def to_onnx(self, g: Any, x: str) -> str:
        """Append this layer's nodes to graph builder ``g`` reading tensor ``x``; return the output tensor."""
        raise NotImplementedError

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "Layer | None":
        """Build from an ONNX ``node`` of one of ``onnx_ops`` (``r``: the importer's reader helpers)."""
        raise NotImplementedError

    # ---- structured pruning --------------------------------------------------------------------------
    def take(self, name: str, index: np.ndarray, axis: int) -> None:
        """``self.<name> = take(self.<name>, index, axis)`` (and its mask), if the array exists."""
        arr = getattr(self, name, None)
        if arr is None:
            return
        setattr(self, name, np.ascontiguousarray(np.take(arr, index, axis=axis)))
        if name in self.masks:
            self.masks[name] = np.ascontiguousarray(np.take(self.masks[name], index, axis=axis))

    def slice_outputs(self, keep: np.ndarray) -> None:
        """Keep only output channels ``keep`` (in place)."""
        for name, axis in self.out_axes.items():
            self.take(name, keep, axis)

    def slice_inputs(self, keep: np.ndarray) -> None:
        """Keep only input channels ``keep`` (in place)."""
        for name, axis in self.in_axes.items():
            self.take(name, keep, axis)


# activations implement the same interface; this makes isinstance(relu, Layer) true without a cycle
Layer.register(Activation)


class FunctionLayer(Layer):
    """A Julia function used as a Chain element (``flatten``, ``laststep``, ``first``): no fields, no arguments,
    one shared instance (:meth:`the`), printed and parsed as its bare name, ``()`` in ``Flux.state``."""

    flux_function = True

    @classmethod
    def the(cls) -> "FunctionLayer":
        """The shared instance (the module-level ``flatten``, ``laststep``, ``first``)."""
        if "_the" not in cls.__dict__:
            cls._the = cls()
        return cls.__dict__["_the"]

    def __repr__(self) -> str:
        return self.flux_name

    @classmethod
    def from_syntax(cls, call: Any) -> "Layer":
        if call.args or call.kwargs:
            raise ValueError(f"{cls.flux_name} takes no arguments in a Chain")
        return cls.the()

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "Layer":
        return cls.the()


def as_data(x: Any, dtype: Any, who: Any) -> np.ndarray:
    """Convert input data to ``dtype`` with an error naming the layer instead of a numpy traceback."""
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who!r}: input must be a numeric array ({err})") from None


def float_dtype(x: Any) -> np.dtype:
    dt = np.asarray(x).dtype
    return dt if dt.kind == "f" else np.dtype(np.float32)


def tuple_str(t: tuple) -> str:
    """Flux ``_maybetuple_string``: ``2`` if every entry is 2, else the tuple."""
    return str(t[0]) if all(v == t[0] for v in t) else str(tuple(t))


def init_fn(init: Callable | None) -> Callable:
    return glorot_uniform if init is None else init


def bias_array(bias: Any, n: int, dtype: Any, who: str) -> np.ndarray | None:
    """Flux's ``bias`` argument: True -> zeros, False -> no bias, an array -> that array (shape checked)."""
    if isinstance(bias, (bool, np.bool_)):
        return np.zeros(n, dtype=dtype) if bias else None
    b = np.asarray(bias)
    if b.shape != (n,):
        raise ValueError(f"{who}: bias must have shape ({n},); got {b.shape}")
    return b.astype(dtype, copy=False)


def activation_of(v: Any) -> Activation:
    """A Flux field value for σ/λ -> the activation (``()``/None: unknown -> identity)."""
    return v if isinstance(v, Activation) else identity if v in (None, ()) else get_activation(v)


def thin_svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.linalg.svd(w, full_matrices=False)`` in float64: ``(u (m, p), s (p,) descending, vt (p, n))``."""
    return np.linalg.svd(np.asarray(w, dtype=np.float64), full_matrices=False)


def svd_factors(w: np.ndarray, r: int, svd: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``r`` truncated SVD of ``w (m, n)`` split evenly: ``(U_r S_r^½ (m, r), S_r^½ V_r^T (r, n))`` in
    ``w``'s dtype, so ``left @ right`` is the best rank-``r`` approximation. ``svd``: a thin-SVD function such
    as ``pfc.lowrank``'s backend kernel (default :func:`thin_svd`). The ``factorise(r)`` of low-rank layers."""
    u, s, vt = (svd or thin_svd)(w)
    root = np.sqrt(s[:r])
    return (np.ascontiguousarray((u[:, :r] * root).astype(w.dtype)),
            np.ascontiguousarray((root[:, None] * vt[:r]).astype(w.dtype)))
