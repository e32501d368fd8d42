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
Linear/ReLU/Conv2d/MaxPool2d/Flatten. Anything else raises ``ValueError`` naming the node and the supported ops.
Loading never executes code: the file is parsed as a protobuf only.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ._export import onnx_conv_to_flux

SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "Flatten", "Reshape", "BatchNormalization", "Relu", "Sigmoid", "Tanh", "Softmax", "LeakyRelu",
                 "Elu", "Gelu", "Dropout", "Identity", "Constant", "swish/gelu patterns")


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
    nodes = _fold_constants(list(g.node), consts)
    inputs = [i.name for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ValueError(f"{where}: only single-input single-output chain graphs import; "
                         f"inputs {inputs}, outputs {[o.name for o in g.output]}")
    reader = _ChainReader(nodes, consts, inputs[0], where)
    layers = reader.read(g.output[0].name)
    return Chain(*_fold_activations(layers))


def _fold_constants(nodes: list, consts: dict[str, np.ndarray]) -> list:
    """Evaluate the constant-only nodes of a sparse weight (``ConstantOfShape -> ScatterElements(axis=0) ->
    Reshape``, as ``export_onnx(sparse=True)`` writes it) into ``consts``; returns the other nodes."""
    from onnx import helper, numpy_helper

    rest = []
    for n in nodes:  # nodes are topologically sorted: a folded output is known before its consumers
        ins = [consts.get(i) for i in n.input]
        if n.op_type == "ConstantOfShape" and ins and ins[0] is not None:
            value = next((numpy_helper.to_array(helper.get_attribute_value(a)) for a in n.attribute
                          if a.name == "value"), np.zeros(1, np.float32))
            consts[n.output[0]] = np.full(tuple(int(d) for d in ins[0]), value.reshape(-1)[0], value.dtype)
        elif n.op_type == "ScatterElements" and all(v is not None and v.ndim == 1 for v in ins):
            out = ins[0].copy()
            out[ins[1].astype(np.int64)] = ins[2]
            consts[n.output[0]] = out
        elif n.op_type == "Reshape" and len(ins) == 2 and all(v is not None for v in ins):
            consts[n.output[0]] = ins[0].reshape(tuple(int(d) for d in ins[1]))
        else:
            rest.append(n)
    return rest


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

    # -- helpers -----------------------------------------------------------------------------------
    def _err(self, node: Any, msg: str) -> ValueError:
        return ValueError(f"{self.where}: node {node.name or node.op_type!r} ({node.op_type}): {msg}; "
                          f"supported ops: {', '.join(SUPPORTED_OPS)}")

    def _const(self, node: Any, name: str) -> np.ndarray:
        if name not in self.consts:
            raise self._err(node, f"input {name!r} must be a constant (initializer)")
        return self.consts[name]

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
            layer = self._layer(node)
            if isinstance(layer, _Consumed):  # the translator swallowed a following node and moved on
                layer = layer.layer
            else:
                self.current = node.output[0]
            if layer is not None:
                layers.append(layer)
        return layers

    def _layer(self, node: Any):
        from ...model import activations as A
        from ...model import layers as L

        op, attrs = node.op_type, _attrs(node)
        if op == "Gemm":
            return self._gemm(node, attrs)
        if op == "MatMul":
            return self._matmul(node)
        if op == "Conv":
            return self._conv(node, attrs)
        if op in ("MaxPool", "AveragePool"):
            return self._pool(node, attrs)
        if op == "GlobalAveragePool":
            return L.GlobalMeanPool()
        if op == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise self._err(node, f"Flatten axis must be 1 (batch-first); got {attrs.get('axis')}")
            return L.flatten
        if op == "Reshape":
            shape = self._const(node, node.input[1]).astype(np.int64).tolist()
            if len(shape) == 2 and (shape[1] == -1 or shape[0] in (0, -1)):  # (N, -1), (0, -1), (-1, F)
                return L.flatten
            raise self._err(node, f"only Reshape to (N, -1) (a flatten) imports; got shape {shape}")
        if op == "BatchNormalization":
            return self._batchnorm(node, attrs)
        if op in ("Dropout", "Identity"):
            return None
        simple = {"Relu": A.relu, "Sigmoid": A.sigmoid, "Tanh": A.tanh}
        if op in simple:
            return simple[op]
        if op == "Softmax":
            if attrs.get("axis", -1) not in (-1, 1):
                raise self._err(node, f"Softmax must be over the feature axis (-1); got axis {attrs.get('axis')}")
            return A.softmax
        if op == "LeakyRelu":
            return self._with_param(node, A.leakyrelu, attrs.get("alpha", 0.01), 0.01)
        if op == "Elu":
            return self._with_param(node, A.elu, attrs.get("alpha", 1.0), 1.0)
        if op == "Gelu":
            if attrs.get("approximate", b"none") not in ("tanh", b"tanh"):
                raise self._err(node, "only the tanh approximation of Gelu is NNlib's gelu")
            return A.gelu
        raise self._err(node, "no Flux mapping")

    def _with_param(self, node: Any, act: Any, value: float, expected: float):
        if not math.isclose(float(value), expected, rel_tol=1e-6):
            raise self._err(node, f"alpha {value} differs from NNlib's default {expected}")
        return act

    def _bias_after(self, out: str):
        """If the only consumer of ``out`` is ``Add(out, const)``, consume it and return the bias."""
        cons = self.consumers.get(out, [])
        if len(cons) == 1 and cons[0].op_type == "Add":
            add = cons[0]
            other = add.input[1] if add.input[0] == out else add.input[0]
            if other in self.consts:
                return self.consts[other], add.output[0]
        return None, out

    def _gemm(self, node: Any, attrs: dict):
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise self._err(node, "only Gemm with transA=0, alpha=1, beta=1 imports")
        w = self._const(node, node.input[1]).astype(np.float32)
        w = w if attrs.get("transB", 0) else w.T  # Flux weight is (out, in)
        bias = self._const(node, node.input[2]).astype(np.float32) if len(node.input) > 2 and node.input[2] else None
        if bias is not None and bias.size != w.shape[0]:
            raise self._err(node, f"bias of size {bias.size} does not broadcast as a per-output bias")
        return _dense(w, None if bias is None else bias.reshape(-1))

    def _matmul(self, node: Any):
        w = self._const(node, node.input[1]).astype(np.float32)
        if w.ndim != 2:
            raise self._err(node, f"MatMul weight must be 2-D; got shape {w.shape}")
        bias, out = self._bias_after(node.output[0])
        layer = _dense(np.ascontiguousarray(w.T), None if bias is None else bias.astype(np.float32).reshape(-1))
        self.current = out  # after the bias Add when there was one
        return _Consumed(layer)

    def _conv(self, node: Any, attrs: dict):
        from ...model import layers as L

        w = self._const(node, node.input[1]).astype(np.float32)
        if w.ndim != 4:
            raise self._err(node, f"only 2-D Conv imports (weight ndim {w.ndim})")
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self._err(node, "auto_pad is not supported; export with explicit pads")
        group = int(attrs.get("group", 1))
        kernel = onnx_conv_to_flux(w, flipped=True)  # Flux Conv flips, so flip back what ONNX correlates with
        if group != 1:
            raise self._err(node, f"grouped convolution (group={group}) is not supported by Flux Conv here")
        bias = self._const(node, node.input[2]).astype(np.float32) if len(node.input) > 2 and node.input[2] else None
        return L.Conv(kernel, False if bias is None else bias.reshape(-1), **_spatial_from_onnx(attrs))

    def _pool(self, node: Any, attrs: dict):
        from ...model import layers as L

        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or attrs.get("ceil_mode", 0):
            raise self._err(node, "auto_pad / ceil_mode pooling has no Flux equivalent")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise self._err(node, "dilated pooling has no Flux equivalent")
        kh, kw = attrs["kernel_shape"]
        sp = _spatial_from_onnx(attrs)
        if node.op_type == "AveragePool" and any(sp["pad"]) and not attrs.get("count_include_pad", 0):
            raise self._err(node, "NNlib's meanpool counts padding: need count_include_pad=1")
        cls = L.MaxPool if node.op_type == "MaxPool" else L.MeanPool
        return cls((kw, kh), pad=sp["pad"], stride=sp["stride"])

    def _batchnorm(self, node: Any, attrs: dict):
        from ...model import layers as L

        scale, b, mean, var = (self._const(node, n).astype(np.float32) for n in node.input[1:5])
        eps = float(f"{float(attrs.get('epsilon', 1e-5)):.7g}")  # ONNX stores float32: 1e-5 -> 9.99999975e-06
        layer = L.BatchNorm(int(scale.size), eps=eps)
        layer.gamma, layer.beta, layer.mu, layer.sigma2 = scale.copy(), b.copy(), mean.copy(), var.copy()
        return layer

    def _pattern(self, consumers: list):
        """A multi-consumer region (x used by several nodes) that closes on one tensor: swish or composed gelu."""
        from ...model import activations as A

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
            act = A.swish
        elif ops == ["Add", "Add", "Mul", "Mul", "Mul", "Mul", "Mul", "Mul", "Tanh"] and self._gelu_consts(region):
            act = A.gelu
        else:
            raise ValueError(f"{self.where}: the subgraph {[n.op_type for n in region]} after tensor "
                             f"{self.current!r} is not a supported pattern (swish, tanh-gelu); "
                             f"supported ops: {', '.join(SUPPORTED_OPS)}")
        self.current = region[-1].output[0]
        return act

    def _gelu_consts(self, region: list) -> bool:
        vals = [float(self.consts[i].reshape(-1)[0]) for n in region for i in n.input
                if i in self.consts and self.consts[i].size == 1]
        want = (0.5, 1.0, 0.044715, math.sqrt(2 / math.pi))
        return all(any(math.isclose(v, w, rel_tol=1e-5) for v in vals) for w in want)


class _Consumed:
    """Wraps a layer whose translator already advanced ``current`` (e.g. MatMul that swallowed its bias Add)."""

    def __init__(self, layer: Any):
        self.layer = layer


def _dense(w: np.ndarray, bias: np.ndarray | None):
    from ...model import layers as L

    w = np.ascontiguousarray(w, dtype=np.float32)
    return L.Dense(w, False if bias is None else np.ascontiguousarray(bias, dtype=np.float32))


def _spatial_from_onnx(attrs: dict) -> dict[str, Any]:
    """ONNX [H, W]-ordered attributes -> Flux's W-first ``stride``, ``pad`` and (conv) ``dilation``."""
    sh, sw = attrs.get("strides", [1, 1])
    h_lo, w_lo, h_hi, w_hi = attrs.get("pads", [0, 0, 0, 0])
    out: dict[str, Any] = {"stride": (int(sw), int(sh)), "pad": (int(w_lo), int(w_hi), int(h_lo), int(h_hi))}
    if "dilations" in attrs or "kernel_shape" in attrs:
        dh, dw = attrs.get("dilations", [1, 1])
        out["dilation"] = (int(dw), int(dh))
    return out


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
    """``[Dense(identity), relu]`` -> ``[Dense(relu)]`` (and for Conv / BatchNorm), as Flux models are written."""
    from ._export import activation_name, is_activation, layer_kind

    out: list = []
    for layer in layers:
        prev = out[-1] if out else None
        if (is_activation(layer) and prev is not None and layer_kind(prev) in ("Dense", "Conv", "BatchNorm")
                and activation_name(getattr(prev, "activation", None)) == "identity"):
            prev.activation = layer
            continue
        out.append(layer)
    return out
