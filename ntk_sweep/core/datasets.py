"""Datasets for ntk-sweep: small regression / classification problems as NumPy arrays.

Every dataset is returned as a :class:`Dataset` of float64 arrays, ``x`` of shape (N, d) and
``y`` of shape (N,) (one output) or (N, K) (K outputs). Classification datasets also carry
integer class labels (``labels_train``, ``labels_test``, ``n_classes``) and build their targets
from them with :func:`class_targets`, whose encoding depends on the loss. Inputs follow the
convention of MATH.md section 1: the first layer sees ``x . x' / d``, so inputs whose squared
norm is about ``d`` are the natural scale (``teacher`` puts them exactly on the sphere of radius
sqrt(d), ``digits`` and ``standardize=true`` rescale to mean squared norm d; the 1-D sets live
in [0, 1] or [-1, 1]).

Use :func:`load_dataset`::

    ds = load_dataset("sine", seed=3, n_train=20, noise=0.1)
    ds = load_dataset("digits", task="multiclass", loss="mse")  # (N, 10) targets, labels

Your own data: ``npz`` (a NumPy ``.npz`` archive) and ``openml`` (scikit-learn's
``fetch_openml`` from a local cache; downloads only with ``download=True``).

Randomness comes only from ``numpy.random.default_rng`` seeded by ``seed``, so the same seed
and options give bit-identical arrays. Invalid names, options or values raise a one-line
``ValueError`` that names the offending option and its allowed values.
"""

from __future__ import annotations

import math
import numbers
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ntk_sweep.core.losses import LOSSES

DATASETS = ("paper_toy", "sine", "teacher", "digits", "csv", "npz", "openml")
# Losses whose target encoding class_targets knows (the same names as core.losses.LOSSES).
TARGET_LOSSES = LOSSES
TASKS = ("regression", "classification")
DIGITS_TASKS = ("parity", "multiclass")
CLASSES_NEED_CLASSIFICATION = (
    "classes applies only to task=classification (set task=classification)"
)

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
    "digits": {"n_train": 200, "n_test": 200, "task": "parity"},
    "csv": {"path": None, "inputs": None, "target": None, "test_fraction": 0.2},
    "npz": {
        "path": None,
        "x": "x",
        "y": "y",
        "x_test": None,
        "y_test": None,
        "task": "regression",
        "test_fraction": 0.2,
        "n_train": None,
        "n_test": None,
        "classes": None,
        "standardize": False,
    },
    "openml": {
        "data_name": None,
        "data_id": None,
        "version": "active",
        "data_home": None,
        "download": False,
        "task": "classification",
        "n_train": 500,
        "n_test": 500,
        "classes": None,
        "standardize": True,
    },
}

# The paper's toy problem: four 1-D points in [0, 1] (values chosen here, see _paper_toy).
PAPER_TOY_X = (0.1, 0.35, 0.6, 0.85)
PAPER_TOY_Y = (0.1, 0.7, 0.9, 0.3)

DIGITS_N_SAMPLES = 1797  # size of sklearn's bundled 8x8 digits set


