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
a ``RecursionError``), and a text whose layers would hold more than ``max_params`` parameters (default
``DEFAULT_MAX_PARAMS``, 2^28: 1 GiB of float32) is refused before the layer's arrays are created. The size of a
layer call is estimated from its text as the product of the integers in its positional arguments (``Dense(784 =>
128)``: 100,352 weights; ``Conv((3, 3), 1 => 8)``: 72; ``BatchNorm(64)``: 64), which every registered layer's
parameter count is close to.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validate import check_rng
from . import registry
from .activations import ACTIVATIONS, Activation

__all__ = ["parse", "FluxSyntaxError", "Call", "Pair", "Name", "Colon", "SamePad", "Symbol", "Lambda", "Splat", "Sum",
           "RawCall", "as_connection", "show", "as_int", "as_ints",
           "as_pair", "as_pad"]

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
_OPS = ("=>", "->", "...", ".+", "(", ")", "[", "]", ",", ";", "=", ".", "-", ":", "+")


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
class Name:
    """An identifier that is not a call (e.g. ``relu``, ``flatten``, ``σ``, ``nothing``)."""
    name: str
    pos: int


@dataclass(frozen=True)
class Pair:
    """``a => b``."""
    first: Any
    second: Any


class Colon:
    """Julia ``:`` (e.g. ``dims=:``)."""


@dataclass(frozen=True)
class Symbol:
    """A Julia symbol ``:name`` (e.g. Upsample's ``:bilinear``)."""
    name: str


@dataclass(frozen=True)
class Splat:
    """``x...`` (a lambda's varargs or a splatted argument)."""
    value: Any


@dataclass(frozen=True)
class Sum:
    """``a + b`` / ``a .+ b`` (inside a lambda: a connection)."""
    terms: tuple


@dataclass(frozen=True)
class RawCall:
    """A call of a plain Julia function inside a lambda body (``leakyrelu(x, 0.2)``, ``cat(a, b; dims=3)``)."""
    name: str
    args: tuple
    kwargs: tuple


@dataclass(frozen=True)
class Lambda:
    """``x -> body`` / ``(a, b) -> body`` / ``(xs...) -> body``: Flux users' closures. ``params`` are names
    (``"xs..."`` for varargs). Only a few shapes mean something here: ``x -> leakyrelu(x, 0.2)`` (an activation
    with NNlib's extra argument) and connections (``(mx, x) -> mx + x``, ``(a...) -> cat(a...; dims=3)``)."""
    params: tuple
    body: Any
    pos: int


