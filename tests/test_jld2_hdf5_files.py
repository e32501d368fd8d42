"""Generic HDF5 files written by h5py (the HDF5 C library) read equal to h5py's own values.

Covers the reader gaps of issue 14: chunked layouts (version 3 with a version-1 B-tree; version 4/5 with
fixed-array, extensible-array, version-2 B-tree and implicit indexes), the filter pipeline (deflate, shuffle, Fletcher-32,
and JLD2's bzip2/LZ4/Zstd framings), fixed-length strings of every padding type, and datasets that were
never written (fill value, as HDF5 defines). Our arrays are Julia-shaped: h5py's transposed.
"""
from __future__ import annotations

import bz2
import struct

import numpy as np
import pytest

from pyflux_compress.io import jld2
from pyflux_compress.io.jld2 import JLD2FormatError

h5py = pytest.importorskip("h5py")

LIBVERS = ["earliest", ("v108", "v108"), "latest"]
RNG = np.random.default_rng(0)


def _check_all(path):
    """Every dataset of ``path``: ours == h5py's (transposed for arrays; strings decoded)."""
    ours = jld2.load(path)
    with h5py.File(path, "r") as f:
        assert sorted(ours) == sorted(f)
        for name in f:
            theirs = f[name][()]
            mine = ours[name]
            if isinstance(theirs, bytes):
                assert mine == theirs.decode(), name
            elif theirs.dtype.kind == "S":
                assert mine.T.tolist() == [[x.decode() for x in row] for row in theirs.tolist()] \
                    if theirs.ndim == 2 else mine.tolist() == [x.decode() for x in theirs.tolist()], name
            else:
                assert isinstance(mine, np.ndarray) and mine.dtype == theirs.dtype, name
                np.testing.assert_array_equal(mine, theirs.T, err_msg=name)
    return ours


@pytest.mark.parametrize("libver", LIBVERS, ids=str)
def test_chunked_and_compressed_datasets_equal_h5py(tmp_path, libver):
    p = tmp_path / "chunked.h5"
    a = RNG.standard_normal((23, 37)).astype(np.float32)
    with h5py.File(p, "w", libver=libver) as f:
        f.create_dataset("plain", data=a, chunks=(5, 8))                      # edge chunks overhang
        f.create_dataset("deflate", data=a, chunks=(7, 11), compression="gzip", compression_opts=9)
        f.create_dataset("shuffle", data=np.arange(999, dtype="<i8").reshape(27, 37), chunks=(4, 9),
                         compression="gzip", shuffle=True, fletcher32=True)
        f.create_dataset("btree2", data=a.astype("<f8"), chunks=(6, 7), maxshape=(None, None),
                         compression="gzip")                                   # B-tree v2 under 'latest'
        f.create_dataset("btree2_plain", data=a, chunks=(6, 7), maxshape=(None, None))
        f.create_dataset("many", data=np.arange(3600, dtype="<i4").reshape(60, 60), chunks=(1, 1),
                         maxshape=(None, None))                                # deep index trees
        f.create_dataset("many_paged", data=np.arange(3000, dtype="<u2").reshape(3000), chunks=(1,))

        f.create_dataset("cube", data=np.arange(4 * 5 * 6, dtype="u1").reshape(4, 5, 6), chunks=(3, 2, 4),
                         compression="gzip")
    _check_all(p)


@pytest.mark.parametrize("libver", LIBVERS, ids=str)
def test_one_unlimited_dimension_equals_h5py(tmp_path, libver):
    """One unlimited dimension: the extensible-array index under 'latest' (a B-tree v1 otherwise)."""
    p = tmp_path / "earray.h5"
    a = RNG.standard_normal((23, 37)).astype(np.float32)
    with h5py.File(p, "w", libver=libver) as f:
        f.create_dataset("earray", data=a, chunks=(4, 5), maxshape=(None, 37), compression="gzip")
        f.create_dataset("earray_t", data=a, chunks=(4, 5), maxshape=(23, None))
        f.create_dataset("earray_wide", data=a, chunks=(4, 5), maxshape=(None, 60))       # max grid > grid
        f.create_dataset("earray_big", data=np.arange(5000, dtype="<i4").reshape(2500, 2), chunks=(1, 1),
                         maxshape=(None, 2))                                   # secondary blocks, pages
        g = f.create_dataset("earray_sparse", shape=(40, 6), dtype="<i2", chunks=(3, 2), maxshape=(None, 6),
                             fillvalue=-7)
        g[30:33, 2:4] = 5
    _check_all(p)
    if libver == "latest":
        raw = p.read_bytes()
        assert raw.count(b"EAHD") == 5 and b"EASB" in raw


def test_btree_v2_index_really_used(tmp_path):
    """Guard that 'latest' files exercise the B-tree v2 (with internal nodes) and fixed-array indexes."""
    from pyflux_compress.io.jld2._chunks import parse_layout
    from pyflux_compress.io.jld2._hdf5 import MSG_LAYOUT
    from pyflux_compress.io.jld2._reader import Reader

    p = tmp_path / "idx.h5"
    a = np.arange(3600.0).reshape(60, 60)
    with h5py.File(p, "w", libver="latest") as f:
        f.create_dataset("bt2", data=a, chunks=(1, 1), maxshape=(None, None))
        f.create_dataset("fa", data=a, chunks=(1, 1))
    data = p.read_bytes()
    r = Reader(data)
    kinds = {}
    for name, addr in r.h5.links(r.h5.root).items():
        m = r.h5.header(addr).first(MSG_LAYOUT)
        kinds[name] = parse_layout(r.buf, m.pos, m.size).chunked.index
    assert kinds == {"bt2": "btree2", "fa": "fixed"}
    assert data.count(b"BTIN") >= 1                      # an internal B-tree v2 node: depth >= 1
    out = jld2.loads(data)
    np.testing.assert_array_equal(out["bt2"], a.T)
    np.testing.assert_array_equal(out["fa"], a.T)


