"""The network's backward pass, JVPs and gradient descent against independent computations."""

import numpy as np
import pytest

from ntk_sweep.core.losses import loss_value
from ntk_sweep.core.network import (
    ACTIVATIONS,
    MLP,
    PARAMETERIZATIONS,
    Linearization,
    forward,
    forward_cache,
    gd_step,
    gradient,
    init_params,
    jvp,
    param_movement,
    vjp,
)
from ntk_sweep.core.training import gd_trajectory


def flatten(params):
    return np.concatenate([np.concatenate([w.ravel(), b]) for w, b in params])


def unflatten(vector, like):
    out, i = [], 0
    for w, b in like:
        out.append(
            (vector[i : i + w.size].reshape(w.shape), vector[i + w.size : i + w.size + b.size])
        )
        i += w.size + b.size
    return out


def finite_difference_gradient(net, params, x, y, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the MSE loss in every parameter (flattened), an
    independent check of the backward pass."""
    theta = flatten(params)
    fd = np.empty_like(theta)
    for k in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[k] += h
        tm[k] -= h
        lp = loss_value("mse", forward(net, unflatten(tp, params), x), y)
        lm = loss_value("mse", forward(net, unflatten(tm, params), x), y)
        fd[k] = (lp - lm) / (2 * h)
    return fd


def explicit_jacobian(net, params, x):
    """J (N x P, or N K x P sample-major for K outputs) built row by row from the backward pass
    with unit cotangents."""
    cache = forward_cache(net, params, x)
    rows = []
    for index in np.ndindex(cache.f.shape):  # (i,) or (i, a), a fastest
        e = np.zeros(cache.f.shape)
        e[index] = 1.0
        rows.append(flatten(vjp(net, params, cache, e)))
    return np.array(rows)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backward_pass_matches_central_finite_differences(activation, parameterization, depth):
    rng = np.random.default_rng(depth)
    net = MLP(3, 6, depth, activation, parameterization, sigma_w=1.3, sigma_b=0.4)
    params = init_params(net, seed=1)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal(5)
    _, grads = gradient(net, params, x, y)
    fd, g = finite_difference_gradient(net, params, x, y), flatten(grads)
    assert np.linalg.norm(fd - g) / np.linalg.norm(g) < 1e-6


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_jvp_equals_explicit_jacobian_times_vector(parameterization):
    rng = np.random.default_rng(0)
    net = MLP(2, 7, 2, "tanh", parameterization, sigma_b=0.3)
    params = init_params(net, 3)
    x = rng.standard_normal((4, 2))
    jac = explicit_jacobian(net, params, x)
    tangent = rng.standard_normal(jac.shape[1])
    got = jvp(net, params, forward_cache(net, params, x), unflatten(tangent, params))
    np.testing.assert_allclose(got, jac @ tangent, rtol=1e-12, atol=1e-12)


def test_paper_network_forward_matches_equation_1():
    """f(x) = sum_d w1_d relu(w0_d x + b0_d) / sqrt(D) + b1 (paper eq. 1)."""
    net = MLP(1, 50, sigma_b=0.5)
    (w0, b0), (w1, b1) = init_params(net, 7)
    x = np.linspace(-1, 1, 9)
    expected = np.maximum(np.outer(x, w0[0]) + b0, 0) @ w1[:, 0] / np.sqrt(50) + b1[0]
    np.testing.assert_allclose(forward(net, init_params(net, 7), x[:, None]), expected, rtol=1e-13)


def test_standard_parameterization_has_the_same_function_at_init():
    x = np.random.default_rng(1).standard_normal((6, 4))
    ntk = MLP(4, 32, 2, "erf", "ntk", sigma_w=1.5, sigma_b=0.2)
    std = MLP(4, 32, 2, "erf", "standard", sigma_w=1.5, sigma_b=0.2)
    np.testing.assert_allclose(
        forward(ntk, init_params(ntk, 5), x), forward(std, init_params(std, 5), x), rtol=1e-12
    )


def test_init_is_deterministic_and_seed_dependent():
    net = MLP(3, 16, 2, sigma_b=1.0)
    a, b, c = init_params(net, 11), init_params(net, 11), init_params(net, 12)
    assert all(
        np.array_equal(wa, wb) and np.array_equal(ba, bb)
        for (wa, ba), (wb, bb) in zip(a, b, strict=True)
    )
    assert not np.array_equal(a[0][0], c[0][0])
    # the first draws of the generator are the first layer's weights, N(0, 1) in ntk
    np.testing.assert_array_equal(a[0][0], np.random.default_rng(11).standard_normal((3, 16)))


def test_float32_option():
    net = MLP(2, 8, dtype="float32")
    params = init_params(net, 0)
    assert all(w.dtype == np.float32 and b.dtype == np.float32 for w, b in params)
    x = np.ones((3, 2))
    assert forward(net, params, x).dtype == np.float32
    f64 = forward(MLP(2, 8), init_params(MLP(2, 8), 0), x)
    np.testing.assert_allclose(forward(net, params, x), f64, rtol=1e-5)


def test_gd_step_is_paper_equation_3():
    rng = np.random.default_rng(2)
    net = MLP(2, 10, 1, "relu", "mean_field")
    params = init_params(net, 0)
    x, y = rng.standard_normal((4, 2)), rng.standard_normal(4)
    loss, grads = gradient(net, params, x, y)
    loss2, new = gd_step(net, params, x, y, lr=0.3)
    assert loss == loss2
    # mean_field multiplies the learning rate by the width
    np.testing.assert_allclose(flatten(new), flatten(params) - 0.3 * 10 * flatten(grads))


def test_linearization_is_first_order_taylor_model():
    rng = np.random.default_rng(3)
    net = MLP(2, 9, 2, "erf", sigma_b=0.5)
    params0 = init_params(net, 1)
    x = rng.standard_normal((5, 2))
    lin = Linearization(net, params0, x)
    np.testing.assert_array_equal(lin.f0, forward(net, params0, x))
    step = 1e-4 * rng.standard_normal(flatten(params0).size)
    delta = unflatten(step, params0)
    moved = unflatten(flatten(params0) + step, params0)
    # f(theta0 + d) - f_lin(theta0 + d) = O(|d|^2)
    gap = np.abs(forward(net, moved, x) - lin.predict(delta)).max()
    assert gap < 1e-6
    np.testing.assert_allclose(
        lin.predict(delta), lin.f0 + explicit_jacobian(net, params0, x) @ step, rtol=1e-12
    )


def test_gd_trajectory_logs_requested_steps_and_stops_on_divergence():
    rng = np.random.default_rng(4)
    net = MLP(1, 20, sigma_b=1.0)
    params0 = init_params(net, 0)
    x, y = rng.uniform(0, 1, (4, 1)), rng.standard_normal(4)
    states = list(gd_trajectory(net, params0, x, y, 0.1, 30, [0, 5, 30], backend="numpy"))
    assert [s.step for s in states] == [0, 5, 30]
    assert states[0].loss == pytest.approx(loss_value("mse", forward(net, params0, x), y))
    # the trajectory is plain gradient descent
    params = params0
    for _ in range(5):
        _, params = gd_step(net, params, x, y, 0.1)
    np.testing.assert_array_equal(flatten(states[1].params), flatten(params))
    assert states[-1].loss < states[0].loss and not states[-1].diverged
    diverging = list(gd_trajectory(net, params0, x, y, lr=1e4, steps=500, log_steps=[0, 500]))
    assert diverging[-1].diverged and diverging[-1].step < 500


@pytest.mark.parametrize("backend", ["numpy", "fused"])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_centred_model_is_alpha_times_the_change_of_the_network(parameterization, backend):
    """Chizat & Bach's model f = alpha (f_net(theta) - f_net(theta0)), GD with lr / alpha^2,
    against an independent computation: the plain network's Jacobian and output, scaled by hand."""
    rng = np.random.default_rng(7)
    alpha, lr = 3.0, 0.2
    x, y = rng.uniform(-1, 1, (5, 2)), rng.standard_normal(5)
    plain = MLP(2, 12, 1, "erf", parameterization, sigma_b=0.5)
    net = MLP(2, 12, 1, "erf", parameterization, sigma_b=0.5, alpha=alpha)
    params0 = init_params(net, 3)
    np.testing.assert_array_equal(flatten(params0), flatten(init_params(plain, 3)))
    assert net.lr_scale == pytest.approx(plain.lr_scale / alpha**2)
    # hand-made GD on the centred model: residual alpha (f_net - f_net0) - y, gradient
    # alpha J_net^T r / N, step lr * lr_scale(plain) / alpha^2
    f_net0 = forward(plain, params0, x)
    theta = flatten(params0)
    for _ in range(3):
        p = unflatten(theta, params0)
        r = alpha * (forward(plain, p, x) - f_net0) - y
        theta = (
            theta
            - lr * plain.lr_scale / alpha**2 * alpha * explicit_jacobian(plain, p, x).T @ r / 5
        )
    f3 = alpha * (forward(plain, unflatten(theta, params0), x) - f_net0)
    states = list(gd_trajectory(net, params0, x, y, lr, 3, [0, 3], backend=backend))
    np.testing.assert_array_equal(states[0].f_train, np.zeros(5))
    np.testing.assert_array_equal(states[0].f_lin_train, np.zeros(5))
    np.testing.assert_allclose(flatten(states[1].params), theta, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(states[1].f_train, f3, rtol=1e-10, atol=1e-12)
    # the linear model: alpha J0 delta with the same GD
    j0, d = explicit_jacobian(plain, params0, x), np.zeros_like(theta)
    for _ in range(3):
        d = d - lr * plain.lr_scale / alpha * j0.T @ (alpha * j0 @ d - y) / 5
    np.testing.assert_allclose(states[1].f_lin_train, alpha * j0 @ d, rtol=1e-10, atol=1e-12)


def test_alpha_scales_the_kernel_and_drift_grows_as_alpha_decreases():
    """The lazy_rich_alpha preset's setting (paper_toy, sigma_b 1, width 256), shorter."""
    from ntk_sweep.core.kernels import analytic_ntk, empirical_ntk, kernel_drift
    from ntk_sweep.dataset_sources import load_dataset

    data = load_dataset("paper_toy")
    x, y = data.x_train, data.y_train
    plain = MLP(1, 256, sigma_b=1.0)
    p0 = init_params(plain, 0)
    k_plain, k_inf = empirical_ntk(plain, p0, x), analytic_ntk(plain, x)
    drifts, moved, losses_lin = [], [], []
    for alpha in (0.1, 0.3, 1.0, 3.0, 10.0):
        net = MLP(1, 256, sigma_b=1.0, alpha=alpha)
        k0 = empirical_ntk(net, p0, x)
        np.testing.assert_allclose(k0, alpha**2 * k_plain, rtol=1e-12)
        np.testing.assert_allclose(analytic_ntk(net, x), alpha**2 * k_inf, rtol=1e-12)
        last = list(gd_trajectory(net, p0, x, y, 0.1, 300, [300]))[-1]
        drifts.append(kernel_drift(empirical_ntk(net, last.params, x), k0))
        moved.append(param_movement(last.params, p0)[0])
        losses_lin.append(last.loss_lin)
    # the same function-space dynamics for the linearised model at every alpha ...
    np.testing.assert_allclose(losses_lin, losses_lin[0], rtol=1e-9)
    # ... while kernel and parameters move more and more as alpha falls (about 1/alpha)
    assert all(a > b for a, b in zip(drifts, drifts[1:], strict=False)), drifts
    assert all(a > b for a, b in zip(moved, moved[1:], strict=False)), moved
    assert drifts[0] > 10 * drifts[-1] and moved[0] > 30 * moved[-1], (drifts, moved)


def test_param_movement():
    net = MLP(2, 4, sigma_b=1.0)
    p0 = init_params(net, 0)
    moved = [(w * 1.1, b) for w, b in p0]
    total, layers = param_movement(moved, p0)
    w_norms = [np.linalg.norm(w) ** 2 for w, _ in p0]
    all_norm = sum(w_norms) + sum(np.linalg.norm(b) ** 2 for _, b in p0)
    assert total == pytest.approx(0.1 * np.sqrt(sum(w_norms) / all_norm))
    for (w, b), got in zip(p0, layers, strict=True):
        ratio = 0.1 * np.linalg.norm(w) / np.sqrt(np.linalg.norm(w) ** 2 + np.linalg.norm(b) ** 2)
        assert got == pytest.approx(ratio)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0}, "width=0 is invalid: expected an integer >= 1"),
        ({"width": 2.5}, "width=2.5"),
        ({"depth": 0}, "depth=0"),
        ({"activation": "sigmoid"}, "activation='sigmoid'.*relu, erf, tanh, linear"),
        ({"parameterization": "mup"}, "parameterization='mup'.*ntk, standard, mean_field"),
        ({"sigma_w": 0.0}, "sigma_w=0.0"),
        ({"sigma_b": -1.0}, "sigma_b=-1.0"),
        ({"dtype": "float16"}, "dtype='float16'.*float64, float32"),
        ({"alpha": 0.0}, "alpha=0.0 is invalid: expected a finite number > 0"),
        ({"alpha": -1.0}, "alpha=-1.0"),
        ({"outputs": 0}, "outputs=0 is invalid: expected an integer >= 1"),
        ({"outputs": 2.0}, "outputs=2.0 is invalid"),
    ],
)
def test_invalid_network_arguments(kwargs, match):
    args = {"input_dim": 1, "width": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        MLP(**args)


def test_invalid_training_arguments():
    net = MLP(1, 4)
    p = init_params(net, 0)
    x, y = np.ones((3, 1)), np.ones(3)
    with pytest.raises(ValueError, match="lr=-1.*> 0"):
        gd_step(net, p, x, y, lr=-1)
    with pytest.raises(ValueError, match="lr=0"):
        next(gd_trajectory(net, p, x, y, lr=0, steps=3, log_steps=[0]))
    with pytest.raises(ValueError, match="x has shape"):
        forward(net, p, np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"x has shape \(0, 1\)"):
        forward(net, p, np.ones((0, 1)))
    with pytest.raises(ValueError, match="y has 2 values but x has 3 rows"):
        gradient(net, p, x, np.ones(2))
    with pytest.raises(ValueError, match="steps=0"):
        next(gd_trajectory(net, p, x, y, lr=0.1, steps=0, log_steps=[0]))
    with pytest.raises(ValueError, match="seed=-1"):
        init_params(net, -1)


@pytest.mark.parametrize("depth,outputs", [(1, 1), (2, 1), (2, 3)])
def test_row_blocked_evaluation_agrees_with_the_whole_batch(monkeypatch, depth, outputs):
    """A wide network evaluates a batch in row blocks (`row_blocks`): every row's output, cached
    layer, slope and JVP is the whole-batch one to rounding, and `forward` equals
    `forward_cache(...).f` bit for bit (the centred model subtracts one from the other)."""
    from ntk_sweep.core import network

    net = MLP(input_dim=3, width=40, depth=depth, activation="erf", outputs=outputs)
    params = init_params(net, seed=1)
    x = np.random.default_rng(2).standard_normal((23, 3))
    tangent = [(0.1 * w, 0.1 * b) for w, b in init_params(net, seed=5)]
    whole = forward_cache(net, params, x)
    whole_jvp = jvp(net, params, whole, tangent)
    monkeypatch.setattr(network, "BLOCK_ELEMENTS", 200)  # 5 rows of width 40 a block
    assert [(s.start, s.stop) for s in network.row_blocks(net, 23)] == [
        (0, 5),
        (5, 10),
        (10, 15),
        (15, 20),
        (20, 23),
    ]
    blocked = forward_cache(net, params, x)
    np.testing.assert_array_equal(forward(net, params, x), blocked.f)
    np.testing.assert_allclose(blocked.f, whole.f, rtol=1e-13, atol=1e-15)
    for a, b in zip(blocked.inputs + blocked.slopes, whole.inputs + whole.slopes, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    blocked_jvp = jvp(net, params, blocked, tangent)
    assert blocked_jvp.shape == whole_jvp.shape == ((23,) if outputs == 1 else (23, outputs))
    np.testing.assert_allclose(blocked_jvp, whole_jvp, rtol=1e-13, atol=1e-15)
    lin, streamed = Linearization(net, params, x), Linearization(net, params, x, cached=False)
    np.testing.assert_array_equal(streamed.predict(tangent), lin.predict(tangent))
    np.testing.assert_array_equal(streamed.centre(whole.f), lin.centre(whole.f))
    with pytest.raises(ValueError, match="predicts only"):
        streamed.gradient(tangent, np.zeros_like(whole.f))
