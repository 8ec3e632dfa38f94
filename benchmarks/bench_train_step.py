"""Benchmark 2: one gradient-descent step of the network and its linearisation (gd_trajectory).

A. Depth 1 (the paper's network, d = 1, relu, sigma_b = 1), N = 4, width 10^6, float64 and
   float32: the step through `gd_trajectory` with the fused kernel (the default there) and with
   the NumPy reference, against a streaming floor that reads and writes the same parameter
   arrays once (W, b, w_out of the network and of the linear model's delta: six arrays of
   `width` values, `a *= s` in place; the faster of NumPy and a two-thread numba loop).
B. Depth 3, N = 500, d = 10, width 4096, float64 (NumPy; matrix-product bound): the step's
   FLOPs (forward, backward, JVP and VJP of the linear model: 28 N width^2 plus small terms)
   per second against a plain square matmul timed here.

A step's time is the difference of two trajectories of different lengths divided by the
difference in steps, so the set-up (initial forward pass, kernel, copies at logged steps)
drops out. Usage: python benchmarks/bench_train_step.py [--threads 1] [--parts A B]
"""

from __future__ import annotations

import time

import numpy as np
from _common import apply_threads, best_time, gemm_rate, header, parser

import ntk_sweep.core.training as training
from ntk_sweep.core.network import MLP, init_params
from ntk_sweep.core.training import gd_trajectory, use_fused


def step_time(net: MLP, x, y, lr: float, short: int, long: int, backend: str) -> float:
    """Seconds per GD step: (t(long steps) - t(short steps)) / (long - short), best of 3."""
    params0 = init_params(net, 0)

    def run(steps):
        def go():
            for _ in gd_trajectory(net, params0, x, y, lr, steps, [0, steps], backend=backend):
                pass

        return go

    run(1)()  # compile / load kernels and warm the allocator
    t_short = best_time(run(short), 3)
    t_long = best_time(run(long), 3)
    return max(t_long - t_short, 1e-12) / (long - short)


def streaming_floor(width: int, dtype: str) -> tuple[float, float]:
    """Seconds to read and write six `width`-sized arrays once (in place `a *= s`), on one
    thread (NumPy) and on all threads (numba prange; NaN without numba)."""
    arrays = [np.ones(width, dtype=dtype) for _ in range(6)]
    scale = np.dtype(dtype).type(1.0)
    t_one = best_time(lambda: [np.multiply(a, scale, out=a) for a in arrays], 20)
    try:
        import numba as nb
    except ImportError:
        return t_one, float("nan")

    @nb.njit(parallel=True)
    def scale_in_place(a, s):
        for j in nb.prange(a.shape[0]):
            a[j] *= s

    scale_in_place(arrays[0], scale)
    t_all = best_time(lambda: [scale_in_place(a, scale) for a in arrays], 20)
    return t_one, t_all


def part_a(activations: list[str]) -> None:
    width, n = 10**6, 4
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (n, 1)), rng.standard_normal(n)
    print(f"-- A: depth 1, N={n}, d=1, width={width:,}")
    fused = {}
    for dtype in ("float64", "float32"):
        floor_1, floor_all = streaming_floor(width, dtype)
        floor = min(floor_1, floor_all)
        print(
            f"   {dtype}: streaming floor (6 arrays read + written once): "
            f"{floor_1 * 1e3:.2f} ms on one thread, {floor_all * 1e3:.2f} ms on all threads"
        )
        for activation in activations:
            net = MLP(1, width, 1, activation, "ntk", sigma_b=1.0, dtype=dtype)
            assert use_fused(net)
            t_f = step_time(net, x, y, 0.1, 5, 45, "fused")
            default = training.FUSED_PARALLEL_WORK
            training.FUSED_PARALLEL_WORK = 0  # the same kernel with the blocks on all threads
            try:
                t_p = step_time(net, x, y, 0.1, 5, 45, "fused")
            finally:
                training.FUSED_PARALLEL_WORK = default
            t_n = step_time(net, x, y, 0.1, 2, 6, "numpy")
            fused[dtype, activation] = t_f
            print(
                f"   {dtype} {activation}: fused step {t_f * 1e3:.2f} ms (one thread, the "
                f"default here) = {t_f / floor_1:.2f}x the one-thread floor, "
                f"{t_f / floor:.2f}x the best floor; with threads {t_p * 1e3:.2f} ms = "
                f"{t_p / floor:.2f}x the best floor"
            )
            print(
                f"   {dtype} {activation}: NumPy reference step {t_n * 1e3:.1f} ms = "
                f"{t_n / floor:.0f}x the best floor, {t_n / t_f:.0f}x the fused step"
            )
    for activation in activations:
        ratio = fused["float32", activation] / fused["float64", activation]
        print(f"   float32 / float64 fused step time ({activation}): {ratio:.2f}")


def deep_step_flops(n: int, d: int, w: int) -> float:
    """FLOPs of one `gd_trajectory` step (NumPy path) of a depth-3 network: the network's
    forward and backward passes and the linear model's JVP and VJP (matrix products)."""
    layer_products = 2 * n * (d * w + 2 * w * w + w)  # one pass through all weight layers
    forward = layer_products
    backward = layer_products + 2 * n * (w + 2 * w * w)  # weight gradients + deltas
    jvp = layer_products + 2 * n * (2 * w * w + w)  # inputs @ dW + dh @ W
    return forward + 2 * backward + jvp  # network backward, linear model's VJP


def part_b() -> None:
    n, d, width = 500, 10, 4096
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    net = MLP(d, width, 3, "relu", "ntk", sigma_b=1.0)
    rate = gemm_rate(2000)
    t = step_time(net, x, y, 0.1, 1, 3, "auto")
    rate = max(rate, gemm_rate(2000))  # before and after: the machine's load varies
    flops = deep_step_flops(n, d, width)
    print(f"-- B: depth 3, N={n}, d={d}, width={width}, float64 (NumPy)")
    print(
        f"   step {t:.3f} s, {flops / 1e9:.0f} GFLOP, {flops / t / 1e9:.1f} GFLOP/s = "
        f"{flops / t / rate:.0%} of the plain matmul ({rate / 1e9:.1f} GFLOP/s)"
    )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["A", "B"], choices=["A", "B"])
    p.add_argument("--activations", nargs="+", default=["relu"])
    args = p.parse_args()
    with apply_threads(args.threads):
        header("gradient-descent step, network + linearised model", args.threads)
        t0 = time.perf_counter()
        if "A" in args.parts:
            part_a(args.activations)
        if "B" in args.parts:
            part_b()
        print(f"   (benchmark wall time {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
