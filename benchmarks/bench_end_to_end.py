"""Benchmark 4: the mission's command line, `python run.py -m width=100,1000,10000`, end to end.

Runs it in a fresh temporary directory (fresh MLflow store) and reports the total wall time
(target < 20 s on 2 cores, with figures), then splits it: imports (a separate interpreter that
only imports what a run imports), and, from a run of the same command in one interpreter whose
entry points are wrapped in wall-clock timers, the time spent in
- training: `training.gd_trajectory` (network + linearised model, every step);
- kernels: `kernels.*` and `dynamics.*` (empirical and analytic NTKs at init and at log
  steps, spectra, kernel predictions);
- network evaluation: `network.forward`, `Linearization.predict`, `param_movement` (test-input
  predictions and measurements at log steps);
- logging: every function of `ntk_sweep.tracking` (MLflow metrics, params, tags, artifacts)
  and `MetricLog.flush` (the batched per-step metrics), but `open_store`;
- store start-up: `tracking.open_store`, which imports MLflow's SQLAlchemy store (~1 s of
  imports) and connects to the database (creating its tables in a fresh store), once per
  process (later runs reuse the store);
- figures: `experiment._save_figures` (drawing and writing the PNGs);
- the rest (interpreter start, imports, Hydra, configuration, bookkeeping).
A call nested in another timed call counts for the outer one only.
Target: kernel evaluation plus logging under 30 % of a run: reported with and without the
one-time store start-up.

Usage: python benchmarks/bench_end_to_end.py [--overrides width=100,1000,10000]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, header, parser

IMPORTS = (
    "import time; t = time.perf_counter(); "
    "import numpy, scipy.special, hydra, omegaconf, mlflow, matplotlib; "
    "matplotlib.use('Agg'); import matplotlib.pyplot; "
    "import ntk_sweep.experiment, ntk_sweep.tracking, ntk_sweep.figures, ntk_sweep.core.kernels, "
    "ntk_sweep.core.dynamics, ntk_sweep.core.network, ntk_sweep.callbacks, ntk_sweep.core._fused; "
    "print(time.perf_counter() - t)"
)

TIMED = """
import functools, inspect, json, runpy, sys, time
sys.argv = ["run.py", "-m", *{overrides!r}, "hydra.sweep.dir={sweep}"]
sys.path.insert(0, {root!r})
t_start = time.perf_counter()
from ntk_sweep import experiment, tracking
from ntk_sweep.core import dynamics, kernels, network, training

spent = {{}}
active = [0]

def timed(category, fn):
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            it = fn(*args, **kwargs)
            while True:
                outer = active[0] == 0
                active[0] += 1
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    active[0] -= 1
                    if outer:
                        spent[category] = spent.get(category, 0.0) + time.perf_counter() - t0
                yield item
        return gen

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        outer = active[0] == 0
        active[0] += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            active[0] -= 1
            if outer:
                spent[category] = spent.get(category, 0.0) + time.perf_counter() - t0
    return wrapper

def wrap_module(module, category, names=None):
    for name, obj in list(vars(module).items()):
        if (names is None or name in names) and inspect.isfunction(obj) \
                and obj.__module__ == module.__name__ and not name.startswith("_"):
            setattr(module, name, timed(category, obj))

wrap_module(training, "training", ["gd_trajectory"])
wrap_module(network, "network evaluation", ["forward", "param_movement", "forward_cache"])
network.Linearization.predict = timed("network evaluation", network.Linearization.predict)
wrap_module(kernels, "kernels")
wrap_module(dynamics, "kernels")
open_store = tracking.open_store
wrap_module(tracking, "logging")
tracking.open_store = timed("store start-up", open_store)
tracking.MetricLog.flush = timed("logging", tracking.MetricLog.flush)
experiment._save_figures = timed("figures", experiment._save_figures)
try:
    runpy.run_path({run!r}, run_name="__main__")
except SystemExit:
    pass
spent["in-process total"] = time.perf_counter() - t_start
print(json.dumps(spent))
"""


def run_command(overrides: list[str], workdir: Path) -> float:
    workdir.mkdir(parents=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-m", *overrides, f"hydra.sweep.dir={workdir}/s"],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--overrides", nargs="+", default=["width=100,1000,10000"])
    args = p.parse_args()
    header(f"end to end: python run.py -m {' '.join(args.overrides)}", None)
    t_imports = min(
        float(subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout)
        for _ in range(3)
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        walls = [run_command(args.overrides, Path(tmp) / f"run{i}") for i in range(2)]
        timed_dir = Path(tmp) / "timed"
        timed_dir.mkdir()
        code = TIMED.format(
            overrides=args.overrides, sweep=str(timed_dir / "s"), root=str(ROOT),
            run=str(ROOT / "run.py"),
        )  # fmt: skip
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], cwd=timed_dir, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        wall_timed = time.perf_counter() - t0
        parts = json.loads(out.strip().splitlines()[-1])
    wall = min(walls)
    print(f"   wall time: {wall:.1f} s (runs: {', '.join(f'{w:.1f}' for w in walls)} s)")
    print(f"   imports (separate interpreter): {t_imports:.2f} s")
    parts.pop("in-process total")
    print(f"   split of an instrumented run ({wall_timed:.1f} s):")
    names = ["training", "kernels", "network evaluation", "logging", "store start-up", "figures"]
    for name in names:
        seconds = parts.get(name, 0.0)
        print(f"   {name:20s} {seconds:6.2f} s  {seconds / wall_timed:6.1%}")
    rest = wall_timed - sum(parts.get(n, 0.0) for n in names)
    print(f"   {'rest (incl. imports)':20s} {rest:6.2f} s  {rest / wall_timed:6.1%}")
    k_log = (parts.get("kernels", 0.0) + parts.get("logging", 0.0)) / wall_timed
    startup = parts.get("store start-up", 0.0) / wall_timed
    print(
        f"   kernels + logging: {k_log:.0%} of the run (target < 30 %); "
        f"{k_log + startup:.0%} with the one-time store start-up"
    )


if __name__ == "__main__":
    main()
