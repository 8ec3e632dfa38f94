"""Figures benchmark: the cost of one paper run's figures against its training (target: under 20 %).

Builds the record of `python run.py experiment=paper` (paper_toy: N = 4 points, 200-point test
grid; one hidden ReLU layer of width 10 000, NTK parameterization, lr 0.1, 3000 steps, the app's
log steps) as the app does (`core.measure.measure`, `figure_adapter.figure_inputs`), then times

- training: `ntk_sweep.core.training.gd_trajectory` over the 3000 steps (network + linearised model,
  the app's default backend), best of 3; and, once, the same training with the measurements
  the app makes at each log step (empirical NTK on train and test inputs, test predictions),
  which is what a run's `train_time_s` covers;
- every figure: built (`figure_builders(record)[name]()`) and written as PNG (`save_png`,
  which is `fig.savefig(path, format="png", dpi=fig.dpi)`), best of a few repeats;
- the whole set (`tracking.figures=all`), first in the process (a single run pays that: font
  and mathtext caches are cold) and best of repeats; the `paper` set (the default: figs. 1-8
  and drift), best of repeats; and all through `run_figures` + `fig.savefig`,

and prints the ratios figures / training. The target is figures < 20 % of a paper run's time,
which also includes kernel evaluation, MLflow logging and start-up. Importing Matplotlib (once
per process) is printed apart. Timings are wall clock; on a loaded machine compare the CPU
time printed for the best set.

Usage: python benchmarks/bench_figures.py [--repeat 5] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import ROOT, apply_threads, header, parser

from ntk_sweep.config import compute_log_steps
from ntk_sweep.core.network import MLP, init_params
from ntk_sweep.core.training import gd_trajectory
from ntk_sweep.dataset_sources import load_dataset

WIDTH, STEPS, LR = 10_000, 3000, 0.1
SNAPSHOTS = [2, 20, 100, 500, 1000, 3000]


def paper_record() -> tuple[dict, float]:
    """The figures record of the paper run, made as the app makes it (`core.measure.measure`,
    then `figure_adapter.figure_inputs`), and the time of that measurement."""
    from hydra import compose, initialize_config_dir

    from ntk_sweep.core.measure import measure
    from ntk_sweep.experiment import figure_settings, preflight, schedule_of
    from ntk_sweep.figure_adapter import figure_inputs

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=paper", f"width={WIDTH}", f"lr={LR}"])
    data, net, _ = preflight(cfg)
    t0 = time.perf_counter()
    record = measure(net, data, schedule_of(cfg, data), int(cfg.seed))
    return figure_inputs(figure_settings(cfg), data, net, record), time.perf_counter() - t0


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
    print("   (target: figures < 20 % of a paper run: training, kernels, logging, start-up)")
    print(f"   PNGs in {folder}")


if __name__ == "__main__":
    main()