@pytest.mark.parametrize("libver", LIBVERS, ids=str)
def test_fixed_length_strings_by_padding(tmp_path, libver):
    p = tmp_path / "strings.h5"
    words = [b"ab", b"cde", b"", b"fghijk"]
    with h5py.File(p, "w", libver=libver) as f:
        for pad, label in [(h5py.h5t.STR_NULLTERM, "nullterm"), (h5py.h5t.STR_NULLPAD, "nullpad"),
                           (h5py.h5t.STR_SPACEPAD, "spacepad")]:
            tid = h5py.h5t.C_S1.copy()
            tid.set_size(6)
            tid.set_strpad(pad)
            space = h5py.h5s.create_simple((len(words),))
            ds = h5py.h5d.create(f.id, label.encode(), tid, space)
            ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(words, dtype="S6"))
            sspace = h5py.h5s.create(h5py.h5s.SCALAR)
            sc = h5py.h5d.create(f.id, f"{label}_scalar".encode(), tid, sspace)
            sc.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(b"xy", dtype="S6"))
    ours = _check_all(p)
    assert ours["spacepad"].tolist() == ["ab", "cde", "", "fghijk"]      # padding removed, per the spec
    assert ours["spacepad_scalar"] == "xy"
    raw = p.read_bytes()
    assert b"ab    " in raw                                               # really stored space-padded


@pytest.mark.parametrize("libver", LIBVERS, ids=str)
def test_unallocated_datasets_read_as_fill_value(tmp_path, libver):
    p = tmp_path / "unalloc.h5"
    with h5py.File(p, "w", libver=libver) as f:
        f.create_dataset("contig", shape=(3, 4), dtype="f4", fillvalue=2.5)
        f.create_dataset("contig_zero", shape=(2, 5), dtype="i2")
        f.create_dataset("chunked", shape=(5, 6), dtype="f8", chunks=(2, 2), fillvalue=-1.0)
        d = f.create_dataset("partial", shape=(6, 6), dtype="i4", chunks=(3, 3), fillvalue=7)
        d[0:3, 3:6] = np.arange(10, 19).reshape(3, 3)                      # one of four chunks written
    out = _check_all(p)
    assert (out["contig"] == 2.5).all() and out["contig"].shape == (4, 3)
    assert (out["partial"] == 7).sum() == 27


def test_fill_values_count_against_the_budget(tmp_path):
    """A never-written dataset costs its size in fill values: charged to the budget (default for a tiny
    file: 16 MiB + 64x its size), so 64 MiB declared by a 2 KB file is refused unless max_bytes allows it."""
    p = tmp_path / "big.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("huge", shape=(1 << 13, 1 << 10), dtype="f8")       # 64 MiB, nothing stored
    assert p.stat().st_size < 4096
    with pytest.raises(JLD2FormatError, match=f"{p}.*over the limit.*max_bytes"):
        jld2.load(p)
    out = jld2.load(p, max_bytes=64 << 20)["huge"]
    assert out.shape == (1 << 10, 1 << 13) and not out.any()


# ------------------------------------------------------------------ JLD2's own filters (bzip2, LZ4, Zstd)
def test_bzip2_filter_bounded():
    from pyflux_compress.io.jld2._chunks import Filter, unfilter
    blob = np.arange(1000, dtype="<f4").tobytes()
    assert unfilter(bz2.compress(blob), [Filter(307, (9,))], 0, len(blob), 4, 0) == blob
    with pytest.raises(JLD2FormatError, match="exceeds|decodes"):
        unfilter(bz2.compress(blob * 2), [Filter(307, (9,))], 0, len(blob), 4, 0)


def test_zstd_and_lz4_filters():
    from pyflux_compress.io.jld2._chunks import Filter, unfilter
    blob = np.arange(5000, dtype="<f8").tobytes()
    zstandard = pytest.importorskip("zstandard")
    assert unfilter(zstandard.ZstdCompressor().compress(blob), [Filter(32015, ())], 0, len(blob), 8, 0) == blob
    lz4 = pytest.importorskip("lz4.block")
    import lz4.frame
    # HDF5 LZ4 framing (JLD2 >= 0.5 via ChunkCodecLibLz4's LZ4HDF5): u64 BE total, u32 BE block size, blocks
    block = 16384
    parts = [struct.pack(">QI", len(blob), block)]
    for i in range(0, len(blob), block):
        piece = blob[i:i + block]
        c = lz4.block.compress(piece, store_size=False)
        parts += [struct.pack(">I", len(c)), c]
    assert unfilter(b"".join(parts), [Filter(32004, (block,))], 0, len(blob), 8, 0) == blob
    assert unfilter(lz4.frame.compress(blob), [Filter(32004, ())], 0, len(blob), 8, 0) == blob   # JLD2 0.4
