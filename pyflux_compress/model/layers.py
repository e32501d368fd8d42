"""Flux layers on NumPy: ``Dense``, ``Conv``, ``CrossCor``, ``MaxPool``, ``MeanPool``, ``GlobalMeanPool``,
``Flatten``/``flatten``, ``BatchNorm``, ``Dropout``.

Every layer implements the contract in docs/ARCHITECTURE.md:

* ``layer(x)`` — inference forward on batch-first data (``(N, features)`` or ``(N, C, H, W)``);
* ``forward(x, train=False, rng=None) -> (y, cache)`` and ``backward(cache, dy) -> (dx, grads)``;
* ``params()`` — trainable arrays by Flux field name (live references, Flux field order);
* ``output_shape(per_sample_shape)`` — shape inference that raises ``ValueError`` naming the layer;
* ``copy()`` — a deep copy; ``repr`` — Flux syntax that ``pyflux_compress.parse`` reads back.

Parameters have Flux's shapes (Dense ``(out, in)``, Conv ``(kw, kh, cin, cout)``) and are float32 unless built
from float64 arrays (``layer.astype(np.float64)`` is used by gradient checks). A layer computes in the dtype
of its parameters.
"""
from __future__ import annotations

import abc
import copy as _copy
import numbers
from typing import Any, Callable

import numpy as np

from .._validate import check_bool, check_fraction, check_int, check_positive, check_rng, check_tuple
from . import _conv
from .activations import Activation, get_activation, identity
from .init import glorot_uniform

__all__ = ["Layer", "Dense", "Conv", "CrossCor", "MaxPool", "MeanPool", "GlobalMeanPool", "Flatten", "flatten",
           "BatchNorm", "Dropout", "SamePad"]

Grads = dict[str, np.ndarray]


class Layer(abc.ABC):
    """Base class of every layer (see module docstring for the interface).

    Subclasses set ``flux_name`` / ``flux_fields`` and override ``forward``, ``backward``, ``params``,
    ``output_shape`` and ``__repr__``. ``masks`` (param name -> bool array) is created on first use.
    A new layer needs no registration: ``Chain``, ``fit``, ``copy`` and ``astype`` only use this interface.
    ``Chain`` calls ``output_shape`` before every forward pass (to name the failing layer), so a layer that
    changes the shape must override it.
    """

    flux_name: str = "Layer"
    flux_fields: dict[str, str] = {}

    # masks live in the instance dict, created lazily so subclasses need not call super().__init__()
    @property
    def masks(self) -> dict[str, np.ndarray]:
        d = self.__dict__.get("_masks")
        if d is None:
            d = self.__dict__["_masks"] = {}
        return d

    @masks.setter
    def masks(self, value: dict[str, np.ndarray]) -> None:
        self.__dict__["_masks"] = dict(value)

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
        new = self.copy()
        for obj in _iter_layers(new):
            for key, val in list(vars(obj).items()):
                if isinstance(val, np.ndarray) and val.dtype.kind == "f":
                    setattr(obj, key, val.astype(dtype))
        return new

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


# activations implement the same interface; this makes isinstance(relu, Layer) true without a cycle
Layer.register(Activation)


def _iter_layers(obj: Any):
    yield obj
    for sub in getattr(obj, "layers", ()) or ():
        yield from _iter_layers(sub)


def _as_data(x: Any, dtype: Any, who: "Layer") -> np.ndarray:
    """Convert input data to ``dtype`` with an error naming the layer instead of a numpy traceback."""
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who!r}: input must be a numeric array ({err})") from None


def _float_dtype(x: Any) -> np.dtype:
    dt = np.asarray(x).dtype
    return dt if dt.kind == "f" else np.dtype(np.float32)


def _tuple_str(t: tuple) -> str:
    """Flux ``_maybetuple_string``: ``2`` if every entry is 2, else the tuple."""
    return str(t[0]) if all(v == t[0] for v in t) else str(tuple(t))


def _init_fn(init: Callable | None) -> Callable:
    return glorot_uniform if init is None else init


