"""Benchmark 4: the mission's command, `python run.py -m width=100,1000,10000`, against a plain
NumPy training of the same networks measured in the same run.

1. **The command**: `python run.py -m <overrides>` as a user types it (3000 steps, the default
   figures, MLflow tracking), each time in a fresh temporary directory, so with a fresh
   SQLite store; wall clock of the whole process, best of `--repeat`.
2. **The baseline**: a plain NumPy full-batch GD loop of the same networks (the composed
   config's widths, activation, parameterization, initial parameters) on the same data for
   the same number of steps: forward pass, loss, backward pass and update of the network, and
   of its linearisation `f_lin = f_0 + J_0 delta` with the Jacobian `J_0` at init formed
   explicitly once (N x P: at N = 4 the cheapest plain way), because the command trains both
   models. No kernels, no measurements, no logging, no imports; best of `--repeat`,
   interleaved with the command's runs so that a burst of load falls on both. Its final
   losses are checked against `training.gd_trajectory`'s (the same training, to rounding).
   The network alone (no linearisation) is timed and printed too.
3. **Ratio**: command / baseline (and / the network alone).
4. **Where the time goes**: the same command in one instrumented interpreter (fresh store),
   every second charged to exactly one of
   - imports: every `import` statement and `importlib.import_module` (a nested import counts
     for the outer one), wherever it happens;
   - store start-up: `tracking.open_store` (MLflow client, SQLAlchemy engine, creating the
     tables of a fresh database, the experiment);
   - numba: compiling the fused kernels or loading them from numba's disk cache (numba's
     `numba:compiler_lock` events; "of which compiling": its `numba:compile` events);
   - training: `training.train_trajectory` (network + linearised model, every step);
   - kernels: `kernels.*`, `dynamics.*`, `kernel_predictions.*` (NTKs at init and at log steps,
     spectra, predictions);
   - network evaluation: `network.forward`, `forward_cache`, `param_movement`,
     `Linearization.predict` and `evaluate` (test-input predictions at log steps);
   - logging: `ntk_sweep.tracking` but `open_store` (params, metrics, tags, artifacts);
   - figures: `figure_adapter.save_figures` (drawing and writing the PNGs);
   - Hydra and the rest: composing and validating configs (the sweep's jobs, each job),
     launching, bookkeeping: whatever no category above covers;
   - interpreter start-up and exit: the process's wall time outside the Python code.
   A call nested in another timed call counts for the outer one, except imports and numba,
   which count for themselves wherever they happen.

`--cold-numba` adds one run of the command with an empty numba cache (`NUMBA_CACHE_DIR` in a
fresh folder): the first run after a fresh checkout, which compiles the fused kernels.

`--floor` adds, interleaved with the same baseline, what the command cannot go below:
- the command without figures (`tracking.figures=none`), fresh store;
- the command without figures into an existing store (its tables created by the run before,
  `force=true` so that no job is skipped);
- the stack's start-up alone: one interpreter that imports what every tracked run needs
  (NumPy, Hydra, the app's config schemas, MLflow and its SQLAlchemy store) and composes each
  job's config twice, as Hydra's basic sweeper (`validate_batch_is_legal`) and its launcher
  do; no validation, store, training, kernels, logging or figures.

Usage: python benchmarks/bench_end_to_end.py [--repeat 2] [--cold-numba] [--floor]
           [--overrides width=100,1000,10000 train.backend=numpy]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from _common import ROOT, header, parser

CATEGORIES = (
    "imports",
    "store start-up",
    "numba",
    "training",
    "kernels",
    "network evaluation",
    "logging",
    "figures",
    "Hydra and the rest",
)
REST = "Hydra and the rest"
RUN_PY = ROOT / "run.py"


# --------------------------------------------------------------------------- the baseline


def job_overrides(overrides: list[str]) -> list[list[str]]:
    """The overrides of every job of the sweep `overrides` (Hydra's basic sweeper)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [list(job) for job in BasicSweeper.split_arguments(parsed, None)[0]]


def composed_jobs(overrides: list[str]):
    """(network, dataset, cfg) of every job of the sweep `overrides` (Hydra's basic sweeper)."""
    from hydra import compose, initialize_config_dir

    from ntk_sweep.config import load_data
    from ntk_sweep.experiment import build_network

    out = []
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        for job in job_overrides(overrides):
            cfg = compose("config", overrides=list(job))
            data = load_data(cfg, base_dir=str(ROOT))
            out.append((build_network(cfg, data.input_dim), data, cfg))
    return out


def plain_gd(net, params0, x, y, lr: float, steps: int, linearised: bool) -> tuple[float, float]:
    """Full-batch GD of a one-hidden-layer network (MATH.md eqs. 1-3) in plain NumPy: per step
    one forward pass, the loss, one backward pass and the update; with `linearised`, also the
    linearised model `f_lin = f_0 + J_0 delta` with its Jacobian J_0 (N x P) formed once.
    Returns the final losses (network, linearised; NaN without it)."""
    from ntk_sweep.core.network import phi, phi_prime

    if net.depth != 1 or net.centred:
        raise SystemExit("the plain NumPy baseline covers depth=1 networks without alpha")
    act, n = net.activation, len(x)
    c0, c1 = net.multipliers
    cb1 = net.bias_multipliers[1]
    lr = lr * net.lr_scale
    (w, b), (v, b1) = ((a.copy(), c.copy()) for a, c in params0)
    v = v[:, 0]
    if linearised:
        z = c0 * (x @ w) + b
        g = c1 * v * phi_prime(act, z)  # df/dz, (N, width)
        jac = np.hstack(
            [
                (c0 * x[:, :, None] * g[:, None, :]).reshape(n, -1),
                g,
                c1 * phi(act, z),
                np.full((n, 1), cb1),
            ]
        )
        f_lin = f0 = c1 * (phi(act, z) @ v) + cb1 * b1[0]
        delta = np.zeros(jac.shape[1])
    loss = loss_lin = math.nan
    for step in range(steps + 1):
        z = c0 * (x @ w) + b
        h = phi(act, z)
        r = c1 * (h @ v) + cb1 * b1[0] - y
        loss = float(r @ r) / (2 * n)
        if linearised:
            r_lin = f_lin - y
            loss_lin = float(r_lin @ r_lin) / (2 * n)
        if step == steps:
            break
        r /= n
        gz = np.outer(r, c1 * v) * phi_prime(act, z)
        w -= lr * (c0 * (x.T @ gz))
        b -= lr * gz.sum(axis=0)
        v -= lr * (c1 * (h.T @ r))
        b1 -= lr * (cb1 * r.sum())
        if linearised:
            delta -= (lr / n) * (jac.T @ r_lin)
            f_lin = f0 + jac @ delta
    return loss, loss_lin


class Timing(NamedTuple):
    wall: float
    cpu: float


def baseline(jobs, linearised: bool) -> tuple[Timing, list[tuple[float, float]]]:
    """Wall and CPU seconds of `plain_gd` over every job (initial parameters drawn outside the
    clock) and the final losses."""
    from ntk_sweep.core.network import init_params

    wall = cpu = 0.0
    losses = []
    for net, data, cfg in jobs:
        params0 = init_params(net, int(cfg.seed))
        x, y = data.x_train.astype(net.dtype), data.y_train
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(
            plain_gd(net, params0, x, y, float(cfg.train.lr), int(cfg.train.steps), linearised)
        )
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return Timing(wall, cpu), losses


def check_baseline(jobs, losses: list[tuple[float, float]]) -> float:
    """Largest relative difference between the baseline's final losses and the app's training
    (`training.gd_trajectory`, its default backend): the two train the same models."""
    from ntk_sweep.core.network import init_params
    from ntk_sweep.core.training import gd_trajectory

    worst = 0.0
    for (net, data, cfg), (loss, loss_lin) in zip(jobs, losses, strict=True):
        steps = int(cfg.train.steps)
        params0 = init_params(net, int(cfg.seed))
        *_, last = gd_trajectory(
            net, params0, data.x_train, data.y_train, float(cfg.train.lr), steps, [steps]
        )
        for mine, app in ((loss, last.loss), (loss_lin, last.loss_lin)):
            worst = max(worst, abs(mine - app) / abs(app))
    return worst


# --------------------------------------------------------------------------- the command


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(overrides: list[str], workdir: Path, env: dict | None = None) -> Timing:
    """`python run.py -m <overrides>` launched in `workdir` (a fresh store unless `workdir`
    exists and holds one): wall and CPU."""
    workdir.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), _child_cpu()
    subprocess.run(
        [sys.executable, str(RUN_PY), "-m", *overrides, f"hydra.sweep.dir={workdir}/s"],
        cwd=workdir,
        check=True,
        capture_output=True,
        env=env,
    )
    return Timing(time.perf_counter() - t0, _child_cpu() - c0)


