"""Shared machinery of Flux's recurrent layers (Flux >= 0.15): cells, the sequence wrappers, BPTT, ONNX.

Flux 0.15/0.16 defines a *cell* (``RNNCell``, ``LSTMCell``, ``GRUCell``, ``GRUv3Cell``: one time step,
fields ``Wi (G*out, in)``, ``Wh (G*out, out)``, ``bias``/``b (G*out,)``, gates stacked in Flux's order) and a
*layer* that scans a cell over a whole sequence (``RNN``, ``LSTM``, ``GRU``, ``GRUv3``: one field ``cell``).
Data: Flux's ``(in, len, batch)`` is ``(batch, len, in)`` here; the output holds every hidden state,
``(batch, len, out)`` (Flux: ``(out, len, batch)``). The initial state defaults to zeros (Flux's
``initialstates``) and can be passed to :meth:`RecurrentLayer.run`; ``return_state=True`` (Flux 0.16.1's
keyword, a type parameter of the struct) makes ``layer(x)`` return ``(y, final_state)``.

Implementation: the input projection ``x @ Wi.T + bias`` of all steps is one matrix product; the recurrence
is a loop over time of ``h @ Wh.T``; backpropagation through time runs the loop backwards (each cell's
``step`` / ``step_back``) and gets ``Wi``/``bias``/``dx`` from one product again.

Differences from Flux (documented, deliberate): a wrapper is a *leaf* here, so its parameters are addressed
``layers[1].Wi`` (Flux: ``layers[1].cell.Wi``); ``Flux.state`` and JLD2 use Flux's nesting ``(cell = (Wi, Wh,
bias),)`` exactly.

ONNX (opset >= 14, onnxruntime needs ``layout=0``): ``Transpose(1,0,2)`` -> ``LSTM``/``GRU``/``RNN`` ->
``Squeeze(axis 1)`` -> ``Transpose(1,0,2)``, weights re-stacked to ONNX's gate order (LSTM ``i,o,f,c``; GRU
``z,r,h``), GRU with ``linear_before_reset=1`` (Flux's ``r .* (Wh_h * h)``) and GRUv3 with
``linear_before_reset=0`` (Flux's ``Wh_h̃ * (r .* h)``).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_bool, check_int, check_rng
from .. import registry
from ..syntax import Pair, as_pair
from .base import Grads, Layer, init_fn

__all__ = ["RecurrentCell", "RecurrentLayer", "sigmoid_", "gate_rows", "ONNX_RNN_ACTIVATIONS", "onnx_op",
           "onnx_split", "ONNX_FORMS"]

#: how a recurrent layer is written to ONNX (``RecurrentLayer.onnx_form``)
ONNX_FORMS = ("op", "unrolled")

#: Flux activation name -> ONNX RNN ``activations`` attribute value (the ones ONNX's RNN op knows)
ONNX_RNN_ACTIVATIONS = {"tanh": "Tanh", "tanh_fast": "Tanh", "relu": "Relu", "σ": "Sigmoid",
                        "sigmoid_fast": "Sigmoid"}


def sigmoid_(x: np.ndarray) -> np.ndarray:
    """Logistic function, overflow-free (``σ(x) = (1 + tanh(x/2)) / 2``)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def onnx_op(g: Any, op: str, *inputs: str) -> str:
    """One element-wise ONNX node of a recurrent step (output rank = first input's); returns its output."""
    return g.node(op, list(inputs), prefix="rec")[0]


def onnx_split(g: Any, x: str, sizes: list[int]) -> list[str]:
    """``Split`` of ``(N, sum(sizes))`` along axis 1 (gate blocks) into ``len(sizes)`` tensors."""
    sizes_c = g.const(g.fresh("rec_split"), np.array(sizes, np.int64))
    return g.node("Split", [x, sizes_c], outputs=len(sizes), prefix="rec", axis=1)


def gate_rows(keep: np.ndarray, hidden: int, gates: int) -> np.ndarray:
    """Row indices of hidden units ``keep`` in each of ``gates`` stacked gate blocks of size ``hidden``."""
    keep = np.asarray(keep, dtype=np.int64)
    return np.concatenate([keep + k * hidden for k in range(gates)])


