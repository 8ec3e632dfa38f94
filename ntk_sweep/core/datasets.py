"""Datasets for ntk-sweep: small regression / classification problems as NumPy arrays.

Every dataset is a :class:`Dataset` of float64 arrays, ``x`` of shape (N, d) and ``y`` of shape
(N,) (one output) or (N, K) (K outputs). Classification datasets also carry integer class labels
(``labels_train``, ``labels_test``, ``n_classes``) and build their targets from them with
:func:`class_targets`, whose encoding depends on the loss. Inputs follow the convention of
MATH.md section 1: the first layer sees ``x . x' / d``, so inputs whose squared norm is about
``d`` are the natural scale (``teacher`` puts them exactly on the sphere of radius sqrt(d),
``digits`` and ``standardize=true`` rescale to mean squared norm d; the 1-D sets live in [0, 1]
or [-1, 1]).

This module is pure: arrays in, :class:`Dataset` out. It generates the synthetic sets
(:func:`paper_toy`, :func:`sine`, :func:`teacher`) and prepares arrays someone else read
(:func:`digits_dataset`, :func:`shuffled_split`, :func:`prepare_dataset`,
:func:`standardize_inputs`). Reading files (CSV, npz, sklearn's digits) and fetching OpenML is
the app's: ``ntk_sweep.dataset_sources.load_dataset`` reads, then hands the arrays here.

Randomness comes only from ``numpy.random.default_rng`` seeded by ``seed``, so the same seed
and options give bit-identical arrays. Invalid options or values raise a one-line
``ValueError`` that names the offending option and its allowed values.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ntk_sweep.core.checks import (
    bool_option,
    choice_option,
    float_option,
    int_option,
    optional_int,
)
from ntk_sweep.core.losses import LOSSES

# Losses whose target encoding class_targets knows (the same names as core.losses.LOSSES).
TARGET_LOSSES = LOSSES
TASKS = ("regression", "classification")
DIGITS_TASKS = ("parity", "multiclass")
CLASSES_NEED_CLASSIFICATION = (
    "classes applies only to task=classification (set task=classification)"
)

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
        k = int_option("n_classes", self.n_classes, minimum=2)
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
    k = int_option("n_classes", n_classes, minimum=2)
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


# --------------------------------------------------------------------------- datasets


def paper_toy(seed: int, *, n_test: int) -> Dataset:
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
    n_test = int_option("n_test", n_test, minimum=1)
    x_train = np.asarray(PAPER_TOY_X, dtype=np.float64)[:, None]
    y_train = np.asarray(PAPER_TOY_Y, dtype=np.float64)
    x_test = np.linspace(0.0, 1.0, n_test, dtype=np.float64)[:, None]
    return Dataset("paper_toy", x_train, y_train, x_test, None)


def sine(seed: int, *, n_train: int, n_test: int, noise: float, frequency: float) -> Dataset:
    """y = sin(pi * frequency * x) + noise * N(0, 1), x ~ U[-1, 1]; test: sorted grid on [-1, 1]
    with the noiseless target."""
    n_train = int_option("n_train", n_train, minimum=1)
    n_test = int_option("n_test", n_test, minimum=1)
    noise = float_option("noise", noise, minimum=0.0)
    frequency = float_option("frequency", frequency, minimum=0.0, strict=True)
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


def teacher(
    seed: int, *, n_train: int, n_test: int, input_dim: int, teacher_width: int, noise: float
) -> Dataset:
    """Inputs uniform on the sphere of radius sqrt(d) (so x.x/d = 1); target from a random
    one-hidden-layer relu teacher in NTK parameterization,
    f(x) = sum_j a_j relu(w_j . x / sqrt(d)) / sqrt(width), with w_j, a_j ~ N(0, 1).

    Teacher, train inputs, test inputs and noise use independent streams spawned from
    ``seed``, so changing n_train or n_test does not change the teacher. ``noise`` is added to
    the training targets only; ``y_test`` is the noiseless teacher output.
    """
    n_train = int_option("n_train", n_train, minimum=1)
    n_test = int_option("n_test", n_test, minimum=1)
    d = int_option("input_dim", input_dim, minimum=1)
    width = int_option("teacher_width", teacher_width, minimum=1)
    noise = float_option("noise", noise, minimum=0.0)
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


def check_digits_options(n_train: Any, n_test: Any, task: Any) -> tuple[int, int, str]:
    """(n_train, n_test, task) of the ``digits`` dataset, checked before its images are read."""
    n_train = int_option("n_train", n_train, minimum=1)
    n_test = int_option("n_test", n_test, minimum=1)
    task = choice_option("task", task, DIGITS_TASKS)
    if n_train + n_test > DIGITS_N_SAMPLES:
        raise ValueError(
            f"n_train + n_test must be <= {DIGITS_N_SAMPLES} (size of the digits dataset), "
            f"got {n_train} + {n_test} = {n_train + n_test}"
        )
    return n_train, n_test, task


def digits_dataset(
    images: np.ndarray,
    digit: np.ndarray,
    seed: int,
    *,
    n_train: int,
    n_test: int,
    task: str,
    loss: str,
) -> Dataset:
    """sklearn's 8x8 digits (``images`` (1797, 64), ``digit`` (1797,), as
    ``load_digits(return_X_y=True)`` gives them) as a :class:`Dataset`.

    ``task="parity"``: even digit -> +1, odd -> -1, (N,) targets; class labels 1 (even) and 0
    (odd). ``task="multiclass"``: the 10 digits, labels 0..9, targets
    ``class_targets(labels, 10, loss)`` of shape (N, 10).
    Shuffled by ``seed``; pixels prepared by :func:`standardize_inputs` (mean squared norm 64).
    Options as :func:`check_digits_options` returns them.
    """
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


def shuffled_split(
    name: str, x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float, source: str
) -> Dataset:
    """Rows of (``x``, ``y``) shuffled by ``seed``: round(test_fraction * rows) rows (at least 1)
    go to the test set and the rest to training (the ``csv`` dataset; ``source`` names where
    the rows came from in errors)."""
    n_rows = x.shape[0]
    n_test = max(1, int(round(test_fraction * n_rows)))
    if n_test >= n_rows:
        raise ValueError(
            f"test_fraction={test_fraction:g} gives {n_test} test row(s) out of the {n_rows} in "
            f"{source}; at least 1 row must remain for training"
        )
    order = np.random.default_rng(seed).permutation(n_rows)
    idx_test, idx_train = order[:n_test], order[n_test:]
    return Dataset(name, x[idx_train], y[idx_train], x[idx_test], y[idx_test])


# --------------------------------------------------------------------------- your own arrays


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
    huge = overflowing_squares(flat)
    if huge.size:
        row = int(huge[0])
        col = int(np.flatnonzero(np.abs(flat[row]) > SQUARE_MAX)[0])
        raise ValueError(
            f"{name} has a value too large ({float(flat[row, col])!r}) in row {row} (0-based), "
            f"column {col}: its square overflows float64"
        )
    return arr


def overflowing_squares(flat: np.ndarray) -> np.ndarray:
    """Rows of a finite (N, d) array holding a value whose square overflows float64 (|v| above
    ~1.3e154): the network's squared norms and kernels would be inf."""
    return np.flatnonzero((np.abs(flat) > SQUARE_MAX).any(axis=1))


SQUARE_MAX = math.sqrt(np.finfo(np.float64).max)


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
    task = choice_option("task", task, TASKS)
    n_train, n_test = optional_int("n_train", n_train), optional_int("n_test", n_test)
    test_fraction = float_option("test_fraction", test_fraction, minimum=0.0, strict=True)
    if test_fraction >= 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    standardize = bool_option("standardize", standardize)
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