@dataclass(frozen=True)
class Dataset:
    """A train/test split. Arrays are float64; ``y_test`` is None when there is no target.

    Targets are (N,) for one output or (N, K) for K outputs (``y_test`` alike, same K).
    Classification datasets set ``n_classes`` (>= 2) and the integer labels in
    [0, n_classes): ``labels_train`` (N,) and ``labels_test`` (M,) (None exactly when
    ``y_test`` is None); their targets come from :func:`class_targets`, so a binary task has
    (N,) targets (K = 1) and K >= 3 classes have (N, K). Regression: all three None.
    """

    name: str
    x_train: np.ndarray  # (N, d)
    y_train: np.ndarray  # (N,) or (N, K)
    x_test: np.ndarray  # (M, d)
    y_test: np.ndarray | None  # (M,) or (M, K) or None
    labels_train: np.ndarray | None = None  # (N,) int64 class labels (classification)
    labels_test: np.ndarray | None = None  # (M,) int64 class labels (classification)
    n_classes: int | None = None  # number of classes (classification), else None

    def __post_init__(self) -> None:
        x_train = np.asarray(self.x_train, dtype=np.float64)
        y_train = np.asarray(self.y_train, dtype=np.float64)
        x_test = np.asarray(self.x_test, dtype=np.float64)
        if x_train.ndim != 2 or x_train.shape[0] < 1 or x_train.shape[1] < 1:
            raise ValueError(
                f"x_train must be a 2-D array (N, d) with N >= 1 and d >= 1, got shape "
                f"{x_train.shape}"
            )
        n = x_train.shape[0]
        if y_train.shape[:1] != (n,) or y_train.ndim not in (1, 2) or 0 in y_train.shape:
            raise ValueError(
                f"y_train must have shape ({n},) or ({n}, K) with K >= 1 to match x_train, "
                f"got {y_train.shape}"
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
            expected = (x_test.shape[0], *y_train.shape[1:])
            if y_test.shape != expected:
                raise ValueError(
                    f"y_test must be None or have shape {expected} to match x_test and "
                    f"y_train, got {y_test.shape}"
                )
            object.__setattr__(self, "y_test", y_test)
        self._check_labels()

    def _check_labels(self) -> None:
        if self.n_classes is None:
            if self.labels_train is not None or self.labels_test is not None:
                raise ValueError("labels_train / labels_test need n_classes (classification)")
            return
        k = _int_option("n_classes", self.n_classes, minimum=2)
        object.__setattr__(self, "n_classes", k)
        outputs = 1 if k == 2 else k
        if self.n_outputs != outputs:
            raise ValueError(
                f"a {k}-class dataset has {outputs} output(s) (class_targets), but y_train has "
                f"shape {self.y_train.shape}"
            )
        for split, labels, m in (
            ("train", self.labels_train, self.n_train),
            ("test", self.labels_test, self.n_test),
        ):
            if labels is None and (split == "train" or self.y_test is not None):
                raise ValueError(f"labels_{split} must be set when n_classes is set")
            if labels is None:
                continue
            if split == "test" and self.y_test is None:
                raise ValueError("labels_test must be None when y_test is None")
            arr = np.asarray(labels)
            if arr.shape != (m,) or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(
                    f"labels_{split} must be an integer array of shape ({m},), got "
                    f"{arr.dtype} {arr.shape}"
                )
            if arr.size and (arr.min() < 0 or arr.max() >= k):
                raise ValueError(
                    f"labels_{split} must lie in [0, {k}), got {arr.min()}..{arr.max()}"
                )
            object.__setattr__(self, f"labels_{split}", arr.astype(np.int64))

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def n_outputs(self) -> int:
        """K, the number of network outputs the targets need (1 for (N,) targets)."""
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    @property
    def is_classification(self) -> bool:
        return self.n_classes is not None


def class_targets(labels: np.ndarray, n_classes: int, loss: str = "mse") -> np.ndarray:
    """Regression targets for integer class labels in [0, n_classes), by loss (MATH.md s.1).

    * ``n_classes == 2`` (binary, one output, K = 1): shape (N,), label 1 -> +1 and label 0 ->
      -1, for both losses (MSE on +-1; for ``"xent"`` the logistic loss log(1 + exp(-y f))
      takes y in {-1, +1}). This is the ``digits`` even/odd encoding.
    * ``n_classes = K >= 3``, shape (N, K):
      ``"mse"``: the mean-subtracted one-hot of Lee et al. (2019), 1 - 1/K on the true class and
      -1/K elsewhere (each row sums to 0, e.g. 0.9 / -0.1 for K = 10);
      ``"xent"``: the plain one-hot (1 on the true class, 0 elsewhere), the probability rows of
      the softmax cross-entropy.
    """
    if loss not in TARGET_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(TARGET_LOSSES)}, got {loss!r}")
    k = _int_option("n_classes", n_classes, minimum=2)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got {labels.min()}..{labels.max()}")
    if k == 2:
        return np.where(labels == 1, 1.0, -1.0)
    off, on = (-1.0 / k, 1.0 - 1.0 / k) if loss == "mse" else (0.0, 1.0)
    targets = np.full((labels.size, k), off, dtype=np.float64)
    targets[np.arange(labels.size), labels] = on
    return targets


def predicted_labels(f: np.ndarray) -> np.ndarray:
    """The class a network output predicts, the inverse of :func:`class_targets`' encoding:
    (N,) outputs (binary): 1 where f > 0, else 0; (N, K): the argmax over the K outputs
    (the first on a tie)."""
    f = np.asarray(f)
    if f.ndim == 1:
        return (f > 0).astype(np.int64)
    return np.argmax(f, axis=1).astype(np.int64)


DIGITS_FEATURES = 64  # 8 x 8 pixels


