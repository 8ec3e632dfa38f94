"""Constant-kernel predictions where there is no closed form (MATH.md section 4): minibatch SGD,
heavy-ball momentum and the cross-entropy, by iterating the function-space map of the
linearised model. Full-batch GD on the MSE has the closed form `dynamics.kernel_predictions`;
this iteration reproduces it to rounding.

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

from collections.abc import Iterable

import numpy as np

from ntk_sweep.core.checks import check_choice, check_positive
from ntk_sweep.core.losses import LOSSES, loss_gradient
from ntk_sweep.core.optimizers import (
    KERNEL_OPTIMIZERS,
    OPTIMIZERS,
    Optimizer,
    check_batch_size,
    minibatches,
)


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
