"""Compressed archive: codecs, relative positions, exact round trips, corruption detection, size report."""
from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.compression import archive as ar
from pyflux_compress.compression import codecs as C
from _v1_codecs import encode_v1, huffman_encode

SMALL = "Chain(Dense(30 => 24, relu), Dense(24 => 12, tanh), Dense(12 => 5))"


# ---------------------------------------------------------------------------------------------------------
# building blocks


@pytest.mark.parametrize("width", [1, 2, 3, 5, 7, 8, 11])
def test_pack_bits_round_trip(rng, width):
    s = rng.integers(0, 2 ** width, 1001)
    data = C.pack_bits(s, width)
    assert len(data) == (1001 * width + 7) // 8
    np.testing.assert_array_equal(C.unpack_bits(data, 1001, width), s)


@pytest.mark.parametrize("case", ["uniform", "skewed", "single", "two", "tiny"])
def test_huffman_round_trip(rng, case):
    s = {"uniform": rng.integers(0, 256, 5000),
         "skewed": np.minimum(rng.geometric(0.2, 20000) - 1, 255),
         "single": np.full(300, 7),
         "two": rng.integers(0, 2, 999) * 200,
         "tiny": np.array([3])}[case]
    data = huffman_encode(s)
    np.testing.assert_array_equal(C.huffman_decode(data, s.size), s)


def test_huffman_beats_raw_on_skewed_symbols(rng):
    s = np.minimum(rng.geometric(0.5, 20000) - 1, 255)  # entropy ~2 bits/symbol
    assert len(huffman_encode(s)) < 0.3 * s.size


@pytest.mark.parametrize("codec", C.V1_CODECS)
def test_each_version_1_codec_round_trips(rng, codec):
    s = np.minimum(rng.geometric(0.3, 3000) - 1, 31)
    data = encode_v1(s, 5, codec)
    np.testing.assert_array_equal(C.decode_v1(codec, data, s.size, 5), s)


@pytest.mark.parametrize("codec", ["packed+zlib", "bytes+zlib", "packed+lzma", "bytes+lzma"])
def test_version_1_decoders_refuse_streams_larger_than_stated(codec):
    data = encode_v1(np.zeros(100_000, np.uint8), 1, codec)  # a few hundred bytes that inflate 100x
    with pytest.raises(C.CodecError):
        C.decode_v1(codec, data, 1000, 1)


def test_huffman_estimate_predicts_zstd(rng):
    """The cheap rule: the Huffman size from a histogram is within a few % of zstd's output on i.i.d. bytes."""
    for p in (0.05, 0.3):
        bitmap = np.packbits(rng.random(400_000) < p)
        est = C.huffman_bytes(np.bincount(bitmap, minlength=256))
        enc = C.zstd_compressor(bitmap.size)
        real = len(enc.compress(bitmap.tobytes()) + enc.flush())
        assert abs(real - est) < 0.05 * est


def test_zstd_decoder_is_bomb_safe():
    enc = C.zstd_compressor(50_000_000)
    bomb = b"".join(enc.compress(bytes(5_000_000)) for _ in range(10)) + enc.flush()
    assert len(bomb) < 10_000
    with pytest.raises(C.CodecError, match="more than"):
        C.zstd_decompress(bomb, 1000)  # would allocate 50 MB if the frame's content size were trusted
    with pytest.raises(C.CodecError):
        C.zstd_decompress(bomb[:-10], 50_000_000)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint8])
def test_shuffle_round_trip(rng, dtype):
    a = (rng.normal(size=3000) * 100).astype(dtype)
    np.testing.assert_array_equal(C.unshuffle_bytes(C.shuffle_bytes(a), a.dtype, a.size), a)
    blocks = b"".join(C.shuffle_bytes(a[i:i + 1024]) for i in range(0, a.size, 1024))
    np.testing.assert_array_equal(C.unshuffle_blocks(blocks, a.dtype, a.size, 1024), a)


