"""`train_trajectory`: the network and its linearisation trained by SGD/momentum on the
same seeded minibatches, against a direct first-order Taylor model built from an explicit
Jacobian and trained by the test's own loop; reruns bit-identical."""

import numpy as np
import pytest

from ntk_sweep.core.network import MLP, Linearization, gradient, init_params
from ntk_sweep.core.optimizers import minibatches
from ntk_sweep.core.training import gd_trajectory, train_trajectory
from tests.test_network import explicit_jacobian, flatten, unflatten

N, BATCH, STEPS, LOG = 10, 3, 40, [0, 1, 7, 23, 40]
MU = 0.8


def problem(loss, seed=0):
    rng = np.random.default_rng(seed)
    x, x_test = rng.standard_normal((N, 2)), rng.standard_normal((5, 2))
    y = rng.standard_normal(N)
    return x, x_test, (np.sign(y) if loss == "xent" else y)


def naive_loss_gradient(loss, f, y):
    """dL/df of the batch's mean loss, written out: (f - y)/B, or -y e^(-yf)/(1 + e^(-yf))/B."""
    if loss == "mse":
        return (f - y) / len(f)
    return -y * np.exp(-y * f) / (1 + np.exp(-y * f)) / len(f)


def taylor_model(net, params0, x, x_test, y, lr, optimizer, loss):
    """The first-order Taylor model `f = f0 + J0 (theta - theta0)` with J0 an explicit N x P
    matrix, trained by hand on `minibatches(N, BATCH, STEPS, 0)`: outputs at the LOG steps."""
    lin, lin_test = Linearization(net, params0, x), Linearization(net, params0, x_test)
    j0, j0_test = explicit_jacobian(net, params0, x), explicit_jacobian(net, params0, x_test)
    d, v, out = np.zeros(j0.shape[1]), np.zeros(j0.shape[1]), {}
    batches = minibatches(N, BATCH, STEPS, seed=0)
    for step in range(STEPS + 1):
        f = lin.f0 + j0 @ d
        out[step] = (f, lin_test.f0 + j0_test @ d, d.copy())
        if step == STEPS:
            break
        b = next(batches)
        g = j0[b].T @ naive_loss_gradient(loss, f[b], y[b])
        v = MU * v + g if optimizer == "momentum" else g
        d = d - lr * net.lr_scale * v
    return [out[s] for s in LOG]


@pytest.mark.parametrize(
    "optimizer, loss, net",
    [
        ("sgd", "mse", MLP(2, 24, 2, "erf", "ntk", sigma_b=0.5)),
        ("momentum", "mse", MLP(2, 24, 1, "tanh", "mean_field", sigma_b=0.5)),
        ("sgd", "xent", MLP(2, 24, 1, "relu", "standard", sigma_b=0.5)),
        ("momentum", "xent", MLP(2, 24, 2, "erf", "ntk", sigma_b=0.5)),
        ("momentum", "xent", MLP(2, 24, 1, "erf", "ntk", sigma_b=0.5, alpha=2.0)),
    ],
    ids=["sgd-mse", "momentum-mse-mf", "sgd-xent", "momentum-xent", "momentum-xent-alpha"],
)
def test_linearised_model_equals_a_direct_taylor_model_on_the_same_batches(optimizer, loss, net):
    """Equal to 1e-9 at every log step."""
    x, x_test, y = problem(loss)
    params0 = init_params(net, 1)
    lr = 0.1 / net.lr_scale  # the same effective step in every parameterization
    states = list(
        train_trajectory(
            net, params0, x, y, lr, STEPS, LOG, optimizer=optimizer, loss=loss,
            batch_size=BATCH, momentum=MU, seed=0,
        )
    )  # fmt: skip
    expected = taylor_model(net, params0, x, x_test, y, lr, optimizer, loss)
    lin_test = Linearization(net, params0, x_test)
    for state, (f, f_test, d) in zip(states, expected, strict=True):
        np.testing.assert_allclose(state.f_lin_train, f, rtol=0, atol=1e-9)
        np.testing.assert_allclose(lin_test.predict(state.delta_lin), f_test, rtol=0, atol=1e-9)
        np.testing.assert_allclose(flatten(state.delta_lin), d, rtol=0, atol=1e-9)
    moved = np.abs(states[-1].f_lin_train - states[0].f_lin_train).max()
    assert moved > 0.1 and states[-1].loss_lin < states[0].loss_lin  # it did train


