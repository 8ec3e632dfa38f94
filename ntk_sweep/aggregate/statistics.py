"""Statistics on plain DataFrames (one row per run): Student-t intervals of seed means,
log-log contrasts and power-law fits against width (all widths, widest widths, local slopes),
the default grouping keys. Pure pandas / NumPy (SciPy for the t quantile): no MLflow, no
matplotlib."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ntk_sweep.aggregate.common import (
    AXIS_KEYS,
    CI_LEVEL,
    FINISHED,
    FIT_COLUMNS,
    IGNORED_PARAM_PREFIXES,
    LR_MAX_METRIC,
    MEAN_CI_METHOD,
    MIN_ASYMPTOTIC_WIDTHS,
    MIN_WIDTHS_FOR_WINDOW,
    SEED_KEY,
    SLOPE_CI_METHOD,
    WIDTH_KEYS,
    _finite,
    _fixed,
    _fmt_value,
    _groups,
    _is_finished,
    _label,
    _width_key,
)
from ntk_sweep.aggregate.rates import (
    COHERENCE_METRIC,
    FLIP_METRIC,
    FLIPPED_UNITS_METRIC,
    SMOOTH_PART_METRIC,
    Terms,
    compare_with_expected,
    expected_axis_rate,
    expected_terms,
)


def t_interval(
    mean: np.ndarray | float, var_of_mean: np.ndarray | float, dof: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided 95 % Student-t interval ``mean -+ t_{0.975, dof} sqrt(var_of_mean)``.

    Vectorised; NaN where ``dof`` < 1 or the variance is not finite. With ``n`` seeds,
    ``var_of_mean = s^2 / n`` and ``dof = n - 1`` give the exact interval for normal seeds
    (the percentile bootstrap it replaces covered 74 % at n = 3)."""
    from scipy import stats

    mean, var_of_mean, dof = (np.asarray(a, dtype=float) for a in (mean, var_of_mean, dof))
    with np.errstate(invalid="ignore", over="ignore"):
        ok = (dof >= 1) & np.isfinite(var_of_mean) & np.isfinite(mean)
        half = stats.t.ppf(1 - (1 - CI_LEVEL) / 2, np.where(ok, dof, 1.0)) * np.sqrt(
            np.where(ok, var_of_mean, 0.0)
        )
        half = np.where(ok, half, np.nan)
    return mean - half, mean + half


def mean_ci(values, positive: bool = False) -> tuple[float, float]:
    """Student-t 95 % CI of the seed mean (``n - 1`` dof; NaN with fewer than 2 values).

    ``positive`` (a metric that cannot be negative, e.g. a drift): the interval of the log of
    the mean (delta method, :func:`log_contrast` with the one coefficient 1), back-transformed:
    ``mean * exp(-+ t s / (sqrt(n) mean))``, so that its lower bound stays positive."""
    v = _finite(values)
    if len(v) < 2:
        return math.nan, math.nan
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if positive and v.mean() > 0:
            _, lo, hi, _ = log_contrast(np.ones(1), [v.mean()], [v.var(ddof=1)], [len(v)])
            return float(np.exp(lo)), float(np.exp(hi))
        lo, hi = t_interval(v.mean(), v.var(ddof=1) / len(v), len(v) - 1)
    return float(lo), float(hi)


def log_contrast(
    coef: np.ndarray, means: np.ndarray, variances: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A linear contrast ``sum_j coef_j log(mean_j)`` of per-width seed means, with its 95 % CI.

    ``coef`` (k,), ``means`` / ``variances`` (seed variance, ddof 1) / ``counts`` (..., k): the
    last axis is the width, leading axes are vectorised (the coverage simulation runs 2000
    sweeps at once). Var(log mean_j) ~ s_j^2 / (n_j mean_j^2) (delta method); the widths are
    independent, so Var = sum coef_j^2 Var_j, and the dof are Welch-Satterthwaite's,
    ``(sum c_j^2 v_j)^2 / sum (c_j^2 v_j)^2 / (n_j - 1)``: the seeds, not the widths, are the
    replicates (a fit on means with t_{k-2} would ignore them, a bootstrap over 3 seeds
    under-covers). Returns (estimate, ci_low, ci_high, dof); the CI is NaN where a width has
    fewer than 2 seeds.
    """
    coef = np.asarray(coef, dtype=float)
    means, variances, counts = (np.asarray(a, dtype=float) for a in (means, variances, counts))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        est = (coef * np.log(means)).sum(axis=-1)
        v = coef**2 * variances / (counts * means**2)
        var = v.sum(axis=-1)
        dof = var**2 / (v**2 / (counts - 1)).sum(axis=-1)
        dof = np.where((counts >= 2).all(axis=-1), dof, np.nan)
        dof = np.where(var > 0, dof, np.nan)
    lo, hi = t_interval(est, var, dof)
    return est, lo, hi, dof


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Weighted least squares ``y ~ theta_0 x_0 + theta_1 x_1`` (two columns), vectorised.

    ``x`` (k, 2), ``y`` / ``w`` (..., k). Returns (theta (..., 2), cov (..., 2, 2) =
    (X^T W X)^-1, chi2 (...) = sum w (y - X theta)^2); NaN where the weights are not finite or
    the system is singular (closed-form 2 x 2 inverse: no exception on a bad element)."""
    scale = x[-1]  # the widest width's column values: the system is better conditioned
    xs = x / scale
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a = np.einsum("ki,...k,kj->...ij", xs, w, xs)
        r = np.einsum("ki,...k->...i", xs, w * y)
        det = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] ** 2
        rows = [[a[..., 1, 1], -a[..., 0, 1]], [-a[..., 1, 0], a[..., 0, 0]]]
        inv = np.stack([np.stack(r, -1) for r in rows], -2) / det[..., None, None]
        theta_s = np.einsum("...ij,...j->...i", inv, r)
        chi2 = (w * (y - theta_s @ xs.T) ** 2).sum(-1)
    return theta_s / scale, inv / np.outer(scale, scale), chi2