@pytest.mark.parametrize("gap_bits", [2, 3, 4, 8])
def test_relative_index_round_trip_with_long_gaps(gap_bits):
    positions = np.array([0, 1, 2, 9, 10, 300, 301, 5000, 5015, 5016])
    sym = C.gap_symbols(positions, gap_bits)
    assert sym.max() <= 2 ** gap_bits - 1
    np.testing.assert_array_equal(C.gap_positions(sym, gap_bits), positions)
    # the skip symbol (2**b - 1) stands for long gaps; no value is stored for it
    assert np.count_nonzero(sym != 2 ** gap_bits - 1) == positions.size
    if gap_bits == 8:
        np.testing.assert_array_equal(C.gap_histogram(positions), np.bincount(sym, minlength=256))


# ---------------------------------------------------------------------------------------------------------
# round trips


def _arrays(model):
    out = {}
    for path, layer in model.walk():
        for name, value in vars(layer).items():
            if isinstance(value, np.ndarray):
                out[f"{path}.{name}"] = value
        fl = getattr(layer, "float_layer", None)
        if fl is not None and not hasattr(layer, "qweight"):  # shared: bias lives on the template
            out[f"{path}.bias"] = fl.bias
        for k, m in getattr(layer, "masks", {}).items():
            out[f"{path}.masks.{k}"] = np.asarray(m)
    return out


def _assert_same(a, b, X):
    assert type(a) is type(b) and str(a) == str(b)
    aa, bb = _arrays(a), _arrays(b)
    assert aa.keys() == bb.keys()
    for k in aa:
        assert aa[k].dtype == bb[k].dtype and aa[k].shape == bb[k].shape, k
        np.testing.assert_array_equal(aa[k], bb[k], err_msg=k)
    np.testing.assert_array_equal(a(X), b(X))


@pytest.fixture
def small():
    return pfc.parse(SMALL, seed=5)


@pytest.fixture
def X30(rng):
    return rng.normal(size=(40, 30)).astype(np.float32)


@pytest.mark.parametrize("kind", ["float", "pruned", "shared", "q8_affine_calibrated", "q4_pruned", "binary",
                                  "mixed"])
def test_round_trip_exact(tmp_path, small, X30, kind):
    model = {
        "float": lambda: small,
        "pruned": lambda: pfc.prune(small, 0.7),
        "shared": lambda: pfc.share_weights(pfc.prune(small, 0.6), bits=4),
        "q8_affine_calibrated": lambda: pfc.quantize(small, 8, "affine", "per_channel", calibration=X30),
        "q4_pruned": lambda: pfc.quantize(pfc.prune(small, 0.8), 4, "symmetric", "per_tensor"),
        "binary": lambda: pfc.quantize(small, 1, granularity="per_channel"),
        "mixed": lambda: pfc.quantize(small, {0: 4, 2: 8}, calibration=X30, method="percentile"),
    }[kind]()
    path = tmp_path / "m.pfcz"
    n = pfc.save_compressed(path, model)
    assert os.path.getsize(path) == n
    back = pfc.load_compressed(path)
    _assert_same(model, back, X30)
    assert back.records == model.records


def test_round_trip_conv_batchnorm(tmp_path, rng):
    model = pfc.parse("Chain(Conv((3, 3), 1 => 4, relu), BatchNorm(4), MaxPool((2, 2)), flatten, Dense(36 => 3))",
                      seed=1)
    X = rng.random((6, 1, 8, 8)).astype(np.float32)
    pfc.fit(model, X, rng.integers(0, 3, 6), epochs=1, batchsize=3, progress=False)  # running stats move
    for m in (pfc.prune(model, 0.5), pfc.quantize(model, 8, granularity="per_channel", calibration=X),
              pfc.share_weights(model, bits=3)):
        pfc.save_compressed(tmp_path / "c.pfcz", m)
        _assert_same(m, pfc.load_compressed(tmp_path / "c.pfcz"), X)


