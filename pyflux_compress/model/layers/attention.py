"""Flux ``MultiHeadAttention`` (``src/layers/attention.jl``, Flux 0.14-0.16) and Julia's ``first`` as read-out.

Flux: ``struct MultiHeadAttention{P1,D,P2}; nheads::Int; q_proj::P1; k_proj::P1; v_proj::P1; attn_drop::D;
out_proj::P2; end``, built by ``MultiHeadAttention(dims; nheads=8, bias=false, init=glorot_uniform,
dropout_prob=0.0)`` with ``dims`` an ``Int``, ``in => qkv => out``, ``in => (qk, v) => out`` or ``(q_in, k_in,
v_in) => (qk, v) => out``; the projections are ``Dense`` layers, ``attn_drop = Dropout(dropout_prob)``.
Forward ``mha(q_in, k_in, v_in; mask)`` (``mha(x)`` = self-attention) returns ``(x, α)``: NNlib's
``dot_product_attention`` splits the projected features into ``nheads`` contiguous blocks (column-major reshape
``(qk ÷ nheads, nheads, len, batch)``), scales ``q`` by ``1/sqrt(head_dim)``, ``logits = kᵀq``, masks with
``ifelse(mask, logits, -Inf)``, ``α = attn_drop(softmax(logits; dims=1))``, ``x = out_proj(merge(α·v))``.

Batch-first here: inputs ``(N, len, features)`` (Flux's ``(features, len, N)`` reversed), ``α`` is
``(N, nheads, q_len, kv_len)`` (Flux's ``(kv_len, q_len, nheads, N)``); a ``mask`` broadcasts to that shape
(``True`` = attend). ``make_causal_mask(x)`` is NNlib's ``triu(trues(len, len))`` reversed: query ``i`` sees keys
``j <= i``. Since the layer returns a tuple, a Chain reads the output with Julia's ``first`` (a plain Base
function, valid in a Flux ``Chain``): ``Chain(mha, first, ...)``; here :data:`first` is that Chain element.
``Flux.state``: ``(nheads, q_proj = (weight, bias, σ), k_proj, v_proj, attn_drop = (p, dims, active, rng),
out_proj)``. ONNX: MatMul / Reshape / Transpose / Softmax (and Where for a mask), opset-independent ops.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_bool, check_int
from ..registry import register_layer
from ..syntax import Pair, as_int
from .base import FunctionLayer, Grads, Layer, as_data
from .dense import Dense
from .dropout import Dropout

__all__ = ["MultiHeadAttention", "First", "first", "make_causal_mask", "mha_dims"]


def mha_dims(dims: Any) -> dict[str, int]:
    """Flux's ``normalize_mha_dims``: ``dims`` as an int, a Python triple ``(in, qkv, out)`` (Julia
    ``in => qkv => out``; ``in`` may be ``(q_in, k_in, v_in)``, ``qkv`` may be ``(qk, v)``), the nested
    ``(in, (qkv, out))``, or parsed ``Pair``s -> ``{q_in, k_in, v_in, qk, v, out}``."""
    if isinstance(dims, Pair):
        dims = (dims.first, (dims.second.first, dims.second.second) if isinstance(dims.second, Pair)
                else dims.second)
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        n = check_int("MultiHeadAttention dims", dims, min=1)
        return dict(q_in=n, k_in=n, v_in=n, qk=n, v=n, out=n)
    try:
        if not isinstance(dims, (tuple, list)):
            raise TypeError
        inp, qkv, out = dims if len(dims) == 3 else (dims[0], *dims[1])
        q_in, k_in, v_in = (inp, inp, inp) if not isinstance(inp, (tuple, list)) else inp
        qk, v = (qkv, qkv) if not isinstance(qkv, (tuple, list)) else qkv
    except (TypeError, ValueError, IndexError):
        raise ValueError("MultiHeadAttention dims must be an int, in => qkv => out, in => (qk, v) => out or "
                         f"(q_in, k_in, v_in) => (qk, v) => out; got {dims!r}") from None
    vals = dict(q_in=q_in, k_in=k_in, v_in=v_in, qk=qk, v=v, out=out)
    return {k: check_int(f"MultiHeadAttention dims {k}", x, min=1) for k, x in vals.items()}


def make_causal_mask(x: Any) -> np.ndarray:
    """NNlib ``make_causal_mask(x; dims=2)`` batch-first: ``x`` is ``(N, len, features)`` (or an int ``len``);
    returns a bool ``(len, len)`` mask, ``mask[i, j] = j <= i`` (query ``i`` attends to keys up to ``i``)."""
    n = int(x) if isinstance(x, (int, np.integer)) else np.shape(x)[1]
    return np.tril(np.ones((n, n), dtype=bool))


@register_layer
class MultiHeadAttention(Layer):
    """``MultiHeadAttention(dims; nheads=8, bias=false, init=glorot_uniform, dropout_prob=0.0)``.

    Children (Flux field order): ``q_proj``, ``k_proj``, ``v_proj`` (``Dense``), ``attn_drop`` (``Dropout``),
    ``out_proj`` (``Dense``). Call ``mha(x)`` / ``mha(q, k, v, mask=...)`` -> ``(y, α)``: ``y`` is
    ``(N, q_len, out)``, ``α`` ``(N, nheads, q_len, kv_len)``. In a Chain the layer takes one input
    (self-attention) and passes the tuple on; follow it with :data:`first`.
    """

    flux_name = "MultiHeadAttention"
    flux_fields = {"nheads": "nheads", "q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj",
                   "attn_drop": "attn_drop", "out_proj": "out_proj"}
    container = True
    structured = None    # heads couple q/k/v rows and out_proj columns: see compression prune_heads

    def __init__(self, dims: Any, *, nheads: int = 8, bias: bool = False, init: Callable | None = None,
                 dropout_prob: float = 0.0, rng: np.random.Generator | None = None, seed: int | None = None
                 ) -> None:
        d = mha_dims(dims)
        self.nheads = check_int("MultiHeadAttention nheads", nheads, min=1)
        for key in ("qk", "v"):
            if d[key] % self.nheads:
                raise ValueError(f"MultiHeadAttention: {key}_dim={d[key]} must be divisible by nheads="
                                 f"{self.nheads}")
        bias = check_bool("MultiHeadAttention bias", bias)
        gen = rng if rng is not None else np.random.default_rng(seed)
        mk = lambda a, b: Dense(a, b, bias=bias, init=init, rng=gen)  # noqa: E731
        self.q_proj, self.k_proj = mk(d["q_in"], d["qk"]), mk(d["k_in"], d["qk"])
        self.v_proj = mk(d["v_in"], d["v"])
        self.attn_drop = Dropout(dropout_prob, rng=gen)
        self.out_proj = mk(d["v"], d["out"])

    # ---- tree ----------------------------------------------------------------------------------------
    def children(self) -> dict[str, Layer]:
        return {k: getattr(self, k) for k in ("q_proj", "k_proj", "v_proj", "attn_drop", "out_proj")}

    def with_children(self, children: dict[str, Layer], as_type: type | None = None) -> "MultiHeadAttention":
        cls = as_type or type(self)
        new = cls.__new__(cls)
        new.__dict__.update(self.__dict__)
        new.frozen_dims = self.dims     # export wraps the children in emitters that hold no arrays
        new.__dict__.update(children)
        return new

    def params(self) -> dict[str, np.ndarray]:
        return {f"{c}.{k}": v for c, layer in self.children().items() for k, v in layer.params().items()}

    def _dtype(self) -> np.dtype:
        return self.q_proj._dtype()

    @property
    def dims(self) -> dict[str, int]:
        """Current sizes (after head pruning ``qk``/``v`` shrink by whole heads)."""
        if not all(getattr(self, n).params() for n in ("q_proj", "k_proj", "v_proj", "out_proj")):
            return self.frozen_dims

        def io(p: Layer) -> tuple[int, int]:   # a Dense, or the Chain(Dense, Dense) low-rank leaves behind
            ws = [w for k, w in p.params().items() if k.endswith("weight")]
            return int(ws[0].shape[1]), int(ws[-1].shape[0])
        (q_in, qk), (k_in, _), (v_in, v), (_, out) = (io(getattr(self, n)) for n in
                                                      ("q_proj", "k_proj", "v_proj", "out_proj"))
        return dict(q_in=q_in, k_in=k_in, v_in=v_in, qk=qk, v=v, out=out)

    # ---- engine --------------------------------------------------------------------------------------
    def _split(self, t: np.ndarray) -> np.ndarray:
        """``(N, L, H*d) -> (N, H, L, d)``: Flux's column-major reshape puts head ``h`` on features
        ``h*d:(h+1)*d``."""
        n, length, f = t.shape
        return t.reshape(n, length, self.nheads, f // self.nheads).transpose(0, 2, 1, 3)

    def __call__(self, q: Any, k: Any = None, v: Any = None, *, mask: Any = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        return self.forward(q if k is None and v is None else (q, k, v), mask=mask)[0]

    def forward(self, x: Any, train: bool = False, rng: Any = None, mask: Any = None) -> tuple[Any, Any]:
        """``x``: ``(N, L, q_in)`` (self-attention) or a ``(q, k, v)`` tuple (``v`` None: ``v = k``).
        Returns ``((y, α), cache)``."""
        dt = self._dtype()
        self_attn = not isinstance(x, (tuple, list))
        if self_attn:
            q_in = k_in = v_in = as_data(x, dt, self)
        else:
            q_in, k_in, v_in = (list(x) + [None])[:3]
            v_in = k_in if v_in is None else v_in
            q_in, k_in, v_in = (as_data(t, dt, self) for t in (q_in, k_in, v_in))
        for name, t in (("query", q_in), ("key", k_in), ("value", v_in)):
            if t.ndim != 3:
                raise self._err(f"expects {name} input of shape (N, len, features); got {t.shape}")
        if k_in.shape[:2] != v_in.shape[:2] or q_in.shape[0] != k_in.shape[0]:
            raise self._err(f"query {q_in.shape}, key {k_in.shape} and value {v_in.shape} must agree in N and "
                            "the key/value length")
        q, cq = self.q_proj.forward(q_in, train, rng)
        k, ck = self.k_proj.forward(k_in, train, rng)
        v, cv = self.v_proj.forward(v_in, train, rng)
        qh, kh, vh = self._split(q), self._split(k), self._split(v)
        scale = np.asarray(1.0 / np.sqrt(qh.shape[-1]), dtype=dt)
        logits = (qh * scale) @ kh.transpose(0, 1, 3, 2)            # (N, H, Lq, Lk)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            try:
                mask = np.broadcast_to(mask, logits.shape)
            except ValueError:
                raise self._err(f"mask of shape {mask.shape} does not broadcast to (N, nheads, q_len, kv_len) "
                                f"= {logits.shape}") from None
            logits = np.where(mask, logits, -np.inf)
        m = logits.max(axis=-1, keepdims=True)
        e = np.exp(logits - np.where(np.isfinite(m), m, 0))
        s = e.sum(axis=-1, keepdims=True)
        probs = e / s                                               # fully masked rows: 0/0 = NaN, as NNlib
        alpha, cdrop = self.attn_drop.forward(probs, train, rng)
        oh = alpha @ vh                                             # (N, H, Lq, dv)
        n, h, lq, dv = oh.shape
        o = oh.transpose(0, 2, 1, 3).reshape(n, lq, h * dv)
        y, co = self.out_proj.forward(o, train, rng)
        cache = (self_attn, cq, ck, cv, qh, kh, vh, scale, probs, alpha, cdrop, co)
        return (y, alpha), cache

    def backward(self, cache: Any, dy: Any) -> tuple[Any, Grads]:
        """``dy``: ``dL/dy`` or ``(dL/dy, dL/dα or None)``. Returns ``dx`` (a tuple ``(dq, dk, dv)`` when the
        forward was given three inputs)."""
        self_attn, cq, ck, cv, qh, kh, vh, scale, probs, alpha, cdrop, co = cache
        dalpha_out = None
        if isinstance(dy, tuple):
            dy, dalpha_out = dy
        grads: Grads = {}
        do, g = self.out_proj.backward(co, dy)
        grads.update({f"out_proj.{k}": val for k, val in g.items()})
        n, h, lq, dv = alpha.shape[0], self.nheads, alpha.shape[2], vh.shape[-1]
        doh = do.reshape(n, lq, h, dv).transpose(0, 2, 1, 3)
        dalpha = doh @ vh.transpose(0, 1, 3, 2)
        if dalpha_out is not None:
            dalpha = dalpha + dalpha_out
        dvh = alpha.transpose(0, 1, 3, 2) @ doh
        dprobs, _ = self.attn_drop.backward(cdrop, dalpha)
        # softmax backward; masked entries have probs 0 and receive no gradient
        dlogits = probs * (dprobs - np.nansum(dprobs * probs, axis=-1, keepdims=True))
        dlogits = np.nan_to_num(dlogits)
        dqh = dlogits @ kh * scale
        dkh = dlogits.transpose(0, 1, 3, 2) @ (qh * scale)

        def merge(t: np.ndarray) -> np.ndarray:
            return t.transpose(0, 2, 1, 3).reshape(t.shape[0], t.shape[2], -1)

        dxs = []
        for name, proj, c, d in (("q_proj", self.q_proj, cq, dqh), ("k_proj", self.k_proj, ck, dkh),
                                 ("v_proj", self.v_proj, cv, dvh)):
            dx, g = proj.backward(c, np.ascontiguousarray(merge(d)))
            grads.update({f"{name}.{k}": val for k, val in g.items()})
            dxs.append(dx)
        return (dxs[0] + dxs[1] + dxs[2] if self_attn else tuple(dxs)), grads

    def output_shape(self, in_shape: tuple) -> tuple:
        """Per-sample ``(len, q_in)`` -> ``((len, out), (nheads, len, len))`` (the ``(y, α)`` pair)."""
        in_shape = tuple(in_shape)
        d = self.dims
        if len(in_shape) != 2 or in_shape[1] != d["q_in"]:
            raise self._err(f"expects per-sample shape (len, {d['q_in']}); got {in_shape}")
        return ((in_shape[0], d["out"]), (self.nheads, in_shape[0], in_shape[0]))

    def __repr__(self) -> str:
        d = self.dims
        if len({d["q_in"], d["k_in"], d["v_in"], d["qk"], d["v"], d["out"]}) == 1:
            dims = str(d["q_in"])
        else:
            inp = str(d["q_in"]) if d["q_in"] == d["k_in"] == d["v_in"] else f"({d['q_in']}, {d['k_in']}, {d['v_in']})"
            qkv = str(d["qk"]) if d["qk"] == d["v"] else f"({d['qk']}, {d['v']})"
            dims = f"{inp} => {qkv} => {d['out']}"
        s = f"MultiHeadAttention({dims}; nheads={self.nheads}"
        if any(k.endswith("bias") for k in self.q_proj.params()):     # Dense, or a quantized / factorised one
            s += ", bias=true"
        if self.attn_drop.p:
            s += f", dropout_prob={self.attn_drop.p!r}"
        return s + ")"

    @classmethod
    def from_syntax(cls, call: Any) -> "MultiHeadAttention":
        call.check_kw("nheads", "bias", "init", "dropout_prob")
        call.no_init()
        if len(call.args) != 1:
            raise ValueError("expected MultiHeadAttention(dims; nheads=8, bias=false, dropout_prob=0.0)")
        dims = call.args[0]
        if isinstance(dims, Pair) and not isinstance(dims.first, (int, tuple)):
            raise ValueError(f"MultiHeadAttention dims: bad input size {dims.first!r}")
        kw = call.kwargs
        p = kw.get("dropout_prob", 0.0)
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ValueError(f"dropout_prob must be a number; got {p!r}")
        return cls(dims, nheads=as_int(kw.get("nheads", 8), "nheads"), bias=call.bool("bias", False),
                   dropout_prob=float(p), init=call.init, rng=call.rng)

    # ---- Flux struct / state -------------------------------------------------------------------------
    def flux_state(self) -> dict[str, Any]:
        return {"nheads": self.nheads, **self.children()}

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable[[Any, str], Any]) -> "MultiHeadAttention":
        kids = {k: build(fields[k], k) for k in ("q_proj", "k_proj", "v_proj", "attn_drop", "out_proj")}
        for k in ("q_proj", "k_proj", "v_proj", "out_proj"):
            if not isinstance(kids[k], Dense):
                raise ValueError(f"MultiHeadAttention {k} must be a Dense; got {type(kids[k]).__name__}")
        nheads = int(np.asarray(fields["nheads"]))
        qk, v = kids["q_proj"].out_features, kids["v_proj"].out_features
        if nheads < 1 or qk % nheads or v % nheads or kids["k_proj"].out_features != qk \
                or kids["out_proj"].in_features != v:
            raise ValueError(f"MultiHeadAttention fields do not fit: nheads={nheads}, q/k/v/out_proj sizes "
                             f"{[kids[k].weight.shape for k in ('q_proj', 'k_proj', 'v_proj', 'out_proj')]}")
        new = cls.__new__(cls)
        new.nheads = nheads
        new.__dict__.update(kids)
        return new

    # ---- ONNX ----------------------------------------------------------------------------------------
    def to_onnx(self, g: Any, x: Any) -> tuple[str, str]:
        """Self-attention on ``x`` ``(N, L, F)`` -> ``(y, α)`` tensor names (a :data:`first` picks ``y``)."""
        if isinstance(x, tuple):
            raise ValueError("MultiHeadAttention: ONNX export needs a tensor input (follow it with first)")
        p = g.fresh("mha")
        q, k, v = (getattr(self, n).to_onnx(g, x) for n in ("q_proj", "k_proj", "v_proj"))
        d = self.dims
        hq, hv = d["qk"] // self.nheads, d["v"] // self.nheads

        def split(t: str, hd: int, perm: list[int]) -> str:
            shp = g.const(g.fresh(f"{p}_shape"), np.array([0, 0, self.nheads, hd], np.int64))
            (r,) = g.node("Reshape", [t, shp], prefix=p, rank=4)
            return g.node("Transpose", [r], prefix=p, rank=4, perm=perm)[0]

        qh, kt, vh = split(q, hq, [0, 2, 1, 3]), split(k, hq, [0, 2, 3, 1]), split(v, hv, [0, 2, 1, 3])
        scale = g.const(f"{p}_scale", np.array(1.0 / np.sqrt(hq), np.float32))
        (qs,) = g.node("Mul", [qh, scale], prefix=p, rank=4)
        (logits,) = g.node("MatMul", [qs, kt], prefix=p, rank=4)
        (alpha,) = g.node("Softmax", [logits], prefix=p, rank=4, axis=-1)
        (oh,) = g.node("MatMul", [alpha, vh], prefix=p, rank=4)
        (ot,) = g.node("Transpose", [oh], prefix=p, rank=4, perm=[0, 2, 1, 3])
        shp = g.const(f"{p}_merge", np.array([0, 0, d["v"]], np.int64))
        (o,) = g.node("Reshape", [ot, shp], prefix=p, rank=3)
        return self.out_proj.to_onnx(g, o), alpha

    @classmethod
    def from_onnx_region(cls, region: list, r: Any) -> "tuple[list, str] | None":
        """Import hook of the generic ONNX walker: the self-attention subgraph :meth:`to_onnx` writes (three
        projections of one tensor, per-head Reshape/Transpose, scaled ``MatMul``, ``Softmax``, ``MatMul``), then
        the merge and ``out_proj``. Returns ``([mha, first], output tensor)``, or None if it is not that."""
        x = r.current
        if region[-1].op_type != "MatMul" or sum(n.op_type == "Softmax" for n in region) != 1:
            return None
        projs = [n for n in region if n.op_type == "MatMul" and n.input[0] == x and n.input[1] in r.consts]
        if len(projs) != 3:
            return None

        def dense(node: Any) -> tuple[Dense, str]:
            r.advanced = None
            layer = Dense.from_onnx(node, r)            # a following Add(const) is its bias
            return layer, r.advanced or node.output[0]

        heads = {}
        for node in projs:
            proj, t = dense(node)
            reshape = r.follow(t, "Reshape")
            trans = r.follow(reshape.output[0], "Transpose") if reshape is not None else None
            if trans is None:
                return None
            shape = r.const(reshape, 1).reshape(-1)
            perm = list(r.attrs(trans).get("perm", ()))
            role = "k" if perm == [0, 2, 3, 1] else "q" if r.follow(trans.output[0], "Mul") is not None else "v"
            heads[role] = (proj, int(shape[2]) if shape.size == 4 else 0)
        if set(heads) != {"q", "k", "v"} or len({h for _, h in heads.values()}) != 1 or not heads["q"][1]:
            return None
        nheads = heads["q"][1]
        softmax = next(n for n in region if n.op_type == "Softmax")
        if r.attrs(softmax).get("axis", -1) not in (-1, 3):
            return None
        trans = r.follow(region[-1].output[0], "Transpose")
        merge = r.follow(trans.output[0], "Reshape") if trans is not None else None
        out_mm = r.follow(merge.output[0], "MatMul") if merge is not None else None
        if out_mm is None or out_mm.input[1] not in r.consts:
            return None
        out_proj, y = dense(out_mm)
        q, k, v = (heads[n][0] for n in "qkv")
        layer = cls((q.weight.shape[1], (q.weight.shape[0], v.weight.shape[0]), out_proj.weight.shape[0]),
                    nheads=nheads)
        layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj = q, k, v, out_proj
        return [layer, first], y

    # ---- compression: whole heads ----------------------------------------------------------------------
    def head_scores(self) -> np.ndarray:
        """L2 norm per head of the coupled weights (q/k/v rows and out_proj columns of that head)."""
        d = self.dims
        hq, hv = d["qk"] // self.nheads, d["v"] // self.nheads
        sq = lambda w, hd, ax: (np.moveaxis(w, ax, 0).reshape(self.nheads, hd, -1) ** 2).sum(axis=(1, 2))  # noqa
        tot = sq(self.q_proj.weight, hq, 0) + sq(self.k_proj.weight, hq, 0) + sq(self.v_proj.weight, hv, 0) \
            + sq(self.out_proj.weight, hv, 1)
        return np.sqrt(tot)

    def keep_heads(self, heads: Any) -> None:
        """Keep only ``heads`` (0-based indices), in place: each kept head's q/k rows, v rows and out_proj
        columns stay together, so the layer equals the original with the other heads' contributions removed.
        The projections must be plain Dense layers (prune heads before quantizing or factorising)."""
        heads = np.unique(np.asarray(heads, dtype=np.int64))
        if heads.size == 0 or heads.min() < 0 or heads.max() >= self.nheads:
            raise self._err(f"heads to keep must be a non-empty subset of 0..{self.nheads - 1}; got {heads}")
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            if not isinstance(getattr(self, name), Dense):
                raise self._err(f"{name} is {getattr(self, name)!r}, not a Dense: prune heads first")
        d = self.dims
        hq, hv = d["qk"] // self.nheads, d["v"] // self.nheads
        rows = lambda hd: (heads[:, None] * hd + np.arange(hd)).ravel()  # noqa: E731
        for proj, idx in ((self.q_proj, rows(hq)), (self.k_proj, rows(hq)), (self.v_proj, rows(hv))):
            proj.slice_outputs(idx)
        self.out_proj.slice_inputs(rows(hv))
        self.nheads = int(heads.size)


@register_layer
class First(FunctionLayer):
    """Julia's ``first`` as a Chain element: ``(y, α) -> y`` (reads MultiHeadAttention's output)."""

    flux_name = "first"

    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[Any, Any]:
        if not isinstance(x, (tuple, list)) or not x:
            raise self._err(f"expects a tuple (e.g. MultiHeadAttention's (y, α)); got {type(x).__name__}")
        return x[0], len(x)

    def backward(self, cache: Any, dy: Any) -> tuple[Any, Grads]:
        return (dy,) + (None,) * (cache - 1), {}

    def output_shape(self, in_shape: tuple) -> tuple:
        if not (in_shape and isinstance(in_shape[0], tuple)):
            raise self._err(f"expects a tuple input (e.g. after MultiHeadAttention); got shape {in_shape}")
        return in_shape[0]

    def to_onnx(self, g: Any, x: Any) -> str:
        if not isinstance(x, tuple):
            raise ValueError("first: expects a tuple of tensors (after MultiHeadAttention)")
        return x[0]


#: Julia's ``first``, usable as a Chain element after MultiHeadAttention
first = First.the()
