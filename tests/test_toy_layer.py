"""A new layer defined in this file only, following docs/ARCHITECTURE.md "Recipe: add a layer" literally.

``ToyScale(n, σ)`` is an element-wise scale and shift, ``y = σ.(x .* weight .+ bias)`` (like Flux's ``Scale``,
under a name of its own). Registered through the public ``pfc.register_layer``; no other module is touched, and
parse/print, training, JLD2, ONNX, prune, quantize and ``pfc.modules`` all work from its declarations.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.model.activations import get_activation, identity
from pyflux_compress.model.layers import Layer
from pyflux_compress.model.syntax import as_int
from pyflux_compress._validate import check_int


# ---- the layer (recipe steps 1-8) ---------------------------------------------------------------------------
@pfc.register_layer                                           # step 1: one file, registered
class ToyScale(Layer):
    """``y = σ.(x .* weight .+ bias)`` over the last axis; ``weight``, ``bias``: ``(n,)``."""

    flux_name = "ToyScale"                                    # step 3: declarations
    flux_fields = {"weight": "weight", "bias": "bias", "σ": "activation"}
    flux_activation_param = 0
    compressible = ("weight",)
    out_axes = {"weight": 0, "bias": 0}

    def __init__(self, n: int, activation: Any = identity, *, seed: int = 0) -> None:   # step 2: engine
        n = check_int("ToyScale n", n, min=1)
        rng = np.random.default_rng(seed)
        self.weight = rng.uniform(0.5, 1.5, n).astype(np.float32)
        self.bias = rng.uniform(-0.1, 0.1, n).astype(np.float32)
        self.activation = get_activation(activation)

    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = np.asarray(x, dtype=self.weight.dtype)
        if x.shape[-1:] != self.weight.shape:
            raise self._err(f"expects {self.weight.size} features, got input of shape {x.shape}")
        z = x * self.weight + (0 if self.bias is None else self.bias)
        y = self.activation(z)
        return y, (x, z, y)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x, z, y = cache
        dz = self.activation.grad(z, y, dy)
        axes = tuple(range(dz.ndim - 1))
        grads = {"weight": (dz * x).sum(axis=axes)}
        if self.bias is not None:
            grads["bias"] = dz.sum(axis=axes)
        return dz * self.weight, grads

    def output_shape(self, in_shape: tuple) -> tuple:
        if tuple(in_shape)[-1:] != self.weight.shape:
            raise self._err(f"expects {self.weight.size} features, got per-sample shape {tuple(in_shape)}")
        return tuple(in_shape)

    def __repr__(self) -> str:
        act = "" if self.activation is identity else f", {self.activation!r}"
        return f"ToyScale({self.weight.size}{act})"

    @classmethod
    def from_syntax(cls, call: Any) -> "ToyScale":             # step 4: syntax
        call.check_kw()
        if not 1 <= len(call.args) <= 2:
            raise ValueError("expected ToyScale(n[, σ])")
        act = call.activation(call.args[1]) if len(call.args) > 1 else identity
        return cls(as_int(call.args[0], "n"), act, seed=int(call.rng.integers(2**31)))

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "ToyScale":   # step 5: JLD2
        w = fields["weight"]
        if not isinstance(w, np.ndarray) or w.ndim != 1:
            raise ValueError("ToyScale weight must be a vector")
        act = fields["σ"] if isinstance(fields["σ"], pfc.Activation) else identity
        return cls(w.size, act)

    def to_onnx(self, g: Any, x: str, weight: np.ndarray | None = None) -> str:    # step 6: ONNX
        p = g.fresh("toyscale")
        w = np.asarray(self.weight if weight is None else weight, np.float32)
        (y,) = g.node("Mul", [x, g.const(f"{p}_w", w)], prefix=p)
        if self.bias is not None:
            (y,) = g.node("Add", [y, g.const(f"{p}_b", np.asarray(self.bias, np.float32))], prefix=p)
        return self.activation.to_onnx(g, y)


# ---- step 9: the tests --------------------------------------------------------------------------------------
ARCH = "Chain(Dense(6 => 5, relu), Chain(ToyScale(5, tanh), Dense(5 => 3)))"


@pytest.fixture
def model():
    return pfc.parse(ARCH, seed=1)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def test_registered_and_found_by_mro():
    assert pfc.registry.by_name("ToyScale") is ToyScale

    class Sub(ToyScale):
        pass

    assert pfc.registry.lookup(Sub(3)) is ToyScale
    assert "ToyScale" in pfc.registry.supported()


def test_parse_print_round_trip(model):
    assert str(model) == ARCH
    assert str(pfc.parse(str(model))) == ARCH
    with pytest.raises(pfc.FluxSyntaxError, match="expected ToyScale"):
        pfc.parse("ToyScale(1, relu, 3)")


def test_modules_paths(model):
    assert [(p, type(l).__name__) for p, l in pfc.modules(model)] == [
        ("layers[1]", "Dense"), ("layers[2].layers[1]", "ToyScale"), ("layers[2].layers[2]", "Dense")]
    assert list(model.params())[2:4] == ["layers[2].layers[1].weight", "layers[2].layers[1].bias"]
    doubled = pfc.map_layers(lambda p, l: l.copy(), model)
    assert str(doubled) == ARCH and doubled[1][0] is not model[1][0]


def test_gradient_check_and_training(model, data):
    m64 = model.astype(np.float64)
    toy = m64[1][0]
    X = data[0][:5].astype(np.float64)
    y, cache = m64.forward(X)
    dy = np.random.default_rng(2).normal(size=y.shape)
    _, grads = m64.backward(cache, dy)
    eps = 1e-6
    for name in ("weight", "bias"):
        arr = getattr(toy, name)
        numeric = np.zeros_like(arr)
        for i in range(arr.size):
            arr[i] += eps
            up = float((m64(X) * dy).sum())
            arr[i] -= 2 * eps
            down = float((m64(X) * dy).sum())
            arr[i] += eps
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[f"layers[2].layers[1].{name}"], numeric, rtol=1e-5, atol=1e-8)
    before = model[1][0].weight.copy()
    hist = pfc.fit(model, *data, epochs=30, batchsize=16, opt=pfc.Adam(0.05), progress=False)
    assert hist.loss[-1] < hist.loss[0] and not np.allclose(model[1][0].weight, before)


def test_jld2_save_load(model, data, tmp_path):
    path = tmp_path / "toy.jld2"
    pfc.save(path, model)
    back = pfc.load(path)
    assert str(back) == ARCH
    np.testing.assert_array_equal(back[1][0].weight, model[1][0].weight)
    np.testing.assert_allclose(back(data[0]), model(data[0]), rtol=1e-6)
    fresh = pfc.parse(ARCH, seed=99)
    pfc.load_state(fresh, path)
    np.testing.assert_array_equal(fresh[1][0].bias, model[1][0].bias)


def test_onnx_export_parity(model, data, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = pfc.export_onnx(model, tmp_path / "toy.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": data[0]})[0]
    np.testing.assert_allclose(out, model(data[0]), rtol=1e-5, atol=1e-6)


def test_prune_and_quantize(model, data):
    pruned = pfc.prune(model, 0.4)
    toy = pruned[1][0]
    assert "layers[2].layers[1]" in pruned.records[-1]["per_layer"]
    assert np.count_nonzero(toy.weight == 0) == 2                      # round(0.4 * 5) smallest |w|
    kept = np.argsort(np.abs(model[1][0].weight))[2:]
    np.testing.assert_array_equal(toy.weight[kept], model[1][0].weight[kept])
    q = pfc.quantize(model, bits=8, granularity="per_channel")
    assert "layers[2].layers[1]" in q.records[-1]["per_layer"]
    wq = q[1][0]
    assert wq.qweight.dtype == np.int8 and wq.qweight.shape == (5,)
    np.testing.assert_allclose(wq.weight_dequantized(), model[1][0].weight, atol=float(wq.w_scale.max()))
    np.testing.assert_allclose(q(data[0]), model(data[0]), atol=0.05)