def test_trained_pruned_shared_model_is_small_and_exact(tmp_path, trained_mlp, fmnist_flat):
    _, _, Xte, _ = fmnist_flat
    s = pfc.share_weights(pfc.prune(trained_mlp, 0.9, scope="global"), bits=5)
    rep = pfc.size_report(s)
    assert rep["archive"] < rep["sparse_csr"] < rep["fp32_dense"]
    assert rep["ratio_archive"] > 25  # 10% weights, 5-bit indices, positions entropy-coded
    pfc.save_compressed(tmp_path / "s.pfcz", s)
    _assert_same(s, pfc.load_compressed(tmp_path / "s.pfcz"), Xte[:200])


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path, small):
    path = tmp_path / "m.pfcz"
    path.write_bytes(b"old content")
    pfc.save_compressed(str(path), small)
    assert sorted(os.listdir(tmp_path)) == ["m.pfcz"]
    assert path.read_bytes()[:8] == ar.MAGIC


# ---------------------------------------------------------------------------------------------------------
# corruption


def test_every_flipped_byte_is_detected(tmp_path, small, rng):
    model = pfc.share_weights(pfc.prune(small, 0.5), bits=3)
    path = tmp_path / "m.pfcz"
    pfc.save_compressed(path, model)
    data = path.read_bytes()
    positions = set(rng.choice(len(data), size=min(150, len(data)), replace=False).tolist())
    positions |= {0, 8, 12, 16, len(data) // 2, len(data) - 33, len(data) - 1}
    bad = tmp_path / "bad.pfcz"
    for pos in sorted(positions):
        corrupted = bytearray(data)
        corrupted[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(corrupted))
        with pytest.raises(ar.ArchiveError, match="bad.pfcz"):
            pfc.load_compressed(bad)


def test_flipping_any_byte_of_a_small_archive_is_detected(tmp_path):
    """Exhaustive: every byte position of a (tiny) archive, flipped, gives ArchiveError."""
    model = pfc.quantize(pfc.parse("Chain(Dense(4 => 3, relu), Dense(3 => 2))", seed=0), 4)
    data = ar.encode_archive(model)
    assert ar.decode_archive(data) is not None
    for pos in range(len(data)):
        corrupted = bytearray(data)
        corrupted[pos] ^= 0x10
        with pytest.raises(ar.ArchiveError):
            ar.decode_archive(bytes(corrupted))


def test_error_names_the_damaged_stream(tmp_path, small):
    path = tmp_path / "m.pfcz"
    pfc.save_compressed(path, small)
    data = bytearray(path.read_bytes())
    last = _header(bytes(data))["streams"][-1]
    data[12 + last["offset"] + last["length"] // 2] ^= 0xFF  # inside the last stream of the payload
    path.write_bytes(bytes(data))
    with pytest.raises(ar.ArchiveError, match="stream 'layers\\[3\\]"):
        pfc.load_compressed(path)


def _header(data: bytes) -> dict:
    """The JSON header of a version-2 archive (it sits after the payload, before the 52-byte trailer)."""
    return ar.archive_header(data)


def test_truncated_foreign_and_future_files(tmp_path, small):
    path = tmp_path / "m.pfcz"
    pfc.save_compressed(path, small)
    data = path.read_bytes()
    for content, pattern in [(data[:100], "checksum"), (data[:10], "not a pyflux-compress archive"),
                             (b"PK\x03\x04" + data[4:], "not a pyflux-compress archive"), (b"", "not a")]:
        path.write_bytes(content)
        with pytest.raises(ar.ArchiveError, match=pattern):
            pfc.load_compressed(path)
    # a well-formed file from a future format version: clear message, not a crash
    body = bytearray(data[:-32])
    struct.pack_into("<H", body, 8, 99)
    path.write_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())
    with pytest.raises(ar.ArchiveError, match="version 99"):
        pfc.load_compressed(path)
    assert issubclass(ar.ArchiveError, ValueError)


def test_bad_arguments(tmp_path, small):
    with pytest.raises(ValueError, match="path"):
        pfc.save_compressed(123, small)
    with pytest.raises(ValueError, match="model"):
        pfc.save_compressed(tmp_path / "x.pfcz", "nope")
    with pytest.raises(ValueError, match="directory"):
        pfc.save_compressed(tmp_path / "missing" / "x.pfcz", small)
    with pytest.raises(FileNotFoundError):
        pfc.load_compressed(tmp_path / "absent.pfcz")


# ---------------------------------------------------------------------------------------------------------
# size report


def test_size_report_values(small):
    rep = pfc.size_report(small)
    n = sum(l.weight.size + l.bias.size for _, l in small.walk() if hasattr(l, "weight"))
    assert rep["params"] == n and rep["fp32_dense"] == 4 * n
    rows = [30, 24, 12]
    outs = [24, 12, 5]
    assert rep["int8"] == sum(o * i + 4 * o + 4 * o for i, o in zip(rows, outs))
    assert rep["archive"] == len(ar.encode_archive(small))
    pruned = pfc.prune(small, 0.9)
    rp = pfc.size_report(pruned)
    assert rp["sparse_csr"] < rep["sparse_csr"] and rp["archive"] < rep["archive"]
    text = repr(rp)
    for form in ("fp32_dense", "sparse_csr", "int8", "archive"):
        assert form in text


# ---------------------------------------------------------------------------------------------------------
# compatibility: archives written by earlier format versions still load, bit for bit

DATA = os.path.join(os.path.dirname(__file__), "data")
V1_VARIANTS = ["pruned", "q8_affine_pruned", "q4_symmetric", "shared4_pruned", "cnn_q8_pruned"]


@pytest.mark.parametrize("variant", V1_VARIANTS)
def test_version_1_archives_still_load(variant):
    """tests/data/archive_v1/*.pfcz were written by the version-1 writer (make_fixtures.py); expected.npz holds
    every array of each model and its output on a fixed input."""
    folder = os.path.join(DATA, "archive_v1")
    path = os.path.join(folder, f"{variant}.pfcz")
    with open(path, "rb") as f:
        assert struct.unpack_from("<H", f.read(10), 8)[0] == 1  # really a version-1 file
    with np.load(os.path.join(folder, "expected.npz")) as npz:
        expected = {k.split("/", 1)[1]: npz[k] for k in npz.files if k.startswith(variant + "/")}
    model = pfc.load_compressed(path)
    got = _arrays(model)
    want = {k: v for k, v in expected.items() if k not in ("input", "output")}
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    np.testing.assert_array_equal(model(expected["input"]), expected["output"])


# ---------------------------------------------------------------------------------------------------------
# hostile archives: validated and budgeted before anything is built or decoded; only ArchiveError escapes


def _repack(data: bytes, header: dict, payload: bytes | None = None) -> bytes:
    """A version-2 archive with ``header`` (and ``payload``) and valid CRC/SHA-256: only content checks can fail."""
    import json
    import zlib

    import zstandard

    plen = struct.unpack_from("<Q", data, len(data) - 52)[0]
    payload = data[12:12 + plen] if payload is None else payload
    raw = json.dumps(header).encode()
    hbytes = zstandard.ZstdCompressor().compress(raw)
    body = data[:12] + payload + hbytes
    body += struct.pack("<QIII", len(payload), len(hbytes), len(raw), zlib.crc32(hbytes, zlib.crc32(data[:12])))
    return body + hashlib.sha256(body).digest()


def _peak_kib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_header_naming_a_huge_architecture_fails_fast_without_allocating(tmp_path, small):
    """Issue 15: Dense(20000 => 20000) twice in the header with tiny arrays cost 12 s and 3 GB."""

    data = ar.encode_archive(small)
    h = _header(data)
    h["architecture"] = "Chain(Dense(20000 => 20000, relu), Dense(20000 => 20000, tanh), Dense(12 => 5))"
    path = tmp_path / "huge.pfcz"
    path.write_bytes(_repack(data, h))
    before = _peak_kib()
    # refused either by parse's size bound (max_params) or by the arrays-vs-architecture check
    with pytest.raises(ar.ArchiveError, match=r"huge\.pfcz.*(do not match|max_params)"):
        pfc.load_compressed(path)
    assert _peak_kib() - before < 100_000  # KiB: nothing near the 3.2 GB the weights would take
    # (the time of such cases is measured in benchmarks/fuzz_archive.py, not asserted here)


@pytest.mark.parametrize("key, value", [("bits", 2 ** 31), ("bits", 0), ("bits", "8"), ("scheme", "exotic"),
                                        ("class", "os.system")])
def test_hostile_quantized_fields_are_refused(tmp_path, small, key, value):

    q = pfc.quantize(pfc.prune(small, 0.5), 8)
    data = ar.encode_archive(q)
    h = _header(data)
    h["layers"][0][key] = value
    with pytest.raises(ar.ArchiveError, match=key):  # refused by the header check, before any decoding
        ar.decode_archive(_repack(data, h))


def test_stream_sizes_must_match_their_arrays(small):
    data = ar.encode_archive(pfc.prune(small, 0.8))
    for field, value in [("size", 10 ** 12), ("offset", 10 ** 9), ("length", 10 ** 9), ("codec", "lzma")]:
        h = _header(data)
        h["streams"][0][field] = value
        with pytest.raises(ar.ArchiveError, match="invalid archive"):
            ar.decode_archive(_repack(data, h))
    h = _header(data)
    h["layers"][0]["arrays"]["weight"]["shape"] = [24, 31]  # the architecture says (24, 30)
    with pytest.raises(ar.ArchiveError):
        ar.decode_archive(_repack(data, h))


def test_zstd_bomb_stream_is_refused_before_inflating(tmp_path):
    """A stream whose zstd frame expands to 200 MB, declared as the few bytes its array needs."""
    import zstandard

    model = pfc.parse("Chain(Dense(4 => 3))", seed=0)
    data = ar.encode_archive(model)
    h = _header(data)
    cobj = zstandard.ZstdCompressor(level=1).compressobj(size=200_000_000)
    bomb = b"".join(cobj.compress(bytes(10_000_000)) for _ in range(20)) + cobj.flush()
    bias = h["layers"][0]["arrays"]["bias"]["stream"]
    plen = struct.unpack_from("<Q", data, len(data) - 52)[0]
    payload = data[12:12 + plen] + bomb
    h["streams"][bias].update(codec="zstd", offset=plen, length=len(bomb), crc32=__import__("zlib").crc32(bomb))
    path = tmp_path / "bomb.pfcz"
    path.write_bytes(_repack(data, h, payload))
    before = _peak_kib()
    with pytest.raises(ar.ArchiveError, match=r"bomb\.pfcz.*more than"):
        pfc.load_compressed(path)
    assert _peak_kib() - before < 50_000


def test_decoding_budget_keyword_and_environment(tmp_path, small, monkeypatch):
    path = tmp_path / "m.pfcz"
    pfc.save_compressed(path, small)
    with pytest.raises(ar.ArchiveError, match="max_bytes=.*PYFLUX_ARCHIVE_MAX_BYTES"):
        pfc.load_compressed(path, max_bytes=1000)
    monkeypatch.setenv(ar.MAX_BYTES_ENV, "1000")
    with pytest.raises(ar.ArchiveError, match="more than 1,000 bytes"):
        pfc.load_compressed(path)
    assert str(pfc.load_compressed(path, max_bytes=10 ** 7)) == str(small)  # the keyword wins
    monkeypatch.setenv(ar.MAX_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match="PYFLUX_ARCHIVE_MAX_BYTES"):
        pfc.load_compressed(path)
    monkeypatch.delenv(ar.MAX_BYTES_ENV)
    for bad in (0, -5, 1.5, "10", True):
        with pytest.raises(ValueError, match="max_bytes"):
            pfc.load_compressed(path, max_bytes=bad)


def test_only_archive_error_escapes_from_mutated_headers(small, rng):
    """Random edits of header values (with valid checksums): every failure is an ArchiveError."""
    data = ar.encode_archive(pfc.share_weights(pfc.prune(small, 0.6), bits=3))
    base = _header(data)
    leaves = []

    def walk(obj, path):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, path + [k])
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, path + [i])
        else:
            leaves.append(path)

    walk(base, [])
    replacements = [-1, 0, 1, 2 ** 31, 2 ** 64, 1e300, None, "x", [], {}, True, [10 ** 6] * 3]
    import copy

    for trial in range(150):
        h = copy.deepcopy(base)
        path = leaves[int(rng.integers(len(leaves)))]
        node = h
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = replacements[int(rng.integers(len(replacements)))]
        try:
            ar.decode_archive(_repack(data, h))
        except ar.ArchiveError:
            pass


