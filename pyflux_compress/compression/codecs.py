"""General-purpose codecs for byte and symbol streams (no archive semantics here; ``archive.py`` owns the format).

* **zstd** (the ``zstandard`` package): the entropy coder of format version 2. Its literal stage is a
  Huffman coder with code lengths <= 11 bits, re-tabled every 128 KiB block, so on near-i.i.d. symbols (integer
  codes, position gaps) its size is predicted well by :func:`huffman_bytes` of the symbol histogram, which the
  archive uses to *choose* an encoding without trying each one. :func:`zstd_level` picks the level: matches
  rarely pay off on such data, so big streams use the fast level and only small ones the slow, thorough one.
* **bit packing** (:func:`pack_bits`): ``w``-bit unsigned symbols, MSB first; beats the entropy coder when the
  symbols are close to uniform over ``2**w`` values (e.g. 4-bit codebook indices).
* **byte shuffle** (:func:`shuffle_bytes`): the k-th bytes of every ``itemsize``-byte element grouped together,
  so a float32 stream's sign/exponent bytes (low entropy) are coded apart from its mantissa bytes.
* **delta-coded positions** (:func:`gap_symbols`): sorted flat positions as gaps with a *skip* symbol for long
  gaps; with 8-bit gaps this is one byte per kept entry (plus one per 255 skipped positions).
* Version-1 codecs, kept to read old archives: raw deflate, raw LZMA2, canonical Huffman (:func:`huffman_decode`)
  and :func:`decode_v1` (their encoders, needed only to test these readers, live in tests/_v1_codecs.py).

Every decoder is bounded: the caller states how many bytes/symbols it expects, and no decoder produces more
(a decompression bomb raises :class:`CodecError` instead of allocating). Errors are :class:`CodecError`
(a ``ValueError``); ``archive.py`` turns them into ``ArchiveError`` naming the file.
"""
from __future__ import annotations

import heapq
import lzma
import struct
import zlib
from typing import Any

import numpy as np

__all__ = ["CodecError", "container_bits", "pack_bits", "unpack_bits", "shuffle_bytes", "unshuffle_bytes",
           "unshuffle_blocks", "gap_symbols", "gap_positions", "gap_histogram", "huffman_lengths", "huffman_bytes",
           "canonical_codes", "huffman_decode", "zstd_level", "zstd_compressor", "zstd_decompress", "V1_CODECS",
           "lzma_filters", "decode_v1", "ZSTD_FAST_LEVEL", "ZSTD_SMALL_LEVEL", "ZSTD_SMALL_BYTES",
           "ZSTD_HUFFMAN_MAX_LEN"]

ZSTD_FAST_LEVEL = 1  # measured on 90%-pruned int8 codes/gaps/bitmaps: levels 3-9 were *larger* (spurious matches)
ZSTD_SMALL_LEVEL = 19
ZSTD_SMALL_BYTES = 64 * 1024  # streams up to this size get the thorough level (a few ms each)
ZSTD_HUFFMAN_MAX_LEN = 11  # zstd's literal Huffman code length limit: the estimate must use the same limit
HUFFMAN_MAX_LEN = 16  # version-1 Huffman streams


class CodecError(ValueError):
    """A stream that cannot be decoded (corrupted, truncated, or larger than its stated size)."""


# --------------------------------------------------------------------------------------------------------------
# bit packing, byte shuffle
# --------------------------------------------------------------------------------------------------------------

def container_bits(width: int) -> int | None:
    """The smallest of 1, 2, 4, 8 bits that holds a ``width``-bit code (None above 8): codes packed this way
    stay aligned to bytes (8 / c per byte), so a byte-level entropy coder sees whole codes."""
    for c in (1, 2, 4, 8):
        if width <= c:
            return c
    return None


