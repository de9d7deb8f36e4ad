"""The monitoring page: `fedscore monitor --html`, drawn from the monitoring document (aggregates only).

Four plots: the scored applicants' score distribution against the training
population's, the PSI per period with the watch and alert lines, each
partner's answer rate per period, and the decision mix per period against
the expected shares; then the period table and the alerts.
"""
from __future__ import annotations

import numpy as np

from fedscore.model.validation import DECISIONS
from fedscore.report.html_parts import _image, _page, _table, _text
from fedscore.report.plots import BADS, FEDERATED, GOODS, PARTNERS, _figure, _png, decile_bars

DECISION_COLOURS = {"approve": GOODS, "review": "#e39b2d", "decline": BADS}


def _positions(periods: list[dict]) -> tuple[np.ndarray, list[str]]:
    labels = [p["period"] for p in periods]
    return np.arange(len(labels)), labels


def _ticks(axes, positions: np.ndarray, labels: list[str]) -> None:
    step = max(1, len(labels) // 12)
    axes.set_xticks(positions[::step], labels[::step], rotation=30, ha="right")


def score_distribution_plot(bins: dict) -> bytes:
    training = np.asarray(bins["training"])
    scored = np.asarray(bins["scored"] or np.zeros(len(training)))
    return decile_bars(training, scored, ("training population", "scored applicants"),
                       "decile bin of the training scores (P(default)), lowest risk first", "% of applicants",
                       "Score distribution: scored applicants against training", height=3.4)


def psi_plot(periods: list[dict], thresholds: dict) -> bytes:
    positions, labels = _positions(periods)
    figure, axes = _figure(height=3.4)
    axes.plot(positions, [p["psi"] for p in periods], color=FEDERATED, marker="o", linewidth=2, label="score PSI")
    axes.plot(positions, [max(p["csi"].values(), default=0.0) for p in periods], color=PARTNERS, marker=".",
              linestyle="--", linewidth=1.5, label="largest CSI of an own feature")
    axes.axhline(thresholds["psi_watch"], color="#e39b2d", linewidth=1, label=f"watch {thresholds['psi_watch']}")
    axes.axhline(thresholds["psi_alert"], color=BADS, linewidth=1, label=f"alert {thresholds['psi_alert']}")
    _ticks(axes, positions, labels)
    axes.set(ylabel="stability index", title="Stability per period", ylim=(0, None))
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)


def answer_rate_plot(periods: list[dict], expected: dict) -> bytes:
    positions, labels = _positions(periods)
    figure, axes = _figure(height=3.4)
    names = sorted({name for p in periods for name in p["partners"]})
    colours = [FEDERATED, PARTNERS, GOODS, "#e39b2d", BADS]
    for index, name in enumerate(names):
        colour = colours[index % len(colours)]
        rates = [100 * p["partners"][name]["answer_rate"] if name in p["partners"] else np.nan for p in periods]
        axes.plot(positions, rates, color=colour, marker="o", linewidth=2, label=name)
        if name in expected:
            axes.axhline(100 * expected[name], color=colour, linewidth=1, linestyle=":")
    _ticks(axes, positions, labels)
    axes.set(ylabel="% of requests answered", title="Partner answer rate per period (dotted: expected at alignment)",
             ylim=(0, 105))
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)   # beside: a rate may fall to 0
    return _png(figure)


def decision_plot(periods: list[dict], expected: dict) -> bytes:
    positions, labels = _positions(periods)
    figure, axes = _figure(height=3.4)
    bottom = np.zeros(len(periods))
    for decision in DECISIONS:
        shares = np.array([100 * p["decisions"][decision] for p in periods])
        axes.bar(positions, shares, 0.6, bottom=bottom, color=DECISION_COLOURS[decision], label=decision)
        bottom += shares
    cumulative = 0.0
    for decision in DECISIONS[:-1]:
        cumulative += 100 * expected[decision]
        axes.axhline(cumulative, color="black", linewidth=1, linestyle=":")
    _ticks(axes, positions, labels)
    axes.set(ylabel="% of requests", title="Decision mix per period (dotted: expected cut between decisions)",
             ylim=(0, 100))
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)   # beside: the bars fill the plot
    return _png(figure)


def render_monitor_page(document: dict) -> str:
    periods = document["periods"]
    expected = document["expected"]
    sections = []
    alerts = document["alerts"]
    sections.append("<h2>Alerts</h2>" + ("<p>None.</p>" if not alerts else
                    "<ul>" + "".join(f"<li>{_text(a['message'])}</li>" for a in alerts) + "</ul>"))
    if document["notes"]:
        sections.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_text(n['message'])}</li>" for n in document["notes"]) + "</ul>")
    sections.append("<h2>Score distribution</h2>" + _image(score_distribution_plot(document["score_bins"]),
                                                            "score shares per decile bin, training and scored"))
    if periods:
        sections.append("<h2>Stability</h2>" + _image(psi_plot(periods, document["thresholds"]), "PSI per period"))
        sections.append("<h2>Partners</h2>" + _image(answer_rate_plot(periods, expected["answer_rates"]), "answer rates"))
        sections.append("<h2>Decisions</h2>" + _image(decision_plot(periods, expected["decisions"]), "decision mix"))
    partners = sorted({name for p in periods for name in p["partners"]})
    rows = []
    for p in periods:
        worst = "—" if p["worst_feature"] is None else f"{p['worst_feature']} {p['csi'][p['worst_feature']]:.3f}"
        rows.append([p["period"], p["requests"], f"{p['psi']:.3f}", p["psi_reading"], worst,
                     *(f"{100 * p['partners'][n]['answer_rate']:.1f}%" if n in p["partners"] else "—" for n in partners),
                     *(f"{100 * p['decisions'][d]:.1f}%" for d in DECISIONS)])
    rows.append(["expected", "", "", "", "", *(f"{100 * expected['answer_rates'][n]:.1f}%" if n in expected["answer_rates"]
                                               else "—" for n in partners),
                 *(f"{100 * expected['decisions'][d]:.1f}%" for d in DECISIONS)])
    sections.append("<h2>Per period</h2>" + _table(
        ["period", "requests", "PSI", "reading", "worst CSI", *partners, *DECISIONS], rows, names=1))
    subtitle = (f"model {document['job_id']}: {document['requests']} requests, per {document['per']}; "
                "from the card center's scoring log, which stays with it")
    return _page("Model monitoring", subtitle, sections)