def _bias_array(bias: Any, n: int, dtype: Any, who: str) -> np.ndarray | None:
    """Flux's ``bias`` argument: True -> zeros, False -> no bias, an array -> that array (shape checked)."""
    if isinstance(bias, (bool, np.bool_)):
        return np.zeros(n, dtype=dtype) if bias else None
    b = np.asarray(bias)
    if b.shape != (n,):
        raise ValueError(f"{who}: bias must have shape ({n},); got {b.shape}")
    return b.astype(dtype, copy=False)


class SamePad:
    """Flux ``SamePad()``: pad so that a stride-1 layer keeps the spatial size (``pad="same"`` also works)."""

    def __repr__(self) -> str:
        return "SamePad()"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SamePad)

    __hash__ = object.__hash__


# ---------------------------------------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------------------------------------

class Dense(Layer):
    """Fully connected layer ``y = σ.(x @ weight.T .+ bias)`` with Flux's ``Dense`` fields.

    Forms: ``Dense(784, 128, relu)``, ``Dense((784, 128), relu)`` (Python for ``784 => 128``), and Flux's
    ``Dense(weight, bias, σ)`` from arrays. ``bias=False`` means no bias (Flux ``bias=false``).
    ``init(rng, out, in)`` defaults to Flux's ``glorot_uniform``; ``rng``/``seed`` make it deterministic.

    Input ``(..., in)`` (usually ``(N, in)``; a 1-D sample works too), output ``(..., out)``.
    """

    flux_name = "Dense"
    flux_fields = {"weight": "weight", "bias": "bias", "σ": "activation"}

    def __init__(self, in_features: Any, out_features: Any = None, activation: Any = identity, *,
                 bias: Any = True, init: Callable | None = None, rng: np.random.Generator | None = None,
                 seed: int | None = None) -> None:
        if not isinstance(in_features, (tuple, list, numbers.Integral)):
            # Flux's Dense(W, b, σ): weight array, then bias (bool or array), then activation
            try:
                weight = np.asarray(in_features)
            except (TypeError, ValueError):
                weight = np.empty(0)
            if weight.ndim != 2 or weight.dtype.kind not in "fiu":
                raise ValueError(f"Dense: expected sizes Dense(in, out) or a 2-D (out, in) weight array; "
                                 f"got {in_features!r}")
            if weight.dtype.kind != "f":
                weight = weight.astype(np.float32)
            if out_features is not None and not isinstance(out_features, (Activation, str)):
                bias = out_features
            elif out_features is not None:
                activation = out_features
            self.weight = weight
        else:
            if isinstance(in_features, (tuple, list)):  # Dense((in, out), σ)
                if len(in_features) != 2:
                    raise ValueError(f"Dense: expected (in, out); got {in_features!r}")
                if out_features is not None:
                    activation = out_features
                in_features, out_features = in_features
            if out_features is None:
                raise ValueError("Dense: give both sizes, e.g. Dense(784, 128) or Dense((784, 128))")
            n_in = check_int("Dense in", in_features, min=1)
            n_out = check_int("Dense out", out_features, min=1)
            gen = check_rng(seed, rng)
            self.weight = np.asarray(_init_fn(init)(gen, n_out, n_in), dtype=np.float32)
        self.bias = _bias_array(bias, self.weight.shape[0], self.weight.dtype, "Dense")
        self.activation: Activation = get_activation(activation)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight} if self.bias is None else {"weight": self.weight, "bias": self.bias}

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = _as_data(x, self.weight.dtype, self)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise self._err(f"expects {self.in_features} input features, got input of shape {x.shape}")
        z = x @ self.weight.T
        if self.bias is not None:
            z += self.bias
        y = self.activation._fn(z) if self.activation is not identity else z
        return y, (x, z, y)

    def backward(self, cache: Any, dy: np.ndarray, need_input_grad: bool = True
                 ) -> tuple[np.ndarray | None, Grads]:
        """``need_input_grad=False`` skips ``dx`` (returned as None): a model's first layer never needs it."""
        x, z, y = cache
        dz = self.activation.grad(z, y, dy) if self.activation is not identity else dy
        dz2 = dz.reshape(-1, self.out_features)
        grads = {"weight": dz2.T @ x.reshape(-1, self.in_features)}
        if self.bias is not None:
            grads["bias"] = dz2.sum(axis=0)
        return (dz @ self.weight if need_input_grad else None), grads

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) == 0 or in_shape[-1] != self.in_features:
            got = in_shape[-1] if len(in_shape) == 1 else f"per-sample shape {in_shape}"
            hint = " (add flatten before it?)" if len(in_shape) > 1 else ""
            raise self._err(f"expects {self.in_features} input features, got {got}{hint}")
        return in_shape[:-1] + (self.out_features,)

    def __repr__(self) -> str:
        s = f"Dense({self.in_features} => {self.out_features}"
        if self.activation is not identity:
            s += f", {self.activation!r}"
        if self.bias is None:
            s += "; bias=false"
        return s + ")"


