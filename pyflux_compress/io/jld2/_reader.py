"""Rebuild Julia values from a JLD2 file (docs/jld2-format.md §7.3), never executing code.

Flow: :class:`Reader` opens the container (:mod:`._hdf5`), loads objects by address (datasets and groups,
cached so shared references stay the *same* Python object), and decodes each record from its datatype plus
the committed type's ``julia_type`` / field attributes. Arrays become F-ordered numpy views whose shape is
Julia's size (HDF5 dims reversed); large contiguous arrays are memory-mapped copy-on-write.
"""
from __future__ import annotations

import math
import mmap as mmap_module
import os
from dataclasses import dataclass, field

import numpy as np

from ._chunks import Budget, Filter, filled, parse_fill, parse_filters, parse_layout, read_chunked
from ._hdf5 import (MAX_DEPTH, MSG_ATTRIBUTE, MSG_DATASPACE, MSG_DATATYPE, MSG_FILL, MSG_FILLOLD, MSG_FILTERS,
                    MSG_LAYOUT, MSG_LINK, MSG_LINKINFO, MSG_SYMTABLE, UNDEF, Attribute, Cursor, Dataspace,
                    HDF5File, JLD2FormatError, Layout, fail, parse_dataspace)
from ._types import (ARRAY, BITFIELD, COMPOUND, ENUM, FIXED, FLOAT, OPAQUE, REFERENCE, STRING, VLEN,
                     MISSING, Datatype, Ghost, JuliaStruct, JuliaType, NamedTuple, numpy_dtype, parse_datatype,
                     parse_shared)

MMAP_THRESHOLD = 1 << 20          # arrays at least this large (bytes, contiguous) are memory-mapped
# decoding work: at most this many values (records, fields, elements, type parameters) per load, plus
# STEPS_PER_BYTE per byte of the file. A real file decodes < 1 value per byte (numeric arrays are one
# step); a hostile one that reuses a record (NTuple{65536} fields, one heap object referenced by 10^6
# records) hits this bound instead of running for hours.
BASE_STEPS, STEPS_PER_BYTE = 1_000_000, 4
DATATYPE_NAMES = {"Core.DataType", "Core.Core.DataType", "DataType"}
TUPLE_NAMES = {"Tuple", "Core.Tuple", "Core.Core.Tuple"}
NTUPLE_NAMES = {"NTuple", "Core.NTuple", "Core.Core.NTuple"}
NAMEDTUPLE_NAMES = {"Core.NamedTuple", "NamedTuple", "Core.Core.NamedTuple"}
STRING_NAMES = {"Core.String", "Core.Symbol", "Core.Core.String", "Core.Core.Symbol", "String", "Symbol"}
_PLAIN_NUMBER = {np.dtype("<i8"): int, np.dtype("<f8"): float, np.dtype(np.bool_): bool}


@dataclass(eq=False)
class Committed:
    """A committed datatype (``_types/0000000N``) with its Julia metadata."""

    addr: int
    dt: Datatype
    attrs: dict[str, Attribute] = field(default_factory=dict)
    jtype: JuliaType | None = None
    written: JuliaType | None = None
    member_types: dict[str, "Committed"] = field(default_factory=dict)   # HDF5 member -> committed type
    field_names: list[str] | None = None                               # JLD2 >= 0.5: all Julia fields
    field_types: list[object] | None = None                            # JuliaType or None, per field name


class NameNotFoundError(KeyError):
    """``load(path, name)`` for a name the file does not hold."""


