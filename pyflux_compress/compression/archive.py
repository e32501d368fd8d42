"""The compressed archive: Deep Compression's storage form, with a versioned header and checksums.

``save_compressed(path, model)`` writes a model (float, pruned, weight-shared or quantized) as a ``.pfcz``
file; ``load_compressed(path)`` gives back the same model: every stored array bit-exact, the architecture
through Flux syntax, the layer kinds (``SharedDense``, ``QuantizedDense`` ...) and ``records``.
``size_report(model)`` compares bytes as fp32 dense, sparse CSR, int8 and this archive.

What is stored per layer
------------------------
* float layers: every array field (``flux_fields``: weight, bias, BatchNorm statistics ...). A weight with
  at least half zeros is stored *sparse* when that is smaller (measured): positions + nonzero float32 values;
  masks are stored as "nonzero of the weight" (a flag) or as their own position stream.
* ``SharedDense`` / ``SharedConv``: positions of the kept weights, the codebook ``index`` of each kept weight
  packed to ``bits`` bits, the float32 ``centroids``, the bias.
* ``QuantizedDense`` / ``QuantizedConv``: ``qweight`` stored as ``q - qmin`` symbols of
  ``bit_length(qmax - qmin)`` bits at the positions where ``q != zero point`` (or densely: whichever is smaller,
  tried when at least half the entries equal the zero point), ``w_scale``, ``w_zero_point``, bias, activation
  scale/zero point. The QAT *shadow* weight is training state and is not stored: on load
  ``float_layer.weight`` is the dequantized weight, so the loaded model's forward is bit-identical.

Positions ("relative index", Deep Compression sec. 3, improved): the flat positions ``p_0 < p_1 < ...`` of the
kept entries (in C order or in Fortran order — Julia's, where a Dense input's weights are contiguous — whichever
encodes smaller; the values of the array follow the same order) become gaps ``d_i = p_i - p_{i-1}``
(``p_{-1} = -1``). With ``b`` gap bits, ``M = 2^b - 1``: a gap is written as ``(d - 1) // M`` *skip* symbols
(value ``M`` = "advance M positions, no entry") followed by the symbol ``(d - 1) % M``. Unlike the paper's
filler zeros, skips carry no value. ``b`` is chosen per array by measuring every ``b`` in 2..8 and both orders,
and a plain bitmap is tried too; the smallest wins.

Entropy coding: every stream is a sequence of ``w``-bit unsigned symbols (float arrays: their little-endian
bytes, ``w = 8``). Each stream is encoded with every codec below and the smallest is kept (the header records
which): ``packed`` (bit-packed, MSB first), ``packed+zlib``, ``packed+lzma``, ``bytes+zlib`` / ``bytes+lzma``
(one byte per symbol, ``w <= 8``), ``huffman`` (canonical Huffman, code lengths <= 16, ``w <= 8``).
zlib = raw deflate (level 9, no zlib header); lzma = raw LZMA2 (preset 9, dictionary = the decoded length rounded
up to a power of two, 4 KiB .. 64 MiB). Huffman stream: uint16 U, then U pairs (symbol, code length) as bytes,
then the codes MSB first (canonical: codes assigned in (length, symbol) order), zero-padded to a byte.

Byte format (version 1; all integers little-endian)
---------------------------------------------------
======  ===========  =============================================================================
offset  size         content
======  ===========  =============================================================================
0       8            magic ``b"PFCZARCH"``
8       2            format version (uint16) = 1
10      2            flags (uint16): bit 0 = header is raw-deflate compressed; other bits 0 (reserved)
12      4            header length H (uint32, stored length)
16      H            header: UTF-8 JSON (architecture, chain class, records, layers, streams)
16+H    4            CRC32 of bytes [0, 16+H)
20+H    sum(lengths) payload: the streams, concatenated in header order
end-32  32           SHA-256 of every byte before it
======  ===========  =============================================================================

Each header stream entry: ``{"codec", "offset" (from payload start), "length", "n" (symbols), "width",
"crc32" (of the encoded bytes)}``. Any flipped byte changes the SHA-256: loading raises
:class:`ArchiveError` (a ``ValueError``) naming the damaged part (header, a stream, or the trailer).
Files are written atomically (temp file + ``os.replace``); loading never executes code (JSON + raw arrays).
"""
from __future__ import annotations

import hashlib
import heapq
import json
import lzma
import os
import struct
import zlib
from typing import Any

import numpy as np

from .._files import jsonable, write_atomic
from ..model.walk import map_layers, modules
from .quantize import QuantizedChain, QuantizedLayer, as_float_layer, dequantize_weight, qrange
from .sharing import SharedLayer

