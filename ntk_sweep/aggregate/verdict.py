"""The claim in words: slope trends, clauses against the expected rates, the verdict lines of a
width sweep and of a sweep along another axis (lr, alpha), and warning notes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ntk_sweep.aggregate.common import (
    DRIFT_METRICS,
    LIN_METRICS,
    LR_MAX_METRIC,
    MIN_SEEDS_WARN,
    PHASE_TAGS,
    VANISHING_PREFIXES,
    _cut,
    _fixed,
    _fmt,
    _fmt_value,
    _label,
    _width_key,
)
from ntk_sweep.aggregate.rates import (
    FLIP_METRIC,
    FLIPPED_UNITS_METRIC,
    SMOOTH_PART_METRIC,
)
from ntk_sweep.aggregate.statistics import (
    MECHANISM_OUTCOME,
    axis_trends,
    lr_max_stable,
    lr_max_values,
)


def slope_trend(lo: float, hi: float) -> str:
    """ "falls" (CI entirely below 0), "grows" (entirely above), "flat" (contains 0), "n/a"."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a"
    return "falls" if hi < 0 else "grows" if lo > 0 else "flat"


def _is_mean_field(row: pd.Series) -> bool:
    return any(
        str(k).endswith("parameterization") and str(row[k]) == "mean_field" for k in row.index
    )


_TREND_TEXT = {
    "falls": "falls with width (CI < 0)",
    "grows": "grows with width (CI > 0)",
    "flat": "does not fall with width (CI contains 0)",
    "n/a": "no CI (a width has 1 seed)",
}

_COMPARISON_TEXT = {
    "consistent": "consistent with",
    "faster": "falls faster than",
    "slower": "falls slower than",
}


def _asym_ci(row: pd.Series) -> tuple[float, float, float]:
    return row["asym_slope"], row["asym_slope_ci_low"], row["asym_slope_ci_high"]


_PARTS = (FLIP_METRIC, SMOOTH_PART_METRIC)


def _outcome_text(row: pd.Series, short: bool = False) -> str:
    """The rate verdict in words: consistent / consistent once the next-order term is included
    (with n*) / inconsistent (with the direction), from :func:`judge_rate`'s ``outcome``."""
    e, outcome, cmp = row["expected_slope"], row.get("outcome", ""), row["comparison"]
    if outcome == "consistent":
        return f"consistent with the expected {e:g}"
    if outcome == "consistent with correction":
        n_star = f", n* {row['n_star']:.3g}" if np.isfinite(row["n_star"]) else ""
        return f"consistent with {e:g} once the n^{row['next_slope']:g} term is included{n_star}"
    if outcome == MECHANISM_OUTCOME:
        return (
            f"{MECHANISM_OUTCOME}: the flipped units' count and coherence give "
            f"n^{row['mechanism_slope']:.2f} at these widths (n^{e:g} once the count reaches "
            "n^1/2): not yet asymptotic"
        )
    if outcome == "inconsistent":
        why = f"{_COMPARISON_TEXT[cmp]} it" if cmp in ("faster", "slower") else ""
        if not short and np.isfinite(row["next_slope"]):
            why += f"{'; ' if why else ''}a n^{e:g} + b n^{row['next_slope']:g} does not fit"
        return f"inconsistent with {e:g}" + (f" ({why})" if why else "")
    return f"{_COMPARISON_TEXT[cmp]} the expected {e:g}" if cmp else ""


