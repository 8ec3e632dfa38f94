"""The constant-kernel iteration (`kernel_predictions.kernel_trajectory`) against the trained
linearised network (cross-entropy, SGD, momentum), against the closed form for full-batch GD on
the MSE, and for K > 1 softmax outputs against linear models with explicit feature matrices."""

import numpy as np
import pytest

from ntk_sweep.core.kernel_predictions import (
    has_kernel_form,
    kernel_predictions,
    kernel_trajectory,
    max_stable_lr,
)
from ntk_sweep.core.kernels import empirical_ntk
from ntk_sweep.core.network import MLP, Linearization, forward, init_params
from ntk_sweep.core.optimizers import minibatches
from ntk_sweep.core.training import train_trajectory

LOG = [0, 1, 2, 9, 30, 60]


@pytest.mark.parametrize(
    "optimizer, batch_size",
    [("gd", None), ("sgd", 4), ("momentum", 4), ("momentum", None)],
    ids=["gd", "sgd", "momentum", "momentum-full"],
)
def test_xent_kernel_iteration_equals_the_trained_linearised_network(optimizer, batch_size):
    """The binary cross-entropy's constant-kernel prediction equals the
    linearised network trained by `train_trajectory` to 1e-6 at every log step, on train and
    test inputs."""
    rng = np.random.default_rng(0)
    net = MLP(2, 32, 2, "relu", "ntk", sigma_b=0.5)
    x, x_test = rng.standard_normal((10, 2)), rng.standard_normal((6, 2))
    y = np.sign(rng.standard_normal(10))
    params0 = init_params(net, 2)
    kw = {"optimizer": optimizer, "loss": "xent", "batch_size": batch_size, "momentum": 0.7}
    states = list(train_trajectory(net, params0, x, y, 0.5, max(LOG), LOG, seed=5, **kw))
    lin_test = Linearization(net, params0, x_test)
    f_train, f_test = kernel_trajectory(
        empirical_ntk(net, params0, x),
        empirical_ntk(net, params0, x_test, x),
        forward(net, params0, x),
        lin_test.f0,
        y,
        0.5 * net.lr_scale,
        LOG,
        seed=5,
        **kw,
    )
    assert f_train.shape == (len(LOG), 10) and f_test.shape == (len(LOG), 6)
    for i, state in enumerate(states):
        np.testing.assert_allclose(f_train[i], state.f_lin_train, rtol=0, atol=1e-6)
        np.testing.assert_allclose(f_test[i], lin_test.predict(state.delta_lin), rtol=0, atol=1e-6)
    assert states[-1].loss_lin < 0.7 * states[0].loss_lin  # it did train


