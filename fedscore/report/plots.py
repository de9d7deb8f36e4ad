"""The report's plots: matplotlib figures drawn off-screen (Agg) and returned as PNG bytes.

Each function takes the aggregates the card center returned (fedscore.model.curves), never rows.
Figures are built without pyplot, so drawing in a daemon's threads touches no global state.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

WIDTH, HEIGHT, DPI = 9.0, 3.8, 100      # 900 x 380 pixels
FEDERATED, LOCAL_ONLY, BADS, GOODS, PARTNERS = "#1f5fa8", "#9a9a9a", "#c0392b", "#2e8b57", "#7b4ea3"


def _figure(height: float = HEIGHT, width: float = WIDTH) -> tuple[Figure, object]:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(True, color="#e3e3e3", linewidth=0.8)
    axes.set_axisbelow(True)
    return figure, axes


def _png(figure: Figure) -> bytes:
    with warnings.catch_warnings():   # a figure whose labels leave no margin keeps its default layout, silently:
        warnings.filterwarnings("ignore", message="Tight layout not applied")   # `--quiet` prints nothing
        figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def roc(federated: dict, local_only: dict, auc: float | None, local_auc: float | None, rows: str) -> bytes:
    figure, axes = _figure(height=5.6, width=6.4)
    axes.plot([0, 1], [0, 1], color="#cccccc", linestyle="--", linewidth=1, label="random")
    axes.plot(local_only["goods"], local_only["bads"], color=LOCAL_ONLY, linewidth=2,
              label=f"card center alone{_auc(local_auc)}")
    axes.plot(federated["goods"], federated["bads"], color=FEDERATED, linewidth=2.4, label=f"federated{_auc(auc)}")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="goods declined (false-positive rate)",
             ylabel="bads declined (true-positive rate)", title=f"ROC, {rows} rows")
    axes.set_aspect("equal")
    axes.legend(loc="lower right")
    return _png(figure)


def _auc(value: float | None) -> str:
    return "" if value is None else f" (AUC {value:.3f})"


def ks(federated: dict, rows: str) -> bytes:
    population, bads, goods = (np.asarray(federated[k]) for k in ("population", "bads", "goods"))
    at = int(np.argmax(bads - goods))
    figure, axes = _figure()
    axes.plot(population, bads, color=BADS, linewidth=2.2, label="bads, cumulative share")
    axes.plot(population, goods, color=GOODS, linewidth=2.2, label="goods, cumulative share")
    axes.vlines(population[at], goods[at], bads[at], color="black", linewidth=1.5)
    axes.annotate(f"KS {bads[at] - goods[at]:.3f}", (population[at], (bads[at] + goods[at]) / 2),
                  xytext=(8, 0), textcoords="offset points", va="center")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="share of applicants, riskiest first",
             ylabel="cumulative share", title=f"KS curve of the federated score, {rows} rows")
    axes.legend(loc="lower right")
    return _png(figure)


def loss(losses: list[float]) -> bytes:
    figure, axes = _figure(height=3.2)
    epochs = np.arange(1, len(losses) + 1)
    axes.plot(epochs, losses, color=FEDERATED, marker="o", linewidth=2)
    axes.set(xlabel="epoch", ylabel="training loss (Taylor)", title="Loss per epoch")
    axes.set_xticks(epochs if len(epochs) <= 20 else np.linspace(1, len(epochs), 10).round())
    return _png(figure)


def _goods_and_bads(axes, edges: np.ndarray, histogram: dict) -> None:
    """Goods and bads side by side per bin, each as a share of its own group."""
    goods, bads = np.asarray(histogram["goods"], float), np.asarray(histogram["bads"], float)
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    axes.bar(centres - width / 4, 100 * goods / max(goods.sum(), 1), width / 2, color=GOODS,
             label=f"goods ({int(goods.sum())})")
    axes.bar(centres + width / 4, 100 * bads / max(bads.sum(), 1), width / 2, color=BADS,
             label=f"bads ({int(bads.sum())})")


def score_distribution(histogram: dict, rows: str) -> bytes:
    edges = np.asarray(histogram["edges"])
    figure, axes = _figure()
    _goods_and_bads(axes, edges, histogram)
    axes.set(xlim=(0, 1), xlabel="federated P(default)", ylabel="% of the group",
             title=f"Score distribution of goods and bads, {rows} rows")
    axes.legend()
    return _png(figure)


def decile_bars(expected: np.ndarray, actual: np.ndarray, names: tuple[str, str], xlabel: str, ylabel: str,
                title: str, height: float = 3.2) -> bytes:
    """Two populations' shares side by side over the training scores' bins: what a PSI compares."""
    positions = np.arange(len(expected))
    figure, axes = _figure(height=height)
    axes.bar(positions - 0.2, 100 * expected, 0.4, color=FEDERATED, label=names[0])
    axes.bar(positions + 0.2, 100 * actual, 0.4, color="#e39b2d", label=names[1])
    axes.set_xticks(positions, [str(i + 1) for i in positions])
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title,
             ylim=(0, 135 * max(expected.max(), actual.max(), 0.01)))   # room for the legend above the bars
    axes.legend(loc="upper left", ncol=2)
    return _png(figure)


def stability(psi: dict) -> bytes:
    return decile_bars(np.asarray(psi["training"]), np.asarray(psi["held_out"]), ("training rows", "held-out rows"),
                       "bin of the training scores, lowest risk first", "% of rows",
                       f"Stability, training vs held-out rows: PSI {psi['total']:.4f}")


def weights(names: list[str], values: list[float], title: str, spreads: bool = False) -> bytes:
    """Signed weights per standardised column, or (``spreads``) each binned feature's spread of bin weights."""
    order = np.argsort(np.abs(values))
    figure, axes = _figure(height=max(2.2, 0.8 + 0.32 * len(names)))
    shown = np.asarray(values, dtype=float)[order]
    colours = [FEDERATED] * len(shown) if spreads else [BADS if v > 0 else GOODS for v in shown]
    axes.barh([names[i] for i in order], shown, color=colours)
    axes.axvline(0, color="black", linewidth=0.8)
    xlabel = ("highest minus lowest bin weight (log-odds of default)" if spreads
              else "weight per standard deviation (log-odds of default; > 0 raises the risk)")
    axes.set(xlabel=xlabel, title=title)
    return _png(figure)


