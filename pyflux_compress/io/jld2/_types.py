"""HDF5 datatype messages as JLD2 writes them, and Julia type trees (``julia_type`` values).

A :class:`Datatype` is the parsed form of one datatype message (class, size, members ...) and keeps its
exact ``raw`` bytes, because JLD2 compares several datatypes byte-exactly (docs/jld2-format.md §3) and the
fidelity tests compare the writer's bytes with real files. The byte templates the writer uses live here too.
"""
from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field

import numpy as np

from ._hdf5 import MAX_DEPTH, Buffer, Cursor, fail

FIXED, FLOAT, TIME, STRING, BITFIELD, OPAQUE, COMPOUND, REFERENCE, ENUM, VLEN, ARRAY = range(11)


@dataclass(eq=False)
class Datatype:
    """One HDF5 datatype. ``committed`` is the relative address when this is a reference to a committed type."""

    cls: int
    size: int
    raw: bytes = b""
    bits: int = 0                                    # the 24 class bit-field bits
    members: list[tuple[str, int, "Datatype"]] = field(default_factory=list)   # compound: name, offset, type
    base: "Datatype | None" = None                   # vlen / array / enum base
    dims: tuple[int, ...] = ()                       # array class dims
    committed: int | None = None                     # shared datatype: address of the committed type
    enum_names: list[str] = field(default_factory=list)

    @property
    def is_string(self) -> bool:
        return self.cls == STRING or (self.cls == VLEN and (self.bits & 0xF) == 1)

    @property
    def signed(self) -> bool:
        return bool(self.bits & 0x08)


def parse_shared(buf: Buffer, pos: int, size: int) -> int:
    """A shared-message body (committed datatype reference) -> the committed type's relative address."""
    c = Cursor(buf, pos, pos + size, "shared datatype reference")
    version = c.u8()
    kind = c.u8()
    if version == 1:
        c.bytes(6)
    elif version not in (2, 3):
        raise fail(pos, f"shared message version {version}, expected 1, 2 or 3")
    if version == 3 and kind != 2:
        raise fail(pos, f"shared message type {kind}, expected 2 (committed)")
    return c.u64()


