"""Networks with K > 1 outputs: each output a scalar network on shared hidden layers,
the full and output-averaged empirical NTK against an explicit Jacobian, the infinite-width
limit `Theta_inf (x) I_K` by Monte Carlo, and constant-kernel dynamics and GD with (N, K)
targets against explicit iterations."""

import dataclasses
import itertools
import math

import numpy as np
import pytest

from ntk_sweep.core.kernel_predictions import (
    MODES,
    kernel_predictions,
    kernel_regression,
    max_stable_lr,
)
from ntk_sweep.core.kernels import (
    OUTPUT_KERNELS,
    analytic_ntk,
    empirical_ntk,
    kernel_distance,
    kernel_drift,
    kernel_target_alignment,
    kernel_velocity,
    kron_outputs,
    ntk_bytes,
    output_kernel_within,
)
from ntk_sweep.core.network import (
    MLP,
    PARAMETERIZATIONS,
    Linearization,
    forward,
    forward_cache,
    fused_available,
    gradient,
    init_params,
    jvp,
    param_movement,
)
from ntk_sweep.core.training import gd_trajectory, use_fused
from tests.test_network import (
    explicit_jacobian,
    finite_difference_gradient,
    flatten,
    unflatten,
)

K = 3
BACKENDS = ["numpy"] + (["fused"] if fused_available() else [])


@pytest.mark.parametrize("alpha", [None, 1.7])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_each_output_is_a_scalar_network_on_the_shared_hidden_layers(parameterization, alpha):
    """Output a is the one-output network with the same hidden layers and the output layer's
    column a: mean_field's 1/n and alpha scale every output alike."""
    rng = np.random.default_rng(0)
    net = MLP(3, 9, 2, "erf", parameterization, 1.3, 0.4, alpha=alpha, outputs=K)
    scalar = dataclasses.replace(net, outputs=1)
    params = init_params(net, 1)
    x = rng.standard_normal((5, 3))
    f = forward(net, params, x)
    assert f.shape == (5, K) and net.n_params == sum(w.size + b.size for w, b in params)
    np.testing.assert_array_equal(forward_cache(net, params, x).f, f)
    w, b = params[-1]
    for a in range(K):
        head = [*params[:-1], (w[:, a : a + 1], b[a : a + 1])]
        np.testing.assert_allclose(f[:, a], forward(scalar, head, x), rtol=1e-13, atol=1e-14)
    # the hidden layers are those of the one-output network: the output layer is drawn last
    for layer, scalar_layer in zip(params[:-1], init_params(scalar, 1)[:-1], strict=True):
        np.testing.assert_array_equal(layer[0], scalar_layer[0])
        np.testing.assert_array_equal(layer[1], scalar_layer[1])


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_gradient_jvp_and_linearisation_against_finite_differences_and_jacobian(
    parameterization, depth
):
    rng = np.random.default_rng(depth)
    net = MLP(3, 6, depth, "tanh", parameterization, 1.3, 0.4, alpha=0.8, outputs=K)
    params = init_params(net, 1)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, K))
    loss, grads = gradient(net, params, x, y)
    f = forward(net, params, x)
    assert loss == pytest.approx(np.sum((f - y) ** 2) / 10, rel=1e-14)
    theta, fd = flatten(params), finite_difference_gradient(net, params, x, y)
    assert np.linalg.norm(fd - flatten(grads)) / np.linalg.norm(fd) < 1e-6
    # forward mode with unit tangents builds the same Jacobian as the backward pass, rows (i, a)
    cache, jac = forward_cache(net, params, x), explicit_jacobian(net, params, x)
    columns = [jvp(net, params, cache, unflatten(e, params)) for e in np.eye(theta.size)]
    assert columns[0].shape == (5, K)
    np.testing.assert_allclose(
        np.array([c.reshape(-1) for c in columns]).T, jac, rtol=1e-12, atol=1e-12
    )
    lin, delta = Linearization(net, params, x), rng.standard_normal(theta.size)
    np.testing.assert_allclose(lin.predict(unflatten(delta, params)).reshape(-1), jac @ delta)
    lin_loss, lin_grads = lin.gradient(unflatten(delta, params), y)
    r = (jac @ delta - y.reshape(-1)) / 5  # the centred model: f0 = 0
    np.testing.assert_allclose(flatten(lin_grads), jac.T @ r, rtol=1e-12, atol=1e-13)
    assert lin_loss == pytest.approx(2.5 * r @ r, rel=1e-13)
    moved = unflatten(theta + delta, params)
    assert param_movement(moved, params)[0] == pytest.approx(
        np.linalg.norm(delta) / np.linalg.norm(theta), rel=1e-13
    )