class Reader:
    """Decodes one open file. ``data`` is bytes or an mmap; ``path`` enables reading big arrays from the file
    directly: memory-mapped copy-on-write (``mmap=True``) or read into private memory (``mmap=False``).
    ``max_bytes`` limits the bytes produced beyond those stored (see :class:`._chunks.Budget`)."""

    def __init__(self, data, path: str | None = None, *, mmap: bool = True, max_bytes: int | None = None) -> None:
        self.budget = Budget(len(data), max_bytes)
        self.h5 = HDF5File(data)
        self.buf = self.h5.buf
        self.path = path
        self.mmap = mmap
        self._values: dict[int, object] = {}
        self._ghosts: dict[int, tuple[object, object]] = {}   # id(JuliaType) -> (type, its ghost value)
        self._shell_addr: int | None = None     # dataset whose top-level struct is being decoded (cycles)
        self._loading: set[int] = set()
        self._committed: dict[int, Committed | None] = {}
        self._jt_loading: set[int] = set()
        self._dtypes: dict[int, Datatype] = {}
        self._pos0 = 0            # file position of the record being decoded (for error offsets)
        self.depth = 0
        self.steps_left = BASE_STEPS + STEPS_PER_BYTE * len(data)
        self._vlen_cache: dict[tuple, object] = {}     # record bytes -> decoded string / DataType / list

    # ------------------------------------------------------------------ entry points
    def root_names(self) -> dict[str, int]:
        return {k: v for k, v in self.h5.links(self.h5.root).items() if k != "_types"}

    def load_name(self, name: str):
        addr = self.h5.root
        for part in [p for p in name.split("/") if p]:
            links = self.h5.links(addr)
            if part not in links:
                raise NameNotFoundError(f"no dataset or group named {name!r} in the file (top level: "
                                        f"{sorted(self.root_names())})")
            addr = links[part]
        return self.load_object(addr)

    # ------------------------------------------------------------------ objects
    def load_object(self, addr: int):
        """The value at relative ``addr`` (dataset, group -> dict, committed type -> JuliaType). Cached, so
        the same file object is the same Python object. Mutable structs and object arrays are registered
        before their contents are decoded, so reference cycles between them (which JLD2.jl writes and
        restores) come back as cycles; a cycle through anything else (immutable values) is an error."""
        if addr in self._values:
            return self._values[addr]
        if addr in self._loading:
            raise fail(self.h5.base + addr, "reference cycle through an immutable value (only mutable structs "
                                            "and arrays can refer back to themselves)")
        if len(self._loading) > MAX_DEPTH:
            raise fail(self.h5.base + addr, f"values nested deeper than {MAX_DEPTH}")
        self._loading.add(addr)
        try:
            oh = self.h5.header(addr)
            if oh.first(MSG_LAYOUT) is not None or oh.first(MSG_DATASPACE) is not None:
                value = self._dataset(oh, addr)
            elif oh.first(MSG_DATATYPE) is not None:
                c = self.committed(addr)
                value = c.jtype if c.jtype is not None else JuliaType("?")
            elif oh.all(MSG_LINK) or oh.first(MSG_LINKINFO) or oh.first(MSG_SYMTABLE):
                value = {k: self.load_object(a) for k, a in self.h5.links(addr).items()}
            else:
                raise fail(self.h5.base + addr, "object is neither a dataset, a group nor a datatype")
        except BaseException:
            self._values.pop(addr, None)      # a registered, half-decoded shell
            raise
        finally:
            self._loading.discard(addr)
        self._values[addr] = value
        return value

    def _attributes(self, oh) -> dict[str, Attribute]:
        out = {}
        for m in oh.all(MSG_ATTRIBUTE):
            a = self._attribute(m)
            out[a.name] = a
        return out

    def _attribute(self, m) -> Attribute:
        buf = self.buf
        c = Cursor(buf, m.pos, m.pos + m.size, "attribute message")
        version, flags = c.u8(), c.u8()
        nsize, tsize, ssize = c.u16(), c.u16(), c.u16()
        if version == 3:
            c.u8()
        elif version not in (1, 2):
            raise fail(m.pos, f"attribute message version {version}, expected 1, 2 or 3")
        pad = (lambda n: -(-n // 8) * 8) if version == 1 else (lambda n: n)
        name = c.bytes(pad(nsize))[:max(nsize - 1, 0)].split(b"\0")[0].decode("utf-8", "replace")
        tpos = c.pos
        c.bytes(pad(tsize))
        spos = c.pos
        c.bytes(pad(ssize))
        if flags & 1:
            dt = self.committed_datatype(parse_shared(buf, tpos, tsize))
        else:
            dt, _ = parse_datatype(buf, tpos, tpos + tsize)
        ds = parse_dataspace(buf, spos, ssize)
        return Attribute(name, dt, ds, c.pos, c.end - c.pos)

    def _attr_bytes(self, a: Attribute) -> tuple[bytes, int]:
        n = _count(a.dataspace, a.pos)
        need = n * a.datatype.size
        if need > a.size:
            raise fail(a.pos, f"attribute {a.name!r} needs {need} bytes, message holds {a.size}")
        return self.buf.read(a.pos, need, f"attribute {a.name!r}"), n

    def _attr_refs(self, a: Attribute) -> list[int]:
        data, n = self._attr_bytes(a)
        if a.datatype.cls != REFERENCE:
            raise fail(a.pos, f"attribute {a.name!r} should hold references")
        return [int.from_bytes(data[8 * i:8 * i + 8], "little") for i in range(n)]

    # ------------------------------------------------------------------ committed types
    def is_committed(self, addr: int) -> bool:
        try:
            oh = self.h5.header(addr)
        except JLD2FormatError:
            return False
        return oh.first(MSG_DATATYPE) is not None and oh.first(MSG_LAYOUT) is None and \
            oh.first(MSG_DATASPACE) is None

    def committed_datatype(self, addr: int) -> Datatype:
        """Only the datatype of the committed type at ``addr`` (no Julia metadata; no recursion)."""
        hit = self._dtypes.get(addr)
        if hit is None:
            oh = self.h5.header(addr)
            m = oh.first(MSG_DATATYPE)
            if m is None or oh.first(MSG_LAYOUT) is not None or m.flags & 0x02:
                raise fail(self.h5.base + addr, "expected a committed datatype object")
            hit, _ = parse_datatype(self.buf, m.pos, m.pos + m.size)
            hit.committed = addr
            self._dtypes[addr] = hit
        return hit

    def committed(self, addr: int) -> Committed:
        """The committed datatype at ``addr``, with its julia_type and field attributes resolved."""
        hit = self._committed.get(addr)
        if hit is not None:
            return hit
        if addr in self._committed:     # being built: return the partial record (self-reference of DataType)
            raise fail(self.h5.base + addr, "committed type refers to itself")
        oh = self.h5.header(addr)
        m = oh.first(MSG_DATATYPE)
        if m is None or oh.first(MSG_LAYOUT) is not None:
            raise fail(self.h5.base + addr, "expected a committed datatype object")
        if m.flags & 0x02:
            raise fail(m.pos, "committed datatype is itself a shared reference")
        c = Committed(addr, self.committed_datatype(addr))
        self._committed[addr] = None
        try:
            c.attrs = self._attributes(oh)
            if "julia_type" in c.attrs:
                c.jtype = self._julia_type_attr(c.attrs["julia_type"])
                c.jtype.committed = c
            if "written_type" in c.attrs:
                c.written = self._julia_type_attr(c.attrs["written_type"])
            self._field_info(c)
        except BaseException:
            del self._committed[addr]
            raise
        self._committed[addr] = c
        return c

    def _field_info(self, c: Committed) -> None:
        a = c.attrs
        if "field_datatypes" in a:
            refs = self._attr_refs(a["field_datatypes"])
            for (name, _, _), r in zip(c.dt.members, refs):
                if r:
                    c.member_types[name] = self.committed(r)
        if "field_names" in a:
            data, n = self._attr_bytes(a["field_names"])
            c.field_names = [self._vlen_string(data, 16 * i, a["field_names"].pos) for i in range(n)]
            c.field_types = [None] * n
            if "field_types" in a:
                refs = self._attr_refs(a["field_types"])
                if len(refs) != n:
                    raise fail(a["field_types"].pos, f"field_types has {len(refs)} entries, field_names {n}")
                for i, r in enumerate(refs):
                    if r:
                        ft = self.committed(r)
                        c.field_types[i] = ft.jtype or JuliaType("?", committed=ft)
                        if c.field_names[i] in {mm[0] for mm in c.dt.members}:
                            c.member_types[c.field_names[i]] = ft

    def _julia_type_attr(self, a: Attribute) -> JuliaType:
        data, n = self._attr_bytes(a)
        if n != 1:
            raise fail(a.pos, "julia_type attribute is not scalar")
        if a.datatype.cls == REFERENCE:            # reference arrays: a single reference to the element type
            return self.type_param(int.from_bytes(data[:8], "little"), a.pos)
        return self.datatype_value(data, 0, a.pos)

    def datatype_value(self, data: bytes, off: int, pos: int) -> JuliaType:
        """Decode a ``Core.DataType`` record {name: vlen string, parameters: vlen refs}. Cached by the record's
        bytes (which name its heap objects): records repeating one heap object decode it once."""
        if len(data) < off + 32:
            raise fail(pos, "DataType value needs 32 bytes")
        key = ("t", bytes(data[off:off + 32]))
        hit = self._vlen_cache.get(key)
        if hit is not None:
            return hit
        name = self._vlen_string(data, off, pos)
        raw = self._vlen_bytes(data, off + 16, 8, pos)
        refs = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
        self.spend_steps(len(refs), pos)
        if self.depth > MAX_DEPTH:
            raise fail(pos, f"type parameters nested deeper than {MAX_DEPTH}")
        self.depth += 1
        try:
            params = tuple(self.type_param(r, pos) for r in refs)
        finally:
            self.depth -= 1
        jt = JuliaType(name, params)
        self._vlen_cache[key] = jt
        return jt

    def spend_steps(self, n: int, pos: int) -> None:
        """Charge ``n`` decoded values to the work bound (see BASE_STEPS)."""
        self.steps_left -= n
        if self.steps_left < 0:
            raise fail(pos, f"decoding needs more than {BASE_STEPS} + {STEPS_PER_BYTE} x file size values: the "
                            "file repeats records far beyond its size (refused as hostile)")

    def type_param(self, ref: int, pos: int):
        """A type parameter reference: a committed type, or a dataset holding the parameter value."""
        if ref == 0:
            return None
        if self.is_committed(ref):
            if ref in self._jt_loading:
                raise fail(pos, "type parameter cycle")
            self._jt_loading.add(ref)
            try:
                c = self.committed(ref)
            finally:
                self._jt_loading.discard(ref)
            return c.jtype if c.jtype is not None else JuliaType("?", committed=c)
        value = self.load_object(ref)
        if isinstance(value, np.integer):
            value = int(value)
        return value

    # ------------------------------------------------------------------ vlen / heap
    def _vlen_bytes(self, data: bytes, off: int, elsize: int, pos: int) -> bytes:
        if len(data) < off + 16:
            raise fail(pos, "variable-length record needs 16 bytes")
        count = int.from_bytes(data[off:off + 4], "little")
        if elsize <= 0:                      # checked before the empty case: callers step by elsize
            raise fail(pos, f"variable-length sequence of {count} elements of size 0")
        if count == 0:
            return b""
        coll = int.from_bytes(data[off + 4:off + 12], "little")
        index = int.from_bytes(data[off + 12:off + 16], "little")
        obj = self.h5.heap_object(coll, index)
        if count * elsize > len(obj):
            raise fail(pos, f"variable-length value of {count} elements but heap object has {len(obj)} bytes")
        return obj[:count * elsize]

    def _vlen_string(self, data: bytes, off: int, pos: int) -> str:
        """A vlen string, cached by its 16-byte record: 10^6 records naming one 10 MB heap object cost one
        decode and one string, not 10 TB."""
        key = ("s", bytes(data[off:off + 16]))
        hit = self._vlen_cache.get(key)
        if hit is None:
            hit = self._vlen_cache[key] = self._vlen_bytes(data, off, 1, pos).decode("utf-8", "replace")
        return hit

    # ------------------------------------------------------------------ datasets
    def _dataset(self, oh, addr: int):
        buf = self.buf
        ds = Dataspace("scalar", ())
        dt = ctype = layout = fill = None
        filters: list[Filter] = []
        for m in oh.messages:
            if m.type == MSG_DATASPACE:
                ds = parse_dataspace(buf, m.pos, m.size)
            elif m.type == MSG_DATATYPE:
                if m.flags & 0x02:
                    ctype = self.committed(parse_shared(buf, m.pos, m.size))
                    dt = ctype.dt
                else:
                    dt, _ = parse_datatype(buf, m.pos, m.pos + m.size)
            elif m.type == MSG_LAYOUT:
                layout = parse_layout(buf, m.pos, m.size)
            elif m.type == MSG_FILTERS:
                filters = parse_filters(buf, m.pos, m.size)
            elif m.type == MSG_FILL:
                fill = parse_fill(buf, m.pos, m.size, old=False)
            elif m.type == MSG_FILLOLD and fill is None:
                fill = parse_fill(buf, m.pos, m.size, old=True)
        where = self.h5.base + oh.addr
        if dt is None:
            raise fail(where, "dataset has no datatype message")
        attrs = self._attributes(oh)
        if ds.kind == "null":
            return self._ghost_array(attrs, ctype)
        if layout is None:
            raise fail(where, "dataset has no layout message")
        n = _count(ds, where)
        if dt.size == 0 and n:
            raise fail(where, "datatype of size 0")
        if fill is not None and len(fill) != dt.size:
            fill = None                                    # HDF5 ignores a fill value of another size
        dims = ds.dims if ds.kind == "simple" else (1,)
        if ds.kind == "scalar":
            data = self._raw(layout, filters, dims, dt.size, fill, where)
            self._shell_addr = addr
            return self._records(layout, where, lambda: self.decode(dt, data, 0, ctype, None))
        shape = tuple(reversed(ds.dims))                   # Julia size
        if "dimensions" in attrs and n == 1:               # 0-dim Julia array stored with dims (1,)
            shape = ()
        npdt = numpy_dtype(dt) if ctype is None else None
        if npdt is not None:
            return self._numeric_array(layout, filters, npdt, ds, shape, fill, where)
        data = self._raw(layout, filters, dims, dt.size, fill, where, ds.maxdims)
        eltype = None
        if "julia_type" in attrs:
            eltype = self._julia_type_attr(attrs["julia_type"])
        out = np.empty(n, dtype=object)
        result = out.reshape(ds.dims).T if ds.dims else out.reshape(())
        self._values[addr] = result                        # an element referring back gets this same array

        def fill_elements():
            for i in range(n):       # object arrays: each element is its own Julia value
                out[i] = self.decode(dt, data, i * dt.size, ctype, eltype)
        self._records(layout, where, fill_elements)
        return result

    def _ghost_array(self, attrs: dict, ctype):
        """A null dataspace: one ghost value, or an array of it (``dimensions`` attribute). The element is
        decoded once and shared, so the cost is one pointer per element, bounded by the file size."""
        g = self.ghost(ctype.jtype if ctype else None)
        if "dimensions" not in attrs:
            return g
        a = attrs["dimensions"]
        data, n = self._attr_bytes(a)
        if a.datatype.size != 8 or n > 32:
            raise fail(a.pos, f"ghost-array dimensions: {n} values of {a.datatype.size} bytes, expected Int64s")
        dims = [int.from_bytes(data[8 * i:8 * i + 8], "little", signed=True) for i in range(n)]
        if any(d < 0 for d in dims) or math.prod(dims) > self.buf.size:
            raise fail(a.pos, f"ghost-array dimensions {dims} are negative or larger than the file")
        arr = np.empty(tuple(dims), dtype=object)
        arr.fill(g)
        return arr.T

    def _records(self, layout: Layout, where: int, work):
        """Run ``work`` with error offsets relative to this dataset's data (restored afterwards)."""
        saved = self._pos0
        if layout.kind == "compact":
            self._pos0 = layout.pos
        elif layout.kind == "contiguous" and layout.pos != UNDEF and layout.pos + self.h5.base < self.buf.size:
            self._pos0 = layout.pos + self.h5.base
        else:
            self._pos0 = where
        try:
            return work()
        finally:
            self._pos0 = saved

    def _raw(self, layout: Layout, filters: list[Filter], dims: tuple[int, ...], elsize: int,
             fill: bytes | None, where: int, maxdims: tuple[int, ...] = ()):
        """The dataset's bytes (C order over HDF5 ``dims``): bytes, or a private bytearray for big reads."""
        nbytes = math.prod(dims) * elsize
        if layout.kind == "compact":
            if nbytes > layout.size:
                raise fail(layout.pos, f"compact data holds {layout.size} bytes, datatype needs {nbytes}")
            return self.buf.read(layout.pos, nbytes, "compact data")
        if nbytes == 0:
            return b""
        if layout.kind == "chunked":
            return read_chunked(self.h5, layout.chunked, filters, dims, elsize, fill, self.budget, where, maxdims)
        if filters:
            raise fail(where, "filter pipeline on a contiguous dataset (HDF5 filters apply to chunks only)")
        if layout.pos == UNDEF:                            # never written: the fill value, as HDF5 defines
            self.budget.spend(nbytes, where, f"unallocated dataset of {nbytes} bytes (fill value)")
            return filled(nbytes // elsize, elsize, fill)
        pos = self.h5.abs(layout.pos, "data address")
        if nbytes > layout.size:
            raise fail(pos, f"contiguous data holds {layout.size} bytes, datatype needs {nbytes}")
        self.buf.check(pos, nbytes, "contiguous data")
        if self.path and nbytes >= MMAP_THRESHOLD:
            return self._read_private(pos, nbytes)
        return self.buf.read(pos, nbytes, "contiguous data")

    def _read_private(self, pos: int, nbytes: int) -> bytearray:
        """Read straight from the file into fresh memory: no mapped pages of the file stay resident beside
        the copy (what ``pfc.load`` needs to peak at ~1x the payload)."""
        out = bytearray(nbytes)
        with open(self.path, "rb") as f:
            f.seek(pos)
            got = f.readinto(out)
        if got != nbytes:
            raise fail(pos, f"array data: read {got} of {nbytes} bytes (file changed while loading?)")
        return out

    def _numeric_array(self, layout, filters, npdt, ds: Dataspace, shape, fill, where) -> np.ndarray:
        dims = ds.dims
        nbytes = math.prod(dims) * npdt.itemsize
        if layout.kind == "contiguous" and layout.pos != UNDEF and nbytes >= MMAP_THRESHOLD and self.path \
                and self.mmap and not filters:
            pos = self.h5.abs(layout.pos, "data address")
            if nbytes > layout.size:
                raise fail(pos, f"contiguous data holds {layout.size} bytes, datatype needs {nbytes}")
            self.buf.check(pos, nbytes, "array data")
            a = np.memmap(self.path, dtype=npdt, mode="c", offset=pos, shape=tuple(dims) or (1,))
        else:
            raw = self._raw(layout, filters, tuple(dims) or (1,), npdt.itemsize, fill, where, ds.maxdims)
            if not isinstance(raw, bytearray):
                raw = bytearray(raw)                       # small: a writeable copy
            a = np.frombuffer(raw, dtype=npdt)
        a = a.reshape(dims) if dims else a.reshape(())
        out = a.T                                      # F-ordered view, shape == Julia size
        return out.reshape(shape) if out.shape != shape else out

    # ------------------------------------------------------------------ records
    def decode(self, dt: Datatype, data: bytes, off: int, ctype: Committed | None, jt):
        """One record of datatype ``dt`` at ``data[off:]``; ``ctype``/``jt`` give its Julia meaning if known."""
        shell_addr, self._shell_addr = self._shell_addr, None      # only the top-level record may use it
        self.steps_left -= 1
        if self.steps_left < 0:
            self.spend_steps(0, self._pos0 + off)
        if off + dt.size > len(data):
            raise fail(self._pos0 + off, f"record of {dt.size} bytes exceeds the {len(data)} bytes read")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.depth -= 1
            raise fail(self._pos0 + off, f"values nested deeper than {MAX_DEPTH}")
        try:
            return self._decode(dt, data, off, ctype, jt, shell_addr)
        finally:
            self.depth -= 1

    def _decode(self, dt, data, off, ctype, jt, shell_addr=None):
        if ctype is None and isinstance(jt, JuliaType) and jt.committed is not None and \
                dt.cls in (COMPOUND, OPAQUE, VLEN) and jt.committed.dt.size == dt.size and \
                jt.committed.dt.cls == dt.cls:
            ctype = jt.committed
        if ctype is not None:
            if ctype.dt.size != dt.size:
                raise fail(self._pos0 + off, "committed type size differs from the stored member")
            jt = ctype.jtype
            if ctype.written is not None:
                written = ctype.written.committed
                value = self._plain(dt, data, off, written, ctype.written)
                return self._from_written(jt, value)
            if jt is not None:
                if jt.name in DATATYPE_NAMES:
                    return self.datatype_value(data, off, self._pos0 + off)
                if jt.name in STRING_NAMES and dt.is_string:
                    return self._string(dt, data, off)
                if "empty" in ctype.attrs or (dt.cls == OPAQUE and dt.size == 1):
                    return self.ghost(jt)
        return self._plain(dt, data, off, ctype, jt, shell_addr)

    def _plain(self, dt, data, off, ctype, jt, shell_addr=None):
        cls = dt.cls
        if cls in (FIXED, FLOAT, BITFIELD):
            npdt = numpy_dtype(dt)
            if npdt is None:
                return bytes(data[off:off + dt.size])        # e.g. Int128: raw little-endian bytes
            v = np.frombuffer(data, npdt, 1, off)[0]
            conv = _PLAIN_NUMBER.get(npdt)
            return conv(v) if conv else v
        if cls == STRING or (cls == VLEN and dt.is_string):
            return self._string(dt, data, off)
        if cls == REFERENCE:
            ref = int.from_bytes(data[off:off + 8], "little")
            return None if ref == 0 else self.load_object(ref)
        if cls == COMPOUND:
            return self._compound(dt, data, off, ctype, jt, shell_addr)
        if cls == VLEN:
            raw = self._vlen_bytes(data, off, dt.base.size, self._pos0 + off)
            return [self.decode(dt.base, raw, i, None, None) for i in range(0, len(raw), dt.base.size)]
        if cls == ARRAY:
            n = math.prod(dt.dims)       # parse_datatype checked n x base size <= size, base size > 0
            npdt = numpy_dtype(dt.base)
            if npdt is not None and n * npdt.itemsize <= dt.size:
                return np.frombuffer(data, npdt, n, off).reshape(dt.dims).T.copy()
            return [self.decode(dt.base, data, off + i * dt.base.size, None, None) for i in range(n)]
        if cls == ENUM:
            return self._plain(dt.base, data, off, None, None)
        if cls == OPAQUE:
            return self.ghost(jt) if isinstance(jt, JuliaType) else bytes(data[off:off + dt.size])
        return bytes(data[off:off + dt.size])

    def _string(self, dt, data, off) -> str:
        if dt.cls == STRING:
            return fixed_string(bytes(data[off:off + dt.size]), dt.bits)
        return self._vlen_string(data, off, self._pos0 + off)

    def _compound(self, dt, data, off, ctype, jt, shell_addr=None):
        members = {name: (moff, mdt) for name, moff, mdt in dt.members}
        kind, names, ftypes = self._fields(dt, ctype, jt, off)
        self.spend_steps(len(names), self._pos0 + off)
        shell = None
        if kind == "struct" and shell_addr is not None and not _is_complex(jt):
            # register the (still empty) struct first: a field referring back to this dataset gets it
            shell = JuliaStruct(str(jt) if jt is not None else "NamedTuple", {}, jt)
            self._values[shell_addr] = shell
        values = {}
        for name, ftype in zip(names, ftypes):
            if name in members:
                moff, mdt = members[name]
                mctype = ctype.member_types.get(name) if ctype is not None else None
                values[name] = self.decode(mdt, data, off + moff, mctype, ftype)
            else:
                values[name] = self.ghost(ftype)
        if kind == "tuple":
            return tuple(values.values())
        if kind == "namedtuple":
            return NamedTuple(values)
        if shell is not None:
            shell.fields.update(values)
            return shell
        if _is_complex(jt) and len(values) == 2:
            re, im = values.values()
            try:
                return complex(re, im)
            except TypeError:
                raise fail(self._pos0 + off, f"Complex with non-numeric parts {re!r}, {im!r}") from None
        return JuliaStruct(str(jt) if jt is not None else "NamedTuple", values, jt)

    def _fields(self, dt, ctype, jt, off):
        """(kind, Julia field names, field types) of a compound record."""
        member_names = [m[0] for m in dt.members]
        if not isinstance(jt, JuliaType):
            return "namedtuple", member_names, [None] * len(member_names)
        if jt.name in NAMEDTUPLE_NAMES and len(jt.params) == 2:
            names = jt.params[0]
            if not (isinstance(names, tuple) and all(isinstance(s, str) for s in names)):
                raise fail(self._pos0 + off,
                           f"NamedTuple names parameter is {names!r}, expected a tuple of symbols")
            types = tuple_elements(jt.params[1], len(names), self._pos0 + off)
            return "namedtuple", list(names), types
        if jt.name in TUPLE_NAMES | NTUPLE_NAMES:
            types = tuple_elements(jt, None, self._pos0 + off)
            return "tuple", [str(i + 1) for i in range(len(types))], types
        if ctype is not None and ctype.field_names is not None:
            return "struct", ctype.field_names, ctype.field_types
        if jt.name in ("Core.Pair", "Base.Pair") and len(jt.params) == 2:    # ghost values (IdSet) lost
            return "struct", ["first", "second"], list(jt.params)
        return "struct", member_names, [None] * len(member_names)

    # ------------------------------------------------------------------ ghosts and custom serialization
    def ghost(self, jt):
        """The value of a zero-size type: ``()``, None (nothing), MISSING, NamedTuple(), or a Ghost marker.

        Memoized per type object and shared (ghost values are immutable): ``NTuple{65536, NTuple{65536, T}}``
        costs 2 x 65,536 steps, not 65,536^2."""
        if not isinstance(jt, JuliaType):
            return Ghost("?")
        hit = self._ghosts.get(id(jt))
        if hit is not None:
            return hit[1]
        if self.depth > MAX_DEPTH:
            raise fail(self._pos0, f"zero-size type nested deeper than {MAX_DEPTH}")
        self.depth += 1
        try:
            value = self._ghost(jt)
        finally:
            self.depth -= 1
        self._ghosts[id(jt)] = (jt, value)      # keeps jt alive, so its id is not reused
        return value

    def _ghost(self, jt: JuliaType):
        if jt.name in TUPLE_NAMES | NTUPLE_NAMES:
            return tuple(self.ghost(t) for t in tuple_elements(jt, None, self._pos0))
        if jt.name in NAMEDTUPLE_NAMES and len(jt.params) == 2 and isinstance(jt.params[0], tuple):
            names = jt.params[0]
            types = tuple_elements(jt.params[1], len(names), self._pos0)
            return NamedTuple({n: self.ghost(t) for n, t in zip(names, types)})
        if jt.name in ("Core.Nothing", "Nothing", "Core.Core.Nothing", "Base.Nothing"):
            return None
        if jt.name in ("Base.Missing", "Missing"):
            return MISSING
        return Ghost(str(jt))

    def _from_written(self, jt: JuliaType | None, value):
        """Undo JLD2's custom serialization (Dicts); other written types keep their written form."""
        if jt is not None and jt.short in ("Dict", "IdDict"):
            pairs = value.fields.get("kvvec") if isinstance(value, JuliaStruct) else value
            if isinstance(pairs, np.ndarray):
                pairs = list(pairs.ravel(order="F"))
            if isinstance(pairs, (list, tuple)):
                items = [(_pair(p, 0, self._pos0), _pair(p, 1, self._pos0)) for p in pairs]
                try:
                    return dict(items)
                except TypeError:        # unhashable keys (arrays in an IdDict): keep the pairs
                    return items
        if jt is not None and jt.name in TUPLE_NAMES | NTUPLE_NAMES and isinstance(value, (list, np.ndarray)):
            # JLD2 writes NTuples of more than 10 elements as a Vector (specialcased_types.jl, writeas)
            return tuple(value.ravel(order="F").tolist() if isinstance(value, np.ndarray) else value)
        if isinstance(value, JuliaStruct) and jt is not None:
            return JuliaStruct(str(jt), value.fields, jt)
        return value


def _pair(p, i, pos: int):
    """Element ``i`` (0 = key, 1 = value) of a stored Dict entry: a Pair struct or a 2-tuple."""
    parts = list(p.fields.values()) if isinstance(p, JuliaStruct) else \
        list(p) if isinstance(p, (tuple, NamedTuple)) else None
    if parts is None or len(parts) != 2:
        raise fail(pos, f"Dict entry {p!r} is not a Pair (key => value)")
    return parts[i]


def _is_complex(jt) -> bool:
    return isinstance(jt, JuliaType) and jt.name in ("Base.Complex", "Core.Complex")


def fixed_string(raw: bytes, bits: int) -> str:
    """A fixed-length HDF5 string per its padding type (class bits 0-3): 0 null-terminated (cut at the
    first NUL), 1 null-padded (trailing NULs removed), 2 space-padded (trailing spaces removed, as
    Fortran pads). Character set (bits 4-7): ASCII or UTF-8, both decoded as UTF-8."""
    pad = bits & 0x0F
    if pad == 0:
        raw = raw.split(b"\0", 1)[0]
    elif pad == 1:
        raw = raw.rstrip(b"\0")
    elif pad == 2:
        raw = raw.rstrip(b" ")
    return raw.decode("utf-8", "replace")


def tuple_elements(tt, n: int | None, pos: int) -> list:
    """Element types of a Tuple type (``Core.Tuple{A,B}``, ``NTuple{N,T}``, ``Tuple`` = Tuple{})."""
    if not isinstance(tt, JuliaType):
        return [None] * (n or 0)
    if tt.name in NTUPLE_NAMES and len(tt.params) == 2 and isinstance(tt.params[0], int):
        if not 0 <= tt.params[0] <= 1 << 16:
            raise fail(pos, f"NTuple length {tt.params[0]} is out of range")
        types = [tt.params[1]] * tt.params[0]
    elif tt.name in TUPLE_NAMES:
        types = list(tt.params)
    else:
        types = [None] * (n or 0)
    if n is not None and len(types) != n:
        raise fail(pos, f"tuple type {tt} has {len(types)} elements, expected {n}")
    return types


def _count(ds: Dataspace, where: int) -> int:
    """Elements of a dataspace; refuses sizes no file can hold, even when another dimension is 0
    (numpy cannot shape an empty array whose other dimensions multiply past 2^63)."""
    n = math.prod(ds.dims) if ds.kind == "simple" else (0 if ds.kind == "null" else 1)
    if math.prod(d for d in ds.dims if d) > 1 << 48:
        raise fail(where, f"dataspace {ds.dims} is larger than any file")
    return n


def open_file(path: str | os.PathLike, *, mmap: bool = True, max_bytes: int | None = None):
    """(reader, closer) for ``path``: the file is memory-mapped read-only for parsing; big arrays are
    memory-mapped copy-on-write (``mmap=True``) or read into private memory."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise JLD2FormatError("at byte 0: empty file, expected a JLD2 header")
        mm = mmap_module.mmap(f.fileno(), 0, access=mmap_module.ACCESS_READ)
    try:
        return Reader(mm, path, mmap=mmap, max_bytes=max_bytes), mm
    except BaseException:
        mm.close()
        raise
