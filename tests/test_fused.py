"""The compiled (numba) paths against the NumPy reference: the fused gradient-descent step of a
one-hidden-layer network with its linearisation, the fused evaluation of such a network and its
linearisation on many inputs, and the fused features of the empirical NTK."""

import numpy as np
import pytest

import ntk_sweep.core.network as network
import ntk_sweep.core.training as training
from ntk_sweep.core.kernels import empirical_ntk
from ntk_sweep.core.network import (
    ACTIVATIONS,
    MLP,
    PARAMETERIZATIONS,
    Linearization,
    forward,
    fused_available,
    init_params,
)
from ntk_sweep.core.training import gd_trajectory, use_fused

pytestmark = pytest.mark.skipif(not fused_available(), reason="numba is not installed")

LOG = [0, 1, 2, 7, 15]


def trajectories(net, x, y, lr, steps=15, log=LOG):
    params0 = init_params(net, 3)
    return [
        list(gd_trajectory(net, params0, x, y, lr, steps, log, backend=backend))
        for backend in ("numpy", "fused")
    ]


def arrays(state):
    out = [state.f_train, state.f_lin_train]
    for w, b in state.params + state.delta_lin:
        out += [w, b]
    return out


def assert_states_close(ref, got, rtol):
    assert [s.step for s in ref] == [s.step for s in got]
    for a, b in zip(ref, got, strict=True):
        assert a.diverged == b.diverged
        assert b.loss == pytest.approx(a.loss, rel=rtol, abs=1e-300)
        assert b.loss_lin == pytest.approx(a.loss_lin, rel=rtol, abs=1e-300)
        for u, v in zip(arrays(a), arrays(b), strict=True):
            assert u.shape == v.shape and u.dtype == v.dtype
            scale = max(np.abs(u).max(), np.finfo(u.dtype).tiny)
            assert np.abs(u - v).max() <= rtol * scale


# (input_dim, N, width): one input and N <= 4 (the single-pass kernel), one input and several
# groups of four samples, several inputs (the general kernel); widths that span several blocks
SHAPES = [(1, 4, 37), (1, 3, 2100), (1, 7, 50), (3, 5, 300)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "d{}-n{}-w{}".format(*s))
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_trajectory_equals_numpy(activation, parameterization, shape):
    d, n, width = shape
    rng = np.random.default_rng(d * 100 + n)
    net = MLP(d, width, 1, activation, parameterization, sigma_w=1.3, sigma_b=0.5)
    x, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    # half the largest stable learning rate 2N / lambda_max (the kernel grows with width in
    # the standard parameterization)
    lam = np.linalg.eigvalsh(empirical_ntk(net, init_params(net, 3), x))[-1]
    lr = 0.5 * 2 * n / lam / net.lr_scale
    assert use_fused(net)
    ref, got = trajectories(net, x, y, lr)
    assert ref[-1].loss < ref[0].loss  # it trained
    assert_states_close(ref, got, rtol=1e-12)


def test_fused_trajectory_float32():
    rng = np.random.default_rng(0)
    net = MLP(1, 3000, 1, "erf", "ntk", sigma_b=1.0, dtype="float32")
    x, y = rng.uniform(-1, 1, (4, 1)), rng.standard_normal(4)
    ref, got = trajectories(net, x, y, 0.5)
    assert_states_close(ref, got, rtol=2e-5)


def test_fused_trajectory_is_deterministic_and_independent_of_the_thread_count():
    import numba

    rng = np.random.default_rng(1)
    net = MLP(1, 5000, 1, "relu", "ntk", sigma_b=1.0)
    x, y = rng.uniform(0, 1, (4, 1)), rng.standard_normal(4)
    params0 = init_params(net, 0)

    def run():
        return list(gd_trajectory(net, params0, x, y, 0.3, 20, [0, 5, 20], backend="fused"))

    serial = run()
    default, threads = training.FUSED_PARALLEL_WORK, numba.get_num_threads()
    training.FUSED_PARALLEL_WORK = 0  # the blocks shared among threads
    try:
        threaded = run()
        numba.set_num_threads(1)
        one_thread = run()
    finally:
        training.FUSED_PARALLEL_WORK = default
        numba.set_num_threads(threads)
    for a, b, c, d in zip(serial, run(), threaded, one_thread, strict=True):
        for u, v, w, z in zip(arrays(a), arrays(b), arrays(c), arrays(d), strict=True):
            np.testing.assert_array_equal(u, v)  # the same path gives the same bits
            np.testing.assert_array_equal(w, z)  # whatever the number of threads
            # the threaded kernel is compiled separately: the same to rounding
            np.testing.assert_allclose(w, u, rtol=0, atol=1e-13 * np.abs(u).max())


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_fused_trajectory_detects_divergence(activation):
    rng = np.random.default_rng(4)
    net = MLP(1, 20, activation=activation, sigma_b=1.0)
    x, y = rng.uniform(0, 1, (4, 1)), rng.standard_normal(4)
    ref, got = trajectories(net, x, y, 1e4, steps=500, log=[0, 500])
    assert got[-1].diverged and not np.isfinite(got[-1].loss)
    assert got[-1].step == ref[-1].step < 500


