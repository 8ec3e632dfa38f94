"""Tests for ntk_sweep.core.datasets and ntk_sweep.dataset_sources: shapes, determinism, scaling
conventions, error messages."""

from __future__ import annotations

import numpy as np
import pytest

from ntk_sweep.core.datasets import (
    PAPER_TOY_X,
    PAPER_TOY_Y,
    Dataset,
    class_targets,
    predicted_labels,
    prepare_dataset,
    standardize_inputs,
)
from ntk_sweep.dataset_sources import DATASET_OPTIONS, DATASETS, load_dataset

# openml needs a cached download, which tests never make: its loading is tested through
# prepare_dataset (the same code after the fetch) and its errors below.
LOADABLE = [name for name in DATASETS if name != "openml"]


def _write_csv(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def csv_file(tmp_path):
    rows = ["a,b,label"] + [f"{i},{i * i},{2 * i + 1}" for i in range(10)]
    return _write_csv(tmp_path / "data.csv", "\n".join(rows) + "\n")


def _options(name, csv_path):
    if name == "csv":
        return {"path": csv_path, "inputs": ["a", "b"], "target": "label"}
    if name == "npz":
        path = csv_path.replace(".csv", ".npz")
        rng = np.random.default_rng(0)
        np.savez(path, x=rng.normal(size=(10, 2)), y=rng.normal(size=10))
        return {"path": path}
    return {}


# ----------------------------------------------------------------------- generic contract


@pytest.mark.parametrize("name", LOADABLE)
def test_shapes_dtypes_and_determinism(name, csv_file):
    opts = _options(name, csv_file)
    ds = load_dataset(name, seed=1, **opts)
    again = load_dataset(name, seed=1, **opts)
    assert isinstance(ds, Dataset) and ds.name == name
    n, d = ds.x_train.shape
    m = ds.x_test.shape[0]
    assert n >= 1 and m >= 1 and d == ds.input_dim
    assert ds.x_test.shape == (m, d)
    assert ds.y_train.shape == (n,)
    assert ds.n_train == n and ds.n_test == m
    for arr in (ds.x_train, ds.y_train, ds.x_test):
        assert arr.dtype == np.float64
        assert np.all(np.isfinite(arr))
    if name == "paper_toy":
        assert ds.y_test is None
    else:
        assert ds.y_test.shape == (m,) and ds.y_test.dtype == np.float64
    for field in ("x_train", "y_train", "x_test", "y_test"):
        a, b = getattr(ds, field), getattr(again, field)
        if a is None:
            assert b is None
        else:
            assert a.tobytes() == b.tobytes()  # bit-identical


@pytest.mark.parametrize("name", ["sine", "teacher", "digits", "csv", "npz"])
def test_different_seeds_differ(name, csv_file):
    opts = _options(name, csv_file)
    a = load_dataset(name, seed=0, **opts)
    b = load_dataset(name, seed=1, **opts)
    assert not np.array_equal(a.x_train, b.x_train)


def test_default_options_are_documented():
    assert set(DATASET_OPTIONS) == set(DATASETS)
    ds = load_dataset("sine")
    assert ds.n_train == DATASET_OPTIONS["sine"]["n_train"] == 20
    assert ds.n_test == DATASET_OPTIONS["sine"]["n_test"] == 200
    ds = load_dataset("teacher")
    assert (ds.n_train, ds.n_test, ds.input_dim) == (64, 256, 5)
    ds = load_dataset("digits")
    assert (ds.n_train, ds.n_test, ds.input_dim) == (200, 200, 64)


# ----------------------------------------------------------------------- per dataset


def test_paper_toy_values_and_grid():
    ds = load_dataset("paper_toy", n_test=11)
    np.testing.assert_array_equal(ds.x_train[:, 0], PAPER_TOY_X)
    np.testing.assert_array_equal(ds.y_train, PAPER_TOY_Y)
    assert ds.x_train.shape == (4, 1)
    assert np.all((ds.x_train > 0) & (ds.x_train < 1))
    np.testing.assert_allclose(ds.x_test[:, 0], np.linspace(0, 1, 11))
    # A straight line must fit badly (otherwise the degenerate paper setting would look fine).
    a = np.c_[ds.x_train, np.ones(4)]
    resid = ds.y_train - a @ np.linalg.lstsq(a, ds.y_train, rcond=None)[0]
    assert np.sqrt(np.mean(resid**2)) > 0.2
    assert load_dataset("paper_toy").n_test == 200
    # seed is ignored: the values are fixed
    assert np.array_equal(load_dataset("paper_toy", seed=5).y_train, ds.y_train)


def test_sine_target_noise_and_grid():
    ds = load_dataset("sine", seed=3, n_train=50, n_test=101, frequency=2.0)
    x = ds.x_train[:, 0]
    assert np.all((x >= -1) & (x <= 1))
    np.testing.assert_allclose(ds.y_train, np.sin(2 * np.pi * x), atol=1e-15)
    grid = ds.x_test[:, 0]
    assert np.all(np.diff(grid) > 0) and grid[0] == -1.0 and grid[-1] == 1.0
    np.testing.assert_allclose(ds.y_test, np.sin(2 * np.pi * grid), atol=1e-15)
    noisy = load_dataset("sine", seed=3, n_train=50, n_test=101, frequency=2.0, noise=0.5)
    np.testing.assert_array_equal(noisy.x_train, ds.x_train)  # same inputs, noisy targets
    resid = noisy.y_train - ds.y_train
    assert 0.3 < resid.std() < 0.7
    np.testing.assert_array_equal(noisy.y_test, ds.y_test)  # test target stays noiseless


def test_teacher_sphere_and_target():
    ds = load_dataset("teacher", seed=2, n_train=30, n_test=40, input_dim=7, teacher_width=64)
    assert ds.x_train.shape == (30, 7) and ds.x_test.shape == (40, 7)
    np.testing.assert_allclose(np.sum(ds.x_train**2, axis=1) / 7, 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.sum(ds.x_test**2, axis=1) / 7, 1.0, rtol=1e-12)
    assert not np.allclose(ds.x_train[:, 0], ds.x_train[0, 0])  # inputs spread out
    assert ds.y_train.std() > 0.05  # non-trivial target
    # The teacher is a function of its own seed stream: more training points, same teacher.
    bigger = load_dataset("teacher", seed=2, n_train=60, n_test=40, input_dim=7, teacher_width=64)
    np.testing.assert_array_equal(bigger.x_test, ds.x_test)
    np.testing.assert_array_equal(bigger.y_test, ds.y_test)
    # Noise changes training targets only.
    noisy = load_dataset(
        "teacher", seed=2, n_train=30, n_test=40, input_dim=7, teacher_width=64, noise=0.1
    )
    np.testing.assert_array_equal(noisy.x_train, ds.x_train)
    assert not np.array_equal(noisy.y_train, ds.y_train)
    np.testing.assert_array_equal(noisy.y_test, ds.y_test)


def test_teacher_scale_and_nonlinearity():
    # NTK parameterization with x.x/d = 1: each unit's pre-activation is N(0, 1), so averaged
    # over teachers E[f(x)^2] = E[relu(z)^2] = 1/2 (one teacher fluctuates a lot through the
    # correlated relu means, hence the loose band). Missing 1/sqrt(d) would give ~3, 1/d
    # instead of 1/sqrt(d) ~0.08, missing 1/sqrt(width) ~250.
    second_moments = []
    for seed in range(16):
        ds = load_dataset("teacher", seed=seed, n_train=200, input_dim=6, teacher_width=512)
        second_moments.append(np.mean(ds.y_train**2))
    assert 0.3 < np.mean(second_moments) < 0.75
    # The target is not a linear function of the inputs.
    x, y = ds.x_train, ds.y_train
    a = np.c_[x, np.ones(len(x))]
    resid = y - a @ np.linalg.lstsq(a, y, rcond=None)[0]
    assert resid.std() > 0.2 * y.std()


def test_digits_labels_and_standardisation():
    ds = load_dataset("digits", seed=0, n_train=300, n_test=100)
    assert ds.x_train.shape == (300, 64) and ds.x_test.shape == (100, 64)
    for y in (ds.y_train, ds.y_test):
        assert set(np.unique(y)) == {-1.0, 1.0}
    assert abs(ds.y_train.mean()) < 0.2  # even/odd roughly balanced
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-12)
    std = ds.x_train.std(axis=0)
    varying = std > 0
    assert varying.sum() > 40
    assert np.allclose(std[varying], std[varying][0])  # one common scale for all pixels
    assert np.all(ds.x_train[:, ~varying] == 0) and np.all(ds.x_test[:, ~varying] == 0)
    np.testing.assert_allclose(np.mean(np.sum(ds.x_train**2, axis=1)), 64.0, rtol=1e-12)
    assert 0.7 < np.mean(np.sum(ds.x_test**2, axis=1)) / 64 < 1.3
    other = load_dataset("digits", seed=1, n_train=300, n_test=100)
    assert not np.array_equal(other.y_train, ds.y_train)  # the seed shuffles


