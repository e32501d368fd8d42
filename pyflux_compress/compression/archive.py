"""The compressed archive (``.pfcz``): Deep Compression's storage form, versioned, checksummed, bounded.

``save_compressed(path, model)`` writes a model (float, pruned, weight-shared or quantized) as a ``.pfcz`` file;
``load_compressed(path)`` gives back the same model: every stored array bit-exact, the architecture through Flux
syntax, the layer kinds (``SharedDense``, ``QuantizedDense`` ...) and ``records``. ``size_report(model)``
compares bytes as fp32 dense, sparse CSR, int8 and this archive (computed by encoding once, without a file).
The general codecs (zstd, bit packing, byte shuffle, delta-coded positions, the version-1 codecs) live in
``compression/codecs.py``; this module owns the format.

What is stored per layer (format version 2)
-------------------------------------------
Every array goes through one rule. An array ``A`` with a *background* value ``B`` (0 for floats and codebook
indices; the per-channel zero point for quantized codes) and an optional pruning mask ``M``:

* positions ``P = (A != B) | M`` (the entries that must be stored, and every kept weight);
* **sparse**: the positions of ``P`` once, then the values ``A[P]``, then the mask *relative to P*: nothing when
  ``M == P`` (the normal case: the pruned weights are exactly the background), else a bitmap over the ``|P|``
  stored entries. So a pruned quantized layer never stores mask positions next to nearly identical code
  positions;
* **dense**: every value, and the mask as ``"nonzero"`` (``M == (A != B)``) or, rarely, its own positions.

The choice is made by a cheap rule, not by trying encodings: one pass over the array (in chunks of
``CHUNK`` elements) collects the histograms of the candidate byte streams, and :func:`codecs.huffman_bytes`
predicts what zstd's Huffman stage makes of each (within ~1-2 % on such data). Sparse wins when positions +
values cost less than dense values. Positions are a **bitmap** or **delta-coded** gaps (one byte per gap,
symbol 255 = "skip 255 positions"), in C order or, for arrays of >= 2 dims, Fortran order (Julia's; a Dense
input's or a Conv filter's weights become one run) when the C pass saw more empty last-axis slices than empty
rows; whichever histogram predicts smaller. Floats are compared with the background by value (a pruned -0.0
is background and comes back as +0.0) and stored by their bytes (a kept -0.0 or NaN round-trips exactly).
Integer codes are ``q - qmin`` (quantized) or the codebook index (shared), ``w = bit_length(qmax - qmin)`` bits:
packed in a byte-aligned container of ``bits`` = 1, 2, 4 or 8 bits (whole codes per byte, so zstd's byte
Huffman models pairs/quads of narrow codes) through zstd, or packed at exactly ``w`` bits without an entropy
coder when the Huffman estimate of the container bytes is not smaller (near-uniform codes; and always for
``w > 8``). Packing is MSB first. Float values are byte-shuffled in blocks of ``BLOCK`` elements
(sign/exponent bytes apart from mantissa bytes). Every array records its memory layout (``"layout"``: C or
Fortran, e.g. a weight loaded from JLD2) and comes back in it (BLAS results depend on the layout). A quantized
layer's QAT *shadow* weight is training state and is not stored: on load ``float_layer.weight`` is the
dequantized weight, so the loaded model's forward is bit-identical.

Streams: every stream is ``"zstd"`` (one zstd frame; level 19 up to 64 KiB decoded, level 1 above: on this kind
of data matches rarely pay, the Huffman stage does the work) or ``"raw"`` (codes packed at exactly ``w`` bits,
small streams zstd did not shrink, and everything with ``encode_archive(..., entropy_coding=False)``). Bitmaps
are ``np.packbits``; packing and shuffling run in blocks of ``BLOCK`` elements (a multiple of 8, so the
concatenated blocks equal packing the whole stream; shuffling is per block).

Byte format, version 2 (integers little-endian)
-----------------------------------------------
==========  ==========  =====================================================================================
offset      size        content
==========  ==========  =====================================================================================
0           8           magic ``b"PFCZARCH"``
8           2           format version (uint16) = 2
10          2           flags (uint16) = 0 (reserved)
12          P           payload: the streams, concatenated in header order
12+P        H           header: one zstd frame of UTF-8 JSON (architecture, chain class, records, layers, streams)
end-52      8           P (uint64)
end-44      4           H (uint32)
end-40      4           R: decoded header length (uint32)
end-36      4           CRC32 of bytes [0, 12) + header bytes
end-32      32          SHA-256 of every byte before it
==========  ==========  =====================================================================================

The header comes last so the writer can stream: each stream is written as soon as it is encoded (memory: one
chunk of the model plus one array's compressed streams). Each stream entry: ``{"name", "codec", "offset" (from
the payload start), "length", "size" (decoded bytes), "crc32" (of the stored bytes)}``.

Version 1 (zlib/lzma/Huffman candidates tried by brute force, header first) is still read: see
``tests/data/archive_v1/``. The version-1 layout: magic, version (uint16) = 1, flags (bit 0 = header
raw-deflated), header length H (uint32), header, CRC32 of everything before, the payload, SHA-256.

Loading is bounded and validated before anything is built
---------------------------------------------------------
1. the SHA-256 over the file (read in 1 MiB pieces), then the header (its decoded length at most
   ``HEADER_MAX_BYTES``);
2. the header checked against itself: known kinds, codecs and dtypes; ``bits`` 1..8 (quantized) / 1..16
   (shared); every stream inside the payload; every stream's decoded size equal to what its array's shape,
   count and width imply; the total of decoded stream bytes plus the bytes of the arrays they decode to at
   most ``max_bytes`` (default 1 GiB; raise it with ``load_compressed(path, max_bytes=...)`` or the
   environment variable ``PYFLUX_ARCHIVE_MAX_BYTES``);
3. the architecture built *without allocating its weights* (a zero-stride placeholder per weight) and every
   stored array's shape compared with the layer's field — a header naming ``Dense(20000 => 20000)`` with tiny
   arrays fails here, in milliseconds;
4. only then the streams are decoded, one at a time (each decompressed to exactly its stated size, never more).

Any problem raises :class:`ArchiveError` (a ``ValueError``) naming the file and the damaged part; nothing else
leaves :func:`load_compressed` (a missing file is :class:`ArchiveNotFoundError`, also a ``FileNotFoundError``).
Files are written atomically (``_files.atomic_write``); loading never executes code (JSON + raw arrays).
"""
from __future__ import annotations

import copy as _copy
import hashlib
import io
import json
import math
import os
import struct
import zlib
from typing import IO, Any, Callable, Iterator

import numpy as np

from .._files import atomic_write, jsonable
from .._validate import env_int
from . import codecs as C
from ..model.walk import map_layers, modules
from .quantize import QuantizedChain, QuantizedLayer, as_float_layer, qrange
from .schemes import SCHEMES
from .sharing import SharedLayer
from .wrapper import QUANTIZED_WRAPPERS

__all__ = ["save_compressed", "load_compressed", "size_report", "encode_archive", "decode_archive", "archive_size",
           "archive_header",
           "ArchiveError", "ArchiveNotFoundError", "SizeReport", "MAX_BYTES_ENV", "DEFAULT_MAX_BYTES"]

MAGIC = b"PFCZARCH"
VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
_PREFIX = struct.Struct("<8sHH")  # magic, version, flags
_TRAILER = struct.Struct("<QIII")  # payload length, header length, decoded header length, CRC32(prefix + header)
_SHA = 32
_V1_PREFIX = struct.Struct("<8sHHI")  # version 1: magic, version, flags, header length
V1_FLAG_HEADER_DEFLATE = 1
CHUNK = 1 << 20  # elements per pass over an array (bounds the writer's temporaries)
BLOCK = 1 << 16  # elements per shuffle / bit-packing block (a multiple of 8)
HEADER_MAX_BYTES = 64 << 20
DEFAULT_MAX_BYTES = 1 << 30
MAX_BYTES_ENV = "PYFLUX_ARCHIVE_MAX_BYTES"
QUANTIZED_CLASSES = ("QuantizedDense", "QuantizedConv")
SHARED_CLASSES = ("SharedDense", "SharedConv")
_DTYPES = ("<f2", "<f4", "<f8", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "|b1")


class ArchiveError(ValueError):
    """A file that is not a valid pyflux-compress archive (bad magic, version, checksum, content or size)."""


class ArchiveNotFoundError(ArchiveError, FileNotFoundError):
    """The archive file does not exist (an ``ArchiveError`` and a ``FileNotFoundError``)."""


# ==============================================================================================================
# writer
# ==============================================================================================================

class _Sink:
    """Where the archive's bytes go: a binary file object, or nowhere (``None``: only count them)."""

    def __init__(self, fh: IO[bytes] | None) -> None:
        self.fh, self.size = fh, 0
        self.sha = hashlib.sha256() if fh is not None else None

    def write(self, data: bytes) -> None:
        if self.fh is not None:
            self.fh.write(data)
            self.sha.update(data)  # type: ignore[union-attr]
        self.size += len(data)