def test_backend_choice():
    assert use_fused(MLP(1, 10))
    assert not use_fused(MLP(1, 10), "numpy")
    assert not use_fused(MLP(1, 10, depth=2))  # deeper networks: NumPy (matmul bound)
    net2 = MLP(1, 10, depth=2)
    p = init_params(net2, 0)
    with pytest.raises(ValueError, match="backend='fused' needs depth=1"):
        next(gd_trajectory(net2, p, np.ones((2, 1)), np.ones(2), 0.1, 2, [0], backend="fused"))
    with pytest.raises(ValueError, match="backend='gpu' is invalid"):
        next(gd_trajectory(net2, p, np.ones((2, 1)), np.ones(2), 0.1, 2, [0], backend="gpu"))
    with pytest.raises(ValueError, match="backend='gpu' is invalid"):
        empirical_ntk(net2, p, np.ones((2, 1)), backend="gpu")


@pytest.mark.parametrize("depth, width", [(1, 40), (2, 80)])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_ntk_equals_numpy(activation, parameterization, depth, width):
    rng = np.random.default_rng(depth)
    net = MLP(3, width, depth, activation, parameterization, sigma_w=1.2, sigma_b=0.4)
    params = init_params(net, 1)
    x1, x2 = rng.standard_normal((6, 3)), rng.standard_normal((5, 3))
    for args in ((x1,), (x2, x1)):
        for chunk in (None, 7):  # one chunk, and uneven chunks of the last hidden layer
            ref = empirical_ntk(net, params, *args, chunk_size=chunk, backend="numpy")
            got = empirical_ntk(net, params, *args, chunk_size=chunk, backend="fused")
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


# The fused evaluation of the network and its linearised model (network.fused_evaluation, used
# by Linearization.evaluate for batches of several row blocks)


def _eval_case(
    activation, parameterization, outputs, dtype="float64", alpha=None, width=1100, input_dim=3
):
    """A net, theta0, theta, delta = theta - theta0 and inputs; widths over several blocks of
    units (FUSED_EVAL_BLOCK = 512)."""
    net = MLP(
        input_dim,
        width,
        1,
        activation,
        parameterization,
        sigma_w=1.3,
        sigma_b=0.5,
        dtype=dtype,
        alpha=alpha,
        outputs=outputs,
    )
    params0, params = init_params(net, 0), init_params(net, 1)
    # theta near theta0, as after training
    params = [
        (w0 + 0.1 * (w - w0), b0 + 0.1 * (b - b0))
        for (w, b), (w0, b0) in zip(params, params0, strict=True)
    ]
    delta = [(w - w0, b - b0) for (w, b), (w0, b0) in zip(params, params0, strict=True)]
    x = np.random.default_rng(5).standard_normal((23, input_dim))
    return net, params0, params, delta, x


def _reference(net, params0, params, delta, x):
    lin = Linearization(net, params0, x, cached=False)
    return lin, (lin.centre(forward(net, params, x)), lin.predict(delta))


