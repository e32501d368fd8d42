"""Read a chain-shaped ONNX model back into a Flux-style ``Chain``.

Supported ONNX ops (one input tensor flowing through; weights are initializers or ``Constant`` nodes):

=====================================  ==========================================================
ONNX                                   Flux layer
=====================================  ==========================================================
Gemm (transA=0, alpha=beta=1)          Dense (``transB=1``: B is Flux's ``(out, in)`` weight as is)
MatMul [+ Add bias]                    Dense (weight = B transposed)
Conv (2-D)                             Conv: the cross-correlation kernel is flipped back to Flux's
                                       true-convolution ``(kw, kh, cin, cout)`` kernel
MaxPool / AveragePool                  MaxPool / MeanPool (AveragePool needs count_include_pad=1
                                       unless there is no padding, as NNlib counts padding)
GlobalAveragePool                      GlobalMeanPool
Flatten(axis=1), Reshape to (N, -1)    flatten (C-order flatten of NCHW == Flux's flatten)
BatchNormalization                     BatchNorm (running statistics)
Relu Sigmoid Tanh Softmax(last axis)   activations (folded into the preceding Dense/Conv/BatchNorm,
LeakyRelu Elu Gelu(tanh)               as Flux writes ``Dense(784 => 128, relu)``)
x*Sigmoid(x), composed tanh-gelu       swish, gelu (the patterns our exporter writes)
Dropout, Identity                      dropped
=====================================  ==========================================================

This covers what ``torch.onnx.export(..., dynamo=False)`` writes for an ``nn.Sequential`` of
Linear/ReLU/Conv2d/MaxPool2d/Flatten. Anything else raises ``ValueError`` naming the node and the supported ops. Each op is read by the ``from_onnx``
of the registered layer declaring it in ``onnx_ops`` (the first registered wins); this module only walks.
Loading never executes code: the file is parsed as a protobuf only.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ...model import registry
from ...model.activations import Activation, gelu, identity, swish


def supported_ops() -> str:
    """The ONNX ops registered layers import (``onnx_ops``; layers first, then activations) and patterns."""
    classes = sorted(registry.registered(), key=lambda c: c is Activation)
    ops = dict.fromkeys(op for c in classes for op in getattr(c, "onnx_ops", ()))
    return ", ".join([*ops, "Add (bias)", "Constant", "swish/gelu patterns"])


def load_onnx_proto(path: str | os.PathLike):
    """Parse an ``.onnx`` file; clear ``FileNotFoundError`` / ``ValueError`` for a missing or corrupt file."""
    import onnx

    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path: expected a path to an .onnx file; got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file {path!r} does not exist")
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError / RuntimeWarning variants
        raise ValueError(f"{path!r} is not a valid ONNX model (protobuf parse failed: {err})") from None
    if len(model.graph.node) == 0 or len(model.graph.input) == 0:
        raise ValueError(f"{path!r} is not a valid ONNX model (empty graph)")
    return model


def import_onnx(path: str | os.PathLike):
    """Read ``path`` into a ``Chain`` (see the module docstring for the op table).

    Returns a Chain whose float32 forward equals onnxruntime's output on the same file (batch-first data).
    """
    model = load_onnx_proto(path)
    return chain_from_proto(model, where=os.fspath(path))


def chain_from_proto(model: Any, where: str = "model"):
    """Build a Chain from an ``onnx.ModelProto``."""
    from onnx import numpy_helper

    from ...model.chain import Chain

    g = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for st in g.sparse_initializer:
        consts[st.values.name] = _densify(st)
    inputs = [i.name for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ValueError(f"{where}: only single-input single-output chain graphs import; "
                         f"inputs {inputs}, outputs {[o.name for o in g.output]}")
    reader = _ChainReader(list(g.node), consts, inputs[0], where)
    layers = reader.read(g.output[0].name)
    return Chain(*_fold_activations(layers))


def _densify(st: Any) -> np.ndarray:
    from onnx import numpy_helper

    values = numpy_helper.to_array(st.values)
    idx = numpy_helper.to_array(st.indices).astype(np.int64)
    dims = tuple(int(d) for d in st.dims)
    dense = np.zeros(int(np.prod(dims)), dtype=values.dtype)
    if idx.ndim == 2:  # [nnz, rank] coordinate form
        idx = np.ravel_multi_index(tuple(idx.T), dims)
    dense[idx] = values
    return dense.reshape(dims)


class _ChainReader:
    """Walks the nodes from the graph input to the output, one layer at a time."""

    def __init__(self, nodes: list, consts: dict[str, np.ndarray], x: str, where: str):
        self.nodes = nodes
        self.consts = consts
        self.current = x
        self.where = where
        self.consumers: dict[str, list] = {}
        for n in nodes:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = _constant_value(n)
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.order = {id(n): k for k, n in enumerate(nodes)}

    # -- helpers for the layers' from_onnx ----------------------------------------------------------
    def error(self, node: Any, msg: str) -> ValueError:
        return ValueError(f"{self.where}: node {node.name or node.op_type!r} ({node.op_type}): {msg}; "
                          f"supported ops: {supported_ops()}")

    def attrs(self, node: Any) -> dict[str, Any]:
        return _attrs(node)

    def has_input(self, node: Any, i: int) -> bool:
        return len(node.input) > i and bool(node.input[i])

    def const(self, node: Any, i: int) -> np.ndarray:
        """Input ``i`` of ``node``, which must be a constant (initializer or Constant node)."""
        name = node.input[i]
        if name not in self.consts:
            raise self.error(node, f"input {name!r} must be a constant (initializer)")
        return self.consts[name]

    def bias_after(self, node: Any) -> np.ndarray | None:
        """If the only consumer of ``node``'s output is ``Add(out, const)``, consume it and return the const."""
        out = node.output[0]
        cons = self.consumers.get(out, [])
        if len(cons) == 1 and cons[0].op_type == "Add":
            add = cons[0]
            other = add.input[1] if add.input[0] == out else add.input[0]
            if other in self.consts:
                self.advanced = add.output[0]
                return self.consts[other]
        return None

    def _next(self) -> list:
        return [n for n in self.consumers.get(self.current, []) if n.op_type != "Constant"]

    # -- walk --------------------------------------------------------------------------------------
    def read(self, output: str) -> list:
        """Translate nodes from the input tensor until ``output``; returns the (unfolded) layer list."""
        layers: list = []
        while self.current != output:
            nxt = self._next()
            if not nxt:
                raise ValueError(f"{self.where}: tensor {self.current!r} is not consumed and is not the output")
            if len(nxt) > 1:  # x feeds several nodes: an activation written as a small subgraph
                layers.append(self._pattern(nxt))
                continue
            node = nxt[0]
            classes = registry.by_onnx_op(node.op_type)
            if not classes:
                raise self.error(node, "no Flux mapping")
            self.advanced = None
            layer = classes[0].from_onnx(node, self)
            self.current = self.advanced or node.output[0]  # past a consumed bias Add, if any
            if layer is not None:
                layers.append(layer)
        return layers

    def _pattern(self, consumers: list):
        """A multi-consumer region (x used by several nodes) that closes on one tensor: swish or composed gelu."""
        start = min(self.order[id(n)] for n in consumers)
        live = {self.current}
        region: list = []
        for n in self.nodes[start:]:
            if not any(i in live for i in n.input):
                continue
            region.append(n)
            live.update(n.output)
            out = n.output[0]
            open_ = [t for t in live if t != out and any(c not in region for c in self.consumers.get(t, []))]
            if not open_:
                break
        ops = sorted(n.op_type for n in region)
        if ops == ["Mul", "Sigmoid"]:
            act = swish
        elif ops == ["Add", "Add", "Mul", "Mul", "Mul", "Mul", "Mul", "Mul", "Tanh"] and self._gelu_consts(region):
            act = gelu
        else:
            raise ValueError(f"{self.where}: the subgraph {[n.op_type for n in region]} after tensor "
                             f"{self.current!r} is not a supported pattern (swish, tanh-gelu); "
                             f"supported ops: {supported_ops()}")
        self.current = region[-1].output[0]
        return act

    def _gelu_consts(self, region: list) -> bool:
        vals = [float(self.consts[i].reshape(-1)[0]) for n in region for i in n.input
                if i in self.consts and self.consts[i].size == 1]
        want = (0.5, 1.0, 0.044715, math.sqrt(2 / math.pi))
        return all(any(math.isclose(v, w, rel_tol=1e-5) for v in vals) for w in want)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _constant_value(node: Any) -> np.ndarray:
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.array(a.f if a.name == "value_float" else a.i)
        if a.name in ("value_floats", "value_ints"):
            return np.array(list(a.floats) if a.name == "value_floats" else list(a.ints))
    raise ValueError(f"Constant node {node.name!r}: unsupported value attribute")


def _fold_activations(layers: list) -> list:
    """``[Dense(identity), relu]`` -> ``[Dense(relu)]`` (any layer with an identity ``activation``), as Flux
    models are written."""
    out: list = []
    for layer in layers:
        prev = out[-1] if out else None
        if isinstance(layer, Activation) and getattr(prev, "activation", None) is identity:
            prev.activation = layer
            continue
        out.append(layer)
    return out