class _StreamEncoder:
    """One stream being encoded: pushed bytes are compressed as they come; the output waits in memory until
    :meth:`_Writer.add` writes it (streams stay contiguous while one pass feeds several of them). A small
    stream (<= ``codecs.ZSTD_SMALL_BYTES``) that zstd does not shrink is stored raw (its frame would only add
    ~10 bytes: biases, scales and tiny layers are often incompressible)."""

    def __init__(self, raw_size: int, codec: str) -> None:
        self.raw_size, self.codec, self.got, self.out = raw_size, codec, 0, []  # type: ignore[var-annotated]
        self.cobj = C.zstd_compressor(raw_size) if codec == "zstd" else None
        self.raw: list[bytes] | None = [] if codec == "zstd" and raw_size <= C.ZSTD_SMALL_BYTES else None

    def push(self, data: bytes) -> None:
        self.got += len(data)
        if self.raw is not None:
            self.raw.append(data)
        out = self.cobj.compress(data) if self.cobj is not None else data
        if out:
            self.out.append(out)

    def finish(self) -> list[bytes]:
        if self.got != self.raw_size:  # a writer bug, not bad input
            raise RuntimeError(f"archive writer: stream got {self.got} bytes, planned {self.raw_size}")
        if self.cobj is not None:
            self.out.append(self.cobj.flush())
            if self.raw is not None and sum(map(len, self.out)) >= self.raw_size:
                self.codec, self.out = "raw", self.raw
        return self.out


