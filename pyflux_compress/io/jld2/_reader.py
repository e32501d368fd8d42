"""Rebuild Julia values from a JLD2 file (docs/jld2-format.md §7.3), never executing code.

Flow: :class:`Reader` opens the container (:mod:`._hdf5`), loads objects by address (datasets and groups,
cached so shared references stay the *same* Python object), and decodes each record from its datatype plus
the committed type's ``julia_type`` / field attributes. Arrays become F-ordered numpy views whose shape is
Julia's size (HDF5 dims reversed); large contiguous arrays are memory-mapped copy-on-write.
"""
from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass, field

import numpy as np

from ._hdf5 import (MAX_DEPTH, MSG_ATTRIBUTE, MSG_DATASPACE, MSG_DATATYPE, MSG_FILTERS, MSG_LAYOUT,
                    MSG_LINK, MSG_LINKINFO, MSG_SYMTABLE, Attribute, Cursor, Dataspace, HDF5File,
                    JLD2FormatError, Layout, fail, parse_dataspace, parse_filters, parse_layout, unfilter)
from ._types import (ARRAY, BITFIELD, COMPOUND, ENUM, FIXED, FLOAT, OPAQUE, REFERENCE, STRING, VLEN,
                     MISSING, Datatype, Ghost, JuliaStruct, JuliaType, NamedTuple, numpy_dtype, parse_datatype,
                     parse_shared)

MMAP_THRESHOLD = 1 << 20          # arrays at least this large (bytes, contiguous) are memory-mapped
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


