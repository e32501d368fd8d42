"""Thread counts chosen deliberately: how many cores the engine uses, and for which products.

The policy (measured on 2 cores, see benchmarks/RESULTS.md "Threads"):

* **Whole steps on shards** (``train/parallel.py``): ``fit``/``predict`` run a per-sample model's forward and
  backward on ``threads`` shards of the batch at once, one per thread (via :func:`map_tasks`); the rules
  below then apply inside each shard with one thread. Other models (BatchNorm in training) use the rules below.
* **Large GEMMs** (Dense layers on a batch: ``batch x in x out`` multiply-adds of 10^6 and more) run in BLAS
  with ``threads`` BLAS threads, set with threadpoolctl for the duration of ``fit``/``predict``/``distill``.
* **Small GEMMs** (the convolution kernels' per-sample products, 10^4-10^6 multiply-adds each, which OpenBLAS
  runs single-threaded anyway) are split *over the batch*: with ``threads > 1`` the kernels hand contiguous
  sample ranges to a pool of worker threads (numpy releases the GIL in copies and products), each calling
  single-threaded BLAS. No product ever runs ``threads x threads`` threads.
* **Default** (``threads=None``): the cores that other processes leave idle — ``available_cores()`` minus the
  number of other runnable processes (from ``/proc/loadavg``, falling back to the 1-minute load average
  minus this process's own recent CPU use), at least 1, re-evaluated at every epoch. OpenBLAS's default (one
  busy-waiting thread per core) is what made epochs swing 3-30x under background load: a waiting BLAS thread
  spins on a core another process needs. ``PYFLUX_COMPRESS_THREADS=<n>`` fixes the default.

``use(n)`` applies a choice (nestable context manager); ``active()`` is the count in force (1 outside any
``use``: bare ``model(x)`` calls stay single-threaded in the kernels and leave BLAS as configured);
``info()`` reports the policy for ``pfc.backend_info()``.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

__all__ = ["ENV_VAR", "available_cores", "other_load", "default_threads", "resolve", "use", "active",
           "threads_keyword", "tune_malloc", "serial", "map_tasks", "map_chunks", "info"]

ENV_VAR = "PYFLUX_COMPRESS_THREADS"

_state = threading.local()  # per-thread stack of counts in force (the kernels read the top)
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
LOAD_SAMPLE_SECONDS = 1.0  # how long one sample of the machine's load decides the default thread count
_load_sample: tuple[float, float] | None = None  # (time.monotonic(), other_load()) of the last sample
_controller: Any = None  # threadpoolctl.ThreadpoolController (building one inspects every loaded library: ~4 ms)
_controller_modules = -1  # len(sys.modules) when it was built: a new import may have loaded another BLAS
_malloc_tuned: bool | None = None  # tune_malloc()'s answer (None: not tried yet)
_cpu_mark: tuple[float, float] | None = None  # (monotonic, process_time) at the previous estimate
_own_rate = 0.0  # this process's recent CPU use in cores


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _own_cpu_rate() -> float:
    """This process's CPU use (cores) since the previous call, smoothed; 0 on the first call."""
    global _cpu_mark, _own_rate
    now = (time.monotonic(), time.process_time())
    if _cpu_mark is not None and now[0] - _cpu_mark[0] > 0.5:
        _own_rate = (now[1] - _cpu_mark[1]) / (now[0] - _cpu_mark[0])
    if _cpu_mark is None or now[0] - _cpu_mark[0] > 0.5:
        _cpu_mark = now
    return _own_rate


