"""Every activation NNlib exports, with NNlib's exact definitions, usable as functions and as Chain elements.

Each activation is an :class:`Activation`: ``relu(x)`` applies it element-wise, and ``Chain(Dense(4 => 3),
relu)`` uses it as a parameter-free layer (it implements the whole Layer interface; ``layers.Layer``
registers it as a virtual subclass, so ``isinstance(relu, Layer)`` is True). Copies are the same object, so
``layer.activation is relu`` is a valid test everywhere.

Definitions (NNlib 0.9 ``src/activations.jl``; ``Ω`` is the output, derivatives as NNlib's rrules)::

    σ = sigmoid     1 / (1 + exp(-x)), computed as exp(-|x|) without overflow         σ' = Ω(1 - Ω)
    sigmoid_fast    σ with exact 1 for x > 40 and 0 for x < -80
    hardσ           clamp((x + 3) / 6, 0, 1)                 (= hardsigmoid)
    logσ            -softplus(-x)                            (= logsigmoid)
    hardtanh        clamp(x, -1, 1)                          ' = (-1 < x < 1)
    tanh, tanh_fast tanh(x); tanh_fast is NNlib's Float32 rational approximation (<= 5 eps from tanh)
    relu            max(0, x)                                ' = (x > 0)
    leakyrelu       x > 0 ? x : a x, a = 0.01 (``leakyrelu(x, a)`` / ``leakyrelu.with_params(a)``)
    relu6           clamp(x, 0, 6)
    rrelu           leakyrelu(x, a), a ~ U(1/8, 1/3) drawn per element and call (random also at inference)
    elu             x >= 0 ? x : α (exp(x) - 1), α = 1        ' = Ω >= 0 ? 1 : Ω + α
    selu            λ (x > 0 ? x : α (exp(x) - 1)), λ = 1.0507009873554805, α = 1.6732632423543772
    celu            x >= 0 ? x : α (exp(x / α) - 1), α = 1
    gelu = gelu_tanh  0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))  (NNlib's gelu is the tanh form)
    gelu_erf        0.5 x (1 + erf(x / √2))  (the exact GELU)
    swish           x σ(x);  hardswish  x hardσ(x)
    lisht           x tanh(x);  mish  x tanh(softplus(x))
    softplus        log1p(exp(-|x|)) + max(x, 0)             ' = σ(x)
    softsign        x / (1 + |x|)
    logcosh         x + softplus(-2x) - log(2)               ' = tanh(x)
    tanhshrink      x - tanh(x)
    softshrink      x >= λ ? x - λ : (x <= -λ ? x + λ : 0), λ = 0.5
    trelu           x > θ ? x : 0, θ = 1                     (= thresholdrelu)
    softmax, logsoftmax  over Flux ``dims=1`` = the last numpy axis of our batch-first arrays
    identity

Parameters: ``leakyrelu``, ``elu``, ``celu``, ``softshrink``, ``trelu`` and ``rrelu`` take NNlib's extra
argument: ``pfc.leakyrelu(x, 0.2)`` applies it; ``pfc.leakyrelu.with_params(0.2)`` is the activation object
for a layer, printed (and parsed) as Flux's ``x -> leakyrelu(x, 0.2)``. JLD2 stores such a closure only as
an anonymous type (``Main.#1#2``), so models using one load with ``pfc.load(path, arch=...)``.

Every activation carries its ONNX translation (``to_onnx(g, x)``, standard ONNX ops at opset 17: Relu,
LeakyRelu, Elu, Selu, Celu, HardSigmoid, HardSwish, Softplus, Softsign, Shrink, Clip, Erf, ... or small
compositions of them) and its Julia expression (``julia()``). All functions preserve the floating dtype of
their input (integer input becomes float32).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .registry import register_layer

__all__ = ["Activation", "relu", "sigmoid", "σ", "tanh", "softmax", "leakyrelu", "elu", "gelu", "swish",
           "identity", "hardsigmoid", "hardσ", "hardtanh", "relu6", "rrelu", "selu", "celu", "gelu_tanh",
           "gelu_erf", "hardswish", "lisht", "mish", "softplus", "softsign", "logsigmoid", "logσ", "logcosh",
           "tanhshrink", "softshrink", "trelu", "thresholdrelu", "tanh_fast", "sigmoid_fast", "logsoftmax",
           "ACTIVATIONS", "get_activation"]

# fn(x, *params) -> y ; grad(x, y, dy, *params) -> dx ; onnx(g, x, *params) -> output tensor name
ForwardFn = Callable[..., np.ndarray]
GradFn = Callable[..., np.ndarray]
OnnxFn = Callable[..., None]


def _as_float(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return x


def _num(v: float) -> str:
    """A parameter as a Julia Float64 literal (``0.2``, ``1.0``, ``1e-05``; Julia reads all of them)."""
    return repr(float(v))


class Activation:
    """A named element-wise (or, for softmax, row-wise) function with its derivative and ONNX translation.

    Parameters
    ----------
    name : the Flux/NNlib name printed by ``repr`` (``"relu"``, ``"σ"``, ...).
    fn : ``y = fn(x, *params)``, shape-preserving.
    grad : ``dx = grad(x, y, dy, *params)`` — the vector-Jacobian product given forward input and output.
    onnx : ``onnx(g, x, *params) -> y`` appends the ONNX nodes computing it from tensor ``x`` to graph
        builder ``g`` and returns the output tensor name; None when there is no ONNX form.
    defaults : NNlib's default values of the extra parameters (``leakyrelu``: ``(0.01,)``).
    params : this instance's parameters (``with_params``); empty means the defaults.
    """

    # registry declarations (docs/ARCHITECTURE.md): a Flux function used as a layer, channel-wise
    flux_name = "activation"
    flux_fields: dict[str, str] = {}
    flux_function = True
    container = False
    structured = "channelwise"
    compressible: tuple[str, ...] = ()
    onnx_ops = ("Relu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu",
                "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Shrink", "Clip")

    def __init__(self, name: str, fn: ForwardFn, grad: GradFn, onnx: OnnxFn | None = None, *,
                 defaults: tuple = (), params: tuple = ()) -> None:
        self.name = name
        self._fn_raw = fn
        self._grad_raw = grad
        self._onnx = onnx
        self.defaults = tuple(defaults)
        self.params_ = tuple(params)

    # the parameters in effect (this instance's, else NNlib's defaults)
    @property
    def args(self) -> tuple:
        return self.params_ or self.defaults

    def _fn(self, x: np.ndarray) -> np.ndarray:
        return self._fn_raw(x, *self.args)

    def _grad(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self._grad_raw(x, y, dy, *self.args)

    # ---- function use -------------------------------------------------------------------------------
    def __call__(self, x: Any, *params: float) -> np.ndarray:
        """Apply to an array of any shape; NNlib's extra argument may follow (``leakyrelu(x, 0.2)``)."""
        if params:
            return self.with_params(*params)(x)
        return self._fn(_as_float(x))

    def grad(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Return ``dL/dx`` from the forward input ``x``, output ``y`` and upstream gradient ``dy``."""
        return self._grad(x, y, dy)

    def with_params(self, *params: float) -> "Activation":
        """This activation with NNlib's extra argument(s) set, e.g. ``leakyrelu.with_params(0.2)``.

        Returns a cached object (the same object for the same values), printed as ``x -> leakyrelu(x, 0.2)``.
        """
        if not self.defaults:
            raise ValueError(f"activation {self.name} takes no parameters; got {params!r}")
        if len(params) > len(self.defaults):
            raise ValueError(f"{self.name} takes at most {len(self.defaults)} parameter(s) "
                             f"{self.defaults!r}; got {params!r}")
        try:
            vals = tuple(float(p) for p in params) + self.defaults[len(params):]
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}: parameters must be numbers; got {params!r}") from None
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{self.name}: parameters must be finite; got {params!r}")
        base = _BASE.get(self.name, self)
        if vals == base.defaults:
            return base
        key = (base.name, vals)
        if key not in _PARAMETRIC:
            _PARAMETRIC[key] = Activation(base.name, base._fn_raw, base._grad_raw, base._onnx,
                                          defaults=base.defaults, params=vals)
        return _PARAMETRIC[key]

    # ---- exports ------------------------------------------------------------------------------------
    def to_onnx(self, g: Any, x: str) -> str:
        """Append this activation's ONNX nodes to graph builder ``g`` reading tensor ``x``; returns the output
        tensor (``x`` itself for identity). ValueError if it has no ONNX form (rrelu)."""
        if self._onnx is None:
            raise ValueError(f"activation {self!r} has no ONNX form (NNlib's {self.name} is random at inference)"
                             if self.name == "rrelu" else f"activation {self!r} has no ONNX form")
        return self._onnx(g, x, *self.args)

    def julia(self) -> str:
        """The Julia expression of this activation (NNlib's function, or the closure Flux users write)."""
        return repr(self)

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
        if self.params_:
            return (_with_params, (self.name, self.params_))
        return (get_activation, (self.name,))

    def __repr__(self) -> str:
        if self.params_:
            return f"x -> {self.name}(x, {', '.join(_num(v) for v in self.params_)})"
        return self.name


    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "Activation":
        """The activation of a single ONNX node (parameters such as LeakyRelu's alpha become NNlib's extra
        argument). Softmax/LogSoftmax must be over the feature axis; Gelu must be the tanh approximation."""
        op, attrs = node.op_type, r.attrs(node)
        if op in ("Softmax", "LogSoftmax") and attrs.get("axis", -1) not in (-1, 1):
            raise r.error(node, f"{op} must be over the feature axis (-1); got axis {attrs.get('axis')}")
        if op == "Gelu" and attrs.get("approximate", b"none") not in ("tanh", b"tanh"):
            raise r.error(node, "only the tanh approximation of Gelu is NNlib's gelu")
        if op == "Selu" and not (np.isclose(attrs.get("alpha", _SELU_A), _SELU_A, rtol=1e-6)
                                 and np.isclose(attrs.get("gamma", _SELU_L), _SELU_L, rtol=1e-6)):
            raise r.error(node, "Selu alpha/gamma differ from NNlib's selu constants")
        if op == "HardSigmoid" and not (np.isclose(attrs.get("alpha", 0.2), 1 / 6, rtol=1e-6)
                                        and np.isclose(attrs.get("beta", 0.5), 0.5)):
            raise r.error(node, "HardSigmoid must have alpha=1/6, beta=0.5 (NNlib's hardσ)")
        if op == "Shrink" and not np.isclose(attrs.get("bias", 0.0), attrs.get("lambd", 0.5)):
            raise r.error(node, "Shrink with bias != lambd is not NNlib's softshrink")
        with_param = {"LeakyRelu": (leakyrelu, attrs.get("alpha", 0.01)), "Elu": (elu, attrs.get("alpha", 1.0)),
                      "Celu": (celu, attrs.get("alpha", 1.0)), "Shrink": (softshrink, attrs.get("lambd", 0.5))}
        if op == "Clip":        # relu6 = Clip(0, 6), hardtanh = Clip(-1, 1) (bounds as inputs, opset >= 11)
            bounds = tuple(float(r.const(node, i).reshape(-1)[0]) if r.has_input(node, i) else None for i in (1, 2))
            clips = {(0.0, 6.0): "relu6", (-1.0, 1.0): "hardtanh"}
            if bounds not in clips:
                raise r.error(node, f"Clip{bounds} is neither relu6 (0, 6) nor hardtanh (-1, 1)")
            return ACTIVATIONS[clips[bounds]]
        if op in with_param:
            act, value = with_param[op]
            return act.with_params(float(str(np.float32(value))))   # ONNX floats are float32: 0.2, not 0.2000000030
        return {"Relu": relu, "Sigmoid": sigmoid, "Tanh": tanh, "Softmax": softmax, "LogSoftmax": logsoftmax,
                "Gelu": gelu, "Selu": selu, "HardSigmoid": hardsigmoid, "HardSwish": hardswish,
                "Softplus": softplus, "Softsign": softsign}[op]


def _with_params(name: str, params: tuple) -> Activation:
    return ACTIVATIONS[name].with_params(*params)


_PARAMETRIC: dict[tuple, Activation] = {}
_BASE: dict[str, Activation] = {}


# ---- ONNX helpers: an ONNX form is onnx(g, x, *params) -> output tensor name (g: the graph builder) ------
def _c(g: Any, value: float) -> str:
    return g.const(g.fresh("act_c"), np.array(value, np.float32))


def _op(op: str, **attrs: Any) -> OnnxFn:
    return lambda g, x, *p: g.node(op, [x], **attrs)[0]


def _n(g: Any, op: str, *inputs: str, **attrs: Any) -> str:
    return g.node(op, list(inputs), prefix="act", **attrs)[0]


# ---- definitions ------------------------------------------------------------------------------------
def _f(x: np.ndarray, v: float) -> np.ndarray:
    return np.asarray(v, dtype=x.dtype)


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


def _sigmoid_fast(x: np.ndarray) -> np.ndarray:
    y = _sigmoid(x)
    return np.where(x > 40, _f(x, 1), np.where(x < -80, _f(x, 0), y))


def _tanh_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * (1 - y * y)


# NNlib tanh_fast(::Float32): a Remez rational function of x² (NNlib#345), sign(x) beyond x² >= 66
_TF_N = (1.0, 0.1346604, 0.0035974074, 2.2332108e-5, 1.587199e-8)
_TF_D = (1.0, 0.4679937, 0.026262015, 0.0003453992, 8.7767893e-7)


def _tanh_fast(x: np.ndarray) -> np.ndarray:
    if x.dtype != np.float32:
        return np.tanh(x)  # NNlib's Float64 method agrees with tanh to a few eps; use the exact one
    x2 = x * x
    n = np.polynomial.polynomial.polyval(x2, np.float32(_TF_N)).astype(np.float32)
    d = np.polynomial.polynomial.polyval(x2, np.float32(_TF_D)).astype(np.float32)
    return np.where(x2 < 66, x * (n / d), np.sign(x)).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _softmax_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def _logsoftmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _logsoftmax_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)


def _leakyrelu(x: np.ndarray, a: float) -> np.ndarray:
    return np.where(x > 0, x, _f(x, a) * x)


def _leakyrelu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray, a: float) -> np.ndarray:
    return dy * np.where(x > 0, 1, a).astype(dy.dtype, copy=False)


