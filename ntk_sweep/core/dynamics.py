"""A kernel's spectrum (MATH.md sections 3-4: its eigenvalues, lambda_max, condition number and
numerical rank) and the learning-rate phase of a GD run (Lewkowycz et al. 2020).

The constant-kernel predictions built on the spectrum (MATH.md section 4, eqs. 7-8) are
`kernel_predictions`'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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


def symmetric_kernel(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"kernel has shape {k.shape}: expected a non-empty square (N, N) matrix")
    return (k + k.T) / 2


def kernel_spectrum(k: np.ndarray, rcond: float = RCOND) -> Spectrum:
    """Eigenvalues, extreme eigenvalues, condition number and numerical rank of a kernel."""
    lam = np.linalg.eigvalsh(symmetric_kernel(k))
    lam_max, lam_min = float(lam[-1]), float(lam[0])
    rank = int(np.sum(lam > rcond * lam_max))
    cond = lam_max / lam_min if lam_min > rcond * lam_max else float("inf")
    return Spectrum(lam, lam_max, lam_min, cond, rank)


def top_eigenvalue(k: np.ndarray) -> float:
    """lambda_max of a symmetric PSD kernel by Lanczos iteration (ARPACK, a fixed start vector:
    deterministic), to ~1e-12 relative: O(iterations x size^2) instead of the O(size^3) of a
    full eigendecomposition, for the large kernels of K-output networks (N K x N K)."""
    from scipy.sparse.linalg import eigsh

    k = symmetric_kernel(k)
    if k.shape[0] < 3:  # ARPACK needs more rows than wanted eigenvalues + 1
        return float(np.linalg.eigvalsh(k)[-1])
    start = np.full(k.shape[0], 1 / np.sqrt(k.shape[0]))
    return float(eigsh(k, k=1, which="LA", v0=start, tol=1e-13, return_eigenvectors=False)[0])


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