# ---------------------------------------------------------------------------------------------------------
# Conv / CrossCor
# ---------------------------------------------------------------------------------------------------------

def _conv_pad(pad: Any, k: tuple[int, int], dilation: tuple[int, int], who: str) -> tuple[int, int, int, int]:
    """Flux pad forms -> (w_lo, w_hi, h_lo, h_hi): int, (pw, ph), 4-tuple, "same"/SamePad()."""
    if isinstance(pad, SamePad) or (isinstance(pad, str) and pad.lower() == "same"):
        return _conv.same_pad(k, dilation)  # type: ignore[return-value]
    if isinstance(pad, (tuple, list)) and len(pad) == 2:
        pw, ph = check_tuple(f"{who} pad", pad, 2, min=0)
        return (pw, pw, ph, ph)  # NNlib: one entry per spatial dim means symmetric padding
    if isinstance(pad, (tuple, list)):
        return check_tuple(f"{who} pad", pad, 4, min=0)  # type: ignore[return-value]
    if isinstance(pad, str):
        raise ValueError(f"{who}: pad must be an int, a 2- or 4-tuple, 'same' or SamePad(); got {pad!r}")
    return check_tuple(f"{who} pad", pad, 4, min=0)  # type: ignore[return-value]


class Conv(Layer):
    """2-D convolution with Flux's semantics: a *true* convolution (NNlib flips the kernel).

    ``Conv((kw, kh), (cin, cout), σ; stride=1, pad=0, dilation=1, bias=True)`` (Python for
    ``Conv((3, 3), 1 => 8, relu)``), also ``Conv((3, 3), 1, 8, relu)`` and Flux's ``Conv(weight, bias, σ)``.
    Input ``(N, cin, H, W)``, output ``(N, cout, Ho, Wo)``. Tuples are in Flux order (W first):
    ``stride (sw, sh)``, ``dilation (dw, dh)``, ``pad (w_lo, w_hi, h_lo, h_hi)``; ``pad`` also accepts an int,
    ``(pw, ph)``, ``"same"`` or ``SamePad()``. Only ``groups=1`` is supported.
    """

    flux_name = "Conv"
    flux_fields = {"σ": "activation", "weight": "weight", "bias": "bias", "stride": "stride", "pad": "pad",
                   "dilation": "dilation", "groups": "groups"}
    _flip = True

    def __init__(self, k: Any, ch: Any = None, *rest: Any, stride: Any = 1, pad: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: Any = True, init: Callable | None = None,
                 rng: np.random.Generator | None = None, seed: int | None = None,
                 activation: Any = None) -> None:
        who = self.flux_name
        rest = list(rest)
        if isinstance(k, np.ndarray):  # Flux's Conv(weight, bias, σ; ...)
            weight = k
            if weight.ndim != 4:
                raise ValueError(f"{who}: weight must have shape (kw, kh, cin, cout); got {weight.shape}")
            if weight.dtype.kind != "f":
                weight = weight.astype(np.float32)
            if ch is not None and not isinstance(ch, (Activation, str)):
                bias = ch
            elif ch is not None:
                rest.insert(0, ch)
            act = rest.pop(0) if rest else activation
            if rest:
                raise ValueError(f"{who}: too many positional arguments")
            self.weight = weight
            kk = weight.shape[:2]
        else:
            kk = check_tuple(f"{who} kernel size k", tuple(k) if isinstance(k, list) else k, 2, min=1)
            if isinstance(ch, (tuple, list)):  # Conv(k, (cin, cout), σ)
                if len(ch) != 2:
                    raise ValueError(f"{who}: channels must be (cin, cout); got {ch!r}")
                cin, cout = ch
            else:  # Conv(k, cin, cout, σ)
                if not rest:
                    raise ValueError(f"{who}: give channels as (cin, cout) or cin, cout; got only {ch!r}")
                cin, cout = ch, rest.pop(0)
            act = rest.pop(0) if rest else activation
            if rest:
                raise ValueError(f"{who}: too many positional arguments")
            cin = check_int(f"{who} cin", cin, min=1)
            cout = check_int(f"{who} cout", cout, min=1)
            gen = check_rng(seed, rng)
            self.weight = np.asarray(_init_fn(init)(gen, kk[0], kk[1], cin, cout), dtype=np.float32)
        if check_int(f"{who} groups", groups, min=1) != 1:
            raise ValueError(f"{who}: only groups=1 is supported; got groups={groups}")
        self.groups = 1
        self.activation: Activation = get_activation(act)
        self.bias = _bias_array(bias, self.weight.shape[3], self.weight.dtype, who)
        self.stride = check_tuple(f"{who} stride", stride, 2, min=1)
        self.dilation = check_tuple(f"{who} dilation", dilation, 2, min=1)
        self.pad = _conv_pad(pad, tuple(kk), self.dilation, who)

    @property
    def k(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.weight.shape[:2])  # type: ignore[return-value]

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[2])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[3])

    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight} if self.bias is None else {"weight": self.weight, "bias": self.bias}

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = _as_data(x, self.weight.dtype, self)
        if x.ndim != 4:
            raise self._err(f"expects input of shape (N, C, H, W); got {x.shape}")
        self.output_shape(x.shape[1:])
        z, ccache = _conv.conv2d_forward(x, self.weight, self.bias, self.stride, self.pad, self.dilation,
                                         flip=self._flip)
        y = self.activation._fn(z) if self.activation is not identity else z
        return y, (ccache, z, y)

    def backward(self, cache: Any, dy: np.ndarray, need_input_grad: bool = True
                 ) -> tuple[np.ndarray | None, Grads]:
        """``need_input_grad=False`` skips ``dx`` (returned as None): a model's first layer never needs it."""
        ccache, z, y = cache
        dz = self.activation.grad(z, y, dy) if self.activation is not identity else dy
        dx, dw, db = _conv.conv2d_backward(ccache, dz, need_dx=need_input_grad)
        grads = {"weight": dw}
        if db is not None:
            grads["bias"] = db
        return dx, grads

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise self._err(f"expects per-sample input (C, H, W); got {in_shape}")
        c, h, w = in_shape
        if c != self.in_channels:
            raise self._err(f"expects {self.in_channels} input channels, got {c}")
        kw, kh = self.k
        ho = _conv.out_size(h, kh, self.stride[1], self.pad[2], self.pad[3], self.dilation[1])
        wo = _conv.out_size(w, kw, self.stride[0], self.pad[0], self.pad[1], self.dilation[0])
        if ho < 1 or wo < 1:
            raise self._err(f"input {h}x{w} (HxW) is smaller than its (dilated) kernel")
        return (self.out_channels, ho, wo)

    def __repr__(self) -> str:
        s = f"{self.flux_name}({self.k}, {self.in_channels} => {self.out_channels}"
        if self.activation is not identity:
            s += f", {self.activation!r}"
        if any(self.pad):
            s += f", pad={_tuple_str(self.pad)}"
        if any(v != 1 for v in self.stride):
            s += f", stride={_tuple_str(self.stride)}"
        if any(v != 1 for v in self.dilation):
            s += f", dilation={_tuple_str(self.dilation)}"
        if self.bias is None:
            s += ", bias=false"
        return s + ")"


