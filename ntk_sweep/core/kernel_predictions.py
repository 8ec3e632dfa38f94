"""Every prediction of a model trained with a constant kernel, in one place (MATH.md section 4,
the paper's eqs. 22-26 corrected, and eqs. 7-8):

- :func:`kernel_predictions`: the closed form of full-batch gradient descent (or flow) on the
  MSE with a constant kernel, with `r0 = f_0(X) - y` (MATH.md s.4):
  `f_s(X) = y + D_s r0`, `f_s(x) = f_0(x) - Theta(x, X) Theta^{-1} (I - D_s) r0`, where
  `D_s = (I - lr Theta / N)^s` (gradient descent, exact for the linearised model) or
  `exp(-Theta lr s / N)` (gradient flow, t = lr s); `Theta^{-1} (I - D_s)` is computed
  spectrally with the limit `lr s / N` at lambda = 0, so a singular kernel is fine.
- :func:`kernel_trajectory`: the same model where there is no closed form (minibatch SGD,
  heavy-ball momentum, the cross-entropy), by iterating the function-space map
  `f <- f - lr Theta[:, B] dL_B/df_B` (below); for full-batch GD on the MSE it reproduces
  :func:`kernel_predictions` to rounding.
- :func:`kernel_regression`: the kernel machine `f(x) = f_0(x) + Theta(x, X) Theta^+ (y - f_0(X))`
  (paper eqs. 7-8 with f_0 = 0 by default), the t -> infinity limit of the MSE's dynamics.
- :func:`max_stable_lr`: gradient descent on the MSE is stable only for
  `lr < 2 N / lambda_max(Theta)` (MATH.md s.4).
- :func:`constant_kernel_predictions` and :func:`kernel_machine`: what a measurement
  (`measure`) asks for, by optimiser and loss: the closed form, the iteration, or NaN where
  there is none (adam; the kernel machine of the cross-entropy, whose minimiser is at infinity).

Why the iteration is exact for the linearised model (up to rounding): `f_lin(x) = f0(x) +
J0(x) delta`, with `delta = theta - theta0` and `J0` the Jacobian at theta0, so a parameter
update `delta <- delta - lr v` moves the outputs by `-lr J0 v` on any inputs. Each optimiser
here builds `v` linearly from batch gradients `J0(X_B)^T g_B` (with `g_B = dL_B/df_B` the
gradient of the batch's mean loss at the linearised outputs), and
`J0(x) J0(X_B)^T = Theta_0(x, X_B)`, the empirical NTK at theta0. Hence, with `Theta[:, B]`
the kernel's columns of the batch:

- gd / sgd:  `f <- f - lr Theta[:, B] g_B`;
- momentum:  `u <- mu u + Theta[:, B] g_B`, `f <- f - lr u` (`u = J0 v`, the velocity in
  function space, `u_0 = 0`);

on the training inputs with `Theta_0(X, X)` and on test inputs with `Theta_0(x_test, X)`, the
test outputs following the training outputs' gradients. Nothing but `g_B` depends on the loss,
so the cross-entropy is the same map with its own `dL/df` (`losses`).

Adam has no such form: its update divides each parameter's gradient by that parameter's own
running scale, which is not a function of `J0 J0^T` (KERNEL_OPTIMIZERS excludes it; the app
logs NaN kernel predictions for adam).

Time: discrete optimiser steps, with the effective learning rate `lr = lr_user * net.lr_scale`
(MATH.md section 4 "gradient descent, exact for the linearised model"), not the flow time.

Shapes: f0/y of shape (N,) for one output, (N, K) for K outputs. For K > 1 the kernel is either
the full (N K, N K) matrix in sample-major order (index i K + a, as `empirical_ntk` returns it)
or the (N, N) output-averaged kernel, read as `Theta_avg (x) I_K`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from ntk_sweep.core.checks import check_choice, check_positive
from ntk_sweep.core.dynamics import RCOND, kernel_spectrum, symmetric_kernel
from ntk_sweep.core.losses import LOSSES, loss_gradient
from ntk_sweep.core.optimizers import (
    KERNEL_OPTIMIZERS,
    OPTIMIZERS,
    Optimizer,
    check_batch_size,
    minibatches,
)

MODES = ("discrete", "flow")


def max_stable_lr(k: np.ndarray, n: int | None = None) -> float:
    """Largest stable learning rate of gradient descent on the MSE loss, `2N / lambda_max`
    (MATH.md s.4: GD is stable only for `lr < 2 N / lambda_max(Theta)`). `n` defaults to the
    kernel's size; pass the number of samples N for the full (N K, N K) kernel of K outputs."""
    n = k.shape[0] if n is None else n
    return 2 * n / kernel_spectrum(k).lambda_max