def test_digits_even_is_plus_one():
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    ds = load_dataset("digits", seed=0, n_train=1000, n_test=797)
    # Using every image, the number of +1 labels must be the number of even digits (906 of
    # 1797, so a swapped sign convention would give 891).
    n_even = int(np.sum(labels % 2 == 0))
    total = np.concatenate([ds.y_train, ds.y_test])
    assert int(np.sum(total == 1.0)) == n_even
    assert total.size == images.shape[0]


def test_csv_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 3))
    lines = ["x1, x2 ,y,ignored"] + [
        f"{float(a)!r},{float(b)!r},{float(c)!r},text" for a, b, c in data
    ]
    path = _write_csv(tmp_path / "in.csv", "\n".join(lines) + "\n")
    ds = load_dataset("csv", seed=7, path=path, inputs=["x1", "x2"], target="y")
    assert ds.n_test == 4 and ds.n_train == 16  # round(0.2 * 20)
    got = np.concatenate([np.c_[ds.x_train, ds.y_train], np.c_[ds.x_test, ds.y_test]])
    # every row comes back exactly once, bit-exact (repr round-trips floats)
    order = np.lexsort(got.T[::-1])
    expected = data[np.lexsort(data.T[::-1])]
    assert np.array_equal(got[order], expected)
    # comma-separated inputs string (as given on a command line) and test_fraction
    ds2 = load_dataset("csv", seed=7, path=path, inputs="x1,x2", target="y", test_fraction=0.5)
    assert ds2.n_test == 10 and ds2.input_dim == 2


