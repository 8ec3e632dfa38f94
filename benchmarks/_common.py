"""Shared helpers of the benchmark scripts: timing, the machine's matmul rate, a header line.

Every script measures its baseline in the same run and prints ratios, so numbers from a busy
machine stay comparable with each other. Timings are the best of several repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def best_time(fn: Callable[[], object], repeat: int = 5, min_total: float = 0.0) -> float:
    """Best wall time of `fn()` over `repeat` calls (more calls while the total is < min_total)."""
    best, total, calls = float("inf"), 0.0, 0
    while calls < repeat or total < min_total:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, calls = min(best, dt), total + dt, calls + 1
    return best


def best_times(fns: dict[str, Callable[[], object]], repeat: int = 5) -> dict[str, float]:
    """Best wall time of each function, timed in interleaved rounds (A, B, A, B, ...) so that
    a burst of load from other processes does not fall on one of them only."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def gemm(n: int = 2000, dtype: str = "float64") -> tuple[Callable[[], object], float]:
    """A plain square matrix product `a @ b` through NumPy's BLAS and its FLOPs (2 n^3), to
    time among the benchmark's own functions (`best_times`) for the machine's matmul rate."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    return (lambda: a @ b), 2.0 * n**3


def gemm_rate(n: int = 2000, dtype: str = "float64", repeat: int = 5) -> float:
    """FLOP/s of a plain square matrix product `a @ b` (2 n^3 FLOPs) through NumPy's BLAS."""
    fn, flops = gemm(n, dtype)
    return flops / best_time(fn, repeat)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="limit BLAS and numba to this many threads (default: their own defaults)",
    )
    return p


def apply_threads(threads: int | None):
    """Context manager limiting BLAS (threadpoolctl) and numba to `threads` (None: no limit)."""
    from contextlib import ExitStack

    stack = ExitStack()
    if threads is not None:
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(threads))
        try:
            import numba

            numba.set_num_threads(threads)
        except ImportError:
            pass
    return stack


def header(title: str, threads: int | None) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"== {title}")
    print(
        f"   python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f}, "
        f"threads: {'default' if threads is None else threads}"
    )