class _Blocks:
    """Regroups pushed 1-D arrays into blocks of ``BLOCK`` elements and feeds ``fn(block) -> bytes`` to ``enc``."""

    def __init__(self, enc: _StreamEncoder, fn: Callable[[np.ndarray], bytes]) -> None:
        self.enc, self.fn, self.parts, self.n = enc, fn, [], 0  # type: ignore[var-annotated]

    def push(self, arr: np.ndarray) -> None:  # ``arr`` must be a fresh array (not an nditer buffer)
        if arr.size == 0:
            return
        self.parts.append(arr)
        self.n += arr.size
        if self.n >= BLOCK:
            cat = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
            full = (self.n // BLOCK) * BLOCK
            for i in range(0, full, BLOCK):
                self.enc.push(self.fn(cat[i:i + BLOCK]))
            rest = cat[full:]
            self.parts, self.n = ([rest] if rest.size else []), rest.size

    def close(self) -> None:
        if self.n:
            self.enc.push(self.fn(np.concatenate(self.parts)))
        self.parts, self.n = [], 0


def _chunks(order: str, *arrays: Any) -> Iterator[tuple[np.ndarray, ...]]:
    """Aligned flat pieces, in ``order``, of arrays broadcast together (<= ``CHUNK`` elements each; the pieces
    are reused buffers: copy what you keep)."""
    ops = [np.asarray(a) for a in arrays] + [np.bool_(False)]  # the extra operand keeps the tuple form
    if ops[0].size == 0:
        return
    it = np.nditer(ops, flags=["external_loop", "buffered", "zerosize_ok"], op_flags=[["readonly"]] * len(ops),
                   order=order, buffersize=CHUNK)
    for pieces in it:
        yield tuple(pieces[:-1])


class _BitHist:
    """Histogram of the bytes of ``np.packbits`` of a bit sequence pushed in pieces of any length."""

    def __init__(self) -> None:
        self.hist, self.carry = np.zeros(256, np.int64), np.zeros(0, bool)

    def push(self, bits: np.ndarray) -> None:
        cat = np.concatenate([self.carry, bits]) if self.carry.size else bits
        full = (cat.size // 8) * 8
        self.hist += np.bincount(np.packbits(cat[:full]), minlength=256)
        self.carry = cat[full:].copy()

    def result(self) -> np.ndarray:
        return self.hist + (np.bincount(np.packbits(self.carry), minlength=256) if self.carry.size else 0)


class _Spec:
    """What is stored of one array: floats, or integer codes ``A - offset`` of ``width`` bits; ``implied``: a
    mask, whose sparse form needs no values (every stored position is True)."""

    def __init__(self, arr: np.ndarray, *, codes: bool, width: int = 8, offset: int = 0, background: Any = 0,
                 mask: np.ndarray | None = None, sparse_ok: bool = True, implied: bool = False) -> None:
        arr = np.asarray(arr)
        self.dtype = arr.dtype
        # floats are compared by value (a pruned weight times its 0 mask may be -0.0: still background, comes
        # back as +0.0) and stored by their bytes (a kept -0.0 or NaN round-trips bit for bit)
        self.arr = arr
        self.codes, self.width, self.offset, self.implied = codes, width, offset, implied
        self.background, self.mask = background, mask
        self.sparse_ok = sparse_ok and arr.ndim >= 2


class _PackHist:
    """Histogram of the bytes of codes packed ``bits`` per code (``codecs.container_bits``), pushed in pieces."""

    def __init__(self, bits: int) -> None:
        self.bits, self.per = bits, 8 // bits
        self.hist, self.carry = np.zeros(256, np.int64), np.zeros(0, np.uint8)

    def push(self, codes: np.ndarray) -> None:
        cat = np.concatenate([self.carry, codes]) if self.carry.size else codes
        full = (cat.size // self.per) * self.per
        self.hist += np.bincount(np.frombuffer(C.pack_bits(cat[:full], self.bits), np.uint8), minlength=256)
        self.carry = cat[full:].copy()

    def result(self) -> np.ndarray:
        tail = np.frombuffer(C.pack_bits(self.carry, self.bits), np.uint8) if self.carry.size else None
        return self.hist + (np.bincount(tail, minlength=256) if tail is not None else 0)


def _codes_pack(spec: _Spec, hist: _PackHist | None, n: int, entropy: bool) -> tuple[tuple[int, str], int]:
    """The cheap rule for ``n`` codes: ``((bits per code, codec), estimated bytes)``. Either the codes packed in
    a byte-aligned container (1, 2, 4 or 8 bits: a byte holds whole codes, so zstd's byte-level Huffman
    models them, as pairs/quads for narrow codes) through zstd, or packed at exactly ``width`` bits, raw —
    whichever the Huffman estimate of the container bytes says is smaller. (Narrow codes one per byte would
    leave zstd's fast levels finding spurious matches: binary weights came out 1.5 bits per weight.)"""
    packed = (n * spec.width + 7) // 8
    if hist is None or not entropy:
        return (spec.width, "raw"), packed
    est = C.huffman_bytes(hist.result())
    return ((hist.bits, "zstd"), est) if est < packed else ((spec.width, "raw"), packed)


class _Writer:
    """Encodes arrays into streams written to a :class:`_Sink`; collects the header's stream table."""

    def __init__(self, sink: _Sink, entropy: bool = True) -> None:
        self.sink, self.streams, self.payload = sink, [], 0  # type: ignore[var-annotated]
        self.entropy = entropy  # False: every stream raw (bit-packed codes), to measure what zstd adds
        self.coded = "zstd" if entropy else "raw"

    def add(self, name: str, enc: _StreamEncoder) -> int:
        crc = length = 0
        for piece in enc.finish():
            self.sink.write(piece)
            crc = zlib.crc32(piece, crc)
            length += len(piece)
        self.streams.append({"name": name, "codec": enc.codec, "offset": self.payload, "length": length,
                             "size": enc.raw_size, "crc32": crc})
        self.payload += length
        return len(self.streams) - 1

    # -- dense arrays (small or incompressible; always C order) --------------------------------------------
    def dense(self, name: str, arr: Any) -> dict[str, Any]:
        """A float/int array stored whole: little-endian bytes, shuffled in blocks, zstd."""
        arr = np.asarray(arr)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        enc = _StreamEncoder(arr.size * dtype.itemsize, self.coded)
        blocks = _Blocks(enc, C.shuffle_bytes)
        for (piece,) in _chunks("C", arr):
            blocks.push(piece.astype(dtype, copy=True))
        blocks.close()
        return {"enc": "dense", "dtype": dtype.str, "shape": list(arr.shape), "stream": self.add(name, enc)}

    # -- the one rule for weights, codes and masks ----------------------------------------------------------
    def array(self, name: str, spec: _Spec) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Store ``spec.arr`` (and its mask) sparse or dense by the cheap rule; returns (array desc, mask desc)."""
        arr, mask, n = spec.arr, spec.mask, spec.arr.size
        m_op = mask if mask is not None else np.bool_(False)
        orders = ("C", "F") if spec.sparse_ok else ("C",)
        k = zeros = 0
        mask_is_p = mask_is_nz = True
        box = C.container_bits(spec.width) if spec.codes else None
        hist_p, hist_all = (_PackHist(box), _PackHist(box)) if box else (None, None)
        pos_est: dict[str, tuple[int, str, int]] = {}
        shape = arr.shape
        first = np.zeros(shape[0] if arr.ndim else 1, np.int64)  # kept entries per first-axis slice (C's runs)
        lastc = np.zeros(shape[-1] if arr.ndim else 1, np.int64)  # ... per last-axis slice (F's runs)
        for order in orders:
            if order == "F" and not np.mean(lastc == 0) > np.mean(first == 0):
                break  # Fortran order only pays with more empty last-axis slices (inputs, filters) than rows
            bitmap, gaps, base, last = _BitHist(), np.zeros(256, np.int64), 0, -1
            for v, bg, m in _chunks(order, arr, spec.background, m_op):
                nz = v != bg
                p = nz | m if mask is not None else nz
                if order == "C":
                    k += int(np.count_nonzero(p))
                    if mask is not None:
                        mask_is_p &= bool(np.array_equal(m, p))
                        mask_is_nz &= bool(np.array_equal(m, nz))
                    if hist_p is not None:
                        sym = (v.astype(np.int64) - spec.offset).astype(np.uint8)
                        hist_p.push(sym[p])
                        hist_all.push(sym)
                    else:
                        zeros += v.size - int(np.count_nonzero(nz))
                if spec.sparse_ok:
                    bitmap.push(p)
                    idx = np.flatnonzero(p) + base
                    gaps += C.gap_histogram(idx, start=last)
                    if idx.size:
                        last = int(idx[-1])
                    if order == "C":
                        first += np.bincount(idx // (n // shape[0]), minlength=first.size)
                        lastc += np.bincount(idx % shape[-1], minlength=lastc.size)
                base += v.size
            if spec.sparse_ok:
                bm = min(C.huffman_bytes(bitmap.result()) if self.entropy else n, (n + 7) // 8)
                gp = C.huffman_bytes(gaps) if self.entropy else int(gaps.sum())
                pos_est[order] = (bm, "bitmap", (n + 7) // 8) if bm <= gp else (gp, "gaps", int(gaps.sum()))
        isz = arr.dtype.itemsize
        if spec.codes:
            dense_pack, dense_cost = _codes_pack(spec, hist_all, n, self.entropy)  # type: ignore[arg-type]
            sparse_pack, sparse_vals = _codes_pack(spec, hist_p, k, self.entropy)  # type: ignore[arg-type]
        else:
            dense_pack = sparse_pack = (8 * isz, "shuffle")
            dense_cost, sparse_vals = (n - zeros) * isz + zeros * isz // 8, k * isz
        order = min(pos_est, key=lambda o: pos_est[o][0]) if pos_est else "C"
        sparse_cost = (pos_est[order][0] + sparse_vals + (0 if mask is None or mask_is_p else (k + 7) // 8)
                       if pos_est else math.inf)
        if mask is not None and not mask_is_nz:
            dense_cost += pos_est[order][0] if pos_est else (n + 7) // 8
        if sparse_cost < dense_cost:
            return self._sparse(name, spec, order, pos_est[order], k, sparse_pack, mask_is_p)
        return self._dense_values(name, spec, dense_pack, mask_is_nz)

    def _value_encoder(self, spec: _Spec, pack: tuple[int, str], count: int) -> tuple[_StreamEncoder, _Blocks, dict]:
        """Encoder for ``count`` values: floats shuffled; codes packed ``pack = (bits, codec)``."""
        if not spec.codes:  # the unsigned view of the floats: same bytes
            dtype = spec.dtype.newbyteorder("<") if spec.dtype.itemsize > 1 else spec.dtype
            enc = _StreamEncoder(count * dtype.itemsize, self.coded)
            return enc, _Blocks(enc, C.shuffle_bytes), {"enc": "dense", "dtype": dtype.str, "shape": [count]}
        off, (bits, codec) = spec.offset, pack
        enc = _StreamEncoder((count * bits + 7) // 8, codec)
        return enc, _Blocks(enc, lambda b: C.pack_bits(b.astype(np.int64) - off, bits)), \
            {"enc": "codes", "width": spec.width, "bits": bits, "count": count}

    def _sparse(self, name: str, spec: _Spec, order: str, pos: tuple[int, str, int], k: int, pack: tuple[int, str],
                mask_is_p: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
        arr, mask = spec.arr, spec.mask
        _, kind, pos_size = pos
        pos_enc = _StreamEncoder(pos_size, self.coded)
        bitmap = _Blocks(pos_enc, lambda b: np.packbits(b).tobytes()) if kind == "bitmap" else None
        val_enc, values, vdesc = self._value_encoder(spec, pack, k) if not spec.implied else (None, None, None)
        subset_enc = _StreamEncoder((k + 7) // 8, self.coded) if mask is not None and not mask_is_p else None
        subset = _Blocks(subset_enc, lambda b: np.packbits(b).tobytes()) if subset_enc else None
        base, last = 0, -1
        for v, bg, m in _chunks(order, arr, spec.background, mask if mask is not None else np.bool_(False)):
            p = (v != bg) | m if mask is not None else v != bg
            if bitmap is not None:
                bitmap.push(p.copy())
            else:
                idx = np.flatnonzero(p) + base
                pos_enc.push(C.gap_symbols(idx, 8, start=last).tobytes())
                if idx.size:
                    last = int(idx[-1])
            if values is not None:
                values.push(v[p])
            if subset is not None:
                subset.push(m[p])
            base += v.size
        for b in (bitmap, values, subset):
            if b is not None:
                b.close()
        desc = {"enc": "sparse", "shape": list(arr.shape), "order": order, "layout": _layout(arr), "count": k,
                "positions": {"enc": kind, "stream": self.add(f"{name}/positions", pos_enc)}}
        desc["values"] = dict(vdesc, stream=self.add(f"{name}/values", val_enc)) if val_enc else None
        mdesc = None
        if mask is not None:
            mdesc = {"enc": "positions"} if subset_enc is None else \
                {"enc": "subset", "stream": self.add(f"{name}/mask", subset_enc)}
        return desc, mdesc

    def _dense_values(self, name: str, spec: _Spec, pack: tuple[int, str], mask_is_nz: bool
                      ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        arr, mask = spec.arr, spec.mask
        enc, blocks, vdesc = self._value_encoder(spec, pack, arr.size)
        for (v,) in _chunks("C", arr):
            blocks.push(v.copy())
        blocks.close()
        desc = dict(vdesc, shape=list(arr.shape), layout=_layout(arr), stream=self.add(name, enc))
        mdesc = None
        if mask is not None:
            if mask_is_nz:
                mdesc = {"enc": "nonzero"}
            else:  # rare: a dense array whose mask is not its nonzero pattern; positions of the mask alone
                own, _ = self.array(f"{name}/mask", _Spec(mask, codes=True, width=1, implied=True))
                mdesc = {"enc": "own", "array": own}
        return desc, mdesc


# -- layers ---------------------------------------------------------------------------------------------------

def _layout(arr: np.ndarray) -> str:
    """The memory order the loader must give back ("F" for Fortran-ordered arrays, e.g. loaded from JLD2): BLAS
    sums in a layout-dependent order, so the same values in another layout can change a forward's last bits."""
    return "F" if arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"


def _array_fields(layer: Any) -> list[str]:
    return [attr for attr in layer.flux_fields.values() if isinstance(getattr(layer, attr, None), np.ndarray)]


def _template(layer: Any) -> Any:
    """The float layer a leaf is built on, without materialising anything (shared: the template)."""
    return layer.float_layer if isinstance(layer, (QuantizedLayer, SharedLayer)) else layer


def _channel_shape(ndim: int) -> list[int]:
    axis = 0 if ndim == 2 else ndim - 1  # Dense rows, Conv axis 3 (the quantize module's convention)
    return [-1 if a == axis else 1 for a in range(ndim)]


def _encode_float_layer(w: _Writer, path: str, layer: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": "float", "arrays": {}, "masks": {}}
    masks = {p: np.asarray(m, dtype=bool) for p, m in (getattr(layer, "masks", None) or {}).items()}
    for attr in _array_fields(layer):
        arr = getattr(layer, attr)
        mask = masks.get(attr)
        if mask is not None and mask.shape != arr.shape:
            mask = None  # stored on its own below
        desc, mdesc = w.array(f"{path}.{attr}", _Spec(arr, codes=False, mask=mask, sparse_ok=True)) \
            if arr.ndim >= 2 else (w.dense(f"{path}.{attr}", arr), None)
        entry["arrays"][attr] = desc
        if mdesc is not None:
            entry["masks"][attr] = mdesc
    for pname, mask in masks.items():
        if pname not in entry["masks"]:
            own, _ = w.array(f"{path}.masks.{pname}", _Spec(mask, codes=True, width=1, implied=True))
            entry["masks"][pname] = {"enc": "own", "array": own}
    return entry


def _encode_shared(w: _Writer, path: str, layer: SharedLayer) -> dict[str, Any]:
    width = max(1, int(layer.centroids.size - 1).bit_length())
    desc, mdesc = w.array(f"{path}.index", _Spec(layer.index, codes=True, width=width,
                                                 mask=np.asarray(layer.mask, bool)))
    entry: dict[str, Any] = {"kind": "shared", "class": type(layer).__name__, "bits": layer.bits,
                             "index_dtype": layer.index.dtype.str, "index": desc, "mask": mdesc,
                             "centroids": w.dense(f"{path}.centroids", layer.centroids), "arrays": {}}
    base = layer.float_layer
    for attr in _array_fields(base):
        if attr != "weight":
            entry["arrays"][attr] = w.dense(f"{path}.{attr}", getattr(base, attr))
    return entry


def _encode_quantized(w: _Writer, path: str, layer: QuantizedLayer) -> dict[str, Any]:
    if layer._stale:  # noqa: SLF001 - the layer's own staleness flag: a QAT step may have changed the shadow
        layer.requantize()
    q = layer.qweight
    zp = np.asarray(layer.w_zero_point, dtype=np.int64)
    background = zp.reshape(_channel_shape(q.ndim)) if zp.ndim else zp
    width = max(1, int(layer.qmax - layer.qmin).bit_length())
    base = layer.float_layer
    masks = {p: np.asarray(m, dtype=bool) for p, m in (base.masks or {}).items()}
    wmask = masks.get("weight")
    desc, mdesc = w.array(f"{path}.qweight", _Spec(q, codes=True, width=width, offset=layer.qmin,
                                                   background=background,
                                                   mask=wmask if wmask is not None and wmask.shape == q.shape
                                                   else None))
    entry: dict[str, Any] = {
        "kind": "quantized", "class": type(layer).__name__, "bits": layer.bits, "scheme": layer.scheme,
        "granularity": layer.granularity, "qweight": desc,
        "w_scale": w.dense(f"{path}.w_scale", np.asarray(layer.w_scale, dtype=np.float32)),
        "w_zero_point": w.dense(f"{path}.w_zero_point", np.asarray(layer.w_zero_point, dtype=np.int32)),
        "act": None, "arrays": {}, "masks": {"weight": mdesc} if mdesc is not None else {}}
    for key in ("activations", "weight_clip"):  # settings of newer QuantizedLayer versions
        if isinstance(getattr(layer, key, None), str):
            entry[key] = getattr(layer, key)
    if layer.calibrated:
        entry["act"] = {"scale": float(layer.act_scale), "zero_point": int(layer.act_zero_point),
                        "qmin": int(layer.act_qmin), "qmax": int(layer.act_qmax), "method": layer.method}
    for attr in _array_fields(base):
        if attr != "weight":
            entry["arrays"][attr] = w.dense(f"{path}.{attr}", getattr(base, attr))
    for pname, mask in masks.items():
        if pname not in entry["masks"]:
            own, _ = w.array(f"{path}.masks.{pname}", _Spec(mask, codes=True, width=1, implied=True))
            entry["masks"][pname] = {"enc": "own", "array": own}
    return entry


def _architecture(model: Any) -> str:
    from ..model.chain import Chain

    return str(map_layers(lambda p, l: _template(l), model, as_type=Chain))


def _write_archive(model: Any, fh: IO[bytes] | None, entropy: bool = True) -> int:
    """Stream the archive of ``model`` to ``fh`` (``None``: only count); returns its size in bytes."""
    sink = _Sink(fh)
    prefix = _PREFIX.pack(MAGIC, VERSION, 0)
    sink.write(prefix)
    w = _Writer(sink, entropy)
    layers = []
    for path, layer in modules(model):
        if isinstance(layer, QuantizedLayer):
            entry = _encode_quantized(w, path, layer)
        elif isinstance(layer, SharedLayer):
            entry = _encode_shared(w, path, layer)
        else:
            entry = _encode_float_layer(w, path, layer)
        layers.append(dict(entry, path=path))
    header = {"format": "pyflux-compress archive", "version": VERSION, "architecture": _architecture(model),
              "chain_class": "QuantizedChain" if isinstance(model, QuantizedChain) else "Chain",
              "records": jsonable(getattr(model, "records", [])), "layers": layers, "streams": w.streams}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    cobj = C.zstd_compressor(len(raw))
    hbytes = cobj.compress(raw) + cobj.flush()
    sink.write(hbytes)
    sink.write(_TRAILER.pack(w.payload, len(hbytes), len(raw), zlib.crc32(hbytes, zlib.crc32(prefix))))
    if sink.sha is not None:
        sink.write(sink.sha.digest())
    else:
        sink.size += _SHA
    return sink.size


def _check_model(model: Any) -> None:
    if not hasattr(model, "layers"):
        raise ValueError(f"model must be a Chain, got {type(model).__name__}")
    for path, layer in modules(model):   # refuse at save time what the archive could not rebuild at load
        if type(layer) in QUANTIZED_WRAPPERS.values():
            raise ValueError(f"{path}: {type(layer).__name__} (a quantized sequence layer) has no archive form; "
                             "archive the float model, or export ONNX (export_onnx writes its int8 graph)")
        try:   # the archive rebuilds layers from their Flux form: a layer without one (a PyTorch GRU's b_hn)
            layer.flux_state()
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def encode_archive(model: Any, *, entropy_coding: bool = True) -> bytes:
    """The archive bytes of ``model`` (what :func:`save_compressed` writes).

    ``entropy_coding=False`` stores every stream raw (codes bit-packed, positions/floats as bytes): a valid
    archive that shows what the entropy coder adds (benchmarks); ``save_compressed`` always codes.
    """
    _check_model(model)
    buf = io.BytesIO()
    _write_archive(model, buf, bool(entropy_coding))
    return buf.getvalue()


def archive_size(model: Any, *, entropy_coding: bool = True) -> int:
    """Bytes :func:`save_compressed` would write for ``model``: encoded once, nothing kept or written."""
    _check_model(model)
    return _write_archive(model, None, bool(entropy_coding))


def _check_path(path: Any, name: str = "path") -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name} must be a file path (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)


def save_compressed(path: str | os.PathLike, model: Any) -> int:
    """Write ``model`` as a compressed archive (atomically, streamed). Returns the number of bytes written.

    ``model`` may be a float/pruned Chain, a weight-shared Chain (``share_weights``) or a ``QuantizedChain``.
    """
    path = _check_path(path)
    _check_model(model)
    with atomic_write(path) as fh:
        return _write_archive(model, fh)


# ==============================================================================================================
# reader
# ==============================================================================================================

def max_bytes_limit(value: Any = None) -> int:
    """The decoded-bytes budget: ``value``, else ``$PYFLUX_ARCHIVE_MAX_BYTES``, else ``DEFAULT_MAX_BYTES`` (1 GiB)."""
    if value is None:
        env = env_int(MAX_BYTES_ENV, min=1)
        return DEFAULT_MAX_BYTES if env is None else env
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"max_bytes must be a positive integer (bytes); got {value!r}")
    return int(value)


class _Invalid(Exception):
    """Internal: a header check failed (message without the file name)."""


def _need(cond: Any, msg: str) -> None:
    if not cond:
        raise _Invalid(msg)


def _int(d: dict, key: str, lo: int = 0, hi: int | None = None) -> int:
    v = d.get(key) if isinstance(d, dict) else None
    _need(isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi),
          f"field {key!r} must be an integer in [{lo}, {hi if hi is not None else 'inf'}], got {v!r}")
    return v  # type: ignore[return-value]


def _shape(d: dict, key: str = "shape") -> tuple[int, ...]:
    s = d.get(key) if isinstance(d, dict) else None
    _need(isinstance(s, list) and len(s) <= 8 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                       for x in s), f"bad shape {s!r}")
    return tuple(s)  # type: ignore[arg-type]


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)  # Python ints: a hostile shape cannot overflow


