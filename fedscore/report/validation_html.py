"""The model-validation sections of a report page (fedscore.model.validation): calibration, gains and lift,
decision bands, fairness, information value and the scorecard, each only when its key is in the report.

Apart from the job report's own sections because a model validation reads them as one set, on the
submitter's page and on the card center's own page alike.
"""
from __future__ import annotations

from fedscore.model.validation import IV_READINGS, iv_reading
from fedscore.report import plots
from fedscore.report.html_parts import _amount, _image, _number, _rate, _table, _text, _value


def _rows_named(report: dict) -> str:
    """Which rows the validation describes: the curves' rows (held-out when there are any)."""
    curves = report.get("evaluation") or report.get("curves") or {}
    return f"{curves['rows']} rows" if curves.get("rows") else "evaluated rows"


def calibration_section(report: dict) -> str:
    """Predicted against observed default rate per PD group, the reliability plot, Brier and log-loss."""
    table, fit = report.get("calibration"), report.get("calibration_fit")
    if not table and all(report.get(k) is None for k in ("brier", "log_loss", "mean_pd", "observed_default_rate")):
        return ""
    rows_named = _rows_named(report)
    parts = ["<h2>Calibration</h2>"]
    rate = report.get("observed_default_rate")
    sentence = (
        f"<p>On the {_text(rows_named)}: Brier score {_number(report.get('brier'))}"
        + ("" if rate is None else f" (a constant PD at the observed rate would score {rate * (1 - rate):.4f})")
        + f", log-loss {_number(report.get('log_loss'))}. Mean predicted PD {_rate(report.get('mean_pd'))} "
          f"against an observed default rate of {_rate(rate)}.</p>"
    )
    parts.append(sentence)
    if fit:
        parts.append(f"<p>Recalibration fitted on the training rows: PD = σ(slope · log-odds + intercept) with slope "
                     f"{_number(fit.get('slope'))}, intercept {_number(fit.get('intercept'))} (slope 1 and intercept 0 "
                     "would leave the model's probabilities as they are).</p>")
    if table:
        rows = [[str(i), _rate(r["predicted"]), _rate(r["observed"]), r["count"], r["bads"]]
                for i, r in enumerate(table, start=1)]
        parts += [
            _table(["group (lowest PD first)", "predicted (mean PD)", "observed default rate", "applicants", "bads"], rows),
            _image(plots.reliability(table, rows_named.removesuffix(" rows")),
                   "reliability: observed against predicted default rate"),
            "<p class=note>Groups hold equal counts of applicants by predicted PD (deciles; equal PDs stay in one "
            "group). A calibrated PD puts every group on the diagonal. The Brier score is the mean squared gap "
            "between PD and outcome, the log-loss the mean negative log-likelihood: lower is better for both.</p>",
        ]
    return "\n".join(parts)


def gains_section(report: dict) -> str:
    table = report.get("gains")
    if not table:
        return ""
    rows = [[str(r["decile"]), f"{_rate(r.get('min_pd'))} – {_rate(r.get('max_pd'))}", r["count"], r["bads"],
             _rate(r["bad_rate"]), _rate(r.get("cumulative_bads_share"), 1),
             "—" if r.get("lift") is None else f"{r['lift']:.2f}×"] for r in table]
    return (
        "<h2>Gains and lift</h2>"
        + _table(["decile (riskiest first)", "PD range", "applicants", "bads", "bad rate", "bads caught so far", "lift"],
                 rows, names=2)
        + f"<p class=note>Applicants of the {_text(_rows_named(report))} in ten equal groups by PD, riskiest first. "
          "“Bads caught so far” is the share of all bads in this decile and the riskier ones; lift is the "
          "decile's bad rate over the overall bad rate.</p>"
    )


def _band_points(row: dict) -> str:
    low, high = row.get("from_points"), row.get("below_points")
    if low is None and high is None:
        return "—"
    if high is None:
        return f"≥ {low:g}"
    if low is None:
        return f"< {high:g}"
    return f"{low:g} – {high:g}"


def decision_section(report: dict) -> str:
    bands = report.get("decision_bands")
    if not bands:
        return ""
    rows = [[r["decision"], _band_points(r), r["count"], _rate(r["share"], 1), _rate(r.get("bad_rate")),
             _amount(r.get("total_limit"))] for r in bands]
    return (
        "<h2>Decision bands</h2>"
        + _table(["decision", "points", "applicants", "share", "bad rate", "total credit limit"], rows, names=2)
        + f"<p class=note>The scorecard's cut-offs applied to the {_text(_rows_named(report))}: the bad rate each "
          "decision would have let through, and the credit limits it would have granted (0 when declined).</p>"
    )