def test_k_output_targets_and_backend_are_checked():
    net = MLP(2, 4, outputs=K)
    p, x = init_params(net, 0), np.ones((3, 2))
    with pytest.raises(ValueError, match=r"y has shape \(3,\): expected \(3, 3\).*outputs=3"):
        gradient(net, p, x, np.ones(3))
    with pytest.raises(ValueError, match="backend='fused' needs outputs=1 .*outputs=3"):
        next(gd_trajectory(net, p, x, np.ones((3, K)), 0.1, 2, [0], backend="fused"))
    assert not use_fused(net) and not use_fused(net, "numpy")
    with pytest.raises(
        ValueError, match="outputs='diag' is invalid: allowed values are full, mean"
    ):
        empirical_ntk(net, p, x, outputs="diag")


@pytest.mark.parametrize("alpha", [None, 1.7])
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_k_output_ntk_equals_explicit_jacobian_product(activation, parameterization, depth, alpha):
    """Acceptance: the full (N K, M K) kernel is J J^T with sample-major rows, the "mean" kernel
    the average of its K diagonal blocks, to 1e-10 relative, for either backend and chunking
    (tiny chunks split the last hidden layer unevenly)."""
    rng = np.random.default_rng(depth)
    net = MLP(3, 7, depth, activation, parameterization, 1.4, 0.6, alpha=alpha, outputs=K)
    params = init_params(net, 2)
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    j1, j2 = explicit_jacobian(net, params, x1), explicit_jacobian(net, params, x2)
    expected = {None: j1 @ j1.T, "x2": j2 @ j1.T}
    scale = np.abs(expected[None]).max()
    errors = []
    for backend, chunk, pair in itertools.product(BACKENDS, (None, 3), (None, "x2")):
        args = (x1,) if pair is None else (x2, x1)
        full = empirical_ntk(net, params, *args, chunk_size=chunk, backend=backend)
        mean = empirical_ntk(net, params, *args, chunk_size=chunk, backend=backend, outputs="mean")
        assert full.shape == (len(args[0]) * K, 5 * K) and mean.shape == (len(args[0]), 5)
        blocks = np.mean([expected[pair][a::K, a::K] for a in range(K)], axis=0)
        errors += [np.abs(full - expected[pair]).max(), np.abs(mean - blocks).max()]
    assert max(errors) / scale < 1e-10


def test_one_output_kernel_is_the_scalar_kernel_in_either_mode():
    net = MLP(2, 9, 2, "erf", sigma_b=0.3)
    p, x = init_params(net, 0), np.random.default_rng(0).standard_normal((4, 2))
    full = empirical_ntk(net, p, x)
    assert full.shape == (4, 4)
    np.testing.assert_array_equal(empirical_ntk(net, p, x, outputs="mean"), full)


def test_ntk_bytes_and_the_budget_choice():
    net = MLP(2, 5, outputs=K)
    p = init_params(net, 0)
    x1, x2 = np.ones((4, 2)), np.ones((3, 2))
    for kernel in OUTPUT_KERNELS:
        assert ntk_bytes(4, 3, K, kernel) == empirical_ntk(net, p, x1, x2, outputs=kernel).nbytes
    assert ntk_bytes(4, 3) == 96 and ntk_bytes(4, 3, K, "mean") == 96
    k = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_array_equal(kron_outputs(k, K), np.kron(k, np.eye(K)))
    assert output_kernel_within(4, 3, K, budget_bytes=96 * K**2) == "full"
    assert output_kernel_within(4, 3, K, budget_bytes=96 * K**2 - 1) == "mean"