class Reader:
    """Decodes one open file. ``data`` is bytes or an mmap; ``path`` enables memory-mapping of big arrays."""

    def __init__(self, data, path: str | None = None) -> None:
        self.h5 = HDF5File(data)
        self.buf = self.h5.buf
        self.path = path
        self._values: dict[int, object] = {}
        self._loading: set[int] = set()
        self._committed: dict[int, Committed | None] = {}
        self._jt_loading: set[int] = set()
        self._dtypes: dict[int, Datatype] = {}
        self._pos0 = 0            # file position of the record being decoded (for error offsets)
        self.depth = 0

    # ------------------------------------------------------------------ entry points
    def root_names(self) -> dict[str, int]:
        return {k: v for k, v in self.h5.links(self.h5.root).items() if k != "_types"}

    def load_name(self, name: str):
        addr = self.h5.root
        for part in [p for p in name.split("/") if p]:
            links = self.h5.links(addr)
            if part not in links:
                raise KeyError(f"no dataset or group named {name!r} in the file (top level: "
                               f"{sorted(self.root_names())})")
            addr = links[part]
        return self.load_object(addr)

    # ------------------------------------------------------------------ objects
    def load_object(self, addr: int):
        """The value at relative ``addr`` (dataset, group -> dict, committed type -> JuliaType). Cached."""
        if addr in self._values:
            return self._values[addr]
        if addr in self._loading:
            raise fail(self.h5.base + addr, "reference cycle: object refers back to itself")
        if len(self._loading) > MAX_DEPTH:
            raise fail(self.h5.base + addr, f"values nested deeper than {MAX_DEPTH}")
        self._loading.add(addr)
        try:
            oh = self.h5.header(addr)
            if oh.first(MSG_LAYOUT) is not None or oh.first(MSG_DATASPACE) is not None:
                value = self._dataset(oh)
            elif oh.first(MSG_DATATYPE) is not None:
                c = self.committed(addr)
                value = c.jtype if c.jtype is not None else JuliaType("?")
            elif oh.all(MSG_LINK) or oh.first(MSG_LINKINFO) or oh.first(MSG_SYMTABLE):
                value = {k: self.load_object(a) for k, a in self.h5.links(addr).items()}
            else:
                raise fail(self.h5.base + addr, "object is neither a dataset, a group nor a datatype")
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
        """Decode a ``Core.DataType`` record {name: vlen string, parameters: vlen refs}."""
        if len(data) < off + 32:
            raise fail(pos, "DataType value needs 32 bytes")
        name = self._vlen_string(data, off, pos)
        raw = self._vlen_bytes(data, off + 16, 8, pos)
        refs = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
        if self.depth > MAX_DEPTH:
            raise fail(pos, f"type parameters nested deeper than {MAX_DEPTH}")
        self.depth += 1
        try:
            params = tuple(self.type_param(r, pos) for r in refs)
        finally:
            self.depth -= 1
        return JuliaType(name, params)

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
        if count == 0:
            return b""
        coll = int.from_bytes(data[off + 4:off + 12], "little")
        index = int.from_bytes(data[off + 12:off + 16], "little")
        obj = self.h5.heap_object(coll, index)
        if count * elsize > len(obj):
            raise fail(pos, f"variable-length value of {count} elements but heap object has {len(obj)} bytes")
        return obj[:count * elsize]

    def _vlen_string(self, data: bytes, off: int, pos: int) -> str:
        return self._vlen_bytes(data, off, 1, pos).decode("utf-8", "replace")

    # ------------------------------------------------------------------ datasets
    def _dataset(self, oh):
        buf = self.buf
        ds = Dataspace("scalar", ())
        dt = ctype = layout = None
        filters: list[int] = []
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
        where = self.h5.base + oh.addr
        if dt is None:
            raise fail(where, "dataset has no datatype message")
        attrs = self._attributes(oh)
        if ds.kind == "null":
            if "dimensions" in attrs:
                data, n = self._attr_bytes(attrs["dimensions"])
                dims = np.frombuffer(data, "<i8", n)
                if (dims < 0).any() or math.prod(int(d) for d in dims) > self.buf.size:
                    raise fail(attrs["dimensions"].pos, "ghost-array dimensions are negative or too large")
                g = self.ghost(ctype.jtype if ctype else None)
                arr = np.empty(tuple(int(d) for d in dims), dtype=object)
                arr.fill(g)
                return arr.T
            return self.ghost(ctype.jtype if ctype else None)
        if layout is None:
            raise fail(where, "dataset has no layout message")
        n = _count(ds, where)
        if dt.size == 0 and n:
            raise fail(where, "datatype of size 0")
        nbytes = n * dt.size
        if ds.kind == "scalar":
            data = self._raw(layout, filters, nbytes, dt.size, where)
            return self._records(layout, where, lambda: self.decode(dt, data, 0, ctype, None))
        shape = tuple(reversed(ds.dims))                   # Julia size
        if "dimensions" in attrs and n == 1:               # 0-dim Julia array stored with dims (1,)
            shape = ()
        npdt = numpy_dtype(dt) if ctype is None else None
        if npdt is not None:
            return self._numeric_array(layout, filters, npdt, ds.dims, shape, nbytes, where)
        data = self._raw(layout, filters, nbytes, dt.size, where)
        eltype = None
        if "julia_type" in attrs:
            eltype = self._julia_type_attr(attrs["julia_type"])
        out = np.empty(n, dtype=object)

        def fill():
            for i in range(n):       # object arrays: each element is its own Julia value
                out[i] = self.decode(dt, data, i * dt.size, ctype, eltype)
        self._records(layout, where, fill)
        return out.reshape(ds.dims).T if ds.dims else out.reshape(())

    def _records(self, layout: Layout, where: int, work):
        """Run ``work`` with error offsets relative to this dataset's data (restored afterwards)."""
        saved = self._pos0
        if layout.kind == "compact":
            self._pos0 = layout.pos
        elif layout.kind == "contiguous" and layout.pos + self.h5.base < self.buf.size:
            self._pos0 = layout.pos + self.h5.base
        else:
            self._pos0 = where
        try:
            return work()
        finally:
            self._pos0 = saved

    def _raw(self, layout: Layout, filters: list[int], nbytes: int, elsize: int, where: int) -> bytes:
        if layout.kind == "compact":
            if nbytes > layout.size:
                raise fail(layout.pos, f"compact data holds {layout.size} bytes, datatype needs {nbytes}")
            return self.buf.read(layout.pos, nbytes, "compact data")
        if nbytes == 0:
            return b""
        pos = self.h5.abs(layout.pos, "data address")
        if layout.kind == "contiguous":
            if nbytes > layout.size:
                raise fail(pos, f"contiguous data holds {layout.size} bytes, datatype needs {nbytes}")
            return self.buf.read(pos, nbytes, "contiguous data")
        stored = layout.filtered_size if layout.filtered_size else nbytes
        raw = self.buf.read(pos, stored, "chunk data")
        return unfilter(raw, filters, nbytes, elsize, pos) if filters else raw[:nbytes]

    def _numeric_array(self, layout, filters, npdt, dims, shape, nbytes, where) -> np.ndarray:
        if layout.kind == "contiguous" and nbytes >= MMAP_THRESHOLD and self.path and not filters:
            pos = self.h5.abs(layout.pos, "data address")
            if nbytes > layout.size:
                raise fail(pos, f"contiguous data holds {layout.size} bytes, datatype needs {nbytes}")
            self.buf.check(pos, nbytes, "array data")
            a = np.memmap(self.path, dtype=npdt, mode="c", offset=pos, shape=tuple(dims) or (1,))
        else:
            raw = bytearray(self._raw(layout, filters, nbytes, npdt.itemsize, where))
            a = np.frombuffer(raw, dtype=npdt).reshape(dims)
        a = a.reshape(dims) if dims else a.reshape(())
        out = a.T                                      # F-ordered view, shape == Julia size
        return out.reshape(shape) if out.shape != shape else out

    # ------------------------------------------------------------------ records
    def decode(self, dt: Datatype, data: bytes, off: int, ctype: Committed | None, jt):
        """One record of datatype ``dt`` at ``data[off:]``; ``ctype``/``jt`` give its Julia meaning if known."""
        if off + dt.size > len(data):
            raise fail(self._pos0 + off, f"record of {dt.size} bytes exceeds the {len(data)} bytes read")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.depth -= 1
            raise fail(self._pos0 + off, f"values nested deeper than {MAX_DEPTH}")
        try:
            return self._decode(dt, data, off, ctype, jt)
        finally:
            self.depth -= 1

    def _decode(self, dt, data, off, ctype, jt):
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
        return self._plain(dt, data, off, ctype, jt)

    def _plain(self, dt, data, off, ctype, jt):
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
            return self._compound(dt, data, off, ctype, jt)
        if cls == VLEN:
            raw = self._vlen_bytes(data, off, dt.base.size, self._pos0 + off)
            return [self.decode(dt.base, raw, i, None, None) for i in range(0, len(raw), dt.base.size)]
        if cls == ARRAY:
            n = math.prod(dt.dims)
            if n * dt.base.size > dt.size:
                raise fail(self._pos0 + off, f"array datatype of {n} elements x {dt.base.size} bytes "
                                             f"exceeds its size {dt.size}")
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
            return bytes(data[off:off + dt.size]).split(b"\0")[0].decode("utf-8", "replace")
        return self._vlen_string(data, off, self._pos0 + off)

    def _compound(self, dt, data, off, ctype, jt):
        members = {name: (moff, mdt) for name, moff, mdt in dt.members}
        kind, names, ftypes = self._fields(dt, ctype, jt, off)
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
        if isinstance(jt, JuliaType) and jt.name in ("Base.Complex", "Core.Complex") and len(values) == 2:
            re, im = values.values()
            return complex(re, im)
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
        """The value of a zero-size type: ``()``, None (nothing), MISSING, NamedTuple(), or a Ghost marker."""
        if not isinstance(jt, JuliaType):
            return Ghost("?")
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
    if isinstance(p, JuliaStruct):
        return list(p.fields.values())[i]
    if isinstance(p, (tuple, NamedTuple)):
        return p[i]
    raise fail(pos, f"Dict entry {p!r} is not a Pair")


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
    n = math.prod(ds.dims) if ds.kind == "simple" else (0 if ds.kind == "null" else 1)
    if n > 1 << 48:
        raise fail(where, f"dataspace of {n} elements is larger than any file")
    return n


def open_file(path: str | os.PathLike):
    """(reader, closer) for ``path``: the file is memory-mapped read-only."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise JLD2FormatError(f"{path}: at byte 0: empty file, expected a JLD2 header")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return Reader(mm, path), mm