def _decay_and_gain(
    lam: np.ndarray, lr: float, n: int, step: int, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per eigenvalue: the residual decay and `(1 - decay) / lambda` (limit `lr step / N` at 0).

    discrete: decay = (1 - lr lambda / N)^step; flow: decay = exp(-lambda t / N), t = lr step.
    The gain is computed with expm1/log1p so tiny eigenvalues keep full precision.
    """
    q = lr * lam / n
    if mode == "flow":
        decay = np.exp(-q * step)
        one_minus = -np.expm1(-q * step)
    else:
        small = np.abs(q) < 0.5
        log_base = np.log1p(-np.where(small, q, 0.0))
        one_minus = np.where(small, -np.expm1(step * log_base), 1 - np.power(1 - q, step))
        decay = 1 - one_minus
    zero = lam == 0
    gain = np.divide(one_minus, lam, out=np.full_like(lam, lr * step / n), where=~zero)
    return decay, gain


def _output_form(k: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Targets in the form the kernel acts on, the number of samples N and of outputs K.

    One output (y of N values, any shape): y as (N,), as for a scalar network. (N, K) targets,
    K > 1: flattened sample-major to (N K,) for the full (N K, N K) kernel (`empirical_ntk`'s
    order), kept (N, K) for an (N, N) kernel, which then acts on every output column alike (the
    kernel `Theta (x) I_K`).
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] == 1:
        return y.reshape(-1), k.shape[0], 1
    n, n_out = y.shape
    if k.shape[0] == n * n_out:
        return y.reshape(-1), n, n_out
    if k.shape[0] != n:
        raise ValueError(
            f"kernel has shape {k.shape}: expected ({n * n_out}, {n * n_out}) or ({n}, {n}) "
            f"for targets y of shape {y.shape}"
        )
    return y, n, n_out


def _like(name: str, value: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """`value` (zeros if None) as float64 of `shape`, which it must fill exactly."""
    if value is None:
        return np.zeros(shape)
    value = np.asarray(value, dtype=np.float64)
    if value.size != math.prod(shape):
        raise ValueError(f"{name} has {value.size} values: expected {math.prod(shape)} {shape}")
    return value.reshape(shape)


def _per_row(d: np.ndarray, r: np.ndarray) -> np.ndarray:
    """`diag(d) r` for a vector or a matrix of columns r."""
    return d * r if r.ndim == 1 else d[:, None] * r


def kernel_predictions(
    k_train: np.ndarray,
    k_test_train: np.ndarray | None,
    f0_train: np.ndarray,
    f0_test: np.ndarray | None,
    y: np.ndarray,
    lr: float,
    steps: np.ndarray | list[int],
    mode: str = "discrete",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions of a model trained with a constant kernel, at every step in `steps`.

    With `r0 = f0(X) - y` (MATH.md section 4):
    `f_s(X) = y + D_s r0` and `f_s(x) = f0(x) - Theta(x, X) Theta^{-1} (I - D_s) r0`, where
    `D_s = (I - lr Theta / N)^s` for gradient descent ("discrete", exact for the linearised
    network) or `exp(-Theta lr s / N)` for gradient flow ("flow", time t = lr * s).
    Returns `(f_train (S, N), f_test (S, M) or None)`. Warns when lr >= 2N / lambda_max.

    K > 1 outputs (y, f0 of shape (N, K)): `k_train` is either the full (N K, N K) kernel with
    `k_test_train` (M K, N K), sample-major, or an (N, N) kernel with `k_test_train` (M, N)
    applied to every output column (`Theta (x) I_K`); N is the number of samples either way
    (the loss is `1/(2N) sum_i ||f_i - y_i||^2`). Returns (S, N, K) and (S, M, K).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid: allowed values are {', '.join(MODES)}")
    check_positive("lr", lr)
    k = symmetric_kernel(k_train)
    y, n, n_out = _output_form(k, y)
    f0_train = np.asarray(f0_train, dtype=np.float64)
    if y.shape[0] != k.shape[0] or f0_train.size != y.size:
        raise ValueError(f"y has {y.shape[0]} and f0_train {f0_train.size} values: expected N={n}")
    f0_train = f0_train.reshape(y.shape)
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    if steps.size and steps.min() < 0:
        raise ValueError("steps must be >= 0")
    lam, v = np.linalg.eigh(k)
    if mode == "discrete" and lr * lam[-1] / n >= 2:
        warnings.warn(
            f"lr={lr:g} >= 2N/lambda_max={2 * n / lam[-1]:g}: gradient descent diverges "
            "along the top eigenvector of this kernel",
            RuntimeWarning,
            stacklevel=2,
        )
    r0 = v.T @ (f0_train - y)
    f_train = np.empty((len(steps), *y.shape))
    f_test = None
    if k_test_train is not None:
        k_test_train = np.asarray(k_test_train, dtype=np.float64)
        if k_test_train.ndim != 2 or k_test_train.shape[1] != k.shape[0]:
            raise ValueError(
                f"k_test_train has shape {k_test_train.shape}: expected (M, {k.shape[0]})"
            )
        f0_test = _like("f0_test", f0_test, (len(k_test_train), *y.shape[1:]))
        kv = k_test_train @ v
        f_test = np.empty((len(steps), *f0_test.shape))
    for i, step in enumerate(steps):
        decay, gain = _decay_and_gain(lam, lr, n, int(step), mode)
        f_train[i] = y + v @ _per_row(decay, r0)
        if f_test is not None:
            f_test[i] = f0_test - kv @ _per_row(gain, r0)
    if n_out > 1:
        f_train = f_train.reshape(len(steps), n, n_out)
        f_test = None if f_test is None else f_test.reshape(len(steps), -1, n_out)
    return f_train, f_test


def kernel_regression(
    k_train: np.ndarray,
    k_test_train: np.ndarray,
    y: np.ndarray,
    f0_train: np.ndarray | None = None,
    f0_test: np.ndarray | None = None,
    ridge: float = 0.0,
    rcond: float = RCOND,
) -> np.ndarray:
    """Kernel machine `f(x) = f0(x) + Theta(x, X) Theta^+ (y - f0(X))` (paper eqs. 7-8 with
    f0 = 0 by default), the t -> infinity limit of `kernel_predictions`.

    The inverse is spectral: eigenvalues below `rcond * lambda_max` are dropped (a
    pseudo-inverse, with a warning), and `ridge > 0` adds `ridge * I` before inverting.
    K > 1 outputs: (N, K) targets with the full or the per-column kernel, as in
    `kernel_predictions`; returns (M, K).
    """
    if ridge < 0:
        raise ValueError(f"ridge={ridge!r} is invalid: expected a number >= 0")
    k = symmetric_kernel(k_train)
    n = k.shape[0]
    y, _, n_out = _output_form(k, y)
    k_test_train = np.asarray(k_test_train, dtype=np.float64)
    if y.shape[0] != n or k_test_train.ndim != 2 or k_test_train.shape[1] != n:
        raise ValueError(
            f"shapes do not match: kernel ({n}, {n}), y {y.shape}, "
            f"k_test_train {k_test_train.shape}: expected (M, {n})"
        )
    f0_train = _like("f0_train", f0_train, y.shape)
    f0_test = _like("f0_test", f0_test, (len(k_test_train), *y.shape[1:]))
    lam, v = np.linalg.eigh(k)
    lam = lam + ridge
    keep = lam > rcond * lam[-1]
    if not keep.all():
        warnings.warn(
            f"kernel is singular (rank {int(keep.sum())} of {n}): kernel regression uses the "
            f"pseudo-inverse, dropping {int((~keep).sum())} eigenvalue(s) below "
            f"{rcond:g} * lambda_max",
            RuntimeWarning,
            stacklevel=2,
        )
    inv = np.divide(1.0, lam, out=np.zeros_like(lam), where=keep)
    f = f0_test + k_test_train @ (v @ _per_row(inv, v.T @ (y - f0_train)))
    return f.reshape(-1, n_out) if n_out > 1 else f


def has_kernel_form(optimizer: str) -> bool:
    """Whether the linearised model's training under `optimizer` is a constant-kernel map."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    return optimizer in KERNEL_OPTIMIZERS


def _kernel_product(k: np.ndarray, b: np.ndarray | slice, g: np.ndarray, n: int) -> np.ndarray:
    """`Theta[:, B] g_B` shaped like the outputs of the kernel's rows: for K > 1 with the full
    sample-major kernel, the columns `i K + a` of the batch's samples i."""
    if g.ndim == 1 or k.shape[1] == n:  # one output, or Theta_avg (x) I_K
        return k[:, b] @ g
    n_out = g.shape[1]
    cols = b if isinstance(b, slice) else (b[:, None] * n_out + np.arange(n_out)).reshape(-1)
    return (k[:, cols] @ g.reshape(-1)).reshape(-1, n_out)


def _as_kernel(k: np.ndarray, rows: int, n: int, n_out: int, name: str) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    allowed = {(rows, n)} | ({(rows * n_out, n * n_out)} if n_out > 1 else set())
    if k.shape not in allowed:
        raise ValueError(f"{name} has shape {k.shape}: expected one of {sorted(allowed)}")
    return k


def kernel_trajectory(
    k_train: np.ndarray,
    k_test_train: np.ndarray | None,
    f0_train: np.ndarray,
    f0_test: np.ndarray | None,
    y: np.ndarray,
    lr: float,
    log_steps: Iterable[int],
    *,
    optimizer: str = "gd",
    loss: str = "mse",
    batch_size: int | None = None,
    momentum: float = 0.9,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Outputs of the model trained with the constant kernel `k_train = Theta_0(X, X)` (module
    docstring) at each step of `log_steps`, in that order: `(f_train (S, N[, K]), f_test
    (S, M[, K]) or None)`, in float64. `lr` is the effective learning rate; the batches are
    `optimizers.minibatches(N, batch_size, max(log_steps), seed)`, those `train_trajectory`
    uses with the same arguments. Raises ValueError for adam (no kernel form)."""
    if not has_kernel_form(optimizer):
        raise ValueError(
            f"optimizer={optimizer!r} has no constant-kernel form (its per-parameter "
            f"normalisation is not a function of the NTK): allowed {', '.join(KERNEL_OPTIMIZERS)}"
        )
    check_choice("loss", loss, LOSSES)
    check_positive("lr", lr)
    opt = Optimizer(optimizer, lr, momentum)
    f = np.array(f0_train, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.shape != f.shape or f.ndim not in (1, 2):
        raise ValueError(f"f0_train {f.shape} and y {y.shape}: expected equal shapes (N[, K])")
    n, n_out = len(f), (1 if f.ndim == 1 else f.shape[1])
    check_batch_size(optimizer, batch_size, n)
    k = _as_kernel(k_train, n, n, n_out, "k_train")
    if (k_test_train is None) != (f0_test is None):
        raise ValueError("k_test_train and f0_test go together: pass both or neither")
    test = None
    if k_test_train is not None:
        test = np.array(f0_test, dtype=np.float64)
        if test.shape[1:] != f.shape[1:]:
            raise ValueError(f"f0_test {test.shape}: expected (M,) + {f.shape[1:]}")
        k_t = _as_kernel(k_test_train, len(test), n, n_out, "k_test_train")
    log = [int(s) for s in log_steps]
    if not log or min(log) < 0:
        raise ValueError("log_steps must be a non-empty list of steps >= 0")
    wanted, at_train, at_test = set(log), {}, {}
    u = u_test = 0.0  # function-space velocities (momentum)
    batches = minibatches(n, batch_size, max(log), seed)
    for step in range(max(log) + 1):
        if step in wanted:
            at_train[step] = f.copy()
            at_test[step] = None if test is None else test.copy()
        if step == max(log):
            break
        b = next(batches)
        with np.errstate(over="ignore", invalid="ignore"):
            g = loss_gradient(loss, f[b], y[b])
            step_train = _kernel_product(k, b, g, n)
            step_test = None if test is None else _kernel_product(k_t, b, g, n)
            if opt.name == "momentum":
                u = opt.momentum * u + step_train
                step_train = u
                if test is not None:
                    u_test = opt.momentum * u_test + step_test
                    step_test = u_test
            f = f - opt.lr * step_train
            if test is not None:
                test = test - opt.lr * step_test
    f_train = np.stack([at_train[s] for s in log])
    return f_train, (None if test is None else np.stack([at_test[s] for s in log]))


def has_closed_form(optimizer: str, loss: str) -> bool:
    """Whether the constant-kernel prediction has MATH.md s.4's closed form (full-batch GD on
    the MSE, :func:`kernel_predictions`); otherwise it is iterated (:func:`kernel_trajectory`),
    or absent (adam)."""
    return optimizer == "gd" and loss == "mse"


def constant_kernel_predictions(
    k: np.ndarray,
    k_test_train: np.ndarray,
    f0: tuple[np.ndarray, np.ndarray],
    y: np.ndarray,
    lr_eff: float,
    log_steps: Sequence[int],
    *,
    optimizer: str = "gd",
    loss: str = "mse",
    batch_size: int | None = None,
    momentum: float = 0.9,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The model trained with the constant kernel `k` at every step of `log_steps`, on train and
    test inputs (module docstring): closed form (:func:`kernel_predictions`), iterated
    (:func:`kernel_trajectory`), or NaN where there is no kernel form (adam)."""
    f0_train, f0_test = f0
    if has_closed_form(optimizer, loss):
        return kernel_predictions(k, k_test_train, f0_train, f0_test, y, lr_eff, log_steps)
    n_log = len(log_steps)
    if not has_kernel_form(optimizer):
        return np.full((n_log, *np.shape(f0_train)), np.nan), np.full(
            (n_log, *np.shape(f0_test)), np.nan
        )
    f_train, f_test = kernel_trajectory(
        k,
        k_test_train,
        f0_train,
        f0_test,
        y,
        lr_eff,
        log_steps,
        optimizer=optimizer,
        loss=loss,
        batch_size=batch_size,
        momentum=momentum,
        seed=seed,
    )
    assert f_test is not None
    return f_train, f_test


def kernel_machine(k: np.ndarray, k_test_train: np.ndarray, y: np.ndarray, loss: str) -> np.ndarray:
    """The kernel machine's test predictions (eqs. 7-8, :func:`kernel_regression` with f_0 = 0);
    NaN for the cross-entropy."""
    if loss == "mse":
        return kernel_regression(k, k_test_train, y)
    return np.full((len(k_test_train), *np.shape(y)[1:]), np.nan)
