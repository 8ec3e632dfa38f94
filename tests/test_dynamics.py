"""Constant-kernel dynamics (MATH.md section 4) against trained linearised and real networks."""

import warnings

import numpy as np
import pytest

from ntk_sweep.core.dynamics import kernel_spectrum, lr_phase
from ntk_sweep.core.kernel_predictions import kernel_predictions, kernel_regression, max_stable_lr
from ntk_sweep.core.kernels import analytic_ntk, empirical_ntk, kernel_drift
from ntk_sweep.core.network import MLP, PARAMETERIZATIONS, Linearization, forward, init_params
from ntk_sweep.core.training import gd_trajectory
from ntk_sweep.dataset_sources import load_dataset


@pytest.mark.parametrize(
    "depth, backend", [(2, "numpy"), (1, "numpy"), (1, "fused")], ids=["deep", "jvp", "fused"]
)
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_discrete_kernel_prediction_equals_trained_linearised_network(
    parameterization, depth, backend
):
    """Acceptance: the GD form with the initial empirical NTK is exact for the linearised model
    (trained with JVP/VJP through the network on the numpy path)."""
    rng = np.random.default_rng(0)
    net = MLP(2, 64, depth, "erf", parameterization, sigma_b=0.5)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal(6)
    x_test = rng.standard_normal((9, 2))
    params0 = init_params(net, 1)
    k0 = empirical_ntk(net, params0, x)
    lr = 0.5 * max_stable_lr(k0) / net.lr_scale
    steps = [0, 1, 2, 7, 50, 300]
    states = list(gd_trajectory(net, params0, x, y, lr, 300, steps, backend=backend))
    lin_test = Linearization(net, params0, x_test)
    f_train, f_test = kernel_predictions(
        k0,
        empirical_ntk(net, params0, x_test, x),
        forward(net, params0, x),
        lin_test.f0,
        y,
        lr * net.lr_scale,
        steps,
    )
    for i, state in enumerate(states):
        np.testing.assert_allclose(f_train[i], state.f_lin_train, rtol=0, atol=1e-9)
        np.testing.assert_allclose(f_test[i], lin_test.predict(state.delta_lin), rtol=0, atol=1e-9)
    assert states[-1].loss_lin < 0.5 * states[0].loss_lin  # it did train


def test_flow_and_discrete_agree_for_small_steps_and_late_times():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 5))
    k = a @ a.T + np.eye(5)
    f0, y = rng.standard_normal(5), rng.standard_normal(5)
    k_t, f0_t = rng.standard_normal((3, 5)), rng.standard_normal(3)
    lr = 0.2 * max_stable_lr(k)
    disc = kernel_predictions(k, k_t, f0, f0_t, y, lr, [0, 2, 10_000])
    flow = kernel_predictions(k, k_t, f0, f0_t, y, lr, [0, 2, 10_000], mode="flow")
    np.testing.assert_allclose(disc[0][0], f0)  # step 0 is the initial network
    np.testing.assert_allclose(flow[1][0], f0_t)
    assert np.abs(disc[0][1] - flow[0][1]).max() > 1e-4  # a finite lr is not gradient flow...
    np.testing.assert_allclose(disc[0][2], y, atol=1e-10)  # ...but both converge to the data
    np.testing.assert_allclose(flow[0][2], y, atol=1e-10)
    np.testing.assert_allclose(disc[1][2], flow[1][2], atol=1e-10)
    # the t -> infinity limit is kernel regression started from f0 (eqs. 7-8 with f0 = 0)
    np.testing.assert_allclose(disc[1][2], kernel_regression(k, k_t, y, f0, f0_t), atol=1e-10)


def test_flow_matches_matrix_exponential():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 4))
    k = a @ a.T
    f0, y = rng.standard_normal(4), rng.standard_normal(4)
    lr, step, n = 0.05, 37, 4
    # exp(-K t / N) by a scaling-and-squaring Taylor series, independent of the eigensolver
    m = -k * lr * step / n / 2**10
    e, term = np.eye(4), np.eye(4)
    for j in range(1, 25):
        term = term @ m / j
        e = e + term
    for _ in range(10):
        e = e @ e
    got = kernel_predictions(k, None, f0, None, y, lr, [step], mode="flow")[0][0]
    np.testing.assert_allclose(got, y + e @ (f0 - y), rtol=1e-10)


