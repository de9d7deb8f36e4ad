"""The building blocks every report page shares: the style sheet, the page skeleton, tables and number formats.

Kept apart so the job report and its validation sections format cells the same way from one place.
"""
from __future__ import annotations

import base64
import html

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
