"""Byte-level JLD2 writer, JLD2 0.4 metadata style (docs/jld2.md explains the choice).

What it writes, per Python value (the Julia type in brackets):

* numpy array of bool/int/uint/float [``Array{T,N}``]: a dataset with HDF5 dims = reversed ``shape`` and
  the bytes in Fortran order; linked when top-level, anonymous and referenced inside tuples. The same array
  object reached twice is written once (Julia sees one shared array).
* :class:`NamedTuple` [``NamedTuple{names,Tuple{...}}``], tuple [``Tuple{...}``]: a committed compound
  (ghost fields left out) with ``julia_type`` and, when a member is itself committed, ``field_datatypes``.
* ``()`` [``Tuple{}``], None [``Nothing``], MISSING, :class:`Ghost`: ghosts (no bytes).
* bool/int/float/numpy scalars [Bool/Int64/Float64/...]: inline numbers (Bool is a 1-byte bitfield).
* str: a fixed-length string dataset at top level, a vlen String inside tuples.
* dict of str -> value at top level: an HDF5 group (a ``JLD2.Group``).

The layout mirrors JLD2 0.4.46 (``PavelNikolaichev__JuliaHEPNet__model.jld2``): header ``version 0.1.1``,
superblock v2 at 512, OHDR v2 with lookup3 checksums, GCOL heaps with JLD2's capacity convention, data
below 8192 bytes compact, above contiguous (8-aligned). Types get their ``_types`` index in the order JLD2
commits them (members first, then the type, then its ``julia_type`` parameters).
"""
from __future__ import annotations


import numpy as np

from ..._files import atomic_write
from ._hdf5 import lookup3
from ._types import (DATATYPE_BYTES, OPAQUE1_BYTES, REF_BYTES, VLEN_STRING_BYTES, Ghost, JULIA_NUMBER, MISSING,
                     NamedTuple, atomic_bytes, compound_bytes, fixed_bytes)

BASE = 512
COMPACT_LIMIT = 8192
HEAP_CAPACITY = 4096
HEADER_TEXT = b"HDF5-based Julia Data Format, version 0.1.1\x00 (Julia 1.10.0 64-bit LE)\x00"
UNDEF8 = b"\xff" * 8


# ---------------------------------------------------------------------------------------------- type model
class WType:
    """A Julia type to be written. ``key`` is its Julia spelling (identity for committing)."""

    ghost = False
    size = 0
    committed = False

    def __init__(self, key: str) -> None:
        self.key = key


class Bits(WType):
    def __init__(self, dtype: np.dtype) -> None:
        super().__init__(JULIA_NUMBER[dtype.name])
        self.dtype, self.size, self.dt = dtype, dtype.itemsize, atomic_bytes(dtype)


class ArrayT(WType):
    def __init__(self, eltype: Bits, ndims: int) -> None:
        super().__init__(f"Core.Array{{{eltype.key},{ndims}}}")
        self.eltype, self.ndims, self.size, self.dt = eltype, ndims, 8, REF_BYTES


class StringT(WType):
    def __init__(self) -> None:
        super().__init__("Core.String")
        self.size, self.dt = 16, VLEN_STRING_BYTES


class GhostT(WType):
    """A zero-size type. ``params``: WTypes, ints (NTuple length) or a tuple of str (NamedTuple names)."""

    ghost = True

    def __init__(self, name: str, params: tuple = ()) -> None:
        super().__init__(name + (f"{{{','.join(_pkey(p) for p in params)}}}" if params else ""))
        self.name, self.params = name, tuple(params)


def _pkey(p) -> str:
    return p.key if isinstance(p, WType) else repr(p)


class SymbolT(WType):
    committed = True

    def __init__(self) -> None:
        super().__init__("Core.Symbol")
        self.size, self.dt = 16, VLEN_STRING_BYTES


class CompoundT(WType):
    """Tuple or NamedTuple with data: a committed compound."""

    committed = True

    def __init__(self, names: tuple[str, ...] | None, elems: list[WType]) -> None:
        self.names, self.elems = names, elems
        self.tuple_t = TupleSpelling(elems)
        super().__init__(f"Core.NamedTuple{{{names!r},{self.tuple_t.key}}}" if names is not None
                         else self.tuple_t.key)
        fields = names if names is not None else [str(i + 1) for i in range(len(elems))]
        self.members = [(n, t) for n, t in zip(fields, elems) if not t.ghost]
        self.size = sum(t.size for _, t in self.members)
        off, mem = 0, []
        for n, t in self.members:
            mem.append((n, off, t.dt))
            off += t.size
        self.dt = compound_bytes(self.size, mem)


