"""Where datasets come from: the files and downloads behind ``dataset=...``, read here (the
app) and handed as arrays to the pure core (``ntk_sweep.core.datasets``).

Use :func:`load_dataset`::

    ds = load_dataset("sine", seed=3, n_train=20, noise=0.1)
    ds = load_dataset("digits", task="multiclass", loss="mse")  # (N, 10) targets, labels

The generated sets (``paper_toy``, ``sine``, ``teacher``) come straight from the core.
``digits`` reads scikit-learn's bundled 8x8 images, ``csv`` a user's CSV file (pandas), ``npz``
a NumPy ``.npz`` archive (without pickle) and ``openml`` scikit-learn's ``fetch_openml`` from a
local cache (downloads only with ``download=True``; otherwise urllib's opener refuses every
request for the duration of the fetch). Everything after the read is the core's
(:func:`~ntk_sweep.core.datasets.prepare_dataset` and its kin), so the same seed and options
give bit-identical arrays.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ntk_sweep.core.checks import (
    bool_option,
    choice_option,
    float_option,
    int_option,
    optional_int,
)
from ntk_sweep.core.datasets import (
    CLASSES_NEED_CLASSIFICATION,
    DIGITS_FEATURES,
    PAPER_TOY_X,
    TARGET_LOSSES,
    TASKS,
    Dataset,
    check_digits_options,
    digits_dataset,
    overflowing_squares,
    paper_toy,
    prepare_dataset,
    shuffled_split,
    sine,
    teacher,
)

DATASETS = ("paper_toy", "sine", "teacher", "digits", "csv", "npz", "openml")


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
    seed = int_option("seed", seed, minimum=0)
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
        "paper_toy": paper_toy,
        "sine": sine,
        "teacher": teacher,
        "digits": _digits,
        "csv": _csv,
        "npz": _npz,
        "openml": _openml,
    }[name]
    return builder(seed, **opts)


def _digits(seed: int, *, n_train: int, n_test: int, task: str, loss: str) -> Dataset:
    """sklearn's bundled 8x8 digits (1797 images, no download), read here and prepared by
    :func:`~ntk_sweep.core.datasets.digits_dataset`; the options are checked before the read."""
    n_train, n_test, task = check_digits_options(n_train, n_test, task)
    from sklearn.datasets import load_digits  # heavy import, only when needed

    images, digit = load_digits(return_X_y=True)
    return digits_dataset(images, digit, seed, n_train=n_train, n_test=n_test, task=task, loss=loss)


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
    huge = overflowing_squares(values.reshape(-1, 1))
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
    test_fraction = float_option("test_fraction", test_fraction, minimum=0.0, strict=True)
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
    return shuffled_split("csv", x, y, seed, test_fraction, file)


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
    task = choice_option("task", task, TASKS)  # before reading: a typo costs no I/O
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
        return "data_id", {"data_id": int_option("data_id", data_id, minimum=1)}
    if not isinstance(data_name, str) or not data_name.strip():
        raise ValueError(
            f"data_name must be an OpenML dataset name such as mnist_784, got {data_name!r}"
        )
    if str(version) != "active":
        version = int_option(
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
    download = bool_option("download", download)
    task = choice_option("task", task, TASKS)
    n_train = optional_int("n_train", n_train)
    n_test = int_option("n_test", n_test, minimum=1)
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
