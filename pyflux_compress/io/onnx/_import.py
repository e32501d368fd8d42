"""Read an ONNX model back into a Flux-style ``Chain``, branches included.

Supported ONNX ops (one graph input; weights are initializers or ``Constant`` nodes):

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

Forks (a tensor read by several nodes) are read up to their join (the first node after which one tensor is live
again). A join ``Add``/``Sum``/``Concat`` of separable branches goes to the containers' ``from_onnx_join``
hooks (the fork tensor itself read by the join -> ``SkipConnection(inner, + or cat)``; else ``Parallel``);
otherwise an activation pattern or a layer's ``from_onnx_region`` hook (LayerNorm, MultiHeadAttention).
Branches are read recursively with the same walker.

This covers what ``torch.onnx.export(..., dynamo=False)`` writes for an ``nn.Sequential`` of
Linear/ReLU/Conv2d/MaxPool2d/Flatten. Anything else raises ``ValueError`` naming the node and the supported ops. Each op is read by the ``from_onnx``
of the registered layer declaring it in ``onnx_ops`` (the first registered wins); this module only walks.
Loading never executes code: the file is parsed as a protobuf only.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterator

import numpy as np

from ...model import registry
from ...model.activations import Activation, gelu, identity, swish


def supported_ops() -> str:
    """The ONNX ops registered layers import (``onnx_ops``; layers first, then activations) and patterns."""
    classes = sorted(registry.registered(), key=lambda c: c is Activation)
    ops = dict.fromkeys(op for c in classes for op in getattr(c, "onnx_ops", ()))
    return ", ".join([*ops, "Add (bias)", "Constant", "swish/gelu patterns"])


# -- loading: bounded, external data confined to the model's folder ------------------------------------------
# The file is parsed as a protobuf only. Before any tensor becomes an array, its element count is checked against
# the bytes that hold it (a tiny file cannot declare a huge dense tensor), sparse tensors against a stated dense
# size limit, and external data files against the model's folder: ``location`` is resolved relative to the
# folder of the .onnx file (as the ONNX spec says, not the current directory) and must stay inside it.

MAX_DENSE_BYTES_ENV = "PYFLUX_ONNX_MAX_BYTES"
DEFAULT_MAX_DENSE_BYTES = 1 << 30  # 1 GiB: dense size of all sparse initializers together


class OnnxLoadError(ValueError):
    """An ONNX file that cannot be read safely (corrupt, inconsistent sizes, external data outside its folder)."""


def max_dense_bytes(value: int | None = None) -> int:
    """The dense-size budget for sparse initializers: ``value``, else ``$PYFLUX_ONNX_MAX_BYTES``, else 1 GiB."""
    if value is None:
        env = os.environ.get(MAX_DENSE_BYTES_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_DENSE_BYTES
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"${MAX_DENSE_BYTES_ENV} must be an integer number of bytes; got {env!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_bytes must be a positive int (bytes); got {value!r}")
    return value


def load_onnx_proto(path: str | os.PathLike, *, max_bytes: int | None = None):
    """Parse an ``.onnx`` file into a self-contained ``onnx.ModelProto`` (external data read in and checked).

    Raises ``FileNotFoundError`` for a missing model or external data file and :class:`OnnxLoadError` (a
    ``ValueError``) for a corrupt file, tensors whose sizes do not match their bytes, sparse tensors denser than
    ``max_bytes`` (see :func:`max_dense_bytes`), or external data outside the model's folder; each names the file.
    """
    import onnx

    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path: expected a path to an .onnx file; got {type(path).__name__}")
    path = os.fspath(path)
    budget = max_dense_bytes(max_bytes)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file {path!r} does not exist")
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError / RuntimeWarning variants
        raise OnnxLoadError(f"{path!r} is not a valid ONNX model (protobuf parse failed: {err})") from None
    if len(model.graph.node) == 0 or len(model.graph.input) == 0:
        raise OnnxLoadError(f"{path!r} is not a valid ONNX model (empty graph)")
    _read_external_data(model, path)
    _check_tensor_sizes(model, path, budget)
    return model


def _graph_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """``(description, TensorProto)`` of every tensor stored in the main graph (not in subgraphs)."""
    g = model.graph
    for t in g.initializer:
        yield f"initializer {t.name!r}", t
    for st in g.sparse_initializer:
        yield f"sparse initializer {st.values.name!r} (values)", st.values
        yield f"sparse initializer {st.values.name!r} (indices)", st.indices
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield f"node {n.name or n.op_type!r} attribute {a.name!r}", a.t
            for t in a.tensors:
                yield f"node {n.name or n.op_type!r} attribute {a.name!r}", t


def _read_external_data(model: Any, path: str) -> None:
    """Replace external-data references by the bytes they name, read from inside the model's folder only."""
    from onnx import TensorProto

    folder = os.path.dirname(os.path.abspath(path))
    real_folder = os.path.realpath(folder)
    for what, t in _graph_tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        if not location:
            raise OnnxLoadError(f"{path}: {what} stores external data without a location")
        # resolve symlinks too: a link inside the folder that points outside it is refused like "../x"
        target = os.path.realpath(os.path.join(folder, location))
        if os.path.isabs(location) or os.path.commonpath([real_folder, target]) != real_folder:
            raise OnnxLoadError(f"{path}: {what} names external data {location!r} outside the model's folder "
                                f"{folder!r}; refused (external data must be a file beside the model)")
        if not os.path.isfile(target):
            raise FileNotFoundError(f"{path}: {what} names external data file {location!r}, which does not "
                                    f"exist in {folder!r}")
        size = os.path.getsize(target)
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else size - offset
        except ValueError:
            raise OnnxLoadError(f"{path}: {what}: external data offset/length are not integers") from None
        want = _payload_bytes(t)
        if offset < 0 or length < 0 or offset + length > size or (want is not None and length != want):
            raise OnnxLoadError(f"{path}: {what}: external data {location!r} offset {offset}, length {length} "
                                f"does not fit the file ({size} bytes) or the tensor ({want} bytes)")
        with open(target, "rb") as fh:
            fh.seek(offset)
            t.raw_data = fh.read(length)
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]


