"""The kernel drift split into the part due to activation flips and the smooth rest (MATH.md
s.6; definitions in docs/metrics.md, "Activation flips"). Pure NumPy.

With `s_0` the activation derivatives phi'(z^l(x_i)) of every hidden unit at every training
input at init and `Theta_t^(s_0)` the empirical NTK of the current parameters with the backward
pass's phi'(z) replaced by `s_0` (`kernels.empirical_ntk(..., slopes=s_0)`; the forward
activations phi(z) are the current ones):
`Theta_t - Theta_0 = [Theta_t - Theta_t^(s_0)] + [Theta_t^(s_0) - Theta_0]`, the flip part and
the smooth part. For relu (phi' piecewise constant) phi' changes only where a unit's
pre-activation crosses the kink at a training input (a flip), so the first part is exactly the
flips' contribution; linear has no kink (both parts: 0 and the whole drift). For the smooth
activations (erf, tanh) phi' changes continuously at every unit: there are no flips
(`flipped_units` 0) and the first part is only "the part due to the change of phi'"
(`kernel_drift_phi_prime`), not a flip part.
"""

from __future__ import annotations

import math

import numpy as np

from ntk_sweep.core.kernels import by_output, empirical_ntk, kernel_drift, output_gram, times_inputs
from ntk_sweep.core.network import MLP, Params, as_inputs, forward_cache

# activations whose phi' is piecewise constant: a change of phi' is a flip across a kink
PIECEWISE_LINEAR = ("relu", "linear")


def flip_names(depth: int) -> list[str]:
    """The per-log-step metrics of this module (docs/metrics.md), in logging order."""
    return [
        "kernel_drift_flip",
        "kernel_drift_smooth",
        "kernel_drift_phi_prime",
        "flipped_units",
        *[f"flipped_units_layer{l + 1}" for l in range(depth)],
        "flip_coherence",
    ]


def flipped(slopes: list[np.ndarray], slopes0: list[np.ndarray]) -> list[np.ndarray]:
    """Per hidden layer, the boolean mask (width,) of the units whose phi' differs from its
    initial value at some input (rows of the (N, width) slope arrays)."""
    return [np.any(s != s0, axis=0) for s, s0 in zip(slopes, slopes0, strict=True)]


def _pattern_norms(s: np.ndarray, r: np.ndarray, p: np.ndarray) -> np.ndarray:
    """`||(s_u s_u^T - r_u r_u^T) * p||_F` for every column u of s, r (N, m) and a symmetric
    (N, N) p, from `sum_ij (s_i s_j - r_i r_j)^2 p_ij^2 = a^T q a - 2 b^T q b + c^T q c` with
    `q = p * p`, `a = s * s`, `b = s * r`, `c = r * r` (three N x N x m products in all)."""
    q = p * p
    a, b, c = s * s, s * r, r * r
    sq = np.sum(a * (q @ a), axis=0) - 2 * np.sum(b * (q @ b), axis=0) + np.sum(c * (q @ c), axis=0)
    return np.sqrt(np.maximum(sq, 0.0))