_RRELU_RNG = np.random.default_rng()


def _rrelu(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    a = (_RRELU_RNG.random(x.shape) * (hi - lo) + lo).astype(x.dtype)
    return np.where(x > 0, x, a * x)


def _rrelu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # the slope drawn in the forward pass is y / x where x < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(x < 0, y / np.where(x < 0, x, 1), 1)
    return dy * slope.astype(dy.dtype, copy=False)


def _elu(x: np.ndarray, a: float) -> np.ndarray:
    return np.where(x >= 0, x, _f(x, a) * np.expm1(np.minimum(x, 0)))


def _elu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray, a: float) -> np.ndarray:
    return dy * np.where(y >= 0, 1, y + _f(y, a))  # NNlib deriv_elu(Ω, α) = Ω >= 0 ? 1 : Ω + α


_SELU_L = 1.0507009873554804934193349852946
_SELU_A = 1.6732632423543772848170429916717


def _selu(x: np.ndarray) -> np.ndarray:
    return _f(x, _SELU_L) * np.where(x > 0, x, _f(x, _SELU_A) * np.expm1(np.minimum(x, 0)))


def _selu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * np.where(y > 0, _f(y, _SELU_L), y + _f(y, _SELU_A * _SELU_L))  # NNlib deriv_selu(Ω)