# The least a tracked Hydra sweep of these jobs costs before its first training step: the
# imports every run needs and the two compositions Hydra makes of each job (its basic
# sweeper's `validate_batch_is_legal`, then its launcher).
STACK_START_UP = """
import json, sys
import numpy, hydra, mlflow, mlflow.store.tracking.sqlalchemy_store
from hydra import compose, initialize_config_dir
import ntk_sweep.config  # the config schemas the app registers
with initialize_config_dir(sys.argv[1], version_base="1.3"):
    for job in json.loads(sys.argv[2]):
        for _ in range(2):
            compose("config", overrides=job)
"""


def stack_start_up(jobs: list[list[str]]) -> Timing:
    """Wall and CPU of `STACK_START_UP` in its own interpreter, for the jobs' overrides."""
    t0, c0 = time.perf_counter(), _child_cpu()
    subprocess.run(
        [sys.executable, "-c", STACK_START_UP, str(ROOT / "conf"), json.dumps(jobs)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return Timing(time.perf_counter() - t0, _child_cpu() - c0)


def floor(overrides: list[str], jobs, tmp: Path, repeat: int) -> tuple[dict[str, Timing], Timing]:
    """Best of `repeat` of each floor measurement (module docstring) of the sweep `overrides`
    (its `composed_jobs`), interleaved with the baseline; returns them and the best baseline of
    these rounds."""
    no_figures = [*overrides, "tracking.figures=none"]
    names = ("no figures, fresh store", "no figures, existing store", "the stack's start-up")
    found: dict[str, list[Timing]] = {name: [] for name in names}
    base, each_job = [], job_overrides(overrides)
    for i in range(repeat):
        base.append(baseline(jobs, linearised=True)[0])
        workdir = tmp / f"floor{i}"
        found[names[0]].append(run_command(no_figures, workdir))
        found[names[1]].append(run_command([*no_figures, "force=true"], workdir))
        found[names[2]].append(stack_start_up(each_job))
    best = {name: min(t, key=lambda t: t.wall) for name, t in found.items()}
    return best, min(base, key=lambda t: t.wall)


def print_floor(best: dict[str, Timing], base: Timing, command: Timing) -> None:
    print(f"   floor (best of each, baseline of these rounds {base.wall:.3f} s):")
    print(f"   {'':34s} {'wall s':>7s} {'CPU s':>6s} {'/ baseline':>10s}")
    for name, t in {"the command (above)": command, **best}.items():
        print(f"   {name:34s} {t.wall:7.2f} {t.cpu:6.2f} {t.wall / base.wall:10.2f}")


# --------------------------------------------------------------------------- the instrumented run


class Ledger:
    """Charges wall time to one category at a time: the top of a stack whose bottom is REST.
    `enter` returns whether the category was pushed (a nested ordinary category is not:
    the outer one keeps the time), `leave` pops it."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(CATEGORIES, 0.0)
        self.cpu = dict.fromkeys(CATEGORIES, 0.0)
        self.stack = [REST]
        self.t, self.c = time.perf_counter(), time.process_time()

    def _charge(self) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.spent[self.stack[-1]] += now - self.t
        self.cpu[self.stack[-1]] += cpu - self.c
        self.t, self.c = now, cpu

    def enter(self, category: str, interrupts: bool = False) -> bool:
        if self.stack[-1] == category or (not interrupts and len(self.stack) > 1):
            return False
        self._charge()
        self.stack.append(category)
        return True

    def leave(self) -> None:
        self._charge()
        self.stack.pop()


def _timed(ledger: Ledger, category: str, fn, interrupts: bool = False):
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            it = fn(*args, **kwargs)
            while True:
                pushed = ledger.enter(category, interrupts)
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    if pushed:
                        ledger.leave()
                yield item

        return gen

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        pushed = ledger.enter(category, interrupts)
        try:
            return fn(*args, **kwargs)
        finally:
            if pushed:
                ledger.leave()

    return wrapper


def _replace_everywhere(original, wrapped) -> None:
    """Rebind `original` to `wrapped` in every loaded ntk_sweep module (`from m import f`)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("ntk_sweep") and module is not None:
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, wrapped)


def _wrap_functions(ledger: Ledger, module, category: str, names=None) -> None:
    """Time `module`'s public functions as `category` (a package's: those of its modules)."""
    own = (module.__name__, module.__name__ + ".")
    for name, obj in list(vars(module).items()):
        if (
            (names is None or name in names)
            and inspect.isfunction(obj)
            and (obj.__module__ == own[0] or obj.__module__.startswith(own[1]))
            and not name.startswith("_")
            and not hasattr(obj, "__wrapped__")  # already given a category
        ):
            _replace_everywhere(obj, _timed(ledger, category, obj))


def _install_import_timer(ledger: Ledger, numba_compile: list[float]) -> None:
    """Time every import as "imports"; once numba is imported, listen to its compiler events."""
    import builtins
    import importlib

    plain_import, import_module = builtins.__import__, importlib.import_module
    listening = [False]

    def listen_to_numba() -> None:
        from numba.core import event

        class Charge(event.Listener):
            depth = 0

            def on_start(self, ev) -> None:
                self.depth += 1
                if self.depth == 1:
                    self.pushed = ledger.enter("numba", interrupts=True)

            def on_end(self, ev) -> None:
                self.depth -= 1
                if self.depth == 0 and self.pushed:
                    ledger.leave()

        class Compiling(event.Listener):
            def on_start(self, ev) -> None:
                self.t0 = time.perf_counter()

            def on_end(self, ev) -> None:
                numba_compile[0] += time.perf_counter() - self.t0

        event.register("numba:compiler_lock", Charge())
        event.register("numba:compile", Compiling())

    def after_import() -> None:
        if not listening[0] and "numba.core.event" in sys.modules:
            listening[0] = True
            listen_to_numba()

    def charged_to_imports(importer):
        def timed(*args, **kwargs):
            pushed = ledger.enter("imports", interrupts=True)
            try:
                return importer(*args, **kwargs)
            finally:
                if pushed:
                    ledger.leave()
                    after_import()

        return timed

    builtins.__import__ = charged_to_imports(plain_import)
    importlib.import_module = charged_to_imports(import_module)


def timed_run(overrides: list[str], sweep_dir: str) -> None:
    """In this process: run `run.py -m <overrides>` with every second charged to a category;
    print the ledger as JSON on the last line."""
    import runpy

    t_start, c_start = time.perf_counter(), time.process_time()
    ledger = Ledger()
    numba_compile = [0.0]
    _install_import_timer(ledger, numba_compile)
    from ntk_sweep import figure_adapter, tracking
    from ntk_sweep.core import dynamics, kernel_predictions, kernels, measure, network, training

    assert measure  # loaded now, so that its `from ... import` names get wrapped below
    _wrap_functions(ledger, training, "training", ["gd_trajectory", "train_trajectory"])
    _wrap_functions(ledger, kernel_predictions, "kernels")
    _wrap_functions(
        ledger, network, "network evaluation", ["forward", "param_movement", "forward_cache"]
    )
    network.Linearization.predict = _timed(
        ledger, "network evaluation", network.Linearization.predict
    )
    network.Linearization.evaluate = _timed(
        ledger, "network evaluation", network.Linearization.evaluate
    )
    _wrap_functions(ledger, kernels, "kernels")
    _wrap_functions(ledger, dynamics, "kernels")
    _replace_everywhere(tracking.open_store, _timed(ledger, "store start-up", tracking.open_store))
    _wrap_functions(ledger, tracking, "logging")
    tracking.MetricLog.flush = _timed(ledger, "logging", tracking.MetricLog.flush)
    tracking.MetricLog.log = _timed(ledger, "logging", tracking.MetricLog.log)
    _replace_everywhere(
        figure_adapter.save_figures, _timed(ledger, "figures", figure_adapter.save_figures)
    )
    sys.argv = [str(RUN_PY), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    try:
        runpy.run_path(str(RUN_PY), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    ledger._charge()
    out = {
        "wall": ledger.spent,
        "cpu": ledger.cpu,
        "in-process wall": time.perf_counter() - t_start,
        "in-process cpu": time.process_time() - c_start,
        "numba compiling": numba_compile[0],
    }
    print(json.dumps(out))


def instrumented(overrides: list[str], workdir: Path) -> tuple[Timing, dict]:
    """The instrumented run (its own interpreter, fresh store): wall and CPU, and its ledger."""
    workdir.mkdir(parents=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--timed-run", str(workdir / "s")]
    t0, c0 = time.perf_counter(), _child_cpu()
    out = subprocess.run(
        [*command, "--overrides", *overrides],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    timing = Timing(time.perf_counter() - t0, _child_cpu() - c0)
    return timing, json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report


def _seconds(timings: list[Timing]) -> str:
    return ", ".join(f"{t.wall:.2f}" for t in timings)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--overrides", nargs="+", default=["width=100,1000,10000"])
    p.add_argument("--repeat", type=int, default=2, help="runs of the command and of the baseline")
    p.add_argument("--cold-numba", action="store_true", help="also a run with an empty numba cache")
    p.add_argument("--floor", action="store_true", help="also what the command cannot go below")
    p.add_argument("--timed-run", metavar="SWEEP_DIR", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.timed_run:
        timed_run(args.overrides, args.timed_run)
        return
    header(f"end to end: python run.py -m {' '.join(args.overrides)}", None)
    jobs = composed_jobs(args.overrides)
    runs, base, base_net = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):  # interleaved: a burst of load falls on both
            timing, losses = baseline(jobs, linearised=True)
            base.append(timing)
            base_net.append(baseline(jobs, linearised=False)[0])
            runs.append(run_command(args.overrides, Path(tmp) / f"run{i}"))
        cold = None
        if args.cold_numba:
            env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba-cache")}
            cold = run_command(args.overrides, Path(tmp) / "cold", env)
        timed, ledger = instrumented(args.overrides, Path(tmp) / "timed")
        floors = floor(args.overrides, jobs, Path(tmp), args.repeat) if args.floor else None
    mismatch = check_baseline(jobs, losses)
    best, t_base, t_net = (min(t, key=lambda t: t.wall) for t in (runs, base, base_net))
    cpu_base = min(t.cpu for t in base)
    print(f"   load average after: {os.getloadavg()[0]:.2f}")
    print(f"   command: {best.wall:.2f} s wall, {best.cpu:.2f} s CPU (runs: {_seconds(runs)} s)")
    if cold is not None:
        print(f"   ... with an empty numba cache (a fresh checkout's first run): {cold.wall:.2f} s")
    print(
        f"   plain NumPy GD of the same {len(jobs)} networks, {int(jobs[0][2].train.steps)} "
        f"steps, with the linearised model: {t_base.wall:.3f} s wall, {cpu_base:.3f} s CPU "
        f"(runs: {_seconds(base)} s); the network alone {t_net.wall:.3f} s; final losses = the "
        f"app's to {mismatch:.1e}"
    )
    print(
        f"   RATIO command / plain NumPy training: {best.wall / t_base.wall:.1f} wall, "
        f"{best.cpu / cpu_base:.1f} CPU (wall / the network alone: {best.wall / t_net.wall:.1f})"
    )
    print(
        f"   where the time goes, one instrumented run: {timed.wall:.2f} s wall, "
        f"{timed.cpu:.2f} s CPU"
    )
    print(
        f"   {'':28s} {'wall s':>7s} {'share':>6s} {'CPU s':>6s} {'x plain training (wall)':>24s}"
    )
    rows = [(name, ledger["wall"][name], ledger["cpu"][name]) for name in CATEGORIES]
    rows.append(
        (
            "interpreter start-up, exit",
            timed.wall - ledger["in-process wall"],
            timed.cpu - ledger["in-process cpu"],
        )
    )
    for name, wall, cpu in rows:
        print(
            f"   {name:28s} {wall:7.2f} {wall / timed.wall:6.1%} {cpu:6.2f} "
            f"{wall / t_base.wall:24.2f}"
        )
    print(
        f"   (numba: {ledger['numba compiling']:.2f} s of it compiling, the rest loading its cache)"
    )
    if floors is not None:
        print_floor(*floors, best)


if __name__ == "__main__":
    main()
