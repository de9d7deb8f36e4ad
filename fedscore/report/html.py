"""The job report as one self-contained HTML page: plots embedded as base64 PNG, no outside resource.

`render_report` turns the JSON report (what the submitter receives) into the card center's view: its
own weights by name, the partners only as one total. `render_party_page` is the page each party's
daemon writes beside its model: its own weights, and for the card center its evaluation too.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

from fedscore.model.curves import PSI_SHIFTED, PSI_STABLE, psi_reading
from fedscore.files import write_atomically
from fedscore.model.model_file import PartyModel
from fedscore.model.validation import IV_READINGS, iv_reading
from fedscore.report import plots
from fedscore.report.build import html_path

STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #222; margin: 24px auto; max-width: 960px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ddd; }
p.sub { color: #666; margin-top: 0; } p.note { color: #555; font-size: 14px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; } th { background: #f4f6f8; }
td.name, th.name { text-align: left; }
img { display: block; max-width: 100%; margin: 8px 0; }
.stable { color: #2e8b57; } .moderate { color: #b7791f; } .significant { color: #c0392b; }
"""


def write_html_report(report_path: Path, report: dict) -> Path:
    """Write the page of ``report`` beside its JSON file; returns the page's path."""
    path = html_path(report_path)
    write_atomically(path, render_report(report))
    return path


def _text(value: object) -> str:
    return html.escape(str(value))


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_text(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[object]], names: int = 1) -> str:
    """A table whose first ``names`` columns are text (left-aligned), the rest numbers."""
    def cells(tag: str, values: list[object]) -> str:
        return "".join(
            f'<{tag}{" class=name" if i < names else ""}>{_text(v)}</{tag}>' for i, v in enumerate(values)
        )
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table><tr>{cells('th', header)}</tr>{body}</table>"