def test_network_under_minibatch_momentum_is_the_heavy_ball_on_batch_gradients():
    """The network's side against `network.gradient` on the batch's own forward pass."""
    x, _, y = problem("mse", seed=2)
    net = MLP(2, 16, 2, "erf", sigma_b=0.5)
    params0 = init_params(net, 0)
    (state,) = train_trajectory(
        net, params0, x, y, 0.3, 12, [12], optimizer="momentum", batch_size=4, momentum=MU
    )
    theta, v = flatten(params0), 0.0
    for b in minibatches(N, 4, 12, seed=0):
        v = MU * v + flatten(gradient(net, unflatten(theta, params0), x[b], y[b])[1])
        theta = theta - 0.3 * v
    np.testing.assert_allclose(flatten(state.params), theta, rtol=1e-12, atol=1e-14)


def test_full_batch_sgd_and_zero_momentum_are_gd_bit_for_bit():
    x, _, y = problem("mse")
    net = MLP(2, 16, 2, "relu", sigma_b=0.5)
    params0 = init_params(net, 0)
    ref = list(gd_trajectory(net, params0, x, y, 0.4, 20, [0, 5, 20], backend="numpy"))
    for kwargs in ({"optimizer": "sgd", "batch_size": N}, {"optimizer": "momentum", "momentum": 0}):
        got = list(train_trajectory(net, params0, x, y, 0.4, 20, [0, 5, 20], **kwargs))
        for a, b in zip(ref, got, strict=True):
            assert (a.loss, a.loss_lin, a.loss_max) == (b.loss, b.loss_lin, b.loss_max)
            np.testing.assert_array_equal(flatten(a.params), flatten(b.params))
            np.testing.assert_array_equal(flatten(a.delta_lin), flatten(b.delta_lin))


def test_seeded_reruns_are_bit_identical_and_seeds_differ():
    x, _, y = problem("xent")
    net = MLP(2, 16, 1, "erf", sigma_b=0.5)
    params0 = init_params(net, 0)

    def states(seed):
        return list(
            train_trajectory(
                net, params0, x, y, 0.5, 30, range(31), optimizer="momentum", loss="xent",
                batch_size=BATCH, seed=seed,
            )
        )  # fmt: skip

    first, again, other = states(3), states(3), states(4)
    for a, b in zip(first, again, strict=True):
        assert (a.loss, a.loss_lin, a.loss_max, a.loss_lin_max) == (
            b.loss, b.loss_lin, b.loss_max, b.loss_lin_max,
        )  # fmt: skip
        np.testing.assert_array_equal(flatten(a.params), flatten(b.params))
        np.testing.assert_array_equal(a.f_lin_train, b.f_lin_train)
    assert not np.array_equal(first[-1].f_train, other[-1].f_train)
    # the running maxima are those of the full-training-set losses over every step
    losses = np.array([s.loss for s in first])
    np.testing.assert_array_equal([s.loss_max for s in first], np.maximum.accumulate(losses))


def test_bad_training_settings_are_one_line_errors():
    x, _, y = problem("mse")
    net = MLP(2, 8)
    p = init_params(net, 0)
    cases = [
        ({"optimizer": "sgd", "batch_size": 2, "backend": "fused"}, r"backend='fused' serves"),
        ({"optimizer": "gd", "batch_size": 2}, r"batch_size=2 is invalid for optimizer='gd'"),
        ({"loss": "hinge"}, r"loss='hinge' is invalid: allowed values are mse, xent"),
        ({"optimizer": "lbfgs"}, r"optimizer='lbfgs' is invalid: allowed values are"),
        ({"optimizer": "momentum", "momentum": -0.1}, r"momentum=-0.1 is invalid"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            next(train_trajectory(net, p, x, y, 0.1, 3, [0], **kwargs))
