"""The analytic NNGP and NTK (MATH.md section 3) against a 50-digit mpmath evaluation of the same
recursion, written independently in MATH.md's own form (rho, arccos, sqrt(1 - rho^2)), on
batches with identical, nearly collinear, nearly opposite and zero inputs."""

import itertools

import mpmath as mp
import numpy as np
import pytest

from ntk_sweep.core.kernels import _sin_minus_t_cos, analytic_kernels, analytic_ntk
from ntk_sweep.core.network import MLP

DEPTHS = (1, 2, 3, 4)
SIGMA_WS = (0.8, 1.0, 1.5, 2.0)
SIGMA_BS = (0.0, 0.5, 1.0, 2.0)
# Digits of the reference: a nearly opposite pair (angle 1e-8 from pi) loses 16 digits in
# 1 - rho^2 and 16 more where sqrt(1 - rho^2) and (pi - arccos rho) rho cancel to ~1e-24.
DPS = 50


def _expectations(activation, s11, s22, s12):
    """E[phi(u) phi(v)], E[phi'(u) phi'(v)] as MATH.md section 3 writes them."""
    if activation == "linear":
        return s12, mp.mpf(1)
    if activation == "erf":
        ab = (1 + 2 * s11) * (1 + 2 * s22)
        return 2 / mp.pi * mp.asin(2 * s12 / mp.sqrt(ab)), 4 / mp.pi / mp.sqrt(ab - 4 * s12**2)
    if s11 * s22 == 0:  # a pre-activation that is identically 0: relu(0) = relu'(0) = 0
        return mp.mpf(0), mp.mpf(0)
    rho = min(max(s12 / mp.sqrt(s11 * s22), mp.mpf(-1)), mp.mpf(1))
    outer = mp.pi - mp.acos(rho)
    return mp.sqrt(s11 * s22) * (mp.sqrt(1 - rho**2) + outer * rho) / (2 * mp.pi), outer / (
        2 * mp.pi
    )


def reference_kernels(activation, x, sigma_w, sigma_b, depth):
    """[(Sigma^{l+1}, Theta^{l+1}) for l = 1..depth] at DPS digits, rounded to float64."""
    with mp.workdps(DPS):
        sw2, sb2 = mp.mpf(sigma_w) ** 2, mp.mpf(sigma_b) ** 2
        xs = [[mp.mpf(float(v)) for v in row] for row in x]
        n, d = len(xs), len(xs[0])
        pairs = [(i, j) for i in range(n) for j in range(i, n)]
        dot = {
            (i, j): mp.fsum(a * b for a, b in zip(xs[i], xs[j], strict=True)) / d for i, j in pairs
        }
        sigma = {p: sw2 * v + sb2 for p, v in dot.items()}
        theta = {p: sw2 * v + 1 for p, v in dot.items()}
        layers = []
        for _ in range(depth):
            new_sigma = {}
            for i, j in pairs:
                e_phi, e_dphi = _expectations(activation, sigma[i, i], sigma[j, j], sigma[i, j])
                theta[i, j] = sw2 * e_phi + 1 + sw2 * e_dphi * theta[i, j]
                new_sigma[i, j] = sw2 * e_phi + sb2
            sigma = new_sigma
            layers.append(tuple(_symmetric(k, n) for k in (sigma, theta)))
        return layers


def _symmetric(entries, n):
    m = np.empty((n, n))
    for (i, j), v in entries.items():
        m[i, j] = m[j, i] = float(v)
    return m


def hard_batch(d):
    """x, a copy of x, x turned by 1e-8 (scaled in one dimension), -0.7 x turned by 1e-8
    (opposite in one dimension), the zero input and an unrelated input."""
    rng = np.random.default_rng(d)
    x, other = rng.standard_normal(d), 1.5 * rng.standard_normal(d)
    if d == 1:
        near, opposite = x * (1 + 1e-8), -0.7 * x
    else:
        turn = rng.standard_normal(d)
        turn -= (turn @ x) / (x @ x) * x
        turn *= 1e-8 * np.linalg.norm(x) / np.linalg.norm(turn)
        near, opposite = x + turn, -0.7 * x + turn
    return np.array([x, x, near, opposite, np.zeros(d), other])


def max_relative_error(k, ref, rows=slice(None), cols=slice(None)):
    """Max over entries of |k - ref[rows, cols]| / |ref[rows, cols]|. Where the exact value is 0
    (relu of opposite inputs without bias, the zero input) the reference keeps residues ~1e-50
    of the diagonal, so the denominator is floored at 1e-30 sqrt(ref_ii ref_jj): still far below
    any entry float64 can resolve (the nearly opposite relu pair without bias is ~1e-25 of it)."""
    diag = np.sqrt(np.abs(np.diag(ref)))
    floor = np.maximum(1e-30 * np.outer(diag[rows], diag[cols]), 1e-300)
    ref = ref[rows, cols]
    return float((np.abs(k - ref) / np.maximum(np.abs(ref), floor)).max())