def TupleSpelling(elems: list[WType]):
    """The Julia tuple type name JLD2 0.4.41-0.4.50 writes: Tuple{T} / NTuple{N,T} / Core.Tuple{...}."""
    class _S:
        pass
    s = _S()
    keys = [e.key for e in elems]
    if not elems:
        s.name, s.params = "Tuple", []
    elif all(k == keys[0] for k in keys):
        s.name, s.params = ("Tuple", [elems[0]]) if len(elems) == 1 else ("NTuple", [len(elems), elems[0]])
    else:
        s.name, s.params = "Core.Tuple", list(elems)
    s.key = s.name + ("{" + ",".join(_pkey(p) for p in s.params) + "}" if s.params else "")
    return s


def type_of(value, depth: int = 0) -> WType:
    """The Julia type a Python value is written as (ValueError naming the value for anything else)."""
    if depth > 64:
        raise ValueError("value nested deeper than 64 levels")
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf" or value.dtype.name not in JULIA_NUMBER:
            raise ValueError(f"array dtype {value.dtype} cannot be written (allowed: bool, int8-64, uint8-64, "
                             f"float16/32/64)")
        return ArrayT(Bits(value.dtype.newbyteorder("=")), value.ndim)
    if isinstance(value, (bool, np.bool_)):
        return Bits(np.dtype(np.bool_))
    if isinstance(value, int):
        return Bits(np.dtype(np.int64))
    if isinstance(value, float):
        return Bits(np.dtype(np.float64))
    if isinstance(value, np.generic) and value.dtype.name in JULIA_NUMBER:
        return Bits(value.dtype.newbyteorder("="))
    if isinstance(value, str):
        return StringT()
    if value is None:
        return GhostT("Core.Nothing")
    if value is MISSING:
        return GhostT("Base.Missing")
    if isinstance(value, Ghost):
        return GhostT(value.type_name)
    if isinstance(value, NamedTuple):
        elems = [type_of(v, depth + 1) for v in value.values()]
        names = tuple(value.keys())
        if all(e.ghost for e in elems):       # e.g. NamedTuple() of a parameterless layer: no bytes
            spelling = TupleSpelling(elems)
            return GhostT("Core.NamedTuple", (names, GhostT(spelling.name, spelling.params)))
        return CompoundT(names, elems)
    if isinstance(value, tuple):
        elems = [type_of(v, depth + 1) for v in value]
        if all(e.ghost for e in elems):       # () and tuples of ghosts
            spelling = TupleSpelling(elems)
            return GhostT(spelling.name, spelling.params)
        return CompoundT(None, elems)
    raise ValueError(f"cannot write a value of Python type {type(value).__name__} to JLD2 "
                     f"(allowed: numpy arrays, numbers, bool, str, None, tuple, NamedTuple, dict at top level)")


# ---------------------------------------------------------------------------------------------- bytes helpers
def message(mtype: int, body: bytes, flags: int = 0) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(2, "little") + bytes([flags]) + body


def ohdr(messages: list[bytes]) -> bytes:
    body = b"".join(messages)
    n = len(body)
    code, width = (0, 1) if n < 256 else (1, 2) if n < 65536 else (2, 4)
    head = b"OHDR" + bytes([2, code]) + n.to_bytes(width, "little") + body
    return head + lookup3(head).to_bytes(4, "little")


def attribute(name: str, dt: bytes, dataspace: bytes, data: bytes, shared: bool = False) -> bytes:
    nb = name.encode() + b"\0"
    body = bytes([2, 1 if shared else 0]) + len(nb).to_bytes(2, "little") + len(dt).to_bytes(2, "little") + \
        len(dataspace).to_bytes(2, "little") + nb + dt + dataspace + data
    return message(0x0C, body)


def shared(addr: int) -> bytes:
    return b"\x03\x02" + addr.to_bytes(8, "little")