def test_missing_file_is_an_archive_error_and_a_file_not_found_error(tmp_path):
    with pytest.raises(ar.ArchiveNotFoundError, match="absent.pfcz"):
        pfc.load_compressed(tmp_path / "absent.pfcz")
    assert issubclass(ar.ArchiveNotFoundError, FileNotFoundError)
    assert issubclass(ar.ArchiveNotFoundError, ar.ArchiveError)
    with pytest.raises(ar.ArchiveError, match="cannot"):
        pfc.load_compressed(tmp_path)  # a folder


def test_version_1_hostile_bits_is_refused_fast(small):
    """Issue 15: a version-1 header with bits = 2**31 kept the loader busy > 20 s."""
    import json
    import zlib

    with open(os.path.join(DATA, "archive_v1", "q4_symmetric.pfcz"), "rb") as f:
        data = f.read()
    _, _, flags, hlen = struct.unpack_from("<8sHHI", data, 0)
    header = json.loads(zlib.decompress(data[16:16 + hlen], -15))
    header["layers"][0]["bits"] = 2 ** 31
    raw = json.dumps(header).encode()
    head = struct.pack("<8sHHI", b"PFCZARCH", 1, 0, len(raw)) + raw
    body = head + struct.pack("<I", zlib.crc32(head)) + data[16 + hlen + 4:-32]
    with pytest.raises(ar.ArchiveError, match="bits"):  # refused by the header check, before 2**(2**31) is computed
        ar.decode_archive(body + hashlib.sha256(body).digest())