# ----------------------------------------------------------------------- errors


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"dataset must be one of paper_toy, sine, .*csv.*'mnist'"):
        load_dataset("mnist")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) n_points for dataset 'sine'; valid options: "
    ) as info:
        load_dataset("sine", n_points=3)
    for valid in ("n_train", "n_test", "noise", "frequency"):
        assert valid in str(info.value)
    with pytest.raises(ValueError, match=r"valid options: n_test"):
        load_dataset("paper_toy", n_train=4)


@pytest.mark.parametrize(
    ("name", "option", "value", "pattern"),
    [
        ("sine", "n_train", 0, r"n_train must be an integer >= 1, got 0"),
        ("sine", "n_test", 0, r"n_test must be an integer >= 1, got 0"),
        ("sine", "n_train", 2.5, r"n_train must be an integer >= 1, got 2.5"),
        ("sine", "noise", -0.1, r"noise must be a finite number >= 0, got -0.1"),
        ("sine", "frequency", 0.0, r"frequency must be a finite number > 0"),
        ("paper_toy", "n_test", -1, r"n_test must be an integer >= 1"),
        ("teacher", "input_dim", 0, r"input_dim must be an integer >= 1, got 0"),
        ("teacher", "teacher_width", 0, r"teacher_width must be an integer >= 1"),
        ("teacher", "noise", float("nan"), r"noise must be a finite number >= 0"),
        ("digits", "n_train", 0, r"n_train must be an integer >= 1"),
        ("digits", "n_test", 1700, r"n_train \+ n_test must be <= 1797 .* 200 \+ 1700 = 1900"),
    ],
)
def test_invalid_option_values(name, option, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_dataset(name, **{option: value})


def test_invalid_seed():
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -1"):
        load_dataset("sine", seed=-1)


def test_integral_floats_are_accepted():
    assert load_dataset("sine", n_train=5.0).n_train == 5


def test_dataset_shape_validation():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"y_train must have shape \(3,\) or \(3, K\)"):
        Dataset("t", x, np.zeros(4), x, None)
    with pytest.raises(ValueError, match=r"x_train must be a 2-D array .* got shape \(0, 2\)"):
        Dataset("t", np.zeros((0, 2)), np.zeros(0), x, None)
    with pytest.raises(ValueError, match=r"x_test must be a 2-D array \(M, 2\)"):
        Dataset("t", x, np.zeros(3), np.zeros((3, 1)), None)
    with pytest.raises(ValueError, match=r"y_test must be None or have shape \(3,\)"):
        Dataset("t", x, np.zeros(3), x, np.zeros(2))
    # K outputs: (N, K) targets, the test targets with the same K
    ds = Dataset("t", x, np.zeros((3, 4)), x, np.ones((3, 4)))
    assert ds.n_outputs == 4 and not ds.is_classification and ds.labels_train is None
    with pytest.raises(ValueError, match=r"y_test must be None or have shape \(3, 4\)"):
        Dataset("t", x, np.zeros((3, 4)), x, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"y_train must have shape \(3,\) or \(3, K\)"):
        Dataset("t", x, np.zeros((2, 4)), x, None)
    with pytest.raises(ValueError, match=r"y_train must have shape"):
        Dataset("t", x, np.zeros((3, 4, 1)), x, None)


