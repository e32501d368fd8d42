"""Time the article's six examples (default settings, as a user runs them) and `pyflux-compress demo`.

Target (issue 8): each example < 60 s on 2 cores; the demo "a few minutes". The machine's load average is
printed with every figure because the CI machine is shared: wall time under load is not the examples' cost,
so CPU time (user + sys of the child) is printed too.

    python benchmarks/bench_examples.py [--demo] [--only 01,04]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("0*.py"))


def timed(cmd: list[str]) -> tuple[int, float, float, str]:
    """(exit code, wall s, child CPU s, last stdout line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYFLUX_EXAMPLE_FAST": ""})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = (r.stdout.strip().splitlines() or [r.stderr.strip()[-200:]])[-1]
    return r.returncode, wall, cpu, last


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", action="store_true", help="also time `pyflux-compress demo --no-cache`")
    p.add_argument("--only", default="", help="comma-separated example prefixes, e.g. 01,04")
    args = p.parse_args()
    only = [s for s in args.only.split(",") if s]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for script in EXAMPLES:
            if only and not any(script.name.startswith(o) for o in only):
                continue
            load = os.getloadavg()[0]
            code, wall, cpu, last = timed([sys.executable, str(script), "--out", os.path.join(tmp, script.stem)])
            rows.append((script.name, code, wall, cpu, load))
            print(f"{script.name:<26} exit {code}  wall {wall:6.1f} s  cpu {cpu:6.1f} s  load {load:5.1f}  "
                  f"{'OK' if wall < 60 else 'OVER 60 s'}\n    {last[:160]}", flush=True)
        if args.demo:
            load = os.getloadavg()[0]
            code, wall, cpu, last = timed(["pyflux-compress", "demo", "--no-cache", "-q", "--out",
                                           os.path.join(tmp, "demo")])
            rows.append(("pyflux-compress demo", code, wall, cpu, load))
            print(f"{'pyflux-compress demo':<26} exit {code}  wall {wall:6.1f} s  cpu {cpu:6.1f} s  load {load:5.1f}")
    print(f"\nmachine: {os.cpu_count()} cores; load average now {os.getloadavg()[0]:.1f}")
    return 0 if all(r[1] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
