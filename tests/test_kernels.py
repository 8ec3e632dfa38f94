"""Empirical and analytical NTKs against an explicit Jacobian and Monte Carlo at large width."""

import numpy as np
import pytest

from ntk_sweep.core.kernels import (
    analytic_nngp,
    analytic_ntk,
    empirical_ntk,
    has_analytic_ntk,
    kernel_distance,
    kernel_drift,
    kernel_target_alignment,
    kernel_velocity,
    relative_difference,
)
from ntk_sweep.core.network import ACTIVATIONS, MLP, PARAMETERIZATIONS, forward, init_params
from tests.test_network import explicit_jacobian


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_layerwise_ntk_equals_explicit_jacobian_product(activation, parameterization, depth):
    rng = np.random.default_rng(depth)
    net = MLP(3, 7, depth, activation, parameterization, sigma_w=1.4, sigma_b=0.6)
    params = init_params(net, 2)
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    j1, j2 = explicit_jacobian(net, params, x1), explicit_jacobian(net, params, x2)
    scale = np.abs(j1 @ j1.T).max()
    # default chunking, and tiny chunks that split the last hidden layer unevenly
    for chunk in (None, 3):
        k11 = empirical_ntk(net, params, x1, chunk_size=chunk)
        k21 = empirical_ntk(net, params, x2, x1, chunk_size=chunk)
        assert np.abs(k11 - j1 @ j1.T).max() / scale < 1e-10
        assert np.abs(k21 - j2 @ j1.T).max() / scale < 1e-10


def test_paper_network_ntk_matches_math_md_section_2():
    """Theta_ij = (x_i x_j + 1)(1/D) sum w1^2 phi'phi' + (1/D) sum phi phi + 1."""
    net = MLP(1, 300, sigma_b=0.5)
    (w0, b0), (w1, _) = params = init_params(net, 3)
    x = np.array([-0.7, 0.2, 0.5, 1.3])
    z = np.outer(x, w0[0]) + b0
    a, da = np.maximum(z, 0), (z > 0) * w1[:, 0]
    expected = (np.outer(x, x) + 1) * (da @ da.T) / 300 + (a @ a.T) / 300 + 1
    np.testing.assert_allclose(empirical_ntk(net, params, x[:, None]), expected, rtol=1e-12)


def monte_carlo_gap(net, x, seeds):
    ref = analytic_ntk(net, x)
    return np.mean(
        [relative_difference(empirical_ntk(net, init_params(net, s), x), ref) for s in seeds]
    )


@pytest.mark.parametrize("sigma_b", [0.0, 1.0])
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_analytic_ntk_matches_empirical_at_large_width(activation, sigma_b):
    x = np.random.default_rng(0).standard_normal((6, 3))
    deep = MLP(3, 4000, 2, activation, sigma_w=1.2, sigma_b=sigma_b)
    assert monte_carlo_gap(deep, x, range(6)) < 0.03
    gaps = [
        monte_carlo_gap(MLP(3, w, 1, activation, sigma_w=1.2, sigma_b=sigma_b), x, range(6))
        for w in (1000, 10_000, 100_000)
    ]
    assert gaps[-1] < 0.02
    # the Monte Carlo gap shrinks like width^-1/2
    slope = np.polyfit(np.log([1000, 10_000, 100_000]), np.log(gaps), 1)[0]
    assert -0.7 < slope < -0.35


@pytest.mark.parametrize("activation", ["relu", "erf", "linear"])
def test_analytic_nngp_is_the_covariance_of_the_output_at_init(activation):
    """The NNGP kernel is E[f(x) f(x')] over initialisations (Monte Carlo over 4000 nets)."""
    x = np.array([[0.3, -1.0], [1.2, 0.4], [-0.5, 0.9]])
    net = MLP(2, 64, 2, activation, sigma_w=1.1, sigma_b=0.7)
    fs = np.array([forward(net, init_params(net, s), x) for s in range(4000)])
    mc = fs.T @ fs / len(fs)
    # finite width 64 adds O(1/width) corrections on top of the 1/sqrt(4000) sampling noise
    np.testing.assert_allclose(mc, analytic_nngp(net, x), atol=0.08 * np.abs(mc).max())


def test_paper_setting_analytic_kernel_is_x_x_plus_1_5_and_empirical_has_rank_2():
    """MATH.md section 3: sigma_b = 0, d = 1, x > 0 gives Theta = x_i x_j + 1.5 exactly."""
    x = np.array([[0.1], [0.35], [0.6], [0.85]])
    net = MLP(1, 10_000)
    np.testing.assert_allclose(analytic_ntk(net, x), np.outer(x, x) + 1.5, rtol=1e-14)
    eig = np.linalg.eigvalsh(empirical_ntk(net, init_params(net, 0), x))
    assert np.all(eig[:2] < 1e-12 * eig[-1]) and eig[2] > 1e-3 * eig[-1]