def _verdict(attribute: dict) -> str:
    passes = attribute.get("passes_four_fifths")
    if passes is None:
        return "not judged (fewer than two groups large enough, or no approval)"
    return "passes" if passes else "fails: review this attribute"


def fairness_section(report: dict) -> str:
    fairness = report.get("fairness")
    if not fairness:
        return ""
    summary = [[name, sum(not g.get("small") for g in a["groups"]), _number(a.get("adverse_impact_ratio"), 3),
                _verdict(a)] for name, a in fairness.items()]
    parts = [
        "<h2>Fairness</h2>",
        _table(["protected attribute", "groups judged", "adverse-impact ratio", "four-fifths rule"], summary),
    ]
    for name, attribute in fairness.items():
        rows = [[g["group"], g["count"], _rate(g["approval_rate"], 1), _value(g.get("mean_points"), 1),
                 "small: not judged" if g.get("small") else ""] for g in attribute["groups"]]
        banded = " (numbers cut into quantile bands)" if attribute.get("banded") else ""
        parts += [f"<p><b>{_text(name)}</b>{banded}</p>",
                  _table(["group", "applicants", "approval rate", "mean points", ""], rows)]
    parts.append(
        f"<p class=note>Approved means points at or above the approval cut-off, on the {_text(_rows_named(report))}. "
        "The adverse-impact ratio is the lowest group approval rate over the highest; the four-fifths rule asks "
        "for at least 0.8. A group under 1% of the rows or under 20 rows is shown but left out of the ratio. "
        "A numeric attribute with more than ten distinct values (such as age) is cut at its quantiles into at "
        "most five bands, each named by the smallest and largest value in it.</p>"
    )
    return "\n".join(parts)


def iv_section(iv: dict | None) -> str:
    if not iv:
        return ""
    values = [(party, feature, value) for party, features in iv.items() for feature, value in features.items()]
    values.sort(key=lambda item: -item[2])
    rows = [[party, feature, f"{value:.4f}", iv_reading(value)] for party, feature, value in values]
    bounds = ", ".join(f"{reading} below {below}" for below, reading in IV_READINGS[:-1])
    return (
        "<h2>Information value</h2>"
        + _table(["party", "feature", "IV", "reading"], rows, names=2)
        + f"<p class=note>Information value of each binned feature on the training rows. The usual reading: "
          f"{bounds}, {IV_READINGS[-1][1]} up to {IV_READINGS[-1][0]}; above that, check for leakage (a feature "
          "that knows the outcome).</p>"
    )


def _bound(value: object, open_end: str) -> str:
    if value is None:
        return open_end
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _bin_text(value: object) -> str:
    """A bin as written by the card center: text as is, [low, high) bounds as an interval (None: open)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{_bound(value[0], '−∞')}, {_bound(value[1], '+∞')})"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def scorecard_section(scorecard: list[dict] | None) -> str:
    if not scorecard:
        return ""
    rows = [[r.get("characteristic", ""), _bin_text(r.get("bin", "")), _value(r.get("count")), _rate(r.get("bad_rate")),
             _value(r.get("woe"), 4), _value(r.get("weight"), 4), _value(r.get("points"), 1)] for r in scorecard]
    return (
        "<h2>Scorecard</h2>"
        + _table(["characteristic", "bin", "applicants", "bad rate", "WOE", "weight", "points"], rows, names=2)
        + "<p class=note>The card center's characteristics: each applicant scores the points of the bin they fall "
          "in, summed with the others. Counts and bad rates are on the training rows; WOE is the bin's weight of "
          "evidence.</p>"
    )


def validation_sections(report: dict) -> list[str]:
    """Calibration, gains, decisions, fairness, IV and the scorecard: what a model validation reads."""
    return [section for section in (
        calibration_section(report), gains_section(report), decision_section(report), fairness_section(report),
        iv_section(report.get("iv")), scorecard_section(report.get("scorecard")),
    ) if section]


VALIDATION_REVEALS = (
    "<p class=note>The validation sections add, per group of applicants (PD deciles, decision bands, groups of "
    "each protected attribute, scorecard bins): counts, bads, default and approval rates, mean points and credit "
    "limits. A small group's figures come from few applicants. The information-value table names the features "
    "of every party it lists.</p>"
)
