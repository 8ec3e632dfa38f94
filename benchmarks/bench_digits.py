"""Benchmark 6: the cost of one run of `experiment=digits_width_sweep` (10-class digits, 10
outputs, one-hot MSE, heavy-ball momentum on minibatches of 50, 500 steps, 12 log steps) against
today's scalar run on the same inputs (`dataset=digits`, even/odd, one output, full-batch GD,
the same steps and log steps), at each width of the sweep.

Both are the measurement alone (`core.measure.measure`: kernels, training, the constant-kernel
prediction, every metric; no tracking, no figures), timed in interleaved rounds in the same
run, best of `--repeat`. The ratio says what the multi-output setting costs per run; the
columns say where (the (N K x N K) kernels and the NumPy training path: the fused one-hidden-
layer step serves one output only).

Usage: python benchmarks/bench_digits.py [--widths 64 256 1024 4096] [--repeat 2]
"""

from __future__ import annotations

from _common import apply_threads, best_times, header, parser

from ntk_sweep.config import compute_log_steps
from ntk_sweep.core.measure import Schedule, measure
from ntk_sweep.core.network import MLP
from ntk_sweep.dataset_sources import load_dataset

STEPS, N_LOG, N = 500, 12, 100


def _setting(width: int, multiclass: bool):
    log_steps = tuple(compute_log_steps(STEPS, N_LOG, ()))
    task = "multiclass" if multiclass else "parity"
    data = load_dataset("digits", seed=0, task=task, n_train=N, n_test=N)
    net = MLP(64, width, 1, "relu", "ntk", sigma_b=1.0, outputs=10 if multiclass else 1)
    if multiclass:
        schedule = Schedule(
            0.1, STEPS, log_steps, analytic=True, optimizer="momentum", batch_size=50
        )
    else:
        schedule = Schedule(0.1, STEPS, log_steps, analytic=True)
    return lambda: measure(net, data, schedule, seed=0)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    header("digits_width_sweep run vs today's scalar digits run (measure only)", args.threads)
    print(f"   N = {N} train / {N} test, d = 64, {STEPS} steps, {N_LOG} log points, depth 1, relu")
    print()
    print("| width | scalar: 1 output, gd (s) | digits10: 10 outputs, momentum 50 (s) | ratio |")
    print("|---|---|---|---|")
    with apply_threads(args.threads):
        _setting(64, False)()  # compile the fused kernels once, outside the timings
        for width in args.widths:
            fns = {"scalar": _setting(width, False), "digits10": _setting(width, True)}
            best = best_times(fns, repeat=args.repeat)
            ratio = best["digits10"] / best["scalar"]
            print(
                f"| {width} | {best['scalar']:.2f} | {best['digits10']:.2f} | {ratio:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