def _elements(t: Any) -> int:
    n = 1
    for d in t.dims:  # Python ints: a product of huge dims cannot wrap around
        if d < 0:
            raise ValueError(f"negative dimension {d}")
        n *= int(d)
    return n


def _payload_bytes(t: Any) -> int | None:
    """Bytes ``raw_data`` must hold for ``t`` (None for types without a fixed item size, e.g. strings)."""
    from onnx import TensorProto, helper

    try:
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
    except Exception:  # noqa: BLE001 - unknown or undefined data type
        return None
    if dtype.kind in "OSU":
        return None
    packed = {getattr(TensorProto, k, -1): b for k, b in (("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6), ("UINT4", 4),
                                                          ("INT4", 4), ("FLOAT4E2M1", 4), ("UINT2", 2),
                                                          ("INT2", 2))}
    bits = packed.get(t.data_type, dtype.itemsize * 8)  # sub-byte types are packed, as onnx.helper packs them
    return -(-_elements(t) * bits // 8)


def _check_tensor_sizes(model: Any, path: str, budget: int) -> None:
    """Element counts vs bytes present for every tensor; dense size of sparse tensors vs ``budget``."""
    dense = 0
    for what, t in _graph_tensors(model):
        try:
            n = _elements(t)
        except ValueError as err:
            raise OnnxLoadError(f"{path}: {what}: {err}") from None
        if t.HasField("raw_data") or t.raw_data:
            want = _payload_bytes(t)
            if want is not None and want != len(t.raw_data):
                raise OnnxLoadError(f"{path}: {what}: dims {list(t.dims)} need {want} bytes; the file holds "
                                    f"{len(t.raw_data)}")
            continue
        present = (len(t.float_data) + len(t.int32_data) + len(t.int64_data) + len(t.double_data)
                   + len(t.uint64_data) + len(t.string_data))
        if n > 2 * present:  # complex types store two numbers per element, int4 two elements per int32
            raise OnnxLoadError(f"{path}: {what}: dims {list(t.dims)} declare {n} elements; the file holds "
                                f"{present} values")
    for st in model.graph.sparse_initializer:
        n = 1
        for d in st.dims:
            n *= max(int(d), 0)
        itemsize = _payload_bytes(st.values) or 0
        itemsize = itemsize // max(_elements(st.values), 1) or 4
        dense += n * itemsize
        if dense > budget:
            raise OnnxLoadError(f"{path}: sparse initializer {st.values.name!r} of dims {list(st.dims)} densifies "
                                f"past the {budget:,}-byte limit (raise it with max_bytes= or "
                                f"${MAX_DENSE_BYTES_ENV})")


def import_onnx(path: str | os.PathLike, *, max_bytes: int | None = None):
    """Read ``path`` into a ``Chain`` (see the module docstring for the op table).

    Returns a Chain whose float32 forward equals onnxruntime's output on the same file (batch-first data).
    ``max_bytes`` bounds the dense size of sparse initializers (default 1 GiB or ``$PYFLUX_ONNX_MAX_BYTES``).
    External data is read only from files inside the model's folder.
    """
    model = load_onnx_proto(path, max_bytes=max_bytes)
    where = os.fspath(path)
    try:
        return chain_from_proto(model, where=where)
    except (IndexError, KeyError, TypeError, OverflowError, MemoryError, AttributeError, ZeroDivisionError,
            RecursionError) as err:   # RecursionError: branches nested deeper than Python's stack
        # a hostile graph (odd attribute types, indices out of range) must not escape as a raw traceback
        raise OnnxLoadError(f"{where}: cannot read the graph ({type(err).__name__}: {err})") from None


def chain_from_proto(model: Any, where: str = "model"):
    """Build a Chain from an ``onnx.ModelProto``."""
    from ...model.chain import Chain

    g = model.graph
    consts: dict[str, np.ndarray] = {t.name: _to_array(t, where) for t in g.initializer}
    for st in g.sparse_initializer:
        consts[st.values.name] = _densify(st, where)
    nodes = _fold_constants(list(g.node), consts)
    inputs = [i.name for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ValueError(f"{where}: only single-input single-output chain graphs import; "
                         f"inputs {inputs}, outputs {[o.name for o in g.output]}")
    reader = _ChainReader(nodes, consts, inputs[0], where, shapes=_tensor_shapes(model))
    layers = reader.read(g.output[0].name)
    return Chain(*_fold_activations(layers))


def _tensor_shapes(model: Any) -> dict[str, tuple]:
    """Shape (None for a symbolic dim) of every tensor ONNX shape inference can tell: Concat axes -> Flux dims
    need the rank; {} if inference fails."""
    import onnx

    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - a graph shape inference cannot follow still imports as far as it can
        return {}
    return {vi.name: tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)
            for vi in (*g.input, *g.value_info, *g.output)
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")}


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
            shape = tuple(int(d) for d in ins[0])
            size = int(np.prod(shape, dtype=object)) * value.itemsize if shape else value.itemsize
            if min(shape, default=0) < 0 or size > max_dense_bytes(None):  # the same budget as sparse initializers
                raise OnnxLoadError(f"node {n.name!r}: ConstantOfShape of shape {list(shape)} exceeds the dense-size "
                                    f"limit (${MAX_DENSE_BYTES_ENV})")
            consts[n.output[0]] = np.full(shape, value.reshape(-1)[0], value.dtype)
        elif n.op_type == "ScatterElements" and all(v is not None and v.ndim == 1 for v in ins):
            out = ins[0].copy()
            out[ins[1].astype(np.int64)] = ins[2]
            consts[n.output[0]] = out
        elif n.op_type == "Reshape" and len(ins) == 2 and all(v is not None for v in ins):
            consts[n.output[0]] = ins[0].reshape(tuple(int(d) for d in ins[1]))
        else:
            rest.append(n)
    return rest


def _to_array(t: Any, where: str) -> np.ndarray:
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(t)
    except (ValueError, TypeError) as err:
        raise OnnxLoadError(f"{where}: tensor {t.name!r} cannot be read ({err})") from None


def _densify(st: Any, where: str = "model") -> np.ndarray:
    values = _to_array(st.values, where).reshape(-1)
    idx = _to_array(st.indices, where).astype(np.int64)
    dims = tuple(int(d) for d in st.dims)
    n = int(np.prod(dims, dtype=object)) if dims else 1
    flat = idx.reshape(-1) if idx.ndim == 1 else None
    if idx.ndim == 2 and idx.shape[1:] == (len(dims),) and idx.shape[0] == values.size:  # [nnz, rank] form
        bad = (idx < 0) | (idx >= np.asarray(dims, dtype=np.int64))
        if not bad.any():
            flat = np.ravel_multi_index(tuple(idx.T), dims)
    if flat is None or flat.size != values.size or (flat.size and (flat.min() < 0 or flat.max() >= n)):
        raise OnnxLoadError(f"{where}: sparse initializer {st.values.name!r}: indices of shape {idx.shape} do not "
                            f"address {values.size} values inside dims {list(dims)}")
    dense = np.zeros(n, dtype=values.dtype)
    dense[flat] = values
    return dense.reshape(dims)


class _ChainReader:
    """Walks the nodes from the graph input to the output, one layer at a time."""

    def __init__(self, nodes: list, consts: dict[str, np.ndarray], x: str, where: str,
                 shapes: dict[str, tuple] | None = None):
        self.nodes = nodes
        self.consts = consts
        self.current = x
        self.where = where
        self.shapes = shapes or {}
        self.allowed: set[int] | None = None     # ids of the nodes the current branch may read (None: all)
        self.consumers: dict[str, list] = {}
        for n in nodes:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = _constant_value(n)
            for i in dict.fromkeys(n.input):      # Mul(x, x) consumes x once
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

    def consumers_of(self, tensor: str) -> list:
        """The nodes of the current branch that read ``tensor``'s values. A Shape consumer reads only the
        tensor's shape (PyTorch builds an RNN's zero initial state as Shape -> ... -> ConstantOfShape): not a
        data path, and no fork; the layer using it checks what it built."""
        return [n for n in self.consumers.get(tensor, []) if n.op_type not in ("Constant", "Shape")
                and (self.allowed is None or id(n) in self.allowed)]

    def follow(self, tensor: str, op: str) -> Any:
        """The node reading ``tensor`` if it is the only reader and of type ``op``, else None (for hooks that
        take the nodes after a region, e.g. LayerNorm's scale ``Mul``/``Add``)."""
        cons = self.consumers_of(tensor)
        return cons[0] if len(cons) == 1 and cons[0].op_type == op else None

    def shape(self, tensor: str) -> tuple | None:
        """Shape of ``tensor`` (batch included; None for symbolic dims) from ONNX shape inference, or None."""
        return self.shapes.get(tensor)

    def rank(self, tensor: str) -> int | None:
        """Rank of ``tensor`` (batch included) from ONNX shape inference, None if unknown."""
        shape = self.shapes.get(tensor)
        return None if shape is None else len(shape)

    def _next(self) -> list:
        return self.consumers_of(self.current)

    # -- walk --------------------------------------------------------------------------------------
    def read(self, output: str) -> list:
        """Translate nodes from the input tensor until ``output``; returns the (unfolded) layer list."""
        layers: list = []
        steps = 0
        while self.current != output:
            steps += 1
            if steps > len(self.nodes):  # a cycle in the graph: each step must consume a new node
                raise ValueError(f"{self.where}: the graph loops back to tensor {self.current!r}; "
                                 "a chain graph must reach its output")
            nxt = self._next()
            if not nxt:
                raise ValueError(f"{self.where}: tensor {self.current!r} is not consumed and is not the output")
            if len(nxt) > 1:  # x feeds several nodes: a fork (branches, or a layer written as a subgraph)
                layers.extend(self._fork(nxt))
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

    # -- forks: branches that meet again (SkipConnection, Parallel) or a layer written as a subgraph ------------
    def _regions(self, consumers: list) -> Iterator[list]:
        """Growing regions from the fork at ``self.current``: each time a single tensor is live again (every path
        from the fork has met: a join), the nodes so far, in graph order. The smallest one some reading
        recognises wins (LayerNorm's subgraph has two such points, Sub and Div)."""
        start = min(self.order[id(n)] for n in consumers)
        live = {self.current}
        region: list = []
        inside: set[int] = set()
        for n in self.nodes[start:]:
            if (self.allowed is not None and id(n) not in self.allowed) or n.op_type == "Shape" \
                    or not any(i in live for i in n.input):
                continue
            region.append(n)
            inside.add(id(n))
            live.update(n.output)
            out = n.output[0]
            if not [t for t in live if t != out and any(id(c) not in inside for c in self.consumers_of(t))]:
                yield list(region)
                live = {out}       # past a join only its output can lead on

    def _fork(self, consumers: list) -> list:
        """Layers for the region starting at a tensor read by several nodes: ``SkipConnection`` (the join reads
        the fork tensor itself), ``Parallel`` (the join reads only branch outputs), an activation pattern (swish,
        tanh-gelu) or a layer whose ``from_onnx_region`` hook recognises the subgraph (LayerNorm,
        MultiHeadAttention)."""
        tried: list = []
        for region in self._regions(consumers):
            found = self._recognise(region)
            if found is not None:
                return found
            tried = region
        raise ValueError(f"{self.where}: the subgraph {[n.op_type for n in tried][:40]} after tensor "
                         f"{self.current!r} is not a supported pattern (SkipConnection, Parallel, swish, "
                         f"tanh-gelu, LayerNorm, MultiHeadAttention); supported ops: {supported_ops()}")

    def _recognise(self, region: list) -> list | None:
        join = region[-1]
        if join.op_type in ("Add", "Sum", "Concat") and len(join.input) >= 2 and len(region) > 1:
            layer = self._container(region)
            if layer is not None:
                return [layer]
        act = self._activation_pattern(region)
        if act is not None:
            self.current = region[-1].output[0]
            return [act]
        for cls in registry.registered():
            hook = getattr(cls, "from_onnx_region", None)
            found = hook(region, self) if hook is not None else None
            if found is not None:
                layers, self.current = found
                return list(layers)
        return None

    def _connection(self, join: Any) -> Any:
        from ...model.connection import Connection

        if join.op_type != "Concat":
            return Connection("+")
        rank = self.rank(join.output[0])
        axis = int(self.attrs(join).get("axis", 1))
        if rank is None:
            raise self.error(join, "the rank of the concatenated tensors is unknown (ONNX shape inference failed)")
        axis = axis + rank if axis < 0 else axis
        if not 1 <= axis < rank:
            raise self.error(join, f"Concat along axis {axis} of a rank-{rank} tensor (the batch axis?)")
        return Connection("cat", rank - axis)       # numpy axis a of rank r is Flux dim r - a

    def _container(self, region: list) -> Any:
        """The container layer for a region whose join is ``Add``/``Sum``/``Concat``: the first registered class
        whose ``from_onnx_join`` takes it (SkipConnection, then Parallel); None if the branches are not
        separable (then the region is some layer's own subgraph)."""
        x, join, body = self.current, region[-1], region[:-1]
        ins = list(join.input)
        branches = [self._ancestors(t, body) for t in ins]
        claimed = [i for b in branches for i in b]
        if len(claimed) != len(set(claimed)) or len(set(claimed)) != len(body):
            return None                                  # shared nodes or nodes outside every branch
        conn = self._connection(join)

        def branch(i: int) -> Any:
            return self._branch(x, ins[i], branches[i])

        for cls in registry.registered():
            hook = getattr(cls, "from_onnx_join", None)
            layer = hook(x, join, conn, branch) if hook is not None else None
            if layer is not None:
                self.current = join.output[0]
                return layer
        return None

    def _ancestors(self, tensor: str, body: list) -> set[int]:
        """Ids of the ``body`` nodes that ``tensor`` depends on."""
        producer = {o: n for n in body for o in n.output}
        seen: set[int] = set()
        todo = [tensor]
        while todo:
            n = producer.get(todo.pop())
            if n is not None and id(n) not in seen:
                seen.add(id(n))
                todo.extend(n.input)
        return seen

    def _branch(self, x: str, out: str, nodes: set[int]) -> Any:
        """Read the branch from ``x`` to ``out`` over ``nodes`` only: one layer as is, several as a Chain, none
        (``out`` is ``x``) as ``identity``."""
        from ...model.chain import Chain

        saved = (self.current, self.allowed)
        self.current, self.allowed = x, nodes
        try:
            layers = _fold_activations(self.read(out))
        finally:
            self.current, self.allowed = saved
        if not layers:
            return identity
        return layers[0] if len(layers) == 1 else Chain(*layers)

    def _activation_pattern(self, region: list) -> Any:
        """swish (``x * Sigmoid(x)``) or composed tanh-gelu, as our exporter writes them; else None."""
        ops = sorted(n.op_type for n in region)
        if ops == ["Mul", "Sigmoid"]:
            return swish
        if ops == ["Add", "Add", "Mul", "Mul", "Mul", "Mul", "Mul", "Mul", "Tanh"] and self._gelu_consts(region):
            return gelu
        return None

    def _gelu_consts(self, region: list) -> bool:
        vals = [float(self.consts[i].reshape(-1)[0]) for n in region for i in n.input
                if i in self.consts and self.consts[i].size == 1]
        want = (0.5, 1.0, 0.044715, math.sqrt(2 / math.pi))
        return all(any(math.isclose(v, w, rel_tol=1e-5) for v in vals) for w in want)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _constant_value(node: Any) -> np.ndarray:
    for a in node.attribute:
        if a.name == "value":
            return _to_array(a.t, "model")
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
