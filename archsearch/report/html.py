"""``report.html``: one self-contained page (inline CSS, the figures as base64 data URIs, nothing
fetched from the network; a two-line inline script only records whether every image loaded)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence

from archsearch.budget import format_budget
from archsearch.report.cells import ReportData
from archsearch.report.plot import Figure
from archsearch.report.text import (
    ANSWER_HEADING,
    READING,
    TABLE_HEADING,
    _importance_text,
    _totals,
    table_columns,
    table_rows,
)
from archsearch.report.trust import first_screen

CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2430;
  margin: 0 auto; max-width: 1320px; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #e3e6ea; }
.meta { color: #5b6470; margin: 0 0 16px; }
.partial { background: #fff4d6; border: 1px solid #f0c24b; border-left: 6px solid #e0a100;
  padding: 10px 14px; margin: 12px 0 16px; font-weight: 600; }
.note { color: #5b6470; font-style: italic; }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 6px; border-bottom: 1px solid #e3e6ea; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; white-space: normal; vertical-align: bottom; }
td:first-child, th:first-child { text-align: left; font-weight: 600; }
tr.empty td { color: #8a929c; }
tr.empty td[colspan] { text-align: center; font-style: italic; }
tr:hover td { background: #f8fafc; }
figure { margin: 16px 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eef0f2; }
figcaption { color: #5b6470; font-size: 13px; margin-top: 4px; }
ul.importance { font-size: 14px; }
ul.answer { padding-left: 20px; }
ul.answer li { margin: 6px 0; max-width: 1100px; }
ul.answer li.warning { background: #fdecea; border-left: 5px solid #c62828; padding: 6px 10px;
  list-style: none; margin-left: -20px; }
ul.answer li.scaling { font-weight: 600; }
ul.answer li.note { color: #5b6470; font-style: italic; }
.reading p { max-width: 900px; }
"""

LOAD_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.dataset.imagesLoaded = ok;
  document.body.dataset.imagesTotal = imgs.length;
});
</script>"""


def _md_inline(text: str) -> str:
    """``code`` and **bold** of the reading notes, as HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _answer(data: ReportData) -> list[str]:
    """The first screen: per budget and horizon the answer and its warnings, then the scaling law."""
    out = [f'<h2>{html.escape(ANSWER_HEADING)}</h2><ul class="answer" id="answer">']
    for kind, text in first_screen(data):
        mark = "<strong>⚠ Edge of the space.</strong> " if kind == "warning" else ""
        out.append(f'<li class="{kind}">{mark}{html.escape(text)}</li>')
    return [*out, "</ul>"]


def _table(data: ReportData) -> list[str]:
    """The search's best single trial per cell, one row each."""
    e = html.escape
    columns = table_columns(data)
    out = [
        f"<h2>{e(TABLE_HEADING)}</h2>",
        '<div class="scroll"><table id="best-per-cell"><thead><tr>',
        "".join(f"<th>{e(h)}</th>" for h, _ in columns),
        "</tr></thead><tbody>",
    ]
    keys = [k for _, k in columns]
    first_count = keys.index("n_complete")
    for cell, row in zip(data.cells, table_rows(data), strict=True):
        if cell.best is None:  # one cell across the architecture and training columns
            span = first_count - 1
            out.append(
                f'<tr class="empty"><td>{e(row[0])}</td><td colspan="{span}">no complete trial yet</td>'
                + "".join(f"<td>{e(v)}</td>" for v in row[first_count:])
                + "</tr>"
            )
        else:
            out.append("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>")
    return [*out, "</tbody></table></div>"]


def html_page(data: ReportData, figures: Sequence[Figure], generated: str) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>archsearch report: {e(data.title)}</title>",
        f"<style>{CSS}</style>",
        LOAD_CHECK,
        "</head><body>",
        f"<h1>archsearch report: {e(data.title)}</h1>",
        f'<p class="meta">Source: {e(data.source)}. Generated {e(generated)}.</p>',
    ]
    notice = data.partial_notice()
    if notice:
        out.append(f'<div class="partial" id="partial">{_md_inline(notice)}</div>')
    out += _answer(data)
    out.append(f'<p id="totals">{e(_totals(data))}</p>')
    for note in data.notes:
        out.append(f'<p class="note">{e(note)}</p>')
    out += _table(data)

    def figure(f: Figure) -> str:
        data_uri = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
        return (
            f'<figure><img src="{data_uri}" alt="{e(f.title)}">'
            f"<figcaption>{e(f.title)} ({e(f.name)})</figcaption></figure>"
        )

    for f in figures:
        if f.budget is None:
            out += ["<h2>Scaling</h2>", figure(f)]
    for budget in data.budgets:
        out.append(f"<h2>{e(format_budget(budget))}</h2>")
        out += [figure(f) for f in figures if f.budget == budget]
        out.append('<ul class="importance">')
        out += [f"<li>{e(_importance_text(c))}</li>" for c in data.cells_of(budget)]
        out.append("</ul>")
    out.append('<h2>Reading the plots</h2><div class="reading">')
    out += [f"<p>{_md_inline(p)}</p>" for p in READING]
    out += ["</div>", "</body></html>", ""]
    return "\n".join(out)