def declared_sizes(name: str, options: dict[str, Any]) -> dict[str, int] | None:
    """{"n_train", "n_test", "input_dim"} that dataset `name` will have with `options`, where the
    options fix them (the generated datasets), so a run's size is known before the data exists;
    None for datasets read from files or for options `load_dataset` will reject."""
    opts = {**DATASET_OPTIONS.get(name, {}), **options}
    fixed = {
        "paper_toy": {"n_train": len(PAPER_TOY_X), "input_dim": 1},
        "sine": {"input_dim": 1},
        "digits": {"input_dim": DIGITS_FEATURES},
    }
    if name not in (*fixed, "teacher"):
        return None
    sizes = {k: opts.get(k) for k in ("n_train", "n_test", "input_dim")}
    sizes.update(fixed.get(name, {}))
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes.values())
    return sizes if ok else None


def load_dataset(name: str, *, seed: int = 0, loss: str = "mse", **options: Any) -> Dataset:
    """Build dataset ``name`` (one of :data:`DATASETS`) with ``options`` (see DATASET_OPTIONS).

    ``seed`` drives all randomness (ignored by ``paper_toy``, whose values are fixed).
    ``loss`` (one of :data:`TARGET_LOSSES`, the training loss) chooses the target encoding of
    classification datasets (:func:`class_targets`); regression targets do not depend on it.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    seed = _int_option("seed", seed, minimum=0)
    if loss not in TARGET_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(TARGET_LOSSES)}, got {loss!r}")
    valid = DATASET_OPTIONS[name]
    unknown = sorted(k for k in options if k not in valid)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; valid options: "
            f"{', '.join(valid) if valid else '(none)'}"
        )
    opts = {**valid, **options}
    if name in ("digits", "npz", "openml"):  # the classification-capable ones
        opts["loss"] = loss
    builder = {
        "paper_toy": _paper_toy,
        "sine": _sine,
        "teacher": _teacher,
        "digits": _digits,
        "csv": _csv,
        "npz": _npz,
        "openml": _openml,
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


def standardize_inputs(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each feature standardised with the training set's mean and std (features constant on the
    training set become 0), then all inputs scaled by one factor so that the mean squared norm
    of the training inputs is d (the x.x'/d convention of MATH.md s.1). Train statistics only,
    applied to both sets."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    varying = std > 0.0
    scale = np.where(varying, 1.0 / np.where(varying, std, 1.0), 0.0)
    x_train = (x_train - mean) * scale
    x_test = (x_test - mean) * scale
    mean_sq_norm = float(np.mean(np.sum(x_train**2, axis=1)))
    d = x_train.shape[1]
    if mean_sq_norm > 0.0:  # zero only if every training feature is constant (e.g. N = 1)
        factor = np.sqrt(d / mean_sq_norm)
        x_train = x_train * factor
        x_test = x_test * factor
    return x_train, x_test


def _choice_option(option: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _digits(seed: int, *, n_train: int, n_test: int, task: str, loss: str) -> Dataset:
    """sklearn's bundled 8x8 digits (1797 images, no download).

    ``task="parity"``: even digit -> +1, odd -> -1, (N,) targets; class labels 1 (even) and 0
    (odd). ``task="multiclass"``: the 10 digits, labels 0..9, targets
    ``class_targets(labels, 10, loss)`` of shape (N, 10).
    Shuffled by ``seed``; pixels prepared by :func:`standardize_inputs` (mean squared norm 64).
    """
    n_train = _int_option("n_train", n_train, minimum=1)
    n_test = _int_option("n_test", n_test, minimum=1)
    task = _choice_option("task", task, DIGITS_TASKS)
    if n_train + n_test > DIGITS_N_SAMPLES:
        raise ValueError(
            f"n_train + n_test must be <= {DIGITS_N_SAMPLES} (size of the digits dataset), "
            f"got {n_train} + {n_test} = {n_train + n_test}"
        )
    from sklearn.datasets import load_digits  # heavy import, only when needed

    images, digit = load_digits(return_X_y=True)
    images = np.asarray(images, dtype=np.float64)
    if task == "parity":
        labels, n_classes = (np.asarray(digit) % 2 == 0).astype(np.int64), 2
    else:
        labels, n_classes = np.asarray(digit, dtype=np.int64), 10
    order = np.random.default_rng(seed).permutation(images.shape[0])
    idx_train, idx_test = order[:n_train], order[n_train : n_train + n_test]
    x_train, x_test = standardize_inputs(images[idx_train], images[idx_test])
    targets = class_targets(labels, n_classes, loss)
    return Dataset(
        "digits",
        x_train,
        targets[idx_train],
        x_test,
        targets[idx_test],
        labels[idx_train],
        labels[idx_test],
        n_classes,
    )


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
    huge = _overflowing_squares(values.reshape(-1, 1))
    if huge.size:
        row = int(huge[0])
        raise ValueError(
            f"csv column {column!r} in {path}: data row {row + 1} (file line {row + 2}) value "
            f"{raw.iloc[row]!r} is too large: its square overflows float64 ({huge.size} such "
            "value(s) in this column)"
        )
    return values


def _check_csv_header(file: str) -> None:
    """A column name given twice in a CSV file's header row is an error (pandas would rename
    the second `x1` to `x1.1`, and the config's `x1` would silently pick the first)."""
    import csv

    with open(file, newline="", encoding="utf-8-sig") as handle:
        names = [n.strip() for n in next(csv.reader(handle, skipinitialspace=True), [])]
    repeated = [n for n, count in Counter(names).items() if count > 1]
    if repeated:
        raise ValueError(
            f"path: CSV file {file} has the duplicated column name(s) "
            f"{', '.join(map(repr, repeated))} in its header: each column needs its own name"
        )


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
    _check_csv_header(file)
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