@pytest.mark.parametrize(
    "activation, d", [*itertools.product(["relu", "erf"], [1, 3, 20]), ("linear", 3)]
)
def test_analytic_kernels_match_50_digit_reference(activation, d):
    x = hard_batch(d)
    worst = {}
    for sigma_w, sigma_b in itertools.product(SIGMA_WS, SIGMA_BS):
        layers = reference_kernels(activation, x, sigma_w, sigma_b, max(DEPTHS))
        for depth in DEPTHS:
            net = MLP(d, 10, depth, activation, sigma_w=sigma_w, sigma_b=sigma_b)
            kernels = zip(("nngp", "ntk"), analytic_kernels(net, x), layers[depth - 1], strict=True)
            for name, k, ref in kernels:
                worst[name, sigma_w, sigma_b, depth] = max_relative_error(k, ref)
    bad = {case: err for case, err in worst.items() if not err < 1e-12}
    assert not bad, bad


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_kernels_between_two_sets_match_the_reference(activation):
    """x2 given: identical inputs across the two sets, the zero input in one only."""
    x = hard_batch(3)
    net = MLP(3, 10, 3, activation, sigma_w=1.5, sigma_b=0.5)
    layers = reference_kernels(activation, x, 1.5, 0.5, 3)
    for k, ref in zip(analytic_kernels(net, x[:4], x[1:]), layers[-1], strict=True):
        assert max_relative_error(k, ref, slice(0, 4), slice(1, None)) < 1e-12


def test_relu_theta_x_x_in_a_batch_of_4_equals_theta_x_x_alone():
    """relu, depth 2, sigma_w 1.5, sigma_b 1, d 3: from layer 2 on s11 s22 - s12^2 cancels to
    ~1e-16 s11 s22, so the determinant needs its own recursion (from the products the batch and
    the single input differ by 3.2e-9)."""
    net = MLP(3, 10, 2, "relu", sigma_w=1.5, sigma_b=1.0)
    x = np.random.default_rng(18).standard_normal((4, 3))
    batch = np.diag(analytic_ntk(net, x))
    alone = np.array([analytic_ntk(net, xi[None])[0, 0] for xi in x])
    np.testing.assert_allclose(batch, alone, rtol=1e-14, atol=0)
    ref = np.diag(reference_kernels("relu", x, 1.5, 1.0, 2)[-1][1])
    np.testing.assert_allclose(batch, ref, rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    "activation, depth, sigma_w, sigma_b",
    [("relu", 4, 2.0, 2.0), ("relu", 3, 1.0, 0.0), ("erf", 4, 1.5, 0.5), ("linear", 2, 0.8, 1.0)],
)
def test_theta_x_x_does_not_depend_on_the_rest_of_the_batch(activation, depth, sigma_w, sigma_b):
    rng = np.random.default_rng(depth)
    x = rng.standard_normal((7, 5))
    x[3] = x[1]  # a duplicate
    x[4] = x[1] * (1 + 1e-12)  # and a near one
    net = MLP(5, 10, depth, activation, sigma_w=sigma_w, sigma_b=sigma_b)
    alone = np.array([analytic_ntk(net, xi[None])[0, 0] for xi in x])
    for theta in (analytic_ntk(net, x), analytic_ntk(net, x[::-1])[::-1, ::-1]):
        np.testing.assert_allclose(np.diag(theta), alone, rtol=1e-14, atol=0)
    # between two sets: each input also in the other set, among different neighbours
    cross = analytic_ntk(net, x, np.vstack([rng.standard_normal((2, 5)), x[::-1]]))
    np.testing.assert_allclose(cross[np.arange(7), 8 - np.arange(7)], alone, rtol=1e-14, atol=0)
    # a duplicate pair is the diagonal itself
    assert analytic_ntk(net, x)[1, 3] == alone[1]


def test_sin_minus_t_cos_matches_mpmath_on_both_sides_of_the_series_switch():
    t = np.concatenate([[0.0, 1e-300, 1e-12, 1e-8, 1e-3], np.linspace(0.05, np.pi / 2, 60), [1.0]])
    t = np.concatenate([t, np.nextafter(1.0, [0.0, 2.0])])
    got = _sin_minus_t_cos(t)
    with mp.workdps(60):
        ref = np.array([float(mp.sin(mp.mpf(v)) - mp.mpf(v) * mp.cos(mp.mpf(v))) for v in t])
    assert got[0] == 0.0
    np.testing.assert_allclose(got[1:], ref[1:], rtol=4e-16, atol=0)