class _Budget:
    """Adds up decoded bytes while the header is checked; refuses past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit, self.total = limit, 0

    def add(self, nbytes: int, what: str) -> None:
        self.total += nbytes
        if self.total > self.limit:
            raise _Invalid(f"decoding needs more than {self.limit:,} bytes (at {what}); if you trust the file, "
                           f"raise the limit with load_compressed(..., max_bytes=N) or {MAX_BYTES_ENV}=N")


class _HeaderV2:
    """Checks a version-2 header against itself and the payload size; every descriptor is checked once."""

    def __init__(self, header: Any, payload: int, budget: _Budget) -> None:
        _need(isinstance(header, dict), "header is not a JSON object")
        self.h, self.budget = header, budget
        streams = header.get("streams")
        _need(isinstance(streams, list), "header has no stream table")
        for i, s in enumerate(streams):
            _need(isinstance(s, dict) and s.get("codec") in ("zstd", "raw"), f"stream {i}: unknown codec")
            off, length, size = _int(s, "offset"), _int(s, "length"), _int(s, "size")
            _int(s, "crc32", 0, 2 ** 32 - 1)
            _need(off + length <= payload, f"stream {i} lies outside the payload")
            _need(s["codec"] != "raw" or length == size, f"stream {i}: raw length differs from its size")
        self.streams = streams
        self.used: set[int] = set()

    def stream(self, d: dict, size: int) -> int:
        i = _int(d, "stream", 0, len(self.streams) - 1)
        _need(i not in self.used, f"stream {i} used twice")
        self.used.add(i)
        _need(self.streams[i]["size"] == size, f"stream {i} ({self.streams[i].get('name')!r}) holds "
                                               f"{self.streams[i]['size']} bytes, its array needs {size}")
        self.budget.add(size, f"stream {self.streams[i].get('name')!r}")
        return i

    def dense(self, d: Any, kinds: str = "fiub") -> tuple[tuple[int, ...], np.dtype]:
        _need(isinstance(d, dict) and d.get("enc") == "dense", "expected a dense array")
        _need(d.get("dtype") in _DTYPES, f"unsupported dtype {d.get('dtype')!r}")
        dtype = np.dtype(d["dtype"])
        _need(dtype.kind in kinds, f"dtype {d['dtype']} not allowed here")
        shape = _shape(d)
        self.stream(d, _size(shape) * dtype.itemsize)
        self.budget.add(_size(shape) * dtype.itemsize, "a dense array")
        return shape, dtype

    def values(self, d: Any, count: int, codes: bool, max_width: int) -> None:
        if codes and d is None:
            _need(max_width == 1, "values missing")  # a mask: every stored position is True
        elif codes:
            _need(isinstance(d, dict) and d.get("enc") == "codes", "expected integer codes")
            w = _int(d, "width", 1, max_width)
            _need(_int(d, "count") == count, "code count differs from its positions")
            bits = d.get("bits")
            _need(bits == w or bits == C.container_bits(w), f"bad code packing {bits!r} for {w}-bit codes")
            self.stream(d, (count * bits + 7) // 8)
        else:
            shape, _ = self.dense(d, "f")
            _need(shape == (count,), "value count differs from its positions")

    def array(self, d: Any, codes: bool, max_width: int = 8) -> tuple[tuple[int, ...], int]:
        """Checks an array descriptor; returns (shape, count of stored positions or -1 when dense)."""
        _need(isinstance(d, dict), "array descriptor is not an object")
        shape = _shape(d)
        n = _size(shape)
        if d.get("enc") == "sparse":
            _need(d.get("order") in ("C", "F") and d.get("layout", "C") in ("C", "F"), "bad order or layout")
            k = _int(d, "count", 0, n)
            pos = d.get("positions")
            _need(isinstance(pos, dict) and pos.get("enc") in ("bitmap", "gaps"), "bad positions")
            if pos["enc"] == "bitmap":
                self.stream(pos, (n + 7) // 8)
            else:
                i = _int(pos, "stream", 0, len(self.streams) - 1)
                size = self.streams[i]["size"]
                _need(k <= size <= k + n // 255 + 1, "gap stream size inconsistent with its count")
                self.stream(pos, size)
            self.budget.add(8 * k, "positions")
            self.values(d.get("values"), k, codes, max_width)
            self.budget.add(n * 2, "a sparse array")
            return shape, k
        _need(d.get("layout", "C") in ("C", "F"), "bad layout")
        if codes:
            _need(d.get("enc") == "codes", f"unknown array encoding {d.get('enc')!r}")
            self.values(dict(d, count=n) if "count" not in d else d, n, True, max_width)
        else:
            self.dense(d, "f")
        self.budget.add(n, "a dense array")
        return shape, -1

    def mask(self, d: Any, shape: tuple[int, ...], count: int) -> None:
        _need(isinstance(d, dict), "mask descriptor is not an object")
        enc = d.get("enc")
        if enc == "positions":
            _need(count >= 0, "mask 'positions' needs a sparse array")
        elif enc == "nonzero":
            _need(count < 0, "mask 'nonzero' needs a dense array")
        elif enc == "subset":
            _need(count >= 0, "mask 'subset' needs a sparse array")
            self.stream(d, (count + 7) // 8)
        elif enc == "own":
            mshape, _ = self.array(d.get("array"), True, 1)
            _need(mshape == shape, "mask shape differs from its array")
        else:
            raise _Invalid(f"unknown mask encoding {enc!r}")
        self.budget.add(_size(shape), "a mask")


def _layer_shapes_v2(hv: _HeaderV2, e: Any) -> dict[str, tuple[int, ...]]:
    """Checks one layer entry; returns the shapes of the float fields it will set (``weight`` included)."""
    _need(isinstance(e, dict) and e.get("kind") in ("float", "shared", "quantized"), "unknown layer kind")
    arrays = e.get("arrays")
    _need(isinstance(arrays, dict), "layer has no arrays")
    shapes = {}
    if e["kind"] == "float":
        counts = {}
        for attr, d in arrays.items():
            if isinstance(d, dict) and d.get("enc") == "dense":
                shapes[attr], _ = hv.dense(d, "f")
                counts[attr] = -1
            else:
                shapes[attr], counts[attr] = hv.array(d, codes=False)
        masks = e.get("masks")
        _need(isinstance(masks, dict), "layer has no mask table")
        for pname, d in masks.items():
            _need(pname in shapes or (isinstance(d, dict) and d.get("enc") == "own"), f"mask of unknown {pname!r}")
            hv.mask(d, shapes.get(pname) or _shape(d.get("array", {})), counts.get(pname, -1))
        return shapes
    for attr, d in arrays.items():
        _need(attr != "weight", "weight stored twice")
        shapes[attr], _ = hv.dense(d, "f")
    if e["kind"] == "shared":
        _need(e.get("class") in SHARED_CLASSES, f"unknown class {e.get('class')!r}")
        _int(e, "bits", 1, 16)
        _need(e.get("index_dtype") in ("|u1", "<u2"), "bad index dtype")
        cshape, _ = hv.dense(e.get("centroids"), "f")
        _need(len(cshape) == 1 and 1 <= cshape[0] <= 1 << 16, "bad centroids")
        shape, count = hv.array(e.get("index"), codes=True, max_width=16)
        if e.get("mask") is not None:
            hv.mask(e["mask"], shape, count)
        shapes["weight"] = shape
        return shapes
    _need(e.get("class") in QUANTIZED_CLASSES, f"unknown class {e.get('class')!r}")
    _int(e, "bits", 1, 8)
    _need(e.get("scheme") in SCHEMES, f"unknown scheme {e.get('scheme')!r}")
    _need(e.get("granularity") in ("per_tensor", "per_channel"), "unknown granularity")
    shape, count = hv.array(e.get("qweight"), codes=True, max_width=8)
    _need(len(shape) >= 2, "quantized weight must have >= 2 dims")
    channels = shape[0] if len(shape) == 2 else shape[-1]
    for key, kinds in (("w_scale", "f"), ("w_zero_point", "i")):
        s, _ = hv.dense(e.get(key), kinds)
        _need(s in ((), (channels,)), f"{key} shape {s} does not fit weight {shape}")
    masks = e.get("masks")
    _need(isinstance(masks, dict), "layer has no mask table")
    for pname, d in masks.items():
        hv.mask(d, shape if pname == "weight" else _shape(d.get("array", {})), count if pname == "weight" else -1)
    for key in ("activations", "weight_clip"):
        _need(e.get(key) is None or (isinstance(e[key], str) and len(e[key]) <= 32), f"bad {key}")
    _check_act(e.get("act"))
    shapes["weight"] = shape
    return shapes


def _check_act(act: Any) -> None:
    """A quantized layer's calibrated input activation (scale, zero point, integer range) or None."""
    if act is None:
        return
    _need(isinstance(act, dict) and isinstance(act.get("scale"), (int, float)) and
          0 < act["scale"] < float(np.finfo(np.float32).max), "bad activation scale")
    for key in ("zero_point", "qmin", "qmax"):
        _int(act, key, -(1 << 16), 1 << 16)
    _need(act.get("method") is None or isinstance(act["method"], str), "bad activation method")


