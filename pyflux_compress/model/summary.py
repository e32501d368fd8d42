"""``model.summary()``: a multi-line description in the style of Flux's ``show`` for a Chain::

    Chain(                                  # input (784,)
      Dense(784 => 128, relu),              # 100_480 parameters, output (128,)
      Dense(128 => 64, relu),               # 8_256 parameters, output (64,)
      Dense(64 => 10),                      # 650 parameters, output (10,)
    )                   # Total: 6 arrays, 109_386 parameters, 427.289 KiB.

Parameter counts use Flux's ``1_000`` digit grouping. Output shapes are per-sample and appear when an input
shape is given or can be inferred (a chain whose first layer is Dense). Bytes count the parameter and
running-statistics arrays (Flux's ``summarysize`` also counts Julia object overhead, so it is slightly larger).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .walk import first_weight, modules

__all__ = ["summary", "group_digits"]

_COL = 40  # column of the "#" comments, as in Flux


def group_digits(n: int) -> str:
    """``100480 -> "100_480"`` (Julia's underscore digit grouping used by Flux's show)."""
    return f"{n:_d}"


def _bytes_str(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.3f} {unit}"
    return f"{nbytes} bytes"


def _state(layer: Any) -> dict[str, np.ndarray]:
    state = getattr(layer, "state", None)
    if callable(state):
        return {k: v for k, v in state().items() if isinstance(v, np.ndarray)}
    return {}


def _infer_input(model: Any) -> tuple | None:
    first = first_weight(model)  # a model starting with a matrix weight (Dense) takes (features,)
    return (first[1],) if first is not None and first[2] == 2 else None


def summary(model: Any, input_shape: Any = None) -> str:
    """Return the Flux-style summary of ``model`` (a Chain or a single layer).

    ``input_shape`` is a per-sample shape such as ``(784,)`` or ``(1, 28, 28)`` (an int means ``(n,)``).
    An incompatible shape raises ``ValueError`` naming the layer (e.g. ``layers[2] Dense(128 => 64) ...``).
    """
    if isinstance(input_shape, (int, np.integer)):
        input_shape = (int(input_shape),)
    shape = tuple(input_shape) if input_shape is not None else _infer_input(model)
    if shape is not None:
        model.output_shape(shape)  # validate first: a clear error naming the layer

    totals = {"arrays": 0, "params": 0, "state_arrays": 0, "state": 0, "bytes": 0}
    lines: list[str] = []

    def leaf_comment(layer: Any, out: tuple | None) -> str:
        params = layer.params()
        state = _state(layer)
        n = sum(p.size for p in params.values())
        ns = sum(s.size for s in state.values())
        totals["arrays"] += len(params)
        totals["params"] += n
        totals["state_arrays"] += len(state)
        totals["state"] += ns
        totals["bytes"] += sum(p.nbytes for p in params.values()) + sum(s.nbytes for s in state.values())
        parts = []
        if n:
            parts.append(f"{group_digits(n)} parameters" + (f", plus {group_digits(ns)}" if ns else ""))
        if out is not None:
            parts.append(f"output {out}")
        return ", ".join(parts)

    def emit(text: str, comment: str) -> None:
        lines.append(text.ljust(_COL) + f"# {comment}" if comment else text)

    def show(node: Any, indent: str, shape: tuple | None, trailing: str) -> tuple | None:
        """Print a container and its children (shapes flow through the children in order)."""
        emit(f"{indent}{node.flux_name}(", f"input {shape}" if (shape is not None and not indent) else "")
        for layer in node.children().values():
            if getattr(layer, "container", False):
                shape = show(layer, indent + "  ", shape, ",")
                continue
            if shape is not None:
                shape = tuple(layer.output_shape(shape))
            emit(f"{indent}  {layer!r},", leaf_comment(layer, shape))
        lines.append(f"{indent}){trailing}")
        return shape

    container = getattr(model, "container", False)
    if container:
        show(model, "", shape, "")
    else:
        out = tuple(model.output_shape(shape)) if shape is not None else None
        emit(repr(model), leaf_comment(model, out))

    total = f"Total: {totals['arrays']} {'trainable ' if totals['state_arrays'] else ''}arrays, " \
            f"{group_digits(totals['params'])} parameters, "
    if totals["state_arrays"]:
        total += f"plus {totals['state_arrays']} non-trainable, {group_digits(totals['state'])} parameters, "
    total += f"{_bytes_str(totals['bytes'])}."
    if container:
        lines[-1] = lines[-1].ljust(20) + "# " + total  # Flux puts the total after the closing parenthesis
    else:
        lines.append("# " + total)
    return "\n".join(lines)


def effective_array(layer: Any, name: str) -> np.ndarray:
    """The parameter ``name`` of ``layer`` as its forward uses it.

    ``weight`` of a quantized layer (one with ``weight_dequantized()``) is its dequantized integer weight, zero
    exactly where the code equals the zero point; of a weight-shared layer (``centroids``) the effective
    ``where(mask, centroids[index], 0)``; anything else is the array in ``params()``.
    """
    if name == "weight":
        dequantized = getattr(layer, "weight_dequantized", None)
        if callable(dequantized):
            return np.asarray(dequantized())
        if hasattr(layer, "centroids"):
            return np.asarray(layer.weight)
    return layer.params()[name]


def parameter_rows(model: Any) -> dict[str, Any]:
    """JSON-ready per-parameter rows of a model (``pyflux-compress inspect``): path (``pfc.modules`` paths),
    layer, shape, dtype (the deployed integers' for quantized weights), count, nonzeros; totals; records."""
    rows = []
    for path, layer in modules(model):
        qweight = getattr(layer, "qweight", None)
        for name, arr in layer.params().items():
            arr = np.asarray(arr)
            shown = np.asarray(qweight) if name == "weight" and qweight is not None else arr  # deployed integers
            bits = f" ({layer.bits}-bit)" if qweight is not None and name == "weight" else ""
            # nonzero as the forward computes: a quantized code equal to its zero point is a zero weight
            rows.append({"path": f"{path}.{name}", "layer": repr(layer), "shape": list(arr.shape),
                         "dtype": str(shown.dtype) + bits, "params": int(arr.size),
                         "nonzero": int(np.count_nonzero(effective_array(layer, name)))})
    total, nz = sum(r["params"] for r in rows), sum(r["nonzero"] for r in rows)
    return {"model": str(model), "parameters": rows, "total_params": total, "total_nonzero": nz,
            "sparsity": 1 - nz / total if total else 0.0, "records": getattr(model, "records", [])}
