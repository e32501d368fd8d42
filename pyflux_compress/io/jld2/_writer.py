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
superblock v2 at 512, OHDR v2 with lookup3 checksums, GCOL heaps with JLD2's capacity convention, non-array
data below 8192 bytes compact, arrays and larger data contiguous (8-aligned, as JLD2 >= 0.5), groups with JLD2's
reserve and continuation placeholder. Types get their ``_types`` index in the order JLD2 commits them (members
first, then the type, then its ``julia_type`` parameters). Tuples of more than 10 identical elements are
written as Vectors and fields over 1 KiB by reference, as JLD2 does (docs/jld2.md has the sources).
"""
from __future__ import annotations


import numpy as np

from ..._files import atomic_write
from ._hdf5 import lookup3
from ._types import (DATATYPE_BYTES, OPAQUE1_BYTES, REF_BYTES, VLEN_STRING_BYTES, Ghost, JULIA_NUMBER, MISSING,
                     NamedTuple, atomic_bytes, compound_bytes, fixed_bytes)

BASE = 512
COMPACT_LIMIT = 8192
# JLD2 src/data/specialcased_types.jl: `writeas(NTuple{N,T}) = Vector{T}` for N > NTUPLE_INLINE_THRESHOLD = 10
# (since JLD2 0.4.31), so long homogeneous tuples are stored as a reference to a Vector{T} dataset.
NTUPLE_INLINE_THRESHOLD = 10
# JLD2 src/data/writing_datatypes.jl `h5fieldtype`: a field whose Julia type is larger than MAX_INLINE_SIZE = 2^10
# bytes (Julia's sizeof) is stored as a reference to its own dataset instead of inline.
MAX_INLINE_SIZE = 1 << 10
# An HDF5 object header message (a datatype description included) has a 16-bit size field.
MAX_MESSAGE = 65535
# JLD2 src/groups.jl `group_extra_space`: a new group reserves room for est_num_entries = 4 links with names of
# est_link_name_len = 8 bytes (24 bytes each, as a NIL message), then a 20-byte NIL placeholder where a later
# `jldopen(path, "a+")` writes its continuation message.
GROUP_EST_ENTRIES, GROUP_EST_LINK = 4, 4 + 3 + 1 + 8 + 8
CONTINUATION_PLACEHOLDER = bytes([0x00, 16, 0, 0]) + b"\0" * 16
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
    """A number type. Instances are shared per dtype (``bits``): type_of runs once per value in a model."""

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


class LongTupleT(WType):
    """A homogeneous tuple of more than NTUPLE_INLINE_THRESHOLD elements (``NTuple{N,T}``, N > 10).

    JLD2 writes it as ``Vector{T}`` (src/data/specialcased_types.jl, ``writeas``/``wconvert``): a committed
    *reference* datatype with ``julia_type`` = ``NTuple{N,T}`` and ``written_type`` = ``Core.Array{T,1}``
    (``h5fieldtype(f, ::Type{<:Array}, readas::DataType, ...)`` commits ``ReferenceDatatype()``), whose value is
    a reference to a one-dimensional array dataset of the elements.
    """

    committed = True

    def __init__(self, elem: WType, n: int) -> None:
        super().__init__(f"NTuple{{{n},{elem.key}}}")
        self.elem, self.n, self.size, self.dt = elem, n, 8, REF_BYTES


class GhostT(WType):
    """A zero-size type. ``params``: WTypes, ints (NTuple length) or a tuple of str (NamedTuple names)."""

    ghost = True

    def __init__(self, name: str, params: tuple = ()) -> None:
        super().__init__(name + (f"{{{','.join(_pkey(p) for p in params)}}}" if params else ""))
        self.name, self.params = name, tuple(params)


_BITS: dict[np.dtype, Bits] = {}


def bits(dtype: np.dtype) -> Bits:
    """The shared Bits type of ``dtype`` (native byte order)."""
    t = _BITS.get(dtype)
    if t is None:
        t = _BITS[dtype] = Bits(dtype.newbyteorder("="))
    return t


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
        # a member larger than MAX_INLINE_SIZE in Julia's memory is a reference to its own dataset (JLD2's
        # h5fieldtype / fieldodr): a plain, uncommitted reference datatype
        self.members = [(n, RefT(t) if julia_sizeof(t) > MAX_INLINE_SIZE else t)
                        for n, t in zip(fields, elems) if not t.ghost]
        self.size = sum(t.size for _, t in self.members)
        off, mem = 0, []
        for n, t in self.members:
            mem.append((n, off, t.dt))
            off += t.size
        self.dt = compound_bytes(self.size, mem)
        if len(self.dt) > MAX_MESSAGE:
            raise ValueError(f"the JLD2 datatype of {self.key[:120]}... needs a {len(self.dt)}-byte description; "
                             f"HDF5 (and so JLD2) allow at most {MAX_MESSAGE} bytes per datatype message (a "
                             f"16-bit size). Tuples of more than {NTUPLE_INLINE_THRESHOLD} identical elements are "
                             "stored as vectors and do not count: make the layers of a very deep Chain identical "
                             "(e.g. activations inside Dense) or nest it in sub-Chains")


class RefT(WType):
    """A field stored as a plain reference to a dataset holding ``target`` (JLD2: fields over 1 KiB)."""

    def __init__(self, target: WType) -> None:
        super().__init__(target.key)
        self.target, self.size, self.dt = target, 8, REF_BYTES


def _isbits(t: WType) -> bool:
    """Julia's ``isbitstype``: numbers, ghosts and tuples of them (no arrays, strings or symbols)."""
    if t.ghost or isinstance(t, Bits):
        return True
    if isinstance(t, LongTupleT):
        return _isbits(t.elem)
    return isinstance(t, CompoundT) and all(_isbits(e) for e in t.elems)