class RecurrentCell(Layer):
    """One time step. Subclasses set ``gates``, ``flux_fields``, and implement ``step`` / ``step_back``.

    State: a tuple of ``(N, out)`` arrays — ``(h,)`` for RNN/GRU cells, ``(h, c)`` for LSTM. ``cell(x,
    state=None)`` returns what Flux 0.15's cell returns: the new state (``h``; LSTM ``(h, c)``).
    As a layer (``forward``/``backward``), a cell maps ``x (N, in)`` from the zero state to ``h (N, out)``.
    """

    gates: int = 1
    n_states: int = 1
    compressible = ("Wi", "Wh")
    out_axes: dict[str, int] = {}
    input_grad_optional = True

    # the gated cells' constructor (GRU, GRUv3, LSTM): sizes (or ``in => out``), or the arrays themselves
    def __init__(self, n_in: Any, n_out: Any = None, *, bias: Any = True, init: Callable | None = None,
                 init_recurrent: Callable | None = None, rng: Any = None, seed: Any = None,
                 Wi: np.ndarray | None = None, Wh: np.ndarray | None = None) -> None:
        if isinstance(n_in, (tuple, list)):
            n_in, n_out = n_in
        if Wi is not None:
            self.Wi, self.Wh, self.bias = Wi, Wh, self._bias(bias, Wi.shape[0])
            self.check_shapes()
            return
        self.init_arrays(n_in, n_out, bias=bias, init=init, init_recurrent=init_recurrent, rng=rng, seed=seed)

    def init_arrays(self, n_in: Any, n_out: Any, *, bias: Any, init: Callable | None,
                    init_recurrent: Callable | None, rng: Any, seed: Any) -> None:
        n_in = check_int(f"{self.flux_name} in", n_in, min=1)
        n_out = check_int(f"{self.flux_name} out", n_out, min=1)
        gen = check_rng(seed, rng)
        g = self.gates
        self.Wi = np.asarray(init_fn(init)(gen, g * n_out, n_in), dtype=np.float32)
        self.Wh = np.asarray(init_fn(init_recurrent)(gen, g * n_out, n_out), dtype=np.float32)
        self.bias = self._bias(bias, g * n_out)

    def _bias(self, bias: Any, n: int) -> np.ndarray | None:
        if isinstance(bias, (bool, np.bool_)):
            return np.zeros(n, np.float32) if bias else None
        b = np.asarray(bias)
        if b.shape != (n,):
            raise ValueError(f"{self.flux_name}: bias must have shape ({n},); got {b.shape}")
        return b.astype(np.float32)

    @property
    def in_features(self) -> int:
        return int(self.Wi.shape[1])

    @property
    def hidden(self) -> int:
        return int(self.Wi.shape[0] // self.gates)

    def params(self) -> dict[str, np.ndarray]:
        p = {"Wi": self.Wi, "Wh": self.Wh}
        if self.bias is not None:
            p["bias"] = self.bias
        return p

    def check_shapes(self) -> None:
        """ValueError naming the layer if the arrays do not fit together."""
        g, h = self.gates, self.hidden
        if self.Wi.ndim != 2 or self.Wi.shape[0] != g * h or self.Wh.shape != (g * h, h):
            raise ValueError(f"{self.flux_name}: Wi must be ({g}*out, in) and Wh ({g}*out, out); got Wi "
                             f"{self.Wi.shape}, Wh {self.Wh.shape}")
        if self.bias is not None and self.bias.shape != (g * h,):
            raise ValueError(f"{self.flux_name}: bias must have shape ({g * h},); got {self.bias.shape}")

    def initial_state(self, n: int, dtype: Any) -> tuple:
        """Flux's ``initialstates``: zeros, one ``(n, out)`` array per state component."""
        return tuple(np.zeros((n, self.hidden), dtype=dtype) for _ in range(self.n_states))

    #: integer arithmetic of a quantized copy of the cell (``compression.QuantizedRecurrent`` installs an object
    #: with ``project(x)`` and ``rmul(a, which, lo, hi)`` on its private copy); None: float arithmetic
    arithmetic: Any = None

    def project(self, x: np.ndarray) -> np.ndarray:
        """``x @ Wi.T + bias`` for every leading index (all time steps at once)."""
        if self.arithmetic is not None:
            return self.arithmetic.project(x)
        gx = x @ self.Wi.T
        if self.bias is not None:
            gx += self.bias
        return gx

    def rmul(self, a: np.ndarray, which: str, lo: int, hi: int) -> np.ndarray:
        """The recurrent product ``a @ W[lo:hi].T`` of matrix ``which`` (``"Wh"``; GRUv3 also ``"Wh_htilde"``),
        rows ``lo:hi`` (gate blocks). Every step computes its recurrent products here, so a quantized copy
        swaps in integer arithmetic (``arithmetic``) and the ONNX step (``onnx_step``) mirrors it."""
        if self.arithmetic is not None:
            return self.arithmetic.rmul(a, which, lo, hi)
        return a @ getattr(self, which)[lo:hi].T

    # subclass interface ---------------------------------------------------------------------------------
    def onnx_step(self, g: Any, gx: str, state: tuple, rmul: Callable) -> tuple:
        """ONNX nodes of one :meth:`step`: input projection ``gx (N, G*out)`` and state tensor names -> the new
        state's names; ``rmul(a, which, lo, hi)`` writes the recurrent product as :meth:`rmul` computes it."""
        raise NotImplementedError

    def step(self, gx: np.ndarray, state: tuple) -> tuple[tuple, Any]:
        """One step from the input projection ``gx (N, G*out)`` -> (new state, cache)."""
        raise NotImplementedError

    def step_back(self, cache: Any, dstate: tuple, grads: Grads) -> tuple[np.ndarray, tuple]:
        """Reverse of :meth:`step`: ``d gx`` and the state gradient one step earlier; adds recurrent weight
        gradients into ``grads`` in place."""
        raise NotImplementedError

    def zero_grads(self) -> Grads:
        return {k: np.zeros_like(v) for k, v in self.params().items()}

    # Layer interface ------------------------------------------------------------------------------------
    def check_state(self, state: Any, n: int, dtype: Any) -> tuple:
        if state is None:
            return self.initial_state(n, dtype)
        parts = tuple(state) if isinstance(state, (tuple, list)) else (state,)
        if len(parts) != self.n_states:
            raise self._err(f": state must have {self.n_states} part(s) ({'(h, c)' if self.n_states == 2 else 'h'})")
        out = []
        for p in parts:
            a = np.asarray(p, dtype=dtype)
            if a.shape not in ((self.hidden,), (n, self.hidden)):
                raise self._err(f": a state must have shape ({self.hidden},) or ({n}, {self.hidden}); got {a.shape}")
            out.append(np.broadcast_to(a, (n, self.hidden)).copy())
        return tuple(out)

    def __call__(self, x: Any, state: Any = None) -> Any:
        x = np.asarray(x, dtype=self.Wi.dtype)
        single = x.ndim == 1
        x2 = x[None] if single else x
        if x2.ndim != 2 or x2.shape[1] != self.in_features:
            raise self._err(f"expects input (N, {self.in_features}) or ({self.in_features},); got {x.shape}")
        new, _ = self.step(self.project(x2), self.check_state(state, len(x2), x2.dtype))
        new = tuple(s[0] for s in new) if single else new
        return new if self.n_states > 1 else new[0]

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = np.asarray(x, dtype=self.Wi.dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise self._err(f"expects input (N, {self.in_features}); got {x.shape}")
        state, cache = self.step(self.project(x), self.initial_state(len(x), x.dtype))
        return state[0], (x, cache)

    def backward(self, cache: Any, dy: np.ndarray, need_input_grad: bool = True) -> tuple[Any, Grads]:
        x, c = cache
        grads = self.zero_grads()
        dstate = (dy,) + tuple(np.zeros_like(dy) for _ in range(self.n_states - 1))
        dgx, _ = self.step_back(c, dstate, grads)
        grads["Wi"] = dgx.T @ x
        if self.bias is not None:
            grads["bias"] = dgx.sum(axis=0)
        return (dgx @ self.Wi if need_input_grad else None), grads

    def output_shape(self, in_shape: tuple) -> tuple:
        if self.n_states > 1:   # Flux's cell returns the state tuple, which no following layer takes
            raise self._err(f"returns its state {'(h, c)'} as in Flux, which no following layer takes; use "
                            f"{self.flux_name[:-4]}(...) for a sequence, or call the cell directly")
        if tuple(in_shape) != (self.in_features,):
            raise self._err(f"expects {self.in_features} input features, got per-sample shape {tuple(in_shape)}")
        return (self.hidden,)

    def __repr__(self) -> str:
        return f"{self.flux_name}({self.in_features} => {self.hidden}{self.bias_kw()})"

    def bias_kw(self) -> str:
        """``"; bias=false"`` for a bias-free cell (Flux's show omits it; printed so the text rebuilds it)."""
        return "; bias=false" if self.bias is None else ""

    @classmethod
    def sizes_from_syntax(cls, call: Any, n_extra: int = 0, wrapped: bool = False) -> tuple[int, int, tuple, dict]:
        """``Name(in => out[, extra...]; bias=, init_kernel=, init_recurrent_kernel=)`` -> sizes, extras, kw.
        ``wrapped``: parsing for the sequence layer, which also takes ``return_state``."""
        call.check_kw("bias", "init_kernel", "init_recurrent_kernel", *(["return_state"] if wrapped else []))
        for k in ("init_kernel", "init_recurrent_kernel"):
            if k in call.kwargs:
                raise ValueError(f"{k}: initializers cannot be parsed; build the layer in Python to choose one")
        args = call.args
        if not args or not isinstance(args[0], Pair) or len(args) > 1 + n_extra:
            name = cls.flux_name[:-4] if wrapped else cls.flux_name
            raise ValueError(f"expected {name}(in => out{', σ' if n_extra else ''})")
        n_in, n_out = as_pair(args[0], f"{cls.flux_name} size")
        return n_in, n_out, tuple(args[1:]), {"bias": call.bool("bias", True), "rng": call.rng}

    # structured pruning of hidden units: gate-coupled rows, recurrent columns -------------------------
    def slice_hidden(self, name: str, arr: np.ndarray, keep: np.ndarray, hidden: int) -> np.ndarray:
        """Parameter ``name`` (or its mask) restricted to hidden units ``keep`` of ``hidden``: the unit's rows in
        every gate block (an LSTM unit's four gates / a GRU unit's three go together) and, for recurrent
        matrices, its columns."""
        keep = np.asarray(keep, dtype=np.int64)
        if name in ("Wi", "Wh", "bias"):
            arr = np.take(arr, gate_rows(keep, hidden, self.gates), axis=0)
        if name == "Wh":
            arr = np.take(arr, keep, axis=1)
        return np.ascontiguousarray(arr)

    def keep_hidden(self, keep: np.ndarray) -> None:
        """Keep hidden units ``keep`` (in place)."""
        h = self.hidden
        for name, arr in self.params().items():
            setattr(self, name, self.slice_hidden(name, arr, keep, h))

    def keep_inputs(self, keep: np.ndarray) -> None:
        self.Wi = np.ascontiguousarray(self.Wi[:, np.asarray(keep, dtype=np.int64)])

    def flux_state(self) -> dict[str, Any]:
        """Flux fields in order; no bias is the Bool ``false`` Flux's ``create_bias(W, false, ...)`` stores, also
        in GRUCell/GRUv3Cell whose field is ``b`` (Flux 0.15 src/layers/recurrent.jl), not ``nothing``."""
        return {j: (False if a == "bias" and self.bias is None else getattr(self, a, None))
                for j, a in self.flux_fields.items()}

    @classmethod
    def arrays_from_flux(cls, fields: dict[str, Any]) -> dict[str, Any]:
        """Flux field values -> constructor arrays; accepts Flux <= 0.14 field ``b`` for ``bias`` and
        ignores its ``state0``. ValueError if an array is missing."""
        out = {}
        for jname, attr in cls.flux_fields.items():
            if attr == "activation":
                continue
            v = fields.get(jname, fields.get("b" if jname == "bias" else "bias" if jname == "b" else jname))
            if attr == "bias" and (v is False or v is None):
                out[attr] = False
                continue
            if not isinstance(v, np.ndarray):
                raise ValueError(f"{cls.flux_name}.{jname} must be an array; got {type(v).__name__}")
            out[attr] = np.array(v, dtype=np.float32)
        return out

    # the gated cells' forms (LSTMCell, GRUCell): sizes and options only; RNNCell adds its activation
    @classmethod
    def from_syntax(cls, call: Any, wrapped: bool = False) -> "RecurrentCell":
        n_in, n_out, _, kw = cls.sizes_from_syntax(call, 0, wrapped)
        return cls(n_in, n_out, **kw)

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "RecurrentCell":
        a = cls.arrays_from_flux(fields)
        return cls(None, Wi=a["Wi"], Wh=a["Wh"], bias=a["bias"])


class RecurrentLayer(Layer):
    """A cell scanned over a sequence: ``x (N, len, in)`` -> every hidden state ``(N, len, out)``.

    ``run(x, state=None) -> (y, final_state)``; ``layer(x)`` gives ``y`` (``(y, final_state)`` with
    ``return_state=True``). A 2-D ``x`` is one unbatched sequence ``(len, in)`` (Flux's ``(in, len)``).
    """

    cell_class: type = RecurrentCell
    flux_fields = {"cell": "cell"}
    compressible = ("Wi", "Wh")
    structured = "recurrent"
    quantize_as = "recurrent"
    input_grad_optional = True
    onnx_ops = ("Transpose",)

    def __init__(self, cell: Any, *, return_state: bool = False) -> None:
        if not isinstance(cell, self.cell_class):
            raise ValueError(f"{self.flux_name}: cell must be a {self.cell_class.flux_name}; got {cell!r}")
        self.cell = cell
        self.return_state = check_bool("return_state", return_state)

    # the cell's arrays, addressed on the layer (params, compression, masks)
    Wi = property(lambda self: self.cell.Wi, lambda self, v: setattr(self.cell, "Wi", v))
    Wh = property(lambda self: self.cell.Wh, lambda self, v: setattr(self.cell, "Wh", v))
    bias = property(lambda self: self.cell.bias, lambda self, v: setattr(self.cell, "bias", v))

    @property
    def hidden(self) -> int:
        return self.cell.hidden

    @property
    def in_features(self) -> int:
        return self.cell.in_features

    def params(self) -> dict[str, np.ndarray]:
        return self.cell.params()

    def _input(self, x: Any) -> np.ndarray:
        try:
            x = np.asarray(x, dtype=self.cell.Wi.dtype)
        except (TypeError, ValueError) as err:
            raise self._err(f": input must be a numeric array ({err})") from None
        if x.ndim != 3 or x.shape[2] != self.in_features:
            raise self._err(f"expects input (N, len, {self.in_features}) (Flux's (in, len, batch) reversed); got "
                            f"shape {x.shape}")
        return x

    def scan(self, x: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple, list]:
        gx = self.cell.project(x)                       # (N, L, G*out): all input projections at once
        n, length = x.shape[:2]
        ys = np.empty((n, length, self.hidden), dtype=gx.dtype)
        caches = []
        for t in range(length):
            state, c = self.cell.step(gx[:, t], state)
            ys[:, t] = state[0]
            caches.append(c)
        return ys, state, caches

    def run(self, x: Any, state: Any = None) -> tuple[np.ndarray, Any]:
        """``(y, final_state)`` from initial ``state`` (None: zeros; an ``(out,)`` state broadcasts)."""
        x = np.asarray(x, dtype=self.cell.Wi.dtype)
        single = x.ndim == 2
        x = self._input(x[None] if single else x)
        y, st, _ = self.scan(x, self.cell.check_state(state, len(x), x.dtype))
        if single:
            y, st = y[0], tuple(s[0] for s in st)
        return y, (st if self.cell.n_states > 1 else st[0])

    def __call__(self, x: Any, state: Any = None) -> Any:
        y, st = self.run(x, state)
        return (y, st) if self.return_state else y

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        if self.return_state:
            raise self._err(": return_state=true returns (y, state), which no following layer takes; use "
                            "layer.run(x) or return_state=false inside a Chain")
        x = self._input(x)
        y, _, caches = self.scan(x, self.cell.initial_state(len(x), x.dtype))
        return y, (x, caches)

    def backward(self, cache: Any, dy: np.ndarray, need_input_grad: bool = True) -> tuple[Any, Grads]:
        """Backpropagation through time over the whole sequence."""
        x, caches = cache
        cell = self.cell
        grads = cell.zero_grads()
        dy = np.asarray(dy)
        dgx = np.empty(x.shape[:2] + (cell.Wi.shape[0],), dtype=dy.dtype)
        dstate = tuple(np.zeros((len(x), self.hidden), dy.dtype) for _ in range(cell.n_states))
        for t in range(x.shape[1] - 1, -1, -1):
            dstate = (dstate[0] + dy[:, t],) + dstate[1:]
            dgx[:, t], dstate = cell.step_back(caches[t], dstate, grads)
        flat = dgx.reshape(-1, dgx.shape[-1])
        grads["Wi"] = flat.T @ x.reshape(-1, x.shape[-1])
        if cell.bias is not None:
            grads["bias"] = flat.sum(axis=0)
        return (dgx @ cell.Wi if need_input_grad else None), grads

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or in_shape[1] != self.in_features:
            raise self._err(f"expects per-sample input (len, {self.in_features}); got {in_shape}")
        return (in_shape[0], self.hidden)

    def __repr__(self) -> str:
        s = repr(self.cell).replace(self.cell.flux_name, self.flux_name, 1)
        if self.return_state:
            s = s[:-1] + ("; " if ";" not in s else ", ") + "return_state=true)"
        return s

    @classmethod
    def from_syntax(cls, call: Any) -> "RecurrentLayer":
        cell = cls.cell_class.from_syntax(call, wrapped=True)
        return cls(cell, return_state=call.bool("return_state", False))

    def flux_state(self) -> dict[str, Any]:
        self.cell.flux_state()     # a cell without a Flux form (an imported PyTorch GRU's b_hn) refuses here
        return {"cell": self.cell}

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "RecurrentLayer":
        cell = build(fields.get("cell"), "cell")
        params = fields.get("#params", ())
        return cls(cell, return_state=bool(params and params[0] is True))

    # structured pruning ----------------------------------------------------------------------------------
    def keep_hidden(self, keep: np.ndarray) -> None:
        """Keep hidden units ``keep`` of the cell (gate-coupled), masks sliced alike."""
        h = self.hidden
        self.cell.keep_hidden(keep)
        for name, m in list(self.masks.items()):
            self.masks[name] = self.cell.slice_hidden(name, m, keep, h)

    def keep_inputs(self, keep: np.ndarray) -> None:
        self.cell.keep_inputs(keep)
        if "Wi" in self.masks:
            self.masks["Wi"] = np.ascontiguousarray(self.masks["Wi"][:, np.asarray(keep, dtype=np.int64)])

    # ONNX --------------------------------------------------------------------------------------------------
    def onnx_weights(self) -> dict[str, Any]:
        """``{"op", "W", "R", "B", attrs...}`` for the ONNX recurrent op (cell-specific)."""
        raise NotImplementedError

    #: ONNX form: ``"op"`` (the ONNX LSTM/GRU/RNN operator, any length) or ``"unrolled"`` (one MatMul for the
    #: input projection of all steps, then the steps as MatMul + element-wise nodes; needs a fixed length).
    #: Set it on a layer (``model[0].onnx_form = "unrolled"``) before ``export_onnx``.
    onnx_form: str = "op"

    def to_onnx(self, g: Any, x: str) -> str:
        if self.return_state:
            raise ValueError(f"{self!r}: return_state=true has no single-output ONNX form")
        if g.opset < 13:
            raise ValueError(f"{self!r}: ONNX export needs opset >= 13 (Squeeze with axes input)")
        if self.onnx_form not in ONNX_FORMS:
            raise ValueError(f"{self!r}: onnx_form must be one of {ONNX_FORMS}; got {self.onnx_form!r}")
        if self.onnx_form == "unrolled":
            return self.to_onnx_unrolled(g, x)
        spec = self.onnx_weights()
        p = g.fresh(spec.pop("op").lower())
        op = self.onnx_op
        (xt,) = g.node("Transpose", [x], prefix=p, perm=[1, 0, 2])              # (L, N, in): layout 0
        inputs = [xt, g.const(f"{p}_W", spec.pop("W"), allow_sparse=True),
                  g.const(f"{p}_R", spec.pop("R"), allow_sparse=True)]
        if self.bias is not None:
            inputs.append(g.const(f"{p}_B", spec.pop("B")))
        else:
            spec.pop("B", None)
        (y,) = g.node(op, inputs, prefix=p, rank=4, hidden_size=self.hidden, **spec)   # (L, 1, N, out)
        (y,) = g.node("Squeeze", [y, g.const(f"{p}_axis", np.array([1], np.int64))], prefix=p, rank=3)
        (y,) = g.node("Transpose", [y], prefix=p, perm=[1, 0, 2])
        return y

    onnx_op: str = ""

    def to_onnx_unrolled(self, g: Any, x: str, project: Callable | None = None, rmul: Callable | None = None) -> str:
        """The layer as an unrolled graph over the (fixed) sequence length of ``x (N, len, in)``.

        ``project(g, x) -> (N, len, G*out)`` writes the input projection of all steps at once (default: float
        ``MatMul`` + bias), ``rmul(g, a, which, lo, hi) -> (N, hi-lo)`` one recurrent product (default: float
        ``MatMul``); QuantizedRecurrent passes integer versions of both (compression/quantize_sequence.py).
        Each step takes its slice with ``Gather(axis=1)`` and runs the cell's :meth:`~RecurrentCell.onnx_step`; the hidden
        states are concatenated back to ``(N, len, out)``. The zero initial state makes no product (its
        product is zeros, also in the integer form)."""
        length = g.static_dim(x, 1)
        if length is None:
            raise ValueError(f"{self!r}: the unrolled ONNX form needs a fixed sequence length; export with an "
                             f"integer input_shape=(len, {self.in_features})")
        cell = self.cell
        p = g.fresh(self.flux_name.lower() + "_unrolled")
        gx = (project or self.onnx_project)(g, x)
        (shape,) = g.node("Shape", [x], prefix=p, rank=1)
        (n,) = g.node("Slice", [shape, g.const(f"{p}_0", np.array([0], np.int64)),
                                g.const(f"{p}_1", np.array([1], np.int64))], prefix=p, rank=1)
        zeros: dict[int, str] = {}

        def zero(width: int) -> str:
            if width not in zeros:
                (dims,) = g.node("Concat", [n, g.const(f"{p}_w{width}", np.array([width], np.int64))], prefix=p,
                                 rank=1, axis=0)
                (zeros[width],) = g.node("ConstantOfShape", [dims], prefix=p, rank=2)
            return zeros[width]

        product = rmul or self.onnx_rmul

        def mul(a: str, which: str, lo: int, hi: int) -> str:
            return zero(hi - lo) if a in zeros.values() else product(g, a, which, lo, hi)

        state = tuple(zero(self.hidden) for _ in range(cell.n_states))
        axis1 = g.const(f"{p}_axis1", np.array([1], np.int64))
        hs = []
        for t in range(length):
            (gt,) = g.node("Gather", [gx, g.const(f"{p}_t{t}", np.array(t, np.int64))], prefix=p, rank=2, axis=1)
            state = cell.onnx_step(g, gt, state, mul)
            hs.append(g.node("Unsqueeze", [state[0], axis1], prefix=p, rank=3)[0])
        return g.node("Concat", hs, prefix=p, rank=3, axis=1)[0] if len(hs) > 1 else hs[0]

    def onnx_project(self, g: Any, x: str) -> str:
        """Float input projection of all steps: ``MatMul(x, Wi.T) + bias`` -> ``(N, len, G*out)``."""
        c = self.cell
        p = g.fresh("rec_project")
        (y,) = g.node("MatMul", [x, g.const(f"{p}_WiT", np.ascontiguousarray(c.Wi.T, np.float32))], prefix=p)
        if c.bias is not None:
            (y,) = g.node("Add", [y, g.const(f"{p}_b", np.asarray(c.bias, np.float32))], prefix=p)
        return y

    def onnx_rmul(self, g: Any, a: str, which: str, lo: int, hi: int) -> str:
        """Float recurrent product ``MatMul(a, W[lo:hi].T)``."""
        p = g.fresh("rec_rmul")
        w = np.ascontiguousarray(getattr(self.cell, which)[lo:hi].T, np.float32)
        return g.node("MatMul", [a, g.const(f"{p}_{which}T", w)], prefix=p)[0]

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "RecurrentLayer":
        """Our export pattern ``Transpose -> LSTM|GRU|RNN -> Squeeze -> Transpose`` (weights converted back to
        Flux's gate order). Only forward direction, zero initial state, no sequence_lens/peepholes/clip."""
        perm = list(r.attrs(node).get("perm", []))
        cons = r.consumers.get(node.output[0], [])
        if perm != [1, 0, 2] or len(cons) != 1 or cons[0].op_type not in ("LSTM", "GRU", "RNN"):
            raise r.error(node, "only Transpose(perm=[1,0,2]) feeding an LSTM/GRU/RNN node imports (a recurrent "
                                "layer with batch-first data)")
        rnn = cons[0]
        a = r.attrs(rnn)
        if a.get("direction", "forward") != "forward" or a.get("layout", 0) != 0 or "clip" in a \
                or a.get("input_forget", 0):
            raise r.error(rnn, "only direction=forward, layout=0, no clip, input_forget=0 imports")
        for i, what in ((4, "sequence_lens"), (5, "initial_h"), (6, "initial_c"), (7, "P")):
            if r.has_input(rnn, i) and (what == "sequence_lens" or not cls.zero_input(rnn, i, r)):
                raise r.error(rnn, f"input {what} is not supported (Flux's layer starts from zeros)")
        outs = [o for o in rnn.output[:1]]
        sq = r.consumers.get(outs[0], [])
        if len(sq) != 1 or sq[0].op_type != "Squeeze":
            raise r.error(rnn, "its Y output must feed one Squeeze(axis 1)")
        tr = r.consumers.get(sq[0].output[0], [])
        if len(tr) != 1 or tr[0].op_type != "Transpose" or list(r.attrs(tr[0]).get("perm", [])) != [1, 0, 2]:
            raise r.error(rnn, "Squeeze must feed Transpose(perm=[1,0,2]) back to batch-first")
        W = r.const(rnn, 1).astype(np.float32)[0]
        R = r.const(rnn, 2).astype(np.float32)[0]
        B = r.const(rnn, 3).astype(np.float32)[0] if r.has_input(rnn, 3) else None
        target = [c for c in registry.by_onnx_op(rnn.op_type)
                  if issubclass(c, RecurrentLayer) and c.onnx_matches(a)]
        if not target:
            raise r.error(rnn, "no recurrent layer registered for this op")
        layer = target[0].layer_from_onnx(W, R, B, a, lambda msg: r.error(rnn, msg))
        r.advanced = tr[0].output[0]
        return layer

    @staticmethod
    def zero_input(node: Any, i: int, r: Any) -> bool:
        """Whether input ``i`` of ``node`` is all zeros: a zero constant, or a ``ConstantOfShape`` of value 0 (how
        ``torch.onnx.export`` writes an RNN's default initial state, its shape computed from the input's)."""
        name = node.input[i]
        if name in r.consts:
            return not np.any(r.consts[name] != 0)
        maker = next((n for n in r.nodes if name in n.output), None)
        if maker is None or maker.op_type != "ConstantOfShape":
            return False
        value = r.attrs(maker).get("value")
        if value is None:
            return True
        from onnx import numpy_helper   # the ONNX importer is running, so onnx is installed
        return not np.any(numpy_helper.to_array(value) != 0)

    @classmethod
    def onnx_matches(cls, attrs: dict) -> bool:
        """Whether this class reads a recurrent node with these attributes (GRU vs GRUv3)."""
        return True

    @classmethod
    def layer_from_onnx(cls, W: np.ndarray, R: np.ndarray, B: np.ndarray | None, attrs: dict,
                        error: Callable[[str], Exception]) -> "RecurrentLayer":
        raise NotImplementedError
