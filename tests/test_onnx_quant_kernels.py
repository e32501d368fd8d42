"""Which quantized convolutions run as integer kernels in onnxruntime's CPU provider (docs/deployment.md, "Integer
kernels for grouped, depthwise and transposed convolutions"): what our QDQ export writes for depthwise Conv and
ConvTranspose, and what onnxruntime's graph optimizer makes of it.

Facts pinned here (onnxruntime 1.32): ``DQ -> Conv(group=g) -> Q`` becomes ``QLinearConv`` for g = 1 and for a
depthwise g = C; ``DQ -> ConvTranspose -> Q`` is not fused (no QDQ selector, and the contrib
``com.microsoft:QLinearConvTranspose`` is not registered), so ConvTranspose always runs in float; ``ConvInteger``
accepts ``group``. If an onnxruntime upgrade changes one of these, this test fails and the docs need the update.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import pyflux_compress as pfc  # noqa: E402

ARCH = ("Chain(Conv((3, 3), 1 => 8, relu; pad=1), DepthwiseConv((3, 3), 8 => 8, relu; pad=1), "
        "Conv((1, 1), 8 => 8, relu), ConvTranspose((2, 2), 8 => 4, relu; stride=2), GlobalMeanPool(), flatten, "
        "Dense(4 => 3))")


def _optimized(model_bytes: bytes, tmp_path) -> list:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return list(onnx.load(so.optimized_model_filepath).graph.node)


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def test_qdq_export_of_depthwise_and_transposed_convs(rng, tmp_path):
    m = pfc.parse(ARCH, seed=1)
    x = rng.random((16, 1, 8, 8), dtype=np.float32)
    q = pfc.quantize(m, bits=8, granularity="per_channel", calibration=x, scheme="affine")
    path = pfc.export_onnx(q, tmp_path / "q.onnx", format="qdq")
    g = onnx.load(path).graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    convs = [n for n in g.node if n.op_type in ("Conv", "ConvTranspose")]
    assert [(n.op_type, _group(n)) for n in convs] == [("Conv", 1), ("Conv", 8), ("Conv", 1), ("ConvTranspose", 1)]
    for n in convs[:3]:          # int8 per-channel weights behind DequantizeLinear(axis=0); input through Q/DQ
        dq = producer[n.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.int8
        assert inits[dq.input[1]].shape == (inits[dq.input[0]].shape[0],)
        assert producer[n.input[0]].op_type == "DequantizeLinear"
    assert inits[producer[convs[1].input[1]].input[0]].shape == (8, 1, 3, 3)       # depthwise: (C, 1, kh, kw)
    # ConvTranspose stays float in a quantized model: its weight is a float32 initializer, no DQ in front
    assert inits[convs[3].input[1]].dtype == np.float32 and convs[3].input[1] not in producer

    # onnxruntime: the stem and the depthwise conv (each followed by a QDQ pair) run as QLinearConv, the
    # depthwise one with group=8; the 1x1 conv feeding the float ConvTranspose and the ConvTranspose run in float
    ops = [(n.op_type, _group(n)) for n in _optimized(open(path, "rb").read(), tmp_path)
           if "Conv" in n.op_type or "Gemm" in n.op_type]
    assert ops == [("QLinearConv", 1), ("QLinearConv", 8), ("FusedConv", 1), ("ConvTranspose", 1), ("QGemm", 1)]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    want = q(x)
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()


def _qdq_model(op: str, w_shape: tuple, group: int, **attrs) -> bytes:
    u8 = lambda v: np.array(v, np.uint8)    # noqa: E731
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    inits = {"x_s": f32(0.02), "x_zp": u8(128), "y_s": f32(0.05), "y_zp": u8(128), "w_s": f32(0.01), "w_zp": u8(128),
             "W": np.random.default_rng(0).integers(0, 255, w_shape).astype(np.uint8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["W", "w_s", "w_zp"], ["wd"]),
             helper.make_node(op, ["xd", "wd"], ["c"], group=group, **attrs),
             helper.make_node("QuantizeLinear", ["c", "y_s", "y_zp"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "y_s", "y_zp"], ["y"])]
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


@pytest.mark.parametrize("op, w_shape, group, fused", [
    ("Conv", (8, 8, 3, 3), 1, "QLinearConv"), ("Conv", (8, 1, 3, 3), 8, "QLinearConv"), ("Conv", (8, 2, 3, 3), 4, "QLinearConv"),
    ("ConvTranspose", (8, 4, 2, 2), 1, "ConvTranspose"), ("ConvTranspose", (8, 1, 2, 2), 8, "ConvTranspose"),
])
def test_onnxruntime_fuses_qdq_conv_with_groups_but_not_conv_transpose(op, w_shape, group, fused, tmp_path):
    nodes = _optimized(_qdq_model(op, w_shape, group, strides=[2, 2] if op == "ConvTranspose" else [1, 1]),
                       tmp_path)
    counts = collections.Counter(n.op_type for n in nodes)
    assert counts[fused] == 1 and (fused != "QLinearConv" or counts["Conv"] == 0)
    assert [_group(n) for n in nodes if n.op_type == fused] == [group]


def test_onnxruntime_has_no_integer_conv_transpose_but_grouped_conv_integer():
    u8 = TensorProto.UINT8
    qct = helper.make_node("QLinearConvTranspose", ["x", "s", "zp", "W", "s", "zp", "s", "zp"], ["y"],
                           domain="com.microsoft", strides=[2, 2])
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "zp"),
             numpy_helper.from_array(np.full((8, 4, 2, 2), 130, np.uint8), "W")]
    graph = helper.make_graph([qct], "qct", [helper.make_tensor_value_info("x", u8, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", u8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    with pytest.raises(Exception, match="QLinearConvTranspose.*not a registered"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # ConvInteger (u8 activations, s8 weights) with group = C runs: a depthwise integer conv exists
    ci = helper.make_node("ConvInteger", ["x", "W", "xzp", "wzp"], ["y"], group=8)
    w = np.random.default_rng(1).integers(-127, 127, (8, 1, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(128, np.uint8), "xzp"),
             numpy_helper.from_array(np.array(0, np.int8), "wzp")]
    graph = helper.make_graph([ci], "ci", [helper.make_tensor_value_info("x", u8, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    xq = np.random.default_rng(2).integers(0, 255, (1, 8, 6, 6)).astype(np.uint8)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": xq})[0]
    # channel c only sees input channel c: compare one output with the integer sum by hand
    ref = ((xq[0, 3, 1:4, 2:5].astype(np.int32) - 128) * w[3, 0]).sum()
    assert y.dtype == np.int32 and y.shape == (1, 8, 4, 4) and y[0, 3, 1, 2] == ref