class SamePad:
    """Flux ``SamePad()``: pad so that a stride-1 layer keeps the spatial size (``pad="same"`` also works)."""

    def __repr__(self) -> str:
        return "SamePad()"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SamePad)

    __hash__ = object.__hash__


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
        self.n_params = 0  # estimated parameters of the layers built so far

    def claim(self, name: str, args: list, name_tok: _Tok) -> None:
        """Count the estimated size of the layer call ``name(args...)`` (before it is built); refuse it past
        ``max_params``."""
        n = _size_estimate(args)
        self.n_params += n
        if n and self.n_params > self.max_params:
            call = f"{name}({', '.join(show(a) for a in args)})"
            raise FluxSyntaxError(f"{call} would bring the model to {self.n_params:,} parameters, more than "
                                  f"max_params={self.max_params:,} (pass parse(..., max_params=N) to allow more)",
                                  self.text, name_tok.pos, name)

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
        start = self.peek()
        a = self.atom()
        if self.is_op("..."):
            self.next()
            a = Splat(a)
        if self.is_op("->"):
            self.next()
            return Lambda(self._lambda_params(a, start), self.expr(), start.pos)
        if self.is_op("+") or self.is_op(".+"):
            terms = [a]
            while self.is_op("+") or self.is_op(".+"):
                self.next()
                terms.append(self.atom())
            return Sum(tuple(terms))
        if self.is_op("=>"):
            self.next()
            items = [a, self.atom()]
            while self.is_op("=>"):     # Julia's => is right-associative: a => b => c is a => (b => c)
                self.next()
                items.append(self.atom())
            out = items[-1]
            for item in reversed(items[:-1]):
                out = Pair(item, out)
            return out
        return a

    def _lambda_params(self, a: Any, tok: _Tok) -> tuple:
        items = a if isinstance(a, tuple) else (a,)
        out = []
        for it in items:
            if isinstance(it, Name):
                out.append(it.name)
            elif isinstance(it, Splat) and isinstance(it.value, Name):
                out.append(it.value.name + "...")
            else:
                raise self.error("a lambda's arguments must be names, e.g. x -> ... or (a, b) -> ...", tok)
        return tuple(out)

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
        if tok.kind == "op" and tok.text == "+":   # the function + (a connection: SkipConnection(l, +))
            self.next()
            return Name("+", tok.pos)
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
            nxt = self.peek()
            if nxt.kind == "name" and nxt.pos == tok.pos + 1:   # :bilinear is a Symbol; a lone : is Colon
                self.next()
                return Symbol(nxt.text)
            return Colon()
        if tok.kind == "op" and tok.text == "(":
            return self.tuple_()
        if tok.kind == "op" and tok.text == "[":        # a Vector, e.g. Flux's Chain([Dense(...), ...])
            return self.items("[", "]")[0]
        if tok.kind == "name":
            name = self.qualified_name()
            if name == "true":
                return True
            if name == "false":
                return False
            if self.is_op("("):
                return self.call(name, tok)
            return Name(name, tok.pos)
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

    def items(self, opener: str, closer: str) -> tuple[list[Any], bool]:
        """Comma-separated expressions from ``opener`` to ``closer``; also whether a comma ended the list."""
        open_tok = self.expect(opener)
        items: list[Any] = []
        trailing_comma = False
        while not self.is_op(closer):
            if self.peek().kind == "end":
                raise self.error(f"unclosed '{opener}' opened at position {open_tok.pos}")
            items.append(self.expr())
            trailing_comma = self.is_op(",")
            if trailing_comma:
                self.next()
            elif self.peek().kind == "end":
                raise self.error(f"unclosed '{opener}' opened at position {open_tok.pos}")
            elif not self.is_op(closer):
                raise self.error(f"expected ',' or '{closer}'")
        self.expect(closer)
        return items, trailing_comma

    def tuple_(self) -> Any:
        items, trailing_comma = self.items("(", ")")
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
        if name in ACTIVATIONS or name in _JULIA_FUNCTIONS:   # a plain function call: only inside a lambda body
            return RawCall(name, tuple(args), tuple(kwargs.items()))
        if name == "SamePad":
            if args or kwargs:
                raise self.error("SamePad() takes no arguments", name_tok)
            return SamePad()
        cls = registry.by_name(name)
        if cls is None:
            raise FluxSyntaxError(f"unknown layer or function {name!r} (known: {registry.supported()}, SamePad)",
                                  self.text, name_tok.pos, name)
        self.claim(name, args, name_tok)
        try:
            return cls.from_syntax(Call(name, args, kwargs, self))
        except FluxSyntaxError:
            raise
        except (ValueError, TypeError) as err:
            raise FluxSyntaxError(f"invalid arguments for {name}: {err}", self.text, name_tok.pos, name) from None

        # ---- conversion of parsed values to Python arguments ---------------------------------------------
    def layer(self, v: Any) -> Any:
        if hasattr(v, "forward"):
            return v
        if isinstance(v, Lambda) or (isinstance(v, Name) and v.name in ACTIVATIONS):
            return self.activation(v)
        if isinstance(v, Name):
            cls = registry.by_name(v.name)
            if cls is not None and getattr(cls, "flux_function", False):
                return cls.from_syntax(Call(v.name, [], {}, self))
            raise FluxSyntaxError(f"unknown layer or function {v.name!r}", self.text, v.pos, v.name)
        raise ValueError(f"expected a layer, got {show(v)}")

    def activation(self, v: Any) -> Activation:
        if isinstance(v, Lambda):
            return _lambda_activation(v, self)
        if isinstance(v, Name):
            if v.name in ACTIVATIONS:
                return ACTIVATIONS[v.name]
            raise FluxSyntaxError(f"unknown activation {v.name!r} (known: {', '.join(sorted(ACTIVATIONS))})",
                                  self.text, v.pos, v.name)
        raise ValueError(f"expected an activation function, got {show(v)}")


