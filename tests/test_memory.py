"""The peak-memory estimate (`ntk_sweep.core.memory.peak_bytes`, checked by
`config.check_memory` before any work) against what real runs allocate, and the shipped presets
well inside it."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ntk_sweep.callbacks import expand_sweep
from ntk_sweep.config import check_with_data, load_data, validate
from ntk_sweep.core.measure import measure
from ntk_sweep.core.memory import format_bytes, n_params, peak_bytes
from ntk_sweep.experiment import build_network, schedule_of
from ntk_sweep.machine import MEMORY_ENV, machine_memory
from tests.conftest import compose_cfg

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30


@pytest.mark.parametrize(
    "overrides",
    [
        # parameters dominate (two 1500 x 1500 layers)
        ("dataset=teacher", "width=1500", "depth=2", "dataset.n_train=16", "dataset.n_test=16"),
        # activations: the test inputs' caches (200 x 20000)
        ("width=20000",),
        # kernels: N = 400
        ("dataset=teacher", "dataset.n_train=400", "dataset.n_test=100", "width=64"),
    ],
)
def test_estimate_is_within_a_factor_2_of_the_measured_peak(overrides):
    cfg = compose_cfg(*overrides, "train.steps=2")
    data = load_data(cfg)
    net = build_network(cfg, data.input_dim)
    m = cfg.model
    estimate = sum(
        peak_bytes(
            width=int(m.width),
            depth=int(m.depth),
            input_dim=data.input_dim,
            n_train=data.n_train,
            n_test=data.n_test,
            outputs=int(m.outputs),
            optimizer=str(cfg.train.optimizer),
            analytic=True,
            n_log=3,
        ).values()
    )
    tracemalloc.start()  # NumPy reports its array allocations to tracemalloc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            measure(net, data, schedule_of(cfg, data), 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.5 <= estimate / peak <= 2.0, (format_bytes(estimate), format_bytes(peak))


def test_peak_bytes_scales_with_the_sizes_and_never_overflows():
    base = dict(width=1000, depth=1, input_dim=1, n_train=4, n_test=200)
    small = peak_bytes(**base)
    assert set(small) == {"parameters", "activations", "kernels", "record"}
    assert n_params(1, 1000, 1, 1) == 3001
    wide = peak_bytes(**{**base, "width": 10**9})
    assert 0.9e6 < wide["parameters"] / small["parameters"] < 1.1e6  # linear in width (depth 1)
    n1, n2 = (peak_bytes(**{**base, "n_train": n, "n_test": 10})["kernels"] for n in (2000, 4000))
    assert 3.9 < n2 / n1 < 4.1  # quadratic in N
    huge = peak_bytes(**{**base, "width": 10**18, "depth": 10, "n_test": 10**12})
    assert all(isinstance(v, int) and v > 0 for v in huge.values())
    assert format_bytes(sum(huge.values())).endswith("EiB")
    assert format_bytes(75 * GIB) == "75 GiB" and format_bytes(1.5 * GIB) == "1.5 GiB"


def test_machine_memory_override_and_default(monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "2.5")
    assert machine_memory() == (int(2.5 * GIB), f"(set by {MEMORY_ENV})")
    monkeypatch.delenv(MEMORY_ENV)
    available, source = machine_memory()
    assert available > 0 and source


def test_no_job_of_a_shipped_preset_is_refused_with_1_gib(monkeypatch):
    """Every job of every preset (and the README's main sweep) passes the memory check with
    1 GiB; the generated datasets are sized from the config, the others loaded once."""
    monkeypatch.setenv(MEMORY_ENV, "1")
    presets = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    commands = [[f"experiment={p}"] for p in presets] + [["width=10000"]]  # its largest job
    checked, datasets = 0, {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for command in commands:
            top = compose("config", overrides=command, return_hydra_config=True)
            jobs = expand_sweep(top) or [command]
            # the seed changes no size: one job per setting
            settings = {tuple(o for o in job if not o.startswith("seed=")) for job in jobs}
            for job in sorted(settings):
                cfg = compose("config", overrides=list(job))
                validate(cfg)  # sized from the config where the data is generated
                key = OmegaConf.to_yaml(cfg.dataset, resolve=True)
                data = (
                    datasets[key] if key in datasets else datasets.setdefault(key, load_data(cfg))
                )
                check_with_data(cfg, data)  # the kernel's scale and the memory
                checked += 1
    assert checked > 50
