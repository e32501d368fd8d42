"""Activation functions with NNlib's definitions, usable both as functions and as Chain elements.

Each activation is a singleton :class:`Activation`: ``relu(x)`` applies it element-wise, and ``Chain(Dense(4 => 3),
relu)`` uses it as a parameter-free layer (it implements the whole Layer interface; ``layers.Layer`` registers it
as a virtual subclass, so ``isinstance(relu, Layer)`` is True). Copies are the same object, so
``layer.activation is relu`` is a valid test everywhere.

Definitions follow NNlib (looked up in NNlib's ``src/activations.jl``):

* ``relu(x) = max(0, x)``; ``leakyrelu(x) = x > 0 ? x : 0.01x``; ``elu(x) = x >= 0 ? x : exp(x) - 1``
* ``σ(x) = 1 / (1 + exp(-x))`` (``sigmoid === σ``); ``swish(x) = x σ(x)``
* ``gelu === gelu_tanh``: ``0.5x (1 + tanh(√(2/π) (x + 0.044715x³)))`` (the tanh approximation)
* ``softmax`` over Flux ``dims=1`` = the last numpy axis of our batch-first arrays.

All functions preserve the floating dtype of their input (integer input becomes float32).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .registry import register_layer

__all__ = ["Activation", "relu", "sigmoid", "σ", "tanh", "softmax", "leakyrelu", "elu", "gelu", "swish",
           "identity", "ACTIVATIONS", "get_activation"]

# fn(x) -> y ; grad(x, y, dy) -> dx
ForwardFn = Callable[[np.ndarray], np.ndarray]
GradFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _as_float(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return x


class Activation:
    """A named element-wise (or, for softmax, row-wise) function with its derivative.

    Parameters
    ----------
    name : the Flux/NNlib name printed by ``repr`` (``"relu"``, ``"σ"``, ...).
    fn : ``y = fn(x)``, shape-preserving.
    grad : ``dx = grad(x, y, dy)`` — the vector-Jacobian product given the forward input and output.
    """

    # registry declarations (docs/ARCHITECTURE.md): a Flux function used as a layer, channel-wise
    flux_name = "activation"
    flux_fields: dict[str, str] = {}
    flux_function = True
    container = False
    structured = "channelwise"
    compressible: tuple[str, ...] = ()
    onnx_ops = ("Relu", "Sigmoid", "Tanh", "Softmax", "LeakyRelu", "Elu", "Gelu")

    def __init__(self, name: str, fn: ForwardFn, grad: GradFn, onnx: Callable[[Any, str], str] | None = None
                 ) -> None:
        self.name = name
        self._fn = fn
        self._grad = grad
        self._onnx = onnx  # (graph builder, input tensor name) -> output tensor name

    # ---- function use -------------------------------------------------------------------------------
    def __call__(self, x: Any) -> np.ndarray:
        """Apply to an array of any shape; returns a new array of the same shape and float dtype."""
        return self._fn(_as_float(x))

    def grad(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Return ``dL/dx`` from the forward input ``x``, output ``y`` and upstream gradient ``dy``."""
        return self._grad(x, y, dy)

    # ---- Layer interface ----------------------------------------------------------------------------
    @property
    def masks(self) -> dict[str, np.ndarray]:
        return {}  # no parameters, so nothing to mask (a fresh dict: the singleton is never mutated)

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, tuple]:
        x = _as_float(x)
        y = self._fn(x)
        return y, (x, y)

    def backward(self, cache: tuple, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x, y = cache
        return self._grad(x, y, dy), {}

    def params(self) -> dict[str, np.ndarray]:
        return {}

    def output_shape(self, in_shape: tuple) -> tuple:
        return tuple(in_shape)

    def copy(self) -> "Activation":
        return self

    # singletons: copy/deepcopy/pickle all resolve to the same object
    def __copy__(self) -> "Activation":
        return self

    def __deepcopy__(self, memo: dict) -> "Activation":
        return self

    def __reduce__(self) -> tuple:
        return (get_activation, (self.name,))

    def __repr__(self) -> str:
        return self.name

    def julia(self) -> str:
        return self.name  # the NNlib function

    def to_onnx(self, g: Any, x: str) -> str:
        """Append this activation's nodes (identity adds none); NotImplementedError if it has no ONNX form."""
        if self._onnx is None:
            raise NotImplementedError(self.name)
        return self._onnx(g, x)

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "Activation":
        """Relu/Sigmoid/Tanh, Softmax over the last axis, LeakyRelu/Elu with NNlib's alpha, tanh-Gelu."""
        op, attrs = node.op_type, r.attrs(node)
        if op == "Softmax" and attrs.get("axis", -1) not in (-1, 1):
            raise r.error(node, f"Softmax must be over the feature axis (-1); got axis {attrs.get('axis')}")
        if op == "Gelu" and attrs.get("approximate", b"none") not in ("tanh", b"tanh"):
            raise r.error(node, "only the tanh approximation of Gelu is NNlib's gelu")
        alpha = {"LeakyRelu": (attrs.get("alpha", 0.01), _LEAKY_A), "Elu": (attrs.get("alpha", 1.0), 1.0)}
        if op in alpha and not np.isclose(float(alpha[op][0]), alpha[op][1], rtol=1e-6, atol=0):
            raise r.error(node, f"alpha {alpha[op][0]} differs from NNlib's default {alpha[op][1]}")
        return {"Relu": relu, "Sigmoid": sigmoid, "Tanh": tanh, "Softmax": softmax, "LeakyRelu": leakyrelu,
                "Elu": elu, "Gelu": gelu}[op]


# ---- definitions ------------------------------------------------------------------------------------

def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _relu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * (x > 0)  # NNlib: relu'(0) = 0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # numerically stable in both tails: exp of a non-positive number only
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _sigmoid_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * y * (1 - y)


def _tanh_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * (1 - y * y)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _softmax_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


_LEAKY_A = 0.01  # NNlib leakyrelu_a


def _leakyrelu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, _LEAKY_A * x)


