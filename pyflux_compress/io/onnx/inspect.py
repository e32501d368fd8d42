"""What ``pyflux-compress inspect`` shows of an ONNX file: graph inputs/outputs, nodes, initializers."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["inspect_onnx"]


def inspect_onnx(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready description of the ONNX file at ``path``: IR version, opsets, inputs/outputs with shapes,
    nodes and op counts, and one row per (sparse) initializer with its size and nonzeros."""
    import onnx
    from onnx import numpy_helper

    from ._import import load_onnx_proto

    m = load_onnx_proto(path)  # bounded; external data read only from the model's folder
    g = m.graph
    rows = []
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        rows.append({"path": t.name, "layer": "initializer", "shape": list(a.shape), "dtype": str(a.dtype),
                     "params": int(a.size), "nonzero": int(np.count_nonzero(a))})
    for st in g.sparse_initializer:
        dims = list(st.dims)
        rows.append({"path": st.values.name, "layer": "sparse_initializer", "shape": dims,
                     "dtype": onnx.helper.tensor_dtype_to_np_dtype(st.values.data_type).name,
                     "params": int(np.prod(dims)), "nonzero": int(np.prod(st.values.dims)) if st.values.dims else 0})

    def shape(vi: Any) -> str:
        return f"{vi.name} ({', '.join(d.dim_param or str(d.dim_value) for d in vi.type.tensor_type.shape.dim)})"

    ops: dict[str, int] = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    total, nz = sum(r["params"] for r in rows), sum(r["nonzero"] for r in rows)
    return {"file": os.fspath(path), "kind": "onnx", "ir_version": m.ir_version,
            "opsets": {o.domain or "ai.onnx": o.version for o in m.opset_import},
            "inputs": [shape(i) for i in g.input], "outputs": [shape(o) for o in g.output],
            "nodes": [f"{n.op_type}({', '.join(n.input)}) -> {', '.join(n.output)}" for n in g.node],
            "op_counts": ops, "parameters": rows, "total_params": total, "total_nonzero": nz,
            "sparsity": 1 - nz / total if total else 0.0, "bytes": os.path.getsize(path)}