# --------------------------------------------------------------------------- your own arrays


def _optional_int(option: str, value: Any) -> int | None:
    return None if value is None else _int_option(option, value, minimum=1)


def _bool_option(option: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{option} must be true or false, got {value!r}")
    return bool(value)


def _class_list(value: Any) -> list[int] | None:
    """The ``classes`` option: None (keep all) or a list of distinct integer labels."""
    if value is None:
        return None
    items = list(value) if isinstance(value, list | tuple) else None
    ints = [_as_int(v) for v in items] if items else None
    if not ints or any(v is None for v in ints) or len(set(ints)) != len(ints):
        raise ValueError(
            f"classes must be null (keep every class) or a list of distinct integer class "
            f"labels, e.g. [0,1,7], got {value!r}"
        )
    return [int(v) for v in ints if v is not None]


def _as_int(value: Any) -> int | None:
    """An integer, or an integral float (as a command line may give it), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    return int(value) if math.isfinite(value) and float(value).is_integer() else None


def _ref(name: str) -> str:
    """What an error message calls an array in mid-sentence: its name without the leading
    option ("x: array 'a' in f.npz" -> "array 'a' in f.npz")."""
    return name.split(": ", 1)[-1]


def _first_bad_row(bad: np.ndarray) -> tuple[int, int]:
    """(row, column) of the first True in a (N, d) mask."""
    row = int(np.flatnonzero(bad.any(axis=1))[0])
    return row, int(np.flatnonzero(bad[row])[0])


def _numeric_array(name: str, arr: Any) -> np.ndarray:
    arr = np.asarray(arr)
    numeric = np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    if not numeric or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} has dtype {arr.dtype}; expected real numbers")
    return arr


def _finite_rows(name: str, arr: np.ndarray) -> np.ndarray:
    """float64 copy of a (N, ...) array; a NaN or inf is an error naming its first row."""
    arr = arr.astype(np.float64)
    flat = arr.reshape(arr.shape[0], -1)
    bad = ~np.isfinite(flat)
    if bad.any():
        row, col = _first_bad_row(bad)
        raise ValueError(
            f"{name} has a non-finite value ({float(flat[row, col])!r}) in row {row} (0-based), "
            f"column {col}; {int(bad.sum())} non-finite value(s) in all"
        )
    huge = _overflowing_squares(flat)
    if huge.size:
        row = int(huge[0])
        col = int(np.flatnonzero(np.abs(flat[row]) > _SQUARE_MAX)[0])
        raise ValueError(
            f"{name} has a value too large ({float(flat[row, col])!r}) in row {row} (0-based), "
            f"column {col}: its square overflows float64"
        )
    return arr


def _overflowing_squares(flat: np.ndarray) -> np.ndarray:
    """Rows of a finite (N, d) array holding a value whose square overflows float64 (|v| above
    ~1.3e154): the network's squared norms and kernels would be inf."""
    return np.flatnonzero((np.abs(flat) > _SQUARE_MAX).any(axis=1))


_SQUARE_MAX = math.sqrt(np.finfo(np.float64).max)


def _inputs(name: str, arr: Any) -> np.ndarray:
    """(N, d) float64 inputs; (N, h, w, ...) images are flattened to (N, h*w*...)."""
    arr = _numeric_array(name, arr)
    if arr.ndim < 2 or arr.shape[0] < 1 or 0 in arr.shape[1:]:
        raise ValueError(
            f"{name} must be a 2-D array (N, d) with N >= 1 and d >= 1 (or (N, h, w, ...) "
            f"images, flattened), got shape {arr.shape}"
        )
    return _finite_rows(name, arr).reshape(arr.shape[0], -1)


def _targets(name: str, arr: Any, rows: int, x_name: str, task: str) -> np.ndarray:
    """Regression: (N,) or (N, K) float64 ((N, 1) -> (N,)); classification: (N,) int64."""
    arr = _numeric_array(name, arr)
    if arr.ndim == 0 or arr.shape[0] != rows:
        got = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]} rows (shape {arr.shape})"
        raise ValueError(f"{name} has {got} but {_ref(x_name)} has {rows} rows")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if task == "classification" and arr.ndim != 1:
        raise ValueError(
            f"{name} must hold one integer class label per row, shape ({rows},), got {arr.shape}"
        )
    if arr.ndim > 2 or 0 in arr.shape:
        raise ValueError(f"{name} must have shape ({rows},) or ({rows}, K), got {arr.shape}")
    values = _finite_rows(name, arr)
    if task == "regression":
        return values
    fractional = values != np.round(values)
    if fractional.any():
        row = int(np.flatnonzero(fractional)[0])
        raise ValueError(
            f"{name} holds the non-integer label {float(values[row])!r} in row {row} (0-based); "
            f"task=classification needs integer class labels (or set task=regression)"
        )
    return values.astype(np.int64)


