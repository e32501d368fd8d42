"""Fuzz campaign over every file loader: mutated JLD2 files, hostile archives, hostile ONNX files.

Run:  nice python benchmarks/fuzz_loaders.py [--cases 120000] [--jobs 2] [--time-limit 3600] [--seed 0]

Cases are interleaved 10 : 1 : 1 (JLD2 : archive : ONNX), so ``--cases 120000`` is 100,000 JLD2 files and
10,000 of each other kind, and a run cut short by ``--time-limit`` still covers every loader. Case ``i`` is
a deterministic function of ``(seed, i)``: any reported case can be replayed with ``--replay i``.

Cases run in a pool of ``--jobs`` worker processes forked from a driver that has already imported
everything (forking per case measured 20 cases/s here, the pool several times more). Each worker caps
its address space with ``RLIMIT_AS`` (its baseline + ``--mem-cap-mb``); before each case it resets its
peak-RSS counter (``/proc/self/clear_refs``) and arms a hard ``--timeout`` (SIGALRM kills the worker; the
driver counts the case and forks a fresh worker, as it does after any crash). Counted per loader:

* ``escapes``: exceptions other than the loader's documented types (JLD2 files: ``jld2.load`` ->
  JLD2FormatError, ``pfc.load`` -> CheckpointError; archives: ArchiveError; ONNX: ValueError), listed by
  type with the first case of each;
* ``safety net``: documented errors that the reader's last-resort handler produced from an internal
  exception ("... while decoding"): each is a missing check, so listed too;
* ``over 1 s cpu``: cases whose CPU time (user + sys) exceeded 1 s (CPU time, not wall time: the
  machine is shared), and ``timeout``: cases killed by the hard limit;
* ``over 200 MB``: cases whose peak resident memory grew by more than 200 MB (VmHWM - VmRSS at start),
  and cases that hit the address-space cap (MemoryError);
* ``crash``: workers killed by a signal other than the timeout's (segfault, bus error).

Seeds: the small files of the real JLD2 corpus (``$PYFLUX_JLD2_CORPUS`` or /work/shared/corpus_jld2),
``pfc.save`` checkpoints, h5py files with chunked/compressed/unallocated datasets (B-tree v1/v2, fixed and
extensible arrays: the new reader paths),
``pfc.save_compressed`` archives (dense, pruned, quantized) and ``pfc.export_onnx`` models. Only public
APIs are called.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

import pyflux_compress as pfc
from pyflux_compress.io import jld2
from pyflux_compress.io.checkpoint import CheckpointError

SMALL_CORPUS = ["PavelNikolaichev__JuliaHEPNet__model.jld2", "MichalKobiela__reinforce-circuits__mymodel.jld2",
                "Lightglow51__777__model.jld2", "JonasIsensee__JLD2TestFiles__artifacts__readas_foo_sin.jld2",
                "JonasIsensee__JLD2TestFiles__artifacts__singleton_struct_fields.jld2",
                "JonasIsensee__JLD2TestFiles__artifacts__struct_reconstruction.jld2",
                "JonasIsensee__JLD2TestFiles__artifacts__unionall_typeparam__blob1fdaa247.jld2",
                "JuliaIO__JLD2.jl__v0.6.4__test.jld2", "paulxshen__NeuralDFT.jl__SAD.jld2",
                "edwinb-ai__IsingRBM__magnetization.jld2", "tristanth03__UROP__test.jld2",
                "dpshade22__JuliaMidiParsing__trained_model.jld2"]
KINDS = ["jld2"] * 10 + ["archive", "onnx"]


# ---------------------------------------------------------------------------------------------- seeds
def _corpus_dir() -> Path:
    for c in (os.environ.get("PYFLUX_JLD2_CORPUS"), Path(__file__).resolve().parents[2] / "shared" / "corpus_jld2",
              "/work/shared/corpus_jld2"):
        if c and Path(c).is_dir():
            return Path(c)
    raise SystemExit("JLD2 corpus not found: set PYFLUX_JLD2_CORPUS")


def _models():
    small = pfc.parse("Chain(Dense(12 => 8, relu), Dense(8 => 3))", seed=0)
    conv = pfc.parse("Chain(Conv((3, 3), 1 => 2, relu), BatchNorm(2), MaxPool((2, 2)), flatten, Dense(18 => 4))",
                     seed=1)
    return small, conv


def make_seeds(work: Path) -> dict[str, list[tuple[str, bytes]]]:
    """name -> bytes for each kind. Files are built in ``work`` through the public API."""
    import h5py

    seeds: dict[str, list[tuple[str, bytes]]] = {"jld2": [], "archive": [], "onnx": []}
    corpus = _corpus_dir()
    for n in SMALL_CORPUS:
        if (corpus / n).exists():
            seeds["jld2"].append((n, (corpus / n).read_bytes()))
    small, conv = _models()
    for name, m in (("small", small), ("conv", conv)):
        p = work / f"{name}.jld2"
        pfc.save(p, m)
        seeds["jld2"].append((f"pfc.save {name}", p.read_bytes()))
    p = work / "h5.h5"
    a = np.arange(600, dtype="<f4").reshape(20, 30)
    for libver in ("earliest", "latest"):
        with h5py.File(p, "w", libver=libver) as f:
            f.create_dataset("deflate", data=a, chunks=(7, 11), compression="gzip", shuffle=True)
            f.create_dataset("bt2", data=a, chunks=(6, 7), maxshape=(None, None), compression="gzip")
            f.create_dataset("plain", data=a, chunks=(4, 4))
            f.create_dataset("fill", shape=(5, 6), dtype="f8", fillvalue=1.5)
            f.create_dataset("s", data=np.array([b"ab", b"cd"], dtype="S4"))
            f.create_dataset("ea", data=a, chunks=(4, 5), maxshape=(None, 30))   # extensible array ('latest')
        seeds["jld2"].append((f"h5py chunked {libver}", p.read_bytes()))
    variants = [("dense", small), ("conv", conv)]
    try:
        variants.append(("pruned", pfc.prune(small, 0.6)))
    except Exception as err:  # noqa: BLE001 - a seed variant the API does not offer is skipped, not fatal
        print(f"(no pruned archive seed: {err})")
    try:
        variants.append(("int8", pfc.quantize(small, bits=8)))
    except Exception as err:  # noqa: BLE001
        print(f"(no quantized archive seed: {err})")
    for name, m in variants:
        p = work / f"{name}.pfcz"
        pfc.save_compressed(m, p) if _takes_model_first() else pfc.save_compressed(p, m)
        seeds["archive"].append((f"save_compressed {name}", p.read_bytes()))
    for name, m, shape in (("dense", small, (12,)), ("conv", conv, (1, 8, 8))):
        p = work / f"{name}.onnx"
        pfc.export_onnx(m, p, input_shape=shape)
        seeds["onnx"].append((f"export_onnx {name}", p.read_bytes()))
    return seeds


def _takes_model_first() -> bool:
    import inspect
    params = list(inspect.signature(pfc.save_compressed).parameters)
    return params[0] in ("model", "m")


# ---------------------------------------------------------------------------------------------- mutation
def mutate(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    """One of five mutators (the unit suite's four plus splicing): returns (bytes, description)."""
    d = bytearray(data)
    lo = 512 if len(d) > 1024 and d[:4] != b"\x89HDF" else 0       # keep JLD2's userblock: hit HDF5 structures
    kind = rnd.randrange(5)
    if kind == 0:
        k = rnd.randint(1, 8)
        for _ in range(k):
            d[rnd.randrange(lo, len(d))] = rnd.randrange(256)
        return bytes(d), f"{k} random bytes"
    if kind == 1:
        cut = rnd.randrange(len(d))
        return bytes(d[:cut]), f"truncated at {cut}"
    if kind == 2:
        p = rnd.randrange(lo, len(d))
        blob = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        d[p:p + len(blob)] = blob
        return bytes(d), f"{len(blob)} bytes overwritten at {p}"
    if kind == 3:
        w = rnd.randint(1, 8)
        p = rnd.randrange(lo, max(lo + 1, len(d) - w))
        v = rnd.choice([0, 1, 0x7F, 0x80, 0xFF])
        d[p:p + w] = bytes([v]) * w
        return bytes(d), f"{w} bytes set to {v:#x} at {p}"
    src, dst = rnd.randrange(len(d)), rnd.randrange(lo, len(d))
    n = rnd.randint(1, 64)
    d[dst:dst + n] = d[src:src + n]
    return bytes(d), f"{n} bytes copied from {src} to {dst}"


def make_case(i: int, seed: int, seeds: dict) -> tuple[str, str, str, bytes]:
    """(kind, loader, description, bytes) of case ``i``."""
    rnd = random.Random(seed * 1_000_003 + i)
    kind = KINDS[i % len(KINDS)]
    name, data = seeds[kind][rnd.randrange(len(seeds[kind]))]
    data, how = mutate(data, rnd)
    if kind == "jld2":
        loader = "pfc.load" if (i // len(KINDS)) % 2 else "jld2.load"
    else:
        loader = {"archive": "pfc.load_compressed", "onnx": "pfc.import_onnx"}[kind]
    return kind, loader, f"{name}: {how}", data


# ---------------------------------------------------------------------------------------------- one case
DOCUMENTED = {"jld2.load": (jld2.JLD2FormatError,), "pfc.load": (CheckpointError,),
              "pfc.load_compressed": (pfc.ArchiveError,), "pfc.import_onnx": (ValueError,)}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Reset VmHWM (peak RSS) to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_case(loader: str, path: str) -> dict:
    """Load ``path`` with ``loader`` in this process; classify the outcome, measure CPU time and peak growth."""
    fn = {"jld2.load": jld2.load, "pfc.load": pfc.load, "pfc.load_compressed": pfc.load_compressed,
          "pfc.import_onnx": pfc.import_onnx}[loader]
    _reset_peak()
    rss0 = _status_kb("VmRSS")
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    outcome, etype, msg = "ok", "", ""
    try:
        fn(path)
    except DOCUMENTED[loader] as err:
        outcome, etype, msg = "documented", type(err).__name__, str(err)[:300]
    except MemoryError as err:
        outcome, etype, msg = "memory", "MemoryError", str(err)[:300]
    except Exception as err:  # noqa: BLE001 - counting exactly these is the point
        outcome, etype, msg = "escape", type(err).__name__, str(err)[:300]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru.ru_utime - ru0.ru_utime) + (ru.ru_stime - ru0.ru_stime)
    return {"outcome": outcome, "type": etype, "msg": msg, "cpu": cpu, "grow_mb": (_status_kb("VmHWM") - rss0) / 1024}


def worker(rfd: int, wfd: int, mem_cap_mb: int, timeout: int) -> None:
    """A pool process (forked from the driver, everything imported): address space capped at its baseline
    + ``mem_cap_mb``; reads ``index loader path`` lines, answers one JSON line each. A case over ``timeout``
    seconds is killed with the whole worker by SIGALRM (the driver counts it and starts a new worker)."""
    try:
        vm = _status_kb("VmSize") * 1024
        cap = vm + mem_cap_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        warnings.simplefilter("ignore")
        inp = os.fdopen(rfd, "r")
        for line in inp:
            _, loader, path = line.rstrip("\n").split(" ", 2)
            signal.alarm(timeout)
            rec = run_case(loader, path)
            signal.alarm(0)
            os.write(wfd, (json.dumps(rec) + "\n").encode())
    finally:
        os._exit(0)


class Pool:
    """``jobs`` worker processes; each runs one case at a time."""

    def __init__(self, jobs: int, mem_cap_mb: int, timeout: int) -> None:
        self.mem_cap_mb, self.timeout = mem_cap_mb, timeout
        self.fds: set[int] = set()               # the driver's ends of every worker's pipes
        self.idle: list[dict] = [self._spawn() for _ in range(jobs)]
        self.busy: dict[int, dict] = {}          # reply fd -> worker (with its case)

    def _spawn(self) -> dict:
        r1, w1 = os.pipe()                       # driver -> worker
        r2, w2 = os.pipe()                       # worker -> driver
        pid = os.fork()
        if pid == 0:
            # drop every driver-side pipe end, or a sibling never sees EOF on its input when the driver closes
            for fd in self.fds | {w1, r2}:
                os.close(fd)
            worker(r1, w2, self.mem_cap_mb, self.timeout)
        os.close(r1)
        os.close(w2)
        self.fds |= {w1, r2}
        return {"pid": pid, "to": w1, "frm": r2, "buf": b""}

    def submit(self, case: tuple) -> None:
        w = self.idle.pop()
        w["case"] = case
        i, loader, how, path = case
        os.write(w["to"], f"{i} {loader} {path}\n".encode())
        self.busy[w["frm"]] = w

    def collect(self) -> list[tuple[tuple, dict | None, int]]:
        """Wait for at least one finished case: [(case, record or None, signal number if the worker died)]."""
        import select

        ready, _, _ = select.select(list(self.busy), [], [])
        out = []
        for fd in ready:
            w = self.busy[fd]
            chunk = os.read(fd, 65536)
            if chunk:
                w["buf"] += chunk
                if not w["buf"].endswith(b"\n"):
                    continue
                rec = json.loads(w["buf"])
                w["buf"] = b""
                del self.busy[fd]
                out.append((w["case"], rec, 0))
                self.idle.append(w)
            else:                                # worker died mid-case: timeout or crash
                _, status = os.waitpid(w["pid"], 0)
                sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1
                for fd_ in (w["to"], w["frm"]):
                    os.close(fd_)
                    self.fds.discard(fd_)
                del self.busy[fd]
                out.append((w["case"], None, sig))
                self.idle.append(self._spawn())
        return out

    def close(self) -> None:
        for w in self.idle + list(self.busy.values()):
            os.close(w["to"])
            os.waitpid(w["pid"], 0)


# ---------------------------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=120_000)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--time-limit", type=float, default=float("inf"), help="stop starting cases after N s")
    ap.add_argument("--timeout", type=int, default=10, help="per-case hard limit, seconds")
    ap.add_argument("--mem-cap-mb", type=int, default=1024, help="RLIMIT_AS headroom per worker")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--replay", type=int, default=None, help="run one case in-process and show the traceback")
    ap.add_argument("--save-dir", default=None, help="write the first flagged case of each kind here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pyflux-fuzz-"))
    seeds = make_seeds(work)
    print("seeds: " + ", ".join(f"{k} {len(v)}" for k, v in seeds.items()), flush=True)
    if args.replay is not None:
        kind, loader, how, data = make_case(args.replay, args.seed, seeds)
        p = work / f"case{args.replay}.{kind}"
        p.write_bytes(data)
        print(f"case {args.replay}: {loader} on {how} ({p})")
        fn = {"jld2.load": jld2.load, "pfc.load": pfc.load, "pfc.load_compressed": pfc.load_compressed,
              "pfc.import_onnx": pfc.import_onnx}[loader]
        fn(str(p))
        print("loaded without error")
        return

    stats: dict[str, Counter] = defaultdict(Counter)
    first: dict[tuple[str, str, str], str] = {}
    flagged_dir = Path(args.save_dir) if args.save_dir else None
    if flagged_dir:
        flagged_dir.mkdir(parents=True, exist_ok=True)

    def flag(loader, what, detail, i, how, path):
        key = (loader, what, detail)
        if key not in first:
            first[key] = f"case {i} ({how})"
            if flagged_dir and path.exists():
                (flagged_dir / f"{what}-{i}{path.suffix}".replace(" ", "_")).write_bytes(path.read_bytes())

    def account(case, rec, sig) -> None:
        i, loader, how, path = case
        s = stats[loader]
        s["cases"] += 1
        if rec is None:
            if sig == signal.SIGALRM:
                s["timeout"] += 1
                flag(loader, "timeout", "", i, how, path)
            else:
                s["crash"] += 1
                flag(loader, "crash", str(sig), i, how, path)
        else:
            s[rec["outcome"]] += 1
            if rec["outcome"] == "escape":
                flag(loader, "escape", rec["type"], i, how, path)
            if rec["outcome"] == "memory":
                flag(loader, "memory cap", "", i, how, path)
            if " while decoding" in rec["msg"] or "cannot rebuild the model (" in rec["msg"]:
                s["safety net"] += 1
                flag(loader, "safety net", rec["msg"].split(" while decoding")[0].split(": ")[-1][:60], i, how,
                     path)
            if rec["cpu"] > 1.0:
                s["over 1 s cpu"] += 1
                flag(loader, "slow", "", i, how, path)
            if rec["grow_mb"] > 200:
                s["over 200 MB"] += 1
                flag(loader, "memory", "", i, how, path)
            s["max cpu ms"] = max(s["max cpu ms"], int(rec["cpu"] * 1000))
            s["max grow MB"] = max(s["max grow MB"], int(rec["grow_mb"]))
        path.unlink(missing_ok=True)

    pool = Pool(args.jobs, args.mem_cap_mb, args.timeout)
    t0 = last_print = time.time()
    next_case, done, end = args.start, 0, args.start + args.cases
    while True:
        while pool.idle and next_case < end and time.time() - t0 < args.time_limit:
            kind, loader, how, data = make_case(next_case, args.seed, seeds)
            path = work / f"case{next_case}.{'jld2' if kind == 'jld2' else 'pfcz' if kind == 'archive' else 'onnx'}"
            path.write_bytes(data)
            pool.submit((next_case, loader, how, path))
            next_case += 1
        if not pool.busy:
            break
        for case, rec, sig in pool.collect():
            account(case, rec, sig)
            done += 1
        if time.time() - last_print > 120:
            last_print = time.time()
            print(f"[{time.time() - t0:7.0f} s] {done} cases done", flush=True)
            report(stats, first, done, time.time() - t0, final=False)
    pool.close()
    report(stats, first, done, time.time() - t0, final=True)


def report(stats, first, done, elapsed, final: bool) -> None:
    cols = ["cases", "ok", "documented", "escape", "safety net", "memory", "over 1 s cpu", "timeout",
            "over 200 MB", "crash", "max cpu ms", "max grow MB"]
    print(f"{'loader':20s} " + " ".join(f"{c:>12s}" for c in cols))
    for loader, s in sorted(stats.items()):
        print(f"{loader:20s} " + " ".join(f"{s[c]:>12d}" for c in cols))
    if final:
        print(f"{done} cases in {elapsed:.0f} s ({done / max(elapsed, 1e-9):.1f} cases/s)")
        for (loader, what, detail), where in sorted(first.items()):
            print(f"  {loader}: {what} {detail}: first at {where}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
