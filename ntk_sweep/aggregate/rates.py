"""The width exponents the theory expects (docs/expected_rates.md, MATH.md s.6) and the
comparison of a slope CI with them. Pure; no MLflow / matplotlib."""

from __future__ import annotations

import math

import numpy as np

# Activations (ntk_sweep.core.network.ACTIVATIONS and common others) by smoothness, MATH.md s.6
RELU_LIKE = ("relu", "leaky_relu", "step", "abs", "hardtanh", "relu6")

SMOOTH = ("erf", "tanh", "linear", "gelu", "sigmoid", "softplus", "silu", "swish", "sin")


def expected_rate(
    metric: str,
    activation: str | None = None,
    parameterization: str | None = None,
    optimizer: str | None = None,
) -> tuple[float, str]:
    """The width exponent theory expects for ``metric`` (docs/expected_rates.md, MATH.md s.6).

    Returns (slope, source); slope NaN with the reason when there is none. NTK parameterization:
    kernel drift and linearisation / kernel-prediction error n^-1/2 for relu-like (non-smooth)
    activations (activation-pattern flips), n^-1 for smooth ones (Dyer & Gur-Ari 2019; Huang &
    Yau 2019); kernel distance is quadratic in the drift (1 - cos of a small perturbation), so
    twice that exponent; parameter movement and the init fluctuation Theta_0 - Theta_inf
    (analytic_pred_error) n^-1/2 (Jacot et al. 2018; Lee et al. 2019). mean_field: O(1), 0
    (Mei et al. 2018; Chizat & Bach 2019). The rates hold for every optimiser linear in the
    gradient (gd, sgd, momentum: the same lazy-training argument); adam, the negative control,
    has none (its per-parameter normalisation is not a function of the NTK; core.optimizers).
    """
    m = str(metric)
    if optimizer == "adam":
        return math.nan, "no expected rate under adam (negative control: no kernel form)"
    if parameterization == "mean_field":
        return 0.0, "O(1) in mean_field (Mei et al. 2018)"
    if parameterization not in (None, "ntk"):
        return math.nan, f"no expected rate for parameterization {parameterization}"
    if m.startswith("param_movement"):
        return -0.5, "n^-1/2 (Jacot et al. 2018; Lee et al. 2019)"
    if m.startswith("analytic_pred_error"):
        return -0.5, "n^-1/2: Theta_0 - Theta_inf at init (CLT)"
    if not m.startswith(("kernel_drift", "kernel_distance", "lin_error", "kernel_pred_error")):
        return math.nan, f"no expected rate for {m}"
    act = str(activation) if activation is not None else ""
    if act in RELU_LIKE:
        base, why = -0.5, f"non-smooth {act}"
    elif act in SMOOTH:
        base, why = -1.0, f"smooth {act}, Dyer & Gur-Ari 2019"
    else:
        return math.nan, f"no expected rate for activation {act or '(unknown)'}"
    if m.startswith("kernel_distance"):
        return 2 * base, f"{why}; distance ~ drift^2"
    return base, why


def compare_with_expected(lo: float, hi: float, expected: float) -> str:
    """ "consistent" (the CI contains the expected slope), "faster" (CI entirely below it: falls
    faster), "slower" (entirely above), or "" when either is unknown."""
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(expected)):
        return ""
    if lo <= expected <= hi:
        return "consistent"
    return "faster" if hi < expected else "slower"
