"""MetricLog: per-step metrics batched into few requests, nothing lost (real SQLite store)."""

import math

import mlflow

from ntk_sweep.tracking import MetricLog


def test_metric_log_batches_and_flushes_everything(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    batched = MetricLog(client, run_id, every_s=3600)
    for step in range(5):
        batched.log({"loss": 1.0 / (step + 1), "undefined": math.nan}, step)
    assert client.get_metric_history(run_id, "loss") == []  # nothing sent yet
    batched.flush(tags={"ntk_sweep.heartbeat": "123"})
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert history == [(s, 1.0 / (s + 1)) for s in range(5)]
    run = client.get_run(run_id)
    assert "undefined" not in run.data.metrics  # NaN means undefined: not logged
    assert run.data.tags["ntk_sweep.heartbeat"] == "123"

    every_step = MetricLog(client, run_id, every_s=0)
    every_step.log({"drift": 0.5}, 7)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "drift")] == [(7, 0.5)]
