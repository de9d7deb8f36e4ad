"""The HTML report of a real run through the daemons: what it holds, what each party sees, and (in headless
Chromium) that its plots are really on the page."""
from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from fedscore.model.model_file import PartyModel
from fedscore.report.build import html_path
from fedscore.model.curves import population_stability, probability, rank_curve, score_histogram
from fedscore.model.validation import points_histogram, validation_summary
from fedscore.report.html import render_party_page, render_report
from fedscore.cli.runner import run_job_file

from conftest import DATA, trained_weights, write_job
from test_curves import numpy_psi
from test_protocol import consortium_for

CHROMIUM = shutil.which("chromium")
IMAGE = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
SETTINGS = dict(epochs=3, batch_size=128, l2=0.01, learning_rate=0.3, validation=0.25)
PARTNER_COLUMNS = {"bureau": [f"pay_{i}" for i in range(8)], "shop": [f"spend_{i}" for i in range(12)]}


def three_parties(folder: Path) -> list[dict]:
    """The breast split: the guest's 10 columns, the host's 20 shared by two partners under names of their own."""
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    host = pd.read_csv(DATA / "breast_hetero_host.csv")
    start = 0
    for partner, columns in PARTNER_COLUMNS.items():
        own = host[["id"] + [f"x{i}" for i in range(start, start + len(columns))]]
        own.set_axis(["id", *columns], axis=1).to_csv(folder / f"{partner}.csv", index=False)
        start += len(columns)
    return [
        {"name": "guest", "data": "breast_hetero_guest.csv", "id": "id", "label": "y"},
        *({"name": partner, "data": f"{partner}.csv", "id": "id"} for partner in PARTNER_COLUMNS),
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small job through real daemons, with its JSON report and pages."""
    folder = tmp_path_factory.mktemp("report")
    parties = three_parties(folder)
    report = run_job_file(write_job(folder, parties, **SETTINGS), local=True, report_path=folder / "report.json", workers=1)
    return folder, parties, report


def images(page: str) -> list[tuple[str, Image.Image]]:
    return [(html.unescape(alt), Image.open(io.BytesIO(base64.b64decode(data)))) for alt, data in IMAGE.findall(page)]


def non_white(image: Image.Image) -> int:
    """Pixels any channel of which is visibly darker than white."""
    pixels = np.asarray(image.convert("RGB"))
    return int(np.count_nonzero(pixels.min(axis=2) < 235))


def cell(text: str) -> str:
    return f">{text}<"


def test_a_run_writes_the_page_beside_its_json_report_and_one_page_per_party(run):
    folder, _, report = run
    page = html_path(folder / "report.json")
    assert page == folder / "report.html" and page.is_file()
    text = page.read_text()
    assert text == render_report(report)                  # the page is the JSON report, drawn
    # self-contained: every image inline, nothing fetched from anywhere
    assert not re.search(r"<script|<link|<iframe|url\(|https?:|src=\"(?!data:image/png;base64,)", text)
    for party in report["parties"]:
        own = Path(party["report"])
        assert own.is_file() and own.parent == Path(party["model"]).parent, party["name"]


def test_each_party_sees_its_own_weights_and_the_card_center_sees_partners_only_as_a_total(run):
    folder, _, report = run
    pages = {p["name"]: Path(p["report"]).read_text() for p in report["parties"]}
    models = {p["name"]: PartyModel.from_json(Path(p["model"]).read_text()) for p in report["parties"]}
    everyone = {name: set(model.features) for name, model in models.items()}
    for name, page in pages.items():
        model = models[name]
        for feature, weight in zip(model.features, model.weights):
            assert cell(feature) in page and cell(f"{weight:+.4f}") in page, (name, feature)
        for other, features in everyone.items():
            if other != name:
                assert not any(cell(f) in page for f in features), f"{name}'s page names {other}'s columns"
    roc = 'alt="ROC curves'
    assert roc in pages["guest"] and roc not in pages["bureau"]   # only the card center has the curves

    center = (folder / "report.html").read_text()
    assert all(cell(f) in center for f in everyone["guest"])
    assert not any(cell(f) in center for f in everyone["bureau"] | everyone["shop"])
    assert cell("partners combined (2)") in center
    assert report["binning"] == "quantile" and cell("spread of bin weights") in center   # the default: binned
    for name, model in models.items():   # each bin of each own feature, with its weight
        assert model.binned
        for feature, labels in ((f.feature, f.labels) for f in model.binner.features):
            assert all(f"<td class=name>{feature}</td><td class=name>{html.escape(label)}</td>" in pages[name]
                       for label in labels), (name, feature)
    # no partner's weight is shown (a value the card center's own table also holds may coincide: bins with
    # no weight to learn sit at exactly zero)
    own = {f"{w:+.4f}" for w in models["guest"].weights}
    shown = [f"{w:+.4f}" for name in ("bureau", "shop") for w in models[name].weights if f"{w:+.4f}" not in own]
    # the card center's page holds other signed four-decimal figures, so a value can coincide by chance (the
    # card center's start is random): a page showing the partners' weights would hold every one of them
    coinciding = sum(cell(w) in center for w in shown)
    assert shown and coinciding <= max(3, len(shown) // 10), (coinciding, len(shown))


def test_the_curves_are_the_run_s_scores_seen_through_sklearn_and_numpy(run, keypair, inline_pool):
    folder, parties, report = run
    consortium = consortium_for(folder, parties, keypair, inline_pool, **SETTINGS)
    weights = trained_weights(report)
    center = consortium.card_center
    sessions = {"guest": center, **consortium.partners}
    scores = sum(session.matrix @ weights[name] for name, session in sessions.items())
    train, test, labels = center.train_rows, center.test_rows, center.labels
    curves = report["evaluation"]
    assert curves["rows"] == "held-out" and curves["row_count"] == len(test) == report["test_rows"]
    assert curves["bads"] == int(labels[test].sum())

    federated = curves["federated"]
    fpr, tpr, _ = roc_curve(labels[test], scores[test], drop_intermediate=False)
    on_curve = {(round(g, 6), round(b, 6)) for g, b in zip(fpr, tpr)}
    assert all((round(g, 6), round(b, 6)) in on_curve for g, b in zip(federated["goods"], federated["bads"]))
    goods, bads = np.asarray(federated["goods"]), np.asarray(federated["bads"])
    area = float(np.sum(np.diff(goods) * (bads[1:] + bads[:-1]) / 2))
    assert area == pytest.approx(roc_auc_score(labels[test], scores[test]), abs=0.02)
    assert max(np.subtract(federated["bads"], federated["goods"])) <= report["test_ks"] + 1e-6

    edges = np.linspace(0, 1, 21)
    probability = 1 / (1 + np.exp(-scores[test]))
    histogram = curves["score_histogram"]
    assert histogram["bads"] == np.histogram(probability[labels[test] == 1], edges)[0].tolist()
    assert histogram["goods"] == np.histogram(probability[labels[test] == 0], edges)[0].tolist()
    assert curves["psi"]["total"] == pytest.approx(numpy_psi(scores[train], scores[test]), abs=1e-5)

    shares = curves["variance_shares"]
    assert sum(shares["features"]) + shares["partners"] == pytest.approx(1.0, abs=1e-5)
    assert curves["card_center"]["features"] == list(center.features)
    if center.binner is None:
        np.testing.assert_allclose(curves["card_center"]["weights"], weights["guest"][:-1], atol=1e-12)
    else:   # binned: each feature's spread between its lowest and highest bin weight
        blocks = center.binner.weight_blocks(weights["guest"][:-1])
        np.testing.assert_allclose(curves["card_center"]["weights"], [b.max() - b.min() for b in blocks], atol=1e-12)
    # nothing per row: every list is a curve, a histogram or a handful of bins
    lists = [v for part in ("federated", "local_only", "score_histogram") for v in curves[part].values()]
    assert max(len(v) for v in lists) <= 201 and len(federated["bads"]) < len(test) / 5


def expected_images(report: dict) -> list[str]:
    """The page's plots in order; the validation plots only when the report holds their data."""
    points = report["evaluation"].get("points_histogram") is not None
    return [
        "ROC curves of the federated and the card-center-only model", "KS curve of the federated score",
        "training loss per epoch", "score distribution of goods and bads",
        *(["score distribution in points of goods and bads"] if points else []),
        "score shares per bin, training and held-out rows", "the card center's weights", "shares of the score's variance",
        *(["reliability: observed against predicted default rate"] if report.get("calibration") else []),
    ]


def screenshot(page: Path, out: Path, height: int) -> Image.Image:
    """What a person sees: the page in headless Chromium, ``height`` pixels tall, 1200 wide."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={out}", f"--window-size=1200,{height}",
             page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180,
        )
    assert done.returncode == 0 and out.is_file(), f"chromium failed: {done.stderr[-2000:]}"
    return Image.open(out)


PAGE_HEIGHT = 24_000   # pixels: the whole report (with its scorecard, IV and fairness tables) in one screenshot


def drawn_by_images(page: Path, folder: Path, name: str, height: int) -> tuple[int, int]:
    """(non-white pixels the page's images add on screen, non-white pixels of the images themselves)."""
    text = page.read_text()
    stripped = folder / f"{name}-without-images.html"
    stripped.write_text(IMAGE.sub("", text))
    shown = non_white(screenshot(page, folder / f"{name}.png", height))
    bare = non_white(screenshot(stripped, folder / f"{name}-without-images.png", height))
    return shown - bare, sum(non_white(image) for _, image in images(text))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it: .ci/run)")
@pytest.mark.slow
def test_the_plots_are_on_the_page_in_headless_chromium(run, tmp_path):
    folder, _, report = run
    page = folder / "report.html"
    drawn = images(page.read_text())
    assert [alt for alt, _ in drawn] == expected_images(report)
    for alt, image in drawn:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 200, alt
        assert non_white(image) > 0.03 * image.width * image.height, f"{alt}: blank"

    added, inked = drawn_by_images(page, tmp_path, "report", height=PAGE_HEIGHT)
    assert added > 0.8 * inked, f"the page's plots add {added} dark pixels on screen; the images hold {inked}"

    # the measure catches a page whose images are there but blank: same layout, nothing drawn
    blank = tmp_path / "blank.html"
    blank.write_text(IMAGE.sub(lambda m: _white_like(m), page.read_text()))
    blank_added, _ = drawn_by_images(blank, tmp_path, "blank", height=PAGE_HEIGHT)
    assert blank_added < 0.05 * inked

    partner = Path(next(p["report"] for p in report["parties"] if p["name"] == "shop"))
    added, inked = drawn_by_images(partner, tmp_path, "shop", height=PAGE_HEIGHT)   # its bins table, then the plot
    assert inked > 10_000 and added > 0.8 * inked


def _white_like(match: re.Match) -> str:
    """The same <img>, its PNG replaced by an all-white one of the same size."""
    image = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
    buffer = io.BytesIO()
    Image.new("RGB", image.size, "white").save(buffer, format="PNG")
    return f'<img alt="{match.group(1)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


# -- validation sections, from report dicts (no run needed) --------------------------------------------------

VALIDATION_TITLES = ("<h2>Calibration</h2>", "<h2>Gains and lift</h2>", "<h2>Decision bands</h2>", "<h2>Fairness</h2>",
                     "<h2>Information value</h2>", "<h2>Scorecard</h2>", "<h2>Score distribution in points</h2>")


def synthetic_run(n: int = 3000, seed: int = 21) -> dict:
    """A report dict as a coordinator would write it, from random scores: curves plus every validation key."""
    rng = np.random.default_rng(seed)
    log_odds = rng.normal(-1.5, 1.0, n)
    pd_ = 1 / (1 + np.exp(-log_odds))
    labels = (rng.uniform(size=n) < pd_).astype(int)
    points = 600 - 20 * log_odds / np.log(2)
    limits = np.where(points >= 620, 50_000.0, np.where(points >= 580, 25_000.0, 0.0))
    groups = {"SEX": rng.choice([1, 2], n), "AGE": rng.integers(21, 70, n),
              "REGION": np.r_[rng.choice(["north", "south"], n - 10), ["islands"] * 10]}
    half = n // 2
    curves_ = {
        "rows": "held-out", "row_count": n - half, "bads": int(labels[half:].sum()),
        "federated": rank_curve(labels[half:], log_odds[half:]).to_json(),
        "local_only": rank_curve(labels[half:], log_odds[half:] + rng.normal(0, 1, n - half)).to_json(),
        "score_histogram": score_histogram(labels[half:], log_odds[half:]),
        "psi": psi_json(log_odds[:half], log_odds[half:]),
        "card_center": {"party": "guest", "features": ["AGE", "LIMIT_BAL"], "weights": [0.2, 0.45], "intercept": -1.5},
        "variance_shares": {"features": [0.2, 0.5], "partners": 0.3, "partner_count": 1},
        "points_histogram": points_histogram(labels[half:], points[half:]),
    }
    test = slice(half, None)
    summary = validation_summary(labels[test], pd_[test], points[test], limits[test], 620.0, 580.0,
                                 {k: v[test] for k, v in groups.items()})
    return {
        "job": "validation", "job_id": "job-1", "auc": 0.7, "ks": 0.3, "test_auc": 0.69, "test_ks": 0.29,
        "loss": [0.69, 0.6, 0.58], "binning": "quantile", "epochs": 3, "epochs_planned": 3, "train_rows": half, "test_rows": n - half,
        "parties": [{"name": "guest", "role": "card_center"}, {"name": "bureau", "role": "partner"}],
        "evaluation": curves_,
        **summary,
        "iv": {"guest": {"AGE": 0.08, "LIMIT_BAL": 0.21, "SEX": 0.004}, "bureau": {"PAY_0": 0.87}},
        "scorecard": [
            {"characteristic": "AGE", "bin": [None, 30], "count": 700, "bad_rate": 0.31, "woe": -0.2534,
             "weight": 0.81, "points": 12.5},
            {"characteristic": "AGE", "bin": [30, None], "count": 800, "bad_rate": 0.18, "woe": 0.4123,
             "weight": 0.81, "points": 31.0},
            {"characteristic": "SEX", "bin": "female", "count": 900, "bad_rate": 0.2, "woe": 0.0912,
             "weight": 1.02, "points": 24},
        ],
        "calibration_fit": {"slope": 0.9731, "intercept": -0.0412},
    }


def psi_json(train: np.ndarray, test: np.ndarray) -> dict:
    stability = population_stability(train, test)
    return {"edges": [round(float(e), 3) for e in probability(stability["edges"])],
            "training": stability["expected"].tolist(), "held_out": stability["actual"].tolist(),
            "terms": stability["terms"].tolist(), "total": stability["total"]}


def test_a_report_with_validation_keys_renders_every_section_with_its_numbers():
    report = synthetic_run()
    page = render_report(report)
    for title in VALIDATION_TITLES:
        assert title in page, title
    assert "Stability: training vs held-out rows (same period; not an out-of-time check)" in page
    alts = [alt for alt, _ in images(page)]
    assert alts == expected_images(report)
    assert cell("spread of bin weights") in page and cell("0.4500") in page
    assert all(image.format == "PNG" and non_white(image) > 1000 for _, image in images(page))

    # calibration: the sentence's numbers and each decile's predicted and observed rates
    assert f"Brier score {report['brier']:.4f}" in page and f"log-loss {report['log_loss']:.4f}" in page
    rate = report["observed_default_rate"]
    assert f"would score {rate * (1 - rate):.4f}" in page
    assert f"Mean predicted PD {100 * report['mean_pd']:.2f}%" in page and f"rate of {100 * rate:.2f}%" in page
    assert "slope 0.9731" in page and "intercept -0.0412" in page
    for row in report["calibration"]:
        assert cell(f"{100 * row['predicted']:.2f}%") in page and cell(f"{100 * row['observed']:.2f}%") in page

    # gains: lift and cumulative share per decile
    for row in report["gains"]:
        assert cell(f"{row['lift']:.2f}×") in page and cell(f"{100 * row['cumulative_bads_share']:.1f}%") in page

    # decision bands: counts and credit limits
    for row in report["decision_bands"]:
        assert f"<td class=name>{row['decision']}</td>" in page
        assert cell(str(row["count"])) in page and cell(f"{row['total_limit']:,.0f}") in page
    assert cell("≥ 620") in page and cell("580 – 620") in page and cell("&lt; 580") in page

    # fairness: the ratio and verdict of each attribute; the small group flagged
    for name, attribute in report["fairness"].items():
        assert cell(name) in page and cell(f"{attribute['adverse_impact_ratio']:.3f}") in page
    assert cell("small: not judged") in page and cell("islands") in page
    assert "(numbers cut into quantile bands)" in page

    # information value, largest first, with its reading; the scorecard's bins and points
    iv_table = page[page.index("<h2>Information value</h2>"):page.index("<h2>Scorecard</h2>")]
    at = [iv_table.index(cell(f)) for f in ("PAY_0", "LIMIT_BAL", "AGE", "SEX")]
    assert at == sorted(at)
    assert cell("check for leakage") in iv_table and cell("not useful") in iv_table
    assert cell("0.8700") in iv_table and cell("medium") in iv_table and cell("weak") in iv_table
    scorecard = page[page.index("<h2>Scorecard</h2>"):]
    assert cell("[−∞, 30)") in scorecard and cell("[30, +∞)") in scorecard and cell("female") in scorecard
    assert cell("12.5") in scorecard and cell("-0.2534") in scorecard and cell("24") in scorecard


def test_an_old_report_without_validation_keys_still_renders():
    report = synthetic_run()
    for key in ("brier", "log_loss", "mean_pd", "observed_default_rate", "calibration", "gains", "decision_bands",
                "fairness", "iv", "scorecard", "calibration_fit"):
        del report[key]
    del report["evaluation"]["points_histogram"], report["binning"]
    page = render_report(report)
    assert not any(title in page for title in VALIDATION_TITLES)
    assert [alt for alt, _ in images(page)] == expected_images(report)
    assert "<h2>Weights: guest (card center)</h2>" in page
    assert cell("weight") in page and cell("spread of bin weights") not in page   # no "binning": standardised

    bare = render_report({"job": "old", "job_id": "job-0", "auc": 0.7, "loss": [0.6], "parties": []})
    assert "carries no curves" in bare and not any(title in bare for title in VALIDATION_TITLES)


def test_keys_present_but_empty_render_nothing_and_a_partial_report_renders_what_it_has():
    report = {**synthetic_run(), "calibration": None, "gains": [], "fairness": None, "iv": {}, "scorecard": None,
              "decision_bands": None, "calibration_fit": None}
    page = render_report(report)
    assert "<h2>Calibration</h2>" in page and f"Brier score {report['brier']:.4f}" in page   # the sentence alone
    assert "reliability" not in page and "Recalibration" not in page
    assert not any(t in page for t in VALIDATION_TITLES if t not in ("<h2>Calibration</h2>",
                                                                     "<h2>Score distribution in points</h2>"))


def test_the_card_center_s_own_page_shows_validation_but_only_its_own_information_values():
    report = synthetic_run()
    evaluation = {**{k: v for k, v in report.items() if k != "evaluation"}, "curves": report["evaluation"]}
    model = PartyModel(party="guest", role="card_center", job_id="job-1", job_name="validation",
                       id_columns=["id"], features=["AGE", "LIMIT_BAL"], weights=[-0.2, 0.4], mean=[40.0, 1e5],
                       scale=[10.0, 5e4], intercept=-1.5)
    page = render_party_page(model, 3000, 1500, evaluation)
    assert "<h2>Calibration</h2>" in page and "<h2>Scorecard</h2>" in page
    iv_table = page[page.index("<h2>Information value</h2>"):page.index("<h2>Scorecard</h2>")]
    assert cell("LIMIT_BAL") in iv_table and cell("PAY_0") not in iv_table
