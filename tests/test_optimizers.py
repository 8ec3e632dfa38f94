"""The optimisers against hand-written recursions and the seeded minibatch schedule."""

import math

import numpy as np
import pytest

from ntk_sweep.core.optimizers import Optimizer, check_batch_size, minibatches


def as_params(vector):
    """A vector as a one-layer Params list (W of shape (n, 1), b of shape (1,))."""
    return [(vector[:-1, None].copy(), vector[-1:].copy())]


def as_vector(params):
    return np.concatenate([params[0][0][:, 0], params[0][1]])


def run(opt, theta0, grads):
    params, state = as_params(theta0), opt.init(as_params(theta0))
    for g in grads:
        params, state = opt.step(params, as_params(g), state)
    return as_vector(params)


def test_momentum_is_the_heavy_ball_sum():
    """theta_t = theta_0 - lr sum_{s<t} v_s with v_s = sum_{r<=s} mu^(s-r) g_r."""
    rng = np.random.default_rng(0)
    theta0, grads = rng.standard_normal(5), rng.standard_normal((6, 5))
    lr, mu = 0.3, 0.8
    expected = theta0 - lr * sum(
        sum(mu ** (s - r) * grads[r] for r in range(s + 1)) for s in range(len(grads))
    )
    got = run(Optimizer("momentum", lr, mu), theta0, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-14)
    # mu = 0 is plain gradient descent, bit for bit
    gd = run(Optimizer("gd", lr), theta0, grads)
    np.testing.assert_array_equal(run(Optimizer("momentum", lr, 0.0), theta0, grads), gd)
    np.testing.assert_array_equal(gd, run(Optimizer("sgd", lr), theta0, grads))


def test_adam_matches_a_scalar_loop_and_its_first_step_is_lr_sign():
    rng = np.random.default_rng(1)
    theta0, grads = rng.standard_normal(4), rng.standard_normal((5, 4))
    lr, (b1, b2), eps = 0.01, (0.9, 0.999), 1e-8
    expected = []
    for i, theta in enumerate(theta0):
        m = s = 0.0
        for t, g in enumerate(grads[:, i], start=1):
            m, s = b1 * m + (1 - b1) * g, b2 * s + (1 - b2) * g * g
            theta -= lr * (m / (1 - b1**t)) / (math.sqrt(s / (1 - b2**t)) + eps)
        expected.append(theta)
    got = run(Optimizer("adam", lr), theta0, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15)
    # the per-parameter normalisation: one step moves every parameter by lr, whatever |g|
    scales = np.array([1e-3, 1.0, -1e3, 5.0])  # |g| >> eps = 1e-8
    first = run(Optimizer("adam", lr), theta0, [scales])
    np.testing.assert_allclose(theta0 - first, lr * np.sign(scales), rtol=1e-5)


def test_minibatches_are_epoch_permutations_seeded_and_prefix_stable():
    batches = list(minibatches(10, 3, 9, seed=4))
    assert [len(b) for b in batches] == [3, 3, 3, 1] * 2 + [3]
    for epoch in (batches[:4], batches[4:8]):
        np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), np.arange(10))
    assert all(np.all(np.diff(b) > 0) for b in batches)  # sorted, no repeats
    again = list(minibatches(10, 3, 9, seed=4))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = list(minibatches(10, 3, 9, seed=5))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))
    # a shorter run sees the first batches of a longer one
    assert all(
        np.array_equal(a, b) for a, b in zip(minibatches(10, 3, 5, 4), batches[:5], strict=True)
    )
    assert all(b == slice(None) for b in minibatches(10, None, 3, 4))
    assert all(b == slice(None) for b in minibatches(10, 10, 3, 4))


def test_bad_optimizer_settings_are_one_line_errors():
    with pytest.raises(ValueError, match=r"optimizer='rmsprop' is invalid: allowed values are"):
        Optimizer("rmsprop", 0.1)
    with pytest.raises(ValueError, match=r"momentum=1.0 is invalid: expected 0 <= momentum < 1"):
        Optimizer("momentum", 0.1, 1.0)
    with pytest.raises(ValueError, match=r"batch_size=4 is invalid for optimizer='gd'"):
        check_batch_size("gd", 4, 10)
    with pytest.raises(ValueError, match=r"batch_size=None is invalid for optimizer='sgd'"):
        check_batch_size("sgd", None, 10)
    with pytest.raises(ValueError, match=r"batch_size=11 is invalid: expected an integer in"):
        check_batch_size("momentum", 11, 10)
    with pytest.raises(ValueError, match=r"batch_size=0 is invalid"):
        check_batch_size("adam", 0, 10)