def _celu(x: np.ndarray, a: float) -> np.ndarray:
    return np.where(x >= 0, x, _f(x, a) * np.expm1(np.minimum(x, 0) / _f(x, a)))


def _celu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray, a: float) -> np.ndarray:
    return dy * np.where(x >= 0, 1, np.exp(np.minimum(x, 0) / _f(x, a)))


_GELU_A = 0.044715
_GELU_L = float(np.sqrt(2 / np.pi))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(_GELU_L * (x + _GELU_A * x ** 3)))


def _gelu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    t = np.tanh(_GELU_L * (x + _GELU_A * x ** 3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_L * (1 + 3 * _GELU_A * x * x))


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # lazy: scipy only when gelu_erf is used

    return erf(x).astype(x.dtype, copy=False)


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + _erf(x / _f(x, math.sqrt(2))))


def _gelu_erf_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    cdf = 0.5 * (1 + _erf(x / _f(x, math.sqrt(2))))
    pdf = np.exp(-0.5 * x * x) / _f(x, math.sqrt(2 * math.pi))
    return dy * (cdf + x * pdf)


def _swish(x: np.ndarray) -> np.ndarray:
    return x * _sigmoid(x)


def _swish_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    return dy * (s + y * (1 - s))  # d(xσ)/dx = σ + xσ(1-σ) = σ + y(1-σ)