def _off_block_second_moment(activation: str, x: np.ndarray, sw: float, sb: float) -> float:
    """`width * E ||Theta_ab||_F^2` for outputs a != b of a one-hidden-layer NTK-parameterized
    network, exact at every width: `Theta_ab(i,j) = (sw^2 / n) sum_u W_ua W_ub phi'(z_iu)
    phi'(z_ju) Theta^1_ij` with i.i.d. units and `E[W_ua^2 W_ub^2] = 1`, so
    `n E[Theta_ab(i,j)^2] = sw^4 (Theta^1_ij)^2 E[phi'(u)^2 phi'(v)^2]`, (u, v) ~ N(0, Sigma^1)."""
    dot = x @ x.T / x.shape[1]
    sigma1, theta1 = sw**2 * dot + sb**2, sw**2 * dot + 1
    v = np.diag(sigma1)
    if activation == "relu":  # phi'^2 = phi' = [z > 0]: the orthant probability
        rho = np.clip(sigma1 / np.sqrt(np.outer(v, v)), -1, 1)
        e = (np.pi - np.arccos(rho)) / (2 * np.pi)
    else:  # erf: phi'^2 = (4/pi) exp(-2 z^2), E exp(-2(u^2 + v^2)) = det(I + 4 Sigma)^-1/2
        e = (16 / np.pi**2) / np.sqrt(np.outer(1 + 4 * v, 1 + 4 * v) - 16 * sigma1**2)
    return sw**4 * float(np.sum(theta1**2 * e))


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_ntk_is_block_diagonal_in_expectation_and_off_blocks_vanish_like_width_to_minus_half(
    activation,
):
    """Depth 1, where each statement is exact at every width (i.i.d. units), over S seeds:
    - `E Theta = Theta_inf (x) I_K` entrywise (within 4.5 standard errors of the mean);
    - `width ||Theta_ab||_F^2` (a != b) has the mean `_off_block_second_moment` (4 s.e.), so
      `||Theta_ab|| / ||Theta_aa|| ~ sqrt(P / width) / ||Theta_inf||`: the output blocks decouple
      like width^-1/2;
    - `width ||mean_a Theta_aa - Theta_inf||_F^2` has the same mean at both widths (4 s.e.):
      the output-averaged kernel approaches `analytic_ntk` like width^-1/2.
    Measured (S = 200): mean ||off||/||diag|| 0.046 at width 128, 0.011 at 2048 (relu), 0.048,
    0.012 (erf); relative gap of the averaged kernel to analytic_ntk 0.087, 0.022 (relu), 0.054,
    0.013 (erf).
    """
    x = np.random.default_rng(0).standard_normal((5, 3))
    seeds, sw, sb = range(200), 1.2, 0.5
    expected_off = _off_block_second_moment(activation, x, sw, sb)
    gaps = []
    for width in (128, 2048):
        net = MLP(3, width, 1, activation, sigma_w=sw, sigma_b=sb, outputs=K)
        inf = analytic_ntk(net, x)
        ks = np.array([empirical_ntk(net, init_params(net, s), x) for s in seeds])
        se = ks.std(axis=0, ddof=1) / math.sqrt(len(seeds))
        assert np.all(np.abs(ks.mean(axis=0) - kron_outputs(inf, K)) <= 4.5 * se)
        blocks = ks.reshape(len(seeds), 5, K, 5, K)
        off = [(blocks[:, :, a, :, b] ** 2).sum(axis=(1, 2)) for a in range(K) for b in range(K)]
        off = width * np.mean([o for i, o in enumerate(off) if i % (K + 1)], axis=0)
        assert abs(off.mean() - expected_off) <= 4 * off.std(ddof=1) / math.sqrt(len(seeds))
        diag = np.mean([blocks[:, :, a, :, a] for a in range(K)], axis=0)
        gap = width * ((diag - inf) ** 2).sum(axis=(1, 2))
        gaps.append((gap.mean(), gap.std(ddof=1) / math.sqrt(len(seeds))))
    (g1, e1), (g2, e2) = gaps
    assert abs(g1 - g2) <= 4 * math.hypot(e1, e2)