def test_paper_setting_is_singular_and_still_finite():
    """MATH.md section 3: sigma_b = 0, x > 0 gives a rank-2 kernel; no NaN, documented limits."""
    data = load_dataset("paper_toy")
    net = MLP(1, 2000)
    params0 = init_params(net, 0)
    k_emp = empirical_ntk(net, params0, data.x_train)
    k_ana = analytic_ntk(net, data.x_train)
    for k, k_t in [
        (k_emp, empirical_ntk(net, params0, data.x_test, data.x_train)),
        (k_ana, analytic_ntk(net, data.x_test, data.x_train)),
    ]:
        spectrum = kernel_spectrum(k)
        assert spectrum.rank == 2 and spectrum.condition_number == np.inf
        f0, f0_t = forward(net, params0, data.x_train), forward(net, params0, data.x_test)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # lr 0.1 is stable: no warning expected
            f_tr, f_te = kernel_predictions(k, k_t, f0, f0_t, data.y_train, 0.1, [0, 500, 10**7])
        assert np.isfinite(f_tr).all() and np.isfinite(f_te).all()
        with pytest.warns(RuntimeWarning, match="singular"):
            km = kernel_regression(k, k_t, data.y_train)
        assert np.isfinite(km).all()
        # the fit plateaus at the least-squares line through the four points
        slope, icpt = np.polyfit(data.x_train[:, 0], data.y_train, 1)
        line = slope * data.x_train[:, 0] + icpt
        f_inf = kernel_predictions(k, None, f0, None, data.y_train, 0.1, [10**7])[0][0]
        np.testing.assert_allclose(
            f_inf,
            line + (f0 - (np.polyval(np.polyfit(data.x_train[:, 0], f0, 1), data.x_train[:, 0]))),
            atol=1e-6,
        )


def test_spectrum_and_stability_bound():
    k = np.diag([4.0, 1.0, 0.5])
    s = kernel_spectrum(k)
    assert s.lambda_max == 4.0 and s.lambda_min == 0.5 and s.condition_number == 8.0
    assert max_stable_lr(k) == pytest.approx(2 * 3 / 4.0)
    with pytest.warns(RuntimeWarning, match="2N/lambda_max=1.5"):
        kernel_predictions(k, None, np.zeros(3), None, np.ones(3), 1.6, [1])


def test_kernel_regression_ridge_and_errors():
    k = np.array([[2.0, 0.5], [0.5, 1.0]])
    k_t = np.array([[1.0, 0.3]])
    y = np.array([1.0, -1.0])
    np.testing.assert_allclose(kernel_regression(k, k_t, y), k_t @ np.linalg.solve(k, y))
    np.testing.assert_allclose(
        kernel_regression(k, k_t, y, ridge=0.1), k_t @ np.linalg.solve(k + 0.1 * np.eye(2), y)
    )
    with pytest.raises(ValueError, match="ridge=-1"):
        kernel_regression(k, k_t, y, ridge=-1)
    with pytest.raises(ValueError, match="shapes do not match"):
        kernel_regression(k, k_t, np.ones(3))
    with pytest.raises(ValueError, match="mode='euler'.*discrete, flow"):
        kernel_predictions(k, None, y, None, y, 0.1, [1], mode="euler")
    with pytest.raises(ValueError, match="lr=0"):
        kernel_predictions(k, None, y, None, y, 0, [1])
    with pytest.raises(ValueError, match="expected a non-empty square"):
        kernel_spectrum(np.ones((2, 3)))


def test_wide_network_follows_kernel_prediction_and_mean_field_does_not():
    """Acceptance: paper_toy, sigma_b = 1, width 50 000, lr 0.1, 1000 steps.

    Measured (seed 0): RMS(network - kernel prediction) on the test grid <= 0.011 at every
    logged step for ntk; mean_field drifts ~100x more (0.58 vs 0.005) and misses by ~0.06.
    """
    data = load_dataset("paper_toy")
    steps = [0, 2, 20, 100, 500, 1000]
    result = {}
    for parameterization in ("ntk", "mean_field"):
        net = MLP(1, 50_000, sigma_b=1.0, parameterization=parameterization)
        params0 = init_params(net, 0)
        states = list(gd_trajectory(net, params0, data.x_train, data.y_train, 0.1, 1000, steps))
        k0 = empirical_ntk(net, params0, data.x_train)
        _, f_kernel = kernel_predictions(
            k0,
            empirical_ntk(net, params0, data.x_test, data.x_train),
            states[0].f_train,
            forward(net, params0, data.x_test),
            data.y_train,
            0.1 * net.lr_scale,
            steps,
        )
        f_net = np.array([forward(net, s.params, data.x_test) for s in states])
        rms = np.sqrt(((f_net - f_kernel) ** 2).mean(axis=1))
        drift = kernel_drift(empirical_ntk(net, states[-1].params, data.x_train), k0)
        result[parameterization] = (rms.max(), drift)
    assert result["ntk"][0] < 0.025
    assert result["ntk"][1] < 0.02
    assert result["mean_field"][1] > 10 * result["ntk"][1]
    assert result["mean_field"][0] > 2 * result["ntk"][0]


