"""Read Flux model syntax: ``parse("Chain(Dense(784 => 128, relu), Dense(128 => 10))")``.

Printing is each layer's ``repr`` (one-line Flux syntax); this module is the inverse. It is a small tokenizer and
recursive-descent parser for the subset of Julia that Flux model definitions use, and it never evaluates code:

    expr   := pair
    pair   := atom [ "=>" atom ]
    atom   := number | "true" | "false" | name | name "(" args ")" | "(" [ expr { "," expr } [","] ] ")"
              | "-" atom | ":"
    args   := [ arg { "," arg } ] [ ";" kwarg { "," kwarg } ]
    arg    := kwarg | expr
    kwarg  := identifier "=" expr
    name   := identifier { "." identifier }        # Flux.flatten, NNlib.relu: the module prefix is dropped

``#`` starts a comment to the end of the line, so Flux's multi-line REPL display (and :func:`summary`) can be
pasted as is. Numbers accept Julia forms ``1``, ``1_000``, ``0.1``, ``1e-5``, ``1f-5``, ``0.1f0``. Identifiers may be Unicode
(``σ``). Errors raise :class:`FluxSyntaxError` (a ``ValueError``) with the 0-based character ``position``
and the offending ``token``.

Parsing is bounded before anything is allocated: nesting deeper than ``MAX_DEPTH`` levels is a syntax error (not
a ``RecursionError``), and a model text whose layers would hold more than ``max_params`` parameters (default
``DEFAULT_MAX_PARAMS``, 2^28: 1 GiB of float32) is refused before its arrays are created.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .._validate import check_rng
from .activations import ACTIVATIONS, Activation
from .chain import Chain
from .layers import (BatchNorm, Conv, CrossCor, Dense, Dropout, Flatten, GlobalMeanPool, Layer, MaxPool,
                     MeanPool, SamePad, flatten)

__all__ = ["parse", "FluxSyntaxError"]

_MODULES = {"Flux", "NNlib", "Base", "Main"}
MAX_DEPTH = 100  # nesting levels of calls, tuples and unary minus (Python's own stack allows ~250 here)
DEFAULT_MAX_PARAMS = 1 << 28  # parameters in one parsed model: 1 GiB of float32


class FluxSyntaxError(ValueError):
    """Bad Flux syntax. ``position`` is the 0-based character offset, ``token`` the offending text."""

    def __init__(self, message: str, text: str, position: int, token: str) -> None:
        self.text = text
        self.position = position
        self.token = token
        snippet = text if len(text) <= 100 else text[max(0, position - 40):position + 40]
        caret_at = position if len(text) <= 100 else min(position, 40)
        super().__init__(f"{message} at position {position} (token {token!r})\n  {snippet}\n  {' ' * caret_at}^")


# ---- tokenizer ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tok:
    kind: str  # num | name | op | end
    text: str
    pos: int


_NUMBER = re.compile(r"(\d[\d_]*(\.\d[\d_]*)?|\.\d[\d_]*)([eEf][+-]?\d+)?")
_NAME = re.compile(r"[^\W\d][\w!′]*", re.UNICODE)
_OPS = ("=>", "(", ")", ",", ";", "=", ".", "-", ":")


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == "#":  # a Julia comment, e.g. Flux's "# 100_480 parameters" in a pasted REPL display
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        m = _NUMBER.match(text, i)
        if m and (c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit())):
            toks.append(_Tok("num", m.group(0), i))
            i = m.end()
            continue
        m = _NAME.match(text, i)
        if m:
            toks.append(_Tok("name", m.group(0), i))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                toks.append(_Tok("op", op, i))
                i += len(op)
                break
        else:
            raise FluxSyntaxError(f"unexpected character {c!r}", text, i, c)
    toks.append(_Tok("end", "", n))
    return toks


def _number(tok: _Tok, text: str) -> int | float:
    s = tok.text.replace("_", "")
    try:
        if re.fullmatch(r"\d+", s):
            return int(s)
        return float(s.replace("f", "e"))  # Julia Float32 literal 1f-5 == 1e-5
    except ValueError:
        raise FluxSyntaxError("malformed number", text, tok.pos, tok.text) from None


# ---- values --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Name:
    """An identifier that is not a call (e.g. ``relu``, ``flatten``, ``σ``)."""
    name: str
    pos: int


@dataclass(frozen=True)
class _Pair:
    """``a => b``."""
    first: Any
    second: Any


class _Colon:
    """Julia ``:`` (e.g. ``dims=:``)."""


# ---- parser ------------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str, rng: np.random.Generator, init: Any = None,
                 max_params: int = DEFAULT_MAX_PARAMS) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.rng = rng
        self.init = init  # weight initialiser for Dense/Conv; None means Flux's glorot_uniform
        self.depth = 0
        self.max_params = max_params
        self.n_params = 0  # parameters of the layers built so far

    def claim(self, desc: str, n: int) -> None:
        """Count ``n`` parameters of the layer ``desc`` about to be built; refuse past ``max_params``."""
        self.n_params += max(n, 0)  # negative sizes are the layer constructor's error to report
        if self.n_params > self.max_params:
            raise ValueError(f"{desc} would bring the model to {self.n_params:,} parameters, more than "
                             f"max_params={self.max_params:,} (pass parse(..., max_params=N) to allow more)")

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, msg: str, tok: _Tok | None = None) -> FluxSyntaxError:
        tok = tok or self.peek()
        return FluxSyntaxError(msg, self.text, tok.pos, tok.text or "<end of text>")

    def expect(self, op: str) -> _Tok:
        tok = self.next()
        if tok.kind != "op" or tok.text != op:
            raise self.error(f"expected {op!r}", tok)
        return tok

    def is_op(self, op: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.text == op

    # expr := atom [ "=>" atom ]
    def expr(self) -> Any:
        a = self.atom()
        if self.is_op("=>"):
            self.next()
            return _Pair(a, self.atom())
        return a

    def atom(self) -> Any:
        # every nesting (call, tuple, unary minus) passes through here: bound it before Python's stack does
        if self.depth >= MAX_DEPTH:
            raise self.error(f"model text nested deeper than {MAX_DEPTH} levels")
        self.depth += 1
        try:
            return self._atom()
        finally:
            self.depth -= 1

    def _atom(self) -> Any:
        tok = self.peek()
        if tok.kind == "num":
            self.next()
            return _number(tok, self.text)
        if tok.kind == "op" and tok.text == "-":
            self.next()
            v = self.atom()
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self.error("'-' must be followed by a number", tok)
            return -v
        if tok.kind == "op" and tok.text == ":":
            self.next()
            return _Colon()
        if tok.kind == "op" and tok.text == "(":
            return self.tuple_()
        if tok.kind == "name":
            name = self.qualified_name()
            if name == "true":
                return True
            if name == "false":
                return False
            if self.is_op("("):
                return self.call(name, tok)
            return _Name(name, tok.pos)
        raise self.error("unexpected token")

    def qualified_name(self) -> str:
        tok = self.next()
        parts = [tok.text]
        while self.is_op("."):
            self.next()
            t = self.next()
            if t.kind != "name":
                raise self.error("expected a name after '.'", t)
            parts.append(t.text)
        if len(parts) > 1 and parts[0] not in _MODULES:
            raise FluxSyntaxError(f"unknown module {parts[0]!r} (known: {', '.join(sorted(_MODULES))})",
                                  self.text, tok.pos, ".".join(parts))
        return parts[-1]

    def tuple_(self) -> Any:
        open_tok = self.expect("(")
        items: list[Any] = []
        trailing_comma = False
        while not self.is_op(")"):
            if self.peek().kind == "end":
                raise self.error("unclosed '(' opened at position %d" % open_tok.pos)
            items.append(self.expr())
            trailing_comma = False
            if self.is_op(","):
                self.next()
                trailing_comma = True
            elif self.peek().kind == "end":
                raise self.error("unclosed '(' opened at position %d" % open_tok.pos)
            elif not self.is_op(")"):
                raise self.error("expected ',' or ')'")
        self.expect(")")
        if len(items) == 1 and not trailing_comma:
            return items[0]  # plain parentheses
        return tuple(items)

    def call(self, name: str, name_tok: _Tok) -> Any:
        open_tok = self.expect("(")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        in_kw = False
        while not self.is_op(")"):
            tok = self.peek()
            if tok.kind == "end":
                raise self.error(f"unclosed '(' of {name}( opened at position {open_tok.pos}")
            if tok.kind == "op" and tok.text == ";":
                self.next()
                in_kw = True
                continue
            if tok.kind == "name" and self.toks[self.i + 1].kind == "op" and self.toks[self.i + 1].text == "=":
                key = self.next().text
                self.next()
                if key in kwargs:
                    raise self.error(f"keyword {key!r} given twice", tok)
                kwargs[key] = self.expr()
            elif in_kw:
                raise self.error("expected keyword=value after ';'", tok)
            else:
                if kwargs:
                    raise self.error("positional argument after keyword argument", tok)
                args.append(self.expr())
            if self.is_op(","):
                self.next()
            elif self.peek().kind == "end":
                raise self.error(f"unclosed '(' of {name}( opened at position {open_tok.pos}")
            elif not self.is_op(")") and not self.is_op(";"):
                raise self.error("expected ',' or ')'")
        self.expect(")")
        builder = _BUILDERS.get(name)
        if builder is None:
            raise FluxSyntaxError(f"unknown layer or function {name!r} (known: {', '.join(sorted(_BUILDERS))})",
                                  self.text, name_tok.pos, name)
        try:
            return builder(self, args, kwargs)
        except FluxSyntaxError:
            raise
        except (ValueError, TypeError) as err:
            raise FluxSyntaxError(f"invalid arguments for {name}: {err}", self.text, name_tok.pos, name) from None

    # ---- conversion of parsed values to Python arguments ---------------------------------------------
    def layer(self, v: Any) -> Layer:
        if isinstance(v, Layer):
            return v
        if isinstance(v, _Name):
            if v.name in ACTIVATIONS:
                return ACTIVATIONS[v.name]
            if v.name == "flatten":
                return flatten
            raise FluxSyntaxError(f"unknown layer or function {v.name!r}", self.text, v.pos, v.name)
        raise ValueError(f"expected a layer, got {_show(v)}")


def _show(v: Any) -> str:
    if isinstance(v, _Name):
        return v.name
    if isinstance(v, _Pair):
        return f"{_show(v.first)} => {_show(v.second)}"
    return repr(v)


def _act(p: _Parser, v: Any) -> Activation:
    if isinstance(v, _Name):
        if v.name in ACTIVATIONS:
            return ACTIVATIONS[v.name]
        raise FluxSyntaxError(f"unknown activation {v.name!r} (known: {', '.join(sorted(ACTIVATIONS))})",
                              p.text, v.pos, v.name)
    raise ValueError(f"expected an activation function, got {_show(v)}")


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} must be an integer, got {_show(v)}")
    return v


def _ints(v: Any, what: str) -> Any:
    if isinstance(v, tuple):
        return tuple(_int(x, what) for x in v)
    return _int(v, what)


def _pair(v: Any, what: str) -> tuple[int, int]:
    if not isinstance(v, _Pair):
        raise ValueError(f"{what} must be written in => out, got {_show(v)}")
    return _int(v.first, what), _int(v.second, what)


def _check_kw(name: str, kwargs: dict, allowed: tuple[str, ...]) -> None:
    bad = [k for k in kwargs if k not in allowed]
    if bad:
        raise ValueError(f"unknown keyword {bad[0]!r} for {name} (allowed: {', '.join(allowed) or 'none'})")


def _pad_value(v: Any) -> Any:
    if isinstance(v, SamePad):
        return v
    return _ints(v, "pad")


# ---- builders: parsed (args, kwargs) -> layer ----------------------------------------------------------

def _b_chain(p: _Parser, args: list, kwargs: dict) -> Chain:
    if kwargs:
        raise ValueError("named Chain(name = layer, ...) is not supported; list the layers positionally")
    return Chain(*[p.layer(a) for a in args])


def _b_dense(p: _Parser, args: list, kwargs: dict) -> Dense:
    _check_kw("Dense", kwargs, ("bias", "init"))
    if kwargs.get("init") is not None:
        raise ValueError("init= cannot be given in syntax; parse() always uses Flux's glorot_uniform")
    bias = kwargs.get("bias", True)
    if not isinstance(bias, bool):
        raise ValueError("bias must be true or false")
    if args and isinstance(args[0], _Pair):  # Dense(in => out[, σ])
        n_in, n_out = _pair(args[0], "Dense size")
        rest = args[1:]
    elif len(args) >= 2:  # old form Dense(in, out[, σ])
        n_in, n_out = _int(args[0], "Dense in"), _int(args[1], "Dense out")
        rest = args[2:]
    else:
        raise ValueError("expected Dense(in => out[, σ])")
    if len(rest) > 1:
        raise ValueError("too many positional arguments")
    act = _act(p, rest[0]) if rest else None
    p.claim(f"Dense({n_in} => {n_out})", n_in * n_out + (n_out if bias else 0))
    return Dense(n_in, n_out, act, bias=bias, init=p.init, rng=p.rng)


def _b_conv(cls: type) -> Callable:
    def build(p: _Parser, args: list, kwargs: dict) -> Conv:
        name = cls.flux_name
        _check_kw(name, kwargs, ("stride", "pad", "dilation", "groups", "bias", "init"))
        if kwargs.get("init") is not None:
            raise ValueError("init= cannot be given in syntax")
        if len(args) < 2:
            raise ValueError(f"expected {name}((kw, kh), cin => cout[, σ])")
        k = _ints(args[0], "kernel size")
        if isinstance(args[1], _Pair):
            ch = _pair(args[1], "channels")
            rest = args[2:]
        else:
            ch = (_int(args[1], "cin"), _int(args[2] if len(args) > 2 else None, "cout"))
            rest = args[3:]
        if len(rest) > 1:
            raise ValueError("too many positional arguments")
        act = _act(p, rest[0]) if rest else None
        bias = kwargs.get("bias", True)
        if not isinstance(bias, bool):
            raise ValueError("bias must be true or false")
        kw = {key: (_pad_value(v) if key == "pad" else _ints(v, key)) for key, v in kwargs.items()
              if key in ("stride", "pad", "dilation", "groups")}
        groups = kw.get("groups", 1)
        window = 1
        for d in (k if isinstance(k, tuple) else (k, k)):
            window *= d
        per_group = ch[0] // groups if isinstance(groups, int) and groups > 0 else ch[0]
        p.claim(f"{name}({k}, {ch[0]} => {ch[1]})", window * per_group * ch[1] + (ch[1] if bias else 0))
        return cls(k, ch, act, bias=bias, init=p.init, rng=p.rng, **kw)
    return build


def _b_pool(cls: type) -> Callable:
    def build(p: _Parser, args: list, kwargs: dict) -> Layer:
        _check_kw(cls.flux_name, kwargs, ("pad", "stride"))
        if len(args) != 1:
            raise ValueError(f"expected {cls.flux_name}((kw, kh)[; pad, stride])")
        kw = {key: (_pad_value(v) if key == "pad" else _ints(v, key)) for key, v in kwargs.items()}
        return cls(_ints(args[0], "window size"), **kw)
    return build


def _b_noargs(obj_factory: Callable[[], Layer], name: str) -> Callable:
    def build(p: _Parser, args: list, kwargs: dict) -> Layer:
        if args or kwargs:
            raise ValueError(f"{name}() takes no arguments")
        return obj_factory()
    return build


def _b_batchnorm(p: _Parser, args: list, kwargs: dict) -> BatchNorm:
    allowed = ("eps", "ϵ", "momentum", "affine", "track_stats", "active", "initβ", "initγ")
    _check_kw("BatchNorm", kwargs, allowed)
    if not args or len(args) > 2:
        raise ValueError("expected BatchNorm(chs[, λ])")
    chs = _int(args[0], "chs")
    p.claim(f"BatchNorm({chs})", 4 * chs)  # β, γ, μ, σ²
    act = _act(p, args[1]) if len(args) > 1 else None
    kw: dict[str, Any] = {}
    for key, v in kwargs.items():
        if key in ("initβ", "initγ"):
            raise ValueError(f"{key} cannot be given in syntax")
        key = "eps" if key == "ϵ" else key
        if key in ("affine", "track_stats") and not isinstance(v, bool):
            raise ValueError(f"{key} must be true or false")
        if key == "active" and not (isinstance(v, bool) or (isinstance(v, _Name) and v.name == "nothing")):
            raise ValueError("active must be true, false or nothing")
        kw[key] = None if isinstance(v, _Name) else v
    return BatchNorm(chs, act, **kw)


def _b_dropout(p: _Parser, args: list, kwargs: dict) -> Dropout:
    _check_kw("Dropout", kwargs, ("dims", "active", "rng"))
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], (int, float)):
        raise ValueError("expected Dropout(p) with a number p")
    dims = kwargs.get("dims")
    dims = None if dims is None or isinstance(dims, _Colon) else _ints(dims, "dims")
    active = kwargs.get("active")
    if isinstance(active, _Name) and active.name == "nothing":
        active = None
    if "rng" in kwargs:
        raise ValueError("rng cannot be given in syntax; pass rng= to parse()")
    return Dropout(float(args[0]), dims=dims, active=active, rng=np.random.default_rng(p.rng.integers(2**63)))


def _b_samepad(p: _Parser, args: list, kwargs: dict) -> SamePad:
    if args or kwargs:
        raise ValueError("SamePad() takes no arguments")
    return SamePad()


_BUILDERS: dict[str, Callable[[_Parser, list, dict], Any]] = {
    "Chain": _b_chain,
    "Dense": _b_dense,
    "Conv": _b_conv(Conv),
    "CrossCor": _b_conv(CrossCor),
    "MaxPool": _b_pool(MaxPool),
    "MeanPool": _b_pool(MeanPool),
    "GlobalMeanPool": _b_noargs(GlobalMeanPool, "GlobalMeanPool"),
    "Flatten": _b_noargs(Flatten, "Flatten"),
    "BatchNorm": _b_batchnorm,
    "Dropout": _b_dropout,
    "SamePad": _b_samepad,
}


def parse(text: str, seed: int | None = None, rng: np.random.Generator | None = None, *,
          init: Any = None, max_params: int = DEFAULT_MAX_PARAMS) -> Layer:
    """Build a model from Flux syntax with fresh Flux-default weights (glorot_uniform, zero bias, float32).

    Parameters
    ----------
    text : e.g. ``"Chain(Dense(784 => 128, relu), Dense(128 => 10))"`` — anything ``str(model)`` prints.
    seed, rng : make the weights deterministic (give at most one). Layers are initialised in text order.
    init : optional weight initialiser ``init(rng, *dims) -> array`` for Dense/Conv/CrossCor (default Flux's
        ``glorot_uniform``). Loaders that overwrite every weight pass a cheap one (no random draws).
    max_params : refuse (before allocating) a model whose layers would hold more parameters than this
        (default ``DEFAULT_MAX_PARAMS`` = 2^28, 1 GiB of float32). Nesting is limited to ``MAX_DEPTH`` levels.

    Returns
    -------
    The described layer: usually a :class:`Chain`.

    Raises
    ------
    FluxSyntaxError (a ValueError) naming the character position and offending/unknown token.
    """
    if not isinstance(text, str):
        raise ValueError(f"parse: text must be a str of Flux syntax; got {type(text).__name__}")
    if isinstance(max_params, bool) or not isinstance(max_params, int) or max_params < 1:
        raise ValueError(f"parse: max_params must be a positive int; got {max_params!r}")
    gen = check_rng(seed, rng)
    p = _Parser(text, gen, init, max_params)
    if p.peek().kind == "end":
        raise p.error("empty model text")
    value = p.expr()
    if p.peek().kind != "end":
        raise p.error("unexpected text after the model")
    try:
        return p.layer(value)
    except FluxSyntaxError:
        raise
    except ValueError:
        raise FluxSyntaxError(f"expected a model (a layer or Chain), got {_show(value)}", text, 0,
                              text[:20]) from None