def _no_alloc(rng: Any, *dims: int) -> np.ndarray:
    """A weight placeholder, replaced by the stored array before use: small ones are ordinary zeros (calloc'd,
    writable, in case a layer's constructor edits its weight), large ones a zero-stride view that allocates
    nothing — so a header naming huge layers costs nothing before its shapes are refused."""
    if math.prod(dims) <= 1 << 22:
        return np.zeros(dims, dtype=np.float32)
    return np.broadcast_to(np.float32(0), dims)


def _skeleton(header: dict, entries_shapes: list[dict[str, tuple[int, ...]]]) -> tuple[Any, list]:
    """Build the architecture without allocating weights; check every stored shape against it."""
    from ..model.syntax import parse

    arch = header.get("architecture")
    _need(isinstance(arch, str) and len(arch) <= 1 << 20, "bad architecture text")
    try:
        model = parse(arch, init=_no_alloc)
    except (ValueError, TypeError, RecursionError, MemoryError, OverflowError) as err:
        raise _Invalid(f"architecture {arch[:120]!r} cannot be built: {' '.join(str(err).split())[:300]}") from None
    leaves = list(modules(model))
    _need(len(leaves) == len(entries_shapes), f"{len(entries_shapes)} layer entries for {len(leaves)} layers")
    for (path, layer), shapes in zip(leaves, entries_shapes):
        fields = {a: tuple(getattr(layer, a).shape) for a in _array_fields(layer)}
        _need(fields == shapes, f"{path}: stored arrays {shapes} do not match the architecture's "
                                f"{type(layer).__name__} fields {fields}")
    return model, leaves