def test_without_entropy_coding_the_archive_is_larger_and_still_exact(small, X30):
    m = pfc.share_weights(pfc.prune(small, 0.8), bits=4)
    raw = ar.encode_archive(m, entropy_coding=False)
    assert {s["codec"] for s in ar.archive_header(raw)["streams"]} == {"raw"}
    assert len(raw) == ar.archive_size(m, entropy_coding=False) > ar.archive_size(m)
    _assert_same(m, ar.decode_archive(raw), X30)


def test_archive_size_equals_written_bytes_and_zeros(tmp_path, small):
    m = pfc.prune(small, 0.7)
    w = m[0].weight
    w[~m[0].masks["weight"]] = -0.0  # a pruned weight multiplied by its mask can be -0.0: background all the same
    kept = np.flatnonzero(m[0].masks["weight"].ravel())[:2]
    w.reshape(-1)[kept] = [-0.0, np.nan]  # kept values round-trip bit for bit
    path = tmp_path / "z.pfcz"
    assert ar.archive_size(m) == pfc.save_compressed(path, m) == os.path.getsize(path)
    back = pfc.load_compressed(path)[0]
    assert np.array_equal(back.weight, w, equal_nan=True)
    assert np.signbit(back.weight.reshape(-1)[kept[0]]) and np.isnan(back.weight.reshape(-1)[kept[1]])
    assert not np.signbit(back.weight[~m[0].masks["weight"]]).any()  # pruned zeros come back as +0.0
    assert ar.archive_size(m) < ar.archive_size(pfc.prune(small, 0.3))


