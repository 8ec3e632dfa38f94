"""Datasets for ntk-sweep: small regression / classification problems as NumPy arrays.

Every dataset is returned as a :class:`Dataset` of float64 arrays, ``x`` of shape (N, d) and
``y`` of shape (N,). Inputs follow the convention of MATH.md section 1: the first layer sees
``x . x' / d``, so inputs whose squared norm is about ``d`` are the natural scale (``teacher``
puts them exactly on the sphere of radius sqrt(d), ``digits`` rescales to mean squared norm d;
the 1-D sets live in [0, 1] or [-1, 1]).

Use :func:`load_dataset`::

    ds = load_dataset("sine", seed=3, n_train=20, noise=0.1)

Randomness comes only from ``numpy.random.default_rng`` seeded by ``seed``, so the same seed
and options give bit-identical arrays. Invalid names, options or values raise a one-line
``ValueError`` that names the offending option and its allowed values.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

DATASETS = ("paper_toy", "sine", "teacher", "digits", "csv")

# Options each dataset accepts, with their defaults (None: required, or "not set").
DATASET_OPTIONS: dict[str, dict[str, Any]] = {
    "paper_toy": {"n_test": 200},
    "sine": {"n_train": 20, "n_test": 200, "noise": 0.0, "frequency": 1.0},
    "teacher": {
        "n_train": 64,
        "n_test": 256,
        "input_dim": 5,
        "teacher_width": 512,
        "noise": 0.0,
    },
    "digits": {"n_train": 200, "n_test": 200},
    "csv": {"path": None, "inputs": None, "target": None, "test_fraction": 0.2},
}

# The paper's toy problem: four 1-D points in [0, 1] (values chosen here, see _paper_toy).
PAPER_TOY_X = (0.1, 0.35, 0.6, 0.85)
PAPER_TOY_Y = (0.1, 0.7, 0.9, 0.3)

DIGITS_N_SAMPLES = 1797  # size of sklearn's bundled 8x8 digits set


@dataclass(frozen=True)
class Dataset:
    """A train/test split. Arrays are float64; ``y_test`` is None when there is no target."""

    name: str
    x_train: np.ndarray  # (N, d)
    y_train: np.ndarray  # (N,)
    x_test: np.ndarray  # (M, d)
    y_test: np.ndarray | None  # (M,) or None

    def __post_init__(self) -> None:
        x_train = np.asarray(self.x_train, dtype=np.float64)
        y_train = np.asarray(self.y_train, dtype=np.float64)
        x_test = np.asarray(self.x_test, dtype=np.float64)
        if x_train.ndim != 2 or x_train.shape[0] < 1 or x_train.shape[1] < 1:
            raise ValueError(
                f"x_train must be a 2-D array (N, d) with N >= 1 and d >= 1, got shape "
                f"{x_train.shape}"
            )
        if y_train.shape != (x_train.shape[0],):
            raise ValueError(
                f"y_train must have shape ({x_train.shape[0]},) to match x_train, got "
                f"{y_train.shape}"
            )
        if x_test.ndim != 2 or x_test.shape[0] < 1 or x_test.shape[1] != x_train.shape[1]:
            raise ValueError(
                f"x_test must be a 2-D array (M, {x_train.shape[1]}) with M >= 1 (same d as "
                f"x_train), got shape {x_test.shape}"
            )
        object.__setattr__(self, "x_train", x_train)
        object.__setattr__(self, "y_train", y_train)
        object.__setattr__(self, "x_test", x_test)
        if self.y_test is not None:
            y_test = np.asarray(self.y_test, dtype=np.float64)
            if y_test.shape != (x_test.shape[0],):
                raise ValueError(
                    f"y_test must be None or have shape ({x_test.shape[0]},) to match x_test, "
                    f"got {y_test.shape}"
                )
            object.__setattr__(self, "y_test", y_test)

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


def load_dataset(name: str, *, seed: int = 0, **options: Any) -> Dataset:
    """Build dataset ``name`` (one of :data:`DATASETS`) with ``options`` (see DATASET_OPTIONS).

    ``seed`` drives all randomness (ignored by ``paper_toy``, whose values are fixed).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    seed = _int_option("seed", seed, minimum=0)
    valid = DATASET_OPTIONS[name]
    unknown = sorted(k for k in options if k not in valid)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; valid options: "
            f"{', '.join(valid) if valid else '(none)'}"
        )
    opts = {**valid, **options}
    builder = {
        "paper_toy": _paper_toy,
        "sine": _sine,
        "teacher": _teacher,
        "digits": _digits,
        "csv": _csv,
    }[name]
    return builder(seed, **opts)


# --------------------------------------------------------------------------- validation


