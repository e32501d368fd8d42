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

# fn(x, *params) -> y ; grad(x, y, dy, *params) -> dx ; onnx(g, x, *params) -> output tensor name
ForwardFn = Callable[..., np.ndarray]
GradFn = Callable[..., np.ndarray]
OnnxFn = Callable[..., None]


def _as_float(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return x


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

    # ---- function use -------------------------------------------------------------------------------
    def batch_kind(self, train: bool) -> str:
        """Elementwise: a batch may be cut into shards through it (train/parallel.py)."""
        return "plain"

    def __call__(self, x: Any, *params: float) -> np.ndarray:
        """Apply to an array of any shape; NNlib's extra argument may follow (``leakyrelu(x, 0.2)``)."""
        if params:
            return self.with_params(*params)(x)
        return self._fn(_as_float(x))

    def grad(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Return ``dL/dx`` from the forward input ``x``, output ``y`` and upstream gradient ``dy``."""
        return self._grad_raw(x, y, dy, *self.args)

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
        return self.grad(x, y, dy), {}

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
            # each parameter as a Julia Float64 literal (0.2, 1.0, 1e-05: Julia reads all of them)
            return f"x -> {self.name}(x, {', '.join(repr(float(v)) for v in self.params_)})"
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


# ---- definitions: fn(x, *params), grad(x, y, dy, *params) (NNlib's rrules), onnx(g, x, *params) -------------
# one-expression forms stand inline where each activation is made (below); the rest, and helpers, stand here
def _f(x: np.ndarray, v: float) -> np.ndarray:
    return np.asarray(v, dtype=x.dtype)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # numerically stable in both tails: exp of a non-positive number only
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _sigmoid_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * y * (1 - y)


def _tanh_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy * (1 - y * y)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _hardsigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip((x + 3) / _f(x, 6), 0, 1)


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


def _logsoftmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


_RRELU_RNG = np.random.default_rng()


def _rrelu(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    a = (_RRELU_RNG.random(x.shape) * (hi - lo) + lo).astype(x.dtype)
    return np.where(x > 0, x, a * x)


def _rrelu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # the slope drawn in the forward pass is y / x where x < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(x < 0, y / np.where(x < 0, x, 1), 1)
    return dy * slope.astype(dy.dtype, copy=False)


_SELU_L = 1.0507009873554804934193349852946
_SELU_A = 1.6732632423543772848170429916717
_GELU_A = 0.044715
_GELU_L = float(np.sqrt(2 / np.pi))


def _gelu_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    t = np.tanh(_GELU_L * (x + _GELU_A * x ** 3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_L * (1 + 3 * _GELU_A * x * x))


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # lazy: scipy only when gelu_erf is used

    return erf(x).astype(x.dtype, copy=False)


def _gelu_erf_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    cdf = 0.5 * (1 + _erf(x / _f(x, math.sqrt(2))))
    pdf = np.exp(-0.5 * x * x) / _f(x, math.sqrt(2 * math.pi))
    return dy * (cdf + x * pdf)


def _swish_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    return dy * (s + y * (1 - s))  # d(xσ)/dx = σ + xσ(1-σ) = σ + y(1-σ)


def _mish_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    t = np.tanh(_softplus(x))
    return dy * (t + x * (1 - t * t) * _sigmoid(x))


def _lisht_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    t = np.tanh(x)
    return dy * (t + x * (1 - t * t))


def _tanhshrink_grad(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    t = np.tanh(x)
    return dy * t * t


def _softshrink(x: np.ndarray, lam: float) -> np.ndarray:
    lam = _f(x, lam)
    return np.where(x >= lam, x - lam, np.where(x <= -lam, x + lam, _f(x, 0)))


# ---- ONNX translations (standard ops at opset 17; compositions where ONNX has no single op) ---------------
def _onnx_x_times(*ops: str) -> OnnxFn:
    """``x * op1(op2(...(x)))`` (swish, lisht, mish: ONNX's Mish is opset 18)."""
    def build(g: Any, x: str) -> str:
        inner = x
        for op in reversed(ops):
            inner = _n(g, op, inner)
        return _n(g, "Mul", x, inner)
    return build


def _onnx_logcosh(g: Any, x: str) -> str:        # x + softplus(-2x) - log 2
    sp = _n(g, "Softplus", _n(g, "Mul", x, _c(g, -2.0)))
    return _n(g, "Sub", _n(g, "Add", x, sp), _c(g, math.log(2)))


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


def _onnx_alpha(op: str) -> OnnxFn:
    """An ONNX op whose attribute ``alpha`` carries NNlib's parameter (LeakyRelu, Elu, Celu)."""
    return lambda g, x, a: _n(g, op, x, alpha=float(a))


relu = Activation("relu", lambda x: np.maximum(x, 0), lambda x, y, dy: dy * (x > 0), _op("Relu"))  # relu'(0) = 0
sigmoid = Activation("σ", _sigmoid, _sigmoid_grad, _op("Sigmoid"))  # Julia prints sigmoid as σ (sigmoid === σ)
σ = sigmoid
sigmoid_fast = Activation("sigmoid_fast",
                          lambda x: np.where(x > 40, _f(x, 1), np.where(x < -80, _f(x, 0), _sigmoid(x))),
                          _sigmoid_grad, _op("Sigmoid"))
hardsigmoid = Activation("hardσ", _hardsigmoid, lambda x, y, dy: dy * ((x > -3) & (x < 3)) / _f(x, 6),
                         _op("HardSigmoid", alpha=1 / 6, beta=0.5))
hardσ = hardsigmoid
logsigmoid = Activation("logσ", lambda x: -_softplus(-x), lambda x, y, dy: dy * _sigmoid(-x),
                        lambda g, x: _n(g, "Neg", _n(g, "Softplus", _n(g, "Neg", x))))  # -softplus(-x)
logσ = logsigmoid
tanh = Activation("tanh", np.tanh, _tanh_grad, _op("Tanh"))
tanh_fast = Activation("tanh_fast", _tanh_fast, _tanh_grad, _op("Tanh"))
hardtanh = Activation("hardtanh", lambda x: np.clip(x, -1, 1), lambda x, y, dy: dy * ((x > -1) & (x < 1)),
                      _onnx_clip(-1.0, 1.0))
softmax = Activation("softmax", _softmax, lambda x, y, dy: y * (dy - (dy * y).sum(axis=-1, keepdims=True)),
                     _op("Softmax", axis=-1))
logsoftmax = Activation("logsoftmax", _logsoftmax, lambda x, y, dy: dy - np.exp(y) * dy.sum(axis=-1, keepdims=True),
                        _op("LogSoftmax", axis=-1))
leakyrelu = Activation("leakyrelu", lambda x, a: np.where(x > 0, x, _f(x, a) * x),
                       lambda x, y, dy, a: dy * np.where(x > 0, 1, a).astype(dy.dtype, copy=False),
                       _onnx_alpha("LeakyRelu"), defaults=(0.01,))
relu6 = Activation("relu6", lambda x: np.clip(x, 0, 6), lambda x, y, dy: dy * ((x > 0) & (x < 6)),
                   _onnx_clip(0.0, 6.0))
rrelu = Activation("rrelu", _rrelu, _rrelu_grad, None, defaults=(1 / 8, 1 / 3))
elu = Activation("elu", lambda x, a: np.where(x >= 0, x, _f(x, a) * np.expm1(np.minimum(x, 0))),
                 lambda x, y, dy, a: dy * np.where(y >= 0, 1, y + _f(y, a)),  # NNlib deriv_elu(Ω, α)
                 _onnx_alpha("Elu"), defaults=(1.0,))
selu = Activation("selu", lambda x: _f(x, _SELU_L) * np.where(x > 0, x, _f(x, _SELU_A) * np.expm1(np.minimum(x, 0))),
                  lambda x, y, dy: dy * np.where(y > 0, _f(y, _SELU_L), y + _f(y, _SELU_A * _SELU_L)),  # deriv_selu(Ω)
                  _op("Selu", alpha=_SELU_A, gamma=_SELU_L))
celu = Activation("celu", lambda x, a: np.where(x >= 0, x, _f(x, a) * np.expm1(np.minimum(x, 0) / _f(x, a))),
                  lambda x, y, dy, a: dy * np.where(x >= 0, 1, np.exp(np.minimum(x, 0) / _f(x, a))),
                  _onnx_alpha("Celu"), defaults=(1.0,))
gelu = Activation("gelu", lambda x: 0.5 * x * (1 + np.tanh(_GELU_L * (x + _GELU_A * x ** 3))), _gelu_grad,
                  _onnx_gelu_tanh)
gelu_tanh = gelu                      # NNlib 0.9: const gelu = gelu_tanh
gelu_erf = Activation("gelu_erf", lambda x: 0.5 * x * (1 + _erf(x / _f(x, math.sqrt(2)))), _gelu_erf_grad,
                      _onnx_gelu_erf)
swish = Activation("swish", lambda x: x * _sigmoid(x), _swish_grad, _onnx_x_times("Sigmoid"))
hardswish = Activation("hardswish", lambda x: x * _hardsigmoid(x),
                       lambda x, y, dy: dy * (_hardsigmoid(x) + x * ((x > -3) & (x < 3)) / _f(x, 6)),
                       _op("HardSwish"))
lisht = Activation("lisht", lambda x: x * np.tanh(x), _lisht_grad, _onnx_x_times("Tanh"))
mish = Activation("mish", lambda x: x * np.tanh(_softplus(x)), _mish_grad, _onnx_x_times("Tanh", "Softplus"))
softplus = Activation("softplus", _softplus, lambda x, y, dy: dy * _sigmoid(x), _op("Softplus"))
softsign = Activation("softsign", lambda x: x / (1 + np.abs(x)), lambda x, y, dy: dy / np.square(1 + np.abs(x)),
                      _op("Softsign"))
logcosh = Activation("logcosh", lambda x: x + _softplus(-2 * x) - _f(x, math.log(2)),
                     lambda x, y, dy: dy * np.tanh(x), _onnx_logcosh)
tanhshrink = Activation("tanhshrink", lambda x: x - np.tanh(x), _tanhshrink_grad,
                        lambda g, x: _n(g, "Sub", x, _n(g, "Tanh", x)))  # x - tanh(x)
softshrink = Activation("softshrink", _softshrink, lambda x, y, dy, lam: dy * (np.abs(x) > lam),
                        lambda g, x, lam: _n(g, "Shrink", x, bias=float(lam), lambd=float(lam)), defaults=(0.5,))
trelu = Activation("trelu", lambda x, theta: np.where(x <= _f(x, theta), _f(x, 0), x),
                   lambda x, y, dy, theta: dy * (x > theta),
                   lambda g, x, theta: _n(g, "Mul", x, _n(g, "Cast", _n(g, "Greater", x, _c(g, theta)), to=1)),
                   defaults=(1.0,))  # x * (x > θ)
thresholdrelu = trelu
identity = Activation("identity", lambda x: x, lambda x, y, dy: dy, lambda g, x: x)
register_layer(Activation)

#: every name (incl. NNlib's aliases) -> activation; the parser and checkpoint loader resolve names here. The
#: names are this module's: each activation and alias above is bound under exactly its NNlib name
ACTIVATIONS: dict[str, Activation] = {k: v for k, v in globals().items() if isinstance(v, Activation)}
__all__ = ["Activation", "ACTIVATIONS", "get_activation", *ACTIVATIONS]
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
