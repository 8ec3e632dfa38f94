"""Training dynamics under a constant kernel (MATH.md section 4, the paper's eqs. 22-26 corrected)
and kernel regression (paper eqs. 7-8) as their t -> infinity limit.

All solves are spectral, `Theta = V diag(lambda) V^T`, so a singular kernel (the paper's own
setting, MATH.md section 3) gives finite, well-defined predictions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ntk_sweep.core.checks import check_positive

MODES = ("discrete", "flow")

# Eigenvalues below this fraction of lambda_max count as zero for the pseudo-inverse of kernel
# regression and for the condition number: float64 round-off in a rank-deficient kernel sits
# near 1e-16 * lambda_max, well below it.
RCOND = 1e-10


@dataclass(frozen=True)
class Spectrum:
    eigenvalues: np.ndarray  # ascending
    lambda_max: float
    lambda_min: float
    condition_number: float  # inf for a numerically singular kernel
    rank: int


def _symmetric(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"kernel has shape {k.shape}: expected a non-empty square (N, N) matrix")
    return (k + k.T) / 2


def kernel_spectrum(k: np.ndarray, rcond: float = RCOND) -> Spectrum:
    """Eigenvalues, extreme eigenvalues, condition number and numerical rank of a kernel."""
    lam = np.linalg.eigvalsh(_symmetric(k))
    lam_max, lam_min = float(lam[-1]), float(lam[0])
    rank = int(np.sum(lam > rcond * lam_max))
    cond = lam_max / lam_min if lam_min > rcond * lam_max else float("inf")
    return Spectrum(lam, lam_max, lam_min, cond, rank)


def top_eigenvalue(k: np.ndarray) -> float:
    """lambda_max of a symmetric PSD kernel by Lanczos iteration (ARPACK, a fixed start vector:
    deterministic), to ~1e-12 relative: O(iterations x size^2) instead of the O(size^3) of a
    full eigendecomposition, for the large kernels of K-output networks (N K x N K)."""
    from scipy.sparse.linalg import eigsh

    k = _symmetric(k)
    if k.shape[0] < 3:  # ARPACK needs more rows than wanted eigenvalues + 1
        return float(np.linalg.eigvalsh(k)[-1])
    start = np.full(k.shape[0], 1 / np.sqrt(k.shape[0]))
    return float(eigsh(k, k=1, which="LA", v0=start, tol=1e-13, return_eigenvectors=False)[0])


def max_stable_lr(k: np.ndarray, n: int | None = None) -> float:
    """Largest stable learning rate of gradient descent on the MSE loss, `2N / lambda_max`.
    `n` defaults to the kernel's size; pass the number of samples N for the full (N K, N K)
    kernel of K outputs."""
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
    k = _symmetric(k_train)
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
    k = _symmetric(k_train)
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


PHASES = ("lazy", "catapult", "collapsed", "divergent")
# a loss above its initial value by more than this relative margin is a spike (not round-off)
SPIKE_RTOL = 1e-9
# a run that ends within this relative margin of the best constant predictor's loss (or above)
# learned nothing beyond a constant: the loss of a collapsed network tends to it from above
COLLAPSE_RTOL = 0.01


def lr_phase(
    loss_0: float,
    loss_max: float,
    loss_final: float,
    loss_constant: float,
    lambda_0: float,
    lambda_final: float,
) -> str:
    """Learning-rate phase of one GD run (Lewkowycz et al. 2020, arXiv 2003.02218), measured:

    - "divergent": a loss was NaN/inf, or the final loss exceeds the initial one;
    - "lazy": the loss never rose above its initial value (`loss_max <= loss_0 (1 + 1e-9)`);
    - "catapult": the loss spiked above its initial value, then came down below
      `0.99 loss_constant` (`loss_constant`: the loss of the best constant predictor,
      `Var(y) / 2`) with a smaller top kernel eigenvalue at the end (`lambda_final < lambda_0`);
    - "collapsed": it spiked and came down, but not to a catapult's end: the final loss is
      `>= 0.99 loss_constant` (e.g. every relu unit dead, only the output bias left) or
      lambda_max did not decrease.

    `loss_max` is the largest loss over every step; `lambda_*` the top eigenvalues of the
    model's kernel at init and at the last logged step (pass `lambda_final = lambda_0` for the
    linearised model, whose kernel is constant: it is lazy or divergent, or collapsed if it
    spiked and came back, which GD on a quadratic cannot do).
    """
    losses = (loss_0, loss_max, loss_final)
    if not all(math.isfinite(v) for v in losses) or loss_final > loss_0:
        return "divergent"
    if loss_max <= loss_0 * (1 + SPIKE_RTOL):
        return "lazy"
    if loss_final < (1 - COLLAPSE_RTOL) * loss_constant and lambda_final < lambda_0:
        return "catapult"
    return "collapsed"