def test_mse_gd_kernel_iteration_equals_the_closed_form():
    rng = np.random.default_rng(1)
    net = MLP(2, 48, 1, "relu", sigma_b=1.0)
    x, x_test, y = rng.standard_normal((8, 2)), rng.standard_normal((5, 2)), rng.standard_normal(8)
    params0 = init_params(net, 0)
    k0, k_t = empirical_ntk(net, params0, x), empirical_ntk(net, params0, x_test, x)
    f0, f0_t = forward(net, params0, x), forward(net, params0, x_test)
    lr, steps = 0.9 * max_stable_lr(k0), [0, 1, 2, 7, 50, 3000]
    closed = kernel_predictions(k0, k_t, f0, f0_t, y, lr, steps)
    iterated = kernel_trajectory(k0, k_t, f0, f0_t, y, lr, steps)
    np.testing.assert_allclose(iterated[0], closed[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(iterated[1], closed[1], rtol=0, atol=1e-10)
    assert np.linalg.norm(closed[0][-1] - y) < 0.5 * np.linalg.norm(f0 - y)  # it did train


def softmax_gradient(f, y):
    p = np.exp(f) / np.exp(f).sum(axis=1, keepdims=True)
    return (p - y) / len(f)


def train_features(phi, phi_test, f0, f0_test, y, lr, optimizer, mu, batch_size, averaged):
    """A linear model in explicit features, trained by hand on softmax cross-entropy: outputs
    `f0 + (phi @ w)` with `w` (P, K) when `averaged` (kernel Theta_avg (x) I_K), else the
    sample-major `f0.reshape(-1) + phi @ w` with `phi` (N K, P)."""
    n, k = y.shape
    w = np.zeros((phi.shape[1], k) if averaged else phi.shape[1])
    v, out = np.zeros_like(w), {}

    def outputs(features, base):
        return base + (features @ w if averaged else (features @ w).reshape(base.shape))

    batches = minibatches(n, batch_size, max(LOG), seed=1)
    for step in range(max(LOG) + 1):
        f = outputs(phi, f0)
        out[step] = (f, outputs(phi_test, f0_test))
        if step == max(LOG):
            break
        b = next(batches)
        g = softmax_gradient(f[b], y[b])
        rows = b if averaged else (b[:, None] * k + np.arange(k)).reshape(-1)
        grad = phi[rows].T @ (g if averaged else g.reshape(-1))
        v = mu * v + grad if optimizer == "momentum" else grad
        w = w - lr * v
    return [out[s] for s in LOG]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
@pytest.mark.parametrize("averaged", [False, True], ids=["full-kernel", "averaged-kernel"])
def test_softmax_kernel_iteration_equals_a_linear_model_in_explicit_features(optimizer, averaged):
    """K = 3 outputs before the multi-output network exists: Theta = Phi Phi^T (sample-major
    N K x N K), or the (N, N) Theta_avg read as Theta_avg (x) I_K, both also checked against
    each other through `np.kron`."""
    rng = np.random.default_rng(3)
    n, m, k, p = 9, 4, 3, 30
    rows, rows_t = (n, m) if averaged else (n * k, m * k)
    phi, phi_t = rng.standard_normal((rows, p)), rng.standard_normal((rows_t, p))
    f0, f0_t = 0.5 * rng.standard_normal((n, k)), 0.5 * rng.standard_normal((m, k))
    y = np.eye(k)[rng.integers(0, k, n)]
    lr, mu, bs = 0.05, 0.6, 4
    expected = train_features(phi, phi_t, f0, f0_t, y, lr, optimizer, mu, bs, averaged)
    kw = {"optimizer": optimizer, "loss": "xent", "batch_size": bs, "momentum": mu, "seed": 1}
    got = kernel_trajectory(phi @ phi.T, phi_t @ phi.T, f0, f0_t, y, lr, LOG, **kw)
    for i, (f, f_t) in enumerate(expected):
        np.testing.assert_allclose(got[0][i], f, rtol=0, atol=1e-10)
        np.testing.assert_allclose(got[1][i], f_t, rtol=0, atol=1e-10)
    assert np.abs(got[0][-1] - f0).max() > 0.5  # it did train
    if averaged:
        kron = [np.kron(a, np.eye(k)) for a in (phi @ phi.T, phi_t @ phi.T)]
        full = kernel_trajectory(*kron, f0, f0_t, y, lr, LOG, **kw)
        np.testing.assert_allclose(full[0], got[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(full[1], got[1], rtol=0, atol=1e-12)


def test_iteration_is_deterministic_and_follows_the_seed():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((8, 8))
    k, f0, y = a @ a.T / 8, rng.standard_normal(8), np.sign(rng.standard_normal(8))
    kw = {"optimizer": "sgd", "loss": "xent", "batch_size": 3}
    first = kernel_trajectory(k, None, f0, None, y, 0.5, [20], seed=0, **kw)
    assert first[1] is None
    np.testing.assert_array_equal(
        first[0], kernel_trajectory(k, None, f0, None, y, 0.5, [20], **kw)[0]
    )
    assert not np.array_equal(
        first[0], kernel_trajectory(k, None, f0, None, y, 0.5, [20], seed=1, **kw)[0]
    )


def test_adam_has_no_kernel_form_and_bad_shapes_are_one_line_errors():
    k, f0 = np.eye(3), np.zeros(3)
    assert not has_kernel_form("adam") and has_kernel_form("momentum")
    with pytest.raises(ValueError, match=r"optimizer='adam' has no constant-kernel form"):
        kernel_trajectory(k, None, f0, None, f0, 0.1, [1], optimizer="adam")
    with pytest.raises(ValueError, match=r"k_train has shape \(2, 2\): expected one of"):
        kernel_trajectory(np.eye(2), None, f0, None, f0, 0.1, [1])
    with pytest.raises(ValueError, match=r"k_test_train and f0_test go together"):
        kernel_trajectory(k, k, f0, None, f0, 0.1, [1])
    with pytest.raises(ValueError, match=r"batch_size=None is invalid for optimizer='sgd'"):
        kernel_trajectory(k, None, f0, None, f0, 0.1, [1], optimizer="sgd")
