"""Backend detection cost: `import pyflux_compress; pfc.set_backend("auto")` in a fresh process.

Target (issue 7): "auto" decides in < 0.5 s with no network and no download where Julia is absent.
Anchor, measured in the same run: a fresh `python -c "pass"` process (interpreter start-up).
Prints the median of 7 runs of each and the ratio; also the time of the failing `set_backend("julia")`.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

PROBE = ("import time; t=time.perf_counter(); import pyflux_compress as pfc; b=pfc.set_backend('auto'); "
         "d=time.perf_counter()-t; t=time.perf_counter()\n"
         "try: pfc.set_backend('julia')\n"
         "except RuntimeError: pass\n"
         "print(b, d, time.perf_counter()-t)")


def run(code: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t, out


def main() -> None:
    anchor = statistics.median(run("pass")[0] for _ in range(7))
    rows = [run(PROBE) for _ in range(7)]
    total = statistics.median(r[0] for r in rows)
    fields = [r[1].split() for r in rows]
    chosen = {f[0] for f in fields}
    inproc = statistics.median(float(f[1]) for f in fields)
    fail = statistics.median(float(f[2]) for f in fields)
    print(f"anchor: fresh `python -c pass` process        {anchor * 1000:8.1f} ms")
    print(f"fresh process: import + set_backend('auto')  {total * 1000:8.1f} ms  ({total / anchor:.2f}x anchor)")
    print(f"  in-process import + set_backend('auto')    {inproc * 1000:8.1f} ms  -> {sorted(chosen)}")
    print(f"  set_backend('julia') failing (no Julia)    {fail * 1000:8.1f} ms")
    print(f"target < 500 ms: {'met' if inproc < 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