def test_csv_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(ValueError, match=r"path: CSV file not found: .*nope\.csv"):
        load_dataset("csv", path=str(missing), inputs=["a"], target="label")


def test_csv_required_options(csv_file):
    with pytest.raises(ValueError, match=r"path must be set for dataset 'csv'"):
        load_dataset("csv", inputs=["a"], target="label")
    with pytest.raises(ValueError, match=r"target must be set"):
        load_dataset("csv", path=csv_file, inputs=["a"])
    with pytest.raises(ValueError, match=r"inputs must be set"):
        load_dataset("csv", path=csv_file, target="label")
    with pytest.raises(ValueError, match=r"inputs must be a non-empty list"):
        load_dataset("csv", path=csv_file, inputs=[], target="label")
    with pytest.raises(ValueError, match=r"target column 'a' must not also be listed in inputs"):
        load_dataset("csv", path=csv_file, inputs=["a"], target="a")


def test_csv_missing_column_lists_available(csv_file):
    with pytest.raises(
        ValueError,
        match=r"inputs: column\(s\) 'c' not found in .*data\.csv; "
        r"available columns: 'a', 'b', 'label'",
    ):
        load_dataset("csv", path=csv_file, inputs=["a", "c"], target="label")
    with pytest.raises(ValueError, match=r"target: column\(s\) 'y' not found"):
        load_dataset("csv", path=csv_file, inputs=["a"], target="y")


def test_csv_non_numeric_value_names_column_and_row(tmp_path):
    path = _write_csv(tmp_path / "bad.csv", "a,label\n1,2\n3,oops\n5,6\n")
    with pytest.raises(
        ValueError,
        match=r"csv column 'label' in .*bad\.csv: data row 2 \(file line 3\) "
        r"value 'oops' is not a finite number",
    ):
        load_dataset("csv", path=path, inputs=["a"], target="label")
    path = _write_csv(tmp_path / "empty_cell.csv", "a,label\n1,2\n,4\n5,6\n")
    with pytest.raises(ValueError, match=r"csv column 'a' .*data row 2 \(file line 3\) is empty"):
        load_dataset("csv", path=path, inputs=["a"], target="label")


def test_csv_too_few_rows_and_test_fraction(tmp_path, csv_file):
    path = _write_csv(tmp_path / "one.csv", "a,label\n1,2\n")
    with pytest.raises(ValueError, match=r"has 1 data row\(s\); at least 2 are needed"):
        load_dataset("csv", path=path, inputs=["a"], target="label")
    path = _write_csv(tmp_path / "two.csv", "a,label\n1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"test_fraction=0.8 gives 2 test row\(s\) out of the 2"):
        load_dataset("csv", path=path, inputs=["a"], target="label", test_fraction=0.8)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match=r"test_fraction must be"):
            load_dataset("csv", path=csv_file, inputs=["a"], target="label", test_fraction=bad)


# ----------------------------------------------------------------------- class labels


