"""The kernel drift's split into activation flips and the smooth rest (core/flips.py,
docs/metrics.md "Activation flips"), against computations that share no code with it: a per-unit
loop over explicit Jacobian columns, and the Jacobian of the network with its derivative pattern
frozen, by finite differences of a forward pass written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from ntk_sweep.core import kernels
from ntk_sweep.core.flips import flip_coherence, flip_metrics, flip_names
from ntk_sweep.core.measure import Schedule, history_names, measure
from ntk_sweep.core.network import MLP, forward_cache, gd_step, init_params
from ntk_sweep.dataset_sources import load_dataset
from tests.test_network import flatten, unflatten

ACT = {"relu": lambda z: np.maximum(z, 0), "erf": erf}
DACT = {
    "relu": lambda z: (z > 0).astype(float),
    "erf": lambda z: 2 / math.sqrt(math.pi) * np.exp(-z * z),
}


def trained(depth, activation="relu", outputs=1, steps=150, width=10):
    """A small network, its initial and trained parameters, and the inputs it was trained on:
    large steps, so that units flip in every layer."""
    rng = np.random.default_rng(depth)
    net = MLP(3, width, depth, activation, sigma_b=1.0, outputs=outputs)
    x = rng.standard_normal((5, 3))
    y = rng.standard_normal((5, outputs) if outputs > 1 else 5)
    p0 = init_params(net, 2)
    p = p0
    for _ in range(steps):
        p = gd_step(net, p, x, y, 1.0)[1]
    return net, x, p0, p


def pre_activations(net, params, x):
    """z^l of every hidden layer, (N, width) each: a forward pass written out here."""
    c, zs, h = net.multipliers, [], x
    for l in range(net.depth):
        w, b = params[l]
        zs.append(c[l] * np.einsum("ij,jk->ik", h, w) + b)
        h = ACT[net.activation](zs[-1])
    return zs


def frozen_forward(net, params, x, at, pattern):
    """The network whose hidden layer l computes `phi(zbar) + s (z - zbar)`, with `zbar` the
    pre-activations at parameters `at` (constants) and `s` the frozen `pattern`: its value at
    `at` is the network's, its Jacobian there has phi' replaced by `pattern`. Affine in every
    single parameter, so a central difference of any step is exact up to rounding."""
    zbar = pre_activations(net, at, x)
    c, cb, h = net.multipliers, net.bias_multipliers, x
    for l in range(net.depth):
        w, b = params[l]
        z = c[l] * (h @ w) + b
        h = ACT[net.activation](zbar[l]) + pattern[l] * (z - zbar[l])
    w, b = params[-1]
    return (c[-1] * (h @ w) + cb[-1] * b).reshape(-1)  # sample-major for K outputs


def frozen_ntk(net, params, x, pattern):
    """J J^T of `frozen_forward` at `params`, J by central differences with step 1."""
    theta = flatten(params)
    cols = []
    for k in range(len(theta)):
        e = np.zeros_like(theta)
        e[k] = 1.0
        up = frozen_forward(net, unflatten(theta + e, params), x, params, pattern)
        down = frozen_forward(net, unflatten(theta - e, params), x, params, pattern)
        cols.append((up - down) / 2)
    jac = np.array(cols).T
    return jac @ jac.T


def unit_gradients(net, params, x, pattern):
    """`G_l[i, u]` = df(x_i)/dz^l_u of every hidden layer with phi' = `pattern`, K = 1: a loop
    over samples and units, top layer first."""
    c, n = net.multipliers, len(x)
    w_out = params[-1][0][:, 0]
    grads = [None] * net.depth
    top = np.array(
        [[c[-1] * w_out[u] * pattern[-1][i, u] for u in range(net.width)] for i in range(n)]
    )
    grads[-1] = top
    for l in range(net.depth - 2, -1, -1):
        w = params[l + 1][0]
        above = grads[l + 1]
        grads[l] = np.array(
            [
                [
                    pattern[l][i, u]
                    * c[l + 1]
                    * sum(w[u, v] * above[i, v] for v in range(net.width))
                    for u in range(net.width)
                ]
                for i in range(n)
            ]
        )
    return grads


def per_unit_flip_part(net, params, x, pattern, pattern0):
    """`sum_l sum_u (J_u J_u^T - J0_u J0_u^T)` over every hidden unit's incoming weights and
    bias, `J_u[i] = G_l[i, u] (c_l h^{l-1}_i, c^b_l)` with the current / initial pattern (the
    readout layer's columns do not depend on the pattern)."""
    c, cb = net.multipliers, net.bias_multipliers
    g, g0 = unit_gradients(net, params, x, pattern), unit_gradients(net, params, x, pattern0)
    zs = pre_activations(net, params, x)
    inputs = [x] + [ACT[net.activation](z) for z in zs[:-1]]
    total = np.zeros((len(x), len(x)))
    for l in range(net.depth):
        feats = np.hstack([c[l] * inputs[l], np.full((len(x), 1), cb[l])])
        for u in range(net.width):
            j, j0 = g[l][:, u : u + 1] * feats, g0[l][:, u : u + 1] * feats
            total += j @ j.T - j0 @ j0.T
    return total


def cache_slopes(net, params, x):
    return forward_cache(net, params, x).slopes


def patterns(net, params, x):
    return [DACT[net.activation](z) for z in pre_activations(net, params, x)]


@pytest.mark.parametrize("depth", [1, 2])
def test_flip_part_matches_a_per_unit_loop_and_the_frozen_pattern_jacobian(depth):
    net, x, p0, p = trained(depth)
    s0, s_t = patterns(net, p0, x), patterns(net, p, x)
    k0, k_t = kernels.empirical_ntk(net, p0, x), kernels.empirical_ntk(net, p, x)
    k_frozen = kernels.empirical_ntk(net, p, x, slopes=forward_cache(net, p0, x).slopes)
    # (b) the frozen-pattern kernel, independently
    want = frozen_ntk(net, p, x, s0)
    assert np.linalg.norm(k_frozen - want) <= 1e-12 * np.linalg.norm(want)
    # with the current pattern the same construction gives the plain kernel
    assert np.linalg.norm(frozen_ntk(net, p, x, s_t) - k_t) <= 1e-12 * np.linalg.norm(k_t)
    # (a) the flip part as a sum over units
    loop = per_unit_flip_part(net, p, x, s_t, s0)
    assert np.linalg.norm(loop) > 1e-3 * np.linalg.norm(k0)  # units did flip
    assert np.linalg.norm((k_t - k_frozen) - loop) <= 1e-12 * np.linalg.norm(loop)
    # flip + smooth = the total change, and the logged norms are those of the two parts
    flip, smooth = k_t - want, want - k0
    assert np.linalg.norm(flip + smooth - (k_t - k0)) <= 1e-12 * np.linalg.norm(k_t - k0)
    mt = flip_metrics(net, p, x, forward_cache(net, p0, x).slopes, k_t, k0)
    norm0 = np.linalg.norm(k0)
    assert mt["kernel_drift_flip"] == pytest.approx(np.linalg.norm(flip) / norm0, rel=1e-11)
    assert mt["kernel_drift_smooth"] == pytest.approx(np.linalg.norm(smooth) / norm0, rel=1e-11)
    assert math.isnan(mt["kernel_drift_phi_prime"])


@pytest.mark.parametrize("depth", [1, 2])
def test_flipped_units_are_counted_per_layer(depth):
    net, x, p0, p = trained(depth)
    z0, z_t = pre_activations(net, p0, x), pre_activations(net, p, x)
    mt = flip_metrics(
        net,
        p,
        x,
        forward_cache(net, p0, x).slopes,
        kernels.empirical_ntk(net, p, x),
        kernels.empirical_ntk(net, p0, x),
    )
    total = 0
    for l in range(depth):
        count = sum(
            any((z0[l][i, u] > 0) != (z_t[l][i, u] > 0) for i in range(len(x)))
            for u in range(net.width)
        )
        assert count > 0 and mt[f"flipped_units_layer{l + 1}"] == count
        total += count
    assert mt["flipped_units"] == total
    assert sorted(mt) == sorted(flip_names(depth))


def unit_contributions(net, params, x, pattern, pattern0, outputs="full"):
    """F_u of every last-layer unit (docs/metrics.md): `(g_u g_u^T - g0_u g0_u^T) * P` per output
    pair, formed with np.kron, or its output average."""
    c, cb, L, k = net.multipliers, net.bias_multipliers, net.depth, net.outputs
    h = x if L == 1 else ACT[net.activation](pre_activations(net, params, x)[L - 2])
    p_in = c[L - 1] ** 2 * h @ h.T + cb[L - 1] ** 2
    out = []
    for u in range(net.width):
        s, r = pattern[-1][:, u], pattern0[-1][:, u]
        d = (np.outer(s, s) - np.outer(r, r)) * p_in
        w = c[L] * params[L][0][u]
        out.append(np.kron(d, np.outer(w, w)) if outputs == "full" else d * (w @ w) / k)
    return out


@pytest.mark.parametrize(
    ("depth", "outputs", "form"), [(1, 1, "full"), (2, 1, "full"), (1, 3, "full"), (1, 3, "mean")]
)
def test_flip_coherence_against_explicit_unit_contributions(depth, outputs, form):
    net, x, p0, p = trained(depth, outputs=outputs)
    s0, s_t = patterns(net, p0, x), patterns(net, p, x)
    parts = unit_contributions(net, p, x, s_t, s0, form)
    want = np.linalg.norm(sum(parts)) / sum(np.linalg.norm(f) for f in parts)
    cache = forward_cache(net, p, x)
    got = flip_coherence(net, p, cache.inputs[depth - 1], cache.slopes[-1], s0[-1], form)
    assert 0 < got < 1 and got == pytest.approx(want, rel=1e-12)
    k0 = kernels.empirical_ntk(net, p0, x, outputs=form)
    k_now = kernels.empirical_ntk(net, p, x, outputs=form)
    logged = flip_metrics(net, p, x, cache_slopes(net, p0, x), k_now, k0, form)["flip_coherence"]
    assert logged == pytest.approx(want, rel=1e-12)
    if depth == 1:  # the F_u sum to the whole flip part
        k_t = kernels.empirical_ntk(net, p, x, outputs=form)
        k_frozen = kernels.empirical_ntk(net, p, x, outputs=form, slopes=list(s0))
        assert np.linalg.norm(k_t - k_frozen - sum(parts)) <= 1e-12 * np.linalg.norm(sum(parts))


@pytest.mark.parametrize("depth", [1, 2])
def test_one_flipped_unit_is_fully_coherent(depth):
    net = MLP(3, 10, depth, "relu", sigma_b=1.0)
    x = np.random.default_rng(0).standard_normal((6, 3))
    p0 = init_params(net, 1)
    z = pre_activations(net, p0, x)[-1]
    u = 4
    w, b = p0[depth - 1]
    b = b.copy()
    b[u] -= np.median(z[:, u])  # unit u of the last hidden layer changes sign at some inputs
    p = [*p0[: depth - 1], (w, b), p0[-1]]
    mt = flip_metrics(
        net,
        p,
        x,
        forward_cache(net, p0, x).slopes,
        kernels.empirical_ntk(net, p, x),
        kernels.empirical_ntk(net, p0, x),
    )
    assert mt["flipped_units"] == mt[f"flipped_units_layer{depth}"] == 1
    assert mt["flip_coherence"] == pytest.approx(1, abs=1e-12)


def test_smooth_activation_has_no_flips_and_logs_the_slope_change_part():
    net, x, p0, p = trained(2, "erf")
    s0 = patterns(net, p0, x)
    k0, k_t = kernels.empirical_ntk(net, p0, x), kernels.empirical_ntk(net, p, x)
    mt = flip_metrics(net, p, x, forward_cache(net, p0, x).slopes, k_t, k0)
    assert mt["flipped_units"] == mt["flipped_units_layer1"] == mt["flipped_units_layer2"] == 0
    for name in ("kernel_drift_flip", "kernel_drift_smooth", "flip_coherence"):
        assert math.isnan(mt[name]), name
    want = np.linalg.norm(k_t - frozen_ntk(net, p, x, s0)) / np.linalg.norm(k0)
    assert want > 0 and mt["kernel_drift_phi_prime"] == pytest.approx(want, rel=1e-11)


def test_linear_network_drifts_only_smoothly():
    x = np.random.default_rng(0).standard_normal((5, 3))
    net = MLP(3, 10, 2, "linear", sigma_b=1.0)
    p0 = init_params(net, 0)
    p = gd_step(net, p0, x, np.ones(5), 0.5)[1]
    k0, k_t = kernels.empirical_ntk(net, p0, x), kernels.empirical_ntk(net, p, x)
    mt = flip_metrics(net, p, x, forward_cache(net, p0, x).slopes, k_t, k0)
    assert mt["flipped_units"] == 0 and mt["kernel_drift_flip"] == 0
    assert mt["kernel_drift_smooth"] == kernels.kernel_drift(k_t, k0) > 0


@pytest.mark.parametrize(
    ("task", "form"), [(None, "full"), ("multiclass", "full"), ("multiclass", "mean")]
)
def test_measure_logs_the_split_at_every_log_step(task, form):
    if task is None:
        data = load_dataset("sine", seed=0, n_train=8, n_test=5)
    else:  # 10 outputs
        data = load_dataset("digits", seed=0, n_train=8, n_test=5, task=task)
    net = MLP(data.x_train.shape[1], 24, 2, "relu", sigma_b=1.0, outputs=data.n_outputs)
    lr = 0.5 if task is None else 0.2  # below 2N / lambda_max
    schedule = Schedule(lr=lr, steps=60, log_steps=(0, 5, 60), kernel_form=form)
    rec = measure(net, data, schedule, seed=0)
    names = history_names(net.n_layers, data.is_classification)
    assert set(flip_names(2)) <= set(names) == set(rec.history)
    h = rec.history
    assert h["kernel_drift_flip"][0] == h["kernel_drift_smooth"][0] == h["flipped_units"][0] == 0
    assert h["flipped_units"][-1] > 0
    drift, flip, smooth = h["kernel_drift"], h["kernel_drift_flip"], h["kernel_drift_smooth"]
    # the parts of one matrix identity: triangle inequalities
    assert np.all(drift <= flip + smooth + 1e-12) and np.all(np.abs(flip - smooth) <= drift + 1e-12)
    assert np.all(np.isnan(h["kernel_drift_phi_prime"]))