def _hardsigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip((x + 3) / _f(x, 6), 0, 1)


def _hardsigmoid_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * ((x > -3) & (x < 3)) / _f(x, 6)


def _hardswish(x: np.ndarray) -> np.ndarray:
    return x * _hardsigmoid(x)


def _hardswish_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * (_hardsigmoid(x) + x * ((x > -3) & (x < 3)) / _f(x, 6))


def _hardtanh(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -1, 1)


def _hardtanh_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * ((x > -1) & (x < 1))


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6)


def _relu6_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * ((x > 0) & (x < 6))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _softplus_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * _sigmoid(x)


def _softsign(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.abs(x))


def _softsign_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    d = 1 + np.abs(x)
    return dy / (d * d)


def _logsigmoid(x: np.ndarray) -> np.ndarray:
    return -_softplus(-x)


def _logsigmoid_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * _sigmoid(-x)


def _logcosh(x: np.ndarray) -> np.ndarray:
    return x + _softplus(-2 * x) - _f(x, math.log(2))


def _logcosh_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * np.tanh(x)


def _mish(x: np.ndarray) -> np.ndarray:
    return x * np.tanh(_softplus(x))


def _mish_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    t = np.tanh(_softplus(x))
    return dy * (t + x * (1 - t * t) * _sigmoid(x))