class _Source:
    """The archive file: random access to its bytes (a file object or bytes)."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh, self.size = fh, size

    def read(self, offset: int, length: int) -> bytes:
        self.fh.seek(offset)
        data = self.fh.read(length)
        if len(data) != length:
            raise _Invalid("file shorter than its header says")
        return data

    def sha256(self, end: int) -> bytes:
        h = hashlib.sha256()
        self.fh.seek(0)
        left = end
        while left:
            piece = self.fh.read(min(left, 1 << 20))
            if not piece:
                break
            h.update(piece)
            left -= len(piece)
        return h.digest()


class _ReaderV2:
    def __init__(self, src: _Source, streams: list[dict], base: int) -> None:
        self.src, self.streams, self.base = src, streams, base

    def raw(self, i: int) -> bytes | bytearray:
        s = self.streams[i]
        data = self.src.read(self.base + s["offset"], s["length"])
        if zlib.crc32(data) != s["crc32"]:
            raise _Invalid(f"stream {s.get('name')!r} (CRC32 mismatch)")
        if s["codec"] == "raw":
            return data
        try:
            return C.zstd_decompress(data, s["size"])
        except C.CodecError as err:
            raise _Invalid(f"stream {s.get('name')!r}: {err}") from None

    def dense(self, d: dict) -> np.ndarray:
        shape = tuple(d["shape"])
        return C.unshuffle_blocks(self.raw(d["stream"]), np.dtype(d["dtype"]), _size(shape), BLOCK).reshape(shape)

    def values(self, d: dict | None, count: int) -> np.ndarray:
        if d is None:  # a mask's implied values
            return np.ones(count, dtype=np.uint8)
        if d["enc"] == "dense":
            return self.dense(d)
        raw = self.raw(d["stream"])
        if d["bits"] == 8:
            return np.frombuffer(raw, dtype=np.uint8, count=count)
        return C.unpack_bits(raw, count, d["bits"])

    def positions(self, d: dict, n: int, count: int) -> np.ndarray:
        raw = self.raw(d["positions"]["stream"])
        if d["positions"]["enc"] == "bitmap":
            flat = np.flatnonzero(np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n))
        else:
            flat = C.gap_positions(np.frombuffer(raw, dtype=np.uint8), 8)
        _need(flat.size == count and (flat.size == 0 or (flat[-1] < n and flat[0] >= 0)),
              "position stream inconsistent with its shape")
        return flat

    def array(self, d: dict, dtype: Any, background: Any = 0, offset: int = 0,
              valid: tuple[int, int] | None = None) -> tuple[np.ndarray, Any]:
        """The array (codes + ``offset``, each checked to lie in ``valid``; or floats) and, for sparse ones,
        ``(flat positions, order)``."""
        shape = tuple(d["shape"])
        n = _size(shape)
        k = d["count"] if d["enc"] == "sparse" else n
        vals = self.values(d["values"] if d["enc"] == "sparse" else
                           (dict(d, count=n) if d["enc"] == "codes" else d), k)
        if offset or valid:
            vals = vals.astype(np.int64) + offset
            _need(valid is None or vals.size == 0 or (int(vals.min()) >= valid[0] and int(vals.max()) <= valid[1]),
                  "integer code outside its range")
        layout = d.get("layout", "C")
        if d["enc"] != "sparse":
            out = vals.astype(dtype, copy=False).reshape(shape)
            return (np.asfortranarray(out) if layout == "F" else out), None
        flat = self.positions(d, n, k)
        if d["order"] != layout and len(shape) > 1:  # positions were listed in the other order
            flat = np.ravel_multi_index(np.unravel_index(flat, shape, order=d["order"]), shape, order=layout)
        if np.all(np.asarray(background) == 0):
            out = np.zeros(shape, dtype=dtype, order=layout)  # calloc: no separate fill pass
        else:
            out = np.empty(shape, dtype=dtype, order=layout)
            out[...] = background
        view = out.ravel(order=layout)  # a view: ``out`` is laid out in ``layout``
        view[flat] = vals
        return out, (flat, layout)

    def mask(self, d: dict, arr: np.ndarray, background: Any, where: Any) -> np.ndarray:
        enc = d["enc"]
        if enc == "nonzero":
            return arr != background
        if enc == "own":
            m, _ = self.array(d["array"], np.uint8)
            return m.astype(bool)
        flat, order = where
        out = np.zeros(arr.shape, dtype=bool, order=order)
        view = out.ravel(order=order)
        if enc == "positions":
            view[flat] = True
        else:  # subset: one bit per stored position
            bits = np.unpackbits(np.frombuffer(self.raw(d["stream"]), dtype=np.uint8), count=flat.size)
            view[flat[bits.astype(bool)]] = True
        return out


def _decoded_v2(r: _ReaderV2, e: dict) -> dict[str, Any]:
    """One layer's arrays, decoded (neutral form shared with version 1)."""
    out: dict[str, Any] = {"kind": e["kind"], "arrays": {}, "masks": {}}
    if e["kind"] == "float":
        where = {}
        for attr, d in e["arrays"].items():
            out["arrays"][attr], where[attr] = r.array(d, np.dtype(d["dtype"]) if d["enc"] == "dense"
                                                       else np.dtype(d["values"]["dtype"]))
            out["arrays"][attr] = out["arrays"][attr].astype(out["arrays"][attr].dtype.newbyteorder("="),
                                                             copy=False)
        for pname, d in e["masks"].items():
            arr = out["arrays"].get(pname)
            out["masks"][pname] = r.mask(d, arr if arr is not None else np.zeros(0), 0, where.get(pname))
        return out
    for attr, d in e["arrays"].items():
        out["arrays"][attr] = r.dense(d)
    if e["kind"] == "shared":
        out["centroids"] = r.dense(e["centroids"])
        idx_dtype = np.dtype(e["index_dtype"])
        out["index"], where = r.array(e["index"], idx_dtype)
        _need(out["index"].size == 0 or int(out["index"].max()) < out["centroids"].size,
              "codebook index out of range")
        out["mask"] = r.mask(e["mask"], out["index"], 0, where) if e.get("mask") is not None \
            else np.ones(out["index"].shape, bool)
        out.update(cls=e["class"], bits=e["bits"])
        return out
    qmin, qmax = qrange(e["bits"], e["scheme"])
    scale, zp = r.dense(e["w_scale"]), r.dense(e["w_zero_point"])
    nd = len(e["qweight"]["shape"])
    zpb = zp.reshape(_channel_shape(nd)) if zp.ndim else zp
    _need(np.all((zp >= qmin) & (zp <= qmax)), "zero point outside the integer range")
    q, where = r.array(e["qweight"], np.dtype(np.int8), background=zpb.astype(np.int8), offset=qmin,
                       valid=(qmin, qmax))
    out["q"] = q
    for pname, d in e["masks"].items():
        out["masks"][pname] = r.mask(d, q, zpb, where if pname == "weight" else None)
    out.update(cls=e["class"], bits=e["bits"], scheme=e["scheme"], granularity=e["granularity"], scale=scale,
               zp=zp, act=e.get("act"), activations=e.get("activations"), weight_clip=e.get("weight_clip"))
    return out


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    """``quantize.dequantize_weight`` computed in place: the same float32 operations, ``(float32(q) -
    float32(zp)) * scale``, in one array instead of four (a quarter of the memory traffic of a large load).
    tests/test_archive.py checks it equals ``dequantize_weight`` bit for bit."""
    shape = _channel_shape(q.ndim)
    w = q.astype(np.float32)
    w -= np.asarray(zp, dtype=np.float32).reshape(shape if np.ndim(zp) else ())
    w *= np.asarray(scale, dtype=np.float32).reshape(shape if np.ndim(scale) else ())
    return w


def _build_layer(layer: Any, dec: dict[str, Any]) -> Any:
    """The final layer from the skeleton leaf and its decoded arrays (both versions)."""
    from .quantize import QuantizedConv, QuantizedDense
    from .sharing import SharedConv, SharedDense

    for attr, arr in dec["arrays"].items():
        setattr(layer, attr, arr)
    if dec["kind"] == "float":
        for pname, m in dec["masks"].items():
            layer.masks[pname] = m
        return layer
    if dec["kind"] == "shared":
        cls = {"SharedDense": SharedDense, "SharedConv": SharedConv}[dec["cls"]]
        layer.weight = np.zeros(dec["index"].shape, dtype=dec["centroids"].dtype)
        return cls(layer, dec["centroids"], dec["index"], dec["mask"], dec["bits"])
    cls = {"QuantizedDense": QuantizedDense, "QuantizedConv": QuantizedConv}[dec["cls"]]
    q, scale, zp = dec["q"], dec["scale"], dec["zp"]
    # Built around a 1-element stand-in of the float layer: the constructor quantizes its float layer's weight
    # and ``set_integer_weights`` copies it as the template of the integer kernel, both wasted work here (0.8 s
    # of a 1.0 s load at 14.7M weights). The stored integers are authoritative (requantizing the dequantized
    # weight could differ in a tie); the real shadow layer (dequantized weight, masks) is attached last.
    stub = _copy.copy(layer)
    stub.weight = np.zeros((1,) * q.ndim, dtype=np.float32)
    stub.masks = {}
    ql = cls(stub, dec["bits"], dec["scheme"], dec["granularity"])
    ql.set_integer_weights(q, scale, zp)
    layer.weight = _dequantize(q, scale, zp)
    for pname, m in dec["masks"].items():
        layer.masks[pname] = m
    ql.float_layer = layer
    for key in ("activations", "weight_clip"):  # newer QuantizedLayer settings, when the archive has them
        if dec.get(key) is not None and hasattr(ql, key):
            setattr(ql, key, dec[key])
    if dec["act"] is not None:
        a = dec["act"]
        ql.act_scale, ql.act_zero_point = np.float32(a["scale"]), np.int32(a["zero_point"])
        ql.act_qmin, ql.act_qmax, ql.method = a["qmin"], a["qmax"], a.get("method")
    return ql


def _assemble(header: dict, model: Any, leaves: list, decoded: Iterator[dict]) -> Any:
    from ..model.chain import Chain

    replace = {path: _build_layer(layer, dec) for (path, layer), dec in zip(leaves, decoded)}
    cls = QuantizedChain if header.get("chain_class") == "QuantizedChain" else Chain
    out = map_layers(lambda p, l: replace[p], model, as_type=cls)
    records = header.get("records", [])
    _need(isinstance(records, list), "records must be a list")
    out.records = records
    return out


def _json(raw: bytes | bytearray) -> Any:
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _Invalid(f"header is not valid JSON ({type(err).__name__})") from None