def pack_bits(symbols: np.ndarray, width: int) -> bytes:
    """Pack unsigned ``symbols`` (each < 2**width, width 1..32) MSB-first into bytes, zero-padded to a byte."""
    s = np.asarray(symbols).ravel()
    if width == 8:
        return s.astype(np.uint8).tobytes()
    if width == 1:
        return np.packbits(s.astype(bool)).tobytes()
    if width in (2, 4):  # whole codes per byte: shifts instead of a bit matrix
        per = 8 // width
        pad = (-s.size) % per
        b = np.concatenate([s.astype(np.uint8), np.zeros(pad, np.uint8)]) if pad else s.astype(np.uint8)
        b = b.reshape(-1, per)
        out = np.zeros(b.shape[0], dtype=np.uint8)
        for j in range(per):
            out |= b[:, j] << np.uint8(8 - width * (j + 1))
        return out.tobytes()
    s = s.astype(np.uint32)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint32)
    out = []
    step = 1 << 18  # chunks a multiple of 8 symbols: bounds the (n, width) bit temporary
    for i in range(0, max(s.size, 1), step):
        bits = ((s[i:i + step, None] >> shifts) & 1).astype(np.uint8)
        out.append(bits.ravel())
    return np.packbits(np.concatenate(out)).tobytes() if out else b""


