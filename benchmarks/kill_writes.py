"""kill -9 during writes: every file the package writes is either the previous file or the complete new one.

For each writer (``pfc.save`` -> .jld2, ``pfc.save_compressed`` -> .pfcz, ``pfc.export_onnx`` -> .onnx) of a
~100 MB model (Dense(4096 => 4096), Dense(4096 => 2048): 25.2M float32 parameters), the campaign

1. writes version A of the model to the target, and records the SHA-256 of a complete write of A and of B (two
   models that differ in every weight); writes are deterministic, which the setup checks;
2. repeatedly starts a child process that loads the other version and writes it to the same path, and sends it
   SIGKILL at a random moment between "about to write" and 1.3x the measured write time (so some kills land
   after the rename, most during the write);
3. after each kill checks that the file at the path hashes to the old version or to the new one (never torn,
   never missing) and counts the writer's temp files (``.<name>.<pid>.<hex>.pfc-tmp``) left in the folder;
4. checks that the next write removes the temp files that killed writers left behind: whenever a writer got
   as far as its rename, no temp file may remain, and after one final uninterrupted write the folder holds
   exactly the target file.

Run::

    python benchmarks/kill_writes.py                 # 12 kills per writer (36 in all), a few minutes
    python benchmarks/kill_writes.py --kills 20 --writers save,export_onnx
    python benchmarks/kill_writes.py --root ../other-checkout   # the package of another tree
    python benchmarks/kill_writes.py --writers save_compressed --prune-archive 0.9   # a sparse archive

Prints one line per kill and a summary table; exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEMP_SUFFIX = ".pfc-tmp"
WRITERS = {"save": ".jld2", "save_compressed": ".pfcz", "export_onnx": ".onnx"}

# the child: load version V of the model from the .npz, say "ready", write, say "done"
CHILD = r"""
import sys, time
import numpy as np
import pyflux_compress as pfc
from pyflux_compress.model import layers as L
from pyflux_compress.model.chain import Chain
writer, npz, target, prune = sys.argv[1:5]
with np.load(npz) as z:
    model = Chain(L.Dense(z["w1"], z["b1"]), L.Dense(z["w2"], z["b2"]))
if float(prune) > 0:
    model = pfc.prune(model, float(prune), scope="global")
print("ready", pfc.__file__, flush=True)
t0 = time.perf_counter()
if writer == "save":
    pfc.save(target, model)
elif writer == "save_compressed":
    pfc.save_compressed(target, model)
else:
    pfc.export_onnx(model, target)
print(f"done {time.perf_counter() - t0:.3f}", flush=True)
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def temps(folder: Path, name: str) -> list[str]:
    return sorted(e for e in os.listdir(folder) if e.startswith(f".{name}.") and e.endswith(TEMP_SUFFIX))


def make_versions(folder: Path) -> dict[str, Path]:
    """Two ~100 MB models (A, B) as uncompressed .npz files the children load quickly."""
    out = {}
    for tag, seed in (("A", 0), ("B", 1)):
        rng = np.random.default_rng(seed)
        path = folder / f"{tag}.npz"
        np.savez(path, w1=rng.standard_normal((4096, 4096), dtype=np.float32) * 0.02,
                 b1=rng.standard_normal(4096, dtype=np.float32) * 0.01,
                 w2=rng.standard_normal((2048, 4096), dtype=np.float32) * 0.02,
                 b2=rng.standard_normal(2048, dtype=np.float32) * 0.01)
        out[tag] = path
    return out


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


PRUNE = {"save": 0.0, "save_compressed": 0.0, "export_onnx": 0.0}  # --prune-archive sets the archive's


def start(writer: str, npz: Path, target: Path) -> subprocess.Popen:
    # cwd = the target's folder: ``python -c`` puts the cwd first on sys.path, which must not shadow ROOT
    return subprocess.Popen([sys.executable, "-c", CHILD, writer, str(npz), str(target), str(PRUNE[writer])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                            cwd=target.parent)


def full_write(writer: str, npz: Path, target: Path) -> float:
    """Run one uninterrupted write; returns its duration (s)."""
    p = start(writer, npz, target)
    out, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"{writer}: the writer failed:\n{err[-3000:]}")
    used = out.split()[1]
    if not used.startswith(str(ROOT)):
        raise SystemExit(f"the writer imported {used}, not the package under {ROOT}")
    return float(out.split("done")[1])