def _size_estimate(args: list) -> int:
    """Product of the integers in positional arguments (nested tuples and ``a => b`` pairs too); 0 if none.

    Python ints: a product of huge sizes cannot wrap around. Negative sizes count as 0 (the layer reports them).
    """
    ints: list[int] = []
    stack = list(args)
    while stack:
        v = stack.pop()
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            ints.append(max(v, 0))
        elif isinstance(v, tuple):
            stack.extend(v)
        elif isinstance(v, Pair):
            stack.extend((v.first, v.second))
    n = 1
    for i in ints:
        n *= i
    return n if ints else 0


class Call:
    """A parsed call ``Name(args...; kwargs...)``, handed to a layer's ``from_syntax`` classmethod.

    ``args``: parsed values (int, float, bool, tuple, :class:`Pair` for ``a => b``, :class:`Name` for a bare
    identifier, :class:`Colon`, or an already-built layer); ``kwargs``: name -> parsed value. ``rng`` and
    ``init`` are the weight initialisation of :func:`parse`.
    """

    def __init__(self, name: str, args: list, kwargs: dict, parser: _Parser) -> None:
        self.name, self.args, self.kwargs = name, args, kwargs
        self.rng, self.init = parser.rng, parser.init
        self._parser = parser

    def check_kw(self, *allowed: str) -> None:
        """ValueError for a keyword not in ``allowed`` (the message lists the allowed ones)."""
        bad = [k for k in self.kwargs if k not in allowed]
        if bad:
            raise ValueError(f"unknown keyword {bad[0]!r} for {self.name} (allowed: {', '.join(allowed) or 'none'})")

    def no_init(self) -> None:
        """Flux's ``init=`` keyword cannot be evaluated from text: reject it."""
        if self.kwargs.get("init") is not None:
            raise ValueError("init= cannot be given in syntax; parse() always uses Flux's glorot_uniform")

    def bool(self, key: str, default: bool) -> bool:
        v = self.kwargs.get(key, default)
        if not isinstance(v, bool):
            raise ValueError(f"{key} must be true or false")
        return v

    def activation(self, v: Any) -> Activation:
        """A parsed name -> the NNlib activation (FluxSyntaxError with position if unknown)."""
        return self._parser.activation(v)

    def layer(self, v: Any) -> Any:
        """A parsed value -> a layer (``relu``, ``flatten`` or an already-built layer)."""
        return self._parser.layer(v)


_JULIA_FUNCTIONS = ("cat", "vcat", "hcat")


def _lambda_activation(v: Lambda, parser: "_Parser") -> Activation:
    """``x -> f(x, a...)`` with ``f`` an NNlib activation and numeric ``a``: ``f`` with NNlib's extra arguments."""
    body = v.body
    if (len(v.params) == 1 and isinstance(body, RawCall) and body.name in ACTIVATIONS and body.args
            and isinstance(body.args[0], Name) and body.args[0].name == v.params[0] and not body.kwargs
            and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in body.args[1:])):
        try:
            return ACTIVATIONS[body.name].with_params(*body.args[1:]) if body.args[1:] else ACTIVATIONS[body.name]
        except ValueError as err:
            raise FluxSyntaxError(str(err), parser.text, v.pos, body.name) from None
    raise FluxSyntaxError("only closures of the form x -> activation(x, parameters...) can be rebuilt "
                          "(e.g. x -> leakyrelu(x, 0.2))", parser.text, v.pos, "->")