def _int_option(option: str, value: Any, *, minimum: int) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, numbers.Real) and not isinstance(value, bool):
        ok = math.isfinite(value) and float(value).is_integer()
    if not ok or int(value) < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_option(option: str, value: Any, *, minimum: float, strict: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))
    ok = ok and (float(value) > minimum if strict else float(value) >= minimum)
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{option} must be a finite number {bound}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- datasets


def _paper_toy(seed: int, *, n_test: int) -> Dataset:
    """The paper's four 1-D training points in [0, 1] and a dense test grid on [0, 1].

    The paper ("The Neural Tangent Kernel", Fig. 1) plots four points in [0, 1] but does not
    list their values. We fix x = (0.1, 0.35, 0.6, 0.85), evenly spaced inside (0, 1) so that
    the grid [0, 1] also shows the network outside the data range (the paper remarks that
    network and kernel machines differ there), and y = (0.1, 0.7, 0.9, 0.3), a bump: the
    least-squares line through them leaves an RMS residual of 0.30, nearly the spread of y
    itself (std 0.32), so the degenerate
    paper setting (sigma_b = 0, x > 0: the network stays linear, MATH.md s.3) visibly fails to
    fit while a non-degenerate one (sigma_b = 1) fits all four. ``seed`` is ignored.
    ``y_test`` is None: the grid has no target.
    """
    del seed
    n_test = _int_option("n_test", n_test, minimum=1)
    x_train = np.asarray(PAPER_TOY_X, dtype=np.float64)[:, None]
    y_train = np.asarray(PAPER_TOY_Y, dtype=np.float64)
    x_test = np.linspace(0.0, 1.0, n_test, dtype=np.float64)[:, None]
    return Dataset("paper_toy", x_train, y_train, x_test, None)


def _sine(seed: int, *, n_train: int, n_test: int, noise: float, frequency: float) -> Dataset:
    """y = sin(pi * frequency * x) + noise * N(0, 1), x ~ U[-1, 1]; test: sorted grid on [-1, 1]
    with the noiseless target."""
    n_train = _int_option("n_train", n_train, minimum=1)
    n_test = _int_option("n_test", n_test, minimum=1)
    noise = _float_option("noise", noise, minimum=0.0)
    frequency = _float_option("frequency", frequency, minimum=0.0, strict=True)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=n_train)
    y = np.sin(np.pi * frequency * x) + noise * rng.standard_normal(n_train)
    x_test = np.linspace(-1.0, 1.0, n_test, dtype=np.float64)
    y_test = np.sin(np.pi * frequency * x_test)
    return Dataset("sine", x[:, None], y, x_test[:, None], y_test)


