"""One measurement: train a network next to its linearisation and the constant-kernel
predictions, and measure at each log step how far they drift apart (MATH.md sections 2-5;
every metric is defined in docs/metrics.md).

`measure(net, data, schedule, seed)` returns a `Record` (histories, kernels, predictions);
`measure_steps` is the same as a generator that yields a `StepMetrics` at every step of
`schedule.log_steps` (and of `schedule.progress_steps`, without metrics) and returns the record,
so the app can stream the metrics to a tracking store while training goes on. Pure NumPy: a
notebook can call `measure` without Hydra or MLflow.

1. at init: the empirical NTK on the train inputs, on (test, train) and on a test subsample, its
   spectrum and 2N/lambda_max, the infinite-width NTK where asked, and the kernel predictions of
   MATH.md section 4 at every log step plus the kernel machines (eqs. 7-8);
2. the network and its linearisation trained side by side by the same optimiser on the same
   batches (`training.train_trajectory`); at each log step, the metrics of docs/metrics.md.

The constant-kernel prediction is MATH.md s.4's closed form for full-batch GD on the MSE and
the iterated function-space map otherwise (`kernel_predictions`, exact for the linearised
model);
adam has none (NaN). The kernel machine (eqs. 7-8) is the MSE's t -> infinity limit: NaN for
the cross-entropy, whose minimiser is at infinity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ntk_sweep.core import dynamics, kernels
from ntk_sweep.core.datasets import Dataset, predicted_labels
from ntk_sweep.core.flips import flip_metrics, flip_names
from ntk_sweep.core.kernel_predictions import (
    constant_kernel_predictions,
    kernel_machine,
)
from ntk_sweep.core.losses import constant_loss, loss_value
from ntk_sweep.core.network import (
    MLP,
    Linearization,
    Params,
    forward,
    forward_cache,
    init_params,
    kink_inputs,
    param_movement,
)
from ntk_sweep.core.training import TrainState, fused_compile_pending, train_trajectory

# per-log-step kernel diagnostics (docs/metrics.md)
DIAGNOSTICS = ("kernel_lambda_max", "kernel_velocity", "kernel_alignment")
# classification: the fraction of correctly predicted classes (datasets.predicted_labels)
ACCURACIES = ("train_accuracy", "test_accuracy", "test_accuracy_lin", "test_accuracy_kernel")


@dataclass(frozen=True)
class Schedule:
    """What to train and when to measure: `steps` steps of `optimizer` on `loss` at learning
    rate `lr` (the effective rate is `lr * net.lr_scale`; minibatches of `batch_size` drawn from
    the run's seed, `optimizers.minibatches`), metrics at `log_steps` (0 = init), and
    `progress_steps` yielded without metrics (progress bars, interrupt points)."""

    lr: float
    steps: int
    log_steps: tuple[int, ...]
    progress_steps: tuple[int, ...] = ()
    test_kernel_points: int = 64  # test inputs of the test-input kernel (evenly subsampled)
    analytic: bool = False  # also the infinite-width NTK's predictions (where it is defined)
    backend: str = "auto"  # train_trajectory's backend
    optimizer: str = "gd"  # core.optimizers.OPTIMIZERS
    loss: str = "mse"  # core.losses.LOSSES
    batch_size: int | None = None  # None: full batch
    momentum: float = 0.9  # heavy-ball mu (optimizer "momentum")
    # K > 1 outputs: the full (N K x N K) empirical NTK or the output-averaged (N x N) one
    # (`kernels.OUTPUT_KERNELS`; equal for K = 1)
    kernel_form: str = "full"

    def kernel_options(self) -> dict[str, Any]:
        """The optimiser and loss `kernel_predictions.constant_kernel_predictions` follows."""
        return {
            "optimizer": self.optimizer,
            "loss": self.loss,
            "batch_size": self.batch_size,
            "momentum": self.momentum,
        }


@dataclass(frozen=True)
class StepMetrics:
    """One visited step: its metrics (empty at a progress-only step); at step 0 also `init`,
    the metrics of the initial kernel. `seconds`: time spent measuring at this step.
    `compiling` (step 0 only): the next steps first compile a kernel, once per machine (their
    time says nothing about the step rate)."""

    step: int
    metrics: dict[str, float]
    init: dict[str, float] | None = None
    diverged: bool = False
    seconds: float = 0.0
    compiling: bool = False


@dataclass
class Record:
    """Everything one measurement produced. Arrays over log steps have `len(steps)` rows (NaN
    after a divergence); `ntk_*_final` is the kernel at the last logged step."""

    steps: np.ndarray
    init: dict[str, float]
    history: dict[str, np.ndarray]
    f_train: np.ndarray
    f_lin_train: np.ndarray
    f_kernel_train: np.ndarray
    f_test: np.ndarray
    f_lin_test: np.ndarray
    f_kernel_test: np.ndarray
    km_empirical_test: np.ndarray
    ntk_init: np.ndarray
    ntk_final: np.ndarray
    ntk_test_init: np.ndarray
    ntk_test_final: np.ndarray
    test_kernel_index: np.ndarray
    lr: float
    lr_effective: float
    lr_max_stable: float
    ntk_analytic: np.ndarray | None = None
    f_analytic_train: np.ndarray | None = None
    f_analytic_test: np.ndarray | None = None
    km_analytic_test: np.ndarray | None = None
    final_step: int = 0
    final: dict[str, float] = field(default_factory=dict)  # the last log step's metrics
    failure: str = ""  # why training stopped early ("" if it did not)
    phase_net: str = ""  # dynamics.lr_phase of the network
    phase_lin: str = ""  # ... and of its linearisation
    kernel_form: str = "full"  # K > 1: the full or the output-averaged kernel (Schedule)

    def arrays(self, data: Dataset) -> dict[str, np.ndarray]:
        """The run's arrays (arrays/ntk.npz; names in docs/metrics.md)."""
        out = {
            "x_train": data.x_train,
            "y_train": data.y_train,
            "x_test": data.x_test,
            "steps": self.steps,
            "ntk_init": self.ntk_init,
            "ntk_final": self.ntk_final,
            "ntk_test_init": self.ntk_test_init,
            "ntk_test_final": self.ntk_test_final,
            "test_kernel_index": self.test_kernel_index,
            "f_train": self.f_train,
            "f_lin_train": self.f_lin_train,
            "f_kernel_train": self.f_kernel_train,
            "f_test": self.f_test,
            "f_lin_test": self.f_lin_test,
            "f_kernel_test": self.f_kernel_test,
            "km_empirical_test": self.km_empirical_test,
        }
        if data.y_test is not None:
            out["y_test"] = data.y_test
        if self.ntk_analytic is not None:
            out.update(
                ntk_analytic=self.ntk_analytic,
                f_analytic_train=self.f_analytic_train,
                f_analytic_test=self.f_analytic_test,
                km_analytic_test=self.km_analytic_test,
            )
        return out


def history_names(n_layers: int, classification: bool = False) -> list[str]:
    """The per-log-step metrics of a network with `n_layers` weight layers, in logging order;
    the accuracies for a classification dataset."""
    return [
        "loss",
        "loss_lin",
        "loss_kernel",
        "test_loss",
        "kernel_drift",
        "kernel_drift_test",
        "kernel_distance",
        "kernel_distance_test",
        "lin_error_train",
        "lin_error_test",
        "kernel_pred_error_train",
        "kernel_pred_error_test",
        "analytic_pred_error_train",
        "analytic_pred_error_test",
        "param_movement",
        *[f"param_movement_layer{i + 1}" for i in range(n_layers)],
        *flip_names(n_layers - 1),
        *DIAGNOSTICS,
        *(ACCURACIES if classification else ()),
    ]


def rms(a: np.ndarray) -> float:
    """Root mean square of the entries (the linearisation and prediction errors)."""
    a = np.asarray(a, dtype=np.float64)
    return float(np.sqrt(np.mean(a * a)))


def _loss(loss: str, f: np.ndarray, y: np.ndarray) -> float:
    return loss_value(loss, np.asarray(f, dtype=np.float64), y)


def accuracy(f: np.ndarray, labels: np.ndarray | None) -> float:
    """The fraction of samples whose predicted class (`datasets.predicted_labels`) is the label;
    NaN without labels or where an output is not finite."""
    if labels is None or not np.all(np.isfinite(f)):
        return math.nan
    return float(np.mean(predicted_labels(f) == labels))


def ntk(
    net: MLP, params: Params, x1: np.ndarray, schedule: Schedule, x2: np.ndarray | None = None
) -> np.ndarray:
    """The empirical NTK the measurement uses: `empirical_ntk` in the schedule's output form
    (full or output-averaged for K > 1; the plain N x N kernel for K = 1)."""
    if net.outputs == 1:
        return kernels.empirical_ntk(net, params, x1, x2)
    return kernels.empirical_ntk(net, params, x1, x2, outputs=schedule.kernel_form)


def test_kernel_index(
    n_test: int, max_points: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Evenly spaced subsample (deterministic) of the test inputs for the test-input kernel,
    leaving out the inputs where `exclude` (a boolean mask) is true."""
    candidates = np.arange(n_test) if exclude is None else np.flatnonzero(~exclude)
    if len(candidates) <= max_points:
        return candidates
    pick = np.unique(np.round(np.linspace(0, len(candidates) - 1, max_points)).astype(int))
    return candidates[pick]


def measure(net: MLP, data: Dataset, schedule: Schedule, seed: int) -> Record:
    """Train and measure (module docstring); the record of `measure_steps`, without streaming."""
    steps = measure_steps(net, data, schedule, seed)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@dataclass
class _Init:
    """The initial kernels and the constant-kernel predictions (step 1 of the docstring)."""

    params0: Params
    sub: np.ndarray
    k0: np.ndarray
    k0_test: np.ndarray
    spec: dynamics.Spectrum
    f_kernel: tuple[np.ndarray, np.ndarray]
    km_emp: np.ndarray
    metrics: dict[str, float]
    slopes0: list[np.ndarray]  # phi' of every hidden layer on the train inputs (flips.py)
    k_an: np.ndarray | None = None
    f_an: tuple[np.ndarray, np.ndarray] | None = None
    km_an: np.ndarray | None = None
    loss: str = "mse"
    kernel_form: str = "full"  # the Schedule's


def _like(k_per_output: np.ndarray, k: np.ndarray) -> np.ndarray:
    """A per-output (N x N) kernel in the form of `k`: `k (x) I_K` for a full K-output kernel."""
    if k.shape == k_per_output.shape:
        return k_per_output
    return kernels.kron_outputs(k_per_output, k.shape[0] // k_per_output.shape[0])


def _initial(net: MLP, data: Dataset, schedule: Schedule, seed: int) -> _Init:
    x, y, x_test = data.x_train, data.y_train, data.x_test
    n, lr_eff = len(x), schedule.lr * net.lr_scale
    kinks = kink_inputs(net, x_test)
    sub = test_kernel_index(
        len(x_test), schedule.test_kernel_points, kinks if kinks.any() else None
    )
    params0 = init_params(net, seed)
    k0 = ntk(net, params0, x, schedule)
    k0_test = ntk(net, params0, x_test[sub], schedule)
    k0_test_train = ntk(net, params0, x_test, schedule, x)
    f0_train, f0_test = forward(net, params0, x), forward(net, params0, x_test)
    if net.centred:  # the model alpha (f_net - f_net(theta_0)) starts at 0 (network.py)
        f0_train, f0_test = np.zeros_like(f0_train), np.zeros_like(f0_test)
    spec = dynamics.kernel_spectrum(k0)
    lr_max = 2 * n / spec.lambda_max
    f0 = (f0_train, f0_test)
    f_kernel = constant_kernel_predictions(
        k0, k0_test_train, f0, y, lr_eff, schedule.log_steps, seed=seed, **schedule.kernel_options()
    )
    km_emp = kernel_machine(k0, k0_test_train, y, schedule.loss)
    metrics = {
        "ntk_lambda_max": spec.lambda_max,
        "ntk_lambda_min": spec.lambda_min,
        "ntk_condition_number": spec.condition_number,
        "ntk_rank": float(spec.rank),
        "lr_max_stable": lr_max,
        "lr_effective": lr_eff,
        "lr_over_lr_max_stable": lr_eff / lr_max,
    }
    slopes0 = forward_cache(net, params0, x).slopes
    init = _Init(
        params0,
        sub,
        k0,
        k0_test,
        spec,
        f_kernel,
        km_emp,
        metrics,
        slopes0,
        schedule.loss,
        kernel_form=schedule.kernel_form,
    )
    if schedule.analytic and kernels.has_analytic_ntk(net):
        init.k_an = kernels.analytic_ntk(net, x)
        k_an_test_train = kernels.analytic_ntk(net, x_test, x)
        spec_an = dynamics.kernel_spectrum(init.k_an)
        init.f_an = constant_kernel_predictions(
            init.k_an,
            k_an_test_train,
            f0,
            y,
            lr_eff,
            schedule.log_steps,
            seed=seed,
            **schedule.kernel_options(),
        )
        init.km_an = kernel_machine(init.k_an, k_an_test_train, y, schedule.loss)
        metrics.update(
            ntk_analytic_lambda_max=spec_an.lambda_max,
            ntk_analytic_lambda_min=spec_an.lambda_min,
            ntk_analytic_condition_number=spec_an.condition_number,
            ntk_analytic_vs_empirical=kernels.relative_difference(k0, _like(init.k_an, k0)),
        )
    return init


def _step_metrics(
    net: MLP,
    data: Dataset,
    init: _Init,
    state: TrainState,
    i: int,
    lin_test: Linearization,
    k_t: np.ndarray,
    k_t_test: np.ndarray,
    backend: str = "auto",
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The metrics of log step `i` (docs/metrics.md), with the network's and the linearised
    model's test predictions."""
    y, y_test, loss = data.y_train, data.y_test, init.loss
    f_test, f_lin_test = lin_test.evaluate(state.params, state.delta_lin, backend)
    f_kernel_train, f_kernel_test = init.f_kernel
    f_an_train, f_an_test = init.f_an if init.f_an is not None else (None, None)
    total, per_layer = param_movement(state.params, init.params0)
    mt: dict[str, float] = {
        "loss": state.loss,
        "loss_lin": state.loss_lin,
        "loss_kernel": _loss(loss, f_kernel_train[i], y),
        "test_loss": _loss(loss, f_test, y_test) if y_test is not None else math.nan,
        "kernel_drift": kernels.kernel_drift(k_t, init.k0),
        "kernel_drift_test": kernels.kernel_drift(k_t_test, init.k0_test),
        "kernel_distance": kernels.kernel_distance(k_t, init.k0),
        "kernel_distance_test": kernels.kernel_distance(k_t_test, init.k0_test),
        "lin_error_train": rms(state.f_train - state.f_lin_train),
        "lin_error_test": rms(f_test - f_lin_test),
        "kernel_pred_error_train": rms(state.f_train - f_kernel_train[i]),
        "kernel_pred_error_test": rms(f_test - f_kernel_test[i]),
        "analytic_pred_error_train": (
            rms(state.f_train - f_an_train[i]) if f_an_train is not None else math.nan
        ),
        "analytic_pred_error_test": (
            rms(f_test - f_an_test[i]) if f_an_test is not None else math.nan
        ),
        "param_movement": total,
    }
    for layer, value in enumerate(per_layer):
        mt[f"param_movement_layer{layer + 1}"] = value
    x = data.x_train
    mt.update(flip_metrics(net, state.params, x, init.slopes0, k_t, init.k0, init.kernel_form))
    if data.is_classification:
        mt.update(
            train_accuracy=accuracy(state.f_train, data.labels_train),
            test_accuracy=accuracy(f_test, data.labels_test),
            test_accuracy_lin=accuracy(f_lin_test, data.labels_test),
            test_accuracy_kernel=accuracy(f_kernel_test[i], data.labels_test),
        )
    return mt, f_test, f_lin_test


def kernel_diagnostics(
    k_t: np.ndarray,
    k_prev: np.ndarray,
    k0: np.ndarray,
    y: np.ndarray,
    dt: float,
    lanczos: bool = False,
) -> dict[str, float]:
    """Per-log-step kernel diagnostics (docs/metrics.md): lambda_max of Theta_t, its velocity
    since the previous log step (`dt` = lr x steps between them; undefined at step 0, NaN) and
    the kernel-target alignment. `lanczos`: lambda_max by `dynamics.top_eigenvalue` (K-output
    kernels) instead of the full spectrum."""
    top = dynamics.top_eigenvalue(k_t) if lanczos else dynamics.kernel_spectrum(k_t).lambda_max
    return {
        "kernel_lambda_max": top,
        "kernel_velocity": kernels.kernel_velocity(k_t, k_prev, k0, dt) if dt > 0 else math.nan,
        "kernel_alignment": kernels.kernel_target_alignment(k_t, y),
    }


def phases(
    first: TrainState | None,
    last: TrainState | None,
    loss_constant: float,
    lambda_0: float,
    lambda_last: float,
) -> tuple[str, str]:
    """`dynamics.lr_phase` of the network and of its linearisation from the first and last
    states GD yielded; the linearised model's kernel is constant (lambda_0)."""
    if first is None or last is None:  # pragma: no cover - GD yields step 0 first
        return "", ""
    net = dynamics.lr_phase(
        first.loss, last.loss_max, last.loss, loss_constant, lambda_0, lambda_last
    )
    lin = dynamics.lr_phase(
        first.loss_lin, last.loss_lin_max, last.loss_lin, loss_constant, lambda_0, lambda_0
    )
    return net, lin


def _empty_record(net: MLP, data: Dataset, schedule: Schedule, init: _Init) -> Record:
    n_log, m = len(schedule.log_steps), data.n_test
    return Record(
        steps=np.asarray(schedule.log_steps),
        init=init.metrics,
        history={
            k: np.full(n_log, np.nan) for k in history_names(net.n_layers, data.is_classification)
        },
        f_train=np.full((n_log, *data.y_train.shape), np.nan),
        f_lin_train=np.full((n_log, *data.y_train.shape), np.nan),
        f_kernel_train=init.f_kernel[0],
        f_test=np.full((n_log, m, *data.y_train.shape[1:]), np.nan),
        f_lin_test=np.full((n_log, m, *data.y_train.shape[1:]), np.nan),
        f_kernel_test=init.f_kernel[1],
        km_empirical_test=init.km_emp,
        ntk_init=init.k0,
        ntk_final=init.k0,
        ntk_test_init=init.k0_test,
        ntk_test_final=init.k0_test,
        test_kernel_index=init.sub,
        lr=schedule.lr,
        lr_effective=init.metrics["lr_effective"],
        lr_max_stable=init.metrics["lr_max_stable"],
        ntk_analytic=init.k_an,
        f_analytic_train=None if init.f_an is None else init.f_an[0],
        f_analytic_test=None if init.f_an is None else init.f_an[1],
        km_analytic_test=init.km_an,
        kernel_form=schedule.kernel_form,
    )


def measure_steps(
    net: MLP, data: Dataset, schedule: Schedule, seed: int
) -> Generator[StepMetrics, None, Record]:
    """Train and measure (module docstring), yielding each visited step's metrics; returns the
    `Record`. Training stops at a NaN/inf loss: that step is yielded with `diverged=True` and
    the record's `failure` says why. The initial parameters are `init_params(net, seed)`."""
    x, y = data.x_train, data.y_train
    init = _initial(net, data, schedule, seed)
    compiling = fused_compile_pending(net, len(x), schedule.backend)
    rec = _empty_record(net, data, schedule, init)
    index = {s: i for i, s in enumerate(schedule.log_steps)}
    visit: Iterable[int] = sorted(set(schedule.log_steps) | set(schedule.progress_steps))
    lin_test = Linearization(net, init.params0, data.x_test, cached=False)
    k_last, k_last_test, step_last = init.k0, init.k0_test, 0
    lam_last = init.spec.lambda_max
    first = last = None
    trajectory = train_trajectory(
        net,
        init.params0,
        x,
        y,
        schedule.lr,
        schedule.steps,
        visit,
        optimizer=schedule.optimizer,
        loss=schedule.loss,
        batch_size=schedule.batch_size,
        momentum=schedule.momentum,
        seed=seed,
        backend=schedule.backend,
    )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for state in trajectory:
            rec.final_step, last = state.step, state
            first = first or state
            if state.diverged:
                rec.failure = (
                    f"loss became {state.loss} at step {state.step} (diverged; lr_effective="
                    f"{rec.lr_effective:g}, 2N/lambda_max={rec.lr_max_stable:g})"
                )
                metrics = {"loss": state.loss, "loss_lin": state.loss_lin}
                yield StepMetrics(state.step, metrics, diverged=True)
                break
            if state.step not in index:
                yield StepMetrics(state.step, {})
                continue
            t_log, i = time.perf_counter(), index[state.step]
            at_init = state.step == 0
            k_t = init.k0 if at_init else ntk(net, state.params, x, schedule)
            k_t_test = (
                init.k0_test if at_init else ntk(net, state.params, data.x_test[init.sub], schedule)
            )
            mt, f_test, f_lin_test = _step_metrics(
                net, data, init, state, i, lin_test, k_t, k_t_test, schedule.backend
            )
            dt = schedule.lr * (state.step - step_last)
            mt.update(kernel_diagnostics(k_t, k_last, init.k0, y, dt, net.outputs > 1))
            if at_init:  # the same kernel: the same number as ntk_lambda_max
                mt["kernel_lambda_max"] = init.spec.lambda_max
            for k, v in mt.items():
                rec.history[k][i] = v
            rec.f_test[i], rec.f_lin_test[i] = f_test, f_lin_test
            rec.f_train[i], rec.f_lin_train[i] = state.f_train, state.f_lin_train
            k_last, k_last_test, rec.final = k_t, k_t_test, mt
            step_last, lam_last = state.step, mt["kernel_lambda_max"]
            seconds = time.perf_counter() - t_log
            yield StepMetrics(
                state.step,
                mt,
                init.metrics if i == 0 else None,
                seconds=seconds,
                compiling=compiling and at_init,
            )
    rec.ntk_final, rec.ntk_test_final = k_last, k_last_test
    loss_constant = constant_loss(schedule.loss, y)
    rec.phase_net, rec.phase_lin = phases(
        first, last, loss_constant, init.spec.lambda_max, lam_last
    )
    return rec
