"""The summary of a run: the dict `run_experiment` returns (`run_summary`) and the one-screen
text printed at its end (`format_summary`)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from ntk_sweep import tracking
from ntk_sweep.lifecycle import RunOutcome

if TYPE_CHECKING:
    from ntk_sweep.core.measure import Schedule


def run_summary(
    base: dict[str, Any], run_id: str, outcome: RunOutcome, t_start: float
) -> dict[str, Any]:
    """The summary dict of a run that was created: `base` (name, store, output dir, config
    hash) and the outcome; `t_start`: the job's `time.perf_counter()` at its start."""
    return {
        **base,
        "run_id": run_id,
        "status": outcome.status,
        "final_step": outcome.final_step,
        "failure_reason": outcome.failure_reason,
        "metrics": {**outcome.init_metrics, **outcome.final_metrics},
        "train_time_s": outcome.train_time_s,
        "figures_time_s": outcome.figures_time_s,
        "total_time_s": time.perf_counter() - t_start,
        "phase_net": outcome.phases.get(tracking.PHASE_NET_TAG, ""),
        "phase_lin": outcome.phases.get(tracking.PHASE_LIN_TAG, ""),
    }


def _g(value: Any, fmt: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(float(value), fmt)


def _optimizer_text(schedule: Schedule) -> str:
    """`GD`, `SGD (batch 32)`, `momentum 0.9 (batch 32)`, `Adam` ... and a non-MSE loss."""
    name = {"gd": "GD", "sgd": "SGD", "momentum": f"momentum {schedule.momentum:g}"}
    text = name.get(schedule.optimizer, "Adam")
    if schedule.batch_size is not None:
        text += f" (batch {schedule.batch_size})"
    return text if schedule.loss == "mse" else f"{text} {schedule.loss}"


def format_summary(schedule: Schedule, data, net, s: dict[str, Any]) -> str:
    """The one-screen end-of-run summary of a run trained on `schedule`."""
    mt = s["metrics"]

    def g(key: str) -> str:
        return _g(mt.get(key))

    lines = [
        f"=== ntk-sweep run {s['status']}: {s['run_name'] or '(no overrides)'} ===",
        f"model     {net.activation} MLP, {net.parameterization} parameterization, depth "
        f"{net.depth}, width {net.width}, sigma_w {net.sigma_w:g}, sigma_b {net.sigma_b:g} "
        f"({net.dtype})" + (f", {net.outputs} outputs" if net.outputs > 1 else ""),
        f"data      {data.name}: {data.n_train} train / {data.n_test} test points, "
        f"d={data.input_dim}",
        f"training  {s['final_step']}/{schedule.steps} {_optimizer_text(schedule)} steps, lr "
        f"{schedule.lr:g} "
        f"(effective {g('lr_effective')}; 2N/lambda_max {g('lr_max_stable')}), "
        f"{s['train_time_s']:.1f}s",
        f"phase     network {s['phase_net'] or '-'}, linearised {s['phase_lin'] or '-'} "
        f"(lr_effective / lr_max_stable {g('lr_over_lr_max_stable')})",
        f"NTK init  lambda_max {g('ntk_lambda_max')}, lambda_min {g('ntk_lambda_min')}, "
        f"condition {g('ntk_condition_number')}, analytic vs empirical "
        f"{g('ntk_analytic_vs_empirical')}",
    ]
    if s["status"] == "FAILED":
        lines.append(f"FAILED    {s['failure_reason']}")
    else:
        lines += [
            f"loss      network {g('loss')} | linearised {g('loss_lin')} | kernel "
            f"{g('loss_kernel')} | test {g('test_loss')}",
            f"kernel    drift {g('kernel_drift')} (test {g('kernel_drift_test')}), distance "
            f"{g('kernel_distance')} (test {g('kernel_distance_test')})",
            f"net vs    linearised RMS {g('lin_error_train')} train / {g('lin_error_test')} "
            f"test; kernel prediction {g('kernel_pred_error_test')} test; analytic "
            f"{g('analytic_pred_error_test')} test",
            f"params    moved {g('param_movement')} of their initial norm",
        ]
        if "test_accuracy" in mt:
            lines.append(
                f"accuracy  test: network {g('test_accuracy')} | linearised "
                f"{g('test_accuracy_lin')} | kernel {g('test_accuracy_kernel')}; train "
                f"{g('train_accuracy')}"
            )
    lines += [
        f"outputs   {s['output_dir']}",
        f"tracking  {s['tracking_uri']} (experiment id {s['experiment_id']}, run {s['run_id']})",
    ]
    if s["tracking_uri"].startswith("sqlite:"):
        lines.append(f"view      mlflow ui --backend-store-uri {s['tracking_uri']}")
    return "\n".join(lines)