def _sphere(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    g = rng.standard_normal((n, d))
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    norms[norms == 0.0] = 1.0  # probability zero; keeps the output finite
    return g / norms * np.sqrt(d)


def _teacher(
    seed: int, *, n_train: int, n_test: int, input_dim: int, teacher_width: int, noise: float
) -> Dataset:
    """Inputs uniform on the sphere of radius sqrt(d) (so x.x/d = 1); target from a random
    one-hidden-layer relu teacher in NTK parameterization,
    f(x) = sum_j a_j relu(w_j . x / sqrt(d)) / sqrt(width), with w_j, a_j ~ N(0, 1).

    Teacher, train inputs, test inputs and noise use independent streams spawned from
    ``seed``, so changing n_train or n_test does not change the teacher. ``noise`` is added to
    the training targets only; ``y_test`` is the noiseless teacher output.
    """
    n_train = _int_option("n_train", n_train, minimum=1)
    n_test = _int_option("n_test", n_test, minimum=1)
    d = _int_option("input_dim", input_dim, minimum=1)
    width = _int_option("teacher_width", teacher_width, minimum=1)
    noise = _float_option("noise", noise, minimum=0.0)
    rng_teacher, rng_train, rng_test, rng_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    w = rng_teacher.standard_normal((d, width))
    a = rng_teacher.standard_normal(width)

    def teacher(x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ w / np.sqrt(d), 0.0) @ a / np.sqrt(width)

    x_train = _sphere(rng_train, n_train, d)
    x_test = _sphere(rng_test, n_test, d)
    y_train = teacher(x_train) + noise * rng_noise.standard_normal(n_train)
    return Dataset("teacher", x_train, y_train, x_test, teacher(x_test))


def _digits(seed: int, *, n_train: int, n_test: int) -> Dataset:
    """sklearn's bundled 8x8 digits (1797 images, no download), even digit -> +1, odd -> -1.

    Shuffled by ``seed``; each pixel standardised with the training set's mean and std (pixels
    constant on the training set become 0), then all inputs scaled by one factor so that the
    mean squared norm of the training inputs is d = 64 (the x.x'/d convention).
    """
    n_train = _int_option("n_train", n_train, minimum=1)
    n_test = _int_option("n_test", n_test, minimum=1)
    if n_train + n_test > DIGITS_N_SAMPLES:
        raise ValueError(
            f"n_train + n_test must be <= {DIGITS_N_SAMPLES} (size of the digits dataset), "
            f"got {n_train} + {n_test} = {n_train + n_test}"
        )
    from sklearn.datasets import load_digits  # heavy import, only when needed

    images, labels = load_digits(return_X_y=True)
    images = np.asarray(images, dtype=np.float64)
    targets = np.where(np.asarray(labels) % 2 == 0, 1.0, -1.0)
    order = np.random.default_rng(seed).permutation(images.shape[0])
    idx_train, idx_test = order[:n_train], order[n_train : n_train + n_test]
    x_train, x_test = images[idx_train], images[idx_test]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    varying = std > 0.0
    scale = np.where(varying, 1.0 / np.where(varying, std, 1.0), 0.0)
    x_train = (x_train - mean) * scale
    x_test = (x_test - mean) * scale
    mean_sq_norm = float(np.mean(np.sum(x_train**2, axis=1)))
    d = images.shape[1]
    if mean_sq_norm > 0.0:  # zero only if every training pixel is constant (e.g. n_train = 1)
        factor = np.sqrt(d / mean_sq_norm)
        x_train = x_train * factor
        x_test = x_test * factor
    return Dataset("digits", x_train, targets[idx_train], x_test, targets[idx_test])


def _column_list(value: Any) -> list[str]:
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, Iterable):
        names = [str(part) for part in value]
    else:
        names = []
    if not names or any(not n for n in names):
        raise ValueError(
            f"inputs must be a non-empty list of column names (or a comma-separated string), "
            f"got {value!r}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"inputs must not repeat a column, got {names}")
    return names


def _numeric_column(frame: Any, column: str, path: str) -> np.ndarray:
    import pandas as pd

    raw = frame[column].astype(str).str.strip()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        text = raw.iloc[row]
        what = "is empty" if text == "" else f"value {text!r} is not a finite number"
        raise ValueError(
            f"csv column {column!r} in {path}: data row {row + 1} (file line {row + 2}) {what}"
            f" ({bad.size} bad value(s) in this column)"
        )
    return values


def _csv(seed: int, *, path: Any, inputs: Any, target: Any, test_fraction: float) -> Dataset:
    """A user's CSV file with a header row: ``inputs`` columns -> x, ``target`` column -> y.

    Rows are shuffled by ``seed``; round(test_fraction * rows) rows (at least 1) go to the test
    set and the rest to training. Every used cell must be a finite number.
    """
    import pandas as pd

    if path is None or not str(path).strip():
        raise ValueError("path must be set for dataset 'csv' (the CSV file to read)")
    if target is None or not str(target).strip():
        raise ValueError("target must be set for dataset 'csv' (name of the target column)")
    if inputs is None:
        raise ValueError("inputs must be set for dataset 'csv' (list of input column names)")
    columns = _column_list(inputs)
    target = str(target).strip()
    if target in columns:
        raise ValueError(f"target column {target!r} must not also be listed in inputs {columns}")
    test_fraction = _float_option("test_fraction", test_fraction, minimum=0.0, strict=True)
    if test_fraction >= 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")

    file = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(file):
        raise ValueError(f"path: CSV file not found: {file}")
    try:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"path: cannot parse CSV file {file}: {first}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    available = list(frame.columns)
    for option, names in (("inputs", columns), ("target", [target])):
        missing = [c for c in names if c not in available]
        if missing:
            raise ValueError(
                f"{option}: column(s) {', '.join(map(repr, missing))} not found in {file}; "
                f"available columns: {', '.join(map(repr, available))}"
            )
    n_rows = len(frame)
    if n_rows < 2:
        raise ValueError(f"path: CSV file {file} has {n_rows} data row(s); at least 2 are needed")
    x = np.stack([_numeric_column(frame, c, file) for c in columns], axis=1)
    y = _numeric_column(frame, target, file)
    n_test = max(1, int(round(test_fraction * n_rows)))
    if n_test >= n_rows:
        raise ValueError(
            f"test_fraction={test_fraction:g} gives {n_test} test row(s) out of the {n_rows} in "
            f"{file}; at least 1 row must remain for training"
        )
    order = np.random.default_rng(seed).permutation(n_rows)
    idx_test, idx_train = order[:n_test], order[n_test:]
    return Dataset("csv", x[idx_train], y[idx_train], x[idx_test], y[idx_test])