def _encode_classes(
    labels: list[np.ndarray], classes: list[int] | None, y_name: str
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Keep the rows whose label is in ``classes`` (all if None); class index k = the k-th
    smallest kept label. Returns (row masks, class indices, kept labels)."""
    present = np.unique(np.concatenate(labels))
    if classes is None:
        kept = [int(v) for v in present]
    else:
        missing = [c for c in classes if c not in set(present.tolist())]
        if missing:
            raise ValueError(
                f"classes: label(s) {', '.join(map(str, missing))} not found in {_ref(y_name)}; "
                f"labels present: {', '.join(map(str, present.tolist()))}"
            )
        kept = sorted(classes)
    if len(kept) < 2:
        raise ValueError(
            f"{y_name} holds {len(kept)} class(es) ({', '.join(map(str, kept))}); "
            f"task=classification needs at least 2"
        )
    kept_arr = np.asarray(kept, dtype=np.int64)
    masks = [np.isin(lab, kept_arr) for lab in labels]
    codes = [
        np.searchsorted(kept_arr, lab[m]).astype(np.int64)
        for lab, m in zip(labels, masks, strict=True)
    ]
    return masks, codes, kept


def _split_indices(
    seed: int,
    rows: int,
    test_rows: int | None,
    n_train: int | None,
    n_test: int | None,
    test_fraction: float,
    x_name: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded row indices (train, test). Without a test set (test_rows None) the rows are
    shuffled and the first n_test (default round(test_fraction * rows), >= 1) are the test set,
    the next n_train (default: the rest) the training set, as csv does; with one, the first
    n_train / n_test of a seeded shuffle of each (default: all)."""
    rng = np.random.default_rng(seed)
    if test_rows is None:
        n_test = max(1, int(round(test_fraction * rows))) if n_test is None else n_test
        n_train = rows - n_test if n_train is None else n_train
        if n_train < 1 or n_train + n_test > rows:
            raise ValueError(
                f"n_train + n_test must be <= {rows} (the rows of {_ref(x_name)}) with "
                f"n_train >= 1, got {n_train} + {n_test} = {n_train + n_test}"
            )
        order = rng.permutation(rows)
        return order[n_test : n_test + n_train], order[:n_test]
    for option, value, available in (("n_train", n_train, rows), ("n_test", n_test, test_rows)):
        if value is not None and value > available:
            what = _ref(x_name) if option == "n_train" else "the test set"
            raise ValueError(f"{option}={value} is more than the {available} rows of {what}")
    train = rng.permutation(rows)[: rows if n_train is None else n_train]
    test = rng.permutation(test_rows)[: test_rows if n_test is None else n_test]
    return train, test


def prepare_dataset(
    name: str,
    x: Any,
    y: Any,
    *,
    x_test: Any = None,
    y_test: Any = None,
    seed: int = 0,
    task: str = "regression",
    loss: str = "mse",
    n_train: int | None = None,
    n_test: int | None = None,
    test_fraction: float = 0.2,
    classes: Any = None,
    standardize: bool = False,
    names: dict[str, str] | None = None,
) -> Dataset:
    """A :class:`Dataset` from a user's arrays (pure: arrays in, Dataset out; ``npz`` and
    ``openml`` both end here).

    Checks: ``x`` (N, d) (images (N, h, w, ...) are flattened), ``y`` with N rows, ``x_test``
    with d features, ``y_test`` with its rows, every value finite, integer labels for
    ``task="classification"``. Then in this order: rows of the ``classes`` kept (labels
    re-indexed 0..K-1 in increasing order), the seeded train/test split or subsets
    (:func:`_split_indices`), :func:`standardize_inputs` if ``standardize``, and the targets:
    regression ``y`` as given ((N, 1) becomes (N,)), classification
    ``class_targets(labels, K, loss)``. ``names`` maps "x", "y", "x_test", "y_test" to what
    errors call them (default: the role), so each error is one line that starts with the
    option at fault.
    """
    names = {role: role for role in ("x", "y", "x_test", "y_test")} | (names or {})
    task = _choice_option("task", task, TASKS)
    n_train, n_test = _optional_int("n_train", n_train), _optional_int("n_test", n_test)
    test_fraction = _float_option("test_fraction", test_fraction, minimum=0.0, strict=True)
    if test_fraction >= 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    standardize = _bool_option("standardize", standardize)
    kept_classes = _class_list(classes)
    if kept_classes is not None and task != "classification":
        raise ValueError(CLASSES_NEED_CLASSIFICATION)

    xs, ys = _checked_arrays(names, task, x, y, x_test, y_test)
    n_classes = None
    if task == "classification":
        masks, ys, kept = _encode_classes(ys, kept_classes, names["y"])
        xs = [xi[m] for xi, m in zip(xs, masks, strict=False)] + xs[len(masks) :]
        n_classes = len(kept)
        if len(xs) == 2 and xs[1].shape[0] == 0:
            raise ValueError(f"{names['x_test']} has no row of the kept classes {kept}")
    test_rows = xs[1].shape[0] if len(xs) == 2 else None
    idx_train, idx_test = _split_indices(
        seed, xs[0].shape[0], test_rows, n_train, n_test, test_fraction, names["x"]
    )
    test_x, test_y = (xs[1], ys[1] if len(ys) == 2 else None) if len(xs) == 2 else (xs[0], ys[0])
    x_train, y_train = xs[0][idx_train], ys[0][idx_train]
    x_te, y_te = test_x[idx_test], None if test_y is None else test_y[idx_test]
    if standardize:
        x_train, x_te = standardize_inputs(x_train, x_te)
    if n_classes is None:
        return Dataset(name, x_train, y_train, x_te, y_te)
    t_train = class_targets(y_train, n_classes, loss)
    t_test = None if y_te is None else class_targets(y_te, n_classes, loss)
    return Dataset(name, x_train, t_train, x_te, t_test, y_train, y_te, n_classes)


def _checked_arrays(
    names: dict[str, str], task: str, x: Any, y: Any, x_test: Any, y_test: Any
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """[x, x_test?], [y, y_test?] checked for shapes, finiteness and (classification) integer
    labels; errors name the array (``names``) and its first bad row."""
    if y_test is not None and x_test is None:
        raise ValueError(f"{names['y_test']} is given without x_test (set x_test too)")
    xs = [_inputs(names["x"], x)]
    ys = [_targets(names["y"], y, xs[0].shape[0], names["x"], task)]
    if x_test is not None:
        xs.append(_inputs(names["x_test"], x_test))
        if xs[1].shape[1] != xs[0].shape[1]:
            raise ValueError(
                f"{names['x_test']} has {xs[1].shape[1]} features per row but "
                f"{_ref(names['x'])} has {xs[0].shape[1]}"
            )
    if y_test is not None:
        ys.append(_targets(names["y_test"], y_test, xs[1].shape[0], names["x_test"], task))
        if task == "regression" and ys[1].shape[1:] != ys[0].shape[1:]:
            raise ValueError(
                f"{names['y_test']} has shape {ys[1].shape} but {_ref(names['y'])} has "
                f"{ys[0].shape}: the number of outputs must match"
            )
    return xs, ys


# --------------------------------------------------------------------------- npz and openml


def _array_name(option: str, value: Any, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"{option} must be the name of an array in the .npz file, got {value!r}"
            + ("" if required else " (or null)")
        )
    return value.strip()


def _read_npz(file: str, wanted: dict[str, str]) -> dict[str, np.ndarray]:
    """The arrays ``wanted`` (role -> array name) of an .npz archive, read without pickle."""
    import zipfile

    with open(file, "rb") as handle:
        magic = handle.read(6)
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise ValueError(
            f"path: {file} is not an .npz archive (np.savez / np.savez_compressed); its first "
            f"bytes are {magic!r}"
        )
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"path: cannot read {file} as an .npz archive (np.savez): {_first_line(exc)}"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"path: {file} is a .npy file holding one array, not an .npz archive of named "
            f"arrays (save with np.savez(path, x=..., y=...))"
        )
    out = {}
    with archive:
        present = list(archive.files)
        for role, key in wanted.items():
            if key not in present:
                raise ValueError(
                    f"{role}: array {key!r} not found in {file}; arrays present: "
                    f"{', '.join(map(repr, present)) or '(none)'}"
                )
            try:
                out[role] = archive[key]
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise ValueError(
                    f"{role}: array {key!r} in {file} cannot be read without pickle "
                    f"(allow_pickle=False; save numeric arrays): {_first_line(exc)}"
                ) from None
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _npz(
    seed: int,
    *,
    path: Any,
    x: Any,
    y: Any,
    x_test: Any,
    y_test: Any,
    task: Any,
    test_fraction: Any,
    n_train: Any,
    n_test: Any,
    classes: Any,
    standardize: Any,
    loss: str,
) -> Dataset:
    """Arrays from a NumPy .npz archive (``np.savez``), read with ``allow_pickle=False``.

    ``x`` / ``y`` (and optionally ``x_test`` / ``y_test``) name the arrays; without ``x_test``
    the rows are split by ``seed`` with ``test_fraction``, as csv does. Everything after the
    read is :func:`prepare_dataset`.
    """
    if path is None or not str(path).strip():
        raise ValueError("path must be set for dataset 'npz' (the .npz file to read)")
    roles = {
        "x": _array_name("x", x, required=True),
        "y": _array_name("y", y, required=True),
        "x_test": _array_name("x_test", x_test, required=False),
        "y_test": _array_name("y_test", y_test, required=False),
    }
    wanted = {role: key for role, key in roles.items() if key is not None}
    task = _choice_option("task", task, TASKS)  # before reading: a typo costs no I/O
    file = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(file):
        raise ValueError(f"path: npz file not found: {file}")
    arrays = _read_npz(file, wanted)
    return prepare_dataset(
        "npz",
        arrays["x"],
        arrays["y"],
        x_test=arrays.get("x_test"),
        y_test=arrays.get("y_test"),
        seed=seed,
        task=task,
        loss=loss,
        n_train=n_train,
        n_test=n_test,
        test_fraction=test_fraction,
        classes=classes,
        standardize=standardize,
        names={role: f"{role}: array {key!r} in {file}" for role, key in wanted.items()},
    )


class OpenMLNotCached(ValueError):
    """fetch_openml needed the network while ``download`` is false."""


class _NetworkRefused(Exception):
    """Raised by :func:`_offline`'s handler; not a URLError, so sklearn does not retry it."""


def _openml_id(data_name: Any, data_id: Any, version: Any) -> tuple[str, dict[str, Any]]:
    """(option naming the dataset, fetch_openml's keyword arguments naming it)."""
    if (data_name is None) == (data_id is None):
        raise ValueError(
            "data_name: set exactly one of data_name (e.g. mnist_784) and data_id (e.g. 554) "
            f"for dataset 'openml', got data_name={data_name!r}, data_id={data_id!r}"
        )
    if data_id is not None:
        if str(version) != "active":
            raise ValueError(
                f"version applies only with data_name, not with data_id; got {version!r}"
            )
        return "data_id", {"data_id": _int_option("data_id", data_id, minimum=1)}
    if not isinstance(data_name, str) or not data_name.strip():
        raise ValueError(
            f"data_name must be an OpenML dataset name such as mnist_784, got {data_name!r}"
        )
    if str(version) != "active":
        version = _int_option(
            "version", int(version) if str(version).isdigit() else version, minimum=1
        )
    return "data_name", {"name": data_name.strip(), "version": version}


def _openml_labels(option: str, target: np.ndarray, classes: Any) -> tuple[np.ndarray, Any]:
    """OpenML class targets as integer labels: numbers as they are (checked by
    prepare_dataset), class names that spell integers (mnist's '0'..'9') as those integers,
    other names as their index in sorted order, ``classes`` (names) mapped alike."""
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.number):
        return target, classes
    target = target.astype(str)
    names = np.unique(target).tolist()
    if all(n.strip().lstrip("-").isdigit() for n in names):
        return np.array([int(t) for t in target], dtype=np.int64), classes
    lookup = {n: i for i, n in enumerate(names)}
    if classes is not None:
        unknown = [c for c in classes if str(c) not in lookup]
        if unknown:
            raise ValueError(
                f"classes: {', '.join(map(repr, unknown))} not among the classes of the "
                f"{option} dataset: {', '.join(map(repr, lookup))}"
            )
        classes = [lookup[str(c)] for c in classes]
    return np.array([lookup[t] for t in target], dtype=np.int64), classes


