"""Figures benchmark: the cost of one paper run's figures against its training (issue 4).

Builds the record of `python run.py experiment=paper` (paper_toy: N = 4 points, 200-point test
grid; one hidden ReLU layer of width 10 000, NTK parameterization, lr 0.1, 3000 steps, the app's
log steps) from the library functions, then times

- training: `ntk_sweep.core.training.gd_trajectory` over the 3000 steps (network + linearised model,
  the app's default backend), best of 3; and, once, the same training with the measurements
  the app makes at each log step (empirical NTK on train and test inputs, test predictions),
  which is what a run's `train_time_s` covers;
- every figure: built (`figure_builders(record)[name]()`) and written as PNG (`save_png`,
  which is `fig.savefig(path, format="png", dpi=fig.dpi)`), best of a few repeats;
- the whole set (`tracking.figures=all`), first in the process (a single run pays that: font
  and mathtext caches are cold) and best of repeats; the `paper` set (the default: figs. 1-8
  and drift), best of repeats; and all through `run_figures` + `fig.savefig`,

and prints the ratios figures / training. Issue 4 asks figures < 20 % of a paper run's time,
which also includes kernel evaluation, MLflow logging and start-up. Importing Matplotlib (once
per process) is printed apart. Timings are wall clock; on a loaded machine compare the CPU
time printed for the best set.

Usage: python benchmarks/bench_figures.py [--repeat 5] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _common import apply_threads, header, parser

from ntk_sweep.config import compute_log_steps, nearest_step
from ntk_sweep.core import dynamics, kernels
from ntk_sweep.core.datasets import load_dataset
from ntk_sweep.core.network import MLP, Linearization, forward, init_params, param_movement
from ntk_sweep.core.training import gd_trajectory

WIDTH, STEPS, LR = 10_000, 3000, 0.1
SNAPSHOTS = [2, 20, 100, 500, 1000, 3000]


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def paper_record() -> tuple[dict, float]:
    """The figures record of the paper run and the (single) training time that produced it."""
    data = load_dataset("paper_toy", n_test=200)
    net = MLP(input_dim=1, width=WIDTH, depth=1, activation="relu", parameterization="ntk")
    x, y, x_test = data.x_train, data.y_train, data.x_test
    log_steps = compute_log_steps(STEPS, 20, SNAPSHOTS)
    params0 = init_params(net, 0)
    k0 = kernels.empirical_ntk(net, params0, x)
    k0_tt = kernels.empirical_ntk(net, params0, x_test, x)
    f0, f0_test = forward(net, params0, x), forward(net, params0, x_test)
    fk_train, fk_test = dynamics.kernel_predictions(k0, k0_tt, f0, f0_test, y, LR, log_steps)
    k_an, k_an_tt = kernels.analytic_ntk(net, x), kernels.analytic_ntk(net, x_test, x)
    fa_train, fa_test = dynamics.kernel_predictions(k_an, k_an_tt, f0, f0_test, y, LR, log_steps)
    lin_test = Linearization(net, params0, x_test)
    x_sub = x_test[:: max(1, len(x_test) // 64)]  # the app's test-kernel subset
    k0_sub = kernels.empirical_ntk(net, params0, x_sub)
    names = ["loss", "loss_lin", "loss_kernel", "test_loss", "kernel_drift", "kernel_distance"]
    names += ["kernel_drift_test", "kernel_distance_test"]
    names += ["lin_error_train", "lin_error_test", "kernel_pred_error_train"]
    names += ["kernel_pred_error_test", "analytic_pred_error_test", "param_movement"]
    history = {k: np.full(len(log_steps), np.nan) for k in names}
    f_test = np.full((len(log_steps), len(x_test)), np.nan)
    f_lin = np.full_like(f_test, np.nan)
    f_train = np.full((len(log_steps), len(x)), np.nan)
    k_last = k0
    t0 = time.perf_counter()
    for i, st in enumerate(gd_trajectory(net, params0, x, y, LR, STEPS, log_steps)):
        ft, fl = forward(net, st.params, x_test), lin_test.predict(st.delta_lin)
        k_last = kernels.empirical_ntk(net, st.params, x)
        f_test[i], f_lin[i], f_train[i] = ft, fl, st.f_train
        h = history
        h["loss"][i], h["loss_lin"][i] = st.loss, st.loss_lin
        h["loss_kernel"][i] = 0.5 * np.mean((fk_train[i] - y) ** 2)
        h["kernel_drift"][i] = kernels.kernel_drift(k_last, k0)
        h["kernel_distance"][i] = kernels.kernel_distance(k_last, k0)
        k_sub = kernels.empirical_ntk(net, st.params, x_sub)
        h["kernel_drift_test"][i] = kernels.kernel_drift(k_sub, k0_sub)
        h["kernel_distance_test"][i] = kernels.kernel_distance(k_sub, k0_sub)
        h["param_movement"][i] = param_movement(st.params, params0)[0]
        h["lin_error_train"][i] = _rms(st.f_train - st.f_lin_train)
        h["lin_error_test"][i] = _rms(ft - fl)
        h["kernel_pred_error_train"][i] = _rms(st.f_train - fk_train[i])
        h["kernel_pred_error_test"][i] = _rms(ft - fk_test[i])
        h["analytic_pred_error_test"][i] = _rms(ft - fa_test[i])
    train_time = time.perf_counter() - t0
    record = {
        "x_train": x,
        "y_train": y,
        "x_test": x_test,
        "y_test": None,
        "steps": np.asarray(log_steps),
        "snapshot_steps": SNAPSHOTS,
        "fig8_step": nearest_step(log_steps, 500),
        "f_train": f_train,
        "f_test": f_test,
        "f_lin_test": f_lin,
        "f_kernel_test": fk_test,
        "f_analytic_test": fa_test,
        "km_empirical_test": dynamics.kernel_regression(k0, k0_tt, y),
        "km_analytic_test": dynamics.kernel_regression(k_an, k_an_tt, y),
        "history": history,
        "ntk_init": k0,
        "ntk_final": k_last,
        "ntk_analytic": k_an,
        "lr": LR,
        "lr_effective": LR,
        "n_train": len(x),
        "meta": dict(
            width=WIDTH,
            depth=1,
            lr=LR,
            seed=0,
            activation="relu",
            parameterization="ntk",
            dataset="paper_toy",
            sigma_b=0.0,
        ),
    }
    return record, train_time


def train_only() -> float:
    """gd_trajectory alone over the paper's 3000 steps (no measurements), seconds."""
    data = load_dataset("paper_toy", n_test=200)
    net = MLP(input_dim=1, width=WIDTH, depth=1, activation="relu", parameterization="ntk")
    params0 = init_params(net, 0)
    log_steps = compute_log_steps(STEPS, 20, SNAPSHOTS)
    t0 = time.perf_counter()
    for _ in gd_trajectory(net, params0, data.x_train, data.y_train, LR, STEPS, log_steps):
        pass
    return time.perf_counter() - t0