MAGIC = b"PFCZARCH"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
FLAG_HEADER_DEFLATE = 1  # flags bit 0: the header is raw-deflate compressed JSON
_PREFIX = struct.Struct("<8sHHI")  # magic, version, flags, header length
HUFFMAN_MAX_LEN = 16
SPARSE_MAX_DENSITY = 0.5  # sparse (positions + values) is only tried when at most half the entries are kept:
# with entropy coding a dense stream already pays ~H(zero/nonzero) per entry, so positions win only on long runs
SHORTLIST = 7  # gap widths fully encoded per position stream (after an entropy estimate)


class ArchiveError(ValueError):
    """A file that is not a valid pyflux-compress archive (bad magic, version, checksum, or content)."""


# --------------------------------------------------------------------------------------------------------------
# bit packing and symbol codecs
# --------------------------------------------------------------------------------------------------------------

def pack_bits(symbols: np.ndarray, width: int) -> bytes:
    """Pack unsigned ``symbols`` (each < 2**width) MSB-first into bytes."""
    s = np.asarray(symbols, dtype=np.uint32).ravel()
    if width == 8:
        return s.astype(np.uint8).tobytes()
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint32)
    bits = ((s[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def unpack_bits(data: bytes, n: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``n`` symbols of ``width`` bits (uint32)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if width == 8:
        if raw.size < n:
            raise ArchiveError("stream too short")
        return raw[:n].astype(np.uint32)
    bits = np.unpackbits(raw)
    if bits.size < n * width:
        raise ArchiveError("stream too short")
    bits = bits[:n * width].reshape(n, width).astype(np.uint32)
    return bits @ (np.uint32(1) << np.arange(width - 1, -1, -1, dtype=np.uint32))


def _huffman_lengths(freq: np.ndarray) -> np.ndarray:
    """Code lengths (<= HUFFMAN_MAX_LEN) for symbol frequencies; loops run over the alphabet (<= 256), not data."""
    freq = freq.astype(np.float64)
    used = np.flatnonzero(freq)
    lengths = np.zeros(freq.size, dtype=np.int64)
    if used.size == 1:
        lengths[used] = 1
        return lengths
    f = freq.copy()
    while True:
        heap = [(f[s], i, [int(s)]) for i, s in enumerate(used)]
        heapq.heapify(heap)
        depth = np.zeros(freq.size, dtype=np.int64)
        tie = len(heap)
        while len(heap) > 1:
            fa, _, a = heapq.heappop(heap)
            fb, _, b = heapq.heappop(heap)
            depth[a + b] += 1
            heapq.heappush(heap, (fa + fb, tie, a + b))
            tie += 1
        if depth.max() <= HUFFMAN_MAX_LEN:
            return depth
        # too deep: flatten the distribution (raise rare frequencies) and rebuild; costs very little
        f[used] = np.maximum(f[used], f[used].sum() / 2 ** (HUFFMAN_MAX_LEN - 2))


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman codes from code lengths (symbols ordered by (length, symbol))."""
    codes = np.zeros(lengths.size, dtype=np.int64)
    order = sorted((int(l), s) for s, l in enumerate(lengths) if l > 0)
    code, prev = 0, order[0][0]
    for i, (l, s) in enumerate(order):
        if i:
            code = (code + 1) << (l - prev)
        prev = l
        codes[s] = code
    return codes


def huffman_encode(symbols: np.ndarray) -> bytes:
    """Canonical Huffman over byte symbols. Layout: uint16 count U, U x (symbol, length) bytes, packed bits."""
    s = np.asarray(symbols, dtype=np.int64).ravel()
    lengths = _huffman_lengths(np.bincount(s, minlength=256))
    codes = _canonical_codes(lengths)
    used = np.flatnonzero(lengths)
    head = struct.pack("<H", used.size) + np.stack([used, lengths[used]], axis=1).astype(np.uint8).tobytes()
    ls, cs = lengths[s], codes[s]
    shifts = np.arange(HUFFMAN_MAX_LEN - 1, -1, -1)
    # bit j of a code sits at column HUFFMAN_MAX_LEN - len + j of the left-aligned code
    aligned = cs << (HUFFMAN_MAX_LEN - ls)
    bits = ((aligned[:, None] >> shifts) & 1).astype(np.uint8)
    keep = np.arange(HUFFMAN_MAX_LEN)[None, :] < ls[:, None]
    return head + np.packbits(bits[keep]).tobytes()


def huffman_decode(data: bytes, n: int) -> np.ndarray:
    """Vectorized canonical-Huffman decoding of ``n`` symbols.

    Every bit position gets the symbol/length a code starting there would decode to (a 16-bit window looked up
    in a table); the positions actually used form the chain ``p -> p + len(p)`` from 0, followed by pointer
    doubling (O(T log n) array operations, no Python loop over symbols).
    """
    if len(data) < 2:
        raise ArchiveError("huffman stream too short")
    (u,) = struct.unpack_from("<H", data, 0)
    table = np.frombuffer(data, dtype=np.uint8, count=2 * u, offset=2).reshape(u, 2).astype(np.int64)
    lengths = np.zeros(256, dtype=np.int64)
    lengths[table[:, 0]] = table[:, 1]
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    if u == 0 or lengths.max() > HUFFMAN_MAX_LEN:
        raise ArchiveError("bad huffman table")
    codes = _canonical_codes(lengths)
    L = HUFFMAN_MAX_LEN
    sym_of = np.zeros(1 << L, dtype=np.int64)
    len_of = np.zeros(1 << L, dtype=np.int64)
    used = np.flatnonzero(lengths)
    starts = codes[used] << (L - lengths[used])
    spans = np.int64(1) << (L - lengths[used])
    if int((starts + spans).max()) > (1 << L):
        raise ArchiveError("bad huffman table")
    idx = np.repeat(starts, spans) + (np.arange(int(spans.sum())) - np.repeat(np.cumsum(spans) - spans, spans))
    sym_of[idx] = np.repeat(used, spans)
    len_of[idx] = np.repeat(lengths[used], spans)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=2 + 2 * u)).astype(np.int64)
    T = bits.size
    padded = np.concatenate([bits, np.zeros(L, dtype=np.int64)])
    window = np.zeros(T, dtype=np.int64)
    for j in range(L):  # L vector operations over all bit positions
        window |= padded[j:j + T] << (L - 1 - j)
    step = len_of[window]
    nxt = np.append(np.where(step > 0, np.minimum(np.arange(T) + step, T), T), T)  # T = end sentinel
    positions = np.zeros(1, dtype=np.int64)
    jump = nxt
    while positions.size < n:
        positions = np.concatenate([positions, jump[positions]])
        jump = jump[jump]
    positions = positions[:n]
    if positions[-1] >= T or np.any(step[positions] == 0):
        raise ArchiveError("huffman stream truncated or corrupted")
    return sym_of[window[positions]].astype(np.uint32)


CODECS = ("packed", "packed+zlib", "packed+lzma", "bytes+zlib", "bytes+lzma", "huffman")
ENABLED_CODECS = CODECS  # what the writer may choose from (benchmarks restrict it to show each stage)


def _raw_len(n: int, width: int, codec: str) -> int:
    return n if codec.startswith("bytes") or width == 8 else (n * width + 7) // 8


def _lzma_filters(raw_len: int) -> list[dict[str, Any]]:
    # raw LZMA2 (no .xz container: saves ~60 bytes per stream); the dictionary only needs to cover the data,
    # and both sides derive it from the decoded length
    dict_size = 1 << max(12, min(26, (max(raw_len, 1) - 1).bit_length()))
    return [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": dict_size}]


def _zlib(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no zlib header/adler (6 bytes per stream)
    return c.compress(data) + c.flush()


def _unzlib(data: bytes) -> bytes:
    return zlib.decompress(data, -15)


def _lzma(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters(len(data)))


def _unlzma(data: bytes, raw_len: int) -> bytes:
    return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters(raw_len))


def encode_symbols(symbols: np.ndarray, width: int) -> tuple[str, bytes]:
    """Encode with every applicable codec and keep the smallest: returns ``(codec, bytes)``."""
    s = np.asarray(symbols).ravel()
    packed = pack_bits(s, width)
    cands = {"packed": packed, "packed+zlib": _zlib(packed), "packed+lzma": _lzma(packed)}
    if width <= 8 and s.size:
        if width < 8:
            by = s.astype(np.uint8).tobytes()
            cands["bytes+zlib"] = _zlib(by)
            cands["bytes+lzma"] = _lzma(by)
        cands["huffman"] = huffman_encode(s)
    cands = {k: v for k, v in cands.items() if k in ENABLED_CODECS} or {"packed": packed}
    codec = min(cands, key=lambda k: (len(cands[k]), CODECS.index(k)))
    return codec, cands[codec]


def decode_symbols(codec: str, data: bytes, n: int, width: int) -> np.ndarray:
    """Inverse of :func:`encode_symbols`."""
    try:
        if codec == "packed":
            return unpack_bits(data, n, width)
        if codec == "packed+zlib":
            return unpack_bits(_unzlib(data), n, width)
        if codec == "packed+lzma":
            return unpack_bits(_unlzma(data, _raw_len(n, width, codec)), n, width)
        if codec == "bytes+zlib":
            return unpack_bits(_unzlib(data), n, 8)
        if codec == "bytes+lzma":
            return unpack_bits(_unlzma(data, n), n, 8)
        if codec == "huffman":
            return huffman_decode(data, n)
    except (zlib.error, lzma.LZMAError, ValueError, IndexError, struct.error) as err:
        raise ArchiveError(f"cannot decode a {codec} stream: {err}") from None
    raise ArchiveError(f"unknown codec {codec!r} (this reader knows {CODECS})")


def entropy_bytes(symbols: np.ndarray) -> float:
    """Order-0 entropy of ``symbols`` in bytes: a cheap estimate used to shortlist encodings."""
    counts = np.bincount(np.asarray(symbols, dtype=np.int64).ravel())
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float(-(counts[counts > 0] * np.log2(p)).sum() / 8)


# --------------------------------------------------------------------------------------------------------------
# positions (relative index with skip symbols, or bitmap)
# --------------------------------------------------------------------------------------------------------------

def relative_index_symbols(positions: np.ndarray, gap_bits: int) -> np.ndarray:
    """Gap symbols for sorted flat ``positions`` with ``gap_bits``-bit gaps (skip symbol = 2**b - 1)."""
    M = (1 << gap_bits) - 1
    d = np.diff(np.asarray(positions, dtype=np.int64), prepend=-1)
    skips, rem = (d - 1) // M, (d - 1) % M
    counts = skips + 1  # each gap: `skips` skip symbols, then its remainder
    out = np.full(int(counts.sum()), M, dtype=np.uint32)
    out[np.cumsum(counts) - 1] = rem
    return out


def positions_from_symbols(symbols: np.ndarray, gap_bits: int) -> np.ndarray:
    """Inverse of :func:`relative_index_symbols`."""
    M = (1 << gap_bits) - 1
    s = np.asarray(symbols, dtype=np.int64)
    advance = np.where(s == M, M, s + 1)
    return (np.cumsum(advance) - 1)[s != M]


# --------------------------------------------------------------------------------------------------------------
# archive writer
# --------------------------------------------------------------------------------------------------------------

class _Writer:
    """Collects encoded streams and the JSON description of arrays."""

    def __init__(self) -> None:
        self.streams: list[dict[str, Any]] = []
        self.chunks: list[bytes] = []
        self.offset = 0

    def stream(self, name: str, symbols: np.ndarray, width: int) -> int:
        codec, data = encode_symbols(symbols, width)
        return self._add(name, codec, data, int(np.size(symbols)), width)

    def _add(self, name: str, codec: str, data: bytes, n: int, width: int) -> int:
        self.streams.append({"name": name, "codec": codec, "offset": self.offset, "length": len(data), "n": n,
                             "width": width, "crc32": zlib.crc32(data)})
        self.chunks.append(data)
        self.offset += len(data)
        return len(self.streams) - 1

    # -- array encodings --------------------------------------------------------------------------------
    def dense(self, name: str, arr: np.ndarray) -> dict[str, Any]:
        arr = np.asarray(arr)  # (not ascontiguousarray: it turns 0-d scales into shape (1,))
        le = arr.astype(arr.dtype.newbyteorder("<"))
        raw = np.frombuffer(le.tobytes(), dtype=np.uint8)
        return {"enc": "dense", "dtype": le.dtype.str, "shape": list(arr.shape), "stream": self.stream(name, raw, 8)}

    def positions(self, name: str, keep: np.ndarray) -> dict[str, Any]:
        """Positions of the True entries of ``keep``: the smallest of relative index (gap bits 2..8) and bitmap,
        each in C order and in Fortran order (Julia's; for a Dense ``(out, in)`` weight that groups each input's
        weights, so inputs pruned entirely become one long gap). Values must then be listed in ``desc["order"]``."""
        best: tuple[int, str, bytes, int, int, dict] | None = None
        for order in ("C", "F") if keep.ndim > 1 else ("C",):
            flat_keep = keep.ravel(order=order)
            flat = np.flatnonzero(flat_keep)
            # every gap width is measured (SHORTLIST = 7); the entropy estimate only orders the attempts
            syms = {b: relative_index_symbols(flat, b) for b in range(2, 9)}
            estimate = {b: min(sym.size * b / 8, entropy_bytes(sym)) for b, sym in syms.items()}
            for b in sorted(estimate, key=estimate.get)[:SHORTLIST]:
                codec, data = encode_symbols(syms[b], b)
                if best is None or len(data) < best[0]:
                    best = (len(data), codec, data, syms[b].size, b,
                            {"pos": "relative", "gap_bits": b, "order": order})
            codec, data = encode_symbols(flat_keep.astype(np.uint8), 1)
            if len(data) < best[0]:
                best = (len(data), codec, data, keep.size, 1, {"pos": "bitmap", "order": order})
        _, codec, data, n, width, desc = best
        return dict(desc, count=int(np.count_nonzero(keep)), stream=self._add(name, codec, data, n, width))

    def float_weight(self, name: str, arr: np.ndarray) -> dict[str, Any]:
        """A float array stored dense or sparse, whichever encodes smaller."""
        keep = arr != 0
        if keep.mean() > SPARSE_MAX_DENSITY:
            return self.dense(name, arr)
        return self.best(lambda w: w.dense(name, arr), lambda w: w.sparse(name, arr, keep))

    def sparse(self, name: str, arr: np.ndarray, keep: np.ndarray) -> dict[str, Any]:
        pos = self.positions(name + "/positions", keep)
        values = arr.ravel(order=pos["order"])[keep.ravel(order=pos["order"])]
        return {"enc": "sparse", "shape": list(arr.shape), "positions": pos,
                "values": self.dense(name + "/values", values)}

    def symbols_at(self, name: str, symbols: np.ndarray, width: int, keep: np.ndarray | None) -> dict[str, Any]:
        """An integer array: ``symbols`` (unsigned, ``width`` bits) where ``keep``, else a background value."""
        if keep is None:
            return {"enc": "symbols", "shape": list(symbols.shape), "width": width,
                    "stream": self.stream(name, symbols.ravel(), width)}
        pos = self.positions(name + "/positions", keep)
        values = symbols.ravel(order=pos["order"])[keep.ravel(order=pos["order"])]
        return {"enc": "symbols", "shape": list(symbols.shape), "width": width, "positions": pos,
                "stream": self.stream(name, values, width)}

    def adopt(self, sub: "_Writer", desc: dict[str, Any]) -> dict[str, Any]:
        """Append the streams of a scratch writer (used to measure alternatives) and re-index ``desc``."""
        base = len(self.streams)
        for st, chunk in zip(sub.streams, sub.chunks):
            self.streams.append(dict(st, offset=st["offset"] + self.offset))
            self.chunks.append(chunk)
        self.offset += sub.offset
        return _reindex(desc, base)

    def best(self, *alternatives: Any) -> dict[str, Any]:
        """Run each ``fn(writer) -> desc`` on a scratch writer; keep the smallest (measured, not estimated)."""
        results = []
        for fn in alternatives:
            sub = _Writer()
            results.append((sub, fn(sub)))
        sub, desc = min(results, key=lambda t: t[0].offset)
        return self.adopt(sub, desc)


def _reindex(desc: Any, base: int) -> Any:
    if isinstance(desc, dict):
        return {k: (v + base if k == "stream" else _reindex(v, base)) for k, v in desc.items()}
    return desc


def _float_chain(model: Any) -> Any:
    from ..model.chain import Chain

    return map_layers(lambda p, l: as_float_layer(l), model, as_type=Chain)


def _array_fields(layer: Any) -> list[str]:
    return [attr for attr in layer.flux_fields.values() if isinstance(getattr(layer, attr, None), np.ndarray)]


def _encode_float_layer(w: _Writer, path: str, layer: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": "float", "arrays": {}, "masks": {}}
    for attr in _array_fields(layer):
        arr = getattr(layer, attr)
        name = f"{path}.{attr}"
        entry["arrays"][attr] = w.float_weight(name, arr) if arr.ndim >= 2 else w.dense(name, arr)
    for pname, mask in (getattr(layer, "masks", None) or {}).items():
        mask = np.asarray(mask, dtype=bool)
        arr = getattr(layer, pname, None)
        if isinstance(arr, np.ndarray) and arr.shape == mask.shape and np.array_equal(mask, arr != 0):
            entry["masks"][pname] = {"enc": "nonzero"}
        else:
            entry["masks"][pname] = {"enc": "mask", "shape": list(mask.shape),
                                     "positions": w.positions(f"{path}.masks.{pname}", mask)}
    return entry


def _encode_shared(w: _Writer, path: str, layer: SharedLayer) -> dict[str, Any]:
    k = layer.centroids.size
    width = max(1, int(k - 1).bit_length())
    index = layer.index.astype(np.uint32)
    entry: dict[str, Any] = {"kind": "shared", "class": type(layer).__name__, "bits": layer.bits,
                             "index_dtype": layer.index.dtype.str,
                             "centroids": w.dense(f"{path}.centroids", layer.centroids), "arrays": {}}
    if np.all(index[~layer.mask] == 0):  # the normal case: index is 0 where pruned, so positions = mask
        entry["index"] = w.symbols_at(f"{path}.index", index, width, layer.mask)
    else:  # index set outside the mask too: store it densely and the mask on its own
        entry["index"] = w.symbols_at(f"{path}.index", index, width, None)
        entry["mask"] = {"enc": "mask", "shape": list(layer.mask.shape),
                         "positions": w.positions(f"{path}.mask", layer.mask)}
    base = layer.float_layer
    for attr in _array_fields(base):
        if attr != "weight":
            entry["arrays"][attr] = w.dense(f"{path}.{attr}", getattr(base, attr))
    return entry


def _encode_quantized(w: _Writer, path: str, layer: QuantizedLayer) -> dict[str, Any]:
    if layer._stale:
        layer.requantize()
    q = layer.qweight
    zp = np.asarray(layer.w_zero_point, dtype=np.int64)
    zpb = zp.reshape([-1 if a == (0 if q.ndim == 2 else q.ndim - 1) else 1 for a in range(q.ndim)]) \
        if zp.ndim else zp
    background = np.broadcast_to(zpb, q.shape)
    width = max(1, int(layer.qmax - layer.qmin).bit_length())
    sym = (q.astype(np.int64) - layer.qmin).astype(np.uint32)
    keep = q != background

    def enc(wr: _Writer, sparse: bool) -> dict[str, Any]:
        return wr.symbols_at(f"{path}.qweight", sym, width, keep if sparse else None)

    entry: dict[str, Any] = {
        "kind": "quantized", "class": type(layer).__name__, "bits": layer.bits, "scheme": layer.scheme,
        "granularity": layer.granularity,
        "qweight": (w.best(lambda wr: enc(wr, True), lambda wr: enc(wr, False))
                    if keep.mean() <= SPARSE_MAX_DENSITY else enc(w, False)),
        "w_scale": w.dense(f"{path}.w_scale", np.asarray(layer.w_scale, dtype=np.float32)),
        "w_zero_point": w.dense(f"{path}.w_zero_point", np.asarray(layer.w_zero_point, dtype=np.int32)),
        "act": None, "arrays": {}, "masks": {}}
    if layer.calibrated:
        entry["act"] = {"scale": float(layer.act_scale), "zero_point": int(layer.act_zero_point),
                        "qmin": int(layer.act_qmin), "qmax": int(layer.act_qmax), "method": layer.method}
    base = layer.float_layer
    for attr in _array_fields(base):
        if attr != "weight":
            entry["arrays"][attr] = w.dense(f"{path}.{attr}", getattr(base, attr))
    for pname, mask in (base.masks or {}).items():
        entry["masks"][pname] = {"enc": "mask", "shape": list(np.shape(mask)),
                                 "positions": w.positions(f"{path}.masks.{pname}", np.asarray(mask, bool))}
    return entry


def encode_archive(model: Any) -> bytes:
    """The archive bytes of ``model`` (what :func:`save_compressed` writes)."""
    w = _Writer()
    layers = []
    for path, layer in modules(model):
        if isinstance(layer, QuantizedLayer):
            entry = _encode_quantized(w, path, layer)
        elif isinstance(layer, SharedLayer):
            entry = _encode_shared(w, path, layer)
        else:
            entry = _encode_float_layer(w, path, layer)
        layers.append(dict(entry, path=path))
    header = {"format": "pyflux-compress archive", "version": VERSION,
              "architecture": str(_float_chain(model)),
              "chain_class": "QuantizedChain" if isinstance(model, QuantizedChain) else "Chain",
              "records": jsonable(getattr(model, "records", [])),
              "layers": layers, "streams": w.streams}
    hbytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    flags = 0
    deflated = _zlib(hbytes)
    if len(deflated) < len(hbytes):  # the JSON header compresses ~4x (it was ~14% of a LeNet archive)
        hbytes, flags = deflated, FLAG_HEADER_DEFLATE
    head = _PREFIX.pack(MAGIC, VERSION, flags, len(hbytes)) + hbytes
    body = head + struct.pack("<I", zlib.crc32(head)) + b"".join(w.chunks)
    return body + hashlib.sha256(body).digest()


def _check_path(path: Any, name: str = "path") -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name} must be a file path (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)


def save_compressed(path: str | os.PathLike, model: Any) -> int:
    """Write ``model`` as a compressed archive (atomically). Returns the number of bytes written.

    ``model`` may be a float/pruned Chain, a weight-shared Chain (``share_weights``) or a ``QuantizedChain``.
    """
    path = _check_path(path)
    if not hasattr(model, "layers"):
        raise ValueError(f"model must be a Chain, got {type(model).__name__}")
    data = encode_archive(model)
    write_atomic(path, data)
    return len(data)


# --------------------------------------------------------------------------------------------------------------
# archive reader
# --------------------------------------------------------------------------------------------------------------

class _Reader:
    def __init__(self, payload: bytes, streams: list[dict[str, Any]], where: str) -> None:
        self.payload, self.streams, self.where = payload, streams, where

    def symbols(self, i: int) -> np.ndarray:
        s = self.streams[i]
        data = self.payload[s["offset"]:s["offset"] + s["length"]]
        return decode_symbols(s["codec"], data, s["n"], s["width"])

    def dense(self, d: dict[str, Any]) -> np.ndarray:
        dtype = np.dtype(d["dtype"])
        if dtype.kind not in "fiub":
            raise ArchiveError(f"{self.where}: unsupported dtype {d['dtype']!r}")
        raw = self.symbols(d["stream"]).astype(np.uint8).tobytes()
        shape = tuple(d["shape"])
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
        return arr.astype(dtype.newbyteorder("="))

    def positions(self, d: dict[str, Any], size: int) -> np.ndarray:
        sym = self.symbols(d["stream"])
        flat = np.flatnonzero(sym) if d["pos"] == "bitmap" else positions_from_symbols(sym, d["gap_bits"])
        if d.get("order") not in ("C", "F"):
            raise ArchiveError(f"{self.where}: bad position order {d.get('order')!r}")
        if flat.size != d["count"] or (flat.size and (flat[-1] >= size or flat[0] < 0)):
            raise ArchiveError(f"{self.where}: position stream inconsistent with its shape")
        return flat

    def float_array(self, d: dict[str, Any]) -> np.ndarray:
        if d["enc"] == "dense":
            return self.dense(d)
        values = self.dense(d["values"])
        shape = tuple(d["shape"])
        out = np.zeros(int(np.prod(shape)), dtype=values.dtype)
        out[self.positions(d["positions"], out.size)] = values
        return out.reshape(shape, order=d["positions"]["order"])

    def symbols_at(self, d: dict[str, Any], background: np.ndarray) -> np.ndarray:
        shape = tuple(d["shape"])
        sym = self.symbols(d["stream"]).astype(np.int64)
        if "positions" not in d:
            return sym.reshape(shape)
        order = d["positions"]["order"]
        out = np.array(np.broadcast_to(background, shape), dtype=np.int64).ravel(order=order)
        out[self.positions(d["positions"], out.size)] = sym
        return out.reshape(shape, order=order)

    def mask(self, d: dict[str, Any]) -> np.ndarray:
        shape = tuple(d["shape"])
        m = np.zeros(int(np.prod(shape)), dtype=bool)
        m[self.positions(d["positions"], m.size)] = True
        return m.reshape(shape, order=d["positions"]["order"])


def _read_header(raw: bytes, flags: int) -> dict[str, Any]:
    if flags & ~FLAG_HEADER_DEFLATE:
        raise ArchiveError(f"unknown header flags {flags:#06x}")
    if flags & FLAG_HEADER_DEFLATE:
        raw = _unzlib(raw)
    return json.loads(raw.decode("utf-8"))


def _diagnose(data: bytes) -> str:
    """Which part of a file with a bad SHA-256 is damaged (best effort, never raises)."""
    try:
        magic, version, flags, hlen = _PREFIX.unpack_from(data, 0)
        end = _PREFIX.size + hlen
        (crc,) = struct.unpack_from("<I", data, end)
        if zlib.crc32(data[:end]) != crc:
            return "the header (CRC32 mismatch)"
        header = _read_header(data[_PREFIX.size:end], flags)
        base = end + 4
        for s in header["streams"]:
            chunk = data[base + s["offset"]:base + s["offset"] + s["length"]]
            if zlib.crc32(chunk) != s["crc32"]:
                return f"stream {s['name']!r} (CRC32 mismatch)"
        return "the SHA-256 trailer or the file length"
    except Exception:  # noqa: BLE001 - diagnosis of garbage must not raise
        return "the file prefix/header"


def decode_archive(data: bytes, where: str = "archive") -> Any:
    """Rebuild the model from archive bytes; :class:`ArchiveError` for anything invalid."""
    from ..model.chain import Chain
    from ..model.syntax import parse

    if len(data) < _PREFIX.size + 4 + 32 or data[:8] != MAGIC:
        raise ArchiveError(f"{where}: not a pyflux-compress archive (bad magic or too short; expected a file "
                           f"written by save_compressed)")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ArchiveError(f"{where}: checksum mismatch (SHA-256): the file is corrupted; damaged part: "
                           f"{_diagnose(data)}")
    _, version, flags, hlen = _PREFIX.unpack_from(data, 0)
    if version not in SUPPORTED_VERSIONS:
        raise ArchiveError(f"{where}: archive format version {version} is not supported by this reader "
                           f"(supports {SUPPORTED_VERSIONS}); upgrade pyflux-compress")
    end = _PREFIX.size + hlen
    try:
        header = _read_header(data[_PREFIX.size:end], flags)
        payload = data[end + 4:-32]
        model = parse(header["architecture"])
        reader = _Reader(payload, header["streams"], where)
        leaves = list(modules(model))
        if len(leaves) != len(header["layers"]):
            raise ArchiveError(f"{where}: {len(header['layers'])} layer entries for {len(leaves)} layers")
        replace: dict[str, Any] = {}
        for (path, layer), entry in zip(leaves, header["layers"]):
            replace[path] = _decode_layer(reader, layer, entry)
        cls = QuantizedChain if header["chain_class"] == "QuantizedChain" else Chain
        out = map_layers(lambda p, l: replace[p], model, as_type=cls)
        out.records = header["records"]
        return out
    except ArchiveError:
        raise
    except Exception as err:  # noqa: BLE001 - a valid checksum over invalid content: still a clear error
        raise ArchiveError(f"{where}: archive content is invalid ({type(err).__name__}: {err})") from None


def _decode_layer(r: _Reader, layer: Any, e: dict[str, Any]) -> Any:
    from .quantize import QuantizedConv, QuantizedDense
    from .sharing import SharedConv, SharedDense

    for attr, d in e.get("arrays", {}).items():
        setattr(layer, attr, r.float_array(d))
    if e["kind"] == "float":
        for pname, d in e["masks"].items():
            layer.masks[pname] = (getattr(layer, pname) != 0) if d["enc"] == "nonzero" else r.mask(d)
        return layer
    if e["kind"] == "shared":
        centroids = r.dense(e["centroids"])
        idx = r.symbols_at(e["index"], np.zeros(1, dtype=np.int64))
        if "mask" in e:
            mask = r.mask(e["mask"])
        else:
            mask = r.mask({"shape": e["index"]["shape"], "positions": e["index"]["positions"]})
        cls = {"SharedDense": SharedDense, "SharedConv": SharedConv}[e["class"]]
        layer.weight = np.zeros(idx.shape, dtype=centroids.dtype)
        return cls(layer, centroids, idx.astype(np.dtype(e["index_dtype"])), mask, e["bits"])
    if e["kind"] == "quantized":
        cls = {"QuantizedDense": QuantizedDense, "QuantizedConv": QuantizedConv}[e["class"]]
        scale = r.dense(e["w_scale"])
        zp = r.dense(e["w_zero_point"])
        qmin, _ = qrange(e["bits"], e["scheme"])
        nd = len(e["qweight"]["shape"])
        axis = 0 if nd == 2 else nd - 1
        zpb = zp.reshape([-1 if a == axis else 1 for a in range(nd)]) if zp.ndim else zp
        sym = r.symbols_at(e["qweight"], zpb.astype(np.int64) - qmin)
        q = (sym + qmin).astype(np.int8)
        layer.weight = dequantize_weight(q, scale, zp).astype(np.float32)
        for pname, d in e["masks"].items():
            layer.masks[pname] = r.mask(d)
        ql = cls(layer, e["bits"], e["scheme"], e["granularity"])
        # the stored integers are authoritative (requantizing the dequantized weight could differ in a tie)
        ql.set_integer_weights(q, scale, zp)
        if e["act"] is not None:
            a = e["act"]
            ql.act_scale, ql.act_zero_point = np.float32(a["scale"]), np.int32(a["zero_point"])
            ql.act_qmin, ql.act_qmax, ql.method = a["qmin"], a["qmax"], a["method"]
        return ql
    raise ArchiveError(f"{r.where}: unknown layer kind {e['kind']!r}")


def load_compressed(path: str | os.PathLike) -> Any:
    """Read an archive written by :func:`save_compressed`; returns the model (Chain or QuantizedChain).

    Raises
    ------
    ArchiveError (a ValueError) for a corrupted, truncated, foreign or newer-version file, naming the file
    and the damaged part. FileNotFoundError if the file does not exist.
    """
    path = _check_path(path)
    with open(path, "rb") as f:
        data = f.read()
    return decode_archive(data, where=path)


# --------------------------------------------------------------------------------------------------------------
# size report
# --------------------------------------------------------------------------------------------------------------

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
    """Bytes of ``model`` as fp32 dense, sparse CSR, int8 and the compressed archive (see :class:`SizeReport`)."""
    if not hasattr(model, "layers"):
        raise ValueError(f"model must be a Chain, got {type(model).__name__}")
    flt = _float_chain(model)
    params = nonzero = csr = int8 = 0
    for _, layer in modules(flt):
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
                     archive=len(encode_archive(model)))
    for form in SizeReport.FORMS:
        rep["ratio_" + form] = rep["fp32_dense"] / max(rep[form], 1)
    return rep