def _leakyrelu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * np.where(x > 0, 1, _LEAKY_A).astype(dy.dtype, copy=False)


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, np.expm1(np.minimum(x, 0)))


def _elu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * np.where(x >= 0, 1, y + 1)  # NNlib deriv_elu(Ω) = Ω >= 0 ? 1 : Ω + α


_GELU_A = 0.044715
_GELU_L = float(np.sqrt(2 / np.pi))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(_GELU_L * (x + _GELU_A * x ** 3)))


def _gelu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    t = np.tanh(_GELU_L * (x + _GELU_A * x ** 3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_L * (1 + 3 * _GELU_A * x * x))


def _swish(x: np.ndarray) -> np.ndarray:
    return x * _sigmoid(x)


def _swish_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    return dy * (s + y * (1 - s))  # d(xσ)/dx = σ + xσ(1-σ) = σ + y(1-σ)


# ---- ONNX forms: (graph builder g, input tensor x) -> output tensor ------------------------------------

def _onnx_op(op: str, **attrs: Any) -> Callable[[Any, str], str]:
    return lambda g, x: g.node(op, [x], **attrs)[0]


def _swish_onnx(g: Any, x: str) -> str:
    return g.node("Mul", [x, g.node("Sigmoid", [x])[0]], prefix="swish")[0]


def _gelu_onnx(g: Any, x: str) -> str:
    """NNlib's gelu (tanh form); ONNX has ``Gelu(approximate="tanh")`` only from opset 20: else composed."""
    if g.opset >= 20:
        return g.node("Gelu", [x], approximate="tanh")[0]
    c, k, half, one = (g.const(g.fresh(f"gelu_{n}"), np.array(v, np.float32)) for n, v in
                       (("c", _GELU_A), ("k", _GELU_L), ("half", 0.5), ("one", 1.0)))

    def op(name: str, a: str, b: str) -> str:
        return g.node(name, [a, b], prefix="gelu")[0]

    inner = op("Add", x, op("Mul", op("Mul", op("Mul", x, x), x), c))
    t = g.node("Tanh", [op("Mul", inner, k)], prefix="gelu")[0]
    return op("Mul", op("Mul", x, half), op("Add", t, one))


relu = Activation("relu", _relu, _relu_grad, _onnx_op("Relu"))
sigmoid = Activation("σ", _sigmoid, _sigmoid_grad, _onnx_op("Sigmoid"))  # Julia prints sigmoid as σ
σ = sigmoid
tanh = Activation("tanh", np.tanh, _tanh_grad, _onnx_op("Tanh"))
softmax = Activation("softmax", _softmax, _softmax_grad, _onnx_op("Softmax", axis=-1))  # NNlib dims=1
leakyrelu = Activation("leakyrelu", _leakyrelu, _leakyrelu_grad, _onnx_op("LeakyRelu", alpha=_LEAKY_A))
elu = Activation("elu", _elu, _elu_grad, _onnx_op("Elu", alpha=1.0))
gelu = Activation("gelu", _gelu, _gelu_grad, _gelu_onnx)
swish = Activation("swish", _swish, _swish_grad, _swish_onnx)
identity = Activation("identity", lambda x: x, lambda x, y, dy: dy, lambda g, x: x)
register_layer(Activation)

#: every name (incl. aliases) -> activation; the parser and checkpoint loader resolve names here
ACTIVATIONS: dict[str, Activation] = {
    "relu": relu, "σ": sigmoid, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax,
    "leakyrelu": leakyrelu, "elu": elu, "gelu": gelu, "gelu_tanh": gelu, "swish": swish,
    "identity": identity,
}


def get_activation(name_or_fn: Any) -> Activation:
    """Resolve an :class:`Activation` from itself, its name (``"relu"``, ``"σ"``, ``"NNlib.relu"``) or None.

    ``None`` means identity (Flux's default). Unknown names raise ``ValueError`` listing the known ones.
    """
    if name_or_fn is None:
        return identity
    if isinstance(name_or_fn, Activation):
        return name_or_fn
    if isinstance(name_or_fn, str):
        key = name_or_fn.rsplit(".", 1)[-1]  # accept qualified names: NNlib.relu, Flux.σ
        if key in ACTIVATIONS:
            return ACTIVATIONS[key]
        raise ValueError(f"unknown activation {name_or_fn!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    raise ValueError(f"activation must be an Activation (e.g. relu) or its name; got {name_or_fn!r}")