def unpack_bits(data: bytes, n: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``n`` symbols of ``width`` bits (uint32). CodecError if ``data`` is short."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size * 8 < n * width:
        raise CodecError(f"bit-packed stream too short: {raw.size} bytes for {n} symbols of {width} bits")
    if width == 8:
        return raw[:n].astype(np.uint32)
    if width == 1:
        return np.unpackbits(raw, count=n).astype(np.uint32)
    if width in (2, 4):
        per = 8 // width
        shifts = np.arange(8 - width, -1, -width, dtype=np.uint8)
        codes = (raw[:(n + per - 1) // per, None] >> shifts) & np.uint8((1 << width) - 1)
        return codes.reshape(-1)[:n].astype(np.uint32)
    bits = np.unpackbits(raw, count=n * width).reshape(n, width).astype(np.uint32)
    return bits @ (np.uint32(1) << np.arange(width - 1, -1, -1, dtype=np.uint32))


def shuffle_bytes(arr: np.ndarray) -> bytes:
    """Little-endian bytes of ``arr`` (C order) grouped by byte index: all first bytes, then all second ..."""
    le = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False)
    k = le.dtype.itemsize
    return le.reshape(-1).view(np.uint8).reshape(-1, k).T.tobytes() if k > 1 else le.tobytes()


def unshuffle_bytes(data: bytes | bytearray | memoryview, dtype: np.dtype, n: int) -> np.ndarray:
    """Inverse of :func:`shuffle_bytes`: ``n`` elements of little-endian ``dtype`` (native byte order out)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    k = dtype.itemsize
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != n * k:
        raise CodecError(f"value stream holds {raw.size} bytes, expected {n} x {k}")
    flat = raw.reshape(k, n).T.copy() if k > 1 else raw.copy()
    return flat.view(dtype).reshape(n).astype(dtype.newbyteorder("="), copy=False)


def unshuffle_blocks(data: bytes | bytearray | memoryview, dtype: np.dtype, n: int, block: int) -> np.ndarray:
    """Inverse of :func:`shuffle_bytes` applied to consecutive blocks of ``block`` elements (last one shorter)."""
    dtype = np.dtype(dtype)
    k = dtype.itemsize
    raw = memoryview(data)
    if raw.nbytes != n * k:
        raise CodecError(f"value stream holds {raw.nbytes} bytes, expected {n} x {k}")
    if k == 1 or n <= block:
        return unshuffle_bytes(raw, dtype, n)
    out = np.empty(n, dtype=dtype.newbyteorder("="))
    for i in range(0, n, block):
        m = min(block, n - i)
        out[i:i + m] = unshuffle_bytes(raw[i * k:(i + m) * k], dtype, m)
    return out


# --------------------------------------------------------------------------------------------------------------
# delta-coded positions ("relative index" with skip symbols)
# --------------------------------------------------------------------------------------------------------------

def gap_symbols(positions: np.ndarray, gap_bits: int = 8, start: int = -1) -> np.ndarray:
    """Gap symbols for sorted flat ``positions`` (uint8 for ``gap_bits <= 8``, else uint32).

    With ``M = 2**gap_bits - 1`` and gaps ``d_i = p_i - p_{i-1}`` (``p_{-1} = start``), a gap is written as
    ``(d - 1) // M`` skip symbols (value ``M`` = "advance M positions, no entry") followed by ``(d - 1) % M``.
    """
    M = (1 << gap_bits) - 1
    d = np.diff(np.asarray(positions, dtype=np.int64), prepend=start) - 1
    skips, rem = d // M, d % M
    counts = skips + 1  # each gap: `skips` skip symbols, then its remainder
    out = np.full(int(counts.sum()), M, dtype=np.uint8 if gap_bits <= 8 else np.uint32)
    out[np.cumsum(counts) - 1] = rem
    return out


def gap_positions(symbols: np.ndarray, gap_bits: int = 8, start: int = -1) -> np.ndarray:
    """Inverse of :func:`gap_symbols` (int64 positions)."""
    M = (1 << gap_bits) - 1
    s = np.asarray(symbols)
    # int32 arithmetic when the positions fit (half the memory traffic of int64 on a large decode)
    dtype = np.int32 if s.size * (M + 1) + abs(start) < 2 ** 31 else np.int64
    advance = s.astype(dtype)
    advance += 1
    skips = s == M
    any_skip = bool(skips.any())
    if any_skip:
        advance[skips] = M
    pos = np.cumsum(advance, dtype=dtype)
    pos += dtype(start)
    return pos[~skips] if any_skip else pos


def gap_histogram(positions: np.ndarray, start: int = -1) -> np.ndarray:
    """Histogram (256 bins) of the 8-bit :func:`gap_symbols` of ``positions``, without building them."""
    d = np.diff(np.asarray(positions, dtype=np.int64), prepend=start) - 1
    hist = np.bincount(d % 255, minlength=256)
    hist[255] += int((d // 255).sum())
    return hist


# --------------------------------------------------------------------------------------------------------------
# Huffman: code lengths (the size estimate), and the version-1 stream codec
# --------------------------------------------------------------------------------------------------------------

def huffman_lengths(freq: np.ndarray, max_len: int = HUFFMAN_MAX_LEN) -> np.ndarray:
    """Code lengths (<= ``max_len``) for symbol frequencies; loops run over the alphabet (<= 256), not the data."""
    freq = np.asarray(freq, dtype=np.float64)
    used = np.flatnonzero(freq)
    lengths = np.zeros(freq.size, dtype=np.int64)
    if used.size == 1:
        lengths[used] = 1
        return lengths
    if used.size == 0:
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
        if depth.max() <= max_len:
            return depth
        # too deep: flatten the distribution (raise rare frequencies) and rebuild; costs very little
        f[used] = np.maximum(f[used], f[used].sum() / 2 ** (max_len - 2))


def huffman_bytes(hist: np.ndarray, max_len: int = ZSTD_HUFFMAN_MAX_LEN) -> int:
    """Bytes a Huffman coder with code lengths <= ``max_len`` needs for symbols with histogram ``hist``.

    The cheap size estimate behind the archive's choices: one pass over a 256-bin histogram instead of
    compressing each candidate. Unlike the order-0 entropy it sees that no code is shorter than one bit (a
    bitmap whose bytes are mostly 0x00 costs >= 1 bit per byte), which is what decides bitmap vs gaps.
    """
    hist = np.asarray(hist, dtype=np.int64)
    if hist.sum() == 0:
        return 0
    return int((hist * huffman_lengths(hist, max_len)).sum() + 7) // 8


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
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


def huffman_decode(data: bytes, n: int) -> np.ndarray:
    """Vectorized canonical-Huffman decoding of ``n`` symbols (version 1).

    Every bit position gets the symbol/length a code starting there would decode to (a 16-bit window looked up
    in a table); the positions actually used form the chain ``p -> p + len(p)`` from 0, followed by pointer
    doubling (O(T log n) array operations, no Python loop over symbols). ``n`` must not exceed the number of
    bits (each symbol takes >= 1 bit): checked first, so a huge ``n`` costs nothing.
    """
    if len(data) < 2:
        raise CodecError("huffman stream too short")
    (u,) = struct.unpack_from("<H", data, 0)
    if u > 256 or len(data) < 2 + 2 * u:
        raise CodecError("bad huffman table")
    table = np.frombuffer(data, dtype=np.uint8, count=2 * u, offset=2).reshape(u, 2).astype(np.int64)
    lengths = np.zeros(256, dtype=np.int64)
    lengths[table[:, 0]] = table[:, 1]
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    if u == 0 or lengths.max() > HUFFMAN_MAX_LEN:
        raise CodecError("bad huffman table")
    if n > 8 * (len(data) - 2 - 2 * u):
        raise CodecError(f"huffman stream too short for {n} symbols")
    codes = canonical_codes(lengths)
    L = HUFFMAN_MAX_LEN
    sym_of = np.zeros(1 << L, dtype=np.int64)
    len_of = np.zeros(1 << L, dtype=np.int64)
    used = np.flatnonzero(lengths)
    starts = codes[used] << (L - lengths[used])
    spans = np.int64(1) << (L - lengths[used])
    if int((starts + spans).max()) > (1 << L):
        raise CodecError("bad huffman table")
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
        raise CodecError("huffman stream truncated or corrupted")
    return sym_of[window[positions]].astype(np.uint32)


# --------------------------------------------------------------------------------------------------------------
# zstd
# --------------------------------------------------------------------------------------------------------------

def zstd_level(raw_bytes: int) -> int:
    """The zstd level for a stream of ``raw_bytes``: thorough for small streams, fast for big ones."""
    return ZSTD_SMALL_LEVEL if raw_bytes <= ZSTD_SMALL_BYTES else ZSTD_FAST_LEVEL


def zstd_compressor(raw_bytes: int) -> Any:
    """A ``zstandard`` compression object for a stream of ``raw_bytes`` (declared, so zstd sizes its tables
    and window to the data: bounded memory even at level 19)."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=zstd_level(raw_bytes), write_checksum=False)
    return cctx.compressobj(size=raw_bytes)


def zstd_decompress(data: bytes | memoryview, size: int) -> bytearray:
    """Decompress one zstd frame that must hold exactly ``size`` bytes; never produces more (bomb-safe).

    Reads through a bounded stream reader: ``ZstdDecompressor.decompress`` would trust the frame's declared
    content size and allocate it before looking at the data.
    """
    import io

    import zstandard

    out = bytearray(size)
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=False)
        view, got = memoryview(out), 0
        while got < size:
            k = reader.readinto(view[got:])
            if not k:
                break
            got += k
        extra = reader.read(1) if got == size else b""
    except zstandard.ZstdError as err:
        raise CodecError(f"zstd stream cannot be decoded to its stated {size:,} bytes: {err}") from None
    if got != size or extra:
        raise CodecError(f"zstd stream decodes to {'more than ' if extra else ''}{got:,} bytes, header says {size:,}")
    return out


# --------------------------------------------------------------------------------------------------------------
# version-1 stream codecs (read old archives)
# --------------------------------------------------------------------------------------------------------------

V1_CODECS = ("packed", "packed+zlib", "packed+lzma", "bytes+zlib", "bytes+lzma", "huffman")


def lzma_filters(raw_len: int) -> list[dict[str, Any]]:
    # raw LZMA2; both sides derive the dictionary size from the decoded length
    dict_size = 1 << max(12, min(26, (max(raw_len, 1) - 1).bit_length()))
    return [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": dict_size}]


def _inflate(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(-15)
    out = d.decompress(data, limit)
    if d.unconsumed_tail:
        raise CodecError(f"deflate stream expands past its stated {limit:,} bytes")
    return out


def _unlzma(data: bytes, raw_len: int) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=lzma_filters(raw_len))
    out = d.decompress(data, max_length=raw_len)
    if not d.needs_input and not d.eof and len(out) >= raw_len and d.decompress(b"", max_length=1):
        raise CodecError(f"lzma stream expands past its stated {raw_len:,} bytes")
    return out


def decode_v1(codec: str, data: bytes, n: int, width: int) -> np.ndarray:
    """Decode a version-1 stream of ``n`` symbols of ``width`` bits; output bounded by ``n`` and ``width``."""
    if not 1 <= width <= 32:
        raise CodecError(f"symbol width {width} out of range 1..32")
    try:
        if codec == "huffman":
            return huffman_decode(data, n)
        if codec in V1_CODECS:  # "<packing>[+<deflate or lzma>]": packed at width bits, or one symbol a byte
            packing, _, method = codec.partition("+")
            raw_len = n if packing == "bytes" or width == 8 else (n * width + 7) // 8
            raw = _inflate(data, raw_len) if method == "zlib" else _unlzma(data, raw_len) if method == "lzma" else data
            return unpack_bits(raw, n, 8 if packing == "bytes" else width)
    except CodecError:
        raise
    except (zlib.error, lzma.LZMAError, ValueError, IndexError, struct.error) as err:
        raise CodecError(f"cannot decode a {codec} stream: {err}") from None
    raise CodecError(f"unknown codec {codec!r} (version 1 knows {V1_CODECS})")
