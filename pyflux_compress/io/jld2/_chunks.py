"""Chunked storage of HDF5 datasets: chunk indexes, the filter pipeline, and assembly into one array.

JLD2.jl writes compressed arrays as one chunk (layout version 4, single-chunk index) through a filter
pipeline (deflate 1, shuffle 2, bzip2 307, LZ4 32004, Zstd 32015: JLD2 ``src/filters/Filters.jl``). Generic
HDF5 files (h5py) use more indexes; all are supported here: layout 3 with a version-1 B-tree, and layout
4/5 with the single-chunk, implicit, fixed-array, extensible-array and version-2 B-tree indexes.

Every decompression is *streaming with a maximum output length*: a chunk can never expand past the size its
dataspace declares, and the caller (:class:`Budget`) has already checked that size against the load's limit
on produced bytes *before* anything is decompressed. Checksums of index structures are not verified (all
reads are bounds-checked instead).
"""
from __future__ import annotations

import bz2
import io
import math
import zlib
from dataclasses import dataclass

import numpy as np

from ..._validate import env_int
from ._hdf5 import UNDEF, Buffer, Cursor, Layout, fail

FILTER_NAMES = {1: "deflate", 2: "shuffle", 3: "fletcher32", 307: "bzip2", 32004: "lz4", 32015: "zstd"}
MAX_BYTES_ENV = "PYFLUX_JLD2_MAX_BYTES"
DEFAULT_MAX_BYTES = 16 << 20           # plus DEFAULT_RATIO x the file size (see Budget)
DEFAULT_RATIO = 64


# ---------------------------------------------------------------------------------------------- budget
class Budget:
    """The bytes a load may *produce* beyond what the file stores: decompressed chunks and fill values.

    The limit is ``max_bytes`` if given, else ``$PYFLUX_JLD2_MAX_BYTES``, else 16 MiB + 64 x the file size:
    bounded by the file's own size (a float checkpoint deflates ~1.1:1, a 90%-pruned one ~5-10:1; a bomb
    1000:1).
    :meth:`spend` is called before each allocation or decompression, so a refused load costs nothing.
    """

    def __init__(self, file_size: int, max_bytes: int | None = None) -> None:
        max_bytes = resolve_max_bytes(max_bytes)
        self.limit = DEFAULT_MAX_BYTES + DEFAULT_RATIO * file_size if max_bytes is None else max_bytes
        self.used = 0

    def spend(self, n: int, pos: int, what: str) -> None:
        if n < 0 or self.used + n > self.limit:
            raise fail(pos, f"{what} would produce {n} bytes, over the limit of {self.limit} bytes produced "
                            f"per load ({self.used} already used); raise it with max_bytes= or "
                            f"${MAX_BYTES_ENV} if the file is trusted")
        self.used += n


def resolve_max_bytes(max_bytes: int | None) -> int | None:
    """Validate a ``max_bytes`` argument, falling back to ``$PYFLUX_JLD2_MAX_BYTES``; None = the default."""
    if max_bytes is None:
        return env_int(MAX_BYTES_ENV, min=0)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative int (bytes) or None; got {max_bytes!r}")
    return max_bytes


# ---------------------------------------------------------------------------------------------- filters
@dataclass
class Filter:
    id: int
    values: tuple[int, ...]

    @property
    def name(self) -> str:
        return FILTER_NAMES.get(self.id, f"id {self.id}")