SCALAR = b"\x02\x00\x00\x00"
NULLSPACE = b"\x02\x00\x00\x02"
FILL = message(0x05, b"\x03\x09")


def simple(dims) -> bytes:
    return bytes([2, len(dims), 0, 1]) + b"".join(int(d).to_bytes(8, "little") for d in dims)


def link(name: str, addr: int) -> bytes:
    nb = name.encode()
    if len(nb) < 256:
        head = bytes([1, 0x10, 1, len(nb)])
    else:
        head = bytes([1, 0x11, 1]) + len(nb).to_bytes(2, "little")
    return message(0x06, head + nb + addr.to_bytes(8, "little"))


def julia_chunks(a: np.ndarray, dtype: np.dtype, target: int = 1 << 22):
    """The bytes of ``a`` in Julia's column-major order, as C-contiguous pieces of about ``target`` bytes.

    Column-major bytes of ``a`` are the C-order bytes of ``a.T``; slicing ``a.T`` along its first axis
    (``a``'s last) gives consecutive byte ranges, so big C-ordered arrays are transposed block by block
    (cache-friendly, no second full-size buffer). F-ordered arrays are written as they are.
    """
    if a.size == 0:
        return
    if a.ndim < 2 or a.flags.f_contiguous:
        yield memoryview(np.ascontiguousarray(a.T, dtype=dtype)).cast("B")
        return
    if a.ndim == 2 and a.flags.c_contiguous:      # Dense weights: tiled transpose, ~5x faster than numpy's
        m, n = a.shape
        cols = max(1, target // max(1, m * dtype.itemsize))
        for k in range(0, n, cols):
            block = np.empty((min(cols, n - k), m), dtype)
            for i in range(0, m, 256):
                block[:, i:i + 256] = a[i:i + 256, k:k + cols].T
            yield memoryview(block).cast("B")
        return
    per = max(1, a[..., :1].size * dtype.itemsize)
    step = max(1, target // per)
    for k in range(0, a.shape[-1], step):
        yield memoryview(np.ascontiguousarray(a[..., k:k + step].T, dtype=dtype)).cast("B")


# ---------------------------------------------------------------------------------------------- writer
class _Heap:
    """One GCOL collection: reserved in the file when opened, filled in memory, patched at close."""

    def __init__(self, pos: int, capacity: int) -> None:
        self.pos, self.capacity, self.used, self.objects = pos, capacity, 0, bytearray()
        self.count = 0

    def fits(self, n: int) -> bool:
        # header (16) + objects + this object + a free-space object header (16) within ``capacity``
        return 16 + self.used + 16 + -(-n // 8) * 8 + 16 <= self.capacity

    def add(self, data: bytes) -> int:
        self.count += 1
        pad = -(-len(data) // 8) * 8 - len(data)
        self.objects += self.count.to_bytes(2, "little") + b"\x01\x00" + b"\0" * 4 + \
            len(data).to_bytes(8, "little") + data + b"\0" * pad
        self.used = len(self.objects)
        return self.count

    def image(self) -> bytes:
        # as JLD2/HDF5: the free-space object (index 0) runs to collection start + capacity
        free = self.capacity - 16 - self.used
        tail = (b"\0" * 8 + free.to_bytes(8, "little")) if free >= 16 else b""
        body = bytes(self.objects) + tail
        return b"GCOL\x01\0\0\0" + self.capacity.to_bytes(8, "little") + body + b"\0" * (self.capacity - len(body))


class Writer:
    """Streams objects to an open binary file; ``pos`` is the absolute position of the next byte."""

    def __init__(self, f) -> None:
        self.f = f
        self.f.write(b"\0" * (BASE + 48))
        self.pos = BASE + 48
        self.heaps: list[_Heap] = []
        self.types: dict[str, int] = {}          # julia key -> committed address
        self.type_order: list[int] = []          # addresses in commit (index) order
        self.pending_index: dict[str, int] = {}  # key -> index reserved before the object is written
        self.arrays: dict[int, tuple[int, np.ndarray]] = {}   # id(array) -> (addr, array kept alive)
        self.values: dict[str, int] = {}         # DataType/int parameter datasets by key
        self.datatype_addr: int | None = None

    # -- raw output
    def rel(self) -> int:
        return self.pos - BASE

    def put(self, data) -> int:
        addr = self.rel()
        self.f.write(data)
        self.pos += len(data) if isinstance(data, (bytes, bytearray)) else memoryview(data).nbytes
        return addr

    def align(self) -> None:
        pad = -self.rel() % 8
        if pad:
            self.put(b"\0" * pad)

    def vlen(self, data: bytes, count: int) -> bytes:
        """A 16-byte vlen record for ``data`` (``count`` elements) stored in a global heap."""
        if count == 0:
            return b"\0" * 16
        heap = self.heaps[-1] if self.heaps and self.heaps[-1].fits(len(data)) else None
        if heap is None:
            cap = max(HEAP_CAPACITY, -(-(len(data) + 64) // 8) * 8)
            heap = _Heap(self.pos, cap)
            self.put(b"\0" * (16 + cap))
            self.heaps.append(heap)
        index = heap.add(data)
        return count.to_bytes(4, "little") + (heap.pos - BASE).to_bytes(8, "little") + index.to_bytes(4, "little")

    # -- committed types
    def datatype(self) -> int:
        """Commit ``Core.DataType`` (type 00000001) on first use; its julia_type points at itself."""
        if self.datatype_addr is None:
            value = self.vlen(b"Core.DataType", 13) + b"\0" * 16
            addr = self.rel()          # after the heap the vlen may just have opened
            self.put(ohdr([message(0x03, DATATYPE_BYTES, 0x40),
                           attribute("julia_type", shared(addr), SCALAR, value, shared=True)]))
            self.datatype_addr = addr
            self.type_order.append(addr)
        return self.datatype_addr

    def julia_type_value(self, name: str, refs: list[int]) -> bytes:
        raw = b"".join(r.to_bytes(8, "little") for r in refs)
        return self.vlen(name.encode(), len(name.encode())) + self.vlen(raw, len(refs))

    def commit(self, t: WType) -> int:
        """Address of the committed type for ``t`` (writing it, its members and parameters first)."""
        if t.key in self.types:
            return self.types[t.key]
        self.datatype()                  # Core.DataType is always type 00000001
        if isinstance(t, SymbolT):
            slot = self._reserve()
            return self._finish(t, slot, VLEN_STRING_BYTES, "Core.Symbol", [], [])
        if isinstance(t, GhostT):       # committed only when a ghost is stored as a dataset
            slot = self._reserve()
            refs = [self.param(p) for p in t.params]
            empty = attribute("empty", fixed_bytes(1, False), SCALAR, b"\x01")
            return self._finish(t, slot, OPAQUE1_BYTES, t.name, refs, [], extra=[empty])
        assert isinstance(t, CompoundT)
        member_addrs = [self.commit(m) if m.committed else 0 for _, m in t.members]
        slot = self._reserve()
        if t.names is not None:
            refs = [self.names_dataset(t.names), self.param_tuple(t.tuple_t)]
            name = "Core.NamedTuple"
        else:
            name, refs = t.tuple_t.name, [self.param(p) for p in t.tuple_t.params]
        return self._finish(t, slot, t.dt, name, refs, member_addrs)

    def _reserve(self) -> int:
        self.type_order.append(-1)
        return len(self.type_order) - 1

    def _finish(self, t, slot, dt_bytes, name, refs, member_addrs, extra=()) -> int:
        value = self.julia_type_value(name, refs)
        msgs = [message(0x03, dt_bytes, 0x40),
                attribute("julia_type", shared(self.datatype_addr), SCALAR, value, shared=True)]
        if any(member_addrs):
            data = b"".join(a.to_bytes(8, "little") for a in member_addrs)
            msgs.append(attribute("field_datatypes", REF_BYTES, simple([len(member_addrs)]), data))
        msgs.extend(extra)
        addr = self.put(ohdr(msgs))
        self.type_order[slot] = addr
        self.types[t.key] = addr
        return addr

    def param_tuple(self, spelling) -> int:
        """The Tuple-type parameter of a NamedTuple: committed when it holds data, else a DataType value."""
        elems = [p for p in spelling.params if isinstance(p, WType)]
        if elems and not all(e.ghost for e in elems):
            return self.commit(CompoundT(None, [e for e in self._expand(spelling)]))
        return self.type_value(spelling.name, [self.param(p) for p in spelling.params])

    @staticmethod
    def _expand(spelling) -> list:
        if spelling.name == "NTuple":
            return [spelling.params[1]] * spelling.params[0]
        return list(spelling.params)

    def param(self, p) -> int:
        """A julia_type parameter: committed type address, DataType value dataset, or Int64 dataset."""
        if isinstance(p, int):
            return self.int_dataset(p)
        if isinstance(p, tuple):
            return self.names_dataset(p)
        if p.committed:
            return self.commit(p)
        if isinstance(p, ArrayT):
            return self.type_value("Core.Array", [self.param(p.eltype), self.int_dataset(p.ndims)])
        if isinstance(p, GhostT):
            return self.type_value(p.name, [self.param(q) for q in p.params])
        return self.type_value(p.key, [])

    def type_value(self, name: str, refs: list[int]) -> int:
        key = name + repr(refs)
        if key not in self.values:
            dt_addr = self.datatype()
            value = self.julia_type_value(name, refs)
            self.values[key] = self.put(ohdr([FILL, message(0x01, SCALAR), message(0x03, shared(dt_addr), 3),
                                              message(0x08, b"\x04\x00" + len(value).to_bytes(2, "little")
                                                      + value)]))
        return self.values[key]

    def int_dataset(self, n: int) -> int:
        key = f"int:{n}"
        if key not in self.values:
            self.values[key] = self.put(ohdr([FILL, message(0x01, SCALAR),
                                              message(0x03, fixed_bytes(8, True), 1),
                                              message(0x08, b"\x04\x00\x08\x00"
                                                      + n.to_bytes(8, "little", signed=True))]))
        return self.values[key]

    def names_dataset(self, names: tuple[str, ...]) -> int:
        """The NamedTuple names parameter: a Tuple{Symbol,...} value (``()`` is a ghost dataset)."""
        key = f"names:{names!r}"
        if key not in self.values and not names:
            self.values[key] = self.ghost_dataset(GhostT("Tuple"))
        if key not in self.values:
            t = CompoundT(None, [SymbolT() for _ in names])
            taddr = self.commit(t)
            data = b"".join(self.vlen(n.encode(), len(n.encode())) for n in names)
            self.values[key] = self.put(ohdr([FILL, message(0x01, SCALAR), message(0x03, shared(taddr), 3),
                                              message(0x08, b"\x04\x00" + len(data).to_bytes(2, "little") + data)]))
        return self.values[key]

    # -- values
    def encode(self, value, t: WType) -> bytes:
        """The stored bytes of ``value`` as type ``t`` (arrays are written first, their address stored)."""
        if isinstance(t, Bits):
            return np.asarray(value, dtype=t.dtype).tobytes()
        if isinstance(t, ArrayT):
            return self.array(value).to_bytes(8, "little")
        if isinstance(t, (StringT, SymbolT)):
            b = value.encode()
            return self.vlen(b, len(b))
        if isinstance(t, CompoundT):
            vals = list(value.values()) if isinstance(value, NamedTuple) else list(value)
            return b"".join(self.encode(v, e) for v, e in zip(vals, t.elems) if not e.ghost)
        return b""

    def array(self, a: np.ndarray) -> int:
        """Write array ``a`` (Julia size ``a.shape``) once per object; returns its dataset address."""
        hit = self.arrays.get(id(a))
        if hit is not None and hit[1] is a:
            return hit[0]
        eltype = Bits(a.dtype.newbyteorder("="))
        nbytes = a.size * eltype.size
        dims = tuple(reversed(a.shape))            # HDF5 dims are Julia's size reversed
        space = simple(dims) if a.ndim else simple((1,))
        extra = [] if a.ndim else [attribute("dimensions", fixed_bytes(8, True), simple([0]), b"")]
        head = [FILL, message(0x01, space), *extra, message(0x03, eltype.dt, 1)]
        if nbytes < COMPACT_LIMIT:
            raw = b"".join(bytes(c) for c in julia_chunks(a, eltype.dtype))
            addr = self.put(ohdr(head + [message(0x08, b"\x04\x00" + nbytes.to_bytes(2, "little") + raw)]))
        else:
            size = len(ohdr(head + [message(0x08, b"\x04\x01" + b"\0" * 16)]))
            addr = self.rel()
            data_addr = addr + size + (-(addr + size) % 8)
            self.put(ohdr(head + [message(0x08, b"\x04\x01" + data_addr.to_bytes(8, "little")
                                          + nbytes.to_bytes(8, "little"))]))
            self.align()
            for chunk in julia_chunks(a, eltype.dtype):      # streamed: no full transposed copy
                self.put(chunk)
        self.arrays[id(a)] = (addr, a)
        return addr

    def dataset(self, value) -> int:
        """Write one top-level value; returns the address to link."""
        if isinstance(value, np.ndarray):
            return self.array(value)
        if isinstance(value, dict):
            return self.group({str(k): self.dataset(v) for k, v in value.items()})
        if isinstance(value, str):
            b = value.encode()
            dt = b"\x33\x11\x00\x00" + len(b).to_bytes(4, "little")
            return self._scalar(dt, b, 1)
        t = type_of(value)
        if t.ghost:
            return self.ghost_dataset(t)
        if isinstance(t, Bits):
            return self._scalar(t.dt, self.encode(value, t), 1)
        taddr = self.commit(t)
        data = self.encode(value, t)
        return self._scalar(shared(taddr), data, 3)

    def ghost_dataset(self, t: GhostT) -> int:
        """A ghost value as a dataset: NULL dataspace, committed opaque type with ``empty`` = 1."""
        taddr = self.commit(t)
        return self.put(ohdr([FILL, message(0x01, NULLSPACE), message(0x03, shared(taddr), 3),
                              message(0x08, b"\x04\x00\x00\x00")]))

    def _scalar(self, dt: bytes, data: bytes, dtflags: int) -> int:
        head = [FILL, message(0x01, SCALAR), message(0x03, dt, dtflags)]
        if len(data) < COMPACT_LIMIT:
            return self.put(ohdr(head + [message(0x08, b"\x04\x00" + len(data).to_bytes(2, "little") + data)]))
        size = len(ohdr(head + [message(0x08, b"\x04\x01" + b"\0" * 16)]))
        addr = self.rel()
        data_addr = addr + size + (-(addr + size) % 8)
        self.put(ohdr(head + [message(0x08, b"\x04\x01" + data_addr.to_bytes(8, "little")
                                      + len(data).to_bytes(8, "little"))]))
        self.align()
        self.put(data)
        return addr

    def group(self, links: dict[str, int]) -> int:
        msgs = [message(0x02, b"\0\0" + UNDEF8 + UNDEF8), message(0x0A, b"\0\0")]
        msgs += [link(n, a) for n, a in links.items()]
        return self.put(ohdr(msgs))

    def close(self, links: dict[str, int]) -> None:
        if self.type_order:
            links = dict(links)
            links["_types"] = self.group({f"{i + 1:08d}": a for i, a in enumerate(self.type_order)})
        root = self.group(links)
        end = self.pos
        for h in self.heaps:
            self.f.seek(h.pos)
            self.f.write(h.image())
        sb = b"\x89HDF\r\n\x1a\n" + bytes([2, 8, 8, 0]) + BASE.to_bytes(8, "little") + UNDEF8 + \
            end.to_bytes(8, "little") + root.to_bytes(8, "little")
        sb += lookup3(sb).to_bytes(4, "little")
        self.f.seek(0)
        self.f.write(HEADER_TEXT + b"\0" * (BASE - len(HEADER_TEXT)) + sb)


def _validate(values: dict, depth: int = 0) -> None:
    for name, v in values.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"group member name {name!r} is not allowed (non-empty str without '/')")
        if isinstance(v, dict) and depth < 32:
            _validate(v, depth + 1)
        elif not isinstance(v, str):
            type_of(v)


def write_file(path: str, values: dict) -> None:
    """Write ``values`` (top-level name -> value) to ``path`` atomically (temp file, fsync, os.replace)."""
    for name in values:
        if not isinstance(name, str) or not name or "/" in name or name == "_types":
            raise ValueError(f"dataset name {name!r} is not allowed (non-empty str without '/', not '_types')")
    _validate(values)               # everything is checked before touching the disk
    with atomic_write(path) as f:
        w = Writer(f)
        links = {name: w.dataset(v) for name, v in values.items()}
        w.close(links)
