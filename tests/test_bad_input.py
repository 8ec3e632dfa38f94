"""The bad-input table: every validated field with a bad value -> one line, exit code 2, and
nothing in the tracking store.

Each row runs in process through the same checks as `python run.py` (Hydra composition, then
`ntk_sweep.experiment.preflight`: config fields, dataset, tracking URI and store), and a
representative subset also as a real `python run.py ...` subprocess, whose stderr line must be
exactly the in-process message. `python -m tests.test_bad_input` prints the table as markdown
(the documented table is generated from these rows and their real messages).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ntk_sweep.config import describe_hydra_error
from ntk_sweep.experiment import preflight
from ntk_sweep.machine import MEMORY_ENV
from tests.conftest import compose_cfg
from tests.test_tracking import damage

ROOT = Path(__file__).resolve().parent.parent
EXIT_CONFIG_ERROR = 2
# The memory rows compare against this machine size (the table does not depend on the host).
TABLE_MEMORY_GIB = "16"


@dataclass(frozen=True)
class Row:
    field: str
    bad: str  # the bad value, as shown in the table
    overrides: tuple[str, ...]  # "{tmp}" = the launch directory
    expected: str  # a substring of the message ("{tmp}" allowed)
    cli: bool = False  # also run as a `python run.py` subprocess


CSV = ("dataset=csv", "dataset.inputs=[x1,x2]", "dataset.target=y")
NPZ = ("dataset=npz", "dataset.path=own.npz")
OPENML = ("dataset=openml", "dataset.data_home=empty_cache")
ROWS = [
    Row("width", "0", ("width=0",), "width=0 is invalid: expected an integer >= 1", cli=True),
    Row(
        "width",
        "abc (not an integer)",
        ("width=abc",),
        "width=abc is invalid: expected an integer",
        cli=True,
    ),
    Row("width", "2.5", ("width=2.5",), "width=2.5 is invalid: expected an integer"),
    Row("model.width", "-3", ("model.width=-3",), "model.width=-3 is invalid: expected an integer"),
    Row("depth", "0", ("depth=0",), "depth=0 is invalid: expected an integer >= 1"),
    Row("lr", "0", ("lr=0",), "lr=0 is invalid: expected a finite number > 0"),
    Row("lr", "-1", ("lr=-1",), "lr=-1 is invalid: expected a finite number > 0"),
    Row("lr", "nan", ("lr=nan",), "lr=nan is invalid: expected a finite number > 0"),
    Row("train.steps", "0", ("train.steps=0",), "train.steps=0 is invalid: expected an integer"),
    Row("seed", "-1", ("seed=-1",), "seed=-1 is invalid: expected an integer >= 0"),
    Row(
        "dataset",
        "nope (unknown)",
        ("dataset=nope",),
        "dataset=nope is invalid: expected one of csv, digits, digits10, npz, openml, paper_toy, "
        "sine, teacher",
    ),
    Row(
        "model.activation",
        "sigmoid (unknown)",
        ("model.activation=sigmoid",),
        "model.activation=sigmoid is invalid: expected one of relu, erf, tanh, linear",
        cli=True,
    ),
    Row(
        "model.parameterization",
        "muP (unknown)",
        ("model.parameterization=muP",),
        "model.parameterization=muP is invalid: expected one of ntk, standard, mean_field",
    ),
    Row(
        "model.sigma_w",
        "0",
        ("model.sigma_w=0",),
        "model.sigma_w=0 is invalid: expected a finite number > 0",
    ),
    Row(
        "model.sigma_w",
        "-1",
        ("model.sigma_w=-1",),
        "model.sigma_w=-1 is invalid: expected a finite number > 0",
    ),
    Row(
        "model.sigma_b",
        "-1",
        ("model.sigma_b=-1",),
        "model.sigma_b=-1 is invalid: expected a finite number >= 0",
    ),
    Row(
        "model.dtype",
        "float16",
        ("model.dtype=float16",),
        "model.dtype=float16 is invalid: expected one of float64, float32",
    ),
    Row(
        "train.optimizer",
        "lbfgs (unknown)",
        ("train.optimizer=lbfgs",),
        "train.optimizer=lbfgs is invalid: expected one of gd, sgd, momentum, adam",
        cli=True,
    ),
    Row(
        "train.batch_size",
        "16 with optimizer gd (full batch)",
        ("train.batch_size=16",),
        "train.batch_size=16 is invalid with train.optimizer=gd (full batch)",
    ),
    Row(
        "train.batch_size",
        "null with optimizer sgd",
        ("train.optimizer=sgd",),
        "train.batch_size=null is invalid with train.optimizer=sgd",
    ),
    Row(
        "train.batch_size",
        "0",
        ("train.optimizer=sgd", "train.batch_size=0"),
        "train.batch_size=0 is invalid: expected an integer >= 1 or null",
    ),
    Row(
        "train.batch_size",
        "64 > N = 20 (sine)",
        ("dataset=sine", "train.optimizer=sgd", "train.batch_size=64"),
        "train.batch_size=64 is invalid: expected an integer in [1, 20] (the dataset's "
        "training samples) or null",
    ),
    Row(
        "train.momentum",
        "1",
        ("train.optimizer=momentum", "train.momentum=1"),
        "train.momentum=1 is invalid: expected a number in [0, 1)",
    ),
    Row(
        "train.loss",
        "hinge (unknown)",
        ("train.loss=hinge",),
        "train.loss=hinge is invalid: expected one of mse, xent",
    ),
    Row(
        "train.loss",
        "xent on a regression dataset",
        ("dataset=sine", "train.loss=xent"),
        "train.loss=xent is invalid with dataset=sine: the cross-entropy needs class labels",
        cli=True,
    ),
    Row(
        "train.backend",
        "fused with optimizer momentum",
        ("train.backend=fused", "train.optimizer=momentum"),
        "train.backend=fused is invalid with train.optimizer=momentum",
    ),
    Row(
        "model.outputs",
        "0",
        ("model.outputs=0",),
        "model.outputs=0 is invalid: expected an integer >= 1",
    ),
    Row(
        "train.analytic",
        "true with activation tanh (no closed form)",
        ("train.analytic=true", "model.activation=tanh"),
        "train.analytic=true is invalid with model.activation=tanh",
        cli=True,
    ),
    Row(
        "train.analytic",
        "true with mean_field parameterization",
        ("train.analytic=true", "model.parameterization=mean_field"),
        "train.analytic=true is invalid with model.parameterization=mean_field",
    ),
    Row(
        "train.n_log_points",
        "1",
        ("train.n_log_points=1",),
        "train.n_log_points=1 is invalid: expected an integer >= 2",
    ),
    Row(
        "train.backend",
        "fused with depth 2",
        ("train.backend=fused", "depth=2"),
        "train.backend=fused is invalid with model.depth=2",
    ),
    Row("model.<key>", "model.foo=1 (no such field)", ("model.foo=1",), "model.foo: no such"),
    Row(
        "widht",
        "+widht=10 (added key; a typo of width)",
        ("+widht=10",),
        "widht=10 is invalid: no such config field; did you mean width?",
        cli=True,
    ),
    Row(
        "model.widht",
        "+model.widht=10 (added key)",
        ("+model.widht=10",),
        "model.widht=10 is invalid: no such config field; did you mean model.width?",
    ),
    Row(
        "dataset.n_trian",
        "+dataset.n_trian=5 (added key)",
        ("dataset=sine", "+dataset.n_trian=5"),
        "dataset.n_trian=5 is invalid: no such config field; did you mean dataset.n_train?",
    ),
    Row(
        "dataset.path",
        "missing.csv (file missing)",
        (*CSV, "dataset.path=missing.csv"),
        "dataset.path: CSV file not found: {tmp}/missing.csv",
        cli=True,
    ),
    Row(
        "dataset.target",
        "z (missing column)",
        ("dataset=csv", "dataset.inputs=[x1,x2]", "dataset.target=z", "dataset.path=good.csv"),
        "dataset.target: column(s) 'z' not found in {tmp}/good.csv",
    ),
    Row(
        "dataset.inputs",
        "[x1,x3] (missing column)",
        ("dataset=csv", "dataset.inputs=[x1,x3]", "dataset.target=y", "dataset.path=good.csv"),
        "dataset.inputs: column(s) 'x3' not found",
    ),
    Row(
        "dataset (CSV content)",
        "a CSV with a non-numeric value",
        (*CSV, "dataset.path=bad.csv"),
        "column 'x2' in {tmp}/bad.csv: data row 2 (file line 3) value 'abc' is not a finite number",
        cli=True,
    ),
    Row(
        "dataset.path",
        "dup.csv (header x1,x1,x2,y: a duplicated column)",
        (*CSV, "dataset.path=dup.csv"),
        "dataset.path: CSV file {tmp}/dup.csv has the duplicated column name(s) 'x1' in its header",
        cli=True,
    ),
    Row(
        "dataset.test_fraction",
        "1.0 (no rows left to train)",
        (*CSV, "dataset.path=good.csv", "dataset.test_fraction=1.0"),
        "dataset.test_fraction must be in (0, 1)",
    ),
    Row(
        "dataset.test_fraction",
        "0.9 of 3 rows (test set takes every row)",
        (*CSV, "dataset.path=good.csv", "dataset.test_fraction=0.9"),
        "at least 1 row must remain for training",
    ),
    Row(
        "dataset.n_train + n_test",
        "n_test 1700 with n_train 200 (more than the 1797 digits)",
        ("dataset=digits", "dataset.n_test=1700"),
        "dataset.n_train + n_test must be <= 1797",
    ),
    Row(
        "dataset.n_train",
        "0",
        ("dataset=sine", "dataset.n_train=0"),
        "dataset.n_train must be an integer >= 1",
    ),
    Row(
        "dataset.path",
        "missing.npz (file missing)",
        ("dataset=npz", "dataset.path=missing.npz"),
        "dataset.path: npz file not found: {tmp}/missing.npz",
    ),
    Row(
        "dataset.path",
        "good.csv (not an .npz archive)",
        ("dataset=npz", "dataset.path=good.csv"),
        "dataset.path: {tmp}/good.csv is not an .npz archive (np.savez / np.savez_compressed)",
    ),
    Row(
        "dataset.y",
        "labels (no such array)",
        (*NPZ, "dataset.y=labels"),
        "dataset.y: array 'labels' not found in {tmp}/own.npz; arrays present: 'x', 'y', "
        "'y_short', 'x_flat', 'x_test3', 'x_nan', 'x_huge', 'y_inf', 'y_half'",
    ),
    Row(
        "dataset.x_test",
        "xt (no such array)",
        (*NPZ, "dataset.x_test=xt"),
        "dataset.x_test: array 'xt' not found in {tmp}/own.npz; arrays present: 'x', 'y'",
    ),
    Row(
        "dataset.x",
        "x_flat (1-D, not (N, d))",
        (*NPZ, "dataset.x=x_flat"),
        "dataset.x: array 'x_flat' in {tmp}/own.npz must be a 2-D array (N, d)",
    ),
    Row(
        "dataset.y",
        "y_short (5 rows for 6 inputs)",
        (*NPZ, "dataset.y=y_short"),
        "dataset.y: array 'y_short' in {tmp}/own.npz has 5 rows (shape (5,)) but array 'x' in "
        "{tmp}/own.npz has 6 rows",
    ),
    Row(
        "dataset.x_test",
        "x_test3 (3 features, x has 2)",
        (*NPZ, "dataset.x_test=x_test3"),
        "dataset.x_test: array 'x_test3' in {tmp}/own.npz has 3 features per row but array 'x' "
        "in {tmp}/own.npz has 2",
    ),
    Row(
        "dataset.x",
        "x_nan (a NaN in row 4)",
        (*NPZ, "dataset.x=x_nan"),
        "dataset.x: array 'x_nan' in {tmp}/own.npz has a non-finite value (nan) in row 4 "
        "(0-based), column 1",
    ),
    Row(
        "dataset.y",
        "y_inf (an inf in row 2)",
        (*NPZ, "dataset.y=y_inf"),
        "dataset.y: array 'y_inf' in {tmp}/own.npz has a non-finite value (inf) in row 2",
    ),
    Row(
        "dataset.y",
        "y_half with task=classification (label 0.5)",
        (*NPZ, "dataset.y=y_half", "dataset.task=classification"),
        "dataset.y: array 'y_half' in {tmp}/own.npz holds the non-integer label 0.5 in row 1 "
        "(0-based); task=classification needs integer class labels",
    ),
    Row(
        "dataset.task",
        "ranking (unknown)",
        (*NPZ, "dataset.task=ranking"),
        "dataset.task must be one of regression, classification, got 'ranking'",
    ),
    Row(
        "dataset.download",
        "false, dataset not cached",
        (*OPENML, "dataset.data_name=mnist_784"),
        "dataset.download: openml dataset 'mnist_784' is not in the cache "
        "{tmp}/empty_cache/openml and dataset.download=false; set dataset.download=true",
    ),
    Row(
        "dataset.data_name",
        "neither data_name nor data_id",
        OPENML,
        "dataset.data_name: set exactly one of data_name (e.g. mnist_784) and data_id",
    ),
    Row(
        "dataset.classes",
        "[3,8] with task=regression",
        (*OPENML, "dataset.data_id=554", "dataset.task=regression", "dataset.classes=[3,8]"),
        "dataset.classes applies only to task=classification",
    ),
    Row(
        "dataset (outputs)",
        "digits10 (10 outputs) with a 1-output model",
        ("dataset=digits10",),
        "dataset=digits has 10-output targets (10 classes, y of shape (200, 10)) but the model "
        "has model.outputs=1",
    ),
    Row(
        "tracking.uri",
        "foo://bar (malformed)",
        ("tracking.uri=foo://bar",),
        "tracking.uri=foo://bar is invalid: expected sqlite:///PATH, http(s)://HOST[:PORT]",
        cli=True,
    ),
    Row(
        "tracking.uri",
        "http://host:port (malformed port)",
        ("tracking.uri=http://host:port",),
        "tracking.uri=http://host:port is invalid",
    ),
    Row(
        "tracking.uri",
        "sqlite:///FILE/sub/mlflow.db (unwritable path)",
        ("tracking.uri=sqlite:///{tmp}/afile/sub/mlflow.db",),
        "tracking store sqlite:///{tmp}/afile/sub/mlflow.db is not writable: cannot create",
        cli=True,
    ),
    Row(
        "tracking.uri",
        "http://127.0.0.1:9 (server down)",
        ("tracking.uri=http://127.0.0.1:9",),
        "tracking server http://127.0.0.1:9 is unreachable",
        cli=True,
    ),
    Row(
        "tracking.artifact_location",
        "an existing file",
        ("tracking.artifact_location={tmp}/afile",),
        "tracking.artifact_location={tmp}/afile is invalid: {tmp}/afile is a file, not a folder",
        cli=True,
    ),
    Row(
        "tracking.artifact_location",
        "a path under a file",
        ("tracking.artifact_location={tmp}/afile/artifacts",),
        "tracking.artifact_location={tmp}/afile/artifacts is invalid: cannot create "
        "{tmp}/afile/artifacts, {tmp}/afile is a file",
    ),
    Row(
        "tracking.uri",
        "sqlite:///damaged.db (a page overwritten)",
        ("tracking.uri=sqlite:///damaged.db",),
        "tracking store sqlite:///{tmp}/damaged.db is damaged (quick_check: ",
    ),
    Row(
        "tracking.uri",
        "sqlite:///notes.db (not a database)",
        ("tracking.uri=sqlite:///notes.db",),
        "tracking store sqlite:///{tmp}/notes.db is damaged (quick_check: file is not a "
        "database): restore it from a backup or choose another tracking.uri",
    ),
    Row(
        "tracking.stale_after_s",
        "0",
        ("tracking.stale_after_s=0",),
        "tracking.stale_after_s=0 is invalid: expected a finite number > 0",
    ),
    Row("force", "maybe", ("force=maybe",), "force=maybe is invalid: expected true or false"),
    Row(
        "width",
        "1000000000 (does not fit in memory)",
        ("width=1000000000",),
        "width=1000000000 needs about 492 GiB of memory (activations 268 GiB, parameters 224 "
        "GiB) but this machine has 16 GiB (set by NTK_SWEEP_MEMORY_GIB): lower width",
        cli=True,
    ),
    Row(
        "width",
        "10000000 with depth 3 (does not fit)",
        ("width=10000000", "depth=3"),
        "width=10000000 depth=3 needs about 14 PiB of memory",
    ),
    Row(
        "dataset.n_train",
        "200000 (teacher; its N x N kernels do not fit)",
        ("dataset=teacher", "dataset.n_train=200000"),
        "dataset.n_train=200000 needs about",
    ),
    Row(
        "dataset.n_test",
        "100000000 (paper_toy; does not fit)",
        ("dataset=paper_toy", "dataset.n_test=100000000"),
        "dataset.n_test=100000000 needs about",
    ),
    Row(
        "model.sigma_w",
        "1e300 (the initial NTK overflows)",
        ("model.sigma_w=1e300",),
        "model.sigma_w=1e+300 would overflow the initial NTK (N K x its scale about inf; float64 "
        "kernels and their products need at most 1e+150): lower model.sigma_w",
        cli=True,
    ),
    Row(
        "model.sigma_b",
        "1e200 (the initial NTK overflows)",
        ("model.sigma_b=1e200",),
        "model.sigma_b=1e+200 would overflow the initial NTK",
    ),
    Row(
        "model.sigma_w",
        "1e5 with float32 and depth 3",
        ("model.sigma_w=1e5", "model.dtype=float32", "depth=3"),
        "model.sigma_w=100000 would overflow the initial NTK",
    ),
    Row(
        "dataset (CSV content)",
        "a CSV value 1e300 (its square overflows)",
        (*CSV, "dataset.path=huge.csv"),
        "csv column 'x2' in {tmp}/huge.csv: data row 2 (file line 3) value '1e300' is too large: "
        "its square overflows float64",
    ),
    Row(
        "dataset (CSV content)",
        "CSV inputs near 1e100 (the kernel overflows)",
        (*CSV, "dataset.path=big.csv"),
        "the inputs of dataset=csv (largest |x|^2/d 5e+199) would overflow the initial NTK",
    ),
    Row(
        "dataset.x",
        "x_huge (a value 1e200)",
        (*NPZ, "dataset.x=x_huge"),
        "dataset.x: array 'x_huge' in {tmp}/own.npz has a value too large (1e+200) in row 3 "
        "(0-based), column 0: its square overflows float64",
    ),
]
MULTIRUN_ROW = Row(
    "width (one job of a sweep)",
    "-m width=32,0",
    ("-m", "width=32,0"),
    "width=0 is invalid: expected an integer >= 1 [job 1: width=0]",
    cli=True,
)


def _ids(rows: list[Row]) -> list[str]:
    return [" ".join(r.overrides) for r in rows]


def launch_dir(tmp: Path) -> Path:
    """A launch directory with the CSV files the table refers to."""
    (tmp / "good.csv").write_text("x1,x2,y\n0.1,0.2,1\n0.3,0.4,2\n0.5,0.6,3\n")
    (tmp / "bad.csv").write_text("x1,x2,y\n0.1,0.2,1\n0.3,abc,2\n0.5,0.6,3\n")
    (tmp / "dup.csv").write_text("x1,x1,x2,y\n0.1,0.2,0.3,1\n0.3,0.4,0.5,2\n0.5,0.6,0.7,3\n")
    (tmp / "huge.csv").write_text("x1,x2,y\n0.1,0.2,1\n0.3,1e300,2\n0.5,0.6,3\n")
    (tmp / "big.csv").write_text("x1,x2,y\n0.1,0.2,1\n0.3,1e100,2\n0.5,0.6,3\n")
    (tmp / "afile").write_text("a file where a folder is needed\n")
    write_own_npz(tmp / "own.npz")
    (tmp / "notes.db").write_text("notes, not a database\n" * 300)
    with contextlib.closing(sqlite3.connect(tmp / "damaged.db")) as con:
        con.execute("CREATE TABLE runs (x)")
        con.executemany("INSERT INTO runs VALUES (?)", [(b"x" * 100,)] * 200)
        con.commit()
    damage(tmp / "damaged.db")
    return tmp


def write_own_npz(path: Path) -> None:
    """6 rows of 2-D inputs and a target, plus one bad array per npz row of the table."""
    x = np.arange(12.0).reshape(6, 2) / 10
    x_nan = x.copy()
    x_nan[4, 1] = np.nan
    x_huge = x.copy()
    x_huge[3, 0] = 1e200
    np.savez(
        path,
        x=x,
        y=np.sin(x[:, 0]),
        y_short=np.zeros(5),
        x_flat=np.zeros(6),
        x_test3=np.zeros((2, 3)),
        x_nan=x_nan,
        x_huge=x_huge,
        y_inf=np.array([0.0, 1.0, np.inf, 0.0, 1.0, 0.0]),
        y_half=np.array([0.0, 0.5, 1.0, 0.0, 1.0, 0.0]),
    )


def _format(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


def preflight_error(overrides: tuple[str, ...], tmp: Path) -> str:
    """The stderr line `python run.py OVERRIDES` prints, computed in process: Hydra composes,
    then `preflight` checks (run.py -> run_experiment -> preflight)."""
    try:
        cfg = compose_cfg(*(_format(o, tmp) for o in overrides))
        preflight(cfg, str(tmp))
    except Exception as exc:  # noqa: BLE001 - the message is what we inspect
        return f"error: {describe_hydra_error(exc)}"
    raise AssertionError(f"{overrides} passed every check")


def assert_nothing_stored(tmp: Path) -> None:
    leftovers = [p.name for p in tmp.rglob("*") if p.name in ("mlflow.db", "mlruns")]
    assert not leftovers, leftovers


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv(MEMORY_ENV, TABLE_MEMORY_GIB)


@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_bad_value_is_one_line_naming_the_field_and_stores_nothing(row, tmp_path, clean_env):
    tmp = launch_dir(tmp_path)
    line = preflight_error(row.overrides, tmp)
    assert "\n" not in line
    assert _format(row.expected, tmp) in line, line
    field = row.field.split(" ")[0].split(".<")[0]
    assert field in line, line
    assert_nothing_stored(tmp)


def run_cli(args: tuple[str, ...], tmp: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env.pop("HYDRA_FULL_ERROR", None)
    env[MEMORY_ENV] = TABLE_MEMORY_GIB
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            *(_format(a, tmp) for a in args),
            f"hydra.run.dir={tmp / 'run'}",
            f"hydra.sweep.dir={tmp / 'sweep'}",
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


CLI_ROWS = [r for r in ROWS if r.cli] + [MULTIRUN_ROW]


@pytest.mark.slow
@pytest.mark.parametrize("row", CLI_ROWS, ids=_ids(CLI_ROWS))
def test_bad_value_on_the_command_line_exits_2_before_anything(row, tmp_path, clean_env):
    tmp = launch_dir(tmp_path)
    res = run_cli(row.overrides, tmp)
    assert res.returncode == EXIT_CONFIG_ERROR, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0] == f"error: {_format(row.expected, tmp)}" or (
        _format(row.expected, tmp) in lines[0]
    ), lines[0]
    if row is not MULTIRUN_ROW:  # the same checks as in process, the same line
        assert lines[0] == preflight_error(row.overrides, tmp)
    assert "ntk-sweep run" not in res.stdout  # no training
    assert_nothing_stored(tmp)
    assert not (tmp / "run" / "arrays").exists() and not (tmp / "sweep" / "0").exists()


@pytest.mark.slow
def test_npz_run_end_to_end_and_bad_own_data_leaves_the_store_as_it_was(tmp_path):
    """`python run.py dataset=npz` trains on the file's rows (one output) into a SQLite store;
    then a missing array exits 2 with one line, and reading the store back finds that one run
    and nothing else."""
    import mlflow

    tmp = launch_dir(tmp_path)
    db = f"sqlite:///{tmp / 'store.db'}"
    good = run_cli(
        (*NPZ, "width=16", "train.steps=5", "tracking.figures=none", f"tracking.uri={db}"), tmp
    )
    assert good.returncode == 0, good.stderr
    with np.load(tmp / "own.npz") as z, np.load(tmp / "run" / "arrays" / "ntk.npz") as arrays:
        x, x_train = z["x"], arrays["x_train"]
        assert x_train.shape == (5, 2) and arrays["x_test"].shape == (1, 2)  # round(0.2 * 6)
        order = np.random.default_rng(0).permutation(6)  # seed 0: test row first, as csv
        np.testing.assert_array_equal(x_train, x[order[1:]])
        np.testing.assert_array_equal(arrays["y_train"], z["y"][order[1:]])
    # (openml's rows go through the same preflight in process: a subprocess importing
    # scikit-learn's fetch_openml costs ~6 s of CPU)
    bad = (*NPZ, "dataset.y=labels")
    res = run_cli((*bad, f"tracking.uri={db}"), tmp)
    assert res.returncode == EXIT_CONFIG_ERROR, res.stderr
    assert res.stderr.strip().splitlines() == [preflight_error(bad, tmp)], res.stderr
    assert "ntk-sweep run" not in res.stdout
    client = mlflow.MlflowClient(db)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert [(r.info.status, r.data.params["dataset.name"]) for r in runs] == [("FINISHED", "npz")]
    assert np.isfinite(runs[0].data.metrics["test_loss"])


def markdown_table() -> str:
    """The documented table, with the real message of each row."""
    import tempfile

    out = [
        "| field | bad value | command line | message (stderr, one line) | exit code |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as d:
        tmp = launch_dir(Path(d))
        for row in [*ROWS, MULTIRUN_ROW]:
            if row is MULTIRUN_ROW:
                line = f"error: {row.expected}"
            else:
                line = preflight_error(row.overrides, tmp)
            line = line.replace(str(tmp), "/launch/dir")
            args = " ".join(row.overrides).replace("{tmp}", "/launch/dir")
            cells = [f"`{row.field}`", row.bad, f"`{args}`", f"`{line}`", "2"]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ[MEMORY_ENV] = TABLE_MEMORY_GIB
    print(markdown_table())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("width=10", "modle.width=3"), "modle.width: no such config field"),
        (("widht=10",), "widht: no such config field"),
        (("width=1e3",), "width=1e3 is invalid: expected an integer (write 1000)"),
    ],
)
def test_typos_without_plus_get_a_suggestion_and_1e3_is_quoted(overrides, expected, tmp_path):
    """A misspelt section or key without `+` gets "did you mean", `1e3` for an
    integer is refused quoting what was typed, with the integer to write."""
    line = preflight_error(overrides, launch_dir(tmp_path))
    assert expected in line and "\n" not in line, line
    if "no such" in line:
        assert line.endswith(f"did you mean {'model.' if 'modle' in line else ''}width?"), line
