"""Hostile ``.pfcz`` archives against ``load_compressed`` (issue 15's archive part; the JLD2 campaign is separate).

Cases, generated deterministically from ``--seed`` out of five small archives (pruned float, 4-bit shared,
calibrated int8 affine, int4, pruned int8 CNN) and one version-1 fixture:

* ``header``: 1-3 header values replaced (by -1, 0, 2**31, 2**64, 1e300, NaN, "x", [], {}, huge shapes ...),
  the file re-checksummed, so only the content checks can catch it;
* ``payload``: bytes of the streams flipped, stream CRCs and the SHA-256 recomputed (decoders see garbage);
* ``flip``: any byte flipped, checksums left alone; ``truncate``: the file cut anywhere;
* ``bomb``: a stream replaced by a zstd frame expanding to 256 MiB; ``huge``: the header names
  ``Dense(20000 => 20000)`` layers (or a conv of 10^9 weights) over tiny arrays.

Each case is loaded in a worker subprocess whose address space is capped (``RLIMIT_AS`` = its size after start-up
+ ``--cap-mb``, default 200 MiB); the high-water mark of its resident set is reset before every case
(``/proc/self/clear_refs``) and its rise recorded. Targets: zero exceptions other than ``ArchiveError``
(``MemoryError`` included: the cap must never be reached), no case over 1 s, no rise over 200 MB.

Run: ``python benchmarks/fuzz_archive.py [--cases 3000] [--seed 0] [--workers 2]``.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPLACEMENTS = [-1, 0, 1, 2, 255, 2 ** 31, 2 ** 64, 1e300, float("nan"), None, "x", "C", "F", "gaps", "bitmap",
                "zstd", "raw", [], {}, True, [10 ** 6] * 3, [20000, 20000], [3], [0, 0]]


def _repack(data: bytes, header: dict, payload: bytes | None = None) -> bytes:
    import zstandard

    plen = struct.unpack_from("<Q", data, len(data) - 52)[0]
    payload = data[12:12 + plen] if payload is None else payload
    raw = json.dumps(header).encode()
    hbytes = zstandard.ZstdCompressor().compress(raw)
    body = data[:12] + payload + hbytes
    body += struct.pack("<QIII", len(payload), len(hbytes), len(raw), zlib.crc32(hbytes, zlib.crc32(data[:12])))
    return body + hashlib.sha256(body).digest()


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))
    else:
        yield path


def base_archives() -> list[bytes]:
    import pyflux_compress as pfc
    from pyflux_compress.compression import archive as ar

    rng = np.random.default_rng(0)
    mlp = pfc.parse("Chain(Dense(30 => 24, relu), Dense(24 => 12, tanh), Dense(12 => 5))", seed=5)
    cnn = pfc.parse("Chain(Conv((3, 3), 1 => 4, relu), BatchNorm(4), MaxPool((2, 2)), flatten, Dense(36 => 3))",
                    seed=1)
    X = rng.normal(size=(16, 30)).astype(np.float32)
    Xc = rng.random((6, 1, 8, 8)).astype(np.float32)
    models = [pfc.prune(mlp, 0.7), pfc.share_weights(pfc.prune(mlp, 0.6), bits=4),
              pfc.quantize(pfc.prune(mlp, 0.8), 8, "affine", "per_channel", calibration=X), pfc.quantize(mlp, 4),
              pfc.quantize(pfc.prune(cnn, 0.5), 8, granularity="per_channel", calibration=Xc)]
    return [ar.encode_archive(m) for m in models]


def make_case(kind: str, data: bytes, rng: np.random.Generator) -> bytes:
    from pyflux_compress.compression import archive as ar

    if kind == "flip":
        b = bytearray(data)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if kind == "truncate":
        return data[:int(rng.integers(len(data)))]
    header = ar.archive_header(data)
    if kind == "header":
        h = copy.deepcopy(header)
        leaves = list(_leaves(h))
        for _ in range(int(rng.integers(1, 4))):
            path = leaves[int(rng.integers(len(leaves)))]
            node = h
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = copy.deepcopy(REPLACEMENTS[int(rng.integers(len(REPLACEMENTS)))])
        return _repack(data, h)
    plen = struct.unpack_from("<Q", data, len(data) - 52)[0]
    if kind == "payload":
        b = bytearray(data[12:12 + plen])
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        h = copy.deepcopy(header)
        for s in h["streams"]:
            s["crc32"] = zlib.crc32(bytes(b[s["offset"]:s["offset"] + s["length"]]))
        return _repack(data, h, bytes(b))
    if kind == "bomb":
        import zstandard

        cobj = zstandard.ZstdCompressor(level=1).compressobj(size=256 << 20)
        bomb = b"".join(cobj.compress(bytes(16 << 20)) for _ in range(16)) + cobj.flush()
        h = copy.deepcopy(header)
        s = h["streams"][int(rng.integers(len(h["streams"])))]
        s.update(codec="zstd", offset=plen, length=len(bomb), crc32=zlib.crc32(bomb))
        if rng.random() < 0.5:
            s["size"] = 256 << 20  # declared too: the budget or the shape checks must refuse it
        return _repack(data, h, data[12:12 + plen] + bomb)
    if kind == "huge":
        h = copy.deepcopy(header)
        h["architecture"] = ("Chain(Dense(20000 => 20000, relu), Dense(20000 => 20000, tanh), Dense(12 => 5))"
                             if rng.random() < 0.5 else
                             "Chain(Conv((100, 100), 300 => 400, relu), Dense(36 => 3))")
        return _repack(data, h)
    raise ValueError(kind)


def v1_case(rng: np.random.Generator) -> bytes:
    path = os.path.join(HERE, "..", "tests", "data", "archive_v1", "q4_symmetric.pfcz")
    with open(path, "rb") as f:
        data = f.read()
    _, _, flags, hlen = struct.unpack_from("<8sHHI", data, 0)
    header = json.loads(zlib.decompress(data[16:16 + hlen], -15))
    leaves = list(_leaves(header))
    p = leaves[int(rng.integers(len(leaves)))]
    node = header
    for k in p[:-1]:
        node = node[k]
    node[p[-1]] = copy.deepcopy(REPLACEMENTS[int(rng.integers(len(REPLACEMENTS)))])
    raw = json.dumps(header).encode()
    head = struct.pack("<8sHHI", b"PFCZARCH", 1, 0, len(raw)) + raw
    body = head + struct.pack("<I", zlib.crc32(head)) + data[16 + hlen + 4:-32]
    return body + hashlib.sha256(body).digest()


def _status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM",
                                                                                            "VmSize")}


def worker(cap_mb: int) -> None:
    """Read case paths from stdin, print one JSON line per case."""
    import resource

    import pyflux_compress as pfc
    from pyflux_compress.compression.archive import ArchiveError

    pfc.load_compressed  # noqa: B018 - import everything before the cap
    size = _status()["VmSize"] * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + cap_mb * 2 ** 20, resource.RLIM_INFINITY))
    for line in sys.stdin:
        path = line.strip()
        before = _status()["VmRSS"]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        t0 = time.perf_counter()
        try:
            pfc.load_compressed(path)
            outcome = "loaded"
        except ArchiveError:
            outcome = "ArchiveError"
        except BaseException as err:  # noqa: BLE001 - what we are looking for
            outcome = f"ESCAPE {type(err).__name__}: {str(err)[:120]}"
        dt = time.perf_counter() - t0
        rise = (_status()["VmHWM"] - before) * 1024
        print(json.dumps({"path": path, "outcome": outcome, "seconds": dt, "rise": rise}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cap-mb", type=int, default=200)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.cap_mb)
        return
    rng = np.random.default_rng(args.seed)
    bases = base_archives()
    kinds = ["header"] * 6 + ["payload"] * 2 + ["flip", "truncate"] + ["v1"] + ["bomb", "huge"]
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths, kind_of = [], {}
        for i in range(args.cases):
            kind = kinds[int(rng.integers(len(kinds)))] if i >= 2 else ("bomb", "huge")[i]
            data = v1_case(rng) if kind == "v1" else make_case(kind, bases[int(rng.integers(len(bases)))], rng)
            path = os.path.join(tmp, f"case{i:06d}.pfcz")
            with open(path, "wb") as f:
                f.write(data)
            paths.append(path)
            kind_of[path] = kind
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OPENBLAS_NUM_THREADS="1")
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--cap-mb", str(args.cap_mb)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                 for _ in range(args.workers)]
        t0 = time.perf_counter()
        outs = [p.communicate("\n".join(paths[w::args.workers]) + "\n")[0] for w, p in enumerate(procs)]
        wall = time.perf_counter() - t0
        for out in outs:
            results += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    escapes = [r for r in results if r["outcome"].startswith("ESCAPE")]
    by_kind: dict[str, dict[str, int]] = {}
    for r in results:
        k = by_kind.setdefault(kind_of[r["path"]], {"cases": 0, "loaded": 0, "ArchiveError": 0, "escapes": 0})
        k["cases"] += 1
        k["escapes" if r["outcome"].startswith("ESCAPE") else r["outcome"]] += 1
    slowest = max(results, key=lambda r: r["seconds"])
    biggest = max(results, key=lambda r: r["rise"])
    print(f"{len(results)} cases (of {args.cases}) in {wall:.0f} s, {args.workers} workers, RLIMIT_AS cap "
          f"+{args.cap_mb} MiB")
    print("| kind | cases | loaded (valid after the edit) | ArchiveError | escapes |")
    print("|---|---:|---:|---:|---:|")
    for kind, k in sorted(by_kind.items()):
        print(f"| {kind} | {k['cases']} | {k['loaded']} | {k['ArchiveError']} | {k['escapes']} |")
    print(f"escapes: {len(escapes)} (target 0); slowest case {slowest['seconds']:.3f} s (target <= 1 s, "
          f"{kind_of[slowest['path']]}); largest resident-set rise {biggest['rise'] / 2 ** 20:.1f} MiB "
          f"(target <= 200 MB, {kind_of[biggest['path']]})")
    for r in escapes[:10]:
        print("  ", kind_of[r["path"]], r["outcome"])


if __name__ == "__main__":
    main()