class CrossCor(Conv):
    """Like :class:`Conv` but a cross-correlation (kernel not flipped), as Flux's ``CrossCor``."""

    flux_name = "CrossCor"
    flux_fields = {"σ": "activation", "weight": "weight", "bias": "bias", "stride": "stride", "pad": "pad",
                   "dilation": "dilation"}
    _flip = False


# ---------------------------------------------------------------------------------------------------------
# Pooling, flatten
# ---------------------------------------------------------------------------------------------------------

class _Pool(Layer):
    flux_fields = {"k": "k", "pad": "pad", "stride": "stride"}
    _mode = "max"

    def __init__(self, k: Any, *, pad: Any = 0, stride: Any = None) -> None:
        who = self.flux_name
        self.k = check_tuple(f"{who} k", tuple(k) if isinstance(k, list) else k, 2, min=1)
        self.stride = self.k if stride is None else check_tuple(f"{who} stride", stride, 2, min=1)
        self.pad = _conv_pad(pad, self.k, (1, 1), who)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = _as_data(x, _float_dtype(x), self)
        if x.ndim != 4:
            raise self._err(f"expects input of shape (N, C, H, W); got {x.shape}")
        self.output_shape(x.shape[1:])
        return _conv.pool2d_forward(x, self.k, self.stride, self.pad, self._mode)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        return _conv.pool2d_backward(cache, dy), {}

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise self._err(f"expects per-sample input (C, H, W); got {in_shape}")
        c, h, w = in_shape
        kw, kh = self.k
        ho = _conv.out_size(h, kh, self.stride[1], self.pad[2], self.pad[3])
        wo = _conv.out_size(w, kw, self.stride[0], self.pad[0], self.pad[1])
        if ho < 1 or wo < 1:
            raise self._err(f"input {h}x{w} (HxW) is smaller than the pooling window")
        return (c, ho, wo)

    def __repr__(self) -> str:
        s = f"{self.flux_name}({self.k}"
        if any(self.pad):
            s += f", pad={_tuple_str(self.pad)}"
        if self.stride != self.k:
            s += f", stride={_tuple_str(self.stride)}"
        return s + ")"