def _lisht(x: np.ndarray) -> np.ndarray:
    return x * np.tanh(x)


def _lisht_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    t = np.tanh(x)
    return dy * (t + x * (1 - t * t))


def _tanhshrink(x: np.ndarray) -> np.ndarray:
    return x - np.tanh(x)


def _tanhshrink_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    t = np.tanh(x)
    return dy * t * t


def _softshrink(x: np.ndarray, lam: float) -> np.ndarray:
    lam = _f(x, lam)
    return np.where(x >= lam, x - lam, np.where(x <= -lam, x + lam, _f(x, 0)))


def _softshrink_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray, lam: float) -> np.ndarray:
    return dy * (np.abs(x) > lam)


def _trelu(x: np.ndarray, theta: float) -> np.ndarray:
    return np.where(x <= _f(x, theta), _f(x, 0), x)


def _trelu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray, theta: float) -> np.ndarray:
    return dy * (x > theta)


# ---- ONNX translations (standard ops at opset 17; compositions where ONNX has no single op) ---------------
def _onnx_swish(g: Any, x: str) -> str:
    return _n(g, "Mul", x, _n(g, "Sigmoid", x))


def _onnx_lisht(g: Any, x: str) -> str:
    return _n(g, "Mul", x, _n(g, "Tanh", x))