def parse_filters(buf: Buffer, pos: int, size: int) -> list[Filter]:
    """The filters of a filter pipeline message (version 1 or 2), in the order they were applied."""
    c = Cursor(buf, pos, pos + size, "filter pipeline message")
    version, n = c.u8(), c.u8()
    if version == 1:
        c.bytes(6)
    elif version != 2:
        raise fail(pos, f"filter pipeline version {version}, expected 1 or 2")
    if n > 32:
        raise fail(pos, f"filter pipeline with {n} filters, HDF5 allows at most 32")
    out = []
    for _ in range(n):
        fid = c.u16()
        namelen = c.u16() if (version == 1 or fid >= 256) else 0
        c.u16()                                  # flags (optional filter): a filter we cannot undo fails anyway
        nvals = c.u16()
        c.bytes(-(-namelen // 8) * 8 if version == 1 else namelen)
        values = tuple(c.u32() for _ in range(nvals))
        if version == 1 and nvals % 2:
            c.bytes(4)
        out.append(Filter(fid, values))
    return out


def _stream(decomp, data: bytes, limit: int, pos: int, name: str) -> bytes:
    """Run a zlib/bz2-style decompressor object producing at most ``limit + 1`` bytes."""
    try:
        return decomp.decompress(data, limit + 1)
    except (zlib.error, OSError, EOFError, ValueError) as err:
        raise fail(pos, f"{name} stream is corrupt ({err})") from None


def _lz4(data: bytes, limit: int, pos: int) -> bytes:
    try:
        import lz4.block
        import lz4.frame
    except ImportError:
        raise fail(pos, "the chunk is LZ4-compressed (filter 32004): pip install lz4 to read it") from None
    if data[:4] == b"\x04\x22\x4d\x18":        # LZ4 frame (JLD2 0.4's CodecLz4 LZ4FrameCompressor)
        return _stream(lz4.frame.LZ4FrameDecompressor(), data, limit, pos, "LZ4 frame")
    # HDF5 LZ4 filter framing: u64 BE total size, u32 BE block size, then per block u32 BE length + data
    # (a block whose length equals its decoded size is stored raw)
    if len(data) < 12:
        raise fail(pos, "LZ4 chunk shorter than its 12-byte header")
    total, block = int.from_bytes(data[:8], "big"), int.from_bytes(data[8:12], "big")
    if total > limit:
        raise fail(pos, f"LZ4 chunk declares {total} bytes, its dataspace {limit}")
    if block == 0 and total:
        raise fail(pos, "LZ4 chunk with block size 0")
    out, p = bytearray(), 12
    while len(out) < total:
        n = min(block, total - len(out))
        if p + 4 > len(data):
            raise fail(pos, "LZ4 chunk truncated")
        clen = int.from_bytes(data[p:p + 4], "big")
        p += 4
        if clen > len(data) - p:
            raise fail(pos, "LZ4 block runs past the end of the chunk")
        piece = data[p:p + clen]
        p += clen
        if clen == n:
            out += piece
        else:
            try:
                out += lz4.block.decompress(piece, uncompressed_size=n)
            except Exception as err:  # noqa: BLE001 - lz4.block raises LZ4BlockError (no public base)
                raise fail(pos, f"LZ4 block is corrupt ({err})") from None
    return bytes(out)


def _zstd(data: bytes, limit: int, pos: int) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise fail(pos, "the chunk is Zstd-compressed (filter 32015): pip install zstandard to read it") from None
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as r:
            return r.read(limit + 1)
    except zstandard.ZstdError as err:
        raise fail(pos, f"Zstd stream is corrupt ({err})") from None


def unshuffle(data: bytes, elsize: int) -> bytes:
    """Undo HDF5's byte shuffle: the first ``len // elsize * elsize`` bytes are shuffled, the rest kept."""
    n = len(data) // elsize if elsize > 1 else 0
    if n == 0:
        return data
    body = np.frombuffer(data, np.uint8, n * elsize).reshape(elsize, n).T.tobytes()
    return body + data[n * elsize:]


def unfilter(data: bytes, filters: list[Filter], mask: int, expected: int, elsize: int, pos: int) -> bytes:
    """Undo a filter pipeline (skipping filters whose bit is set in ``mask``); output exactly ``expected``
    bytes (the caller has checked ``expected`` against the budget)."""
    for i in reversed(range(len(filters))):
        if mask >> i & 1:
            continue
        f = filters[i]
        if f.id == 1:
            data = _stream(zlib.decompressobj(), data, expected, pos, "deflate")
        elif f.id == 2:
            data = unshuffle(data, f.values[0] if f.values and f.values[0] else elsize)
        elif f.id == 3:                       # Fletcher-32: a 4-byte checksum appended (not verified)
            if len(data) < 4:
                raise fail(pos, "chunk too short for its Fletcher-32 checksum")
            data = data[:-4]
        elif f.id == 307:
            data = _stream(bz2.BZ2Decompressor(), data, expected, pos, "bzip2")
        elif f.id == 32004:
            data = _lz4(data, expected, pos)
        elif f.id == 32015:
            data = _zstd(data, expected, pos)
        else:
            raise fail(pos, f"filter {f.name} is not supported (supported: "
                            f"{', '.join(f'{k} {v}' for k, v in FILTER_NAMES.items())})")
        if len(data) > expected + 4:          # +4: a Fletcher-32 checksum may still follow
            raise fail(pos, f"{f.name} output exceeds the chunk's {expected} bytes")
    if len(data) != expected:
        raise fail(pos, f"chunk decodes to {len(data)} bytes, expected {expected}")
    return data


# ---------------------------------------------------------------------------------------------- layout
@dataclass
class Chunked:
    """A chunked layout: chunk dims (HDF5 order, without the element-size dimension) and its index."""

    dims: tuple[int, ...]
    index: str                 # "btree1" | "single" | "implicit" | "fixed" | "earray" | "btree2"
    addr: int                  # relative address of the index (or of the single chunk); UNDEF = unallocated
    filtered_size: int = 0     # single chunk with filters: its stored size
    filter_mask: int = 0
    params: tuple = ()


def parse_chunked(c: Cursor, version: int, pos: int) -> Chunked:
    """The class-2 part of a layout message (version 3, 4 or 5), after the class byte."""
    if version == 3:
        nd = c.u8()
        if not 2 <= nd <= 33:
            raise fail(pos, f"chunked layout with {nd} dimensions")
        addr = c.u64()
        dims = tuple(c.u32() for _ in range(nd))
        return Chunked(_chunk_dims(dims, pos), "btree1", addr)
    flags, nd, enc = c.u8(), c.u8(), c.u8()
    if not 1 <= enc <= 8 or not 2 <= nd <= 33:
        raise fail(pos, f"chunked layout with {nd} dims of {enc} bytes")
    dims = _chunk_dims(tuple(c.uint(enc) for _ in range(nd)), pos)
    kind = c.u8()
    if kind == 1:
        fsize = mask = 0
        if flags & 2:
            fsize, mask = c.u64(), c.u32()
        return Chunked(dims, "single", c.u64(), fsize, mask)
    if kind == 2:
        return Chunked(dims, "implicit", c.u64())
    if kind == 3:
        page_bits = c.u8()
        return Chunked(dims, "fixed", c.u64(), params=(page_bits,))
    if kind == 4:
        c.bytes(5)                   # max bits, index elements, min pointers, min elements, page bits
        return Chunked(dims, "earray", c.u64())
    if kind == 5:
        node_size, split, merge = c.u32(), c.u8(), c.u8()
        return Chunked(dims, "btree2", c.u64(), params=(node_size, split, merge))
    raise fail(pos, f"chunk index type {kind}, expected 1-5")


def _chunk_dims(dims: tuple[int, ...], pos: int) -> tuple[int, ...]:
    # the last dimension is the element size; chunk dims are >= 1
    if any(d == 0 for d in dims):
        raise fail(pos, f"chunk dimensions {dims} contain 0")
    return dims[:-1]


def parse_layout(buf: Buffer, pos: int, size: int) -> Layout:
    """A data layout message, versions 3-5 (compact, contiguous or chunked; see :mod:`._chunks`)."""
    c = Cursor(buf, pos, pos + size, "layout message")
    version = c.u8()
    if version not in (3, 4, 5):
        raise fail(pos, f"data layout version {version}, expected 3, 4 or 5")
    cls = c.u8()
    if cls == 0:
        n = c.u16()
        start = c.pos
        c.need(n)
        return Layout("compact", start, n)
    if cls == 1:
        addr, n = c.u64(), c.u64()
        return Layout("contiguous", addr, n)
    if cls == 2:
        ch = parse_chunked(c, version, pos)
        return Layout("chunked", ch.addr, ch.filtered_size, ch.dims, ch.filtered_size, ch)
    raise fail(pos, f"layout class {cls}, expected 0 (compact), 1 (contiguous) or 2 (chunked)")


# ---------------------------------------------------------------------------------------------- indexes
@dataclass
class ChunkRecord:
    offset: tuple[int, ...]    # element coordinates of the chunk's first element (HDF5 order)
    addr: int                  # relative address
    size: int                  # stored bytes
    mask: int = 0              # filters skipped for this chunk


def _grid(shape: tuple[int, ...], cdims: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-(-s // c) for s, c in zip(shape, cdims))


def chunk_records(h5, lay: Chunked, shape: tuple[int, ...], chunk_bytes: int, filtered: bool, pos: int,
                  maxshape: tuple[int, ...] = ()):
    """Yield :class:`ChunkRecord` for every allocated chunk of a dataset of ``shape`` (HDF5 order);
    ``maxshape`` (UNDEF = unlimited) orders the extensible-array index."""
    if len(lay.dims) != len(shape):
        raise fail(pos, f"chunk dims {lay.dims} do not match the dataspace's {len(shape)} dimensions")
    if lay.addr == UNDEF:
        return                                   # nothing allocated: all fill value
    if lay.index == "single":
        if lay.filtered_size and not filtered:
            raise fail(pos, "single chunk has a filtered size but the dataset has no filter pipeline message")
        size = lay.filtered_size if filtered and lay.filtered_size else chunk_bytes
        yield ChunkRecord((0,) * len(shape), lay.addr, size, lay.filter_mask)
    elif lay.index == "implicit":
        if filtered:
            raise fail(pos, "implicit chunk index with filters (HDF5 forbids it)")
        grid = _grid(shape, lay.dims)
        for k, idx in enumerate(np.ndindex(*grid)):
            yield ChunkRecord(tuple(i * c for i, c in zip(idx, lay.dims)), lay.addr + k * chunk_bytes, chunk_bytes)
    elif lay.index == "btree1":
        yield from _btree1(h5, lay, len(shape), pos)
    elif lay.index == "fixed":
        yield from _fixed_array(h5, lay, shape, chunk_bytes, filtered, pos)
    elif lay.index == "btree2":
        yield from _btree2(h5, lay, len(shape), filtered, pos)
    else:
        yield from _earray(h5, lay, shape, maxshape or shape, chunk_bytes, filtered, pos)


def _btree1(h5, lay: Chunked, rank: int, pos: int):
    buf = h5.buf
    key = 8 + 8 * (rank + 1)
    stack, seen = [(lay.addr, None)], set()
    while stack:
        node, parent_level = stack.pop()
        p = h5.abs(node, "chunk B-tree node")
        if p in seen:
            raise fail(p, "chunk B-tree visits a node twice (loop)")
        seen.add(p)
        if buf.read(p, 4, "B-tree signature") != b"TREE" or buf.u8(p + 4) != 1:
            raise fail(p, "expected a chunk B-tree node ('TREE', type 1)")
        level, used = buf.u8(p + 5), buf.uint(p + 6, 2)
        if parent_level is not None and level >= parent_level:
            raise fail(p, "chunk B-tree levels do not decrease")
        buf.check(p + 24, used * (key + 8) + key, "chunk B-tree entries")
        q = p + 24
        for _ in range(used):
            size, mask = buf.uint(q, 4), buf.uint(q + 4, 4)
            offset = tuple(buf.uint(q + 8 + 8 * i, 8) for i in range(rank))
            child = buf.uint(q + key, 8)
            if level == 0:
                yield ChunkRecord(offset, child, size, mask)
            else:
                stack.append((child, level))
            q += key + 8


def _fixed_array(h5, lay: Chunked, shape, chunk_bytes, filtered, pos):
    buf = h5.buf
    p = h5.abs(lay.addr, "fixed-array header")
    if buf.read(p, 4, "fixed-array header signature") != b"FAHD":
        raise fail(p, "expected a fixed-array header 'FAHD'")
    # FAHD: signature, version, client id, entry size, page bits, max entries (8), data block address (8)
    esize, page_bits, n = buf.u8(p + 6), buf.u8(p + 7), buf.uint(p + 8, 8)
    dblock = buf.uint(p + 16, 8)
    grid = _grid(shape, lay.dims)
    if n != math.prod(grid):
        raise fail(p, f"fixed array holds {n} chunk entries, the dataspace has {math.prod(grid)} chunks")
    if esize < (12 if filtered else 8) or page_bits > 32:
        raise fail(p, f"fixed-array entry size {esize} / page bits {page_bits}")
    if dblock == UNDEF or n == 0:
        return
    d = h5.abs(dblock, "fixed-array data block")
    if buf.read(d, 4, "fixed-array data block signature") != b"FADB":
        raise fail(d, "expected a fixed-array data block 'FADB'")
    page = 1 << page_bits
    if n > page:                                     # paged: bitmap, checksum, then pages (+ checksum each)
        npages = -(-n // page)
        bitmap = buf.read(d + 14, -(-npages // 8), "fixed-array page bitmap")
        q = d + 14 + len(bitmap) + 4
        spans = []
        for k in range(npages):
            cnt = min(page, n - k * page)
            if bitmap[k // 8] >> (7 - k % 8) & 1:
                spans.append((k * page, q, cnt))
            q += cnt * esize + 4
    else:
        spans = [(0, d + 14, n)]
    csize_len = esize - 12
    for first, q, cnt in spans:
        buf.check(q, cnt * esize, "fixed-array entries")
        for j in range(cnt):
            e = q + j * esize
            addr = buf.uint(e, 8)
            if addr == UNDEF:
                continue
            size, mask = chunk_bytes, 0
            if filtered:
                size, mask = buf.uint(e + 8, csize_len), buf.uint(e + 8 + csize_len, 4)
            idx = np.unravel_index(first + j, grid)
            yield ChunkRecord(tuple(int(i) * c for i, c in zip(idx, lay.dims)), addr, size, mask)


def _earray(h5, lay: Chunked, shape, maxshape, chunk_bytes, filtered, pos):
    """Extensible-array index (one unlimited dimension, libver='latest'): header EAHD -> index block EAIB
    (first elements inline, then data block and secondary block addresses) -> data blocks EADB (paged when
    large) / secondary blocks EASB. Element ``i`` is the chunk whose scaled coordinates, with the unlimited
    dimension moved first, have row-major index ``i`` over the *maximum* chunk grid (HDF5's H5Dearray)."""
    buf = h5.buf
    p = h5.abs(lay.addr, "extensible-array header")
    if buf.read(p, 4, "extensible-array header signature") != b"EAHD":
        raise fail(p, "expected an extensible-array header 'EAHD'")
    esize, max_bits, ib_elmts, db_min, sb_min_ptrs, page_bits = (buf.u8(p + k) for k in range(6, 12))
    n_elmts, iblock = buf.uint(p + 44, 8), buf.uint(p + 60, 8)     # "max index set" + 1 bounds the indices
    if esize < (12 if filtered else 8) or not 0 < max_bits <= 64 or db_min == 0 or db_min & (db_min - 1) \
            or sb_min_ptrs == 0 or sb_min_ptrs & (sb_min_ptrs - 1) or page_bits > 32:
        raise fail(p, "extensible-array header parameters are invalid")
    unlim = [k for k, m in enumerate(maxshape) if m == UNDEF]
    if len(unlim) != 1:
        raise fail(pos, f"extensible-array index needs exactly one unlimited dimension, maxshape {maxshape}")
    u = unlim[0]
    others = [k for k in range(len(shape)) if k != u]
    max_chunks = [-(-maxshape[k] // lay.dims[k]) for k in others]
    per_row = math.prod(max_chunks)
    grid = _grid(shape, lay.dims)
    csize_len = esize - 12

    def record(i: int, e: int):
        addr = buf.uint(e, 8)
        if addr == UNDEF or per_row == 0:
            return None
        scaled_rest = np.unravel_index(i % per_row, max_chunks) if others else ()
        scaled = [0] * len(shape)
        scaled[u] = i // per_row
        for k, s in zip(others, scaled_rest):
            scaled[k] = int(s)
        if any(s >= g for s, g in zip(scaled, grid)):
            return None                          # outside the current extent (shrunk dataset)
        size, mask = chunk_bytes, 0
        if filtered:
            size, mask = buf.uint(e + 8, csize_len), buf.uint(e + 8 + csize_len, 4)
        return ChunkRecord(tuple(s * c for s, c in zip(scaled, lay.dims)), addr, size, mask)

    if iblock == UNDEF or n_elmts == 0:
        return
    # super block table (H5EA__hdr_init): super block k has 2^(k//2) data blocks of 2^((k+1)//2) * db_min
    nsblks = 1 + max_bits - db_min.bit_length() + 1
    ib_sblks = 2 * (sb_min_ptrs.bit_length() - 1)
    nd_addrs, ns_addrs = 2 * (sb_min_ptrs - 1), nsblks - ib_sblks
    off_size = (max_bits + 7) // 8
    b = h5.abs(iblock, "extensible-array index block")
    if buf.read(b, 4, "extensible-array index block signature") != b"EAIB":
        raise fail(b, "expected an extensible-array index block 'EAIB'")
    q = b + 14
    buf.check(q, ib_elmts * esize + (nd_addrs + max(ns_addrs, 0)) * 8, "extensible-array index block")
    for i in range(min(ib_elmts, n_elmts)):
        rec = record(i, q + i * esize)
        if rec is not None:
            yield rec
    q += ib_elmts * esize
    dblk_addrs = [buf.uint(q + 8 * k, 8) for k in range(nd_addrs)]
    sblk_addrs = [buf.uint(q + 8 * (nd_addrs + k), 8) for k in range(max(ns_addrs, 0))]
    start, dblk_i = ib_elmts, 0
    for k in range(nsblks):
        if start >= n_elmts:
            break
        ndblks, dnel = 1 << (k // 2), (1 << ((k + 1) // 2)) * db_min
        if k < ib_sblks:
            addrs, bitmap = dblk_addrs[dblk_i:dblk_i + ndblks], None
            dblk_i += ndblks
        else:
            sb = sblk_addrs[k - ib_sblks]
            if sb == UNDEF:
                start += ndblks * dnel
                continue
            sp = h5.abs(sb, "extensible-array secondary block")
            if buf.read(sp, 4, "extensible-array secondary block signature") != b"EASB":
                raise fail(sp, "expected an extensible-array secondary block 'EASB'")
            npages = dnel >> page_bits if dnel > (1 << page_bits) else 0
            r = sp + 14 + off_size
            # page-init bitmap: ndblks x ceil(npages / 8) bytes reserved, bits numbered contiguously
            # (data block j, page pg -> bit j * npages + pg), most significant bit first (H5EA__sblock_alloc)
            bitmap = buf.read(r, ndblks * -(-npages // 8), "page bitmap") if npages else None
            r += len(bitmap) if bitmap else 0
            buf.check(r, ndblks * 8, "secondary block data block addresses")
            addrs = [buf.uint(r + 8 * j, 8) for j in range(ndblks)]
        for j, da in enumerate(addrs):
            first = start + j * dnel
            if da == UNDEF or first >= n_elmts:
                continue
            dp = h5.abs(da, "extensible-array data block")
            if buf.read(dp, 4, "extensible-array data block signature") != b"EADB":
                raise fail(dp, "expected an extensible-array data block 'EADB'")
            e0 = dp + 14 + off_size
            npages = dnel >> page_bits if dnel > (1 << page_bits) else 0
            if npages:                           # pages follow the block's prefix and checksum
                psize = (1 << page_bits) * esize + 4
                e0 += 4
                for pg in range(npages):
                    bit = j * npages + pg
                    if bitmap is not None and not bitmap[bit // 8] >> (7 - bit % 8) & 1:
                        continue
                    pp = e0 + pg * psize
                    buf.check(pp, psize, "extensible-array data block page")
                    for t in range(1 << page_bits):
                        i = first + pg * (1 << page_bits) + t
                        if i < n_elmts:
                            rec = record(i, pp + t * esize)
                            if rec is not None:
                                yield rec
            else:
                buf.check(e0, dnel * esize, "extensible-array data block elements")
                for t in range(min(dnel, n_elmts - first)):
                    rec = record(first + t, e0 + t * esize)
                    if rec is not None:
                        yield rec
        start += ndblks * dnel


def _btree2(h5, lay: Chunked, rank: int, filtered: bool, pos: int):
    buf = h5.buf
    p = h5.abs(lay.addr, "B-tree v2 header")
    if buf.read(p, 4, "B-tree v2 header signature") != b"BTHD":
        raise fail(p, "expected a version-2 B-tree header 'BTHD'")
    btype, node_size, rsize = buf.u8(p + 5), buf.uint(p + 6, 4), buf.uint(p + 10, 2)
    depth, root, root_n = buf.uint(p + 12, 2), buf.uint(p + 16, 8), buf.uint(p + 24, 2)
    if btype != (11 if filtered else 10):
        raise fail(p, f"B-tree v2 of type {btype}, expected {11 if filtered else 10} (chunk records)")
    csize_len = rsize - 8 - 4 - 8 * rank if filtered else 0
    if rsize != 8 + 8 * rank + (csize_len + 4 if filtered else 0) or not 0 <= csize_len <= 8 \
            or node_size < 16 or depth > 32:
        raise fail(p, f"B-tree v2 record size {rsize} / node size {node_size} / depth {depth}")
    # field widths of internal nodes, as HDF5's H5B2__hdr_init derives them from the node size
    max_nrec = [(node_size - 10) // rsize]
    cum = [max_nrec[0]]
    nrec_w = max_nrec[0].bit_length() // 8 + 1 if max_nrec[0] else 1
    cum_w = [0]
    for u in range(1, depth + 1):
        ptr = 8 + nrec_w + cum_w[u - 1]
        m = max(0, (node_size - (10 + ptr)) // (rsize + ptr))
        max_nrec.append(m)
        cum.append((m + 1) * cum[u - 1] + m)
        cum_w.append(cum[u].bit_length() // 8 + 1)
    stack, seen = [(root, root_n, depth)], set()
    while stack:
        node, nrec, level = stack.pop()
        if node == UNDEF or nrec == 0:
            continue
        q = h5.abs(node, "B-tree v2 node")
        if q in seen:
            raise fail(q, "B-tree v2 visits a node twice (loop)")
        seen.add(q)
        if nrec > max_nrec[level]:
            raise fail(q, f"B-tree v2 node with {nrec} records, at most {max_nrec[level]} fit")
        sig = buf.read(q, 4, "B-tree v2 node signature")
        if sig != (b"BTLF" if level == 0 else b"BTIN"):
            raise fail(q, f"expected a B-tree v2 {'leaf' if level == 0 else 'internal node'}, found {sig!r}")
        r = q + 6
        buf.check(r, nrec * rsize, "B-tree v2 records")
        for k in range(nrec):
            e = r + k * rsize
            addr = buf.uint(e, 8)
            size, mask, o = 0, 0, e + 8
            if filtered:
                size, mask = buf.uint(o, csize_len), buf.uint(o + csize_len, 4)
                o += csize_len + 4
            scaled = tuple(buf.uint(o + 8 * i, 8) for i in range(rank))
            offset = tuple(s * c for s, c in zip(scaled, lay.dims))
            yield ChunkRecord(offset, addr, size if filtered else -1, mask)
        if level > 0:
            c = r + nrec * rsize
            w = 8 + nrec_w + (cum_w[level - 1] if level > 1 else 0)
            buf.check(c, (nrec + 1) * w, "B-tree v2 child pointers")
            for k in range(nrec + 1):
                e = c + k * w
                stack.append((buf.uint(e, 8), buf.uint(e + 8, nrec_w), level - 1))


# ---------------------------------------------------------------------------------------------- assembly
def read_chunked(h5, lay: Chunked, filters: list[Filter], shape: tuple[int, ...], elsize: int,
                 fill: bytes | None, budget: Budget, pos: int, maxshape: tuple[int, ...] = ()) -> bytearray:
    """All elements of a chunked dataset of ``shape`` (HDF5 order) as C-ordered bytes; chunks that were
    never written hold the fill value (zeros when none is defined), as HDF5 defines."""
    n = math.prod(shape)
    nbytes = n * elsize
    chunk_n = math.prod(lay.dims)
    chunk_bytes = chunk_n * elsize
    filtered = bool(filters)
    # decompression writes whole chunks: edge chunks overhang the dataspace, so a filtered dataset may
    # decode up to its padded size (each grid cell once: duplicates are refused below)
    padded = math.prod(_grid(shape, lay.dims)) * chunk_bytes if filtered else 0
    budget.spend(max(nbytes, padded), pos, f"chunked dataset of {n} elements x {elsize} bytes")
    out = filled(n, elsize, fill)
    if n == 0:
        return out
    view = np.frombuffer(out, np.uint8).reshape(*shape, elsize)
    seen: set[tuple[int, ...]] = set()
    for rec in chunk_records(h5, lay, shape, chunk_bytes, filtered, pos, maxshape):
        if any(o % c or o >= s for o, c, s in zip(rec.offset, lay.dims, shape)) or rec.offset in seen:
            raise fail(pos, f"chunk at element offset {rec.offset} is off the chunk grid {lay.dims} of "
                            f"{shape} or listed twice")
        seen.add(rec.offset)
        cpos = h5.abs(rec.addr, "chunk address")
        if filtered:
            size = rec.size if rec.size >= 0 else chunk_bytes
            raw = h5.buf.read(cpos, size, "chunk data")
            raw = unfilter(raw, filters, rec.mask, chunk_bytes, elsize, cpos)
        else:
            raw = h5.buf.read(cpos, chunk_bytes, "chunk data")
        chunk = np.frombuffer(raw, np.uint8).reshape(*lay.dims, elsize)
        sel = tuple(slice(o, min(o + c, s)) for o, c, s in zip(rec.offset, lay.dims, shape))
        view[sel] = chunk[tuple(slice(0, x.stop - x.start) for x in sel)]
    return out


def filled(n: int, elsize: int, fill: bytes | None) -> bytearray:
    """``n`` elements of the fill value (zeros when undefined or all zero: no pages touched until used)."""
    if not fill or not any(fill):
        return bytearray(n * elsize)
    if len(fill) != elsize:
        raise fail(0, f"fill value of {len(fill)} bytes for elements of {elsize} bytes")
    out = bytearray(n * elsize)
    np.frombuffer(out, np.uint8).reshape(n, elsize)[:] = np.frombuffer(fill, np.uint8)
    return out


def parse_fill(buf: Buffer, pos: int, size: int, old: bool) -> bytes | None:
    """The fill value of a fill-value message (new 0x05, versions 1-3; or the old 0x04), None if undefined."""
    c = Cursor(buf, pos, pos + size, "fill value message")
    if old:
        return c.bytes(c.u32())
    version = c.u8()
    if version in (1, 2):
        c.bytes(2)
        defined = c.u8()
        if version == 1 or defined:
            n = c.u32()
            return c.bytes(n) if n else None
        return None
    if version == 3:
        flags = c.u8()
        if flags & 0x20:
            return c.bytes(c.u32())
        return None
    raise fail(pos, f"fill value message version {version}, expected 1, 2 or 3")
