"""Benchmark 3: peak memory of the empirical NTK at width 10^6 with N = 1000 inputs.

Depth 1, d = 10, relu, float64. One N x width array would take 8 GB; `empirical_ntk` works on
chunks of the hidden layer (32 MiB per work array), so its memory must stay far below that
(target: peak resident memory of the whole process < 2 GiB). Each backend runs in a fresh
subprocess that reports its resident memory before the call (/proc), the process's peak
resident memory after it (`resource.getrusage`, ru_maxrss) and the peak of the NumPy
allocations made during the call (`tracemalloc`, which NumPy reports its buffers to).

Usage: python benchmarks/bench_memory.py [--width 1000000] [--n 1000]
"""

from __future__ import annotations

import json
import subprocess
import sys

from _common import ROOT, header, parser

CHILD = r"""
import json, resource, sys, time, tracemalloc
sys.path.insert(0, {root!r})
import numpy as np
from ntk_sweep.core.kernels import empirical_ntk
from ntk_sweep.core.network import MLP, init_params

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

net = MLP(10, {width}, 1, "relu", "ntk", sigma_b=1.0)
params = init_params(net, 0)
x = np.random.default_rng(0).standard_normal(({n}, 10))
empirical_ntk(net, params, x[:2], backend={backend!r})  # load compiled kernels, if any
before = rss_mib()
tracemalloc.start()
t0 = time.perf_counter()
k = empirical_ntk(net, params, x, backend={backend!r})
seconds = time.perf_counter() - t0
traced = tracemalloc.get_traced_memory()[1] / 2**20
tracemalloc.stop()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
params_mib = sum(w.nbytes + b.nbytes for w, b in params) / 2**20
print(json.dumps(dict(before=before, peak=peak, traced=traced, seconds=seconds,
                      params=params_mib, shape=list(k.shape))))
"""


def measure(width: int, n: int, backend: str) -> dict:
    code = CHILD.format(root=str(ROOT), width=width, n=n, backend=backend)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=10**6)
    p.add_argument("--n", type=int, default=1000)
    args = p.parse_args()
    header(f"empirical NTK memory, N={args.n}, d=10, width={args.width:,}, float64", None)
    one_array = args.n * args.width * 8 / 2**20
    print(f"   one N x width array would take {one_array:,.0f} MiB")
    for backend in ("fused", "numpy"):
        r = measure(args.width, args.n, backend)
        verdict = "under" if r["peak"] < 2048 else "OVER"
        print(
            f"   {backend:5s}: peak RSS {r['peak']:,.0f} MiB ({verdict} the 2 GiB target); "
            f"RSS before the call {r['before']:,.0f} MiB (parameters {r['params']:,.0f} MiB); "
            f"NumPy allocations during the call peak at {r['traced']:,.0f} MiB; "
            f"{r['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
