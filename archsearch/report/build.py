"""Reports a researcher can look at: ``python -m archsearch report CONFIG|OUTPUT_DIR``.

The report reads an experiment's trials from its Optuna storage (given a config, or an output
directory holding ``archsearch.db``) or from ``experiment_results.csv`` alone, and writes into
``OUTPUT_DIR/report/``:

- ``report.html``: one self-contained page (inline CSS, the figures as base64 data URIs, nothing
  fetched from the network; a two-line inline script only records whether every image loaded);
- ``scaling.json``: each horizon's scaling law fitted across budgets
  (:mod:`archsearch.report.scaling`), or why there is none;
- the figures as PNGs: ``scaling.png`` (each budget's answer at its winner's parameter count with
  its 95% interval, and the fitted law, one colour per horizon) and per budget
  ``architecture_{budget}.png`` (val loss against n_layers, d_model and n_layers/d_model,
  coloured by learning rate, extremes marked), ``history_{budget}.png`` (val loss per trial with
  the best so far) and ``importance_{budget}.png`` (parameter importance);
- ``report.md``: the first screen (per budget and horizon the confirmed architecture with its
  interval, the runner-up, any edge-of-space warning, and each horizon's fitted exponent), the
  best-trial table, the counts and links to the PNGs, for a terminal or a PR.

matplotlib is imported inside the functions that draw, so the other commands stay fast.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from archsearch.errors import ArchsearchError
from archsearch.report.figures import render_figures
from archsearch.report.html import html_page
from archsearch.report.loading import ReportData, load
from archsearch.report.scaling import SCALING_JSON, write_scaling
from archsearch.report.text import markdown
from archsearch.report.trust import scaling_fits

FORMATS = ("html", "png", "md")


def build_report(
    source: str | Path,
    formats: Sequence[str] = FORMATS,
    output: str | Path | None = None,
    storage: str | None = None,
) -> tuple[ReportData, list[Path]]:
    """Read ``source`` and write the report in ``formats``; returns the data and the paths written.

    ``html`` writes ``report.html`` (figures inside it); ``png`` the figures; ``md`` ``report.md``
    and the figures it links to; every format writes ``scaling.json`` (each horizon's fitted law).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ArchsearchError(f"--format: unknown {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ArchsearchError(
            "the report draws with matplotlib, which is not installed: pip install 'archsearch[report]' "
            "(or pip install matplotlib)"
        ) from None
    data = load(source, storage)
    data.scaling = scaling_fits(data)
    out_dir = Path(output) if output is not None else data.default_output
    out_dir.mkdir(parents=True, exist_ok=True)
    from archsearch.outputs import atomic_write

    figures = render_figures(data)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_scaling(out_dir / SCALING_JSON, data.scaling)
    written = [out_dir / SCALING_JSON]
    if "png" in formats or "md" in formats:
        for f in figures:
            path = out_dir / f.name
            path.write_bytes(f.png)
            written.append(path)
    if "md" in formats:
        path = out_dir / "report.md"
        atomic_write(path, markdown(data, figures, generated))
        written.append(path)
    if "html" in formats:
        path = out_dir / "report.html"
        atomic_write(path, html_page(data, figures, generated))
        written.append(path)
    return data, written