class MaxPool(_Pool):
    """Max pooling over windows ``k = (kw, kh)``; ``stride`` defaults to ``k``; padding is ignored (-inf)."""

    flux_name = "MaxPool"
    _mode = "max"


class MeanPool(_Pool):
    """Mean pooling over windows ``k = (kw, kh)``; ``stride`` defaults to ``k``; divides by ``kw*kh``."""

    flux_name = "MeanPool"
    _mode = "mean"


class GlobalMeanPool(Layer):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C, 1, 1)`` (Flux keeps the singleton dims)."""

    flux_name = "GlobalMeanPool"
    flux_fields: dict[str, str] = {}

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = _as_data(x, _float_dtype(x), self)
        if x.ndim < 3:
            raise self._err(f"expects input (N, C, spatial...); got {x.shape}")
        axes = tuple(range(2, x.ndim))
        return x.mean(axis=axes, keepdims=True), x.shape

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        shape = cache
        m = int(np.prod(shape[2:]))
        return np.broadcast_to(dy / np.asarray(m, dtype=dy.dtype), shape).copy(), {}

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) < 2:
            raise self._err(f"expects per-sample input (C, spatial...); got {in_shape}")
        return (in_shape[0],) + (1,) * (len(in_shape) - 1)

    def __repr__(self) -> str:
        return "GlobalMeanPool()"


class Flatten(Layer):
    """Flux's ``flatten``: ``(N, ...) -> (N, prod(...))``.

    Flux flattens WHCN column-major; on our NCHW arrays (dims reversed) that is exactly the C-order
    ``x.reshape(N, -1)`` (tests/test_layers.py proves it), so no transpose is needed.
    """

    flux_name = "flatten"
    flux_fields: dict[str, str] = {}

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = _as_data(x, _float_dtype(x), self)
        if x.ndim < 1:
            raise self._err("expects a batch of samples")
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        return dy.reshape(cache), {}

    def output_shape(self, in_shape: tuple) -> tuple:
        return (int(np.prod(tuple(in_shape), dtype=np.int64)),)

    def __repr__(self) -> str:
        return "flatten"


#: Flux's ``flatten`` function, usable directly as a Chain element
flatten = Flatten()


# ---------------------------------------------------------------------------------------------------------
# BatchNorm, Dropout
# ---------------------------------------------------------------------------------------------------------

class BatchNorm(Layer):
    """Flux ``BatchNorm(chs, λ; eps=1f-5, momentum=0.1f0, affine=true, track_stats=true, active=nothing)``.

    Normalises over every axis except numpy axis 1 (channels; Flux's dim N-1), then ``λ.(γ .* x̂ .+ β)``.
    Batch statistics are used when ``active`` is True, or in training (``train=True``) unless ``active`` is
    False, or always when ``track_stats=False``; otherwise the running ``mu``/``sigma2``. Whenever batch
    statistics are used and ``track_stats`` is on, the running stats are updated as Flux does::

        mu     = (1 - momentum) * mu     + momentum * batch_mean
        sigma2 = (1 - momentum) * sigma2 + momentum * m/(m-1) * batch_var   # m = elements per channel
    """

    flux_name = "BatchNorm"
    flux_fields = {"λ": "activation", "β": "beta", "γ": "gamma", "μ": "mu", "σ²": "sigma2", "ϵ": "eps",
                   "momentum": "momentum", "affine": "affine", "track_stats": "track_stats", "active": "active",
                   "chs": "chs"}

    def __init__(self, chs: int, activation: Any = identity, *, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_stats: bool = True, active: bool | None = None) -> None:
        self.chs = check_int("BatchNorm chs", chs, min=1)
        self.activation: Activation = get_activation(activation)
        self.eps = check_positive("BatchNorm eps", eps)
        self.momentum = check_fraction("BatchNorm momentum", momentum, 0.0, 1.0)
        self.affine = check_bool("BatchNorm affine", affine)
        self.track_stats = check_bool("BatchNorm track_stats", track_stats)
        self.active = None if active is None else check_bool("BatchNorm active", active)
        self.beta = np.zeros(self.chs, np.float32) if self.affine else None
        self.gamma = np.ones(self.chs, np.float32) if self.affine else None
        self.mu = np.zeros(self.chs, np.float32) if self.track_stats else None
        self.sigma2 = np.ones(self.chs, np.float32) if self.track_stats else None

    def params(self) -> dict[str, np.ndarray]:
        return {"beta": self.beta, "gamma": self.gamma} if self.affine else {}

    def state(self) -> dict[str, np.ndarray]:
        """Non-trainable running statistics (Flux ``μ``, ``σ²``)."""
        return {"mu": self.mu, "sigma2": self.sigma2} if self.track_stats else {}

    def _dtype(self) -> np.dtype:
        for arr in (self.gamma, self.mu):
            if arr is not None:
                return arr.dtype
        return np.dtype(np.float32)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = _as_data(x, self._dtype(), self)
        if x.ndim < 2 or x.shape[1] != self.chs:
            raise self._err(f"expects {self.chs} channels on axis 1, got input of shape {x.shape}")
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, self.chs) + (1,) * (x.ndim - 2)
        use_batch = self.active is True or (train and self.active is not False) or not self.track_stats
        if use_batch:
            mean = x.mean(axis=axes, keepdims=True)
            xc = x - mean
            var = np.mean(xc * xc, axis=axes, keepdims=True)  # biased (corrected=false), as Flux normalises
            if self.track_stats:
                m = x.size // self.chs
                mom = self.momentum
                corr = m / (m - 1) if m > 1 else 1.0
                self.mu = ((1 - mom) * self.mu + mom * mean.reshape(-1)).astype(self.mu.dtype)
                self.sigma2 = ((1 - mom) * self.sigma2 + mom * corr * var.reshape(-1)).astype(self.sigma2.dtype)
        else:
            xc = x - self.mu.reshape(bshape)
            var = self.sigma2.reshape(bshape)
        inv = 1 / np.sqrt(var + self.eps)
        xhat = xc * inv
        z = xhat * self.gamma.reshape(bshape) + self.beta.reshape(bshape) if self.affine else xhat
        y = self.activation._fn(z) if self.activation is not identity else z
        return y, (xhat, inv, z, y, use_batch, axes, bshape)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Grads]:
        xhat, inv, z, y, use_batch, axes, bshape = cache
        dz = self.activation.grad(z, y, dy) if self.activation is not identity else dy
        grads: Grads = {}
        if self.affine:
            grads["beta"] = dz.sum(axis=axes)
            grads["gamma"] = (dz * xhat).sum(axis=axes)
            dxhat = dz * self.gamma.reshape(bshape)
        else:
            dxhat = dz
        if use_batch:
            m = dz.size // self.chs
            s1 = dxhat.sum(axis=axes, keepdims=True)
            s2 = (dxhat * xhat).sum(axis=axes, keepdims=True)
            dx = (inv / m) * (m * dxhat - s1 - xhat * s2)
        else:
            dx = dxhat * inv
        return dx, grads

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        # per-sample shape: channels are its first axis (Flux dim N-1), or the only axis for (N, C) data
        if len(in_shape) == 0 or in_shape[0] != self.chs:
            got = in_shape[0] if in_shape else "no axis"
            raise self._err(f"expects {self.chs} channels, got {got} (per-sample shape {in_shape})")
        return in_shape

    def __repr__(self) -> str:
        s = f"BatchNorm({self.chs}"
        if self.activation is not identity:
            s += f", {self.activation!r}"
        if not self.affine:
            s += ", affine=false"
        if not self.track_stats:
            s += ", track_stats=false"
        if self.eps != 1e-5:
            s += f", eps={self.eps!r}"
        if self.momentum != 0.1:
            s += f", momentum={self.momentum!r}"
        if self.active is not None:
            s += f", active={str(self.active).lower()}"
        return s + ")"


class Dropout(Layer):
    """Flux ``Dropout(p)``: in training, zero each entry with probability ``p`` and scale the rest by
    ``1/(1-p)``; identity in test mode. ``active`` (None/True/False) overrides the mode like Flux's.
    ``rng`` is the layer's generator (Flux field ``rng``); ``forward(..., rng=)`` overrides it per call.
    ``dims`` are Flux dims (1-based, Flux order, so ``dims=1`` is our *last* axis) along which the mask varies;
    it is broadcast along the others. ``None`` is Flux's default ``dims=:`` (an independent mask per entry).
    """

    flux_name = "Dropout"
    flux_fields = {"p": "p", "dims": "dims", "active": "active", "rng": "rng"}

    def __init__(self, p: float, *, dims: Any = None, active: bool | None = None,
                 rng: np.random.Generator | None = None, seed: int | None = None) -> None:
        self.p = check_fraction("Dropout p", p, 0.0, 1.0)
        if dims is None or (isinstance(dims, str) and dims == ":"):
            self.dims: tuple[int, ...] | None = None
        else:
            items = dims if isinstance(dims, (tuple, list)) else (dims,)
            self.dims = tuple(check_int("Dropout dims", d, min=1) for d in items)
        self.active = None if active is None else check_bool("Dropout active", active)
        self.rng = check_rng(seed, rng)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = _as_data(x, _float_dtype(x), self)
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

    def __repr__(self) -> str:
        s = f"Dropout({self.p!r}"
        if self.dims is not None:
            s += f", dims={self.dims[0] if len(self.dims) == 1 else self.dims}"
        if self.active is not None:
            s += f", active={str(self.active).lower()}"
        return s + ")"
