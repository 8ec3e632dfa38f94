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
(`kernel_drift_slope`), not a flip part.
"""

from __future__ import annotations

import math

import numpy as np

from ntk_sweep.core.kernels import _by_output, _gram, _times_inputs, empirical_ntk, kernel_drift
from ntk_sweep.core.network import MLP, Params, as_inputs, forward_cache

# activations whose phi' is piecewise constant: a change of phi' is a flip across a kink
PIECEWISE_LINEAR = ("relu", "linear")


def flip_names(depth: int) -> list[str]:
    """The per-log-step metrics of this module (docs/metrics.md), in logging order."""
    return [
        "kernel_drift_flip",
        "kernel_drift_smooth",
        "kernel_drift_slope",
        "flipped_units",
        *[f"flipped_units_layer{l + 1}" for l in range(depth)],
        "flip_coherence",
    ]


def flipped(slopes: list[np.ndarray], slopes0: list[np.ndarray]) -> list[np.ndarray]:
    """Per hidden layer, the boolean mask (width,) of the units whose phi' differs from its
    initial value at some input (rows of the (N, width) slope arrays)."""
    return [np.any(s != s0, axis=0) for s, s0 in zip(slopes, slopes0, strict=True)]


def _pair_norm(s: np.ndarray, r: np.ndarray, p: np.ndarray) -> float:
    """`||(s s^T - r r^T) * p||_F` for vectors s, r (N,) and a symmetric (N, N) p: only the rows
    and columns where s != r are nonzero, so only those rows are formed."""
    rows = np.flatnonzero(s != r)
    block = (s[rows, None] * s[None, :] - r[rows, None] * r[None, :]) * p[rows]
    corner = block[:, rows]
    return math.sqrt(max(2 * float(np.vdot(block, block)) - float(np.vdot(corner, corner)), 0.0))


def flip_coherence(
    net: MLP,
    params: Params,
    h: np.ndarray,
    slopes: np.ndarray,
    slopes0: np.ndarray,
    outputs: str = "full",
) -> float:
    """`||sum_u F_u||_F / sum_u ||F_u||_F` over the flipped units u of the last hidden layer,
    `F_u` unit u's contribution to that layer's term of the flip part:
    `F_u = (g_u g_u^T - g0_u g0_u^T) * (c_L^2 h h^T + (c^b_L)^2)`, `g_u = s_u df/dh_u` the
    gradient at its pre-activation with the current / initial phi' (`s_u`, `s0_u`: (N,)),
    `df_a/dh_u = c W_out[u, a]` (per output pair for K > 1, or their average, `outputs`).
    At depth 1 the F_u sum to the whole flip part. `h` (N, n_{L-1}): the current inputs of the
    last hidden layer; `slopes`, `slopes0` (N, width): its current and initial phi'. 1 when the
    flips add coherently (one flip: exactly 1), about 1/sqrt(#flips) for random signs; NaN
    without a flip."""
    units = np.flatnonzero(np.any(slopes != slopes0, axis=0))
    if len(units) == 0:
        return math.nan
    n, k, L = len(h), net.outputs, net.depth
    mean = outputs == "mean" and k > 1
    c, cb = net.multipliers, net.bias_multipliers
    p = c[L - 1] ** 2 * (h @ h.T) + cb[L - 1] ** 2
    df_dh = c[L] * params[L][0][units]  # (m, K)
    s, s0 = slopes[:, units], slopes0[:, units]
    g, g0 = _by_output(s, df_dh), _by_output(s0, df_dh)
    total = _gram(g, g, n, n, k, mean) - _gram(g0, g0, n, n, k, mean)
    total = _times_inputs(total, p, k, mean)
    # ||F_u||_F: the (N, N) pattern term times ||df/dh_u (df/dh_u)^T||_F = ||df/dh_u||^2, or
    # for the output average (1/K) ||df/dh_u||^2
    weight = np.sum(df_dh * df_dh, axis=1) / (k if mean else 1)
    parts = sum(w * _pair_norm(a, b, p) for w, a, b in zip(weight, s.T, s0.T, strict=True))
    return float(np.linalg.norm(total) / parts)


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
    norm0 = float(np.linalg.norm(k_0))
    slope_part = float(np.linalg.norm(k_t - k_frozen)) / norm0
    if not piecewise:
        mt["kernel_drift_slope"] = slope_part
        return mt
    mt["kernel_drift_flip"] = slope_part
    mt["kernel_drift_smooth"] = float(np.linalg.norm(k_frozen - k_0)) / norm0
    mt["flip_coherence"] = flip_coherence(
        net, params, cache.inputs[net.depth - 1], cache.slopes[-1], slopes0[-1], form
    )
    return mt
