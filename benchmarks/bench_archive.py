"""The compressed archive (``.pfcz``) against anchors measured in the same run (issue 16).

Model: the 14.7M-weight MLP of ``bench_prune.py`` — ``Chain(Dense(4096 => 2048), Dense(2048 => 2048),
Dense(2048 => 1024), Dense(1024 => 10))``, random normal weights — pruned 90 % (global magnitude) and quantized
to int8 (``pfc.quantize(pruned, 8)``: symmetric, per tensor). Targets, each printed as a ratio:

* encode (``save_compressed``) <= 3 s;
* size <= zstd level 19 of (the bitmap of the kept weights + their nonzero int8 codes), the smaller of the two
  streams compressed together or apart (our archive also holds the biases, scales and header, the anchor not);
* peak memory of ``save_compressed`` <= 2x the int8 model (int8 weights + float32 scales and biases), measured in
  a fresh subprocess as the rise of the resident-set high-water mark (``/proc/self/status`` VmHWM, reset through
  ``/proc/self/clear_refs`` just before the call) over the resident set before it;
* load (``load_compressed``, returning a ready QuantizedChain) <= 2x ``np.load`` of the same arrays (int8 codes,
  masks, scales, biases) from an ``np.savez_compressed`` file; ``np.savez`` (uncompressed) is printed as well;
* a 3x2 ``pfc.sweep`` (sparsity 0.5/0.8/0.9 x fp32/int8 of the article's MLP on 10,000 Fashion-MNIST images)
  <= 2x a hand-written loop doing the same work (prune, quantize, count, accuracy, and a compressed size by
  ``np.savez_compressed`` into memory). Medians of interleaved rounds.

Run: ``python benchmarks/bench_archive.py [--rounds 3] [--skip-sweep]``. Prints a Markdown table.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # 2 shared cores: pin BLAS so the anchors and ours see the same machine

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pyflux_compress as pfc  # noqa: E402
from pyflux_compress.compression import archive  # noqa: E402

from bench_prune import build  # noqa: E402  (the same 14.7M-weight model)


def model_14m():
    """The 90 %-pruned int8 MLP (deterministic)."""
    return pfc.quantize(pfc.prune(build(), 0.9, scope="global"), 8)


def arrays_of(q) -> dict[str, np.ndarray]:
    out = {}
    for path, layer in q.walk():
        out[f"{path}.qweight"] = layer.qweight
        out[f"{path}.mask"] = np.asarray(layer.masks["weight"])
        out[f"{path}.w_scale"] = np.atleast_1d(layer.w_scale)
        out[f"{path}.bias"] = layer.float_layer.bias
    return out


def median_time(fn, rounds: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def _status_kib() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)
                if k in ("VmRSS", "VmHWM")}


def child_peak(what: str, path: str) -> None:
    """Subprocess entry: build the model (or nothing), reset the high-water mark, run ``what``, print KiB; then
    run it again under ``tracemalloc`` (numpy reports its buffers to it) for the peak of live allocations."""
    import gc
    import tracemalloc

    q = model_14m() if what == "save" else None
    gc.collect()
    before = _status_kib()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    if what == "save":
        pfc.save_compressed(path, q)
    else:
        q = pfc.load_compressed(path)
    peak = _status_kib()["VmHWM"]
    del q
    q = model_14m() if what == "save" else None
    gc.collect()
    tracemalloc.start()
    if what == "save":
        pfc.save_compressed(path, q)
    else:
        q = pfc.load_compressed(path)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"before_kib": before, "peak_kib": peak, "traced_peak_bytes": traced}))


def peak_rise(what: str, path: str) -> tuple[int, int] | tuple[None, None]:
    """(bytes the peak resident set rose by, peak bytes allocated) during ``what`` ("save" / "load"), measured
    in a fresh subprocess."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None, None
    out = subprocess.run([sys.executable, __file__, "--child", what, path], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), check=True)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return 1024 * (d["peak_kib"] - d["before_kib"]), d["traced_peak_bytes"]