@pytest.mark.parametrize("shape, per_channel", [((7, 5), True), ((7, 5), False), ((3, 3, 2, 4), True)])
def test_in_place_dequantize_equals_the_quantize_module(rng, shape, per_channel):
    from pyflux_compress.compression.quantize import dequantize_weight

    q = rng.integers(-128, 128, shape).astype(np.int8)
    c = shape[0] if len(shape) == 2 else shape[-1]
    scale = (rng.random(c if per_channel else ()) * 0.1).astype(np.float32)
    zp = rng.integers(-5, 5, c if per_channel else ()).astype(np.int32)
    want = dequantize_weight(q, scale, zp)
    got = ar._dequantize(q, scale, zp)
    assert got.dtype == want.dtype and np.array_equal(got.view(np.uint32), want.view(np.uint32))


def _kept_zero(model, path_index=0):
    """A copy whose first layer has a kept (mask True) weight that is exactly 0: mask != nonzero pattern."""
    m = model.copy()
    layer = m[path_index]
    w = layer.weight
    kept = np.flatnonzero(np.asarray(layer.masks["weight"]).ravel())
    w.reshape(-1)[kept[:3]] = 0.0
    return m


@pytest.mark.parametrize("kind", ["float64", "no_bias", "shared_10bit", "kept_zero_float", "kept_zero_quantized",
                                  "dense_quantized_with_mask", "conv_pruned_shared", "fortran_ordered"])