def campaign(writer: str, kills: int, versions: dict[str, Path], work: Path, rng: random.Random) -> dict:
    folder = work / writer
    folder.mkdir()
    target = folder / f"model{WRITERS[writer]}"
    # reference hashes of complete writes (and a determinism check: B written twice hashes the same)
    durations = []
    ref = {}
    for tag in ("B", "A", "B"):
        durations.append(full_write(writer, versions[tag], target))
        digest = sha256(target)
        if tag in ref and ref[tag] != digest:
            raise SystemExit(f"{writer}: two complete writes of the same model differ; cannot compare by hash")
        ref[tag] = digest
    full_write(writer, versions["A"], target)  # the starting file: A
    write_s = float(np.median(durations))
    print(f"{writer}: complete write of {os.path.getsize(target) / 1e6:.1f} MB takes {write_s:.2f} s; "
          f"killing {kills} times", flush=True)
    current = "A"
    stats = {"writer": writer, "kills": 0, "old": 0, "new": 0, "torn": 0, "missing": 0, "max_temps": 0,
             "stale_not_cleaned": 0, "write_s": write_s, "file_mb": os.path.getsize(target) / 1e6}
    for i in range(kills):
        new = "B" if current == "A" else "A"
        p = start(writer, versions[new], target)
        line = p.stdout.readline()  # "ready": the model is loaded, the write begins now
        if not line.startswith("ready"):
            p.kill()
            raise SystemExit(f"{writer}: child failed before writing:\n{p.stderr.read()[-3000:]}")
        delay = rng.uniform(0, 1.3 * write_s)
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
        stats["kills"] += 1
        if not target.exists():
            outcome = "missing"
        else:
            digest = sha256(target)
            outcome = "old" if digest == ref[current] else "new" if digest == ref[new] else "torn"
        stats[outcome] += 1
        now = temps(folder, target.name)
        stats["max_temps"] = max(stats["max_temps"], len(now))
        # a writer that got as far as its rename passed its stale-temp cleanup first: nothing may be left
        if outcome == "new" and now:
            stats["stale_not_cleaned"] += len(now)
        print(f"  kill {i + 1:2d} at {delay:6.2f} s ({100 * delay / write_s:5.1f}% of a write): file = {outcome:7s}"
              f" temp files left {len(now)}", flush=True)
        if outcome == "new":
            current = new
    # the next write cleans up what the killed writers left
    full_write(writer, versions["A"], target)
    stats["after_next_write"] = sorted(os.listdir(folder))
    stats["final_ok"] = stats["after_next_write"] == [target.name] and sha256(target) == ref["A"]
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=12, help="kills per writer (default 12)")
    ap.add_argument("--writers", default=",".join(WRITERS), help=f"comma-separated subset of {','.join(WRITERS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=None, help="import pyflux_compress from this tree (default: this repo)")
    ap.add_argument("--prune-archive", type=float, default=0.0, metavar="FRACTION",
                    help="prune the model to this sparsity before save_compressed (a faster archive; default 0)")
    args = ap.parse_args()
    PRUNE["save_compressed"] = args.prune_archive
    if args.root:
        global ROOT
        ROOT = Path(args.root).resolve()
    print(f"package: {ROOT / 'pyflux_compress'}", flush=True)
    writers = [w.strip() for w in args.writers.split(",") if w.strip()]
    bad = [w for w in writers if w not in WRITERS]
    if bad:
        ap.error(f"unknown writer(s) {bad}; choose from {', '.join(WRITERS)}")
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="pfc-kill-writes-"))
    print(f"working in {work} (removed at the end)", flush=True)
    try:
        versions = make_versions(work)
        results = [campaign(w, args.kills, versions, work, rng) for w in writers]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{'writer':16s} {'file MB':>8s} {'write s':>8s} {'kills':>6s} {'old':>5s} {'new':>5s} {'torn':>5s} "
          f"{'missing':>8s} {'max temps':>10s} {'after next write':>18s}")
    ok = True
    for s in results:
        clean = "only the file" if s["final_ok"] else f"{s['after_next_write']}"
        print(f"{s['writer']:16s} {s['file_mb']:8.1f} {s['write_s']:8.2f} {s['kills']:6d} {s['old']:5d} "
              f"{s['new']:5d} {s['torn']:5d} {s['missing']:8d} {s['max_temps']:10d} {clean:>18s}")
        ok &= s["torn"] == 0 and s["missing"] == 0 and s["final_ok"] and s["stale_not_cleaned"] == 0
    total = sum(s["kills"] for s in results)
    print(f"\n{total} kills in all: {sum(s['old'] for s in results)} left the previous file intact, "
          f"{sum(s['new'] for s in results)} the complete new file, {sum(s['torn'] for s in results)} a torn file, "
          f"{sum(s['missing'] for s in results)} no file; "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