@pytest.mark.parametrize("k", [3, 10])
def test_class_targets_mse_is_the_mean_subtracted_one_hot_of_lee_et_al(k):
    labels = np.array([0, k - 1, 1, 1, k // 2])
    got = class_targets(labels, k, "mse")
    one_hot = np.array([[1.0 if a == c else 0.0 for a in range(k)] for c in labels])
    np.testing.assert_allclose(got, one_hot - one_hot.mean(axis=1, keepdims=True), atol=1e-15)
    assert got.shape == (5, k)
    assert np.all(got[np.arange(5), labels] == 1.0 - 1.0 / k)  # e.g. 0.9 for K = 10
    assert np.sum(got == -1.0 / k) == 5 * (k - 1)  # e.g. -0.1 elsewhere
    np.testing.assert_allclose(got.sum(axis=1), 0.0, atol=1e-15)


def test_class_targets_xent_is_one_hot_and_binary_is_plus_minus_one():
    labels = np.array([2, 0, 1, 2])
    np.testing.assert_array_equal(class_targets(labels, 3, "xent"), np.eye(3)[labels])
    for loss in ("mse", "xent"):  # K = 2: one output, label 1 -> +1, label 0 -> -1
        binary = class_targets(np.array([1, 0, 0, 1]), 2, loss)
        np.testing.assert_array_equal(binary, [1.0, -1.0, -1.0, 1.0])
        assert binary.shape == (4,) and binary.dtype == np.float64


@pytest.mark.parametrize(("k", "loss"), [(2, "mse"), (3, "xent"), (10, "mse"), (10, "xent")])
def test_predicted_labels_invert_the_target_encoding(k, loss):
    labels = np.random.default_rng(k).integers(0, k, size=50)
    np.testing.assert_array_equal(predicted_labels(class_targets(labels, k, loss)), labels)


def test_class_targets_errors():
    with pytest.raises(ValueError, match=r"loss must be one of mse, xent, got 'hinge'"):
        class_targets(np.array([0, 1]), 2, "hinge")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got 0..3"):
        class_targets(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match=r"labels must be a 1-D integer array"):
        class_targets(np.array([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"n_classes must be an integer >= 2, got 1"):
        class_targets(np.array([0, 0]), 1)


def test_dataset_label_validation():
    x = np.zeros((3, 2))
    labels = np.array([0, 2, 1])
    ds = Dataset("t", x, class_targets(labels, 3), x, class_targets(labels, 3), labels, labels, 3)
    assert ds.is_classification and ds.n_outputs == 3 and ds.labels_train.dtype == np.int64
    with pytest.raises(ValueError, match=r"a 3-class dataset has 3 output\(s\)"):
        Dataset("t", x, np.zeros(3), x, None, labels, None, 3)
    with pytest.raises(ValueError, match=r"labels_test must be set when n_classes is set"):
        Dataset("t", x, class_targets(labels, 3), x, np.zeros((3, 3)), labels, None, 3)
    with pytest.raises(ValueError, match=r"labels_train must lie in \[0, 3\)"):
        Dataset("t", x, np.zeros((3, 3)), x, None, np.array([0, 3, 1]), None, 3)
    with pytest.raises(ValueError, match=r"labels_train must be an integer array of shape"):
        Dataset("t", x, np.zeros((3, 3)), x, None, np.array([0.0, 1.0, 2.0]), None, 3)
    with pytest.raises(ValueError, match=r"need n_classes"):
        Dataset("t", x, np.zeros(3), x, None, labels)


def _digits_parity_reference(seed, n_train, n_test):
    """The even/odd digits dataset built directly from sklearn (the reference): the class
    labels of the multiclass variant must leave its arrays bit-identical."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    targets = np.where(labels % 2 == 0, 1.0, -1.0)
    order = np.random.default_rng(seed).permutation(images.shape[0])
    tr, te = order[:n_train], order[n_train : n_train + n_test]
    mean, std = images[tr].mean(axis=0), images[tr].std(axis=0)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    x_tr, x_te = (images[tr] - mean) * scale, (images[te] - mean) * scale
    factor = np.sqrt(64 / float(np.mean(np.sum(x_tr**2, axis=1))))
    return x_tr * factor, targets[tr], x_te * factor, targets[te], labels[tr], labels[te]


def test_digits_parity_is_bit_identical_and_multiclass_has_the_ten_labels():
    x_tr, y_tr, x_te, y_te, digit_tr, digit_te = _digits_parity_reference(4, 150, 60)
    ds = load_dataset("digits", seed=4, n_train=150, n_test=60)
    for got, want in ((ds.x_train, x_tr), (ds.y_train, y_tr), (ds.x_test, x_te), (ds.y_test, y_te)):
        assert got.tobytes() == want.tobytes()
    assert ds.n_classes == 2 and ds.n_outputs == 1
    np.testing.assert_array_equal(ds.labels_train, digit_tr % 2 == 0)  # 1 = even = +1
    multi = load_dataset("digits", seed=4, n_train=150, n_test=60, task="multiclass")
    assert multi.x_train.tobytes() == x_tr.tobytes()  # same images, same order
    np.testing.assert_array_equal(multi.labels_train, digit_tr)
    np.testing.assert_array_equal(multi.labels_test, digit_te)
    assert multi.n_classes == 10 and multi.y_train.shape == (150, 10)
    np.testing.assert_array_equal(multi.y_train, class_targets(digit_tr, 10, "mse"))
    xent = load_dataset("digits", seed=4, n_train=150, n_test=60, task="multiclass", loss="xent")
    np.testing.assert_array_equal(xent.y_test, np.eye(10)[digit_te])
    with pytest.raises(ValueError, match=r"task must be one of parity, multiclass, got 'odd'"):
        load_dataset("digits", task="odd")
    with pytest.raises(ValueError, match=r"loss must be one of mse, xent"):
        load_dataset("digits", loss="l1")


# ----------------------------------------------------------------------- prepare_dataset


def test_prepare_dataset_split_matches_the_csv_rule_and_subsets():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    ds = prepare_dataset("own", x, y, seed=5)
    order = np.random.default_rng(5).permutation(20)  # test rows first, as csv
    np.testing.assert_array_equal(ds.x_test, x[order[:4]])
    np.testing.assert_array_equal(ds.x_train, x[order[4:]])
    np.testing.assert_array_equal(ds.y_train, y[order[4:]])
    sub = prepare_dataset("own", x, y, seed=5, n_train=6, n_test=3)
    np.testing.assert_array_equal(sub.x_test, x[order[:3]])
    np.testing.assert_array_equal(sub.x_train, x[order[3:9]])
    # a given test set: seeded subsets of each; n_train does not move the test subset
    xt, yt = rng.normal(size=(7, 3)), rng.normal(size=(7,))
    a = prepare_dataset("own", x, y, x_test=xt, y_test=yt, seed=2, n_train=5, n_test=4)
    b = prepare_dataset("own", x, y, x_test=xt, y_test=yt, seed=2, n_train=9, n_test=4)
    assert a.n_train == 5 and b.n_train == 9 and a.n_test == 4
    np.testing.assert_array_equal(a.x_test, b.x_test)
    rows = [int(np.flatnonzero((xt == r).all(axis=1))[0]) for r in a.x_test]
    np.testing.assert_array_equal(a.y_test, yt[rows])  # rows stay paired
    full = prepare_dataset("own", x, y, x_test=xt, y_test=yt, seed=2)
    assert full.n_train == 20 and full.n_test == 7


def test_prepare_dataset_shapes_standardisation_and_outputs():
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, size=(12, 4, 3))  # (N, h, w) images are flattened
    ds = prepare_dataset("own", images, rng.normal(size=(12, 1)), seed=0, standardize=True)
    assert ds.input_dim == 12 and ds.y_train.shape == (ds.n_train,)  # (N, 1) -> (N,)
    raw = prepare_dataset("own", images, rng.normal(size=12), seed=0)
    want_train, want_test = standardize_inputs(raw.x_train, raw.x_test)
    np.testing.assert_array_equal(ds.x_train, want_train)
    np.testing.assert_array_equal(ds.x_test, want_test)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.mean(np.sum(ds.x_train**2, axis=1)), 12.0, rtol=1e-12)
    multi = prepare_dataset("own", images, rng.normal(size=(12, 3)), seed=0)
    assert multi.n_outputs == 3 and multi.y_test.shape == (multi.n_test, 3)


def test_prepare_dataset_classification_classes_and_loss():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 2))
    labels = rng.integers(0, 5, size=40) * 2 + 1  # 1, 3, 5, 7, 9
    ds = prepare_dataset("own", x, labels, seed=0, task="classification")
    assert ds.n_classes == 5 and ds.y_train.shape == (ds.n_train, 5)
    rows = [int(np.flatnonzero((x == r).all(axis=1))[0]) for r in ds.x_train]
    np.testing.assert_array_equal(ds.labels_train, (labels[rows] - 1) // 2)  # k-th smallest
    np.testing.assert_array_equal(ds.y_train, class_targets(ds.labels_train, 5, "mse"))
    two = prepare_dataset(
        "own", x, labels.astype(float), seed=0, task="classification", classes=[7, 3], loss="xent"
    )
    kept = np.isin(labels, [3, 7])
    assert two.n_train + two.n_test == kept.sum() and two.n_classes == 2
    rows = [int(np.flatnonzero((x == r).all(axis=1))[0]) for r in two.x_train]
    np.testing.assert_array_equal(two.y_train, np.where(labels[rows] == 7, 1.0, -1.0))
    # a given test set: its rows are filtered by the same classes, labels indexed alike
    xt, lt = np.arange(8.0).reshape(4, 2), np.array([9, 3, 5, 9])
    split = prepare_dataset(
        "own", x, labels, x_test=xt, y_test=lt, task="classification", classes=[3, 9]
    )
    assert split.n_test == 3 and split.n_classes == 2
    np.testing.assert_array_equal(np.sort(split.labels_test), [0, 1, 1])  # 3 -> 0, 9 -> 1
    np.testing.assert_array_equal(split.y_test, np.where(split.labels_test == 1, 1.0, -1.0))


def _bad(pattern, *args, **kwargs):
    with pytest.raises(ValueError, match=pattern) as info:
        prepare_dataset("own", *args, **kwargs)
    assert "\n" not in str(info.value)


def test_prepare_dataset_errors_name_the_array_and_row():
    x, y = np.ones((5, 2)), np.arange(5.0)
    nan_x = x.copy()
    nan_x[3, 1] = np.nan
    _bad(r"^x has a non-finite value \(nan\) in row 3 \(0-based\), column 1", nan_x, y)
    _bad(r"^y has a non-finite value \(inf\) in row 0", x, np.r_[np.inf, y[1:]])
    _bad(r"^x must be a 2-D array \(N, d\) .* got shape \(5,\)", y, y)
    _bad(r"^y has 4 rows \(shape \(4,\)\) but x has 5 rows", x, y[:4])
    _bad(r"^x_test has 3 features per row but x has 2", x, y, x_test=np.ones((2, 3)))
    _bad(r"^y_test has 1 rows .* but x_test has 2", x, y, x_test=x[:2], y_test=y[:1])
    _bad(r"^y_test is given without x_test", x, y, y_test=y)
    _bad(r"^y_test has shape \(2, 2\) but y has \(5,\)", x, y, x_test=x[:2], y_test=x[:2])
    _bad(r"^y has dtype <U1; expected real numbers", x, np.array(list("abcde")))
    _bad(
        r"^y holds the non-integer label 0.5 in row 1", x, [0, 0.5, 1, 1, 0], task="classification"
    )
    _bad(r"^y holds 1 class\(es\) \(2\); .* needs at least 2", x, [2] * 5, task="classification")
    _bad(
        r"^classes: label\(s\) 4 not found in y; labels present: 0, 1",
        x,
        [0, 1, 0, 1, 1],
        task="classification",
        classes=[1, 4],
    )
    _bad(r"^classes applies only to task=classification", x, y, classes=[1])
    _bad(
        r"^classes must be null .* got 'a'", x, [0, 1, 0, 1, 1], task="classification", classes="a"
    )
    _bad(r"^n_train \+ n_test must be <= 5 .* got 4 \+ 2 = 6", x, y, n_train=4, n_test=2)
    _bad(r"^n_test=3 is more than the 2 rows of the test set", x, y, x_test=x[:2], n_test=3)
    _bad(r"^task must be one of regression, classification", x, y, task="ranking")
    _bad(r"^standardize must be true or false", x, y, standardize="yes")


# ----------------------------------------------------------------------- npz


def test_npz_round_trip_with_named_test_arrays(tmp_path):
    rng = np.random.default_rng(4)
    arrays = {
        "xtr": rng.normal(size=(9, 3)),
        "ytr": rng.normal(size=9),
        "xte": rng.normal(size=(4, 3)),
        "yte": rng.normal(size=4),
    }
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    ds = load_dataset("npz", seed=1, path=str(path), x="xtr", y="ytr", x_test="xte", y_test="yte")
    assert ds.name == "npz" and (ds.n_train, ds.n_test, ds.input_dim) == (9, 4, 3)
    got = np.c_[ds.x_train, ds.y_train]
    want = np.c_[arrays["xtr"], arrays["ytr"]]
    assert np.array_equal(got[np.lexsort(got.T)], want[np.lexsort(want.T)])  # bit-exact rows
    np.savez(path, x=rng.normal(size=(30, 2)), y=rng.integers(0, 4, size=30))
    cls = load_dataset("npz", path=str(path), task="classification", n_train=10, loss="xent")
    assert cls.n_classes == 4 and cls.y_train.shape == (10, 4) and cls.n_test == 6
    np.testing.assert_array_equal(cls.y_train, np.eye(4)[cls.labels_train])


def test_npz_file_errors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((4, 2)), y=np.ones(4), obj=np.array([{}, {}], dtype=object))
    missing = tmp_path / "nope.npz"
    with pytest.raises(ValueError, match=r"^path: npz file not found: .*nope\.npz$"):
        load_dataset("npz", path=str(missing))
    with pytest.raises(ValueError, match=r"^path must be set for dataset 'npz'"):
        load_dataset("npz")
    with pytest.raises(
        ValueError,
        match=r"^y: array 'labels' not found in .*d\.npz; arrays present: 'x', 'y', 'obj'",
    ):
        load_dataset("npz", path=str(path), y="labels")
    with pytest.raises(ValueError, match=r"^x_test: array 'xt' not found"):
        load_dataset("npz", path=str(path), x_test="xt")
    with pytest.raises(ValueError, match=r"^y: array 'obj' .* cannot be read without pickle"):
        load_dataset("npz", path=str(path), y="obj")
    text = tmp_path / "text.npz"
    text.write_text("x,y\n1,2\n")
    with pytest.raises(
        ValueError,
        match=r"^path: .*text\.npz is not an \.npz archive .* first bytes are b'x,y\\n1,'",
    ):
        load_dataset("npz", path=str(text))
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"^path: .*one\.npy is a \.npy file holding one array"):
        load_dataset("npz", path=str(tmp_path / "one.npy"))
    with pytest.raises(ValueError, match=r"^x must be the name of an array"):
        load_dataset("npz", path=str(path), x="")
    with pytest.raises(ValueError, match=r"^x: array 'y' in .*d\.npz must be a 2-D array"):
        load_dataset("npz", path=str(path), x="y")


# ----------------------------------------------------------------------- openml


def test_openml_not_cached_without_download_is_one_line_naming_the_field(tmp_path):
    import urllib.error
    import urllib.request

    home = tmp_path / "sklearn_cache"
    for ident in ({"data_name": "mnist_784"}, {"data_id": 554}):
        with pytest.raises(ValueError) as info:
            load_dataset("openml", data_home=str(home), **ident)
        msg = str(info.value)
        assert msg.startswith("download: openml dataset ") and "\n" not in msg, msg
        assert f"is not in the cache {home / 'openml'}" in msg
        assert "set dataset.download=true" in msg
    # the refusing opener is gone afterwards: a request reaches the socket (nothing listens
    # on port 9, so the connection is refused) instead of the offline handler
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=5)
    assert isinstance(refused.value.reason, ConnectionRefusedError), refused.value


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({}, r"^data_name: set exactly one of data_name .* and data_id"),
        ({"data_name": "a", "data_id": 1}, r"^data_name: set exactly one of"),
        ({"data_id": 0}, r"^data_id must be an integer >= 1, got 0"),
        ({"data_id": 5, "version": 2}, r"^version applies only with data_name"),
        ({"data_name": "mnist_784", "version": "x"}, r"^version must be an integer >= 1"),
        ({"data_name": ""}, r"^data_name must be an OpenML dataset name"),
        ({"data_name": "a", "download": "yes"}, r"^download must be true or false"),
        ({"data_name": "a", "task": "ranking"}, r"^task must be one of regression"),
        ({"data_name": "a", "n_test": 0}, r"^n_test must be an integer >= 1"),
        ({"data_name": "a", "n_train": -2}, r"^n_train must be an integer >= 1"),
        ({"data_name": "a", "classes": [1], "task": "regression"}, r"^classes applies only"),
        ({"data_name": "a", "classes": 3}, r"^classes must be null .* or a list of labels"),
        ({"data_name": "a", "data_home": ""}, r"^data_home must be a folder"),
    ],
)
def test_openml_option_errors_before_any_fetch(options, pattern, tmp_path):
    options = {"data_home": str(tmp_path / "cache"), **options}
    with pytest.raises(ValueError, match=pattern):
        load_dataset("openml", **options)
    assert not (tmp_path / "cache").exists()  # nothing fetched, no cache folder made


def test_openml_class_names_become_integer_labels():
    from ntk_sweep.dataset_sources import _openml_labels

    labels, classes = _openml_labels(
        "data_name", np.array(["3", "8", "3", "1"], dtype=object), [8, 3]
    )
    np.testing.assert_array_equal(labels, [3, 8, 3, 1])  # names that spell integers
    assert classes == [8, 3]
    names = np.array(["setosa", "virginica", "setosa", "versicolor"], dtype=object)
    labels, classes = _openml_labels("data_name", names, ["virginica", "setosa"])
    np.testing.assert_array_equal(labels, [0, 2, 0, 1])  # index in sorted order
    assert classes == [2, 0]
    with pytest.raises(ValueError, match=r"^classes: 'rose' not among the classes"):
        _openml_labels("data_name", names, ["rose"])
    x = np.arange(8.0).reshape(4, 2)
    ds = prepare_dataset("openml", x, labels, task="classification", classes=classes, n_test=1)
    assert ds.n_classes == 2 and ds.n_train + ds.n_test == 3  # versicolor dropped
