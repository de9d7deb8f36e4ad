"""The job report as one self-contained HTML page: plots embedded as base64 PNG, no outside resource.

`render_report` turns the JSON report (what the submitter receives) into the card center's view: its
own weights by name, the partners only as one total. `render_party_page` is the page each party's
daemon writes beside its model: its own weights, and for the card center its evaluation too. The model-validation
sections both show come from `fedscore.report.validation_html`.
"""
from __future__ import annotations

from pathlib import Path

from fedscore.model.curves import PSI_SHIFTED, PSI_STABLE, psi_reading
from fedscore.files import write_atomically
from fedscore.model.model_file import PartyModel
from fedscore.plural import plural
from fedscore.report import plots
from fedscore.report.build import html_path
from fedscore.report.html_parts import _facts, _image, _number, _page, _percent, _table, _text
from fedscore.report.validation_html import VALIDATION_REVEALS, validation_sections


def write_html_report(report_path: Path, report: dict) -> Path:
    """Write the page of ``report`` beside its JSON file; returns the page's path."""
    path = html_path(report_path)
    write_atomically(path, render_report(report))
    return path


# -- sections --------------------------------------------------------------------


def comparison_section(report: dict, curves: dict | None) -> str:
    parties = len(report.get("parties", [])) or None
    federated = f"federated ({plural(parties, 'party', 'parties')})" if parties else "federated"
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
            f"<p class=note>Curves over {curves['row_count']} {curves['rows']} "
            f"{'row' if curves['row_count'] == 1 else 'rows'} ({plural(curves['bads'], 'bad')}), "
            "each point summarising a group of applicants.</p>"
        )
    return "\n".join(parts)


def warnings_section(warnings: list[str]) -> str:
    if not warnings:
        return ""
    return "<h2>Warnings</h2><ul>" + "".join(f"<li>{_text(w)}</li>" for w in warnings) + "</ul>"


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


def card_center_section(curves: dict, with_weights: bool = True, binned: bool = False) -> str:
    """The card center's weights by name and each part's share of the score's variance; partners as one total.

    ``binned``: each feature's "weight" is the spread of its bins' weights (how far it can move the log-odds).
    """
    own, shares = curves["card_center"], curves["variance_shares"]
    sign = "" if binned else "+"
    rows = [[name, f"{w:{sign}.4f}", _percent(s)]
            for name, w, s in zip(own["features"], own["weights"], shares["features"])]
    rows.append(["intercept", f"{own['intercept']:+.4f}", "—"])
    rows.append([f"partners combined ({shares['partner_count']})", "—", _percent(shares["partners"])])
    weights = _image(plots.weights(own["features"], own["weights"], f"{own['party']}: weights by feature", binned),
                     "the card center's weights") if with_weights else ""
    encoding = (
        "Each feature is binned on the training rows and each bin has its own weight; the number here is the spread "
        "between a feature's lowest and highest bin weight, how far the feature can move the log-odds."
        if binned else "Weights apply to each column standardised on the training rows."
    )
    return (
        f"<h2>Weights: {_text(own['party'])} (card center)</h2>"
        + _table(["feature", "spread of bin weights" if binned else "weight", "share of score variance"], rows)
        + weights
        + _image(plots.variance_shares(own["features"], shares["features"], shares["partners"], shares["partner_count"]),
                 "shares of the score's variance")
        + f"<p class=note>{encoding} The card center learns the "
          "partners' part of each score only as one sum, so partners appear here as one total; each partner's own "
          "weights are on the page its daemon wrote beside its model. A share is cov(part, score) / var(score) "
          "over the training rows: the shares add up to 100%, and a part that works against the others is "
          "negative.</p>"
    )


def binned(report: dict) -> bool:
    """Whether the job binned its columns (reports from before binning carry no "binning" key)."""
    return report.get("binning") not in (None, "none")


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
        f"<p>{plural(report['ledger_blocks'], 'block') if 'ledger_blocks' in report else '? blocks'} co-signed by every "
        f"member; head <code>{_text(head)}</code>. "
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


def render_report(report: dict) -> str:
    """The whole job report, as the card center and the submitter see it."""
    curves = report.get("evaluation")
    sections = [summary_section(report), warnings_section(report.get("warnings") or []),
                comparison_section(report, curves), loss_section(report.get("loss", []))]
    if curves:
        sections += [distribution_section(curves), points_section(curves, report), stability_section(curves["psi"]),
                     card_center_section(curves, binned=binned(report))]
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


def _standardised_weights(model: PartyModel) -> str:
    values = [[name, f"{w:+.4f}", f"{m:.4g}", f"{s:.4g}"]
              for name, w, m, s in zip(model.features, model.weights, model.mean, model.scale)]
    if model.intercept is not None:
        values.append(["intercept", f"{model.intercept:+.4f}", "", ""])
    return (
        _table(["feature", "weight", "training mean", "training std"], values)
        + _image(plots.weights(model.features, model.weights, f"{model.party}: weights by feature"),
                 f"{model.party}'s weights")
        + "<p class=note>Written by this party's daemon from its own model file; it never leaves this machine. "
          "Weights apply to each column standardised with the training mean and std above.</p>"
    )


def _binned_weights(model: PartyModel) -> str:
    """One row per bin: the weight an applicant in it adds to the log-odds of default."""
    features = model.binner.features
    blocks = model.binner.weight_blocks(model.weights)
    values = [[f.feature, label, f"{w:+.4f}"] for f, block in zip(features, blocks) for label, w in zip(f.labels, block)]
    if model.intercept is not None:
        values.append(["intercept", "", f"{model.intercept:+.4f}"])
    spreads = [float(block.max() - block.min()) if len(block) else 0.0 for block in blocks]
    return (
        _table(["feature", "bin", "weight"], values, names=2)
        + _image(plots.weights([f.feature for f in features], spreads, f"{model.party}: spread of bin weights", True),
                 f"{model.party}'s weights")
        + "<p class=note>Written by this party's daemon from its own model file; it never leaves this machine. "
          "Each feature is binned on this party's training rows; an applicant adds the weight of the bin they fall "
          "in (log-odds of default; > 0 raises the risk). The chart shows each feature's spread between its lowest "
          "and highest bin weight.</p>"
    )


def render_party_page(model: PartyModel, rows: int, train_rows: int, evaluation: dict | None = None) -> str:
    """One party's own page: its columns and weights; the card center adds the evaluation it computed."""
    heading = (f"<h2>Weights of {_text(model.party)} ({_text(model.role.replace('_', ' '))})</h2>"
               f"<p>Trained on {train_rows} of the {plural(rows, 'applicant')} every party holds.</p>")
    own = _binned_weights(model) if model.binned else _standardised_weights(model)
    sections = [heading + own]
    if evaluation is not None and evaluation.get("curves"):
        curves = evaluation["curves"]
        sections += [comparison_section(evaluation, curves), distribution_section(curves),
                     points_section(curves, evaluation), stability_section(curves["psi"]),
                     card_center_section(curves, with_weights=False, binned=model.binned)]
    if evaluation is not None:
        iv = evaluation.get("iv") or {}
        own = {**evaluation, "iv": {model.party: iv[model.party]} if model.party in iv else None}
        sections += validation_sections(own)    # the IV of this party's own features only
    return _page(f"fedscore: {model.party}'s model", f"job {model.job_name} ({model.job_id})", sections)