def other_load() -> float:
    """Estimated number of *other* processes competing for the CPUs right now.

    Linux: runnable tasks from ``/proc/loadavg`` (4th field, minus this process's running thread), sampled
    three times over ~2 ms and the median kept (a single sample is noisy). Elsewhere: the 1-minute load
    average minus this process's own recent CPU use. 0 when nothing is known.
    """
    samples = []
    for _ in range(3):
        try:
            with open("/proc/loadavg", "rb") as f:
                running = int(f.read().split()[3].split(b"/")[0])
            samples.append(max(0, running - 1))
        except (OSError, ValueError, IndexError):
            break
        time.sleep(0.001)
    if samples:
        return float(sorted(samples)[len(samples) // 2])
    try:
        return max(0.0, os.getloadavg()[0] - _own_cpu_rate())
    except (AttributeError, OSError):
        return 0.0


def default_threads() -> int:
    """The policy's default: ``PYFLUX_COMPRESS_THREADS`` if set, else idle cores (>= 1), see the module doc."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be a positive integer; got {env!r}") from None
        if n < 1:
            raise ValueError(f"{ENV_VAR} must be a positive integer; got {env!r}")
        return n
    cores = available_cores()
    return max(1, min(cores, int(cores - _recent_other_load() + 0.5)))


def _recent_other_load() -> float:
    """:func:`other_load`, sampled at most once per ``LOAD_SAMPLE_SECONDS``: sampling takes ~3 ms (three reads
    1 ms apart), which would dominate a ``predict`` of a small batch called in a loop."""
    global _load_sample
    now = time.monotonic()
    if _load_sample is None or now - _load_sample[0] > LOAD_SAMPLE_SECONDS:
        _load_sample = (now, other_load())
    return _load_sample[1]


def resolve(threads: int | None, name: str = "threads") -> int:
    """Validate a user's ``threads=`` argument: None -> :func:`default_threads`, else an int >= 1."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int,)) and not hasattr(threads, "__index__"):
        raise ValueError(f"{name} must be a positive integer or None (automatic); got {threads!r}")
    n = int(threads)
    if n < 1:
        raise ValueError(f"{name} must be a positive integer or None (automatic); got {threads!r}")
    return n


def _blas_controller() -> Any:
    global _controller, _controller_modules
    if _controller is None or len(sys.modules) != _controller_modules:
        import numpy  # noqa: F401  (its BLAS must be loaded to be found)
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
        _controller_modules = len(sys.modules)
    return _controller


# glibc's settings once a freed block of 32 MB has raised its dynamic thresholds (mallopt M_MMAP_THRESHOLD = -3,
# M_TRIM_THRESHOLD = -1): blocks up to 32 MB come from the heap, and up to 64 MB of freed heap stays mapped.
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 64 << 20


def tune_malloc() -> bool:
    """Fix glibc's allocator thresholds at the values its own dynamic rule ends at (once per process, from
    :func:`use`); True if applied. Returns False off glibc.

    Why: a training step allocates and frees a few arrays of 1-10 MB (column matrices, activations). glibc
    serves a block above its *mmap threshold* with a fresh ``mmap`` whose pages are faulted in on every step;
    the threshold rises only when a larger mapped block is freed, so the same LeNet step cost 12.6 or 21-23 ms
    of CPU (1 thread) depending on which sizes the process happened to free first (e.g. a 2-thread run's 5 MB
    shards before a 1-thread run's 10 MB columns). Fixed thresholds make the cost independent of history.
    """
    global _malloc_tuned
    if _malloc_tuned is None:  # one attempt per process
        _malloc_tuned = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                return False
            _malloc_tuned = bool(mallopt(-3, MALLOC_MMAP_THRESHOLD)) and bool(mallopt(-1, MALLOC_TRIM_THRESHOLD))
    return _malloc_tuned


@contextlib.contextmanager
def use(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` cores (None: the default policy); yields the resolved count.

    Sets the BLAS (OpenBLAS/MKL/BLIS) thread count with threadpoolctl and the kernels' batch split; both are
    restored on exit. Nested ``use`` calls stack; ``use(None)`` inside another ``use`` keeps its count.
    """
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    n = stack[-1] if threads is None and stack else resolve(threads)  # None inside a use() inherits it
    if _malloc_tuned is None:
        tune_malloc()
    limiter = _blas_controller().limit(limits=n, user_api="blas")
    stack.append(n)
    try:
        yield n
    finally:
        stack.pop()
        limiter.restore_original_limits()


def threads_keyword(func: Callable) -> Callable:
    """Give ``func`` a keyword-only ``threads: int | None = None`` argument that runs the call under
    :func:`use` (the one place ``fit``, ``predict``, ``distill``, ... get their ``threads=`` from).

    Put it outermost: the keyword is consumed here, so the decorated function never sees it.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, threads: int | None = None, **kwargs: Any) -> Any:
        with use(threads):
            return func(*args, **kwargs)

    sig = inspect.signature(func)
    extra = inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="int | None")
    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra])  # type: ignore[attr-defined]
    return wrapper


def active() -> int:
    """Threads in force for the calling thread: the innermost :func:`use`, else 1."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else 1


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(2, available_cores()), thread_name_prefix="pfc-kernel")
        return _pool


@contextlib.contextmanager
def serial() -> Iterator[None]:
    """Run the block with one thread in the kernels (BLAS untouched): what a worker of :func:`map_tasks` runs
    its task under, so a task never splits its own work over threads again."""
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(1)
    try:
        yield
    finally:
        stack.pop()


def map_tasks(fn: Callable[[int], Any], tasks: int) -> list[Any]:
    """``[fn(0), ..., fn(tasks - 1)]``, run on ``min(active(), tasks)`` threads; results in task order.

    The caller's thread takes task 0 (and every ``workers``-th after it), pool threads the others, each in
    :func:`serial` mode with one BLAS thread, so n workers never run n x n threads. With one thread the tasks
    run in order on the caller's thread. ``fn`` must only write disjoint outputs.
    """
    workers = min(active(), tasks)
    if workers <= 1:
        return [fn(i) for i in range(tasks)]

    def run(first: int) -> list[Any]:
        with serial():
            return [fn(i) for i in range(first, tasks, workers)]

    pool = _executor()
    # the workers' products are small: one BLAS thread each
    limiter = _blas_controller().limit(limits=1, user_api="blas")
    try:
        futures = [pool.submit(run, w) for w in range(1, workers)]
        shares = [run(0)] + [fut.result() for fut in futures]
    finally:
        limiter.restore_original_limits()
    return [shares[i % workers][i // workers] for i in range(tasks)]


def map_chunks(fn: Callable[[int, int], Any], n: int, chunks: int) -> list[Any]:
    """Call ``fn(lo, hi)`` over ``chunks`` contiguous ranges covering ``range(n)``; returns results in order.

    The ranges run as :func:`map_tasks` (on ``min(active(), chunks)`` threads, the caller's thread taking
    the first range); with one thread they run in order on the caller's thread.
    """
    chunks = max(1, min(chunks, n))
    bounds = [(n * i // chunks, n * (i + 1) // chunks) for i in range(chunks)]
    return map_tasks(lambda i: fn(*bounds[i]), chunks)


def info() -> dict[str, Any]:
    """The thread policy and what it would choose now (for ``pfc.backend_info()["threads"]``)."""
    try:
        blas = [{k: d.get(k) for k in ("internal_api", "version", "num_threads")}
                for d in _blas_controller().info() if d.get("user_api") == "blas"]
    except ImportError:
        blas = []
    env = os.environ.get(ENV_VAR)
    return {"default": default_threads(), "source": f"{ENV_VAR}={env}" if env else "idle cores",
            "available_cores": available_cores(), "other_load": other_load(), "active": active(),
            "blas": blas,
            "policy": "large GEMMs: BLAS threads = threads; small (per-sample conv) GEMMs: batch split over "
                      "threads, single-threaded BLAS; default: cores not used by other processes"}