def _facts(rows: list[tuple[str, object]]) -> str:
    """A two-column table of named facts, without a header."""
    body = "".join(f"<tr><th class=name>{_text(k)}</th><td class=name>{_text(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _percent(share: float) -> str:
    return f"{round(100 * share, 1) + 0.0:.1f}%"   # + 0.0: a tiny negative share reads 0.0%, not -0.0%


def _rate(value: float | None, digits: int = 2) -> str:
    """A probability or share as a percentage; None reads as a dash."""
    return "—" if value is None else f"{round(100 * value, digits) + 0.0:.{digits}f}%"


def _value(value: object, digits: int = 2) -> str:
    """A count as is, a float with ``digits`` decimals, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _amount(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _page(title: str, subtitle: str, sections: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{_text(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_text(title)}</h1><p class=sub>{_text(subtitle)}</p>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


# -- sections --------------------------------------------------------------------


def comparison_section(report: dict, curves: dict | None) -> str:
    parties = len(report.get("parties", [])) or None
    federated = f"federated ({parties} parties)" if parties else "federated"
    rows = [
        ["card center alone", _number(report.get("local_only_auc")), _number(report.get("local_only_ks")),
         _number(report.get("local_only_test_auc")), _number(report.get("local_only_test_ks"))],
        [federated, _number(report.get("auc")), _number(report.get("ks")),
         _number(report.get("test_auc")), _number(report.get("test_ks"))],
    ]
    parts = ["<h2>Card center alone against the federated model</h2>",
             _table(["model", "train AUC", "train KS", "test AUC", "test KS"], rows)]
    if curves:
        held = curves["rows"] == "held-out"
        parts.append(_image(plots.roc(
            curves["federated"], curves["local_only"],
            report.get("test_auc" if held else "auc"), report.get("local_only_test_auc" if held else "local_only_auc"),
            curves["rows"],
        ), "ROC curves of the federated and the card-center-only model"))
        parts.append(_image(plots.ks(curves["federated"], curves["rows"]), "KS curve of the federated score"))
        parts.append(
            f"<p class=note>Curves over {curves['row_count']} {curves['rows']} rows ({curves['bads']} bads), "
            "each point summarising a group of applicants.</p>"
        )
    return "\n".join(parts)


def loss_section(losses: list[float]) -> str:
    if not losses:
        return ""
    return "<h2>Training</h2>" + _image(plots.loss(losses), "training loss per epoch")


def distribution_section(curves: dict) -> str:
    return (
        "<h2>Score distribution</h2>"
        + _image(plots.score_distribution(curves["score_histogram"], curves["rows"]),
                 "score distribution of goods and bads")
        + "<p class=note>Bins of width 0.05 on the federated model's probability of default; each bar is the share "
          "of its group (goods or bads) in that bin.</p>"
    )


STABILITY = "Stability: training vs held-out rows"


def stability_section(psi: dict | None) -> str:
    if psi is None:
        return (f"<h2>{STABILITY}</h2><p class=note>No held-out rows (validation = 0): "
                "nothing to compare the training scores with.</p>")
    edges = psi["edges"]
    rows = []
    for i, (train, held, term) in enumerate(zip(psi["training"], psi["held_out"], psi["terms"])):
        low = "0" if i == 0 else f"{edges[i - 1]:.3f}"
        high = "1" if i == len(edges) else f"{edges[i]:.3f}"
        rows.append([str(i + 1), f"{low} – {high}", f"{100 * train:.2f}%", f"{100 * held:.2f}%", f"{term:.5f}"])
    reading = psi_reading(psi["total"])
    rows.append(["total", "", "100%", "100%", f"{psi['total']:.5f}"])
    return (
        f"<h2>{STABILITY} (same period; not an out-of-time check)</h2>"
        + _table(["bin", "P(default) range", "training rows", "held-out rows", "PSI term"], rows, names=2)
        + f'<p>PSI {psi["total"]:.4f}: <b class="{reading.split()[0]}">'
          f"{_text(reading)}</b>. The usual reading: below {PSI_STABLE} stable, {PSI_STABLE}–{PSI_SHIFTED} a moderate "
          f"shift worth watching, above {PSI_SHIFTED} a significant shift (retrain or check the data). Bins are the "
          "deciles of the training scores; ranges are rounded. The held-out rows are a random share of the same "
          "applicants, from the same period: this checks the split, not drift over time. An out-of-time check "
          "compares these scores with those of applicants from a later period.</p>"
        + _image(plots.stability(psi), "score shares per bin, training and held-out rows")
    )


def card_center_section(curves: dict, with_weights: bool = True) -> str:
    """The card center's weights by name and each part's share of the score's variance; partners as one total."""
    own, shares = curves["card_center"], curves["variance_shares"]
    rows = [[name, f"{w:+.4f}", _percent(s)] for name, w, s in zip(own["features"], own["weights"], shares["features"])]
    rows.append(["intercept", f"{own['intercept']:+.4f}", "—"])
    rows.append([f"partners combined ({shares['partner_count']})", "—", _percent(shares["partners"])])
    weights = _image(plots.weights(own["features"], own["weights"], f"{own['party']}: weights by feature"),
                     "the card center's weights") if with_weights else ""
    return (
        f"<h2>Weights: {_text(own['party'])} (card center)</h2>"
        + _table(["feature", "weight", "share of score variance"], rows)
        + weights
        + _image(plots.variance_shares(own["features"], shares["features"], shares["partners"], shares["partner_count"]),
                 "shares of the score's variance")
        + "<p class=note>Weights apply to each column standardised on the training rows. The card center learns the "
          "partners' part of each score only as one sum, so partners appear here as one total; each partner's own "
          "weights are on the page its daemon wrote beside its model. A share is cov(part, score) / var(score) "
          "over the training rows: the shares add up to 100%, and a part that works against the others is "
          "negative.</p>"
    )


# -- validation sections (fedscore.model.validation): each only when its key is in the report -------------


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


def points_section(curves: dict, report: dict) -> str:
    histogram = curves.get("points_histogram")
    if not histogram:
        return ""
    bands = {row["decision"]: row for row in report.get("decision_bands") or []}
    cut_offs = [(name, bands[name]["from_points"]) for name in ("approve", "review")
                if bands.get(name, {}).get("from_points") is not None]
    return (
        "<h2>Score distribution in points</h2>"
        + _image(plots.points_distribution(histogram, curves.get("rows", "evaluated"), cut_offs),
                 "score distribution in points of goods and bads")
        + "<p class=note>Equal-width bins of scorecard points between the lowest and highest score; each bar is the "
          "share of its group (goods or bads) in that bin. Dotted lines mark the decision cut-offs.</p>"
    )


def validation_sections(report: dict) -> list[str]:
    """Calibration, gains, decisions, fairness, IV and the scorecard: what a model validation reads."""
    return [section for section in (
        calibration_section(report), gains_section(report), decision_section(report), fairness_section(report),
        iv_section(report.get("iv")), scorecard_section(report.get("scorecard")),
    ) if section]


def parties_section(report: dict) -> str:
    rows = [
        [p["name"], p.get("role", ""), p.get("report") or p.get("model", ""), p.get("features", ""), p.get("rows", "")]
        for p in report.get("parties", [])
    ]
    return "<h2>Parties</h2>" + _table(["party", "role", "its own page (on its machine)", "features", "rows held"], rows, names=3)


def audit_section(report: dict) -> str:
    settlement = report.get("settlement")
    if not settlement:
        return ""
    owed = [[line["payee"], f"{line['amount'] / 100:.2f} {settlement['currency']}"] for line in settlement["lines"]]
    head = report.get("ledger_head", "")
    return (
        "<h2>Audit chain and settlement</h2>"
        f"<p>{report.get('ledger_blocks', '?')} blocks co-signed by every member; head <code>{_text(head)}</code>. "
        f"{_text(settlement['payer'])} owes:</p>" + _table(["payee", "amount"], owed)
    )


REVEALS = (
    "<h2>What this page shows, and to whom</h2><p class=note>This page is made from the report the coordinator "
    "sends the job's submitter, so the coordinator and the submitter see all of it. The curves are aggregates "
    "over groups of applicants: no applicant's score, label or id is in them. Beyond the AUC and KS the protocol "
    "already reveals, they add the shape of the ROC and KS curves, the counts of goods and bads in each "
    "probability bin (a bin may hold few applicants), the training and held-out shares per score decile, the "
    "card center's own weights, and the partners' combined share of the score's variance. No partner's weights "
    "are here.</p>"
)


VALIDATION_REVEALS = (
    "<p class=note>The validation sections add, per group of applicants (PD deciles, decision bands, groups of "
    "each protected attribute, scorecard bins): counts, bads, default and approval rates, mean points and credit "
    "limits. A small group's figures come from few applicants. The information-value table names the features "
    "of every party it lists.</p>"
)


def render_report(report: dict) -> str:
    """The whole job report, as the card center and the submitter see it."""
    curves = report.get("evaluation")
    sections = [summary_section(report), comparison_section(report, curves), loss_section(report.get("loss", []))]
    if curves:
        sections += [distribution_section(curves), points_section(curves, report), stability_section(curves["psi"]),
                     card_center_section(curves)]
    else:
        sections.append("<p class=note>This report carries no curves (made by an older coordinator).</p>")
    validation = validation_sections(report)
    sections += [*validation, parties_section(report), audit_section(report), REVEALS]
    if validation:
        sections.append(VALIDATION_REVEALS)
    return _page(f"fedscore report: {report.get('job', '')}", f"job {report.get('job_id', '')}", sections)


def summary_section(report: dict) -> str:
    overlaps = ", ".join(f"{name} {count}" for name, count in report.get("overlaps", {}).items())
    return "<h2>Job</h2>" + _facts([
        ("applicants held by every party", report.get("aligned_rows", "")),
        ("card center shares with", overlaps),
        ("training / held-out rows", f"{report.get('train_rows', '')} / {report.get('test_rows', '')}"),
        ("epochs", f"{report.get('epochs', '')} of {report.get('epochs_planned', '')}"
                   + (" (stopped early)" if report.get("stopped_early") else "")),
        ("Paillier key", f"{report.get('key_bits', '')} bits, fingerprint {report.get('public_key_fingerprint', '')}"),
        ("time", f"{report.get('seconds', 0):.1f} s"),
    ])


def render_party_page(model: PartyModel, rows: int, train_rows: int, evaluation: dict | None = None) -> str:
    """One party's own page: its columns and weights; the card center adds the evaluation it computed."""
    values = [[name, f"{w:+.4f}", f"{m:.4g}", f"{s:.4g}"]
              for name, w, m, s in zip(model.features, model.weights, model.mean, model.scale)]
    if model.intercept is not None:
        values.append(["intercept", f"{model.intercept:+.4f}", "", ""])
    sections = [
        f"<h2>Weights of {_text(model.party)} ({_text(model.role.replace('_', ' '))})</h2>"
        f"<p>Trained on {train_rows} of the {rows} applicants every party holds.</p>"
        + _table(["feature", "weight", "training mean", "training std"], values)
        + _image(plots.weights(model.features, model.weights, f"{model.party}: weights by feature"),
                 f"{model.party}'s weights")
        + "<p class=note>Written by this party's daemon from its own model file; it never leaves this machine. "
          "Weights apply to each column standardised with the training mean and std above.</p>"
    ]
    if evaluation is not None and evaluation.get("curves"):
        curves = evaluation["curves"]
        sections += [comparison_section(evaluation, curves), distribution_section(curves),
                     points_section(curves, evaluation), stability_section(curves["psi"]),
                     card_center_section(curves, with_weights=False)]
    if evaluation is not None:
        iv = evaluation.get("iv") or {}
        own = {**evaluation, "iv": {model.party: iv[model.party]} if model.party in iv else None}
        sections += validation_sections(own)    # the IV of this party's own features only
    return _page(f"fedscore: {model.party}'s model", f"job {model.job_name} ({model.job_id})", sections)
