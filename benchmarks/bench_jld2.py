"""Save/load throughput of a ~100 MB Flux Chain as JLD2 vs np.save/np.load of the same arrays (one run).

Run:  python benchmarks/bench_jld2.py [--mb 100] [--layers 1024] [--peak-gb 1]
Prints MB/s for each and the ratio ours/anchor (target >= 0.5 both ways). Both writers fsync
(pfc.save must, for atomicity; np.save files are fsynced too so the comparison is fair). Page cache is
warm for both loads. Each figure is the best of 3 repetitions in the same run. Loading is reported three
ways: ``jld2.load`` (arrays memory-mapped, lazy), ``jld2.load`` + reading every byte (sum), and
``pfc.load`` (parses model_arch into a fresh Chain, then reads the arrays into it).

Cost per layer (issue 16): ``pfc.save`` of a Chain of ``--layers`` identical ``Dense(32 => 32)`` against
``np.savez`` of the same arrays into one file (fsynced too); target: pfc.save <= 3x np.savez. The per-layer
cost is what a deep model pays in headers, checksums and type look-ups (committed types are written once per
type: the Chain's 1,024 layer states share one committed NamedTuple type).

Peak memory of ``pfc.load`` (``--peak-gb``, default 1 GB of float32 weights; 0 skips): the checkpoint is
loaded in a fresh subprocess and the growth of its peak resident memory (VmHWM after the load minus VmRSS
before it) is divided by the payload. Target <= 1.3x. ``pfc.load`` reads each array straight from the file
into private memory and hands it to the model (no mapped pages of the file stay resident beside a copy);
the anchor row is the former way: ``jld2.load`` memory-mapped, then each array copied into the model.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import pyflux_compress as pfc
from pyflux_compress.io import jld2


def timed(fn, repeat: int = 3):
    """Best of ``repeat`` wall-clock timings (the machine is shared: the minimum is the least noisy)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def per_layer(n_layers: int) -> None:
    """pfc.save of ``n_layers`` Dense(32 => 32) vs np.savez of the same arrays (both fsynced)."""
    model = pfc.Chain(*[pfc.Dense(32, 32) for _ in range(n_layers)])
    arrays = [p for _, layer in model.walk() for p in layer.params().values()]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        d = Path(d)

        def npz() -> None:
            np.savez(d / "a.npz", *arrays)
            fsync_path(d / "a.npz")
        t_np, _ = timed(npz, repeat=5)
        t_save, _ = timed(lambda: pfc.save(d / "m.jld2", model), repeat=5)
        size, np_size = (d / "m.jld2").stat().st_size, (d / "a.npz").stat().st_size
    print(f"\nper layer: Chain of {n_layers} x Dense(32 => 32), {len(arrays)} arrays")
    print(f"  np.savez (+fsync)  {t_np:7.3f} s  {np_size / 1e6:6.2f} MB  (anchor)")
    print(f"  pfc.save           {t_save:7.3f} s  {size / 1e6:6.2f} MB  {1e6 * t_save / n_layers:6.0f} us/layer")
    print(f"  ratio pfc.save / np.savez = {t_save / t_np:.2f}x (target <= 3x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=100.0, help="model size in MB (float32)")
    ap.add_argument("--layers", type=int, default=1024, help="layers of the per-layer cost measurement")
    ap.add_argument("--peak-gb", type=float, default=1.0, help="checkpoint size for the peak-memory section")
    ap.add_argument("--only-peak", action="store_true", help="run only the peak-memory section")
    args = ap.parse_args()
    if args.peak_gb > 0:
        load_peak(args.peak_gb)
    if args.only_peak:
        return
    h = int(np.sqrt(args.mb * 1e6 / 4 / 1.6))        # Dense(h=>h) + Dense(h=>h/2) + ... ~ 1.6 h^2 params
    model = pfc.Chain(pfc.Dense(h, h, pfc.relu), pfc.Dense(h, h // 2, pfc.relu), pfc.Dense(h // 2, h // 4),
                      pfc.Dense(h // 4, 10))
    arrays = [p for _, layer in model.walk() for p in layer.params().values()]
    nbytes = sum(a.nbytes for a in arrays)
    mb = nbytes / 1e6
    print(f"model: {model}  ({mb:.1f} MB in {len(arrays)} arrays)")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        d = Path(d)
        jpath = d / "model.jld2"

        def np_save():
            for i, a in enumerate(arrays):
                p = d / f"a{i}.npy"
                np.save(p, a)
                fsync_path(p)
        t_np_save, _ = timed(np_save)
        t_save, _ = timed(lambda: pfc.save(jpath, model))

        t_np_load, loaded = timed(lambda: [np.load(d / f"a{i}.npy") for i in range(len(arrays))])
        t_load_lazy, _ = timed(lambda: jld2.load(jpath))
        t_load_touch, _ = timed(lambda: [float(np.sum(a)) for a in
                                         [x for layer in jld2.load(jpath, "model_state").layers
                                          for x in (layer.weight, layer.bias)]])
        t_np_touch, _ = timed(lambda: [float(np.sum(np.load(d / f"a{i}.npy"))) for i in range(len(arrays))])
        t_pfc_load, back = timed(lambda: pfc.load(jpath))
        from pyflux_compress.io.checkpoint import _uninitialised
        t_parse, _ = timed(lambda: pfc.parse(str(model), init=_uninitialised))  # part of pfc.load
        assert all(np.array_equal(a, b) for a, b in zip(arrays, [p for _, layer in back.walk()
                                                                   for p in layer.params().values()]))
        size = jpath.stat().st_size
    rows = [
        ("save: np.save (+fsync)", t_np_save, None),
        ("save: pfc.save (atomic, fsync)", t_save, t_np_save),
        ("load: np.load", t_np_load, None),
        ("load: jld2.load (memory-mapped, lazy)", t_load_lazy, t_np_load),
        ("load: pfc.load (Chain rebuilt, arrays read in)", t_pfc_load, t_np_load),
        ("  of which pfc.parse(model_arch) (no init)", t_parse, "part"),
        ("load+sum: np.load", t_np_touch, None),
        ("load+sum: jld2.load", t_load_touch, t_np_touch),
    ]
    print(f"JLD2 file: {size / 1e6:.1f} MB ({size / nbytes:.4f} x payload)")
    print(f"{'operation':48s} {'seconds':>8s} {'MB/s':>8s} {'ratio vs anchor':>16s}")
    for name, t, anchor in rows:
        ratio = "(anchor)" if anchor is None else "(part of above)" if anchor == "part" else f"{anchor / t:.2f}x"
        print(f"{name:48s} {t:8.3f} {mb / t:8.0f} {ratio:>16s}")
    per_layer(args.layers)


_PEAK_CHILD = """
import sys, numpy as np
import pyflux_compress as pfc
from pyflux_compress.io import jld2

def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

mode, path = sys.argv[1], sys.argv[2]
before = kb("VmRSS")
if mode == "pfc.load":
    model = pfc.load(path)
    total = sum(float(np.sum(p[..., :1])) for _, l in model.walk() for p in l.params().values())
else:   # the former pfc.load: memory-mapped arrays, each copied into the model
    values = jld2.load(path)
    copies = [np.array(x, order="K") for layer in values["model_state"].layers for x in (layer.weight, layer.bias)]
    total = sum(float(np.sum(c[..., :1])) for c in copies)
print(kb("VmHWM") - before)
"""


def load_peak(gb: float) -> None:
    """Peak resident-memory growth of loading a ``gb`` GB checkpoint, in a fresh process, / payload."""
    h = int(np.sqrt(gb * 1e9 / 4 / 2))               # two Dense(h => h) layers ~ 2 h^2 float32
    rng = np.random.default_rng(0)
    model = pfc.Chain(pfc.Dense(h, h, init=lambda _r, *d: rng.standard_normal(d, dtype=np.float32)),
                      pfc.Dense(h, h, init=lambda _r, *d: rng.standard_normal(d, dtype=np.float32)))
    payload = sum(p.nbytes for _, layer in model.walk() for p in layer.params().values())
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        path = Path(d) / "big.jld2"
        pfc.save(path, model)
        del model
        print(f"peak memory of loading a {payload / 1e9:.2f} GB checkpoint ({Path(path).stat().st_size / 1e9:.2f} GB "
              "file, page cache warm), fresh process each:")
        for mode in ("jld2.load (mmap) + copy", "pfc.load"):
            out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, mode, str(path)], capture_output=True,
                                 text=True, check=True)
            grow = int(out.stdout.strip().splitlines()[-1]) * 1024
            print(f"  {mode:28s} peak growth {grow / 1e9:6.2f} GB = {grow / payload:5.2f}x payload"
                  f"{'   (target <= 1.30x)' if mode == 'pfc.load' else '   (anchor: the former way)'}")


if __name__ == "__main__":
    main()
