"""Config composition, validation, log steps and the tracking helpers (no training, no store)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from ntk_sweep import tracking
from ntk_sweep.config import (
    ANALYTIC_ACTIVATIONS,
    DATASET_SCHEMAS,
    PAPER_SNAPSHOT_STEPS,
    ConfigError,
    TrackingError,
    analytic_enabled,
    compute_log_steps,
    dataset_options,
    describe_hydra_error,
    figure_set,
    load_data,
    nearest_step,
    validate,
    validation_rules,
)
from ntk_sweep.core import kernels
from ntk_sweep.dataset_sources import DATASET_OPTIONS, DATASETS, load_dataset
from tests.conftest import compose_cfg

CONF = Path(__file__).resolve().parent.parent / "conf"
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_compose():
    return compose_cfg


def error_line(hydra_compose, *overrides: str) -> str:
    """The one-line message a bad config produces (compose-time or validation)."""
    try:
        cfg = hydra_compose(*overrides)
        validate(cfg)
        load_data(cfg)
    except Exception as exc:  # noqa: BLE001 - any failure is what we inspect
        return describe_hydra_error(exc)
    raise AssertionError(f"{overrides} composed and validated without error")


def test_presets_are_the_documented_ones():
    assert PRESETS == [
        "digits_width_sweep",
        "lazy_rich_alpha",
        "lazy_vs_rich",
        "lr_sweep",
        "paper",
        "paper_fixed",
        "showcase",
        "width_sweep",
    ]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(hydra_compose, preset):
    cfg = hydra_compose(f"experiment={preset}", hydra=True)
    validate(cfg)
    dataset = {"showcase": "sine", "digits_width_sweep": "digits"}.get(preset, "paper_toy")
    assert cfg.dataset.name == dataset
    assert cfg.model.width == cfg.width and cfg.train.lr == cfg.lr
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    sweeping = ("width_sweep", "lazy_vs_rich", "lr_sweep", "lazy_rich_alpha", "showcase")
    if preset in (*sweeping, "digits_width_sweep"):
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
        assert params, preset
    else:
        assert not params


def test_paper_presets_are_the_paper(hydra_compose):
    paper = hydra_compose("experiment=paper")
    assert (paper.model.width, paper.model.depth, paper.train.lr, paper.train.steps) == (
        10000,
        1,
        0.1,
        3000,
    )
    assert paper.model.sigma_b == 0.0 and paper.model.sigma_w == 1.0
    assert (paper.model.activation, paper.model.parameterization) == ("relu", "ntk")
    assert list(paper.train.snapshot_steps) == list(PAPER_SNAPSHOT_STEPS)
    fixed = hydra_compose("experiment=paper_fixed")
    assert fixed.model.sigma_b == 1.0 and fixed.model.width == 10000
    sweep = hydra_compose("experiment=width_sweep", hydra=True)
    widths = [int(w) for w in str(sweep.hydra.sweeper.params.width).split(",")]
    assert widths == [64 * 4**k for k in range(6)] and widths[-1] == 65536
    assert str(sweep.hydra.sweeper.params.seed) == "range(5)"
    rich = hydra_compose("experiment=lazy_vs_rich", hydra=True)
    assert str(rich.hydra.sweeper.params["model.parameterization"]) == "ntk,mean_field"
    dial = hydra_compose("experiment=lazy_rich_alpha", hydra=True)
    alphas = [float(a) for a in str(dial.hydra.sweeper.params["model.alpha"]).split(",")]
    assert alphas == [0.1, 0.3, 1.0, 3.0, 10.0] and dial.model.width == 256
    assert hydra_compose().model.alpha is None  # off by default: the plain network


def test_command_line_beats_presets_and_shortcuts_reach_their_fields(hydra_compose):
    cfg = hydra_compose("experiment=paper", "dataset=sine", "width=7", "lr=0.5", "depth=2")
    assert cfg.dataset.name == "sine" and cfg.model.width == 7 and cfg.train.lr == 0.5
    assert cfg.model.depth == 2
    cfg = hydra_compose("seed=3")
    assert cfg.dataset.seed == 3


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_composes_with_its_schema(hydra_compose, name):
    cfg = hydra_compose(f"dataset={name}")
    validate(cfg)
    assert cfg.dataset.name == name
    assert OmegaConf.get_type(cfg.dataset) is DATASET_SCHEMAS[name]


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_yaml_defaults_match_the_datasets_module(name):
    data = yaml.safe_load((CONF / "dataset" / f"{name}.yaml").read_text())
    options = {k: v for k, v in data.items() if k not in ("defaults", "name")}
    assert options == DATASET_OPTIONS[name]


def test_digits10_is_digits_with_ten_classes(hydra_compose):
    cfg = hydra_compose("dataset=digits10", "seed=2")
    validate(cfg)
    assert OmegaConf.get_type(cfg.dataset) is DATASET_SCHEMAS["digits"]
    assert cfg.dataset.name == "digits" and cfg.dataset.task == "multiclass"
    assert hydra_compose("dataset=digits").dataset.task == "parity"  # today's default
    name, seed, options = dataset_options(cfg)
    ds = load_dataset(name, seed=seed, **options)
    assert ds.n_classes == 10 and ds.n_outputs == 10 and seed == 2


def test_analytic_activations_match_the_core():
    assert set(ANALYTIC_ACTIVATIONS) == set(kernels.ANALYTIC_ACTIVATIONS)


BAD = [
    (["width=0"], "width=0 is invalid: expected an integer >= 1"),
    (["width=abc"], "width=abc is invalid: expected an integer"),
    (["model.width=0"], "model.width=0 is invalid: expected an integer >= 1"),
    (["depth=0"], "depth=0 is invalid: expected an integer >= 1"),
    (["width=2.5"], "width=2.5 is invalid: expected an integer"),
    (["dataset=nope"], "dataset=nope is invalid: expected one of csv, digits, digits10, npz"),
    (["model.activation=sigmoid"], "model.activation=sigmoid is invalid: expected one of relu"),
    (["model.parameterization=muP"], "model.parameterization=muP is invalid: expected one of"),
    (["lr=-1"], "lr=-1 is invalid: expected a finite number > 0"),
    (["lr=0"], "lr=0 is invalid: expected a finite number > 0"),
    (["train.steps=0"], "train.steps=0 is invalid: expected an integer >= 1"),
    (["model.sigma_w=0"], "model.sigma_w=0 is invalid: expected a finite number > 0"),
    (["model.sigma_b=-1"], "model.sigma_b=-1 is invalid: expected a finite number >= 0"),
    (["model.dtype=float16"], "model.dtype=float16 is invalid: expected one of float64, float32"),
    (["seed=-1"], "seed=-1 is invalid: expected an integer >= 0"),
    (["model.alpha=0"], "model.alpha=0 is invalid: expected a finite number > 0 or null"),
    (["model.alpha=-2"], "model.alpha=-2 is invalid: expected a finite number > 0 or null"),
    (["train.analytic=maybe"], "train.analytic=maybe is invalid: expected one of auto, true"),
    (["train.analytic=true", "model.activation=tanh"], "train.analytic=true is invalid with "),
    (
        ["train.analytic=true", "model.parameterization=mean_field"],
        "train.analytic=true is invalid with model.parameterization=mean_field",
    ),
    (["model.foo=1"], "model.foo: no such config field"),
    (
        ["experiment=nope"],
        "experiment=nope is invalid: expected one of digits_width_sweep, lazy_rich_alpha, "
        "lazy_vs_rich",
    ),
    (["dataset.name=sine"], "dataset.name=sine does not match the selected dataset paper_toy"),
    (["dataset.n_test=0"], "dataset.n_test must be an integer >= 1"),
    (["dataset=digits", "dataset.n_train=1700"], "dataset.n_train + n_test must be <= 1797"),
    (["dataset=csv"], "dataset.path must be set"),
    (["dataset=sine", "dataset.noise=-1"], "dataset.noise must be a finite number >= 0"),
    (["tracking.progress=maybe"], "tracking.progress=maybe is invalid"),
    (
        ["tracking.figures=some"],
        "tracking.figures=some is invalid: expected one of paper, all, none, true, false",
    ),
    (["train.backend=gpu"], "train.backend=gpu is invalid: expected one of auto, numpy, fused"),
    (["train.backend=fused", "depth=2"], "train.backend=fused is invalid with model.depth=2"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_values_fail_with_one_line_naming_the_field(hydra_compose, overrides, expected):
    line = error_line(hydra_compose, *overrides)
    assert "\n" not in line
    assert expected in line, line


def test_csv_errors_name_file_and_column(hydra_compose, tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,y\n1,2,3\n4,5,6\n7,x,9\n")
    base = ["dataset=csv", f"dataset.path={csv}", "dataset.target=y"]
    line = error_line(hydra_compose, *base, "dataset.inputs=[a,c]")
    assert "dataset.inputs: column(s) 'c' not found" in line
    line = error_line(hydra_compose, *base, "dataset.inputs=[a,b]")
    assert "'b'" in line and "not a finite number" in line
    line = error_line(
        hydra_compose,
        "dataset=csv",
        "dataset.path=missing.csv",
        "dataset.target=y",
        "dataset.inputs=[a]",
    )
    assert "dataset.path: CSV file not found" in line


def test_analytic_auto_follows_the_model(hydra_compose):
    assert analytic_enabled(hydra_compose())
    assert not analytic_enabled(hydra_compose("model.activation=tanh"))
    assert not analytic_enabled(hydra_compose("model.parameterization=standard"))
    assert not analytic_enabled(hydra_compose("train.analytic=false"))
    assert analytic_enabled(hydra_compose("train.analytic=true"))


def test_figure_set_from_tracking_figures(hydra_compose):
    """paper by default; the booleans of the earlier option mean all and none."""
    assert figure_set(hydra_compose()) == "paper"
    for value, expected in (("all", "all"), ("none", "none"), ("true", "all"), ("false", "none")):
        cfg = hydra_compose(f"tracking.figures={value}")
        validate(cfg)
        assert figure_set(cfg) == expected, value


def test_validation_table_covers_the_fields():
    fields = dict(validation_rules())
    for key in ("width", "lr", "model.width", "model.activation", "train.steps", "dataset"):
        assert key in fields
    assert fields["model.sigma_w"] == "a finite number > 0"
    assert fields["tracking.stale_after_s"] == "a finite number > 0"


# --------------------------------------------------------------------------- log steps


def test_log_steps_union_of_geometric_and_paper_snapshots():
    steps = compute_log_steps(3000, 20, PAPER_SNAPSHOT_STEPS)
    assert steps[0] == 0 and steps[-1] == 3000
    assert set(PAPER_SNAPSHOT_STEPS) <= set(steps)
    assert 20 <= len(steps) <= 30
    assert steps == sorted(set(steps))
    small = compute_log_steps(20, 20, PAPER_SNAPSHOT_STEPS)
    assert small[0] == 0 and small[-1] == 20 and 2 in small and 100 not in small
    assert compute_log_steps(1, 20, ()) == [0, 1]
    assert nearest_step(steps, 500) == 500
    assert nearest_step(small, 500) == 20


# --------------------------------------------------------------------------- tracking helpers


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None, str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///rel/x.db", str(tmp_path)) == (
        f"sqlite:///{tmp_path}/rel/x.db"
    )
    assert tracking.resolve_tracking_uri("sqlite:////abs/x.db", str(tmp_path)) == (
        "sqlite:////abs/x.db"
    )
    assert tracking.resolve_tracking_uri("http://host:5000/", "/") == "http://host:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert tracking.resolve_tracking_uri(None, str(tmp_path)) == f"sqlite:///{tmp_path}/env.db"
    assert tracking.resolve_tracking_uri("http://h:1", str(tmp_path)) == "http://h:1"


@pytest.mark.parametrize(
    "uri", ["foo://bar", "sqlite://x.db", "sqlite:///", "http://", "http://h:port", "mlruns"]
)
def test_malformed_tracking_uri_is_a_config_error(uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match=r"tracking.uri=.* is invalid: expected sqlite:///PATH"):
        tracking.resolve_tracking_uri(uri, "/tmp")


def test_unreachable_server_and_unwritable_path_fail_fast(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingError, match="unreachable"):
        tracking.check_tracking_uri(f"http://127.0.0.1:{port}")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TrackingError, match="not writable"):
        tracking.check_tracking_uri(f"sqlite:///{blocker}/sub/mlflow.db")
    with pytest.raises(TrackingError, match="is a directory"):
        tracking.check_tracking_uri(f"sqlite:///{tmp_path}")
    tracking.check_tracking_uri(f"sqlite:///{tmp_path}/new/mlflow.db")  # created on demand
    assert (tmp_path / "new").is_dir()


def test_flatten_and_hash(hydra_compose):
    cfg = hydra_compose("width=10")
    container = OmegaConf.to_container(cfg, resolve=True)
    flat = tracking.flatten(container)
    assert flat["model.width"] == "10" and flat["width"] == "10"
    assert flat["train.snapshot_steps"] == "[2, 20, 100, 500, 1000, 3000]"
    assert flat["dataset.name"] == "paper_toy"
    assert all(len(v) <= tracking.PARAM_VALUE_MAX for v in flat.values())
    h = tracking.config_hash(container)
    other_tracking = OmegaConf.to_container(
        hydra_compose("width=10", "tracking.uri=sqlite:////x.db", "tracking.figures=false"),
        resolve=True,
    )
    assert tracking.config_hash(other_tracking) == h
    forced = hydra_compose("width=10", "force=true", "tracking.stale_after_s=5")
    assert tracking.config_hash(OmegaConf.to_container(forced, resolve=True)) == h
    assert (
        tracking.config_hash(OmegaConf.to_container(hydra_compose("width=11"), resolve=True)) != h
    )


# fields added after runs were recorded, at the values that reproduce the earlier runs
ADDED_FIELDS = {
    "model": {"alpha": None, "outputs": 1},
    "train": {
        "optimizer": "gd",
        "batch_size": None,
        "momentum": 0.9,
        "loss": "mse",
        "kernel_budget_mb": 256.0,
    },
}


def test_hash_of_a_default_config_is_unchanged_by_the_fields_added_later(hydra_compose):
    """`model.alpha` (null: the plain network), `model.outputs` (1) and the optimiser fields
    (full-batch gd on the mse) at their defaults, as before the fields existed, leave the
    fingerprint as it was, so a resume recognises runs recorded before them; any other value
    counts."""
    import hashlib
    import json

    container = OmegaConf.to_container(hydra_compose("width=10"), resolve=True)
    before = {k: v for k, v in container.items() if k not in tracking.NOT_HASHED}
    for group, fields in ADDED_FIELDS.items():
        for key, value in fields.items():
            assert container[group][key] == value, (group, key)
        before[group] = {k: v for k, v in before[group].items() if k not in fields}
    text = json.dumps(before, sort_keys=True, separators=(",", ":"), default=str)
    assert tracking.config_hash(container) == hashlib.sha256(text.encode()).hexdigest()
    changed = [f"model.alpha={a}" for a in ("1", "0.1")] + [
        "train.optimizer=momentum",
        "train.momentum=0.5",
        "train.loss=xent",
        "train.kernel_budget_mb=1",
    ]
    for override in changed:
        other = hydra_compose("width=10", override)
        assert tracking.config_hash(OmegaConf.to_container(other, resolve=True)) != (
            tracking.config_hash(container)
        ), override