@pytest.mark.parametrize(
    "losses, lambdas, phase",
    [
        ((1.0, 1.0, 0.1), (9.0, 8.0), "lazy"),
        ((1.0, 1.0 + 1e-12, 0.1), (9.0, 9.5), "lazy"),  # round-off is no spike
        ((1.0, 30.0, 0.1), (9.0, 5.0), "catapult"),
        ((1.0, 30.0, 0.1), (9.0, 9.0), "collapsed"),  # lambda_max did not decrease
        ((1.0, 30.0, 0.4999), (9.0, 4.0), "collapsed"),  # no better than a constant (0.5)
        ((1.0, 30.0, 1.5), (9.0, 4.0), "divergent"),  # ended above where it started
        ((1.0, float("inf"), float("inf")), (9.0, 9.0), "divergent"),
        ((1.0, float("nan"), float("nan")), (9.0, 9.0), "divergent"),
    ],
)
def test_lr_phase_classification(losses, lambdas, phase):
    loss_0, loss_max, loss_final = losses
    assert lr_phase(loss_0, loss_max, loss_final, 0.5, *lambdas) == phase


@pytest.mark.parametrize("backend", ["numpy", "fused"])
def test_lr_phases_of_a_narrow_relu_network_straddling_2n_over_lambda_max(backend):
    """Lewkowycz et al.'s phases, measured on the paper's problem at width 128: below
    2N/lambda_max lazy; at 1.4x the loss spikes, lambda_max falls and the network converges
    (catapult) while the linearised model diverges; at 30x the loss overflows."""
    data = load_dataset("paper_toy")
    x, y = data.x_train, data.y_train
    net = MLP(1, 128, sigma_b=1.0)
    p0 = init_params(net, 0)
    lam0 = kernel_spectrum(empirical_ntk(net, p0, x)).lambda_max
    lr_max = max_stable_lr(empirical_ntk(net, p0, x))
    phases = []
    for ratio in (0.5, 1.4, 30):
        states = list(gd_trajectory(net, p0, x, y, ratio * lr_max, 300, [0, 300], backend=backend))
        first, last = states[0], states[-1]
        lam = kernel_spectrum(empirical_ntk(net, states[-1].params, x)).lambda_max
        const = float(np.var(y)) / 2
        phases.append(
            (
                lr_phase(first.loss, last.loss_max, last.loss, const, lam0, lam),
                lr_phase(first.loss_lin, last.loss_lin_max, last.loss_lin, const, lam0, lam0),
            )
        )
        if ratio == 1.4:
            assert last.loss_max > 5 * first.loss and lam < 0.7 * lam0
    assert phases == [("lazy", "lazy"), ("catapult", "divergent"), ("divergent", "divergent")]


def test_top_eigenvalue_by_lanczos_matches_the_full_spectrum_of_a_k_output_ntk():
    from ntk_sweep.core.dynamics import kernel_spectrum, top_eigenvalue
    from ntk_sweep.core.kernels import empirical_ntk
    from ntk_sweep.core.network import MLP, init_params

    x = np.random.default_rng(1).standard_normal((40, 4))
    net = MLP(input_dim=4, width=64, depth=2, outputs=5, sigma_b=0.5)
    k = empirical_ntk(net, init_params(net, 3), x)
    assert k.shape == (200, 200)
    full = kernel_spectrum(k).lambda_max
    assert abs(top_eigenvalue(k) - full) <= 1e-12 * full
    assert top_eigenvalue(k) == top_eigenvalue(k.copy())  # a fixed start vector: deterministic