def _metric_line(row: pd.Series) -> str:
    """One fit in words: the asymptotic slope, its trend, the expected rate and the verdict on
    it, the other fits."""
    m = row["metric"]
    s, lo, hi = _asym_ci(row)
    asym = str(row["asym_widths"]).split(";")
    dof = row["slope_dof"]
    dof_text = f", {dof:.0f} dof" if np.isfinite(dof) else ""
    text = (
        f"{m}: slope {s:.3f} [{_fixed(lo)}, {_fixed(hi)}] (t{dof_text}), widths "
        f"{asym[0]}-{asym[-1]}: {_TREND_TEXT[slope_trend(lo, hi)]}"
    )
    e = row["expected_slope"]
    if np.isfinite(e):
        kind = row.get("expected_kind")
        kind = kind if isinstance(kind, str) else ""
        text += f"; expected {e:g} ({kind + ': ' if kind else ''}{row['expected_source']})"
        text += f": {_outcome_text(row) or 'not compared (no CI)'}"
    else:
        text += f"; {row['expected_source']}"
    if len(asym) < row["n_widths"]:
        text += (
            f"; all {int(row['n_widths'])} widths {row['slope']:.3f} "
            f"[{_fixed(row['slope_ci_low'])}, {_fixed(row['slope_ci_high'])}]"
        )
    return text


def _two_term_line(row: pd.Series) -> str:
    """The finite-width fit ``a n^p + b n^q`` of one metric, and its widest-pair local slope."""
    if not np.isfinite(row.get("tt_a", np.nan)):
        return ""
    w = str(row["tt_widths"]).split(";")
    text = (
        f"{row['metric']}: a n^{row['expected_slope']:g} + b n^{row['next_slope']:g} over widths "
        f"{w[0]}-{w[-1]}: a {_fmt(row['tt_a'], 3)} [{_fmt(row['tt_a_ci_low'], 3)}, "
        f"{_fmt(row['tt_a_ci_high'], 3)}], b {_fmt(row['tt_b'], 3)}, fit p {row['tt_p_value']:.2f}"
        f", vs c n^s dAIC {row['tt_delta_aic']:.1f} (p {row['tt_p_aic']:.2f}); "
        f"n^{row['expected_slope']:g} within 10% beyond n* {_fmt(row['n_star'], 3)}"
    )
    local = str(row["local_slopes"]).split("; ")[-1]
    return text + (f"; widest pair {local}" if local else "")


def _decomposition(gf: pd.DataFrame) -> dict | None:
    """The relu drift's parts in the group (``kernel_drift_flip`` / ``_smooth`` fits), or None."""
    rows = {r["metric"]: r for _, r in gf.iterrows()}
    flip, smooth = rows.get(FLIP_METRIC), rows.get(SMOOTH_PART_METRIC)
    if flip is None or smooth is None or "ok" not in (flip["status"], smooth["status"]):
        return None
    means = {"flip": flip["widest_mean"], "smooth": smooth["widest_mean"]}
    dominant = max(means, key=lambda k: np.nan_to_num(abs(means[k]), nan=-1.0))
    return {
        "dominant": dominant,
        "rows": {"flip": flip, "smooth": smooth},
        "units": rows.get(FLIPPED_UNITS_METRIC),
        "width": str(flip["widths_used"]).split(";")[-1],
        "means": means,
    }


def _part_clause(name: str, row: pd.Series | None) -> str:
    if row is None or row["status"] != "ok":
        return f"{name}: no fit"
    s, lo, hi = _asym_ci(row)
    text = f"{name} n^{s:.2f} [{_fixed(lo, 2)}, {_fixed(hi, 2)}]"
    if np.isfinite(row["expected_slope"]):
        text += f" vs {row['expected_slope']:+g} ({row['expected_kind']})"
        text += f": {_outcome_text(row, short=True)}"
    return text


def _decomposition_line(d: dict) -> str:
    flip, smooth = d["rows"]["flip"], d["rows"]["smooth"]
    text = (
        f"kernel_drift parts: {d['dominant']} part dominates at width {d['width']} "
        f"({_fmt(d['means']['flip'], 3)} flip vs {_fmt(d['means']['smooth'], 3)} smooth); "
        f"{_part_clause('flip', flip)}"
    )
    if flip.get("mechanism"):
        text += f", {flip['mechanism']}"
    text += f"; {_part_clause('smooth', smooth)}"
    if d["units"] is not None:
        text += f"; {_part_clause('flipped units', d['units'])}"
    return text


