"""Every NNlib activation: NNlib's documented values, finite-difference derivatives, parameters, ONNX parity."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.model import activations as A
from pyflux_compress.model.activations import ACTIVATIONS, get_activation

DETERMINISTIC = sorted({a.name for a in ACTIVATIONS.values()} - {"rrelu"})


def test_nnlib_docstring_values():
    f = np.float32
    assert A.elu(f([-10]))[0] == pytest.approx(-0.9999546, rel=1e-6)
    assert A.selu(f([-10]))[0] == pytest.approx(-1.7580194, rel=1e-6)
    assert A.celu(f([-10]))[0] == pytest.approx(-0.9999546, rel=1e-6)
    np.testing.assert_allclose(A.softsign(f([1, 100])), [0.5, 0.990099], rtol=1e-6)
    assert A.softplus(f([16]))[0] == f(16)
    np.testing.assert_array_equal(A.softshrink(f([-10, 10])), [-9.5, 9.5])
    np.testing.assert_allclose(A.tanhshrink(f([-10, 10])), [-9, 9], rtol=1e-7)
    assert A.tanh_fast(f([0.5]))[0] == f(0.46211714)          # NNlib: 0.46211714f0 (tanh gives ...717)
    # numpy's float32 exp may differ from Julia's by 1 ulp: compare within one unit in the last place
    assert abs(A.sigmoid_fast(f([0.2]))[0] - f(0.54983395)) <= np.spacing(f(0.55))
    assert A.hardσ(f([0.2]))[0] == f(0.53333336)
    assert A.leakyrelu(f([-10]), 0.2)[0] == f(-2)             # NNlib leakyrelu(-10f0, 1//5)
    np.testing.assert_array_equal(A.sigmoid_fast(f([50, -100])), [1, 0])


def test_formulas_against_independent_definitions():
    x = np.linspace(-7, 7, 141)
    sig = 1 / (1 + np.exp(-x))
    sp = np.log(1 + np.exp(x))
    cases = {
        "relu6": np.minimum(np.maximum(x, 0), 6), "hardtanh": np.clip(x, -1, 1),
        "hardσ": np.maximum(0, np.minimum(1, (x + 3) / 6)), "hardswish": x * np.clip((x + 3) / 6, 0, 1),
        "selu": 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
        "celu": np.where(x >= 0, x, np.exp(x) - 1), "softplus": sp, "logσ": np.log(sig),
        "logcosh": np.log(np.cosh(x)), "mish": x * np.tanh(sp), "lisht": x * np.tanh(x),
        "tanhshrink": x - np.tanh(x), "softshrink": np.sign(x) * np.maximum(np.abs(x) - 0.5, 0),
        "trelu": np.where(x > 1, x, 0), "softsign": x / (1 + np.abs(x)), "swish": x * sig,
        "gelu_erf": np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]),
        "gelu_tanh": 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
        "elu": np.where(x >= 0, x, np.exp(x) - 1), "leakyrelu": np.where(x > 0, x, 0.01 * x),
    }
    for name, want in cases.items():
        np.testing.assert_allclose(get_activation(name)(x), want, rtol=1e-12, atol=1e-12, err_msg=name)
    assert abs(A.gelu_erf(np.array([1.0]))[0] - 0.8413447460685429) < 1e-12   # exact GELU differs from gelu
    assert A.gelu is A.gelu_tanh and A.trelu is A.thresholdrelu and A.logσ is A.logsigmoid


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_finite_difference_gradients(name):
    act = get_activation(name)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6)) * 3
    for kink in (0.0, 1.0, -1.0, 0.5, -0.5, 3.0, -3.0, 6.0):   # relu/hardtanh/trelu/softshrink/hardσ kinks
        x[np.abs(x - kink) < 1e-3] = kink + 0.1
    g = rng.standard_normal(x.shape)
    y, cache = act.forward(x)
    dx, grads = act.backward(cache, g)
    assert grads == {}
    eps = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = ((act(xp) * g).sum() - (act(xm) * g).sum()) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-7, err_msg=name)


def test_rrelu_is_random_leaky_and_its_gradient_uses_the_drawn_slopes():
    x = -np.ones((200, 50))
    y, cache = A.rrelu.forward(x)
    assert -1 / 3 <= y.min() and y.max() <= -1 / 8 and np.unique(y).size > 100
    dx, _ = A.rrelu.backward(cache, np.ones_like(x))
    np.testing.assert_allclose(dx, -y)
    np.testing.assert_array_equal(A.rrelu(np.array([2.0])), [2.0])


def test_parameters_print_as_flux_closures_and_are_cached():
    lr = pfc.leakyrelu.with_params(0.2)
    assert repr(lr) == "x -> leakyrelu(x, 0.2)" and lr is pfc.leakyrelu.with_params(0.2)
    assert pfc.leakyrelu.with_params(0.01) is pfc.leakyrelu              # NNlib's default: the plain function
    np.testing.assert_allclose(lr(np.array([-1.0, 2.0])), [-0.2, 2.0])
    assert pickle.loads(pickle.dumps(lr)) is lr
    assert repr(A.elu.with_params(2)) == "x -> elu(x, 2.0)"
    np.testing.assert_allclose(A.elu(np.array([-10.0]), 2), [2 * (math.exp(-10) - 1)])
    with pytest.raises(ValueError, match="relu takes no parameters"):
        pfc.relu.with_params(1)
    with pytest.raises(ValueError, match="at most 1 parameter"):
        pfc.leakyrelu.with_params(1, 2)
    with pytest.raises(ValueError, match="finite"):
        pfc.leakyrelu.with_params(float("nan"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept(dtype):
    x = np.linspace(-3, 3, 12, dtype=dtype).reshape(3, 4)
    for name in DETERMINISTIC:
        assert get_activation(name)(x).dtype == dtype, name


def test_jld2_type_names_resolve():
    from pyflux_compress.io.checkpoint import _layer_from_struct  # noqa: PLC2701 - the loader's own resolver
    from pyflux_compress.io.jld2 import Ghost

    for jname, act in [("NNlib.#hardσ", A.hardσ), ("NNlib.#logσ", A.logσ), ("NNlib.#gelu_erf", A.gelu_erf),
                       ("NNlib.#tanh_fast", A.tanh_fast), ("NNlib.#relu6", A.relu6), ("NNlib.#mish", A.mish)]:
        assert _layer_from_struct(Ghost(jname), "layers[1]") is act


onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("act", [get_activation(n) for n in DETERMINISTIC]
                         + [A.leakyrelu.with_params(0.2), A.elu.with_params(1.5), A.celu.with_params(0.7),
                            A.softshrink.with_params(0.3), A.trelu.with_params(0.25)], ids=repr)
def test_onnx_parity(act):
    from pyflux_compress.io.onnx import to_onnx_model

    model = pfc.Chain(pfc.Dense(5, 7, seed=1), act)
    x = np.random.default_rng(2).standard_normal((16, 5)).astype(np.float32) * 3
    sess = ort.InferenceSession(to_onnx_model(model).SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["output"], {"input": x})[0]
    want = model(x)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), act


def test_rrelu_has_no_onnx_form():
    from pyflux_compress.io.onnx import UnsupportedLayerError, to_onnx_model

    with pytest.raises(UnsupportedLayerError, match=r"layers\[2\].*random at inference"):
        to_onnx_model(pfc.Chain(pfc.Dense(2, 2), A.rrelu))