def julia_sizeof(t: WType) -> int:
    """Julia's ``sizeof`` of the in-memory layout of ``t`` (fields aligned, pointers for arrays/strings)."""
    return _layout(t)[0]


def _layout(t: WType) -> tuple[int, int]:
    """(size, alignment) of ``t`` in Julia's memory."""
    if t.ghost:
        return 0, 1
    if isinstance(t, Bits):
        return t.size, t.size
    if isinstance(t, LongTupleT):
        size, align = _layout(t.elem)
        return t.n * (-(-size // align) * align), align
    if isinstance(t, CompoundT):
        off, align = 0, 1
        for e in t.elems:
            size, a = _layout(e)
            off = -(-off // a) * a + size
            align = max(align, a)
        return -(-off // align) * align, align
    return 8, 8                    # arrays, strings, symbols: a pointer


class _Spelling:
    """A tuple type's spelling: ``name``, ``params`` (WTypes and ints) and the full ``key``."""

    __slots__ = ("name", "params", "key")


def TupleSpelling(elems: list[WType]) -> _Spelling:
    """The Julia tuple type name JLD2 0.4.41-0.4.50 writes: Tuple{T} / NTuple{N,T} / Core.Tuple{...}."""
    s = _Spelling()
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
        return ArrayT(bits(value.dtype), value.ndim)
    if isinstance(value, (bool, np.bool_)):
        return bits(np.dtype(np.bool_))
    if isinstance(value, int):
        return bits(np.dtype(np.int64))
    if isinstance(value, float):
        return bits(np.dtype(np.float64))
    if isinstance(value, np.generic) and value.dtype.name in JULIA_NUMBER:
        return bits(value.dtype)
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
        if len(elems) > NTUPLE_INLINE_THRESHOLD and all(e.key == elems[0].key for e in elems):
            if elems[0].ghost:
                raise ValueError(f"a tuple of {len(elems)} identical zero-size values ({elems[0].key}) cannot be "
                                 f"written: JLD2 stores tuples of more than {NTUPLE_INLINE_THRESHOLD} identical "
                                 "elements as a Vector, and a Vector of zero-size values is not supported here")
            return LongTupleT(elems[0], len(elems))
        if all(e.ghost for e in elems):       # () and tuples of ghosts
            spelling = TupleSpelling(elems)
            return GhostT(spelling.name, spelling.params)
        return CompoundT(None, elems)
    raise ValueError(f"cannot write a value of Python type {type(value).__name__} to JLD2 "
                     f"(allowed: numpy arrays, numbers, bool, str, None, tuple, NamedTuple, dict at top level)")


# ---------------------------------------------------------------------------------------------- bytes helpers
def message(mtype: int, body: bytes, flags: int = 0) -> bytes:
    if len(body) > MAX_MESSAGE:          # e.g. a link name or attribute this large: say so, not OverflowError
        raise ValueError(f"an HDF5 object header message (type {mtype:#04x}) of {len(body)} bytes cannot be "
                         f"written: HDF5 and JLD2 allow at most {MAX_MESSAGE} bytes per message")
    return bytes([mtype]) + len(body).to_bytes(2, "little") + bytes([flags]) + body


def ohdr_len(messages: list[bytes]) -> int:
    """The length of ``ohdr(messages)``, without computing its checksum."""
    n = sum(len(m) for m in messages)
    return 6 + (1 if n < 256 else 2 if n < 65536 else 4) + n + 4


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
        if isinstance(t, LongTupleT):
            slot = self._reserve()
            refs = [self.int_dataset(t.n), self.param(t.elem)]
            written = self.julia_type_value("Core.Array", [self.param(t.elem), self.int_dataset(1)])
            wattr = attribute("written_type", shared(self.datatype_addr), SCALAR, written, shared=True)
            return self._finish(t, slot, REF_BYTES, "NTuple", refs, [], extra=[wattr])
        if isinstance(t, GhostT):       # committed only when a ghost is stored as a dataset
            slot = self._reserve()
            refs = [self.param(p) for p in t.params]
            empty = attribute("empty", fixed_bytes(1, False), SCALAR, b"\x01")
            return self._finish(t, slot, OPAQUE1_BYTES, t.name, refs, [], extra=[empty])
        assert isinstance(t, CompoundT)
        member_addrs = [self.commit(m) if m.committed and not isinstance(m, RefT) else 0 for _, m in t.members]
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
        if spelling.name == "NTuple" and spelling.params[0] > NTUPLE_INLINE_THRESHOLD:
            return self.commit(LongTupleT(spelling.params[1], spelling.params[0]))
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
            if p.name == "NTuple" and p.params[0] > NTUPLE_INLINE_THRESHOLD:   # JLD2 refs_from_types: committed
                return self.commit(LongTupleT(p.params[1], p.params[0]))
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
            syms = [SymbolT() for _ in names]
            t = LongTupleT(syms[0], len(names)) if len(names) > NTUPLE_INLINE_THRESHOLD else CompoundT(None, syms)
            taddr = self.commit(t)
            data = self.encode(names, t)
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
            members = iter(m for _, m in t.members)
            return b"".join(self.encode(v, next(members)) for v, e in zip(vals, t.elems) if not e.ghost)
        if isinstance(t, RefT):                     # a large field: its own dataset, referenced
            return self.dataset(value, t.target).to_bytes(8, "little")
        if isinstance(t, LongTupleT):               # written as Vector{T}: a reference to the element array
            return self.element_array(list(value), t.elem).to_bytes(8, "little")
        return b""

    def element_array(self, values: list, elem: WType) -> int:
        """A one-dimensional dataset of ``values`` of type ``elem`` (a ``Vector{T}``), as JLD2 writes the
        ``wconvert``-ed NTuple: isbits elements and Symbols inline (``h5fieldtype(f, T, T, Val{false})``),
        anything else (arrays, strings' Julia objects, non-isbits tuples) as references to their own datasets."""
        space = [FILL, message(0x01, simple((len(values),)))]
        if isinstance(elem, (Bits, SymbolT, LongTupleT)) or (isinstance(elem, CompoundT) and _isbits(elem)):
            dt, flags = (shared(self.commit(elem)), 3) if elem.committed else (elem.dt, 1)
            data = b"".join(self.encode(v, elem) for v in values)
        elif isinstance(elem, StringT):
            dt, flags = elem.dt, 1
            data = b"".join(self.encode(v, elem) for v in values)
        else:
            # an array of references carries its element type: a `julia_type` attribute referencing a DataType
            # value (JLD2 src/dataspaces.jl, WriteDataspace(f, x::Array{T,N}, ::Type{RelOffset}))
            dt, flags = REF_BYTES, 1
            data = b"".join(self.dataset(v, elem).to_bytes(8, "little") for v in values)
            space.append(attribute("julia_type", REF_BYTES, SCALAR, self.type_dataset(elem).to_bytes(8, "little")))
        return self._stored(space + [message(0x03, dt, flags)], data)

    def type_dataset(self, t: WType) -> int:
        """A dataset holding the DataType value of ``t`` (``write_ref(f, T)`` in JLD2)."""
        if isinstance(t, CompoundT) and t.names is not None:
            return self.type_value("Core.NamedTuple", [self.names_dataset(t.names), self.param_tuple(t.tuple_t)])
        if isinstance(t, CompoundT):
            return self.type_value(t.tuple_t.name, [self.param(p) for p in t.tuple_t.params])
        return self.param(t)

    def array(self, a: np.ndarray) -> int:
        """Write array ``a`` (Julia size ``a.shape``) once per object; returns its dataset address."""
        hit = self.arrays.get(id(a))
        if hit is not None and hit[1] is a:
            return hit[0]
        eltype = bits(a.dtype)
        nbytes = a.size * eltype.size
        dims = tuple(reversed(a.shape))            # HDF5 dims are Julia's size reversed
        space = simple(dims) if a.ndim else simple((1,))
        extra = [] if a.ndim else [attribute("dimensions", fixed_bytes(8, True), simple([0]), b"")]
        head = [FILL, message(0x01, space), *extra, message(0x03, eltype.dt, 1)]
        if nbytes == 0:        # JLD2 >= 0.5 (src/datasets.jl): non-empty arrays are never compact. Contiguous
            # data also keeps the checksummed header small (lookup3 in pure Python costs ~10 us per 12 bytes)
            raw = b"".join(bytes(c) for c in julia_chunks(a, eltype.dtype))
            addr = self.put(ohdr(head + [message(0x08, b"\x04\x00" + nbytes.to_bytes(2, "little") + raw)]))
        else:
            size = ohdr_len(head + [message(0x08, b"\x04\x01" + b"\0" * 16)])
            addr = self.rel()
            data_addr = addr + size + (-(addr + size) % 8)
            self.put(ohdr(head + [message(0x08, b"\x04\x01" + data_addr.to_bytes(8, "little")
                                          + nbytes.to_bytes(8, "little"))]))
            self.align()
            for chunk in julia_chunks(a, eltype.dtype):      # streamed: no full transposed copy
                self.put(chunk)
        self.arrays[id(a)] = (addr, a)
        return addr

    def dataset(self, value, t: WType | None = None) -> int:
        """Write one value as a dataset of its own (top level, or referenced); returns its address."""
        if isinstance(value, np.ndarray):
            return self.array(value)
        if isinstance(value, dict):
            return self.group({str(k): self.dataset(v) for k, v in value.items()})
        if isinstance(value, str) and t is None:
            b = value.encode()
            dt = b"\x33\x11\x00\x00" + len(b).to_bytes(4, "little")
            return self._scalar(dt, b, 1)
        t = type_of(value) if t is None else t
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
        return self._stored([FILL, message(0x01, SCALAR), message(0x03, dt, dtflags)], data)

    def _stored(self, head: list[bytes], data: bytes) -> int:
        """A dataset with header messages ``head`` and ``data``: compact below COMPACT_LIMIT, else contiguous."""
        if len(data) < COMPACT_LIMIT:
            return self.put(ohdr(head + [message(0x08, b"\x04\x00" + len(data).to_bytes(2, "little") + data)]))
        size = ohdr_len(head + [message(0x08, b"\x04\x01" + b"\0" * 16)])
        addr = self.rel()
        data_addr = addr + size + (-(addr + size) % 8)
        self.put(ohdr(head + [message(0x08, b"\x04\x01" + data_addr.to_bytes(8, "little")
                                      + len(data).to_bytes(8, "little"))]))
        self.align()
        self.put(data)
        return addr

    def group(self, links: dict[str, int]) -> int:
        """A group laid out as JLD2's ``save_group`` lays it out (src/groups.jl): link info, group info, the links,
        a NIL message reserving room for up to 4 links when there are fewer, and the 20-byte NIL placeholder
        for a continuation message (JLD2's ``load_group`` finds it there when a file is opened to append)."""
        msgs = [message(0x02, b"\0\0" + UNDEF8 + UNDEF8), message(0x0A, b"\0\0")]
        msgs += [link(n, a) for n, a in links.items()]
        extra = min(max(0, GROUP_EST_ENTRIES - len(links)) * GROUP_EST_LINK, MAX_MESSAGE)
        if extra:
            msgs.append(message(0x00, b"\0" * (extra - 4)))
        msgs.append(CONTINUATION_PLACEHOLDER)
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


def _validate(values: dict, depth: int = 0) -> dict[str, WType]:
    """Check every name and value before anything is written; returns the top-level values' types."""
    types = {}
    for name, v in values.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"group member name {name!r} is not allowed (non-empty str without '/')")
        if len(name.encode()) > MAX_MESSAGE - 13:     # a link message: 13 bytes + the name, 16-bit size
            raise ValueError(f"group member name of {len(name.encode())} bytes is too long: a link message "
                             f"holds at most {MAX_MESSAGE - 13} bytes of name")
        if isinstance(v, dict) and depth < 32:
            _validate(v, depth + 1)
        elif not isinstance(v, (str, np.ndarray, dict)):
            types[name] = type_of(v)
        elif isinstance(v, np.ndarray):
            type_of(v)
    return types


def write_file(path: str, values: dict) -> None:
    """Write ``values`` (top-level name -> value) to ``path`` atomically (temp file, fsync, os.replace)."""
    for name in values:
        if not isinstance(name, str) or not name or "/" in name or name == "_types":
            raise ValueError(f"dataset name {name!r} is not allowed (non-empty str without '/', not '_types')")
    types = _validate(values)       # everything is checked before touching the disk
    with atomic_write(path) as f:
        w = Writer(f)
        links = {name: w.dataset(v, types.get(name)) for name, v in values.items()}
        w.close(links)
