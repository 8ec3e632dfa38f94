"""Training losses over the model's outputs `f` and their gradients dL/df (pure NumPy).

Shapes: `f` and `y` are (N,) for a scalar-output model or (N, K) for K outputs; the gradient has
the shape of `f`. Every loss is an average over the N samples, so the gradient carries a 1/N
and gradient descent in function space reads `f <- f - lr Theta dL/df` (MATH.md section 4, with
`dL/df = (f - y) / N` for the MSE).

- ``mse``: `L = 1/(2N) sum_i ||f_i - y_i||^2` (paper eq. 2), `dL/df = (f - y) / N`.
- ``xent``, K >= 2 (softmax cross-entropy, rows of y probability vectors, e.g. one-hot):
  `L = 1/N sum_i [logsumexp(f_i) - sum_a y_ia f_ia]`, `dL/df = (softmax(f) - y) / N`.
- ``xent``, K = 1 (binary logistic, y in {-1, +1}): `L = 1/N sum_i log(1 + exp(-y_i f_i))`,
  `dL/df = -y sigmoid(-y f) / N`. An (N, 1) array is treated as K = 1.

The cross-entropies are evaluated in stable forms (logaddexp, logsumexp, expit, softmax with the
maximum subtracted), so logits of any finite size give finite, correct values.
"""

from __future__ import annotations

import numpy as np

LOSSES = ("mse", "xent")


def _check(loss: str, f: np.ndarray, y: np.ndarray) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is invalid: allowed values are {', '.join(LOSSES)}")
    if f.shape != y.shape or f.ndim not in (1, 2) or f.shape[0] == 0:
        raise ValueError(
            f"outputs f {f.shape} and targets y {y.shape}: expected equal shapes (N,) or (N, K)"
        )


def _binary(f: np.ndarray) -> bool:
    """Whether the cross-entropy is the binary logistic one (one output per sample)."""
    return f.ndim == 1 or f.shape[1] == 1


def loss_value(loss: str, f: np.ndarray, y: np.ndarray) -> float:
    """The loss `L(f, y)` (module docstring); NaN/inf when f is."""
    f, y = np.asarray(f), np.asarray(y)
    _check(loss, f, y)
    n = len(f)
    if loss == "mse":
        r = f - y
        # 1-D: `r @ r`, whose rounding the stored one-output histories (tests/data) were logged with
        return float(r @ r) / (2 * n) if r.ndim == 1 else float(np.vdot(r, r)) / (2 * n)
    if _binary(f):
        # log(1 + exp(-y f)) = logaddexp(0, -y f): no overflow for large margins
        return float(np.sum(np.logaddexp(0, -y * f))) / n
    # scipy.special here, not at the top: importing it costs ~0.3 s that an MSE run never needs
    from scipy.special import logsumexp

    return float(np.sum(logsumexp(f, axis=1) - np.sum(y * f, axis=1))) / n


def loss_gradient(loss: str, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/df, the shape and dtype of `f` (module docstring)."""
    f, y = np.asarray(f), np.asarray(y)
    _check(loss, f, y)
    n = len(f)
    if loss == "mse":
        r = f - y
        return r / n
    from scipy.special import expit, softmax  # lazily: see loss_value

    if _binary(f):
        # d/df log(1 + exp(-y f)) = -y sigmoid(-y f); expit is exact in both tails
        return -y * expit(-y * f) / n
    return (softmax(f, axis=1) - y) / n


def constant_loss(loss: str, y: np.ndarray) -> float:
    """The loss of the best constant predictor of `y` (what a network that learned nothing
    beyond a constant ends at; `dynamics.lr_phase`): for the MSE half the targets' variance,
    summed over outputs; for the cross-entropy the entropy of the class frequencies."""
    y = np.asarray(y, dtype=np.float64)
    if loss == "mse":
        return float(np.var(y)) / 2 if y.ndim == 1 else float(np.sum(np.var(y, axis=0))) / 2
    _check(loss, y, y)
    p = np.mean(y == 1) if _binary(y) else np.mean(y, axis=0)
    p = np.array([p, 1 - p]) if np.ndim(p) == 0 else p
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))