def time_set(
    F, record, folder: Path, which: str = "all"
) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """One set as the app makes it: each figure built, then written as PNG.
    Returns (wall seconds, CPU seconds, name -> (build s, save s))."""
    per = {}
    w0, c0 = time.perf_counter(), time.process_time()
    for name, build in F.figure_builders(record, which).items():
        t0 = time.perf_counter()
        fig = build()
        t1 = time.perf_counter()
        F.save_png(fig, folder / f"{name}.png")
        per[name] = (t1 - t0, time.perf_counter() - t1)
    return time.perf_counter() - w0, time.process_time() - c0, per


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="repeats (best time is reported)")
    p.add_argument("--out", type=Path, default=None, help="keep the PNGs in this folder")
    args = p.parse_args()
    header("figures of one paper run vs its training", args.threads)
    with apply_threads(args.threads):
        t_import = time.perf_counter()
        from ntk_sweep import figures as F

        t_import = time.perf_counter() - t_import
        train_only()  # compiles / warms the training path
        record, train_measured = paper_record()
        train = min(train_only() for _ in range(3))
        folder = args.out or Path(tempfile.mkdtemp(prefix="bench_figures_"))
        folder.mkdir(parents=True, exist_ok=True)
        # first set in this process (what a single run pays), then the best of repeats (a
        # multirun's later jobs in the same process; also the steadier number)
        cold = time_set(F, record, folder)
        warm = [time_set(F, record, folder) for _ in range(args.repeat)]
        paper = [time_set(F, record, folder, "paper") for _ in range(args.repeat)]
        # the same set through run_figures + fig.savefig (the app's calls)
        app = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for name, fig in F.run_figures(record).items():
                fig.savefig(folder / f"{name}.png")
            app = min(app, time.perf_counter() - t0)

    best = {n: tuple(min(w[2][n][k] for w in warm) for k in (0, 1)) for n in cold[2]}
    print(f"   import ntk_sweep.figures (matplotlib): {t_import * 1e3:.0f} ms, once per process")
    print(f"   training (gd_trajectory, width {WIDTH}, {STEPS} steps, N=4): {train:.3f} s")
    print(
        f"   training with the per-log-step measurements (NTK, test predictions): "
        f"{train_measured:.3f} s"
    )
    print(f"   {'figure':32s} {'build ms':>9s} {'save ms':>8s} {'total':>7s} {'PNG KiB':>8s}")
    for name, (b, s) in best.items():
        size = (folder / f"{name}.png").stat().st_size / 1024
        print(f"   {name:32s} {b * 1e3:9.1f} {s * 1e3:8.1f} {(b + s) * 1e3:7.1f} {size:8.1f}")
    wall = min(w[0] for w in warm)
    cpu = min(w[1] for w in warm)
    print(f"   {len(best)} figures, first set in the process: {cold[0] * 1e3:.0f} ms wall")
    n, r = len(best), args.repeat
    print(f"   {n} figures, best of {r}: {wall * 1e3:.0f} ms wall, {cpu * 1e3:.0f} ms CPU")
    p_wall, p_cpu = min(w[0] for w in paper), min(w[1] for w in paper)
    print(
        f"   paper set ({len(paper[0][2])} figures, the default), best of {r}: "
        f"{p_wall * 1e3:.0f} ms wall, {p_cpu * 1e3:.0f} ms CPU"
    )
    print(f"   run_figures + fig.savefig of all, best of {args.repeat}: {app * 1e3:.0f} ms wall")
    print(
        f"   figures / gd_trajectory: first set {cold[0] / train:.0%}, best {wall / train:.0%}; "
        f"figures / training with measurements: first set {cold[0] / train_measured:.0%}, "
        f"best {wall / train_measured:.0%}"
    )
    print("   (issue 4: figures < 20 % of a paper run: training, kernels, logging, start-up)")
    print(f"   PNGs in {folder}")


if __name__ == "__main__":
    main()