def two_term_fit(
    widths,
    means,
    variances,
    counts,
    p: float,
    q: float,
    n_boot: int = 999,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The finite-width form ``mean(n) = a n^p + b n^q`` (theory's exponents, free a, b) fitted to
    per-width seed means, against the free power law ``c n^s`` on the same means.

    ``widths`` (k,); ``means``, ``variances`` (seed variance, ddof 1), ``counts`` (..., k): the
    leading axes are vectorised (the verdict simulation fits 500 sweeps at once). Weighted least
    squares, weights ``n_j / s_j^2`` (the variance of each width's mean), linear in (a, b); the
    free power law is the weighted fit of log(mean) on log(n) with the delta-method weights
    ``n_j mean_j^2 / s_j^2`` (the same residuals to first order). Both have 2 parameters, so
    their chi^2 difference is their AIC difference (``delta_aic``; > 0: the free law fits
    better).

    With 3 seeds the weights are estimated from 2 dof each, so chi^2 is far from its nominal
    distribution (each term ~ F(1, 2), infinite mean) and a Wald interval for ``a`` too narrow.
    Both are calibrated by a parametric bootstrap under the fitted two-term model (``n_boot``
    draws, seed ``seed``: means ~ N(fit_j, s_j^2 / n_j), variances ~ s_j^2 chi^2_{n_j-1} /
    (n_j - 1)), refitting each draw: ``p_value`` (goodness of fit: the share of draws with a
    chi^2 at least the observed one), ``p_aic`` (the same for ``delta_aic``: how unusual the free
    law's advantage is if the two-term model holds), and the bootstrap-t interval of ``a``.
    ``n_star``: the width beyond which the leading term dominates to 10 %,
    ``|b n^q| <= 0.1 |a n^p|``, ``(10 |b / a|)^(1 / (p - q))``.

    Returns a dict of arrays of the leading shape: a, a_ci_low, a_ci_high, b, chi2, p_value,
    delta_aic, p_aic, n_star. NaN where a width has fewer than 2 seeds or no spread.
    """
    n = np.asarray(widths, dtype=float)
    means, variances, counts = (np.asarray(v, dtype=float) for v in (means, variances, counts))
    x = np.stack([n**p, n**q], -1)
    xlog = np.stack([np.ones_like(n), np.log(n)], -1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = np.where((counts >= 2) & (variances > 0), counts / variances, np.nan)
    theta, cov, chi2 = _wls(x, means, w)

    def free_chi2(m, weights):
        with np.errstate(divide="ignore", invalid="ignore"):
            return _wls(xlog, np.log(np.where(m > 0, m, np.nan)), m**2 * weights)[2]

    delta = chi2 - free_chi2(means, w)
    rng = np.random.default_rng(seed)
    shape = (n_boot, *means.shape)
    fitted = theta @ x.T
    dof = np.maximum(counts - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_b = fitted + np.sqrt(variances / counts) * rng.standard_normal(shape)
        v_b = variances * rng.chisquare(dof, size=shape) / dof
        w_b = counts / v_b
    theta_b, cov_b, chi2_b = _wls(x, m_b, w_b)
    delta_b = chi2_b - free_chi2(m_b, w_b)
    se = np.sqrt(cov[..., 0, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_b = (theta_b[..., 0] - theta[..., 0]) / np.sqrt(cov_b[..., 0, 0])
        t_lo, t_hi = np.nanquantile(t_b, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2], axis=0)
        # a free law that cannot be fitted (a mean <= 0) has no advantage: counts as not larger
        p_aic = (1 + (np.nan_to_num(delta_b, nan=-np.inf) >= delta).sum(0)) / (n_boot + 1)
        p_value = (1 + (chi2_b >= chi2).sum(0)) / (n_boot + 1)
        a, b = theta[..., 0], theta[..., 1]
        n_star = (10 * np.abs(b / a)) ** (1 / (p - q))
    bad = ~np.isfinite(chi2)
    out = {
        "a": a,
        "a_ci_low": a - t_hi * se,
        "a_ci_high": a - t_lo * se,
        "b": b,
        "chi2": chi2,
        "p_value": np.where(bad, np.nan, p_value),
        "delta_aic": delta,
        "p_aic": np.where(bad | ~np.isfinite(delta), np.nan, p_aic),
        "n_star": n_star,
    }
    return {k: np.where(bad, np.nan, v) for k, v in out.items()}


OUTCOMES = ("consistent", "consistent with correction", "inconsistent")
# Where the flips dominate the drift and their count is still settling towards n^1/2, the drift's
# exponent in the window is the count's, less 1, plus the coherence's (the flip part is
# #flips / n x coherence x the size of one flip): `explained_by_flips`.
MECHANISM_OUTCOME = "consistent with the mechanism"
# the metrics whose exponent is the drift's (docs/expected_rates.md)
_DRIFT_LIKE = ("kernel_drift", "lin_error", "kernel_pred_error")

P_ADEQUATE = 0.05  # the two-term model is adequate when neither bootstrap test rejects it at 5 %


def asymptotic_count(k: int) -> int:
    """How many of ``k`` widths the asymptotic (single power law) fit uses: the widest half, at
    least :data:`MIN_ASYMPTOTIC_WIDTHS`; all of them below :data:`MIN_WIDTHS_FOR_WINDOW`."""
    return k if k < MIN_WIDTHS_FOR_WINDOW else max(MIN_ASYMPTOTIC_WIDTHS, math.ceil(k / 2))


def two_term_count(k: int) -> int:
    """How many of ``k`` widths the two-term fit uses: the widest two thirds, at least 3 (the
    next-order term describes the approach to the asymptote, so it reaches further down than the
    single power law; the narrowest widths, where the drift is O(1), need still higher orders)."""
    return min(k, max(MIN_ASYMPTOTIC_WIDTHS, math.ceil(2 * k / 3)))


def judge_rate(widths, means, variances, counts, terms, n_boot: int = 999, seed: int = 0) -> dict:
    """The verdict on one metric's width exponent, vectorised over sweeps.

    ``widths`` (k,) increasing; ``means`` / ``variances`` / ``counts`` (..., k); ``terms``: the
    theories (:func:`expected_terms`: leading exponent p, next order q), the first the primary.

    - "consistent": the asymptotic single-power-law slope CI (:func:`asymptotic_count` widest
      widths, :func:`log_contrast`) contains some theory's p;
    - "consistent with correction": it contains none, but ``a n^p + b n^q`` (:func:`two_term_fit`
      over the :func:`two_term_count` widest widths) is adequate for some theory: bootstrap
      goodness-of-fit p-value and comparison-with-the-free-power-law p-value both >=
      :data:`P_ADEQUATE`, and ``a`` > 0 with its CI excluding 0;
    - "inconsistent": neither.

    Returns arrays: ``outcome`` (text), ``theory`` (index of the theory reported: the first
    consistent one, else the adequate one with the largest smaller p-value, else 0), ``slope``
    / ``slope_ci_low`` / ``slope_ci_high`` (asymptotic fit), and the two-term fields of that
    theory (:func:`two_term_fit`'s keys), NaN where it has no next order or fewer than 3 widths.
    """
    w = np.asarray(widths, dtype=float)
    means, variances, counts = (np.asarray(v, dtype=float) for v in (means, variances, counts))
    k = len(w)
    na, nt = asymptotic_count(k), two_term_count(k)
    slope, lo, hi, _ = log_contrast(
        slope_coefficients(np.log(w[-na:])), means[..., -na:], variances[..., -na:],
        counts[..., -na:],
    )  # fmt: skip
    shape = means.shape[:-1]
    fits, consistent, adequate, score = [], [], [], []
    for i, t in enumerate(terms):
        if np.isfinite(t.q) and nt >= 3:
            f = two_term_fit(
                w[-nt:], means[..., -nt:], variances[..., -nt:], counts[..., -nt:], t.p, t.q,
                n_boot=n_boot, seed=seed + i,
            )  # fmt: skip
        else:
            f = {key: np.full(shape, np.nan) for key in _TWO_TERM_KEYS}
        fits.append(f)
        consistent.append((lo <= t.p) & (t.p <= hi))
        small_p = np.fmin(f["p_value"], f["p_aic"])
        adequate.append((small_p >= P_ADEQUATE) & (f["a_ci_low"] > 0))
        score.append(np.where(adequate[-1], small_p, -1.0))
    consistent, adequate = np.array(consistent), np.array(adequate)
    any_c, any_a = consistent.any(0), adequate.any(0)
    theory = np.where(any_c, consistent.argmax(0), np.where(any_a, np.argmax(score, 0), 0))
    outcome = np.where(any_c, OUTCOMES[0], np.where(any_a, OUTCOMES[1], OUTCOMES[2]))
    out = {"outcome": outcome, "theory": theory, "slope": slope}
    out.update(slope_ci_low=lo, slope_ci_high=hi)
    for key in _TWO_TERM_KEYS:
        out[key] = np.choose(theory, [f[key] for f in fits])
    return out


_TWO_TERM_KEYS = ("a", "a_ci_low", "a_ci_high", "b", "chi2", "p_value", "delta_aic", "p_aic")
_TWO_TERM_KEYS += ("n_star",)


def slope_coefficients(log_widths: np.ndarray) -> np.ndarray:
    """Least-squares slope as a contrast: ``slope = sum_j c_j y_j``, ``c = (x - xbar) / Sxx``
    (the same number as ``numpy.polyfit(x, y, 1)[0]``)."""
    x = np.asarray(log_widths, dtype=float)
    xc = x - x.mean()
    return xc / (xc**2).sum()


def summarize(
    df: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str],
) -> pd.DataFrame:
    """One row per group: counts by status and, per metric, n / mean / std / Student-t 95 % CI.

    ``df`` has one row per run with columns ``by``, ``metrics`` and optionally ``status``
    (MLflow run status; rows not ``FINISHED`` are counted and listed, not used) and
    ``run_name`` / ``failure_reason``. Columns of the result: the ``by`` keys, ``n_runs``,
    ``n_seeds`` (finished runs), ``n_failed``, ``n_killed``, ``n_running`` (RUNNING or
    SCHEDULED), ``excluded_runs`` ("name [STATUS: reason]; ..."), then for each metric
    ``<m>_n``, ``<m>_mean``, ``<m>_std`` (ddof=1), ``<m>_ci_low``, ``<m>_ci_high`` (the
    Student-t interval of the seed mean, :func:`mean_ci`; column ``ci_method`` says so). A
    metric whose finished values are all positive (drift, errors, movement) gets the interval
    on the log scale (positive lower bound); one that can be negative (``ntk_lambda_min``) the
    linear one. No bootstrap: with 3 seeds a percentile bootstrap covers about 74 %.
    """
    by, metrics = list(by), list(metrics)
    finished = _is_finished(df)
    status = df["status"].astype(str) if "status" in df.columns else None
    rows = []
    positive = {m: _is_positive(df.loc[finished], m) for m in metrics}
    for values, sub in _groups(df, by):
        row: dict = dict(zip(by, values, strict=True))
        ok = sub[finished.loc[sub.index]]
        row["n_runs"] = len(sub)
        row["n_seeds"] = len(ok)
        st = status.loc[sub.index] if status is not None else pd.Series(FINISHED, index=sub.index)
        row["n_failed"] = int(st.eq("FAILED").sum())
        row["n_killed"] = int(st.eq("KILLED").sum())
        row["n_running"] = int(st.isin(["RUNNING", "SCHEDULED"]).sum())
        row["excluded_runs"] = "; ".join(
            _describe_run(r) for _, r in sub[~st.eq(FINISHED)].iterrows()
        )
        for m in metrics:
            v = _finite(ok[m]) if m in ok.columns else np.array([])
            row[f"{m}_n"] = len(v)
            with np.errstate(over="ignore", invalid="ignore"):
                row[f"{m}_mean"] = float(v.mean()) if len(v) else math.nan
                row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = mean_ci(v, positive[m])
        row["ci_method"] = MEAN_CI_METHOD
        rows.append(row)
    columns = [*by, "n_runs", "n_seeds", "n_failed", "n_killed", "n_running", "excluded_runs"]
    columns.append("ci_method")
    for m in metrics:
        columns += [f"{m}_n", f"{m}_mean", f"{m}_std", f"{m}_ci_low", f"{m}_ci_high"]
    return pd.DataFrame(rows, columns=columns)


def _is_positive(df: pd.DataFrame, metric: str) -> bool:
    """Every finite value of ``metric`` in ``df`` is > 0 (and there is one)."""
    v = _finite(df[metric]) if metric in df.columns else np.array([])
    return bool(len(v) and (v > 0).all())


def _describe_run(r: pd.Series) -> str:
    name = r.get("run_name")
    if name is None or (isinstance(name, float) and math.isnan(name)) or name == "":
        name = str(r.get("run_id", "?"))[:8]
    text = f"{name} [{r.get('status', '?')}"
    reason = r.get("failure_reason")
    if isinstance(reason, str) and reason:
        text += f": {reason}"
    return text + "]"


def fit_power_laws(
    df: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str],
    level: float = 0.3,
    min_widths: int = 2,
) -> pd.DataFrame:
    """Power law ``metric ~ prefactor * width**slope`` per metric and per group of the other keys.

    Least squares of ``log(mean)`` on ``log(width)`` (natural log: ``intercept = log(prefactor)``)
    over the group means of finished runs, using only the widths whose mean is in ``(0, level)``
    (at small width the drift is O(1), outside the asymptotic regime). The slope equals
    ``numpy.polyfit(log(widths), log(means), 1)[0]``. Its 95 % CI (:func:`log_contrast`) treats
    the seeds as the replicates: delta-method variance of each width's log mean, Welch-
    Satterthwaite dof (``slope_dof``), Student t. Also: the asymptotic fit over the widest half
    of the widths (at least 3; ``asym_*``, the all-widths fit when fewer than 4 widths), the
    local slopes between consecutive widths (``local_slopes``, text), the expected slope for
    the group's activation / parameterization (:func:`expected_rate`) and ``comparison`` of the
    asymptotic CI with it; ``window`` says when the slope still changes with width.
    Fewer than ``min_widths`` usable widths gives a row with ``status = "not available"`` and
    the reason, not an exception.

    The width key is the first of ``model.width`` / ``width`` in ``by``; the other keys of ``by``
    split the fits. Returns one row per (metric, group): ``metric``, the other keys, ``group``
    (a label), then :data:`FIT_COLUMNS`.
    """
    by, metrics = list(by), list(metrics)
    wkey = _width_key(by)
    others = [k for k in by if k != wkey]
    columns = ["metric", *others, "group", *FIT_COLUMNS]
    if wkey is None:
        return pd.DataFrame(columns=columns)
    ok = df[_is_finished(df)]
    rows = []
    # keyed by label: a NaN among a group's values (an unset alpha) never equals itself
    mechanisms = {
        _label(others, values): flip_mechanism(sub, wkey) for values, sub in _groups(ok, others)
    }
    for m in metrics:
        # counts and fractions are not small quantities: the level applies to the others
        lvl = math.inf if m.startswith((FLIPPED_UNITS_METRIC, COHERENCE_METRIC)) else level
        for values, sub in _groups(ok, others):
            row: dict = {"metric": m, **dict(zip(others, values, strict=True))}
            row["group"] = _label(others, values)
            row.update(_fit_one(sub, wkey, m, lvl, min_widths))
            terms, reason = expected_terms(
                m,
                _setting(sub, "activation"),
                _setting(sub, "parameterization"),
                _setting(sub, "optimizer", "train"),
            )
            mechanism, why = mechanisms[row["group"]]
            terms = _for_mechanism(m, terms, mechanism)
            row["mechanism"] = why if m != SMOOTH_PART_METRIC and len(terms) == 1 else ""
            expected = terms[0].p if terms else math.nan
            row["expected_slope"] = expected
            row["expected_source"] = terms[0].source if terms else reason
            row["expected_kind"] = terms[0].kind if terms else ""
            row["next_slope"] = terms[0].q if terms else math.nan
            row["theories"] = "; ".join(f"n^{t.p:g} ({t.kind}: {t.source})" for t in terms)
            row["comparison"] = compare_with_expected(
                row["asym_slope_ci_low"], row["asym_slope_ci_high"], expected
            )
            row.update(_judge_row(_width_samples(sub, wkey, m), row, terms))
            rows.append(row)
    explained_by_flips(rows)
    return pd.DataFrame(rows, columns=columns)


def explained_by_flips(rows: list[dict]) -> None:
    """Per group with the flip metrics: a drift-like fit (kernel drift, linearisation and kernel
    prediction errors, the flip part) judged "inconsistent" becomes
    :data:`MECHANISM_OUTCOME` when the flip part dominates at the widest width, the flipped-unit
    count is itself judged consistent with n^1/2 (with or without its next order: a count
    still settling), and the fit's slope CI contains ``mechanism_slope`` = the count's slope - 1
    + the coherence's slope (asymptotic fits: the flip part is #flips / n x coherence x the size
    of one flip, exactly at depth 1). The window is then not yet asymptotic, not a wrong rate.
    In place on ``rows`` (dicts of :func:`fit_power_laws`)."""
    by_group: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_group.setdefault(r["group"], {})[r["metric"]] = r
    for fits in by_group.values():
        units, coh = fits.get(FLIPPED_UNITS_METRIC), fits.get(COHERENCE_METRIC)
        flip, smooth = fits.get(FLIP_METRIC), fits.get(SMOOTH_PART_METRIC)
        if any(r is None or r["status"] != "ok" for r in (units, coh, flip, smooth)):
            continue
        if not units["outcome"] or units["outcome"] == OUTCOMES[2]:
            continue
        if not np.nan_to_num(flip.get("widest_mean", np.nan)) > np.nan_to_num(
            smooth.get("widest_mean", np.nan)
        ):
            continue
        predicted = units["asym_slope"] - 1 + coh["asym_slope"]
        for r in fits.values():
            if r["status"] != "ok" or not str(r["metric"]).startswith(_DRIFT_LIKE):
                continue
            r["mechanism_slope"] = predicted
            lo, hi = r["asym_slope_ci_low"], r["asym_slope_ci_high"]
            if r["outcome"] == OUTCOMES[2] and lo <= predicted <= hi:
                r["outcome"] = MECHANISM_OUTCOME


def flip_mechanism(sub: pd.DataFrame, wkey: str) -> tuple[str, str]:
    """Whether the relu activation flips add coherently, from ``flip_coherence`` (||sum of the
    flips' contributions|| / sum of their norms) along the width: ("coherent" | "incoherent" |
    "", the reason in words). MATH.md s.6: coherent flips keep it O(1) (flat in n), incoherent
    ones make it fall ~ (n^1/2 flips)^-1/2 = n^-1/4. Decided by the slope over all widths: if
    its CI contains both 0 and -1/4 (too few seeds / widths to tell), the median coherence at
    the widest width, > 0.5 coherent (an O(1) fraction of the flips aligned), else incoherent;
    otherwise the nearer of the two (slope above -1/8: coherent). A slope slightly below 0
    (e.g. -0.06 [-0.11, -0.01] on the paper's four points, a count of flips still settling) is
    far from -1/4: the flips add coherently."""
    samples = _width_samples(sub, wkey, COHERENCE_METRIC)
    if len(samples) < 2:
        return "", ""
    widths = sorted(samples)
    s, lo, hi, _ = _contrast_fit(widths, samples)
    ci = f"{COHERENCE_METRIC} n^{s:.2f} [{_fixed(lo, 2)}, {_fixed(hi, 2)}]"
    if np.isfinite(lo) and np.isfinite(hi) and not (lo <= -0.25 and hi >= 0):
        if s > -0.125:
            return "coherent", f"coherent flips ({ci}: nearer 0 than -1/4)"
        return "incoherent", f"incoherent flips ({ci}: nearer -1/4 than 0)"
    median = float(np.median(samples[widths[-1]]))
    kind = "coherent" if median > 0.5 else "incoherent"
    return kind, f"{kind} flips ({ci}; median {median:.2f} at the widest width)"


def _for_mechanism(metric: str, terms: list[Terms], mechanism: str) -> list[Terms]:
    """The relu theories (coherent, incoherent flips) cut to the measured mechanism; the flip
    coherence itself keeps both (it decides between them)."""
    if not mechanism or metric == COHERENCE_METRIC or len(terms) != 2:
        return terms
    return [terms[0] if mechanism == "coherent" else terms[1]]


def _judge_row(samples: dict[float, np.ndarray], row: dict, terms: list[Terms]) -> dict:
    """:func:`judge_rate` on one fit's used widths: the ``outcome`` and two-term columns."""
    out: dict = {"outcome": "", "tt_widths": ""}
    used = [float(x) for x in str(row["widths_used"]).split(";") if x]
    if used:
        out["widest_mean"] = float(samples[used[-1]].mean())
    if row["status"] != "ok" or not terms or row["min_seeds"] < 2:
        return out
    means = [samples[w].mean() for w in used]
    var = [samples[w].var(ddof=1) for w in used]
    counts = [len(samples[w]) for w in used]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        j = judge_rate(used, means, var, counts, terms)
    out["outcome"] = str(j["outcome"])
    if len(terms) > 1:  # the theory the outcome refers to
        t = terms[int(j["theory"])]
        out.update(expected_slope=t.p, next_slope=t.q, expected_source=t.source)
        out["comparison"] = compare_with_expected(j["slope_ci_low"], j["slope_ci_high"], t.p)
    if np.isfinite(j["chi2"]):
        out["tt_widths"] = ";".join(_fmt_value(w) for w in used[-two_term_count(len(used)) :])
    for key in _TWO_TERM_KEYS:
        out["n_star" if key == "n_star" else f"tt_{key}"] = float(j[key])
    return out


def _setting(sub: pd.DataFrame, name: str, section: str = "model") -> str | None:
    """The group's one value of ``<section>.<name>`` (or ``<name>``), None if absent or mixed."""
    for col in (f"{section}.{name}", name):
        if col in sub.columns:
            vals = sub[col].dropna().astype(str).unique()
            return str(vals[0]) if len(vals) == 1 else None
    return None


def _width_samples(sub: pd.DataFrame, wkey: str, metric: str) -> dict[float, np.ndarray]:
    samples: dict[float, np.ndarray] = {}
    if metric in sub.columns:
        for w, g in sub.groupby(wkey, sort=True):
            v = _finite(g[metric])
            if len(v) and np.isfinite(float(w)) and float(w) > 0:
                samples[float(w)] = v
    return samples


def _contrast_fit(widths: Sequence[float], samples: dict[float, np.ndarray]):
    """(slope, ci_low, ci_high, dof) of the least-squares log-log slope over ``widths``."""
    x = np.log(np.asarray(widths, dtype=float))
    means = np.array([samples[w].mean() for w in widths])
    var = np.array([samples[w].var(ddof=1) if len(samples[w]) > 1 else np.nan for w in widths])
    counts = np.array([len(samples[w]) for w in widths], dtype=float)
    est, lo, hi, dof = log_contrast(slope_coefficients(x), means, var, counts)
    return float(est), float(lo), float(hi), float(dof)


def _fit_one(sub: pd.DataFrame, wkey: str, metric: str, level: float, min_widths: int) -> dict:
    out: dict = {c: math.nan for c in FIT_COLUMNS}
    out.update(status="not available", n_widths=0, widths_used="", widths_excluded="", reason="")
    out.update(ci_method=SLOPE_CI_METHOD, asym_widths="", local_slopes="", window="")
    samples = _width_samples(sub, wkey, metric)
    means = {w: float(v.mean()) for w, v in samples.items()}
    used = [w for w, mu in means.items() if 0 < mu < level]
    excluded = [w for w in means if w not in used]
    out["widths_used"] = ";".join(_fmt_value(w) for w in used)
    out["widths_excluded"] = ";".join(_fmt_value(w) for w in excluded)
    out["n_widths"] = len(used)
    if not means:
        out["reason"] = f"no finished run has a finite {metric}"
        return out
    if len(used) < min_widths:
        out["reason"] = (
            f"{len(used)} width(s) with 0 < mean {metric} < level {level:g} "
            f"(need {min_widths}; widths excluded: {out['widths_excluded'] or 'none'})"
        )
        if not used and all(mu >= level for mu in means.values()):
            # O(1) at every width (e.g. mean_field): not a power law, but a clear answer
            lo, hi = min(means.values()), max(means.values())
            out["status"] = "above level"
            out["reason"] = (
                f"mean {metric} >= level {level:g} at every width ({_fixed(lo)} to {_fixed(hi)})"
            )
        return out
    x = np.log(np.array(used))
    y = np.log(np.array([means[w] for w in used]))
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else math.nan
    _, lo, hi, dof = _contrast_fit(used, samples)
    min_seeds = int(min(len(samples[w]) for w in used))
    out.update(
        status="ok",
        slope=float(slope),
        slope_ci_low=lo,
        slope_ci_high=hi,
        slope_dof=dof,
        intercept=float(intercept),
        prefactor=float(np.exp(intercept)),
        r2=r2,
        min_seeds=min_seeds,
        reason="only 2 widths: R^2 is trivially 1" if len(used) == 2 else "",
    )
    if min_seeds < 2:
        out["reason"] = "; ".join(x for x in (out["reason"], "a width with 1 seed: no CI") if x)
    out.update(_asymptotic(used, samples, float(slope), lo, hi))
    return out


def _asymptotic(used: list[float], samples: dict[float, np.ndarray], slope, lo, hi) -> dict:
    """The fit over the widest half of the widths (>= 3), local slopes, and the window note."""
    k = len(used)
    local = []
    for w1, w2 in zip(used[:-1], used[1:], strict=True):
        s, a, b, _ = _contrast_fit([w1, w2], samples)
        local.append(f"{_fmt_value(w1)}-{_fmt_value(w2)}: {s:.2f} [{_fixed(a, 2)}, {_fixed(b, 2)}]")
    out = {"local_slopes": "; ".join(local)}
    if k < MIN_WIDTHS_FOR_WINDOW:
        out.update(asym_slope=slope, asym_slope_ci_low=lo, asym_slope_ci_high=hi)
        out["asym_widths"] = ";".join(_fmt_value(w) for w in used)
        out["window"] = f"only {k} widths: no separate asymptotic fit (all widths used)"
        return out
    top = used[-max(MIN_ASYMPTOTIC_WIDTHS, math.ceil(k / 2)) :]
    s, a, b, _ = _contrast_fit(top, samples)
    out.update(asym_slope=s, asym_slope_ci_low=a, asym_slope_ci_high=b)
    out["asym_widths"] = ";".join(_fmt_value(w) for w in top)
    if np.isfinite(a) and np.isfinite(b) and not (a <= slope <= b):
        out["window"] = (
            f"not asymptotic: the all-widths slope {slope:.2f} is outside the widest-widths "
            f"CI [{_fixed(a, 2)}, {_fixed(b, 2)}] (the slope still changes with width)"
        )
    return out


def default_group_keys(df: pd.DataFrame, params: Sequence[str]) -> list[str]:
    """Every swept param (varies across the runs) that splits the runs, then the width key.

    Ignored: ``seed`` (the replicate key), ``tracking.*`` / ``hydra.*``, params that are a
    function of the width alone (shortcut duplicates like a top-level ``width``) or of the seed
    alone (``dataset.seed=${seed}``), per-run values (a function of width and seed together,
    or leaving one seed per group), and duplicates of an already chosen key (``lr`` next to
    ``train.lr``; dotted names win).
    """
    params = [p for p in params if p in df.columns]
    wkey = next((k for k in WIDTH_KEYS if k in params), None)
    keys = [wkey] if wkey else []
    varying = [
        p
        for p in params
        if p not in (wkey, SEED_KEY)
        and not p.startswith(IGNORED_PARAM_PREFIXES)
        and df[p].nunique(dropna=False) > 1
    ]
    varying.sort(key=lambda p: ("." not in p, p))
    seed = SEED_KEY if SEED_KEY in df.columns else None

    def determined(p: str, by: list[str]) -> bool:
        if not by:
            return False
        return bool((df.groupby(by, dropna=False)[p].nunique(dropna=False) <= 1).all())

    chosen: list[str] = []
    for p in varying:
        if wkey and determined(p, [wkey]):
            continue
        if seed and determined(p, [seed]):
            continue
        if wkey and seed and determined(p, [wkey, seed]):
            continue
        if seed and df[seed].nunique() > 1:
            # per-run values (an output dir): grouping by it would leave no replicates
            per_group = df.groupby([*keys, p], dropna=False)[seed].nunique()
            if bool((per_group <= 1).all()):
                continue
        if any(determined(p, [c]) and determined(c, [p]) for c in chosen):
            continue
        chosen.append(p)
    return chosen + keys


def swept_axis(df: pd.DataFrame, by: Sequence[str]) -> str | None:
    """The swept axis other than the width (``train.lr``, ``model.alpha``, :data:`AXIS_KEYS`)
    when the width takes a single value: the sweep is then aggregated along that axis."""
    wkey = _width_key(by)
    if wkey is not None and wkey in df.columns and df[wkey].nunique(dropna=True) > 1:
        return None
    for key in AXIS_KEYS:
        if key in by and key in df.columns and df[key].nunique(dropna=True) > 1:
            return key
    return None


def lr_max_values(runs: pd.DataFrame) -> np.ndarray:
    """The finite ``lr_max_stable`` values of the finished runs (of all runs if none finished)."""
    if LR_MAX_METRIC not in runs.columns:
        return np.array([])
    v = _finite(runs.loc[_is_finished(runs), LR_MAX_METRIC])
    return v if len(v) else _finite(runs[LR_MAX_METRIC])


def lr_max_stable(runs: pd.DataFrame) -> float:
    """Median over finished runs of ``lr_max_stable`` = 2N/lambda_max of the initial NTK (MATH.md
    s.4: GD is stable only below it); NaN when not logged, or when the runs' values differ by
    more than a factor 10 (a median of values orders of magnitude apart describes none)."""
    v = lr_max_values(runs)
    if not len(v) or v.max() > LR_MAX_SPREAD * v.min():
        return math.nan
    return float(np.median(v))


LR_MAX_SPREAD = 10.0


def axis_trends(runs: pd.DataFrame, axis: str, others: Sequence[str], metric: str) -> list[dict]:
    """The trend of ``metric`` along a swept axis (lr, alpha), per group of ``others``: the
    log-log slope over the axis values with its t CI (:func:`_fit_one`, no level) and the
    exponent theory expects (:func:`expected_axis_rate`: drift ~ 1/alpha, Chizat & Bach 2019),
    with ``comparison``. One dict per group (``group``, ``status``, ``slope``, ``slope_ci_low``,
    ``slope_ci_high``, ``n_widths`` = number of axis values, ``expected_slope``,
    ``expected_source``, ``comparison``, ``reason``)."""
    ok = runs[_is_finished(runs)]
    out = []
    for values, sub in _groups(ok, list(others)):
        fit = _fit_one(sub, axis, metric, math.inf, 2)
        expected, source = expected_axis_rate(metric, axis)
        fit.update(group=_label(list(others), values), expected_slope=expected)
        fit["expected_source"] = source
        fit["comparison"] = compare_with_expected(
            fit["slope_ci_low"], fit["slope_ci_high"], expected
        )
        out.append(fit)
    return out
