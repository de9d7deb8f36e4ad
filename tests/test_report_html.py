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
from fedscore.report.html import render_report
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
    assert "ROC" in pages["guest"] and "ROC" not in pages["bureau"]   # only the card center has the curves

    center = (folder / "report.html").read_text()
    assert all(cell(f) in center for f in everyone["guest"])
    assert not any(cell(f) in center for f in everyone["bureau"] | everyone["shop"])
    assert cell("partners combined (2)") in center
    assert not any(f"{w:+.4f}" in center for name in ("bureau", "shop") for w in models[name].weights)


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
    assert curves["card_center"]["features"] == list(center.table.feature_names)
    np.testing.assert_allclose(curves["card_center"]["weights"], weights["guest"][:-1], atol=1e-12)
    # nothing per row: every list is a curve, a histogram or a handful of bins
    lists = [v for part in ("federated", "local_only", "score_histogram") for v in curves[part].values()]
    assert max(len(v) for v in lists) <= 201 and len(federated["bads"]) < len(test) / 5


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


def drawn_by_images(page: Path, folder: Path, name: str, height: int) -> tuple[int, int]:
    """(non-white pixels the page's images add on screen, non-white pixels of the images themselves)."""
    text = page.read_text()
    stripped = folder / f"{name}-without-images.html"
    stripped.write_text(IMAGE.sub("", text))
    shown = non_white(screenshot(page, folder / f"{name}.png", height))
    bare = non_white(screenshot(stripped, folder / f"{name}-without-images.png", height))
    return shown - bare, sum(non_white(image) for _, image in images(text))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it: .ci/run)")
def test_the_plots_are_on_the_page_in_headless_chromium(run, tmp_path):
    folder, _, report = run
    page = folder / "report.html"
    drawn = images(page.read_text())
    assert [alt for alt, _ in drawn] == [
        "ROC curves of the federated and the card-center-only model", "KS curve of the federated score",
        "training loss per epoch", "score distribution of goods and bads",
        "score shares per bin, training and held-out rows", "the card center's weights", "shares of the score's variance",
    ]
    for alt, image in drawn:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 200, alt
        assert non_white(image) > 0.03 * image.width * image.height, f"{alt}: blank"

    added, inked = drawn_by_images(page, tmp_path, "report", height=6000)
    assert added > 0.8 * inked, f"the page's plots add {added} dark pixels on screen; the images hold {inked}"

    # the measure catches a page whose images are there but blank: same layout, nothing drawn
    blank = tmp_path / "blank.html"
    blank.write_text(IMAGE.sub(lambda m: _white_like(m), page.read_text()))
    blank_added, _ = drawn_by_images(blank, tmp_path, "blank", height=6000)
    assert blank_added < 0.05 * inked

    partner = Path(next(p["report"] for p in report["parties"] if p["name"] == "shop"))
    added, inked = drawn_by_images(partner, tmp_path, "shop", height=1600)
    assert inked > 10_000 and added > 0.8 * inked


def _white_like(match: re.Match) -> str:
    """The same <img>, its PNG replaced by an all-white one of the same size."""
    image = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
    buffer = io.BytesIO()
    Image.new("RGB", image.size, "white").save(buffer, format="PNG")
    return f'<img alt="{match.group(1)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