def verdict(fits: pd.DataFrame) -> list[str]:
    """The claim in words, from :func:`fit_power_laws` rows (one line per fit, one per group).

    Every clause follows from a fitted slope and its 95 % CI, of the asymptotic fit (widest
    widths): a metric "falls" iff its CI is entirely below 0, "grows" iff entirely above,
    else "does not fall"; it is "consistent with" its expected rate (:func:`expected_rate`)
    iff the CI contains it, else it falls "faster" or "slower". A window that is not asymptotic
    and fewer than :data:`MIN_SEEDS_WARN` seeds per width get a warning line. ``mean_field``
    groups are the negative control: drift is expected not to fall. Metrics that the theory
    does not say vanish (losses) get no line.
    """
    lines: list[str] = []
    if fits is None or fits.empty:
        return ["no fit: the grouping keys do not include the width (model.width)"]
    for group, gf in fits.groupby("group", sort=False):
        prefix = f"[{group}] " if group else ""
        trends: dict[str, tuple[str, pd.Series]] = {}
        for _, row in gf.iterrows():
            m = row["metric"]
            if not str(m).startswith(VANISHING_PREFIXES):
                continue
            if row["status"] == "above level":
                lines.append(
                    f"{prefix}{m}: {row['reason']}: O(1), does not fall into the lazy regime"
                )
                trends[m] = ("above", row)
                continue
            if row["status"] != "ok" and m in _PARTS and not row["n_widths"]:
                continue  # not measured here (a smooth activation has no flips)
            if row["status"] != "ok":
                lines.append(f"{prefix}{m}: no fit ({row['reason']})")
                trends[m] = ("n/a", row)
                continue
            trends[m] = (slope_trend(*_asym_ci(row)[1:]), row)
            lines.append(prefix + _metric_line(row))
            two_term = _two_term_line(row)
            if two_term:
                lines.append(prefix + two_term)
            if row["window"]:
                lines.append(f"{prefix}{m}: {row['window']}")
        parts = _decomposition(gf)
        if parts is not None:
            lines.append(prefix + _decomposition_line(parts))
        lines += _warnings(gf, prefix)
        drift = next((m for m in DRIFT_METRICS if m in trends), None)
        lin = next((m for m in LIN_METRICS if m in trends), None)
        claim = _claim(trends, drift, lin, _is_mean_field(gf.iloc[0]), parts)
        lines.append(f"{prefix}verdict: {claim}")
    return lines


def _warnings(gf: pd.DataFrame, prefix: str) -> list[str]:
    seeds = gf.loc[gf["status"] == "ok", "min_seeds"].dropna()
    if len(seeds) and int(seeds.min()) < MIN_SEEDS_WARN:
        return [
            f"{prefix}warning: {int(seeds.min())} seed(s) at some width (< {MIN_SEEDS_WARN}): "
            "the t intervals are honest but wide; run more seeds to narrow them"
        ]
    return []


def _rate_clause(metric: str, row: pd.Series, parts: dict | None = None) -> str:
    s, lo, hi = _asym_ci(row)
    text = f"{metric} slope {s:.2f} [{_fixed(lo, 2)}, {_fixed(hi, 2)}]"
    outcome = _outcome_text(row, short=True)
    if outcome:
        text += f", {outcome}"
    if parts is not None and metric.startswith("kernel_drift"):
        d = parts["rows"][parts["dominant"]]
        text += f"; {parts['dominant']} part dominates, n^{d['asym_slope']:.2f}"
        if np.isfinite(d["expected_slope"]):
            text += f" vs {d['expected_slope']:g}"
    return text