def sweep_vs_hand(rounds: int) -> tuple[float, float]:
    """Medians (s) of ``pfc.sweep`` 3x2 and of the hand-written loop, interleaved."""
    Xtr, ytr, Xte, yte = pfc.datasets.load("fashion-mnist")
    Xtr, Xte = Xtr.reshape(len(Xtr), -1)[:10000], Xte.reshape(len(Xte), -1)
    model = pfc.parse("Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))", seed=0)
    pfc.fit(model, Xtr, ytr[:10000], epochs=1, progress=False, seed=0)
    sparsities, bits = (0.5, 0.8, 0.9), (None, 8)

    def by_sweep():
        return pfc.sweep(model, Xte, yte, sparsities=sparsities, bits=bits, progress=False)

    def by_hand():
        rows = [float(pfc.accuracy(model, Xte, yte))]
        for s in sparsities:
            pruned = pfc.prune(model, s, scope="global")
            for b in bits:
                m = pruned if b is None else pfc.quantize(pruned, bits=b, granularity="per_channel")
                arrays = {}
                params = nonzeros = 0
                for path, layer in m.walk():
                    w = layer.weight_dequantized() if hasattr(layer, "qweight") else layer.weight
                    bias = getattr(layer, "float_layer", layer).bias
                    params += w.size + bias.size
                    nonzeros += int(np.count_nonzero(w)) + int(np.count_nonzero(bias))
                    arrays[path + ".w"] = layer.qweight if hasattr(layer, "qweight") else layer.weight
                    arrays[path + ".b"] = bias
                buf = io.BytesIO()
                np.savez_compressed(buf, **arrays)
                rows.append((params, nonzeros, buf.tell(), float(pfc.accuracy(m, Xte, yte))))
        return rows

    t_sweep, t_hand = [], []
    for _ in range(rounds):
        t_sweep.append(median_time(by_sweep, 1)[0])
        t_hand.append(median_time(by_hand, 1)[0])
    ratio = statistics.median([a / b for a, b in zip(t_sweep, t_hand)])
    return statistics.median(t_sweep), statistics.median(t_hand), ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("WHAT", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_peak(*args.child)
        return
    import zstandard

    q = model_14m()
    arrays = arrays_of(q)
    n = sum(layer.qweight.size for _, layer in q.walk())
    int8_bytes = sum(a.nbytes for k, a in arrays.items() if not k.endswith(".mask"))
    print(f"model: {build()}, 90% pruned (global), int8: {n:,} weights; int8 model {int8_bytes:,} B")

    # anchors -----------------------------------------------------------------------------------------------
    layers = [layer for _, layer in q.walk()]
    bitmap = b"".join(np.packbits(np.asarray(l.masks["weight"]).ravel()).tobytes() for l in layers)
    codes = b"".join(l.qweight[l.qweight != 0].tobytes() for l in layers)
    z19 = zstandard.ZstdCompressor(level=19)
    t_z, together = median_time(lambda: len(z19.compress(bitmap + codes)), 1)
    apart = len(z19.compress(bitmap)) + len(z19.compress(codes))
    anchor_size = min(together, apart)

    with tempfile.TemporaryDirectory() as tmp:
        npz, npz_raw, pfcz = (os.path.join(tmp, name) for name in ("a.npz", "raw.npz", "m.pfcz"))
        t_savez, _ = median_time(lambda: np.savez_compressed(npz, **arrays), 1)
        np.savez(npz_raw, **arrays)

        def np_load(p):
            with np.load(p) as z:
                return {k: z[k] for k in z.files}

        # ours and the anchors, interleaved (load is short and noisy: more rounds, paired ratios)
        t_save, t_size, t_load, t_npload, t_npload_raw = [], [], [], [], []
        for i in range(3 * args.rounds):
            if i < args.rounds:
                t_save.append(median_time(lambda: pfc.save_compressed(pfcz, q), 1)[0])
                t_size.append(median_time(lambda: archive.archive_size(q), 1)[0])
            t_load.append(median_time(lambda: pfc.load_compressed(pfcz), 1)[0])
            t_npload.append(median_time(lambda: np_load(npz), 1)[0])
            t_npload_raw.append(median_time(lambda: np_load(npz_raw), 1)[0])
        size = os.path.getsize(pfcz)
        back = pfc.load_compressed(pfcz)
        exact = all(np.array_equal(a.qweight, b.qweight) and np.array_equal(a.masks["weight"], b.masks["weight"])
                    for (_, a), (_, b) in zip(q.walk(), back.walk()))
        chosen = archive.archive_header(open(pfcz, "rb").read())
        del back
        save_peak, save_traced = peak_rise("save", pfcz)
        load_peak, load_traced = peak_rise("load", pfcz)
    med = statistics.median
    enc, ld, ldz, ldr = med(t_save), med(t_load), med(t_npload), med(t_npload_raw)
    load_ratio = med([a / b for a, b in zip(t_load, t_npload)])  # median of paired ratios
    rows = [
        ("encode: save_compressed (s)", f"{enc:.2f}", "3 s", f"{enc / 3:.2f}", enc <= 3),
        ("size (bytes) vs zstd-19(bitmap + nonzero int8 codes)", f"{size:,}", f"{anchor_size:,}",
         f"{size / anchor_size:.3f}", size <= anchor_size),
        ("peak memory of save (bytes) vs 2x int8 model", f"{save_peak:,}" if save_peak is not None else "n/a",
         f"{2 * int8_bytes:,}", f"{save_peak / (2 * int8_bytes):.2f}" if save_peak is not None else "n/a",
         save_peak is not None and save_peak <= 2 * int8_bytes),
        ("peak bytes allocated by save (tracemalloc) vs 2x int8 model", f"{save_traced:,}" if save_traced else "n/a",
         f"{2 * int8_bytes:,}", f"{save_traced / (2 * int8_bytes):.2f}" if save_traced else "n/a",
         save_traced is not None and save_traced <= 2 * int8_bytes),
        ("load: load_compressed vs 2x np.load(savez_compressed npz) (s; ratio = median of paired rounds)",
         f"{ld:.3f}", f"{2 * ldz:.3f}", f"{load_ratio / 2:.2f}", load_ratio <= 2),
    ]
    if not args.skip_sweep:
        ts, th, ratio = sweep_vs_hand(args.rounds)
        rows.append(("3x2 sweep vs 2x hand-written loop (s; ratio = median of paired rounds)", f"{ts:.2f}",
                     f"{2 * th:.2f}", f"{ratio / 2:.2f}", ratio <= 2))
    print()
    print("| measure | ours | target | ours / target | met |")
    print("|---|---:|---:|---:|---|")
    for name, ours, target, ratio, met in rows:
        print(f"| {name} | {ours} | {target} | {ratio} | {'yes' if met else 'NO'} |")
    print()
    print(f"also measured: archive_size (size without a file) {med(t_size):.2f} s; zstd-19 anchor itself "
          f"{t_z:.2f} s (together {together:,} B, apart {apart:,} B); np.savez_compressed {t_savez:.2f} s; "
          f"np.load of an uncompressed npz {ldr:.3f} s (load / that = {ld / ldr:.1f}x); peak memory of load "
          f"{load_peak if load_peak is None else f'{load_peak:,}'} B (allocated: {load_traced} B; the loaded "
          f"QuantizedChain holds float32 dequantized and float64 kernel weights: ~13 B per weight); round trip "
          f"exact: {exact}")
    streams = {}
    for s in chosen["streams"]:
        streams[s["codec"]] = streams.get(s["codec"], 0) + 1
    encodings = []
    for e in chosen["layers"]:
        qw = e["qweight"]
        encodings.append((e["path"], qw["enc"], qw.get("order"), qw.get("positions", {}).get("enc"),
                          (qw.get("values") or qw).get("bits")))
    print(f"streams by codec: {streams}; qweight encodings (path, form, order, positions, bits per code): {encodings}")


if __name__ == "__main__":
    main()
