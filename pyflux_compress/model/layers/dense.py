"""Flux ``Dense``: ``y = σ.(x @ weight.T .+ bias)``; ONNX ``Gemm`` (``MatMul`` + ``Add`` when not 2-D)."""
from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np

from ..._validate import check_int, check_rng
from ..activations import Activation, get_activation, identity
from ..registry import register_layer
from ..syntax import Pair, as_int, as_pair
from .base import Grads, Layer, activation_of, as_data, bias_array, init_fn, svd_factors


@register_layer
class Dense(Layer):
    """Fully connected layer ``y = σ.(x @ weight.T .+ bias)`` with Flux's ``Dense`` fields.

    Forms: ``Dense(784, 128, relu)``, ``Dense((784, 128), relu)`` (Python for ``784 => 128``), and Flux's
    ``Dense(weight, bias, σ)`` from arrays. ``bias=False`` means no bias (Flux ``bias=false``).
    ``init(rng, out, in)`` defaults to Flux's ``glorot_uniform``; ``rng``/``seed`` make it deterministic.

    Input ``(..., in)`` (usually ``(N, in)``; a 1-D sample works too), output ``(..., out)``.
    """

    flux_name = "Dense"
    batch_mode = "independent"
    flux_fields = {"weight": "weight", "bias": "bias", "σ": "activation"}
    flux_activation_param = 0
    onnx_ops = ("Gemm", "MatMul")
    compressible = ("weight",)
    out_axes = {"weight": 0, "bias": 0}
    in_axes = {"weight": 1}
    structured = "units"
    input_grad_optional = True

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
            self.weight = np.asarray(init_fn(init)(gen, n_out, n_in), dtype=np.float32)
        self.bias = bias_array(bias, self.weight.shape[0], self.weight.dtype, "Dense")
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
        x = as_data(x, self.weight.dtype, self)
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

    def factorise(self, r: int, svd: Callable | None = None) -> list["Dense"]:
        """Rank-``r`` truncated SVD ``W ≈ (U_r S_r^½)(S_r^½ V_r^T)`` as ``[Dense(in => r; bias=false),
        Dense(r => out, σ)]`` with the original bias and activation (used by ``pfc.lowrank``, which passes its
        ``svd`` kernel)."""
        left, right = svd_factors(self.weight, r, svd)
        bias = False if self.bias is None else self.bias.copy()
        return [Dense(right, False), Dense(left, bias, self.activation)]

    def __repr__(self) -> str:
        s = f"Dense({self.in_features} => {self.out_features}"
        if self.activation is not identity:
            s += f", {self.activation!r}"
        if self.bias is None:
            s += "; bias=false"
        return s + ")"

    @classmethod
    def from_syntax(cls, call: Any) -> "Dense":
        call.check_kw("bias", "init")
        call.no_init()
        args = call.args
        if args and isinstance(args[0], Pair):  # Dense(in => out[, σ])
            (n_in, n_out), rest = as_pair(args[0], "Dense size"), args[1:]
        elif len(args) >= 2:  # old form Dense(in, out[, σ])
            n_in, n_out, rest = as_int(args[0], "Dense in"), as_int(args[1], "Dense out"), args[2:]
        else:
            raise ValueError("expected Dense(in => out[, σ])")
        if len(rest) > 1:
            raise ValueError("too many positional arguments")
        act = call.activation(rest[0]) if rest else None
        return cls(n_in, n_out, act, bias=call.bool("bias", True), init=call.init, rng=call.rng)

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "Dense":
        w = fields.get("weight")
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            raise ValueError(f"Dense weight must be a matrix; got {type(w).__name__}")
        return cls(w.shape[1], w.shape[0], activation_of(fields.get("σ")), bias=fields.get("bias") is not False,
                   init=lambda rng, *dims: np.zeros(dims, np.float32))

    def to_onnx(self, g: Any, x: str, weight: np.ndarray | None = None) -> str:
        """``Gemm(transB=1)`` on 2-D input (Flux's ``(out, in)`` weight is Gemm's B as stored); ``MatMul`` +
        ``Add`` for more dims (Flux applies Dense to the first dim). ``weight`` overrides (dequantized export)."""
        w = np.asarray(self.weight if weight is None else weight, dtype=np.float32)
        p = g.fresh("dense")
        bias = [] if self.bias is None else [g.const(f"{p}_b", np.asarray(self.bias, np.float32))]
        if g.rank(x) == 2:
            (y,) = g.node("Gemm", [x, g.const(f"{p}_W", w, allow_sparse=True), *bias], prefix=p, transB=1)
        else:
            (y,) = g.node("MatMul", [x, g.const(f"{p}_WT", np.ascontiguousarray(w.T), allow_sparse=True)], prefix=p)
            if bias:
                (y,) = g.node("Add", [y, *bias], prefix=p)
        return self.activation.to_onnx(g, y)

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "Dense":
        attrs = r.attrs(node)
        if node.op_type == "MatMul":
            w = r.const(node, 1).astype(np.float32)
            if w.ndim != 2:
                raise r.error(node, f"MatMul weight must be 2-D; got shape {w.shape}")
            w, bias = w.T, r.bias_after(node)  # consumes a following Add(const) as the bias
        else:
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise r.error(node, "only Gemm with transA=0, alpha=1, beta=1 imports")
            w = r.const(node, 1).astype(np.float32)
            w = w if attrs.get("transB", 0) else w.T  # Flux weight is (out, in)
            bias = r.const(node, 2) if r.has_input(node, 2) else None
        if bias is not None and np.size(bias) != w.shape[0]:
            raise r.error(node, f"bias of size {np.size(bias)} does not broadcast as a per-output bias")
        bias = False if bias is None else np.ascontiguousarray(np.reshape(bias, -1), dtype=np.float32)
        return cls(np.ascontiguousarray(w, dtype=np.float32), bias)
