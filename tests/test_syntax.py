"""Flux syntax: parse(str(m)) round trips for every layer type, Julia literal forms, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.model.chain import Chain
from pyflux_compress.model.layers import (BatchNorm, Conv, CrossCor, Dense, Dropout, GlobalMeanPool, MaxPool,
                                          MeanPool)
from pyflux_compress.model.syntax import FluxSyntaxError, parse

ROUND_TRIP = [
    "Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))",
    "Dense(2 => 1, tanh; bias=false)",
    "Conv((3, 3), 1 => 8, relu)",
    "Conv((5, 3), 2 => 4, pad=(1, 1, 2, 0), stride=(2, 1), dilation=2, bias=false)",
    "CrossCor((3, 3), 3 => 2, σ, pad=1)",
    "MaxPool((2, 2))",
    "MaxPool((3, 3), pad=1, stride=2)",
    "MeanPool((2, 3), stride=1)",
    "GlobalMeanPool()",
    "flatten",
    "BatchNorm(8, relu)",
    "BatchNorm(4, affine=false, track_stats=false, eps=0.001, momentum=0.2, active=true)",
    "Dropout(0.5)",
    "Dropout(0.25, active=false)",
    "Dropout(0.5, dims=3)",
    "Dropout(0.1, dims=(1, 2))",
    "leakyrelu",
    "Chain(Conv((3, 3), 1 => 8, relu), MaxPool((2, 2)), Conv((3, 3), 8 => 16, relu), MaxPool((2, 2)), flatten, "
    "Dense(400 => 10))",
    "Chain(Chain(Dense(3 => 4, elu), BatchNorm(4)), Dropout(0.1), Dense(4 => 2, gelu), swish, softmax)",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(text):
    m = parse(text, seed=0)
    assert str(m) == text
    m2 = parse(str(m), seed=1)
    assert str(m2) == str(m) and type(m2) is type(m)
    p1, p2 = m.params(), m2.params()
    assert list(p1) == list(p2)
    assert all(p1[k].shape == p2[k].shape and p1[k].dtype == p2[k].dtype == np.float32 for k in p1)


def test_round_trip_from_python_objects():
    m = Chain(Conv((3, 2), (1, 4), pfc.tanh, stride=(1, 2), pad=(2, 1), seed=0), MeanPool((2, 2), pad=(1, 0)),
              CrossCor((2, 2), 4, 3, dilation=(1, 2)), GlobalMeanPool(), pfc.flatten, BatchNorm(3, pfc.σ),
              Dense(3, 2, bias=False), Dropout(0.3))
    m2 = parse(str(m))
    assert str(m2) == str(m)
    for (path, a), (_, b) in zip(m.walk(), m2.walk()):
        assert type(a) is type(b), path
        for attr in ("stride", "pad", "dilation", "k", "activation", "p", "chs"):
            assert getattr(a, attr, None) == getattr(b, attr, None), (path, attr)


def test_seeded_and_flux_default_init():
    a, b, c = parse("Dense(10 => 20)", seed=3), parse("Dense(10 => 20)", seed=3), parse("Dense(10 => 20)", seed=4)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)
    np.testing.assert_array_equal(parse("Dense(10 => 20)", rng=np.random.default_rng(3)).weight, a.weight)
    assert not a.bias.any() and np.abs(a.weight).max() <= np.sqrt(6 / 30)
    with pytest.raises(ValueError, match="either seed or rng"):
        parse("Dense(1 => 1)", seed=1, rng=np.random.default_rng())


def test_julia_forms():
    m = parse("Chain(Dense(784, 128, NNlib.relu), Flux.flatten, Dense(128=>10,σ), Flux.BatchNorm(10, ϵ=1f-3,"
              " momentum=0.1f0), Dropout(0.5; dims=:))")
    assert str(m) == "Chain(Dense(784 => 128, relu), flatten, Dense(128 => 10, σ), BatchNorm(10, eps=0.001), " \
                     "Dropout(0.5))"
    assert m[3].eps == pytest.approx(1e-3) and m[3].momentum == pytest.approx(0.1)
    assert str(parse("Dense(2 => 3, sigmoid; bias = false)")) == "Dense(2 => 3, σ; bias=false)"
    assert str(parse("Dense(2 => 3, bias=false)")) == "Dense(2 => 3; bias=false)"
    assert str(parse("Conv((3,3), 1, 8, relu; stride=2, pad=SamePad())")) == \
        "Conv((3, 3), 1 => 8, relu, pad=1, stride=2)"
    assert parse("  MaxPool( (2,2), stride = (1, 1), )  ").stride == (1, 1)
    assert parse("Chain(Dense(1_000 => 2))")[0].weight.shape == (2, 1000)
    assert parse("BatchNorm(3, active=nothing)").active is None
    assert isinstance(parse("GlobalMeanPool()"), GlobalMeanPool)
    assert parse("Flatten()") is not pfc.flatten and str(parse("Flatten()")) == "flatten"
    for cls, text in [(Conv, "Conv((1,1),1=>1)"), (CrossCor, "CrossCor((1,1),1=>1)"), (MaxPool, "MaxPool((1,1))"),
                      (MeanPool, "MeanPool((1, 1))"), (BatchNorm, "BatchNorm(1)"), (Dropout, "Dropout(0)"),
                      (Dense, "Dense(1=>1)")]:
        assert type(parse(text)) is cls


@pytest.mark.parametrize("text,pos,token,msg", [
    ("Chain(Dense(2 => 3), Foo(3))", 21, "Foo", "unknown layer or function 'Foo'"),
    ("Chain(Dense(2 => 3, rleu))", 20, "rleu", "unknown activation 'rleu'"),
    ("Chain(Dense(2 => 3)", 19, "<end of text>", "unclosed '('"),
    ("Dense(2 => 3) extra", 14, "extra", "unexpected text after the model"),
    ("Dense(2 => 3 @)", 13, "@", "unexpected character '@'"),
    ("Dense(2 => 3; relu)", 14, "relu", "expected keyword=value after ';'"),
    ("Dense(2 => 3; bias=maybe)", 0, "Dense", "bias must be true or false"),
    ("Conv((3, 3), 1 => 8; strides=2)", 0, "Conv", "unknown keyword 'strides'"),
    ("Chain(Dense(2 => 3), 5)", 0, "Chain", "expected a layer"),
    ("Torch.relu", 0, "Torch.relu", "unknown module 'Torch'"),
    ("", 0, "<end of text>", "empty model text"),
    ("Chain(Dense(2 => 3),, relu)", 20, ",", "unexpected token"),
    ("Dense(2 => 3, relu, 5)", 0, "Dense", "too many positional arguments"),
])
def test_syntax_errors(text, pos, token, msg):
    with pytest.raises(FluxSyntaxError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.position == pos and err.token == token, str(err)
    assert msg in str(err) and f"position {pos}" in str(err)


def test_parse_rejects_non_text():
    with pytest.raises(ValueError, match="must be a str"):
        parse(42)


def test_parse_reads_flux_repl_display_and_summary():
    flux_show = """Chain(
  Dense(784 => 128, relu),              # 100_480 parameters
  Dense(128 => 64, relu),               # 8_256 parameters
  Dense(64 => 10),                      # 650 parameters
)                   # Total: 6 arrays, 109_386 parameters, 427.477 KiB."""
    m = parse(flux_show, seed=0)
    assert str(m) == "Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))"
    cnn = parse("Chain(Conv((3, 3), 1 => 8, relu), MaxPool((2, 2)), flatten, Dense(1352 => 10))")
    assert str(parse(cnn.summary((1, 28, 28)))) == str(cnn)