def _assert_close(got, ref, rtol):
    for u, v in zip(got, ref, strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype
        assert np.abs(u - v).max() <= rtol * np.abs(v).max()


@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_evaluation_equals_numpy(monkeypatch, activation, parameterization, outputs):
    monkeypatch.setattr(network, "BLOCK_ELEMENTS", 5000)  # several row blocks at this width
    # plain and centred; one input (the paper's network) and three
    for alpha, d in [(None, 3), (1.7, 3), (None, 1), (1.7, 1)]:
        net, params0, params, delta, x = _eval_case(
            activation, parameterization, outputs, alpha=alpha, input_dim=d
        )
        assert len(network.row_blocks(net, len(x))) > 1
        assert network.use_fused_evaluation(net, len(x))
        lin, ref = _reference(net, params0, params, delta, x)
        _assert_close(lin.evaluate(params, delta), ref, rtol=1e-12)
        _assert_close(lin.evaluate(params, delta, backend="fused"), ref, rtol=1e-12)
        f, f_at0, jvp0 = network.fused_evaluation(net, params, params0, x, delta)
        _assert_close((f, f_at0), (forward(net, params, x), lin.f_init), rtol=1e-12)


def test_fused_evaluation_float32(monkeypatch):
    monkeypatch.setattr(network, "BLOCK_ELEMENTS", 5000)
    for outputs, d in [(1, 1), (1, 3), (3, 3)]:
        net, params0, params, delta, x = _eval_case(
            "erf", "ntk", outputs, dtype="float32", input_dim=d
        )
        lin, ref = _reference(net, params0, params, delta, x)
        _assert_close(lin.evaluate(params, delta), ref, rtol=1e-5)


def test_fused_evaluation_only_for_several_row_blocks(monkeypatch):
    """One row block, backend numpy or two hidden layers: the NumPy path's own bits."""
    net, params0, params, delta, x = _eval_case("tanh", "ntk", 3)
    assert len(network.row_blocks(net, len(x))) == 1 and not network.use_fused_evaluation(net, 23)
    lin, ref = _reference(net, params0, params, delta, x)
    for u, v in zip(lin.evaluate(params, delta), ref, strict=True):
        np.testing.assert_array_equal(u, v)
    monkeypatch.setattr(network, "BLOCK_ELEMENTS", 5000)
    assert not network.use_fused_evaluation(net, 23, "numpy")
    lin, ref = _reference(net, params0, params, delta, x)
    for u, v in zip(lin.evaluate(params, delta, "numpy"), ref, strict=True):
        np.testing.assert_array_equal(u, v)
    deep = MLP(3, 1100, 2)
    assert not network.use_fused_evaluation(deep, 23)


def test_fused_evaluation_centred_is_zero_at_init(monkeypatch):
    monkeypatch.setattr(network, "BLOCK_ELEMENTS", 5000)
    net, params0, _, _, x = _eval_case("relu", "mean_field", 1, alpha=3.0)
    lin = Linearization(net, params0, x, cached=False)
    f, f_lin = lin.evaluate(params0, network.zeros_like(params0))
    assert not f.any() and not f_lin.any()


def test_fused_evaluation_is_deterministic_and_independent_of_the_thread_count(monkeypatch):
    import numba

    monkeypatch.setattr(network, "BLOCK_ELEMENTS", 5000)
    net, params0, params, delta, x = _eval_case("erf", "standard", 3, width=2000)

    def run():
        return network.fused_evaluation(net, params, params0, x, delta)

    serial, again = run(), run()
    threads = numba.get_num_threads()
    monkeypatch.setattr(network, "FUSED_EVAL_PARALLEL_WORK", 0)  # rows shared among threads
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        threaded = run()
        numba.set_num_threads(1)
        one_thread = run()
    finally:
        numba.set_num_threads(threads)
    for u, v, w, z in zip(serial, again, threaded, one_thread, strict=True):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(w, z)
        # the threaded kernel is compiled separately: the same to rounding
        np.testing.assert_allclose(w, u, rtol=0, atol=1e-13 * np.abs(u).max())


def test_measure_takes_the_fused_evaluation(monkeypatch):
    """measure's test predictions through the fused evaluation where the schedule's backend
    allows it, equal to the NumPy path's to rounding."""
    from ntk_sweep.core.measure import Schedule, measure
    from ntk_sweep.dataset_sources import load_dataset

    monkeypatch.setattr(network, "BLOCK_ELEMENTS", 200)  # several row blocks of the 15 inputs
    calls = []
    fused = network.fused_evaluation
    monkeypatch.setattr(network, "fused_evaluation", lambda *a: calls.append(1) or fused(*a))
    data = load_dataset("teacher", seed=2, n_train=10, n_test=15, input_dim=3)
    net = MLP(input_dim=3, width=64, depth=1, activation="tanh", sigma_b=0.5)
    recs = {}
    for backend in ("numpy", "auto"):
        schedule = Schedule(lr=0.3, steps=20, log_steps=(0, 5, 20), backend=backend)
        recs[backend] = measure(net, data, schedule, seed=4)
        assert len(calls) == (0 if backend == "numpy" else 3)
    for key in ("f_test", "f_lin_test"):
        ref, got = getattr(recs["numpy"], key), getattr(recs["auto"], key)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
