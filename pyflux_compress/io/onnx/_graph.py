"""The ONNX graph builder: every piece of ONNX format knowledge used by export lives here.

* ``DEFAULT_OPSET`` (17) and :func:`ir_version_for` -- onnx 1.23 writes IR version 14 by default; an older
  onnxruntime refuses a model whose IR version is newer than the one it was built with, so we write the
  highest IR version the *installed* onnxruntime accepts (probed once per process with a one-node model)
  and never less than the minimum the opset needs.
* :class:`GraphBuilder` -- collects nodes and initializers with unique names, then :meth:`GraphBuilder.to_model`
  wraps them into a checked ``ModelProto``.
* :func:`save_model_atomic` -- writes a model through a temp file in the same folder + ``os.replace``, so
  a crash never leaves a half-written ``.onnx`` behind.

Nothing in this module knows about Flux layers; ``_export.py`` / ``_quant.py`` translate layers into calls here.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np

from ..._files import write_atomic

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
PRODUCER = "pyflux-compress"

# Measured on this machine: onnx 1.23.2 writes IR 14 by default; onnxruntime 1.32.0 loads IR <= 14
# and rejects 15 ("Unsupported model IR version"). Older onnxruntime releases accept less, hence the probe.


@functools.lru_cache(maxsize=1)
def ort_max_ir_version() -> int:
    """Highest ONNX IR version the installed onnxruntime loads (probed once, cached).

    Builds a one-node ``Identity`` model for each IR version from onnx's own default downwards and returns
    the first one onnxruntime accepts. Without onnxruntime, onnx's own default is used.
    """
    import onnx
    from onnx import TensorProto, helper

    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a package dependency
        return int(onnx.IR_VERSION)
    vi_x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    vi_y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [vi_x], [vi_y])
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failed probes are expected: keep ORT quiet
    for ir in range(onnx.IR_VERSION, 6, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=ir)
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            return ir
        except Exception:  # noqa: BLE001 - ORT raises its own Fail type for "unsupported IR version"
            continue
    return 8  # IR 8 is what opset 17 needs; nothing older is worth writing


def ir_version_for(opset: int) -> int:
    """IR version to write for ``opset``: the installed onnxruntime's maximum, but at least what the opset needs."""
    from onnx import helper

    needed = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    return max(int(needed), min(ort_max_ir_version(), _onnx_ir_version()))


def _onnx_ir_version() -> int:
    import onnx

    return int(onnx.IR_VERSION)