def test_analytic_kernel_between_different_sets_is_consistent():
    rng = np.random.default_rng(5)
    x1, x2 = rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    net = MLP(2, 10, 3, "erf", sigma_b=0.3)
    full = analytic_ntk(net, np.vstack([x1, x2]))
    np.testing.assert_allclose(analytic_ntk(net, x2, x1), full[4:, :4], rtol=1e-13)
    np.testing.assert_allclose(full, full.T, rtol=1e-13)


def test_relu_relu_depth_1_matches_paper_equation_21():
    x = np.array([[-0.8], [0.3], [0.9]])
    xi, xj = x[:, 0][:, None], x[:, 0][None, :]
    theta = np.arccos(np.clip(np.sign(xi * xj), -1, 1))
    eq21 = (
        (xi * xj + 1) * (np.pi - theta) / (2 * np.pi)
        + np.abs(xi) * np.abs(xj) * ((np.pi - theta) * np.cos(theta) + np.sin(theta)) / (2 * np.pi)
        + 1
    )
    np.testing.assert_allclose(analytic_ntk(MLP(1, 5), x), eq21, rtol=1e-13)


@pytest.mark.parametrize(
    "net, match",
    [
        (MLP(1, 5, activation="tanh"), "activation='tanh'.*relu, erf, linear"),
        (MLP(1, 5, parameterization="mean_field"), "parameterization='mean_field'.*ntk"),
        (MLP(1, 5, parameterization="standard"), "parameterization='standard'"),
    ],
)
def test_no_closed_form_is_a_clear_error(net, match):
    assert not has_analytic_ntk(net)
    with pytest.raises(ValueError, match=match):
        analytic_ntk(net, np.ones((2, 1)))


def test_kernel_drift_and_distance():
    k0 = np.array([[2.0, 1.0], [1.0, 3.0]])
    assert kernel_drift(k0, k0) == 0.0 and kernel_distance(k0, k0) == 0.0
    assert kernel_drift(1.5 * k0, k0) == pytest.approx(0.5)
    assert kernel_distance(1.5 * k0, k0) == pytest.approx(0.0, abs=1e-15)  # ignores rescaling
    k1 = np.array([[2.0, 0.0], [0.0, 3.0]])
    cos = 13 / (np.sqrt(15) * np.sqrt(13))
    assert kernel_distance(k1, k0) == pytest.approx(1 - cos)
    assert kernel_drift(k1, k0) == pytest.approx(np.sqrt(2 / 15))


def test_kernel_target_alignment_is_the_cosine_of_theta_and_y_y_transpose():
    rng = np.random.default_rng(11)
    a = rng.standard_normal((6, 6))
    k, y = a @ a.T, rng.standard_normal(6)
    yy = np.outer(y, y)
    cosine = np.sum(k * yy) / np.sqrt(np.sum(k * k) * np.sum(yy * yy))
    assert kernel_target_alignment(k, y) == pytest.approx(cosine, rel=1e-13)
    # 1 exactly for the kernel y y^T, invariant to rescaling kernel and targets
    assert kernel_target_alignment(yy, y) == pytest.approx(1.0, rel=1e-14)
    assert kernel_target_alignment(7 * k, -3 * y) == pytest.approx(cosine, rel=1e-13)
    assert np.isnan(kernel_target_alignment(k, np.zeros(6)))
    with pytest.raises(ValueError, match="expected \\(5, 5\\)"):
        kernel_target_alignment(k, y[:5])


def test_kernel_velocity_is_relative_change_per_unit_time():
    rng = np.random.default_rng(12)
    k0 = rng.standard_normal((5, 5))
    k_prev, k_t = k0 + 0.1 * rng.standard_normal((5, 5)), k0 + 0.2 * rng.standard_normal((5, 5))
    by_hand = np.sqrt(np.sum((k_t - k_prev) ** 2)) / np.sqrt(np.sum(k0**2)) / 0.25
    assert kernel_velocity(k_t, k_prev, k0, 0.25) == pytest.approx(by_hand, rel=1e-13)
    assert kernel_velocity(k_prev, k_prev.copy(), k0, 3.0) == 0.0
    with pytest.raises(ValueError, match="dt=0"):
        kernel_velocity(k_t, k_prev, k0, 0)


def test_linear_network_of_depth_1_does_not_have_a_constant_kernel():
    """Its NTK `(c0^2 x x' + 1) c1^2 |w1|^2 + c1^2 h.h' + 1` moves with w1 and h: a truly
    constant kernel needs the lazy limit (tests/test_app.py uses alpha = 1e12)."""
    from ntk_sweep.core.training import gd_trajectory

    data = np.linspace(0.1, 1, 4)[:, None], np.array([0.3, -0.2, 0.5, 0.1])
    net = MLP(1, 32, activation="linear", sigma_b=1.0)
    p0 = init_params(net, 0)
    last = list(gd_trajectory(net, p0, *data, 0.1, 30, [30]))[-1]
    assert (
        kernel_drift(empirical_ntk(net, last.params, data[0]), empirical_ntk(net, p0, data[0]))
        > 1e-3
    )