def _diagnose_v2(src: _Source) -> str:
    """Which part of a version-2 file with a bad SHA-256 is damaged (best effort, never raises)."""
    try:
        end = src.size - _SHA
        plen, hlen, rlen, crc = _TRAILER.unpack(src.read(end - _TRAILER.size, _TRAILER.size))
        hstart = _PREFIX.size + plen
        if hstart + hlen + _TRAILER.size != end:
            return "the trailer or the file length"
        hbytes = src.read(hstart, hlen)
        if zlib.crc32(hbytes, zlib.crc32(src.read(0, _PREFIX.size))) != crc:
            return "the header (CRC32 mismatch)"
        if rlen > HEADER_MAX_BYTES:  # a damaged length must not make the diagnosis allocate it
            return "the trailer (header length)"
        header = _json(C.zstd_decompress(hbytes, rlen))
        for s in header["streams"]:
            if zlib.crc32(src.read(_PREFIX.size + s["offset"], s["length"])) != s["crc32"]:
                return f"stream {s['name']!r} (CRC32 mismatch)"
        return "the SHA-256 trailer"
    except Exception:  # noqa: BLE001 - diagnosis of garbage must not raise
        return "the file prefix, trailer or header"


def _load_v2(src: _Source, limit: int) -> Any:
    end = src.size - _SHA
    _need(end >= _PREFIX.size + _TRAILER.size, "file too short")
    _, version, flags = _PREFIX.unpack(src.read(0, _PREFIX.size))
    _need(flags == 0, f"unknown flags {flags:#06x}")
    plen, hlen, rlen, crc = _TRAILER.unpack(src.read(end - _TRAILER.size, _TRAILER.size))
    _need(_PREFIX.size + plen + hlen + _TRAILER.size == end, "payload/header lengths do not add up to the file size")
    _need(rlen <= HEADER_MAX_BYTES, f"header of {rlen:,} bytes exceeds {HEADER_MAX_BYTES:,}")
    budget = _Budget(limit)
    budget.add(rlen, "the header")
    hbytes = src.read(_PREFIX.size + plen, hlen)
    _need(zlib.crc32(hbytes, zlib.crc32(src.read(0, _PREFIX.size))) == crc, "the header (CRC32 mismatch)")
    try:
        header = _json(C.zstd_decompress(hbytes, rlen))
    except C.CodecError as err:
        raise _Invalid(f"header: {err}") from None
    hv = _HeaderV2(header, plen, budget)
    layers = header.get("layers")
    _need(isinstance(layers, list), "header has no layer list")
    shapes = []
    for i, e in enumerate(layers):
        try:
            shapes.append(_layer_shapes_v2(hv, e))
        except _Invalid as err:
            raise _Invalid(f"layer entry {i + 1}: {err}") from None
    model, leaves = _skeleton(header, shapes)
    reader = _ReaderV2(src, hv.streams, _PREFIX.size)
    return _assemble(header, model, leaves, (_decoded_v2(reader, e) for e in layers))


# -- version 1 --------------------------------------------------------------------------------------------------

class _ReaderV1:
    """Version-1 streams (header first; v1 codecs; positions with variable gap bits)."""

    def __init__(self, payload: bytes, streams: list[dict[str, Any]], budget: _Budget) -> None:
        self.payload, self.streams, self.budget = payload, streams, budget

    def symbols(self, i: Any) -> np.ndarray:
        _need(isinstance(i, int) and 0 <= i < len(self.streams), f"bad stream index {i!r}")
        s = self.streams[i]
        off, length, n, width = _int(s, "offset"), _int(s, "length"), _int(s, "n"), _int(s, "width", 1, 32)
        _need(off + length <= len(self.payload), "stream outside the payload")
        self.budget.add(4 * n + (n * width + 7) // 8, f"stream {s.get('name')!r}")
        try:
            return C.decode_v1(s.get("codec"), self.payload[off:off + length], n, width)
        except C.CodecError as err:
            raise _Invalid(f"stream {s.get('name')!r}: {err}") from None

    def dense(self, d: dict[str, Any]) -> np.ndarray:
        _need(d.get("dtype") in _DTYPES, f"unsupported dtype {d.get('dtype')!r}")
        dtype = np.dtype(d["dtype"])
        shape = _shape(d)
        _need(self.streams[_int(d, "stream", 0, len(self.streams) - 1)].get("n") == _size(shape) * dtype.itemsize,
              "dense stream size differs from its shape")
        raw = self.symbols(d["stream"]).astype(np.uint8).tobytes()
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))

    def positions(self, d: dict[str, Any], size: int) -> np.ndarray:
        sym = self.symbols(d["stream"])
        if d.get("pos") == "bitmap":
            flat = np.flatnonzero(sym)
        else:
            flat = C.gap_positions(sym, _int(d, "gap_bits", 2, 16))
        _need(d.get("order") in ("C", "F"), f"bad position order {d.get('order')!r}")
        _need(flat.size == d.get("count") and (flat.size == 0 or (flat[-1] < size and flat[0] >= 0)),
              "position stream inconsistent with its shape")
        return flat

    def float_array(self, d: dict[str, Any]) -> np.ndarray:
        if d.get("enc") == "dense":
            return self.dense(d)
        values = self.dense(d["values"])
        shape = _shape(d)
        self.budget.add(_size(shape) * values.dtype.itemsize, "a sparse array")
        out = np.zeros(_size(shape), dtype=values.dtype)
        out[self.positions(d["positions"], out.size)] = values
        return out.reshape(shape, order=d["positions"]["order"])

    def symbols_at(self, d: dict[str, Any], background: np.ndarray) -> np.ndarray:
        shape = _shape(d)
        self.budget.add(8 * _size(shape), "an integer array")
        sym = self.symbols(d["stream"]).astype(np.int64)
        if "positions" not in d:
            return sym.reshape(shape)
        order = d["positions"]["order"]
        out = np.array(np.broadcast_to(background, shape), dtype=np.int64).ravel(order=order)
        out[self.positions(d["positions"], out.size)] = sym
        return out.reshape(shape, order=order)

    def mask(self, d: dict[str, Any]) -> np.ndarray:
        shape = _shape(d)
        self.budget.add(_size(shape), "a mask")
        m = np.zeros(_size(shape), dtype=bool)
        m[self.positions(d["positions"], m.size)] = True
        return m.reshape(shape, order=d["positions"]["order"])