def parse_datatype(buf: Buffer, pos: int, end: int, depth: int = 0) -> tuple[Datatype, int]:
    """Parse the datatype message at ``pos`` (not past ``end``). Returns (datatype, position after it)."""
    if depth > MAX_DEPTH:
        raise fail(pos, f"datatype nesting deeper than {MAX_DEPTH}")
    c = Cursor(buf, pos, end, "datatype message")
    b0 = c.u8()
    cls, version = b0 & 0x0F, b0 >> 4
    bits = c.uint(3)
    size = c.u32()
    dt = Datatype(cls, size, bits=bits)
    if cls in (FIXED, BITFIELD):
        c.bytes(4)
    elif cls == FLOAT:
        c.bytes(12)
    elif cls == TIME:
        c.bytes(2)
    elif cls in (STRING, REFERENCE):
        pass
    elif cls == OPAQUE:
        c.bytes(-(-(bits & 0xFF) // 8) * 8)
    elif cls == COMPOUND:
        n = bits & 0xFFFF
        if n > size + 1 and size < 1 << 20:
            raise fail(pos, f"compound with {n} members but only {size} bytes")
        for _ in range(n):
            start = c.pos
            name = c.cstring().decode("utf-8", "replace")
            if version in (1, 2):
                c.align(8, start)
                off = c.u32()
                if version == 1:
                    c.bytes(28)      # dimensionality, permutation, dims (array members, unused by JLD2)
            else:                    # version 3 (and JLD2 0.4.51-52's version 0): packed, width from size
                width = 1 if size < 256 else 2 if size < 65536 else 3 if size < 1 << 24 else 4
                off = c.uint(width)
            mt, c.pos = parse_datatype(buf, c.pos, end, depth + 1)
            if off + mt.size > size:
                raise fail(start, f"compound member {name!r} at offset {off} (+{mt.size}) exceeds size {size}")
            dt.members.append((name, off, mt))
    elif cls == ENUM:
        n = bits & 0xFFFF
        dt.base, c.pos = parse_datatype(buf, c.pos, end, depth + 1)
        for _ in range(n):
            start = c.pos
            dt.enum_names.append(c.cstring().decode("utf-8", "replace"))
            if version in (1, 2):
                c.align(8, start)
        c.bytes(n * dt.base.size)
    elif cls == VLEN:
        dt.base, c.pos = parse_datatype(buf, c.pos, end, depth + 1)
    elif cls == ARRAY:
        nd = c.u8()
        if nd > 32:
            raise fail(pos, f"array datatype with {nd} dimensions, HDF5 allows at most 32")
        if version < 3:
            c.bytes(3)
        dt.dims = tuple(c.u32() for _ in range(nd))
        if version < 3:
            c.bytes(4 * nd)
        dt.base, c.pos = parse_datatype(buf, c.pos, end, depth + 1)
        # checked here, before any element is decoded: a 0-byte base with dims (2^32-1)^2 would otherwise
        # pass "elements x size <= size" and be decoded one element at a time
        n = math.prod(dt.dims)
        if dt.base.size == 0 or n * dt.base.size > size:
            raise fail(pos, f"array datatype of {n} elements x {dt.base.size} bytes does not fit its size {size}")
    else:
        raise fail(pos, f"datatype class {cls}, expected 0-10")
    dt.raw = bytes(buf.data[pos:c.pos])
    return dt, c.pos


def numpy_dtype(dt: Datatype, pos: int = 0) -> np.dtype | None:
    """numpy dtype for an atomic fixed/float/bitfield type, else None. Bool is a 1-byte bitfield."""
    order = ">" if dt.bits & 1 else "<"
    if dt.cls == FIXED and dt.size in (1, 2, 4, 8):
        return np.dtype(f"{order}{'i' if dt.signed else 'u'}{dt.size}")
    if dt.cls == FLOAT and dt.size in (2, 4, 8):
        return np.dtype(f"{order}f{dt.size}")
    if dt.cls == BITFIELD and dt.size == 1:
        return np.dtype(np.bool_)
    if dt.cls == BITFIELD and dt.size in (2, 4, 8):
        return np.dtype(f"{order}u{dt.size}")
    return None


# ---------------------------------------------------------------------------------------------- templates
# Exact JLD2 byte encodings (docs/jld2-format.md §3; version nibble 3 everywhere).
def fixed_bytes(size: int, signed: bool) -> bytes:
    return bytes([0x30, 0x08 if signed else 0x00, 0, 0]) + size.to_bytes(4, "little") + b"\0\0" + \
        (8 * size).to_bytes(2, "little")


FLOAT_BYTES = {
    2: bytes.fromhex("31200f0002000000000010000a05000a0f000000"),
    4: bytes.fromhex("31201f00040000000000200017080017" "7f000000"),
    8: bytes.fromhex("31203f00080000000000400034" "0b0034" "ff030000"),
}
BOOL_BYTES = bytes.fromhex("3400000001000000" "00000800")
REF_BYTES = bytes.fromhex("3700000008000000")
VLEN_STRING_BYTES = bytes.fromhex("3911010010000000") + fixed_bytes(1, False)
VLEN_REF_BYTES = bytes.fromhex("3900000010000000") + REF_BYTES
OPAQUE1_BYTES = bytes.fromhex("3500000001000000")
DATATYPE_BYTES = (bytes.fromhex("3602000020000000") + b"name\0" + b"\0" + VLEN_STRING_BYTES
                  + b"parameters\0" + b"\x10" + VLEN_REF_BYTES)


def atomic_bytes(dtype: np.dtype) -> bytes:
    """JLD2's datatype message for a numpy scalar dtype (bool, ints, uints, float16/32/64)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return BOOL_BYTES
    if dtype.kind in "iu" and dtype.itemsize in (1, 2, 4, 8) and dtype.byteorder in "=<|":
        return fixed_bytes(dtype.itemsize, dtype.kind == "i")
    if dtype.kind == "f" and dtype.itemsize in FLOAT_BYTES and dtype.byteorder in "=<|":
        return FLOAT_BYTES[dtype.itemsize]
    raise ValueError(f"dtype {dtype} has no JLD2 encoding here (allowed: bool, int8-64, uint8-64, float16/32/64)")


JULIA_NUMBER = {"bool": "Core.Bool", "int8": "Core.Int8", "int16": "Core.Int16", "int32": "Core.Int32",
                "int64": "Core.Int64", "uint8": "Core.UInt8", "uint16": "Core.UInt16", "uint32": "Core.UInt32",
                "uint64": "Core.UInt64", "float16": "Core.Float16", "float32": "Core.Float32",
                "float64": "Core.Float64"}


def compound_bytes(size: int, members: list[tuple[str, int, bytes]]) -> bytes:
    """A version-3 compound: packed members (name NUL, offset in the fewest bytes, full datatype)."""
    width = 1 if size < 256 else 2 if size < 65536 else 3 if size < 1 << 24 else 4
    out = bytearray(bytes([0x36]) + len(members).to_bytes(2, "little") + b"\0" + size.to_bytes(4, "little"))
    for name, off, tbytes in members:
        out += name.encode() + b"\0" + off.to_bytes(width, "little") + tbytes
    return bytes(out)


# ---------------------------------------------------------------------------------------------- Julia values
class JuliaType:
    """A Julia type as named by a ``julia_type`` attribute: ``name`` plus parameters.

    Parameters are JuliaTypes, ints (``Array{T,2}``), tuples of str (NamedTuple names) or other values.
    ``committed`` is the reader's committed-type record when this type has a ``_types`` entry.
    """

    __slots__ = ("name", "params", "committed")

    def __init__(self, name: str, params: tuple = (), committed=None) -> None:
        self.name, self.params, self.committed = name, tuple(params), committed

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}{{{','.join(_param_str(p) for p in self.params)}}}"

    def __repr__(self) -> str:
        return f"JuliaType({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, JuliaType) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def short(self) -> str:
        """The type name without module path, e.g. ``Dense`` for ``Flux.Dense``."""
        return self.name.rsplit(".", 1)[-1]


def _param_str(p) -> str:
    if isinstance(p, tuple) and all(isinstance(s, str) for s in p):
        return "(" + ",".join(":" + s for s in p) + ("," if len(p) == 1 else "") + ")"
    return str(p)


class NamedTuple:
    """A Julia NamedTuple: attribute access (``nt.weight``), key access (``nt["σ"]``), field order kept.

    Iterating yields the field *values* in order (like a Julia NamedTuple); ``keys()``/``items()`` give names.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields=None, **kw) -> None:
        object.__setattr__(self, "_fields", dict(fields or {}, **kw))

    def __getattr__(self, name: str):
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"NamedTuple has no field {name!r} (fields: {list(self._fields)})") from None

    def __setattr__(self, name, value):
        raise AttributeError("NamedTuple is immutable")

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self._fields.values())[key]
        return self._fields[key]

    def __contains__(self, key) -> bool:
        return key in self._fields

    def __iter__(self):
        return iter(self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)

    def keys(self):
        return self._fields.keys()

    def values(self):
        return self._fields.values()

    def items(self):
        return self._fields.items()

    def _asdict(self) -> dict:
        return dict(self._fields)

    def __eq__(self, other) -> bool:
        return isinstance(other, NamedTuple) and list(self.keys()) == list(other.keys()) and all(
            _equal(a, b) for a, b in zip(self.values(), other.values()))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if not self._fields:
            return "NamedTuple()"
        body = ", ".join(f"{k} = {_short_repr(v)}" for k, v in self._fields.items())
        return f"({body}{',' if len(self._fields) == 1 else ''})"