def variance_shares(names: list[str], shares: list[float], partners: float, partner_count: int) -> bytes:
    labels = [*names, f"partners combined ({partner_count})"]
    values = np.asarray([*shares, partners]) * 100
    figure, axes = _figure(height=max(2.2, 0.8 + 0.32 * len(labels)))
    axes.barh(labels[::-1], values[::-1], color=[PARTNERS, *([FEDERATED] * len(names))])
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set(xlabel="% of the federated score's variance (training rows)",
             title="Where the score's spread comes from")
    return _png(figure)


def reliability(calibration: list[dict], rows: str) -> bytes:
    """Observed against predicted default rate per PD group: on the diagonal when the PD is calibrated."""
    predicted = np.asarray([row["predicted"] for row in calibration], float)
    observed = np.asarray([row["observed"] for row in calibration], float)
    top = min(1.0, 1.1 * max(predicted.max(), observed.max(), 0.01))
    figure, axes = _figure(height=5.2, width=6.0)
    axes.plot([0, top], [0, top], color="#cccccc", linestyle="--", linewidth=1, label="perfect calibration")
    axes.plot(predicted, observed, color=FEDERATED, marker="o", linewidth=2, label="PD groups")
    axes.set(xlim=(0, top), ylim=(0, top), xlabel="predicted default rate (mean PD)",
             ylabel="observed default rate", title=f"Reliability, {rows} rows")
    axes.set_aspect("equal")
    axes.legend(loc="upper left")
    return _png(figure)


def points_distribution(histogram: dict, rows: str, cut_offs: list[tuple[str, float]] = ()) -> bytes:
    """Goods and bads per points bin (each as a share of its group), with the decision cut-offs drawn."""
    edges = np.asarray(histogram["edges"], float)
    figure, axes = _figure()
    _goods_and_bads(axes, edges, histogram)
    for name, at in cut_offs:
        axes.axvline(at, color="black", linestyle=":", linewidth=1.2)
        axes.annotate(name, (at, 1), xycoords=("data", "axes fraction"), xytext=(4, -12),
                      textcoords="offset points", fontsize=9, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    axes.set(xlim=(edges[0], edges[-1]), xlabel="scorecard points (higher = lower risk)", ylabel="% of the group",
             title=f"Score distribution in points, {rows} rows")
    axes.legend(loc="upper right")
    return _png(figure)
