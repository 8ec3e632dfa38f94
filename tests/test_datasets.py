"""Tests for ntk_sweep.core.datasets: shapes, determinism, scaling conventions, error messages."""

from __future__ import annotations

import numpy as np
import pytest

from ntk_sweep.core.datasets import (
    DATASET_OPTIONS,
    DATASETS,
    PAPER_TOY_X,
    PAPER_TOY_Y,
    Dataset,
    load_dataset,
)


def _write_csv(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def csv_file(tmp_path):
    rows = ["a,b,label"] + [f"{i},{i * i},{2 * i + 1}" for i in range(10)]
    return _write_csv(tmp_path / "data.csv", "\n".join(rows) + "\n")


def _options(name, csv_path):
    return {"path": csv_path, "inputs": ["a", "b"], "target": "label"} if name == "csv" else {}


# ----------------------------------------------------------------------- generic contract


@pytest.mark.parametrize("name", DATASETS)
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


@pytest.mark.parametrize("name", ["sine", "teacher", "digits", "csv"])
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
    with pytest.raises(ValueError, match=r"y_train must have shape \(3,\)"):
        Dataset("t", x, np.zeros(4), x, None)
    with pytest.raises(ValueError, match=r"x_train must be a 2-D array .* got shape \(0, 2\)"):
        Dataset("t", np.zeros((0, 2)), np.zeros(0), x, None)
    with pytest.raises(ValueError, match=r"x_test must be a 2-D array \(M, 2\)"):
        Dataset("t", x, np.zeros(3), np.zeros((3, 1)), None)
    with pytest.raises(ValueError, match=r"y_test must be None or have shape \(3,\)"):
        Dataset("t", x, np.zeros(3), x, np.zeros(2))


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