def _spd(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return a @ a.T / n + 0.1 * np.eye(n)


def _explicit_gd(k, k_test, f0, f0_test, y, lr, n, steps):
    """The discrete GD map of the linearised model, flat sample-major vectors:
    `f_{t+1} = f_t - (lr/N) Theta (f_t - y)`, `f*_{t+1} = f*_t - (lr/N) Theta(x*, X) (f_t - y)`."""
    f, f_test, out = f0.copy(), f0_test.copy(), {}
    for step in range(max(steps) + 1):
        out[step] = f.copy(), f_test.copy()
        r = f - y
        f, f_test = f - lr / n * (k @ r), f_test - lr / n * (k_test @ r)
    return out


def test_kernel_predictions_for_k_outputs_equal_the_explicit_gd_iteration():
    """Acceptance: both kernel forms (a full (N K, N K) kernel with cross-output entries, and
    an (N, N) kernel on every output column) against the iterated GD map, to 1e-10; the
    (N, N) form equals its kron form and the one-output prediction of each column."""
    rng = np.random.default_rng(3)
    n, m = 6, 4
    y, f0, f0_test = (rng.standard_normal(s) for s in ((n, K), (n, K), (m, K)))
    per, per_test = _spd(rng, n), rng.standard_normal((m, n))
    full, full_test = _spd(rng, n * K), rng.standard_normal((m * K, n * K))
    steps = [0, 1, 2, 17, 200]
    for k, k_test in ((full, full_test), (per, per_test)):
        k_flat = k if k is full else np.kron(k, np.eye(K))
        test_flat = k_test if k is full else np.kron(k_test, np.eye(K))
        lr = 0.9 * max_stable_lr(k_flat, n=n)
        f_train, f_test = kernel_predictions(k, k_test, f0, f0_test, y, lr, steps)
        assert f_train.shape == (len(steps), n, K) and f_test.shape == (len(steps), m, K)
        iterated = _explicit_gd(
            k_flat, test_flat, f0.reshape(-1), f0_test.reshape(-1), y.reshape(-1), lr, n, steps
        )
        for i, step in enumerate(steps):
            np.testing.assert_allclose(f_train[i].reshape(-1), iterated[step][0], atol=1e-10)
            np.testing.assert_allclose(f_test[i].reshape(-1), iterated[step][1], atol=1e-10)
    for mode in MODES:
        per_column = kernel_predictions(per, per_test, f0, f0_test, y, lr, steps, mode)
        kron = kernel_predictions(
            np.kron(per, np.eye(K)), np.kron(per_test, np.eye(K)), f0, f0_test, y, lr, steps, mode
        )
        for a, b in zip(per_column, kron, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        for a in range(K):
            one = kernel_predictions(
                per, per_test, f0[:, a], f0_test[:, a], y[:, a], lr, steps, mode
            )
            np.testing.assert_allclose(per_column[0][:, :, a], one[0], rtol=0, atol=1e-13)
            np.testing.assert_allclose(per_column[1][:, :, a], one[1], rtol=0, atol=1e-13)


def test_kernel_regression_for_k_outputs():
    rng = np.random.default_rng(4)
    n, m = 5, 3
    y, f0, f0_test = (rng.standard_normal(s) for s in ((n, K), (n, K), (m, K)))
    full, full_test = _spd(rng, n * K), rng.standard_normal((m * K, n * K))
    got = kernel_regression(full, full_test, y, f0, f0_test)
    expected = f0_test.reshape(-1) + full_test @ np.linalg.solve(full, (y - f0).reshape(-1))
    assert got.shape == (m, K)
    np.testing.assert_allclose(got.reshape(-1), expected, rtol=1e-10, atol=1e-12)
    per, per_test = _spd(rng, n), rng.standard_normal((m, n))
    np.testing.assert_allclose(
        kernel_regression(per, per_test, y, ridge=0.1),
        kernel_regression(np.kron(per, np.eye(K)), np.kron(per_test, np.eye(K)), y, ridge=0.1),
        rtol=0,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        kernel_regression(per, per_test, y), per_test @ np.linalg.solve(per, y), atol=1e-12
    )
    with pytest.raises(ValueError, match=r"kernel has shape \(4, 4\): expected \(15, 15\) or"):
        kernel_regression(np.eye(4), per_test, y)
    with pytest.raises(ValueError, match="f0_test has 5 values: expected 9"):
        kernel_regression(per, per_test, y, f0_test=np.ones(5))
    with pytest.raises(ValueError, match=r"k_test_train has shape \(3, 5\): expected \(M, 15\)"):
        kernel_predictions(full, per_test, f0, f0_test, y, 0.1, [1])


@pytest.mark.parametrize("alpha", [None, 2.0])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_k_output_linearised_gd_equals_the_closed_form_with_the_full_kernel(
    parameterization, alpha
):
    """Acceptance: GD of the K-output linearised model (JVP/VJP, numpy path) is the discrete
    closed form with the full empirical Theta_0, to 1e-9 at every logged step."""
    rng = np.random.default_rng(0)
    net = MLP(2, 64, 2, "erf", parameterization, sigma_b=0.5, alpha=alpha, outputs=K)
    x, y, x_test = (
        rng.standard_normal((6, 2)),
        rng.standard_normal((6, K)),
        rng.standard_normal((4, 2)),
    )
    params0 = init_params(net, 1)
    k0 = empirical_ntk(net, params0, x)
    lr = 0.5 * max_stable_lr(k0, n=6) / net.lr_scale
    steps = [0, 1, 7, 60]
    states = list(gd_trajectory(net, params0, x, y, lr, 60, steps))
    lin, lin_test = Linearization(net, params0, x), Linearization(net, params0, x_test)
    f_train, f_test = kernel_predictions(
        k0, empirical_ntk(net, params0, x_test, x), lin.f0, lin_test.f0, y, lr * net.lr_scale, steps
    )
    for i, state in enumerate(states):
        assert state.f_train.shape == state.f_lin_train.shape == (6, K)
        assert state.loss == pytest.approx(np.sum((state.f_train - y) ** 2) / 12, rel=1e-13)
        np.testing.assert_allclose(f_train[i], state.f_lin_train, rtol=0, atol=1e-9)
        np.testing.assert_allclose(f_test[i], lin_test.predict(state.delta_lin), rtol=0, atol=1e-9)
    assert states[-1].loss_lin < 0.5 * states[0].loss_lin  # it did train


def test_wide_k_output_network_follows_its_linearisation():
    """The trained network's distance to its linearisation, relative to how far the model moved,
    shrinks with width at least like the width^-1/2 bound of Lee et al. 2019 (measured for erf:
    0.034 at width 256, 0.0028 at 4096, about width^-0.9)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal((6, K))
    rel = []
    for width in (256, 4096):
        net = MLP(2, width, 1, "erf", sigma_b=0.5, outputs=K)
        params0 = init_params(net, 1)
        lr = 0.5 * max_stable_lr(empirical_ntk(net, params0, x), n=6)
        states = list(gd_trajectory(net, params0, x, y, lr, 100, [0, 1, 10, 100]))
        gap = max(np.sqrt(np.mean((s.f_train - s.f_lin_train) ** 2)) for s in states)
        rel.append(gap / np.sqrt(np.mean((states[-1].f_lin_train - states[0].f_train) ** 2)))
    assert rel[1] < 0.01 and rel[1] < rel[0] / 4


def test_kernel_diagnostics_on_full_and_output_averaged_kernels():
    rng = np.random.default_rng(5)
    n = 5
    k0, k_prev, k_t = _spd(rng, n), _spd(rng, n), _spd(rng, n)
    # relative measures do not see `(x) I_K`: it multiplies every inner product by K
    kron = [np.kron(k, np.eye(K)) for k in (k0, k_prev, k_t)]
    assert kernel_drift(kron[2], kron[0]) == pytest.approx(kernel_drift(k_t, k0), rel=1e-12)
    assert kernel_distance(kron[2], kron[0]) == pytest.approx(kernel_distance(k_t, k0), rel=1e-9)
    assert kernel_velocity(*kron[::-1], dt=0.5) == pytest.approx(
        kernel_velocity(k_t, k_prev, k0, dt=0.5), rel=1e-12
    )
    y = rng.standard_normal((n, K))
    full, flat = _spd(rng, n * K), y.reshape(-1)
    assert kernel_target_alignment(full, y) == pytest.approx(
        flat @ full @ flat / (np.linalg.norm(full) * (flat @ flat)), rel=1e-12
    )
    yy = y @ y.T
    assert kernel_target_alignment(k0, y) == pytest.approx(
        np.sum(k0 * yy) / (np.linalg.norm(k0) * np.linalg.norm(yy)), rel=1e-12
    )
    # for Theta = A (x) I_K the full alignment is tr(Y^T A Y) / (sqrt(K) ||A|| ||Y||^2)
    assert kernel_target_alignment(kron[0], y) == pytest.approx(
        np.sum(k0 * yy) / (math.sqrt(K) * np.linalg.norm(k0) * np.sum(y * y)), rel=1e-12
    )
    assert math.isnan(kernel_target_alignment(k0, np.zeros((n, K))))
    with pytest.raises(ValueError, match=r"kernel has shape \(5, 5\): expected \(10, 10\)"):
        kernel_target_alignment(k0, np.ones(10))
