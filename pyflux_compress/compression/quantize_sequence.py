"""Quantization of sequence layers in ``pfc.quantize``: recurrent gate matrices and embedding tables.

``pfc.quantize`` wraps every float leaf that declares ``quantize_as`` (``model/layers/base.py``) with the class
registered here for that role (``QUANTIZED_WRAPPERS`` in ``wrapper.py``):

``QuantizedRecurrent`` (``quantize_as = "recurrent"``: RNN, LSTM, GRU, GRUv3)
    Every gate matrix (``Wi``, ``Wh``, GRUv3's ``Wh_h̃``) gets integer weights with the module's rules
    (``quantize_weight``: per channel = per row, i.e. one scale per gate unit). Activations:

    * ``"dynamic"`` (also what a calibrated ``quantize`` gives a recurrent layer: the hidden state changes every
      step, so its range is taken per call, as onnxruntime's own ``DynamicQuantizeLSTM`` does): the input of
      all steps ``x (N, len, in)`` is quantized once (ONNX ``DynamicQuantizeLinear``: uint8, one scale for the
      tensor), every step quantizes the hidden state it multiplies (GRUv3 also ``r .* h``). A product is
      ``Float32(acc) * (Float32(s_a) * s_w)`` with the exact integer accumulator ``acc = (a_q - zp_a) (q -
      zp_w)^T`` -- what ``MatMulInteger -> Cast -> Mul`` computes in onnxruntime. The gate non-linearities
      stay float32.
    * ``"float"`` (weights only): the float layer with the dequantized matrices.

    ONNX: the dynamic form is the unrolled graph of ``RecurrentLayer.to_onnx_unrolled`` with integer
    products (``DynamicQuantizeLinear`` + ``MatMulInteger``, which onnxruntime fuses into
    ``DynamicQuantizeMatMul``): one product for the input projection of all steps, one per step for the
    recurrence. onnxruntime has no integer GRU kernel (only ``DynamicQuantizeLSTM``), so this is how a GRU runs
    on integer kernels; the sequence length is fixed at export (``input_shape``). Weights-only layers export
    the ONNX recurrent op with the dequantized weights.
    Quantization-aware training of a recurrent layer is not implemented (``backward`` says so).

``QuantizedEmbedding`` (``quantize_as = "table"``: Embedding)
    The table ``weight (dim, vocab)`` quantized per token (one scale per column, Flux's per-token vector), the
    lookup reads dequantized values: ``(q - zp) * s`` in float32, exactly ``DequantizeLinear``. ONNX: int8 table
    ``(vocab, dim)``, ``Gather`` of the int8 rows and of their scales (and zero points), ``Cast`` + ``Mul``: the
    file holds int8 and no step dequantizes the whole table.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .quantize import dequantize_weight, dynamic_quantize_input, integer_weight, quantize_weight
from .wrapper import QUANTIZED_WRAPPERS, WrappedLayer

__all__ = ["QuantizedRecurrent", "QuantizedEmbedding", "onnx_dynamic_matmul"]


def onnx_dynamic_matmul(g: Any, a: str, q: np.ndarray, scale: np.ndarray, zp: np.ndarray, prefix: str) -> str:
    """``a @ ((q - zp) * scale).T`` with ``a`` quantized per call: ``DynamicQuantizeLinear`` (uint8) +
    ``MatMulInteger`` with the int8 weight ``q (out, in)`` stored ``(in, out)``, ``Cast``, ``Mul`` by
    ``s_a * s_w`` (per output column). onnxruntime fuses it into ``DynamicQuantizeMatMul``."""
    p = g.fresh(prefix)
    a_q, a_s, a_zp = g.node("DynamicQuantizeLinear", [a], outputs=3, prefix=f"{p}_dql")
    ins = [a_q, g.const(f"{p}_Wq", np.ascontiguousarray(np.asarray(q, np.int8).T)), a_zp,
           g.const(f"{p}_Wzp", np.asarray(zp).astype(np.int8))]
    (acc,) = g.node("MatMulInteger", ins, prefix=p)
    (accf,) = g.node("Cast", [acc], prefix=p, to=1)  # TensorProto.FLOAT
    (s,) = g.node("Mul", [a_s, g.const(f"{p}_Ws", np.asarray(scale, np.float32))], prefix=f"{p}_scale", rank=1)
    return g.node("Mul", [accf, s], prefix=p)[0]


class _IntegerProducts:
    """The arithmetic a :class:`QuantizedRecurrent` installs on its private cell copy (``RecurrentCell.arithmetic``)."""

    def __init__(self, owner: "QuantizedRecurrent") -> None:
        self.owner = owner

    def project(self, x: np.ndarray) -> np.ndarray:
        gx = self.owner.product(x, "Wi")
        bias = self.owner.float_layer.cell.bias
        return gx + bias if bias is not None else gx

    def rmul(self, a: np.ndarray, which: str, lo: int, hi: int) -> np.ndarray:
        return self.owner.product(a, which, lo, hi)


class _SequenceWrapper(WrappedLayer):
    """What both wrappers share: the float layer is the shadow (returned by ``to_float``), the
    quantization settings, no activation of their own; ``requantize`` fills the integer form."""

    def __init__(self, float_layer: Any, bits: int, scheme: str, granularity: str, weight_clip: str,
                 activations: str) -> None:
        self.float_layer = float_layer
        self.bits, self.scheme, self.granularity, self.weight_clip = int(bits), scheme, granularity, weight_clip
        self.activations = activations
        self.requantize()

    @property
    def activation(self) -> Any:
        return None

    def to_float(self) -> Any:
        return self.float_layer

    def requantize(self) -> None:
        raise NotImplementedError


class QuantizedRecurrent(_SequenceWrapper):
    """A recurrent layer with integer gate matrices (module docstring). ``qweights[name] = (q int8, scale
    float32 (rows,) or (), zero_point int32)`` for each of the float layer's ``compressible`` matrices."""

    def __init__(self, float_layer: Any, bits: int = 8, scheme: str = "symmetric",
                 granularity: str = "per_channel", weight_clip: str = "minmax", activations: str = "dynamic") -> None:
        # a calibrated ("static") quantize: the hidden state's range changes every step, so it is taken per call
        super().__init__(float_layer, bits, scheme, granularity, weight_clip,
                         "float" if activations == "float" else "dynamic")

    @property
    def dynamic(self) -> bool:
        return self.activations == "dynamic"

    @property
    def bias(self) -> np.ndarray | None:
        return self.float_layer.cell.bias

    def requantize(self) -> None:
        """(Re)compute the integer matrices from the float layer's."""
        self.qweights: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for name in self.float_layer.compressible:
            w = getattr(self.float_layer, name)
            if not np.all(np.isfinite(w)):
                raise ValueError(f"{self.float_layer!r}: {name} has NaN/Inf values; cannot quantize")
            self.qweights[name] = quantize_weight(w, self.bits, self.scheme, self.granularity,
                                                  self.masks.get(name), self.weight_clip)
        self._dequantized = {n: dequantize_weight(*qw) for n, qw in self.qweights.items()}
        self._layer = self.dequantize()
        if self.dynamic:
            self._layer.cell.arithmetic = _IntegerProducts(self)

    def product(self, a: np.ndarray, which: str, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """``a @ W[lo:hi].T`` as the exported graph computes it (dynamic: integer operands, module docstring)."""
        q, scale, zp = self.qweights[which]
        rows = slice(lo, hi)
        if not self.dynamic:
            return a @ self._dequantized[which][rows].T
        dtype = self.float_layer.cell.Wi.dtype
        ai, s_a = dynamic_quantize_input(a)
        acc = ai @ integer_weight(q[rows], zp[rows] if zp.ndim else zp).T    # exact (integer-valued float64)
        s = np.float32(s_a) * (scale[rows] if scale.ndim else scale)
        return (acc.astype(np.float32) * s.astype(np.float32)).astype(dtype)

    def weight_dequantized(self) -> dict[str, np.ndarray]:
        """The float32 matrices the weights-only forward uses, by name."""
        return dict(self._dequantized)

    def dequantize(self) -> Any:
        """A float copy of the layer holding the dequantized matrices."""
        layer = self.float_layer.copy()
        for name, w in self._dequantized.items():
            setattr(layer, name, w.astype(getattr(self.float_layer, name).dtype))
        return layer

    def record(self) -> dict[str, Any]:
        """What ``pfc.quantize`` records for this layer."""
        err = max(float(np.abs(self._dequantized[n] - getattr(self.float_layer, n)).max()) for n in self.qweights)
        return {"bits": self.bits, "act_range": None, "activations": self.activations, "max_abs_error": err}

    # layer contract ----------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        return self._layer.forward(x)[0], None

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raise ValueError(f"{self!r}: quantization-aware training of a recurrent layer is not implemented; train "
                         "the float model, then quantize")

    def run(self, x: Any, state: Any = None) -> tuple[np.ndarray, Any]:
        """``(y, final_state)`` as ``RecurrentLayer.run`` with the quantized arithmetic."""
        return self._layer.run(x, state)

    def params(self) -> dict[str, np.ndarray]:
        return self.float_layer.params()

    def __repr__(self) -> str:
        act = ", dynamic activations" if self.dynamic else ""
        return f"QuantizedRecurrent({self.float_layer!r}, int{self.bits}, {self.scheme}, {self.granularity}{act})"

    def to_onnx(self, g: Any, x: str) -> str:
        """Dynamic: the unrolled graph with integer products; weights only: the recurrent op, dequantized."""
        if not self.dynamic:
            return self._layer.to_onnx(g, x)

        def project(g: Any, a: str) -> str:
            y = onnx_dynamic_matmul(g, a, *self.qweights["Wi"], prefix="qrec_project")
            bias = self.float_layer.cell.bias
            if bias is None:
                return y
            return g.node("Add", [y, g.const(g.fresh("qrec_b"), np.asarray(bias, np.float32))], prefix="qrec")[0]

        def rmul(g: Any, a: str, which: str, lo: int, hi: int) -> str:
            q, scale, zp = self.qweights[which]
            part = (lambda v: v[lo:hi] if v.ndim else v)
            return onnx_dynamic_matmul(g, a, q[lo:hi], part(scale), part(zp), prefix="qrec_rmul")

        return self.float_layer.to_onnx_unrolled(g, x, project=project, rmul=rmul)


class QuantizedEmbedding(_SequenceWrapper):
    """An Embedding with an integer table, quantized per token (module docstring). ``qweight (dim, vocab)``
    int8, ``w_scale`` / ``w_zero_point`` ``(vocab,)`` per channel or ``()``."""

    def __init__(self, float_layer: Any, bits: int = 8, scheme: str = "symmetric",
                 granularity: str = "per_channel", weight_clip: str = "minmax", activations: str = "float") -> None:
        # a lookup has no input activation to quantize
        super().__init__(float_layer, bits, scheme, granularity, weight_clip, "float")

    @property
    def bias(self) -> None:
        return None

    def requantize(self) -> None:
        w = self.float_layer.weight
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{self.float_layer!r}: weight has NaN/Inf values; cannot quantize")
        mask = self.masks.get("weight")
        # per token: the table transposed (vocab, dim) has one token per row, the numerics' channel axis 0
        q, self.w_scale, self.w_zero_point = quantize_weight(
            w.T, self.bits, self.scheme, self.granularity, None if mask is None else mask.T, self.weight_clip)
        self.qweight = np.ascontiguousarray(q.T)
        self._layer = self.dequantize()
        self._stale = False

    def weight_dequantized(self) -> np.ndarray:
        """``(q - zp) * scale`` as ``(dim, vocab)`` float32."""
        return np.ascontiguousarray(dequantize_weight(self.qweight.T, self.w_scale, self.w_zero_point).T)

    def dequantize(self) -> Any:
        layer = self.float_layer.copy()
        layer.weight = self.weight_dequantized().astype(self.float_layer.weight.dtype)
        return layer

    def record(self) -> dict[str, Any]:
        err = float(np.abs(self.weight_dequantized() - self.float_layer.weight).max())
        return {"bits": self.bits, "act_range": None, "activations": "float", "max_abs_error": err}

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        if self._stale:   # the optimiser changed the shadow table since the last step (QAT)
            self.requantize()
        return self._layer.forward(x)

    def backward(self, cache: Any, dy: np.ndarray) -> tuple[Any, dict[str, np.ndarray]]:
        """Straight-through: the gradient of the table as if dequantized = float (the lookup is linear)."""
        dx, grads = self._layer.backward(cache, dy)
        self._stale = True
        return dx, grads

    def params(self) -> dict[str, np.ndarray]:
        return self.float_layer.params()

    def __repr__(self) -> str:
        return f"QuantizedEmbedding({self.float_layer!r}, int{self.bits}, {self.scheme}, {self.granularity})"

    def to_onnx(self, g: Any, x: str) -> str:
        """``Cast`` ids -> ``Gather`` int8 rows of the ``(vocab, dim)`` table, ``Cast``, (``Sub`` the gathered zero
        points), ``Mul`` by the gathered per-token scales (``Unsqueeze`` to ``(..., 1)``)."""
        p = g.fresh("qembedding")
        rank = g.rank(x) + 1
        (ids,) = g.node("Cast", [x], prefix=p, to=7)  # TensorProto.INT64
        table = g.const(f"{p}_Wq", np.ascontiguousarray(self.qweight.T))
        (rows,) = g.node("Gather", [table, ids], prefix=p, rank=rank, axis=0)
        (y,) = g.node("Cast", [rows], prefix=p, to=1)
        per_token = self.w_scale.ndim == 1

        def gathered(name: str, values: np.ndarray) -> str:
            c = g.const(f"{p}_{name}", np.asarray(values, np.float32))
            if not per_token:
                return c
            (v,) = g.node("Gather", [c, ids], prefix=p, rank=rank - 1, axis=0)
            return g.node("Unsqueeze", [v, g.const(g.fresh(f"{p}_axis"), np.array([-1], np.int64))], prefix=p,
                          rank=rank)[0]

        if np.any(self.w_zero_point != 0):
            (y,) = g.node("Sub", [y, gathered("Wzp", self.w_zero_point)], prefix=p)
        return g.node("Mul", [y, gathered("Ws", self.w_scale)], prefix=p)[0]


QUANTIZED_WRAPPERS.update({"recurrent": QuantizedRecurrent, "table": QuantizedEmbedding})