def _onnx_mish(g: Any, x: str) -> str:           # ONNX Mish is opset 18
    return _n(g, "Mul", x, _n(g, "Tanh", _n(g, "Softplus", x)))


def _onnx_logsigmoid(g: Any, x: str) -> str:     # -softplus(-x)
    return _n(g, "Neg", _n(g, "Softplus", _n(g, "Neg", x)))


def _onnx_logcosh(g: Any, x: str) -> str:        # x + softplus(-2x) - log 2
    sp = _n(g, "Softplus", _n(g, "Mul", x, _c(g, -2.0)))
    return _n(g, "Sub", _n(g, "Add", x, sp), _c(g, math.log(2)))


def _onnx_tanhshrink(g: Any, x: str) -> str:     # x - tanh(x)
    return _n(g, "Sub", x, _n(g, "Tanh", x))


def _onnx_trelu(g: Any, x: str, theta: float) -> str:  # x * (x > θ)
    return _n(g, "Mul", x, _n(g, "Cast", _n(g, "Greater", x, _c(g, theta)), to=1))


def _onnx_gelu_tanh(g: Any, x: str) -> str:
    """NNlib's gelu (tanh form); ONNX has ``Gelu(approximate="tanh")`` only from opset 20: else composed."""
    if g.opset >= 20:
        return g.node("Gelu", [x], approximate="tanh")[0]
    inner = _n(g, "Add", x, _n(g, "Mul", _n(g, "Mul", _n(g, "Mul", x, x), x), _c(g, _GELU_A)))
    t = _n(g, "Tanh", _n(g, "Mul", inner, _c(g, _GELU_L)))
    return _n(g, "Mul", _n(g, "Mul", x, _c(g, 0.5)), _n(g, "Add", t, _c(g, 1.0)))


def _onnx_gelu_erf(g: Any, x: str) -> str:
    e = _n(g, "Erf", _n(g, "Mul", x, _c(g, 1 / math.sqrt(2))))
    return _n(g, "Mul", _n(g, "Mul", x, _c(g, 0.5)), _n(g, "Add", e, _c(g, 1.0)))


def _onnx_clip(lo: float, hi: float) -> OnnxFn:
    return lambda g, x: g.node("Clip", [x, _c(g, lo), _c(g, hi)], prefix="act")[0]


relu = Activation("relu", _relu, _relu_grad, _op("Relu"))
sigmoid = Activation("σ", _sigmoid, _sigmoid_grad, _op("Sigmoid"))  # Julia prints sigmoid as σ (sigmoid === σ)
σ = sigmoid
sigmoid_fast = Activation("sigmoid_fast", _sigmoid_fast, _sigmoid_grad, _op("Sigmoid"))
hardsigmoid = Activation("hardσ", _hardsigmoid, _hardsigmoid_grad, _op("HardSigmoid", alpha=1 / 6, beta=0.5))
hardσ = hardsigmoid
logsigmoid = Activation("logσ", _logsigmoid, _logsigmoid_grad, _onnx_logsigmoid)
logσ = logsigmoid
tanh = Activation("tanh", np.tanh, _tanh_grad, _op("Tanh"))
tanh_fast = Activation("tanh_fast", _tanh_fast, _tanh_grad, _op("Tanh"))
hardtanh = Activation("hardtanh", _hardtanh, _hardtanh_grad, _onnx_clip(-1.0, 1.0))
softmax = Activation("softmax", _softmax, _softmax_grad, _op("Softmax", axis=-1))
logsoftmax = Activation("logsoftmax", _logsoftmax, _logsoftmax_grad, _op("LogSoftmax", axis=-1))
leakyrelu = Activation("leakyrelu", _leakyrelu, _leakyrelu_grad,
                       lambda g, x, a: _n(g, "LeakyRelu", x, alpha=float(a)), defaults=(0.01,))