class JuliaStruct:
    """An instance of a Julia struct: ``type_name`` (full Julia type) and ``fields`` in declaration order."""

    def __init__(self, type_name: str, fields: dict, julia_type: JuliaType | None = None) -> None:
        self.type_name, self.fields, self.julia_type = type_name, dict(fields), julia_type

    def __getattr__(self, name: str):
        fields = self.__dict__.get("fields")
        if fields is not None and name in fields:
            return fields[name]
        raise AttributeError(f"{self.__dict__.get('type_name', 'struct')} has no field {name!r}")

    def __getitem__(self, key):
        return self.fields[key]

    def __eq__(self, other) -> bool:
        return isinstance(other, JuliaStruct) and self.type_name == other.type_name and \
            list(self.fields) == list(other.fields) and all(
                _equal(a, b) for a, b in zip(self.fields.values(), other.fields.values()))

    __hash__ = None  # type: ignore[assignment]

    @reprlib.recursive_repr()        # mutable structs can refer to themselves (reference cycles)
    def __repr__(self) -> str:
        body = ", ".join(f"{k}={_short_repr(v)}" for k, v in self.fields.items())
        return f"{self.type_name}({body})"


class Ghost:
    """A zero-size Julia value (a function such as ``NNlib.relu``, ``missing``, a singleton struct)."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __eq__(self, other) -> bool:
        return isinstance(other, Ghost) and other.type_name == self.type_name

    def __hash__(self) -> int:
        return hash(("Ghost", self.type_name))

    def __repr__(self) -> str:
        return f"Ghost({self.type_name!r})"


MISSING = Ghost("Base.Missing")


def _short_repr(v) -> str:
    if isinstance(v, np.ndarray):
        return f"<{v.dtype} array {'×'.join(map(str, v.shape)) or 'scalar'}>"
    return repr(v)


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape and \
            a.dtype == b.dtype and bool(np.array_equal(a, b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