def as_connection(v: Any) -> Any:
    """A SkipConnection/Parallel connection: ``+``, ``vcat``, ``hcat``, ``(mx, x) -> mx + x``,
    ``(mx, x) -> cat(mx, x, dims=d)``, ``(xs...) -> cat(xs...; dims=d)`` -> a model.connection.Connection."""
    from .connection import Connection

    if isinstance(v, Name) and v.name in ("+", "vcat", "hcat"):
        return Connection("+") if v.name == "+" else Connection("cat", 1 if v.name == "vcat" else 2)
    if isinstance(v, Lambda):
        names = [p.rstrip(".") for p in v.params]
        body = v.body
        if isinstance(body, Sum) and [getattr(t, "name", None) for t in body.terms] == names:
            return Connection("+")
        if isinstance(body, RawCall) and body.name in _JULIA_FUNCTIONS:
            args = [getattr(getattr(a, "value", a), "name", None) for a in body.args]
            kw = dict(body.kwargs)
            if args == names and set(kw) <= {"dims"}:
                if body.name == "cat" and isinstance(kw.get("dims"), int) and kw["dims"] >= 1:
                    return Connection("cat", kw["dims"])
                if body.name in ("vcat", "hcat") and not kw:
                    return Connection("cat", 1 if body.name == "vcat" else 2)
    raise ValueError(f"unsupported connection {show(v)}: supported are +, vcat, hcat, (mx, x) -> mx + x and "
                     "(xs...) -> cat(xs...; dims=d)")


def show(v: Any) -> str:
    """A parsed value as Flux syntax (for error messages)."""
    if isinstance(v, Name):
        return v.name
    if isinstance(v, Pair):
        return f"{show(v.first)} => {show(v.second)}"
    if isinstance(v, Lambda):
        return f"({', '.join(v.params)}) -> ..."
    if isinstance(v, Symbol):
        return f":{v.name}"
    return repr(v)


def as_int(v: Any, what: str) -> int:
    """A parsed integer literal, else ValueError naming ``what``."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} must be an integer, got {show(v)}")
    return v


def as_ints(v: Any, what: str) -> Any:
    """An int or a tuple of ints (e.g. a kernel size ``(3, 3)``)."""
    if isinstance(v, tuple):
        return tuple(as_int(x, what) for x in v)
    return as_int(v, what)


def as_pair(v: Any, what: str) -> tuple[int, int]:
    """``in => out`` -> ``(in, out)``."""
    if not isinstance(v, Pair):
        raise ValueError(f"{what} must be written in => out, got {show(v)}")
    return as_int(v.first, what), as_int(v.second, what)


def as_pad(v: Any) -> Any:
    """A ``pad=`` value: ``SamePad()`` or an int / tuple of ints."""
    return v if isinstance(v, SamePad) else as_ints(v, "pad")


def parse(text: str, seed: int | None = None, rng: np.random.Generator | None = None, *,
          init: Any = None, max_params: int = DEFAULT_MAX_PARAMS) -> Any:
    """Build a model from Flux syntax with fresh Flux-default weights (glorot_uniform, zero bias, float32).

    Parameters
    ----------
    text : e.g. ``"Chain(Dense(784 => 128, relu), Dense(128 => 10))"`` — anything ``str(model)`` prints.
    seed, rng : make the weights deterministic (give at most one). Layers are initialised in text order.
    init : optional weight initialiser ``init(rng, *dims) -> array`` for Dense/Conv/CrossCor (default Flux's
        ``glorot_uniform``). Loaders that overwrite every weight pass a cheap one (no random draws).
    max_params : refuse (before allocating) a text whose layers would hold more parameters than this (default
        ``DEFAULT_MAX_PARAMS`` = 2^28, 1 GiB of float32). Nesting is limited to ``MAX_DEPTH`` levels.

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
        raise FluxSyntaxError(f"expected a model (a layer or Chain), got {show(value)}", text, 0,
                              text[:20]) from None