def _claim(
    trends: dict, drift: str | None, lin: str | None, mean_field: bool, parts: dict | None = None
) -> str:
    if drift is None:
        return "undetermined: no kernel drift metric among the fitted metrics"
    d_trend, d_row = trends[drift]
    if d_trend == "n/a":
        reason = d_row["reason"] or "no CI"
        return f"undetermined: no {drift} fit ({reason})"
    if d_trend == "falls":
        text = f"the kernel tends to constant ({_rate_clause(drift, d_row, parts)})"
    elif d_trend == "above":
        text = f"{drift} stays O(1) at every width ({d_row['reason']}), the kernel keeps moving"
    elif d_trend == "grows":
        text = f"the kernel moves more with width ({_rate_clause(drift, d_row)})"
    else:
        # a CI containing 0 shows neither a fall nor a constant drift: say only that
        clause = _rate_clause(drift, d_row)
        text = f"no trend of the kernel drift is resolved ({clause}: CI contains 0)"
    if lin is not None:
        l_trend, l_row = trends[lin]
        if l_trend == "falls":
            text += f"; the network approaches its linearisation ({_rate_clause(lin, l_row)})"
        elif l_trend == "n/a":
            text += f"; no {lin} fit"
        elif l_trend == "above":
            text += f"; the network stays far from its linearisation ({lin} O(1))"
        elif l_trend == "grows":
            text += f"; the network moves away from its linearisation ({_rate_clause(lin, l_row)})"
        else:
            text += (
                "; the network is not shown to approach its linearisation "
                f"({_rate_clause(lin, l_row)}: CI contains 0)"
            )
    if mean_field:
        expected = d_trend != "falls"
        return (
            "as expected for the mean_field negative control: "
            if expected
            else "UNEXPECTED for the mean_field negative control (drift should not fall): "
        ) + text
    lin_ok = lin is None or trends[lin][0] == "falls"
    if d_trend == "falls" and lin_ok:
        return "claim supported: " + text
    if d_trend == "falls":
        return "claim partly supported: " + text
    if d_trend == "flat":  # a CI containing 0 neither shows a fall nor rules one out
        return "claim not established (more seeds or widths narrow the CI): " + text
    return "claim not supported: " + text


def kink_note(runs: pd.DataFrame, metrics: Sequence[str]) -> str:
    """A warning for test metrics of ``paper_toy`` with ``sigma_b = 0`` (the paper preset): the
    test grid contains x = 0, where that kernel has a kink (MATH.md s.3), and one grid point
    can dominate an RMS or a kernel drift on test inputs. "" when it does not apply."""
    test = [m for m in metrics if str(m).endswith("_test")]
    if not test or "dataset.name" not in runs.columns or "model.sigma_b" not in runs.columns:
        return ""
    sigma_b = pd.to_numeric(runs["model.sigma_b"], errors="coerce")
    hit = runs["dataset.name"].astype(str).eq("paper_toy") & sigma_b.eq(0)
    if not hit.any():
        return ""
    return (
        f"{int(hit.sum())} run(s) are paper_toy with sigma_b = 0: the test grid contains x = 0, "
        f"the kernel's kink (MATH.md s.3); {', '.join(test)} may be dominated by that point: "
        "read the train metrics"
    )


def _phase_text(sub: pd.DataFrame) -> str:
    parts = []
    for name in PHASE_TAGS:
        if name in sub.columns:
            tags = sub[name].fillna("").astype(str)
            counts = tags[tags != ""].value_counts()
            if len(counts):
                which = _PHASE_OF[name] if name in _PHASE_OF else name
                parts.append(f"{which} " + ", ".join(f"{p} x{n}" for p, n in counts.items()))
    return "lr phase: " + "; ".join(parts) if parts else ""


# The lr phase (core.dynamics.lr_phase: lazy / catapult / collapsed / divergent) of the network
# and of its linearisation, tags ntk_sweep.phase_net / phase_lin.
_PHASE_OF = {"phase_net": "network", "phase_lin": "linearised"}