@contextmanager
def _offline() -> Iterator[None]:
    """urllib's global opener refuses every http(s) request inside the block (fetch_openml
    without ``download``): a cache miss raises :class:`_NetworkRefused` instead of
    downloading, and sklearn's retry warnings stay quiet. The default opener is back
    afterwards."""
    import urllib.request
    import warnings

    class Refuse(urllib.request.BaseHandler):
        handler_order = 0  # before the real http(s) handlers

        def _refuse(self, req: Any) -> None:
            raise _NetworkRefused(req.full_url)

        http_open = https_open = _refuse

    urllib.request.install_opener(urllib.request.build_opener(Refuse))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Invalid cache, redownloading" on the refusal
            yield
    finally:
        urllib.request.install_opener(None)  # urlopen builds the default opener again


def fetch_openml_arrays(
    ident: dict[str, Any], data_home: str | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of an OpenML dataset through scikit-learn's ``fetch_openml`` and its cache in
    ``data_home`` (default ``sklearn.datasets.get_data_home()``, ~/scikit_learn_data).
    Without ``download`` a dataset that is not cached raises :class:`OpenMLNotCached`."""
    from urllib.error import URLError

    from sklearn.datasets import fetch_openml, get_data_home

    home = get_data_home(data_home)
    kwargs = {"data_home": home, "as_frame": False, "parser": "auto", **ident}
    label = f"openml dataset {ident.get('name', ident.get('data_id'))!r}"
    try:
        if download:
            bunch = fetch_openml(**kwargs)
        else:
            with _offline():
                bunch = fetch_openml(**kwargs)
    except _NetworkRefused:
        raise OpenMLNotCached(
            f"download: {label} is not in the cache {os.path.join(home, 'openml')} and "
            f"dataset.download=false; set dataset.download=true to fetch it from openml.org "
            f"(needs network access), or point dataset.data_home at a cache that has it"
        ) from None
    except (URLError, TimeoutError, OSError) as exc:
        raise ValueError(f"download: cannot fetch {label}: {_first_line(exc)}") from None
    data = bunch.data
    if hasattr(data, "toarray"):  # a sparse ARFF
        data = data.toarray()
    return np.asarray(data), np.asarray(bunch.target)


def _openml(
    seed: int,
    *,
    data_name: Any,
    data_id: Any,
    version: Any,
    data_home: Any,
    download: Any,
    task: Any,
    n_train: Any,
    n_test: Any,
    classes: Any,
    standardize: Any,
    loss: str,
) -> Dataset:
    """An OpenML dataset (by ``data_name`` [+ ``version``] or ``data_id``) from scikit-learn's
    ``fetch_openml`` cache in ``data_home``; downloaded only with ``download=true``. Rows are
    shuffled by ``seed``: the first ``n_test`` are the test set, the next ``n_train`` (default:
    the rest) the training set. Everything after the fetch is :func:`prepare_dataset`."""
    option, ident = _openml_id(data_name, data_id, version)
    download = _bool_option("download", download)
    task = _choice_option("task", task, TASKS)
    n_train = _optional_int("n_train", n_train)
    n_test = _int_option("n_test", n_test, minimum=1)
    if data_home is not None and (not isinstance(data_home, str) or not data_home.strip()):
        raise ValueError(f"data_home must be a folder (or null for the default), got {data_home!r}")
    if classes is not None and task != "classification":
        raise ValueError(CLASSES_NEED_CLASSIFICATION)
    if classes is not None and (not isinstance(classes, list | tuple) or not classes):
        raise ValueError(
            f"classes must be null (keep every class) or a list of labels, got {classes!r}"
        )
    x, target = fetch_openml_arrays(ident, data_home, download)
    what = f"{option}: openml dataset {next(iter(ident.values()))!r}"
    if task == "classification":
        target, classes = _openml_labels(option, target, classes)
    return prepare_dataset(
        "openml",
        x,
        target,
        seed=seed,
        task=task,
        loss=loss,
        n_train=n_train,
        n_test=n_test,
        classes=classes,
        standardize=standardize,
        names={"x": f"{what} features", "y": f"{what} target"},
    )
