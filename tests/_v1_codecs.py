"""Version-1 archive stream *encoders*: the package only reads version 1 (``codecs.decode_v1``), so the
writers that the reader tests need live here, beside the tests."""
from __future__ import annotations

import lzma
import struct
import zlib

import numpy as np

from pyflux_compress.compression.codecs import (HUFFMAN_MAX_LEN, canonical_codes, huffman_lengths, lzma_filters,
                                                pack_bits)


def huffman_encode(symbols: np.ndarray) -> bytes:
    """Canonical Huffman over byte symbols (version 1). Layout: uint16 count U, U x (symbol, length), the bits."""
    s = np.asarray(symbols, dtype=np.int64).ravel()
    lengths = huffman_lengths(np.bincount(s, minlength=256))
    codes = canonical_codes(lengths)
    used = np.flatnonzero(lengths)
    head = struct.pack("<H", used.size) + np.stack([used, lengths[used]], axis=1).astype(np.uint8).tobytes()
    ls, cs = lengths[s], codes[s]
    shifts = np.arange(HUFFMAN_MAX_LEN - 1, -1, -1)
    # bit j of a code sits at column HUFFMAN_MAX_LEN - len + j of the left-aligned code
    aligned = cs << (HUFFMAN_MAX_LEN - ls)
    bits = ((aligned[:, None] >> shifts) & 1).astype(np.uint8)
    keep = np.arange(HUFFMAN_MAX_LEN)[None, :] < ls[:, None]
    return head + np.packbits(bits[keep]).tobytes()


def encode_v1(symbols: np.ndarray, width: int, codec: str) -> bytes:
    """Encode with one version-1 codec (version 2 writers never produce these)."""
    s = np.asarray(symbols).ravel()
    if codec == "huffman":
        return huffman_encode(s)
    data = s.astype(np.uint8).tobytes() if codec.startswith("bytes") else pack_bits(s, width)
    if codec.endswith("zlib"):
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if codec.endswith("lzma"):
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=lzma_filters(len(data)))
    return data
