"""Training of a network next to its linearisation (MATH.md eqs. 2-3, sections 4-5):
`train_trajectory` (any optimiser of `optimizers`, any loss of `losses`, minibatches),
`gd_trajectory` (full-batch GD on the MSE) and its compiled one-hidden-layer path. Pure NumPy
(and numba); the app consumes the yielded `TrainState`s."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ntk_sweep.core.checks import check_choice, check_int, check_positive
from ntk_sweep.core.kernels import empirical_ntk
from ntk_sweep.core.losses import LOSSES, loss_gradient, loss_value
from ntk_sweep.core.network import (
    BACKENDS,
    MLP,
    ForwardCache,
    Linearization,
    Params,
    as_inputs,
    as_targets,
    forward_cache,
    fused_available,
    vjp,
    zeros_like,
)
from ntk_sweep.core.optimizers import Optimizer, check_batch_size, minibatches


@dataclass(frozen=True)
class TrainState:
    """The network and its linearisation after `step` optimiser steps; `loss`/`loss_lin` are the
    chosen loss on the full training set."""

    step: int
    params: Params
    delta_lin: Params
    f_train: np.ndarray
    f_lin_train: np.ndarray
    loss: float
    loss_lin: float
    diverged: bool
    # the largest loss of each model over every step so far, this one included (a catapult's
    # spike can fall between log steps); NaN/inf once a loss was
    loss_max: float = math.nan
    loss_lin_max: float = math.nan


def gd_trajectory(
    net: MLP,
    params0: Params,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    steps: int,
    log_steps: Iterable[int],
    *,
    backend: str = "auto",
) -> Iterator[TrainState]:
    """Train the network and its linearisation side by side by full-batch GD (eqs. 2-3) on the
    MSE loss: `train_trajectory` with `optimizer="gd"`, `loss="mse"`.

    Yields the state at every step in `log_steps` (0 = init, up to `steps`). If the network's
    loss becomes NaN or infinite, yields that state with `diverged=True` and stops.
    The effective learning rate is `lr * net.lr_scale`.

    `backend`: "numpy" (the reference: one NumPy operation at a time), "fused" (a compiled
    kernel that streams over the parameters once per step; one hidden layer only) or "auto"
    (fused where it applies, see `use_fused`). The two agree to rounding (~1e-13 relative in
    float64); a given network, data and backend always give bit-identical results.
    """
    yield from train_trajectory(net, params0, x, y, lr, steps, log_steps, backend=backend)


def train_trajectory(
    net: MLP,
    params0: Params,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    steps: int,
    log_steps: Iterable[int],
    *,
    optimizer: str = "gd",
    loss: str = "mse",
    batch_size: int | None = None,
    momentum: float = 0.9,
    seed: int = 0,
    backend: str = "auto",
) -> Iterator[TrainState]:
    """Train the network and its linearisation side by side by the same optimiser, on the same
    minibatches, with the same loss (`optimizers`, `losses`; MATH.md s.4-5: "the first-order
    Taylor model trained by the same GD").

    Step t draws its batch B_t from `optimizers.minibatches(N, batch_size, steps, seed)` (every
    sample when `batch_size` is None); each model's gradient is that of its mean loss on B_t.
    The yielded `loss`/`loss_lin` (and their running maxima) are full-training-set losses.
    Yields the state at every step in `log_steps` (0 = init, up to `steps`); if the network's
    loss becomes NaN or infinite, yields that state with `diverged=True` and stops. The
    effective learning rate is `lr * net.lr_scale`; `momentum` is heavy-ball mu (momentum only).

    `backend` as in `gd_trajectory`: the fused path serves gd + mse only; "auto" takes the NumPy
    path for every other combination, "fused" rejects them.
    """
    check_positive("lr", lr)
    check_choice("backend", backend, BACKENDS)
    check_choice("loss", loss, LOSSES)
    check_int("steps", steps, 1)
    log = set(int(s) for s in log_steps)
    if not log or min(log) < 0 or max(log) > steps:
        raise ValueError(f"log_steps must be a non-empty set of steps in [0, {steps}]")
    x = as_inputs(net, x)
    y = as_targets(net, x, y)
    check_batch_size(optimizer, batch_size, len(x))
    opt = Optimizer(optimizer, lr * net.lr_scale, momentum)
    plain_gd = optimizer == "gd" and loss == "mse"
    if backend == "fused" and not plain_gd:
        raise ValueError(
            f"backend='fused' serves optimizer='gd' with loss='mse' only (got optimizer="
            f"{optimizer!r}, loss={loss!r}): use backend=auto or numpy"
        )
    lin = Linearization(net, params0, x)
    if plain_gd and use_fused(net, backend):
        yield from _fused_trajectory(net, params0, x, y, opt.lr, steps, log, lin)
        return
    batches = minibatches(len(x), batch_size, steps, seed)
    yield from _numpy_trajectory(net, params0, x, y, opt, loss, steps, log, lin, batches)


def _numpy_trajectory(
    net: MLP,
    params0: Params,
    x: np.ndarray,
    y: np.ndarray,
    opt: Optimizer,
    loss: str,
    steps: int,
    log: set[int],
    lin: Linearization,
    batches: Iterator[np.ndarray | slice],
) -> Iterator[TrainState]:
    """`train_trajectory` one NumPy operation at a time: the network by VJPs at its current
    parameters, the linearised model by VJPs at theta0 (`delta = theta - theta0`)."""
    params, delta = params0, zeros_like(params0)
    state, state_lin = opt.init(params0), opt.init(params0)
    loss_max = loss_lin_max = -math.inf
    for step in range(steps + 1):
        # overflow on the way to a divergence is expected: it is detected and reported below
        with np.errstate(over="ignore", invalid="ignore"):
            cache = forward_cache(net, params, x)
            f = lin.centre(cache.f)
            loss_now = loss_value(loss, f, y)
            f_lin = lin.predict(delta)
            loss_lin = loss_value(loss, f_lin, y)
        loss_max = _running_max(loss_max, loss_now)
        loss_lin_max = _running_max(loss_lin_max, loss_lin)
        diverged = not math.isfinite(loss_now)
        if step in log or diverged:
            yield TrainState(
                step, params, delta, f, f_lin, loss_now, loss_lin, diverged, loss_max, loss_lin_max
            )
        if diverged or step == steps:
            return
        b = next(batches)
        with np.errstate(over="ignore", invalid="ignore"):
            # the batch's rows of the full forward passes: the same numbers a forward pass on
            # x[b] gives, and for the linear model exactly the rows of J0 its outputs use
            grads = vjp(net, params, _rows(cache, b), loss_gradient(loss, f[b], y[b]))
            cot_lin = loss_gradient(loss, f_lin[b], y[b])
            grads_lin = vjp(net, params0, _rows(lin.cache, b), cot_lin)
            params, state = opt.step(params, grads, state)
            delta, state_lin = opt.step(delta, grads_lin, state_lin)


def _rows(cache: ForwardCache, b: np.ndarray | slice) -> ForwardCache:
    """The forward cache of the samples `b` (a view of every array for `slice(None)`)."""
    return ForwardCache(cache.f[b], [a[b] for a in cache.inputs], [s[b] for s in cache.slopes])


def _running_max(best: float, value: float) -> float:
    """max(best, value), NaN once either is NaN (Python's max would keep whichever came first)."""
    return best if math.isnan(best) or value <= best else value


def use_fused(net: MLP, backend: str = "auto") -> bool:
    """Whether `gd_trajectory` takes the fused path: always for backend "fused" (which requires
    one hidden layer and numba), never for "numpy"; for "auto" where the network has one hidden
    layer and numba is installed (measured faster at every input size and sample count tried,
    benchmarks/README.md). Deeper networks are bound by matrix products, which BLAS does best.
    The fused step is written for one output: never for `net.outputs > 1`.
    The choice depends only on the configuration, so a run always takes the same path.
    """
    if backend == "numpy":
        return False
    if backend == "fused":
        if net.depth != 1:
            raise ValueError(f"backend='fused' needs depth=1 (got depth={net.depth}): use numpy")
        if net.outputs != 1:
            raise ValueError(
                f"backend='fused' needs outputs=1 (got outputs={net.outputs}): use numpy"
            )
        if not fused_available():
            raise ValueError("backend='fused' needs numba, which is not installed")
        return True
    return net.depth == 1 and net.outputs == 1 and fused_available()


FUSED_PARALLEL_WORK = 2**24


def _fused_work(net: MLP, n_samples: int) -> int:
    """Rough cost of a fused step in relu-unit-sample equivalents (a transcendental ~ 8)."""
    per_unit = -(-n_samples // 4) * 4 * net.input_dim
    return net.width * per_unit * (1 if net.activation in ("relu", "linear") else 8)


def _fused_block(input_dim: int) -> int:
    """Units per block of the fused step: its scratch (input_dim + 3 rows) stays in L1/L2."""
    return max(64, min(2048, 16384 // input_dim)) // 16 * 16


def _fused_step_kernel(net: MLP, n_samples: int):
    """The compiled GD step `_fused_trajectory` uses: threaded for large steps (see
    FUSED_PARALLEL_WORK), single-threaded otherwise."""
    from ntk_sweep.core import _fused

    n_blocks = -(-net.width // _fused_block(net.input_dim))
    parallel = n_blocks > 1 and _fused_work(net, n_samples) >= FUSED_PARALLEL_WORK
    return _fused.depth1_gd_step_parallel if parallel else _fused.depth1_gd_step_serial


def fused_compile_pending(net: MLP, n_samples: int, backend: str = "auto") -> bool:
    """Whether `gd_trajectory` takes the fused path and its compiled step is not loaded in this
    process yet: its first GD step then compiles it (~20 s the first time on a machine) or
    loads it from numba's disk cache. Reads the dispatcher's public `signatures` list."""
    if not use_fused(net, backend):
        return False
    return not _fused_step_kernel(net, n_samples).signatures


def _fused_trajectory(
    net: MLP,
    params0: Params,
    x: np.ndarray,
    y: np.ndarray,
    lr_eff: float,
    steps: int,
    log: set[int],
    lin: Linearization,
) -> Iterator[TrainState]:
    """`gd_trajectory` for one hidden layer: the network through `_fused.depth1_gd_step_*`
    (gradient, in-place update and the next forward pass in one sweep over the parameters), the
    linearised model in the span of its Jacobian's rows.

    The linear model's update `delta -= lr J0^T r_lin / N` keeps `delta = J0^T a` with
    `a -= lr r_lin / N` (`coef`, in R^N, starting at 0), so
    `f_lin = f0 + J0 delta = f0 + K0 a` with `K0 = J0 J0^T` the empirical NTK at theta0:
    exactly the same iteration, O(N^2) per step instead of two passes over the parameters.
    `delta` itself is formed (one VJP) at logged steps only.
    """
    from ntk_sweep.core import _fused

    dt = np.dtype(net.dtype).type
    (w_0, b_0), (w1_0, b1_0) = params0
    # working copies, updated in place; states yielded to the caller get their own copies
    w, b, w1m, b1 = (np.array(a, order="C") for a in (w_0, b_0, w1_0, b1_0))
    hidden = (w, b, w1m[:, 0])
    c0, c1, lr_eff = (dt(v) for v in (*net.multipliers, lr_eff))
    cb1 = dt(net.bias_multipliers[1])
    tag = _fused.ACTIVATION_TAGS[net.activation]
    x = np.ascontiguousarray(x)
    n_samples = len(x)
    n_blocks = -(-net.width // _fused_block(net.input_dim))
    kernel = _fused_step_kernel(net, n_samples)
    f_parts = np.empty((n_blocks, n_samples))

    k0 = empirical_ntk(net, params0, x).astype(np.float64)
    f0 = lin.f0.astype(np.float64)
    coef = np.zeros(n_samples)
    loss_max = loss_lin_max = -math.inf
    f_net, f_lin = lin.cache.f.copy(), lin.f0.copy()  # the network's raw output, the linear model's
    for step in range(steps + 1):
        with np.errstate(over="ignore", invalid="ignore"):
            f = lin.centre(f_net)
            r, r_lin = f - y, f_lin - y
            loss = float(r @ r) / (2 * n_samples)
            loss_lin = float(r_lin @ r_lin) / (2 * n_samples)
        loss_max, loss_lin_max = _running_max(loss_max, loss), _running_max(loss_lin_max, loss_lin)
        diverged = not math.isfinite(loss)
        if step in log or diverged:
            params = [(w.copy(), b.copy()), (w1m.copy(), b1.copy())]
            with np.errstate(over="ignore", invalid="ignore"):
                delta = vjp(net, params0, lin.cache, coef)
            yield TrainState(
                step, params, delta, f, f_lin, loss, loss_lin, diverged, loss_max, loss_lin_max
            )
        if diverged or step == steps:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            r = r / n_samples
            kernel(x, r, hidden, tag, c0, c1, lr_eff, f_parts)
            b1 -= lr_eff * (cb1 * r.sum())
            f_net = (c1 * f_parts.sum(axis=0)).astype(net.dtype) + cb1 * b1[0]
            coef -= float(lr_eff) * (r_lin.astype(np.float64) / n_samples)
            f_lin = (f0 + k0 @ coef).astype(net.dtype)