class GraphBuilder:
    """Accumulates ONNX nodes and initializers for one linear (Chain-shaped) graph.

    ``x = b.current`` is the name of the tensor flowing through the chain; each layer translator appends
    nodes reading it and sets ``b.current`` to its output. Names are made unique with a per-prefix counter,
    so two Dense layers give ``dense1_W`` / ``dense2_W``.
    """

    def __init__(self, input_shape: Sequence[int | None], opset: int = DEFAULT_OPSET, *,
                 dynamic_batch: bool = True, batch_size: int = 1, sparse: bool = False):
        """``input_shape``: per-sample shape (without N). The graph input is ``(N, *input_shape)``
        with N symbolic (``"N"``) when ``dynamic_batch`` else fixed to ``batch_size``."""
        self.opset = int(opset)
        self.nodes: list = []
        self.initializers: list = []
        self.sparse = bool(sparse)
        self._counts: dict[str, int] = {}
        self.input_shape = tuple(input_shape)
        self.batch_dim: int | str = "N" if dynamic_batch else int(batch_size)
        self.current = INPUT_NAME
        self._ranks: dict[str, int] = {INPUT_NAME: 1 + len(self.input_shape)}

    # -- names -------------------------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        """A new unique tensor/node name ``prefix<k>``."""
        self._counts[prefix] = self._counts.get(prefix, 0) + 1
        return f"{prefix}{self._counts[prefix]}"

    # -- initializers --------------------------------------------------------------------------------
    def const(self, name: str, array: np.ndarray, *, allow_sparse: bool = False) -> str:
        """Add an initializer (a graph constant) and return its name.

        ``allow_sparse``: with ``sparse=True`` on the builder, store this weight in COO form when that is smaller
        than the dense tensor: its nonzero values and their int32 flat indices as initializers, rebuilt by
        ``ConstantOfShape -> ScatterElements -> Reshape`` (all inputs constant: onnxruntime folds them into one
        dense initializer at load, so inference is as fast as the dense file). Only standard dense ops, so the file
        passes ``onnx.checker.check_model(full_check=True)`` and runs in onnx's ReferenceEvaluator, which a
        ``sparse_initializer`` feeding Gemm/Conv does not.
        The ONNX element type follows the numpy dtype (``ml_dtypes.int4`` arrays become packed INT4).
        """
        from onnx import numpy_helper

        array = np.asarray(array)
        if allow_sparse and self.sparse and array.dtype.kind in "fiu" and _sparse_pays_off(array):
            self._sparse_const(name, array)
            return name
        # np.require keeps a 0-d array 0-d (np.ascontiguousarray would make it (1,): a scalar Gather index)
        self.initializers.append(numpy_helper.from_array(np.require(array, requirements='C'), name))
        return name

    def _sparse_const(self, name: str, array: np.ndarray) -> None:
        from onnx import numpy_helper

        flat = array.reshape(-1)
        idx = np.flatnonzero(flat)
        zero = numpy_helper.from_array(np.zeros(1, array.dtype), name + "_zero")
        size = self.const(name + "_size", np.array([flat.size], np.int64))
        (zeros,) = self.node("ConstantOfShape", [size], prefix=name + "_dense", value=zero)
        ins = [zeros, self.const(name + "_indices", idx.astype(np.int32)), self.const(name + "_values", flat[idx])]
        (dense,) = self.node("ScatterElements", ins, prefix=name + "_scatter", axis=0)
        self.node("Reshape", [dense, self.const(name + "_shape", np.array(array.shape, np.int64))],
                  outputs=[name], prefix=name + "_reshape")

    # -- nodes -------------------------------------------------------------------------------------
    def node(self, op: str, inputs: Sequence[str], *, outputs: int | Sequence[str] = 1, prefix: str | None = None,
             domain: str = "", rank: int | None = None, **attrs) -> list[str]:
        """Append node ``op`` and return its output names (fresh unless given). ``rank``: the outputs' rank
        (batch dim included) when it differs from the first input's (e.g. 2 after a Flatten)."""
        from onnx import helper

        prefix = prefix or op.lower()
        if isinstance(outputs, int):
            outputs = [self.fresh(prefix + "_out") for _ in range(outputs)]
        for out in outputs:
            self._ranks[out] = rank if rank is not None else self.rank(inputs[0]) if inputs else 0
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=self.fresh(prefix + "_"),
                                           domain=domain, **attrs))
        return list(outputs)

    def rank(self, name: str) -> int:
        """Rank (batch dim included) of tensor ``name``: 2 for ``(N, F)``, 4 for ``(N, C, H, W)``."""
        return self._ranks.get(name, self._ranks[INPUT_NAME])

    def static_dim(self, name: str, axis: int) -> int | None:
        """Dimension ``axis`` of tensor ``name`` by ONNX shape inference over the graph built so far (None when
        it is symbolic or unknown). Used by exports that unroll a loop over a fixed sequence length."""
        import onnx
        from onnx import TensorProto, helper

        if name == INPUT_NAME:
            dims = [self.batch_dim, *self.input_shape]
            return dims[axis] if isinstance(dims[axis], (int, np.integer)) else None
        x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [self.batch_dim, *self.input_shape])
        y = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, "probe", [x], [y], initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        out = onnx.shape_inference.infer_shapes(model).graph.output[0].type.tensor_type
        if not out.HasField("shape") or len(out.shape.dim) <= axis:
            return None
        d = out.shape.dim[axis]
        return int(d.dim_value) if d.HasField("dim_value") else None

    def apply(self, op: str, *extra_inputs: str, prefix: str | None = None, **attrs) -> str:
        """``current = op(current, *extra_inputs, **attrs)``; returns the new current tensor name."""
        (out,) = self.node(op, [self.current, *extra_inputs], prefix=prefix, **attrs)
        self.current = out
        return out

    # -- model -------------------------------------------------------------------------------------
    def to_model(self, *, graph_name: str = "pyflux_compress", doc: str = "", check: bool = True,
                 extra_opsets: dict[str, int] | None = None):
        """Rename the last tensor to ``output``, wrap everything into a ``ModelProto`` and run ``onnx.checker``."""
        import onnx
        from onnx import TensorProto, helper

        if self.current == INPUT_NAME:  # empty chain / only dropped layers: output = input
            self.apply("Identity")
        self._rename_output(self.current, OUTPUT_NAME)
        x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [self.batch_dim, *self.input_shape])
        y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, graph_name, [x], [y], initializer=self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        opsets += [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
        model = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER,
                                  ir_version=ir_version_for(self.opset), doc_string=doc)
        # The output's shape (rank, feature dims) comes from ONNX shape inference, which the checker requires;
        # intermediate value_info it adds is dropped again to keep the file minimal.
        inferred = onnx.shape_inference.infer_shapes(model)
        if not inferred.graph.output[0].type.tensor_type.HasField("shape"):
            raise ValueError(f"model: ONNX shape inference cannot derive the output shape from input shape "
                             f"{(self.batch_dim, *self.input_shape)}; do the layers' shapes fit together "
                             f"(e.g. a pooling layer after a Dense)?")
        model.graph.output[0].CopyFrom(inferred.graph.output[0])
        if check:
            onnx.checker.check_model(model, full_check=False)
        return model

    def _rename_output(self, old: str, new: str) -> None:
        for node in self.nodes:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = new
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
        self.current = new


def _sparse_pays_off(array: np.ndarray) -> bool:
    """COO with int32 linear indices costs 4 + itemsize bytes per nonzero; dense costs itemsize per entry."""
    nnz = int(np.count_nonzero(array))
    return array.ndim >= 1 and array.size < 2 ** 31 and nnz * (4 + array.itemsize) + 64 < array.size * array.itemsize


def save_model_atomic(model, path: str | os.PathLike) -> str:
    """Serialize ``model`` to ``path`` atomically (temp file in the same folder, then ``os.replace``)."""
    path = os.fspath(path)
    write_atomic(path, model.SerializeToString())
    return path
