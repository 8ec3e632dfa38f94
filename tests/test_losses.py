"""The losses (MSE, logistic and softmax cross-entropy) against naive formulas and finite
differences, and their stability at large logits."""

import math

import numpy as np
import pytest

from ntk_sweep.core.losses import loss_gradient, loss_value


def central_differences(loss, f, y, h=1e-6):
    grad = np.zeros_like(f)
    for idx in np.ndindex(f.shape):
        up, down = f.copy(), f.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (loss_value(loss, up, y) - loss_value(loss, down, y)) / (2 * h)
    return grad


def binary_case(rng, n=7):
    return 2 * rng.standard_normal(n), rng.choice([-1.0, 1.0], n)


def softmax_case(rng, n=6, k=3):
    return 2 * rng.standard_normal((n, k)), np.eye(k)[rng.integers(0, k, n)]


@pytest.mark.parametrize("case", ["mse-1", "mse-3", "logistic", "softmax-3"])
def test_gradient_matches_central_differences(case):
    rng = np.random.default_rng(0)
    if case == "logistic":
        (f, y), loss = binary_case(rng), "xent"
    elif case == "softmax-3":
        (f, y), loss = softmax_case(rng), "xent"
    else:
        shape = (7,) if case == "mse-1" else (7, 3)
        f, y, loss = rng.standard_normal(shape), rng.standard_normal(shape), "mse"
    grad = loss_gradient(loss, f, y)
    assert grad.shape == f.shape
    np.testing.assert_allclose(grad, central_differences(loss, f, y), rtol=0, atol=1e-9)


def test_values_equal_naive_formulas_at_moderate_logits():
    rng = np.random.default_rng(1)
    f, y = binary_case(rng)
    naive = np.mean([math.log(1 + math.exp(-yi * fi)) for fi, yi in zip(f, y, strict=True)])
    assert loss_value("xent", f, y) == pytest.approx(naive, rel=1e-13)
    # an (N, 1) array is the binary case too
    assert loss_value("xent", f[:, None], y[:, None]) == pytest.approx(naive, rel=1e-13)
    f, y = softmax_case(rng)
    p = np.exp(f) / np.exp(f).sum(axis=1, keepdims=True)
    assert loss_value("xent", f, y) == pytest.approx(-np.mean(np.log(p[y == 1])), rel=1e-13)
    np.testing.assert_allclose(loss_gradient("xent", f, y), (p - y) / len(f), rtol=1e-13)
    f, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    assert loss_value("mse", f, y) == pytest.approx(((f - y) ** 2).sum() / 10, rel=1e-14)


def test_mse_keeps_the_projects_bits():
    rng = np.random.default_rng(2)
    f, y = rng.standard_normal(9), rng.standard_normal(9)
    assert loss_value("mse", f, y) == float((f - y) @ (f - y)) / (2 * 9)  # bit for bit
    np.testing.assert_array_equal(loss_gradient("mse", f, y), (f - y) / 9)


def test_cross_entropy_is_finite_and_correct_at_logits_of_1e3():
    f, y = np.array([1000.0, -1000.0, 800.0, -3.0]), np.array([1.0, 1.0, -1.0, -1.0])
    # log(1 + exp(-m)) is 0 for m = 1000, m for m = -1000 and -800, log(1 + e^-3) for m = 3
    expected = (0 + 1000 + 800 + math.log1p(math.exp(-3))) / 4
    assert loss_value("xent", f, y) == pytest.approx(expected, rel=1e-15)
    grad = loss_gradient("xent", f, y)
    np.testing.assert_allclose(grad[:3], [0, -0.25, 0.25], rtol=1e-15, atol=0)
    assert grad[3] == pytest.approx(0.25 / (1 + math.exp(3)), rel=1e-14)
    f = np.array([[1000.0, 0.0, -1000.0], [1000.0, 0.0, -1000.0], [1e3, 1e3, 1e3]])
    y = np.eye(3)[[0, 1, 2]]
    assert loss_value("xent", f, y) == pytest.approx((0 + 1000 + math.log(3)) / 3, rel=1e-15)
    expected_grad = np.array([[0, 0, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3]]) / 3
    np.testing.assert_allclose(loss_gradient("xent", f, y), expected_grad, rtol=0, atol=1e-16)


def test_bad_loss_name_and_shapes_are_one_line_errors():
    with pytest.raises(ValueError, match=r"loss='hinge' is invalid: allowed values are mse, xent"):
        loss_value("hinge", np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"expected equal shapes"):
        loss_gradient("xent", np.zeros((2, 3)), np.zeros(2))
