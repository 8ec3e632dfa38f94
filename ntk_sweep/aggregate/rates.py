"""The width exponents the theory expects (docs/expected_rates.md, MATH.md s.6) and the
comparison of a slope CI with them. Pure; no MLflow / matplotlib."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Activations (ntk_sweep.core.network.ACTIVATIONS and common others) by smoothness, MATH.md s.6
RELU_LIKE = ("relu", "leaky_relu", "step", "abs", "hardtanh", "relu6")

SMOOTH = ("erf", "tanh", "linear", "gelu", "sigmoid", "softplus", "silu", "swish", "sin")

# The relu drift's decomposition (MATH.md s.6), logged per run when the model measures it.
FLIP_METRIC = "kernel_drift_flip"
SMOOTH_PART_METRIC = "kernel_drift_smooth"
FLIPPED_UNITS_METRIC = "flipped_units"
COHERENCE_METRIC = "flip_coherence"

# The exponent of a lazy-training quantity along the output scale alpha (Chizat & Bach 2019:
# the relative change of the Jacobian of alpha (f - f_0) trained with lr / alpha^2 is O(1/alpha)).
ALPHA_KEYS = ("model.alpha", "alpha")


class Terms(NamedTuple):
    """One theory for a metric: leading exponent ``p``, next order ``q`` (NaN: none), the kind of
    statement ("rate": derived expansion; "bound"; "heuristic": MATH.md s.6) and its source."""

    p: float
    q: float
    kind: str
    source: str


def expected_terms(
    metric: str,
    activation: str | None = None,
    parameterization: str | None = None,
    optimizer: str | None = None,
) -> tuple[list[Terms], str]:
    """The theories for ``metric``: a list of :class:`Terms` (the first one is the primary, the
    others accepted alternatives), or an empty list and the reason.

    NTK parameterization (docs/expected_rates.md, MATH.md s.6):

    - smooth activations (erf, tanh, ...): drift / linearisation error n^-1, next order n^-2
      (the 1/n expansion of Dyer & Gur-Ari 2019 goes in powers of 1/n; Huang & Yau 2019): a rate;
    - relu-like, total drift: n^-1/2 if the activation flips add coherently, next order n^-3/4
      (their incoherent fluctuation); n^-3/4 if they cancel, next order n^-1 (the smooth part)
      (heuristic, MATH.md s.6, docs/expected_rates.md). Lee et al. 2019's n^-1/2 is a *bound*
      for every activation, not a rate;
    - ``kernel_drift_flip``: n^-1/2 (coherent, next n^-3/4) or n^-3/4 (incoherent, next n^-1);
      ``kernel_drift_smooth``: n^-1, next n^-2; ``flipped_units*``: n^+1/2 (heuristic, no next
      order); ``flip_coherence``: n^0 (coherent) or n^-1/4 (incoherent);
    - kernel distance: twice the drift's exponents (1 - cos is quadratic in the drift);
    - parameter movement n^-1/2, next n^-1 (one hidden layer: |theta_0| ~ sqrt(n)); the init
      fluctuation (``analytic_pred_error``) n^-1/2 (CLT), next n^-1.

    mean_field: O(1), exponent 0 (Mei et al. 2018). adam: none (negative control)."""
    m = str(metric)
    nan = math.nan
    if optimizer == "adam":
        return [], "no expected rate under adam (negative control: no kernel form)"
    if parameterization == "mean_field":
        return [Terms(0.0, nan, "rate", "O(1) in mean_field (Mei et al. 2018)")], ""
    if parameterization not in (None, "ntk"):
        return [], f"no expected rate for parameterization {parameterization}"
    if m.startswith("param_movement"):
        return [Terms(-0.5, -1.0, "rate", "n^-1/2 (Jacot et al. 2018; Lee et al. 2019)")], ""
    if m.startswith("analytic_pred_error"):
        return [Terms(-0.5, -1.0, "rate", "n^-1/2: Theta_0 - Theta_inf at init (CLT)")], ""
    act = str(activation) if activation is not None else ""
    relu, smooth = act in RELU_LIKE, act in SMOOTH
    flips = (
        Terms(-0.5, -0.75, "heuristic", f"{act}, coherent flips; Lee et al.: a bound"),
        Terms(-0.75, -1.0, "heuristic", f"{act}, incoherent flips (MATH.md s.6)"),
    )
    if m.startswith(FLIPPED_UNITS_METRIC):
        if relu:
            # next order: the flip probability's n^-1 term, a constant number of flips
            why = f"{act}: ~n^1/2 units flip (MATH.md s.6)"
            return [Terms(0.5, 0.0, "heuristic", why)], ""
        return [], f"no expected rate for {m} with activation {act or '(unknown)'}"
    if m == COHERENCE_METRIC:
        if relu:
            coherent = Terms(0.0, nan, "heuristic", "coherent flips: flat (MATH.md s.6)")
            return [coherent, Terms(-0.25, nan, "heuristic", "incoherent flips: n^-1/4")], ""
        return [], f"no expected rate for {m} with activation {act or '(unknown)'}"
    if not m.startswith(("kernel_drift", "kernel_distance", "lin_error", "kernel_pred_error")):
        return [], f"no expected rate for {m}"
    if m == FLIP_METRIC:
        return (list(flips), "") if relu else ([], f"no flips for activation {act or '(unknown)'}")
    if m == SMOOTH_PART_METRIC or smooth:
        kind = "rate" if smooth else "heuristic"
        why = f"smooth {act}, Dyer & Gur-Ari 2019" if smooth else f"{act}: smooth part, MATH.md s.6"
        terms = [Terms(-1.0, -2.0, kind, why)]
    elif relu:
        terms = list(flips)
    else:
        return [], f"no expected rate for activation {act or '(unknown)'}"
    if m.startswith("kernel_distance"):
        return [t._replace(p=2 * t.p, q=2 * t.q, source=f"{t.source}; distance ~ drift^2")
                for t in terms], ""  # fmt: skip
    return terms, ""


def expected_rate(
    metric: str,
    activation: str | None = None,
    parameterization: str | None = None,
    optimizer: str | None = None,
) -> tuple[float, str]:
    """The primary width exponent theory expects for ``metric``: (slope, source), slope NaN with
    the reason when there is none (:func:`expected_terms`, whose first theory this is).

    NTK parameterization: kernel drift and linearisation / kernel-prediction error n^-1/2 for
    relu-like activations (coherent activation flips, a heuristic; n^-3/4 if they cancel),
    n^-1 for smooth ones (Dyer & Gur-Ari 2019; Huang & Yau 2019); kernel distance twice that;
    parameter movement and the init fluctuation n^-1/2. mean_field: 0 (Mei et al. 2018). The
    rates hold for every optimiser linear in the gradient (gd, sgd, momentum: the same
    lazy-training argument); adam, the negative control, has none.
    """
    terms, reason = expected_terms(metric, activation, parameterization, optimizer)
    if not terms:
        return math.nan, reason
    return terms[0].p, terms[0].source


def expected_axis_rate(metric: str, axis: str) -> tuple[float, str]:
    """The exponent theory expects along a swept axis other than the width: along the output
    scale alpha, the drift (and every lazy-training quantity: distance twice, linearisation
    error, parameter movement) falls as 1/alpha (Chizat & Bach 2019, lazy training); none along
    the learning rate. Returns (slope, source) or (NaN, reason)."""
    m = str(metric)
    if axis not in ALPHA_KEYS:
        return math.nan, f"no theory for the trend along {axis}"
    if m.startswith("kernel_distance"):
        return -2.0, "1/alpha^2: distance ~ drift^2 (Chizat & Bach 2019)"
    if m.startswith(("kernel_drift", "lin_error", "kernel_pred_error", "param_movement")):
        return -1.0, "1/alpha (lazy training, Chizat & Bach 2019)"
    return math.nan, f"no theory for {m} along {axis}"


def compare_with_expected(lo: float, hi: float, expected: float) -> str:
    """ "consistent" (the CI contains the expected slope), "faster" (CI entirely below it: falls
    faster), "slower" (entirely above), or "" when either is unknown."""
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(expected)):
        return ""
    if lo <= expected <= hi:
        return "consistent"
    return "faster" if hi < expected else "slower"