def _shapes_v1(e: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of the float fields a version-1 layer entry sets (checked before anything is decoded)."""
    _need(isinstance(e, dict) and e.get("kind") in ("float", "shared", "quantized"), "unknown layer kind")
    arrays = e.get("arrays", {})
    _need(isinstance(arrays, dict), "layer has no arrays")
    shapes = {attr: _shape(d) if isinstance(d, dict) else _shape({}) for attr, d in arrays.items()}
    if e["kind"] == "shared":
        _int(e, "bits", 1, 16)
        shapes["weight"] = _shape(e.get("index", {}))
    elif e["kind"] == "quantized":
        _int(e, "bits", 1, 8)
        _need(e.get("scheme") in SCHEMES, f"unknown scheme {e.get('scheme')!r}")
        _check_act(e.get("act"))
        shapes["weight"] = _shape(e.get("qweight", {}))
    return shapes


def _decoded_v1(r: _ReaderV1, e: dict[str, Any], layer: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": e["kind"], "arrays": {}, "masks": {}}
    for attr, d in e.get("arrays", {}).items():
        out["arrays"][attr] = r.float_array(d)
    if e["kind"] == "float":
        for pname, d in e.get("masks", {}).items():
            _need(isinstance(d, dict), "bad mask entry")
            if d.get("enc") == "nonzero":
                _need(pname in out["arrays"], f"mask of unknown {pname!r}")
                out["masks"][pname] = out["arrays"][pname] != 0
            else:
                out["masks"][pname] = r.mask(d)
        return out
    if e["kind"] == "shared":
        _need(e.get("class") in SHARED_CLASSES and e.get("index_dtype") in ("|u1", "<u2"), "bad shared layer")
        out["centroids"] = r.dense(e["centroids"])
        idx = r.symbols_at(e["index"], np.zeros(1, dtype=np.int64))
        _need(idx.size == 0 or (int(idx.min()) >= 0 and int(idx.max()) < out["centroids"].size),
              "codebook index out of range")
        out["index"] = idx.astype(np.dtype(e["index_dtype"]))
        out["mask"] = r.mask(e["mask"]) if "mask" in e else \
            r.mask({"shape": e["index"]["shape"], "positions": e["index"]["positions"]})
        out.update(cls=e["class"], bits=e["bits"])
        return out
    _need(e.get("class") in QUANTIZED_CLASSES and e.get("granularity") in ("per_tensor", "per_channel"),
          "bad quantized layer")
    scale, zp = r.dense(e["w_scale"]), r.dense(e["w_zero_point"])
    qmin, qmax = qrange(e["bits"], e["scheme"])
    nd = len(e["qweight"]["shape"])
    _need(nd >= 2, "quantized weight must have >= 2 dims")
    zpb = zp.reshape(_channel_shape(nd)) if zp.ndim else zp
    sym = r.symbols_at(e["qweight"], zpb.astype(np.int64) - qmin)
    q = sym + qmin
    _need(q.size == 0 or (int(q.min()) >= qmin and int(q.max()) <= qmax), "integer code outside its range")
    out["q"] = q.astype(np.int8)
    for pname, d in e.get("masks", {}).items():
        out["masks"][pname] = r.mask(d)
    out.update(cls=e["class"], bits=e["bits"], scheme=e["scheme"], granularity=e["granularity"], scale=scale,
               zp=zp, act=e.get("act"))
    return out


def _diagnose_v1(data: bytes) -> str:
    try:
        _, _, flags, hlen = _V1_PREFIX.unpack_from(data, 0)
        end = _V1_PREFIX.size + hlen
        (crc,) = struct.unpack_from("<I", data, end)
        if zlib.crc32(data[:end]) != crc:
            return "the header (CRC32 mismatch)"
        raw = data[_V1_PREFIX.size:end]
        header = json.loads(zlib.decompress(raw, -15) if flags & V1_FLAG_HEADER_DEFLATE else raw)
        base = end + 4
        for s in header["streams"]:
            if zlib.crc32(data[base + s["offset"]:base + s["offset"] + s["length"]]) != s["crc32"]:
                return f"stream {s['name']!r} (CRC32 mismatch)"
        return "the SHA-256 trailer or the file length"
    except Exception:  # noqa: BLE001 - diagnosis of garbage must not raise
        return "the file prefix/header"


def _load_v1(data: bytes, limit: int) -> Any:
    _, _, flags, hlen = _V1_PREFIX.unpack_from(data, 0)
    _need(not flags & ~V1_FLAG_HEADER_DEFLATE, f"unknown header flags {flags:#06x}")
    end = _V1_PREFIX.size + hlen
    _need(end + 4 <= len(data) - _SHA, "header longer than the file")
    raw = data[_V1_PREFIX.size:end]
    if flags & V1_FLAG_HEADER_DEFLATE:
        d = zlib.decompressobj(-15)
        try:
            raw = d.decompress(raw, min(HEADER_MAX_BYTES, limit))
        except zlib.error as err:
            raise _Invalid(f"header cannot be inflated: {err}") from None
        _need(not d.unconsumed_tail, "header inflates past the limit")
    header = _json(raw)
    _need(isinstance(header, dict) and isinstance(header.get("layers"), list) and
          isinstance(header.get("streams"), list), "header lacks layers/streams")
    budget = _Budget(limit)
    for s in header["streams"]:  # the whole decoded size is known up front: refuse before decoding anything
        _need(isinstance(s, dict), "bad stream entry")
        budget.add(4 * _int(s, "n") + (_int(s, "n") * _int(s, "width", 1, 32) + 7) // 8, f"stream {s.get('name')!r}")
    shapes = [_shapes_v1(e) for e in header["layers"]]
    for shp in shapes:
        for s in shp.values():
            budget.add(12 * _size(s), "the layer arrays")
    model, leaves = _skeleton(header, shapes)
    reader = _ReaderV1(data[end + 4:-_SHA], header["streams"], _Budget(limit))
    decoded = (_decoded_v1(reader, e, layer) for (_, layer), e in zip(leaves, header["layers"]))
    return _assemble(header, model, leaves, decoded)


# -- entry points -------------------------------------------------------------------------------------------------

def archive_header(data: bytes) -> dict[str, Any]:
    """The JSON header of archive bytes (version 1 or 2) without decoding any stream: which encodings and
    codecs the writer chose, per stream (for tools and benchmarks). :class:`ArchiveError` if unreadable."""
    try:
        (version,) = struct.unpack_from("<H", data, 8)
        if data[:8] != MAGIC or version not in SUPPORTED_VERSIONS:
            raise _Invalid("not a supported archive")
        if version == 1:
            _, _, flags, hlen = _V1_PREFIX.unpack_from(data, 0)
            raw = data[_V1_PREFIX.size:_V1_PREFIX.size + hlen]
            raw = zlib.decompressobj(-15).decompress(raw, HEADER_MAX_BYTES) if flags & V1_FLAG_HEADER_DEFLATE else raw
            return _json(raw)
        plen, hlen, rlen, _ = _TRAILER.unpack_from(data, len(data) - _SHA - _TRAILER.size)
        _need(rlen <= HEADER_MAX_BYTES, "header too large")
        return _json(C.zstd_decompress(data[_PREFIX.size + plen:_PREFIX.size + plen + hlen], rlen))
    except (_Invalid, C.CodecError, struct.error, zlib.error) as err:
        raise ArchiveError(f"cannot read the archive header: {err}") from None


def _load(src: _Source, where: str, limit: int) -> Any:
    head = src.read(0, min(src.size, _V1_PREFIX.size)) if src.size else b""
    if src.size < _PREFIX.size + _SHA or head[:8] != MAGIC:
        raise ArchiveError(f"{where}: not a pyflux-compress archive (bad magic or too short; expected a file "
                           f"written by save_compressed)")
    if src.sha256(src.size - _SHA) != src.read(src.size - _SHA, _SHA):
        if struct.unpack_from("<H", head, 8)[0] == 1:
            damaged = _diagnose_v1(src.read(0, src.size))
        else:
            damaged = _diagnose_v2(src)
        raise ArchiveError(f"{where}: checksum mismatch (SHA-256): the file is corrupted; damaged part: {damaged}")
    (version,) = struct.unpack_from("<H", head, 8)
    if version not in SUPPORTED_VERSIONS:
        raise ArchiveError(f"{where}: archive format version {version} is not supported by this reader "
                           f"(supports {SUPPORTED_VERSIONS}); upgrade pyflux-compress")
    try:
        if version == 1:
            _need(src.size <= limit, "file larger than the decoding limit")
            return _load_v1(src.read(0, src.size), limit)
        return _load_v2(src, limit)
    except _Invalid as err:
        raise ArchiveError(f"{where}: invalid archive: {err}") from None
    except ArchiveError:
        raise
    except MemoryError:
        raise ArchiveError(f"{where}: not enough memory to decode the archive") from None
    except Exception as err:  # noqa: BLE001 - a valid checksum over invalid content: still a clear error
        raise ArchiveError(f"{where}: archive content is invalid ({type(err).__name__}: {err})") from None


def decode_archive(data: bytes, where: str = "archive", *, max_bytes: int | None = None) -> Any:
    """Rebuild the model from archive bytes; :class:`ArchiveError` for anything invalid."""
    limit = max_bytes_limit(max_bytes)
    return _load(_Source(io.BytesIO(data), len(data)), where, limit)


def load_compressed(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
    """Read an archive written by :func:`save_compressed`; returns the model (Chain or QuantizedChain).

    Parameters
    ----------
    path : the ``.pfcz`` file.
    max_bytes : the most bytes decoding may produce (decoded streams plus the arrays built from them), checked
        from the header before anything is decoded or built. Default ``$PYFLUX_ARCHIVE_MAX_BYTES`` or 1 GiB.

    Raises
    ------
    ArchiveError (a ValueError) for a corrupted, truncated, foreign, oversized or newer-version file, naming the
    file and the damaged part; :class:`ArchiveNotFoundError` (also a FileNotFoundError) if it does not exist.
    ValueError for a bad ``path`` / ``max_bytes`` argument.
    """
    path = _check_path(path)
    limit = max_bytes_limit(max_bytes)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise ArchiveNotFoundError(f"{path}: no such archive file") from None
    except OSError as err:
        raise ArchiveError(f"{path}: cannot open the archive ({err.strerror or err})") from None
    try:
        with fh:
            return _load(_Source(fh, os.fstat(fh.fileno()).st_size), path, limit)
    except OSError as err:
        raise ArchiveError(f"{path}: cannot read the archive ({err.strerror or err})") from None


# ==============================================================================================================
# size report
# ==============================================================================================================

class SizeReport(dict):
    """Bytes of a model in several storage forms (a dict) with a table ``repr``.

    Keys: ``params`` (stored scalars), ``nonzero``, ``fp32_dense`` (4 bytes per scalar), ``sparse_csr``
    (weights as CSR: float32 values + int32 column indices + int32 row pointers over ``(out, rest)``; other
    arrays dense fp32), ``int8`` (1 byte per weight + float32 per-channel scale; other arrays fp32),
    ``archive`` (the :func:`save_compressed` bytes), and ``ratio_<form>`` = fp32_dense / form.
    """

    FORMS = ("fp32_dense", "sparse_csr", "int8", "archive")

    def __repr__(self) -> str:
        lines = [f"{'storage':<12} {'bytes':>12} {'ratio':>8}"]
        for form in self.FORMS:
            lines.append(f"{form:<12} {self[form]:>12,d} {self['ratio_' + form]:>7.1f}x")
        lines.append(f"({self['params']:,d} parameters, {self['nonzero']:,d} nonzero)")
        return "\n".join(lines)

    __str__ = __repr__


def size_report(model: Any) -> SizeReport:
    """Bytes of ``model`` as fp32 dense, sparse CSR, int8 and the compressed archive (see :class:`SizeReport`).

    The archive size comes from :func:`archive_size`: the archive is encoded once, into nothing.
    """
    _check_model(model)
    params = nonzero = csr = int8 = 0
    for _, leaf in modules(model):
        layer = as_float_layer(leaf)  # one leaf at a time: a shared layer's float weight is built and dropped
        for attr in _array_fields(layer):
            arr = getattr(layer, attr)
            params += arr.size
            nz = int(np.count_nonzero(arr))
            nonzero += nz
            if attr == "weight" and arr.ndim >= 2:
                rows = arr.shape[0] if arr.ndim == 2 else arr.shape[-1]
                csr += nz * 8 + (rows + 1) * 4
                int8 += arr.size + 4 * rows
            else:
                csr += 4 * arr.size
                int8 += 4 * arr.size
    rep = SizeReport(params=params, nonzero=nonzero, fp32_dense=4 * params, sparse_csr=csr, int8=int8,
                     archive=archive_size(model))
    for form in SizeReport.FORMS:
        rep["ratio_" + form] = rep["fp32_dense"] / max(rep[form], 1)
    return rep