relu6 = Activation("relu6", _relu6, _relu6_grad, _onnx_clip(0.0, 6.0))
rrelu = Activation("rrelu", _rrelu, _rrelu_grad, None, defaults=(1 / 8, 1 / 3))
elu = Activation("elu", _elu, _elu_grad, lambda g, x, a: _n(g, "Elu", x, alpha=float(a)), defaults=(1.0,))
selu = Activation("selu", _selu, _selu_grad, _op("Selu", alpha=_SELU_A, gamma=_SELU_L))
celu = Activation("celu", _celu, _celu_grad, lambda g, x, a: _n(g, "Celu", x, alpha=float(a)), defaults=(1.0,))
gelu = Activation("gelu", _gelu, _gelu_grad, _onnx_gelu_tanh)
gelu_tanh = gelu                      # NNlib 0.9: const gelu = gelu_tanh
gelu_erf = Activation("gelu_erf", _gelu_erf, _gelu_erf_grad, _onnx_gelu_erf)
swish = Activation("swish", _swish, _swish_grad, _onnx_swish)
hardswish = Activation("hardswish", _hardswish, _hardswish_grad, _op("HardSwish"))
lisht = Activation("lisht", _lisht, _lisht_grad, _onnx_lisht)
mish = Activation("mish", _mish, _mish_grad, _onnx_mish)
softplus = Activation("softplus", _softplus, _softplus_grad, _op("Softplus"))
softsign = Activation("softsign", _softsign, _softsign_grad, _op("Softsign"))
logcosh = Activation("logcosh", _logcosh, _logcosh_grad, _onnx_logcosh)
tanhshrink = Activation("tanhshrink", _tanhshrink, _tanhshrink_grad, _onnx_tanhshrink)
softshrink = Activation("softshrink", _softshrink, _softshrink_grad,
                        lambda g, x, lam: _n(g, "Shrink", x, bias=float(lam), lambd=float(lam)), defaults=(0.5,))
trelu = Activation("trelu", _trelu, _trelu_grad, _onnx_trelu, defaults=(1.0,))
thresholdrelu = trelu
identity = Activation("identity", lambda x: x, lambda x, y, dy: dy, lambda g, x: x)
register_layer(Activation)

#: every name (incl. NNlib's aliases) -> activation; the parser and checkpoint loader resolve names here
ACTIVATIONS: dict[str, Activation] = {
    "relu": relu, "σ": sigmoid, "sigmoid": sigmoid, "sigmoid_fast": sigmoid_fast, "hardσ": hardsigmoid,
    "hardsigmoid": hardsigmoid, "logσ": logsigmoid, "logsigmoid": logsigmoid, "tanh": tanh,
    "tanh_fast": tanh_fast, "hardtanh": hardtanh, "softmax": softmax, "logsoftmax": logsoftmax,
    "leakyrelu": leakyrelu, "relu6": relu6, "rrelu": rrelu, "elu": elu, "selu": selu, "celu": celu,
    "gelu": gelu, "gelu_tanh": gelu, "gelu_erf": gelu_erf, "swish": swish, "hardswish": hardswish,
    "lisht": lisht, "mish": mish, "softplus": softplus, "softsign": softsign, "logcosh": logcosh,
    "tanhshrink": tanhshrink, "softshrink": softshrink, "trelu": trelu, "thresholdrelu": trelu,
    "identity": identity,
}
_BASE.update({a.name: a for a in ACTIVATIONS.values()})


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