def axis_verdict(
    runs: pd.DataFrame, summary: pd.DataFrame, axis: str, by: Sequence[str], metrics: Sequence[str]
) -> list[str]:
    """The sweep along ``axis`` (lr or alpha at fixed width) in words: 2N/lambda_max, one line
    per axis value (finished / total, the phase tags when logged, else lr / lr_max, the final
    drift and loss with their t intervals), and all diverged runs in one line."""
    wkey = _width_key(by)
    others = [k for k in by if k not in (axis, wkey)]
    width = ""
    if wkey is not None and wkey in runs.columns and runs[wkey].nunique() == 1:
        width = f" at fixed {wkey}={_fmt_value(runs[wkey].iloc[0])}"
    n_values = runs[axis].nunique()
    lines = [f"swept axis {axis}{width}: {n_values} values (no width fits)"]
    lr_max = lr_max_stable(runs)
    is_lr = axis in ("train.lr", "lr")
    if np.isfinite(lr_max):
        lines.append(f"2N/lambda_max of the initial NTK ({LR_MAX_METRIC}, median): {lr_max:.4g}")
    elif len(lr_max_values(runs)):
        v = lr_max_values(runs)
        lines.append(
            f"2N/lambda_max of the initial NTK ({LR_MAX_METRIC}) ranges {v.min():.3g} to "
            f"{v.max():.3g} over the runs (orders of magnitude apart: no median; per value below)"
        )
    for m in [m for m in ("kernel_drift", "kernel_distance") if m in metrics][:1]:
        lines += _trend_lines(runs, axis, others, m)
    shown = [m for m in ("kernel_drift", "loss") if m in metrics]
    for _, r in summary.iterrows():
        sel = np.ones(len(runs), dtype=bool)
        for k in [*others, axis]:
            sel &= (runs[k] == r[k]).to_numpy() | (runs[k].isna() & pd.isna(r[k])).to_numpy()
        sub = runs[sel]
        parts = [f"{r['n_seeds']}/{r['n_runs']} finished"]
        phase = _phase_text(sub)
        if phase:
            parts.append(phase)
        elif is_lr and np.isfinite(lr_max_stable(sub)):
            ratio = float(r[axis]) / lr_max_stable(sub)
            parts.append(
                f"lr/lr_max {ratio:.2f} ({'below' if ratio < 1 else 'above'} 2N/lambda_max)"
            )
        for m in shown:
            if r[f"{m}_n"]:
                parts.append(
                    f"{m} {_fmt(r[f'{m}_mean'], 3)} [{_fmt(r[f'{m}_ci_low'], 3)}, "
                    f"{_fmt(r[f'{m}_ci_high'], 3)}]"
                )
        label = _label([*others, axis], [r[k] for k in [*others, axis]])
        lines.append(f"{label}: " + ", ".join(parts))
    lines += _diverged_line(runs, axis)
    return lines


def _trend_lines(runs: pd.DataFrame, axis: str, others: Sequence[str], metric: str) -> list[str]:
    """The metric's log-log trend along the axis per group, against theory where there is one."""
    lines = []
    for t in axis_trends(runs, axis, others, metric):
        prefix = f"[{t['group']}] " if t["group"] else ""
        if t["status"] != "ok":
            lines.append(f"{prefix}{metric} vs {axis}: no trend fit ({t['reason']})")
            continue
        lo, hi = t["slope_ci_low"], t["slope_ci_high"]
        text = (
            f"{prefix}{metric} vs {axis}: {metric} ~ {axis}^{t['slope']:.2f} "
            f"[{_fixed(lo, 2)}, {_fixed(hi, 2)}] over {int(t['n_widths'])} values"
        )
        e = t["expected_slope"]
        if np.isfinite(e):
            cmp = t["comparison"]
            verdict_text = {"consistent": "consistent"}.get(cmp, f"inconsistent ({cmp})")
            text += f"; expected {e:g} ({t['expected_source']}): " + (
                verdict_text if cmp else "no CI"
            )
        else:
            text += f"; {t['expected_source']}"
        lines.append(text)
    return lines


def _diverged_line(runs: pd.DataFrame, axis: str) -> list[str]:
    failed = runs[runs["status"].astype(str).eq("FAILED")]
    if failed.empty:
        return []
    counts = failed.groupby(axis, sort=True).size()
    where = ", ".join(f"{_fmt_value(v)} (x{n})" for v, n in counts.items())
    reasons = failed["failure_reason"].fillna("").astype(str)
    reason = next((x for x in reasons if x), "no reason recorded")
    return [f"diverged: {len(failed)} run(s) FAILED at {axis} = {where}; e.g. {_cut(reason, 80)}"]