def flip_coherence(
    net: MLP,
    params: Params,
    h: np.ndarray,
    slopes: np.ndarray,
    slopes0: np.ndarray,
    outputs: str = "full",
    flip_norm: float | None = None,
) -> float:
    """`||sum_u F_u||_F / sum_u ||F_u||_F` over the flipped units u of the last hidden layer,
    `F_u` unit u's contribution to that layer's term of the flip part:
    `F_u = (g_u g_u^T - g0_u g0_u^T) * (c_L^2 h h^T + (c^b_L)^2)`, `g_u = s_u df/dh_u` the
    gradient at its pre-activation with the current / initial phi' (`s_u`, `s0_u`: (N,)),
    `df_a/dh_u = c W_out[u, a]` (per output pair for K > 1, or their average, `outputs`).
    At depth 1 the F_u sum to the whole flip part. `h` (N, n_{L-1}): the current inputs of the
    last hidden layer; `slopes`, `slopes0` (N, width): its current and initial phi'. 1 when the
    flips add coherently (one flip: exactly 1), about 1/sqrt(#flips) for random signs; NaN
    without a flip. `flip_norm`: `||sum_u F_u||_F` where the caller has it (at depth 1, the norm
    of the whole flip part), saving its (N K)^2 x flips product."""
    units = np.flatnonzero(np.any(slopes != slopes0, axis=0))
    if len(units) == 0:
        return math.nan
    n, k, L = len(h), net.outputs, net.depth
    mean = outputs == "mean" and k > 1
    c, cb = net.multipliers, net.bias_multipliers
    p = c[L - 1] ** 2 * (h @ h.T) + cb[L - 1] ** 2
    df_dh = c[L] * params[L][0][units]  # (m, K)
    s, s0 = slopes[:, units], slopes0[:, units]
    if flip_norm is None:
        g, g0 = by_output(s, df_dh), by_output(s0, df_dh)
        # g g^T - g0 g0^T as the symmetric part of (g - g0)(g + g0)^T: one product, not two
        total = output_gram(g - g0, g + g0, n, n, k, mean)
        flip_norm = float(np.linalg.norm(times_inputs((total + total.T) / 2, p, k, mean)))
    # ||F_u||_F: the (N, N) pattern term times ||df/dh_u (df/dh_u)^T||_F = ||df/dh_u||^2, or
    # for the output average (1/K) ||df/dh_u||^2
    weight = np.sum(df_dh * df_dh, axis=1) / (k if mean else 1)
    return float(flip_norm / (weight @ _pattern_norms(s, s0, p)))


def flip_metrics(
    net: MLP,
    params: Params,
    x: np.ndarray,
    slopes0: list[np.ndarray],
    k_t: np.ndarray,
    k_0: np.ndarray,
    outputs: str = "full",
) -> dict[str, float]:
    """The metrics of `flip_names` at parameters `params` (module docstring, docs/metrics.md):
    `x` the training inputs, `slopes0` their initial phi' per hidden layer
    (`forward_cache(...).slopes`), `k_t`, `k_0` the current and initial training kernels in the
    form `outputs` ("full" or "mean" for K > 1). Undefined ones are NaN."""
    cache = forward_cache(net, params, as_inputs(net, x))
    nan = math.nan
    mt = dict.fromkeys(flip_names(net.depth), nan)
    piecewise = net.activation in PIECEWISE_LINEAR
    masks = flipped(cache.slopes, slopes0) if piecewise else []
    counts = [int(m.sum()) for m in masks] if piecewise else [0] * net.depth
    mt["flipped_units"] = float(sum(counts))
    for l, count in enumerate(counts):
        mt[f"flipped_units_layer{l + 1}"] = float(count)
    if piecewise and sum(counts) == 0:  # the same pattern: Theta_t^(s_0) = Theta_t
        mt.update(kernel_drift_flip=0.0, kernel_drift_smooth=kernel_drift(k_t, k_0))
        return mt
    form = outputs if net.outputs > 1 else "full"
    k_frozen = empirical_ntk(net, params, x, outputs=form, slopes=slopes0)
    norm0, flip_norm = float(np.linalg.norm(k_0)), float(np.linalg.norm(k_t - k_frozen))
    slope_part = flip_norm / norm0
    if not piecewise:
        mt["kernel_drift_phi_prime"] = slope_part
        return mt
    mt["kernel_drift_flip"] = slope_part
    mt["kernel_drift_smooth"] = float(np.linalg.norm(k_frozen - k_0)) / norm0
    h = cache.inputs[net.depth - 1]  # the last hidden layer's inputs
    whole = flip_norm if net.depth == 1 else None  # depth 1: the F_u sum to the flip part
    mt["flip_coherence"] = flip_coherence(
        net, params, h, cache.slopes[-1], slopes0[-1], form, whole
    )
    return mt