def test_round_trip_edge_cases(tmp_path, small, X30, rng, kind):
    conv = "Chain(Conv((3, 3), 2 => 5, relu), flatten, Dense(180 => 4))"
    X = X30
    if kind == "float64":
        model = pfc.prune(small, 0.6).astype(np.float64)
        X = X30.astype(np.float64)
    elif kind == "no_bias":
        model = pfc.prune(pfc.parse("Chain(Dense(30 => 16, relu; bias=false), Dense(16 => 3))", seed=2), 0.5)
    elif kind == "shared_10bit":
        model = pfc.share_weights(pfc.parse("Chain(Dense(30 => 64, relu), Dense(64 => 5))", seed=3), bits=10)
    elif kind == "kept_zero_float":
        model = _kept_zero(pfc.prune(small, 0.7))
    elif kind == "kept_zero_quantized":
        model = pfc.quantize(_kept_zero(pfc.prune(small, 0.7)), 8, "affine", "per_channel")
    elif kind == "fortran_ordered":  # as loaded from a JLD2 checkpoint: the layout comes back too
        model = pfc.prune(small, 0.8)
        for layer in model.layers:
            layer.weight = np.asfortranarray(layer.weight)
    elif kind == "dense_quantized_with_mask":
        model = pfc.quantize(pfc.prune(small, 0.1), 4, granularity="per_channel")
    else:
        model = pfc.share_weights(pfc.prune(pfc.parse(conv, seed=4), 0.7), bits=3)
        X = rng.random((3, 2, 8, 8)).astype(np.float32)
    back = ar.decode_archive(ar.encode_archive(model))
    _assert_same(model, back, X)
    for (_, a), (_, b) in zip(model.walk(), back.walk()):
        for name in ("weight", "qweight", "index"):
            if isinstance(getattr(a, name, None), np.ndarray):
                assert getattr(a, name).flags.f_contiguous == getattr(b, name).flags.f_contiguous, name
        for k, m in getattr(a, "masks", {}).items():
            np.testing.assert_array_equal(np.asarray(m), np.asarray(b.masks[k]))


def test_damaged_header_length_is_diagnosed_without_allocating_it(tmp_path):
    """Fuzz case (benchmarks/fuzz_loaders.py, seed 11, case 231286): a damaged trailer made the checksum
    diagnosis decompress the header into a buffer of the damaged length (+225 MB)."""
    import resource

    from pyflux_compress.compression import archive as A

    path = tmp_path / "m.pfcz"
    pfc.save_compressed(path, pfc.parse("Chain(Dense(4 => 3, relu), Dense(3 => 2))", seed=0))
    data = bytearray(path.read_bytes())
    at = len(data) - A._SHA - A._TRAILER.size
    plen, hlen, _, crc = A._TRAILER.unpack_from(data, at)
    A._TRAILER.pack_into(data, at, plen, hlen, 2**31 - 1, crc)  # header length ~2 GiB, SHA now wrong
    path.write_bytes(bytes(data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(pfc.ArchiveError, match="trailer"):
        pfc.load_compressed(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: far below 2 GiB
