"""How far to trust a report's answer: per cell the confirmed winner with its interval, the
runner-up and whether they are separated, the winner's test loss against the constant predictor
(never used to choose), a warning when the winner lies on an edge of the space; per horizon the
fitted scaling law (:mod:`archsearch.report.scaling`). The report's first screen is made of these
lines (:func:`first_screen`), the same in ``report.md`` and ``report.html``."""

from __future__ import annotations

import math
from typing import Any

from archsearch.budget import format_budget
from archsearch.report.cells import CellReport, ReportData, finite
from archsearch.report.scaling import ScalingFit, ScalingPoint, fit_scaling

#: The config key that lists each edge's values (``ArchitectureConfig`` in archsearch/config/schema.py).
EDGE_KEYS = {"d_model": "architecture.d_model", "n_layers": "architecture.n_layers"}
#: Each edge: the field, its position in ``CellReport.architectures``, and how its two ends read.
EDGES = (
    ("d_model", 0, "the smallest d_model", "the largest d_model"),
    ("n_layers", 1, "the fewest layers", "the most layers"),
)
#: The kinds of line :func:`first_screen` gives.
ANSWER, WARNING, SCALING, NOTE = "answer", "warning", "scaling", "note"


def arch_text(arch: dict[str, Any]) -> str:
    """``d16 L12 h1 ff64`` (the parts that are known)."""
    names = (("d", "d_model"), ("L", "n_layers"), ("h", "n_heads"), ("ff", "d_ff"))
    return " ".join(f"{p}{arch[k]}" for p, k in names if arch.get(k) is not None)


def edge_warning(cell: CellReport) -> str | None:
    """A warning when the cell's answer holds the smallest or largest d_model or n_layers of the
    cell's architectures (an axis with one value is no edge, nor one layer: it is the floor),
    naming the config key to widen."""
    winner = cell.winner
    archs = cell.architectures
    if winner is None or not archs:
        return None
    where, widen = [], []
    for field, index, low_text, high_text in EDGES:
        values = sorted({a[index] for a in archs})
        value = winner.get(field)
        if len(values) < 2 or value is None:
            continue
        if value <= values[0]:
            if field == "n_layers" and value <= 1:
                continue  # one layer is the floor: no list reaches below it
            where.append(f"{low_text} ({value})")
            widen.append(f"{EDGE_KEYS[field]} (values below {value})")
        elif value >= values[-1]:
            where.append(f"{high_text} ({value})")
            widen.append(f"{EDGE_KEYS[field]} (values above {value})")
    if not where:
        return None
    who = "confirmed winner" if cell.confirmation is not None else "best trial"
    return (
        f"{cell.label}: the {who} ({arch_text(winner)}) lies on an edge of the space, with "
        f"{' and '.join(where)} of the cell's {len(archs)} architectures: the best may lie beyond it. "
        f"Widen {' and '.join(widen)}; a value outside the budget's band needs a larger tolerance."
    )


def _mean_text(mean: float, low: float, high: float, n: int) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.5f} (1 seed: no interval)"
    return f"{mean:.5f} ± {(high - low) / 2:.5f} (mean ± 95% t-interval over {n} seeds)"


def _separation(conf: Any) -> str:
    runner = conf.runner_up
    if runner is None:
        return "No runner-up: one configuration confirmed."
    text = f"Runner-up {arch_text(runner.arch)}: {_mean_text(runner.mean, runner.low, runner.high, len(runner.values))}"
    if conf.separated is None:
        return text + "; separation not judged (a candidate has fewer than 2 finished seeds)."
    if conf.separated:
        return text + "; separated from the winner (the 95% intervals do not overlap)."
    return text + "; not separated: the intervals overlap, so the data do not tell the two apart."


def _test_text(c: Any) -> str | None:
    if not finite(c.test_loss):
        return None
    text = f"Test loss {c.test_loss:.5f}"
    if finite(c.baseline_test_loss):
        verdict = "worse than" if c.test_loss > c.baseline_test_loss else "better than"
        text += f", {verdict} the constant predictor's {c.baseline_test_loss:.5f}"
    return text + " (not used for selection)."


def cell_lines(cell: CellReport) -> list[tuple[str, str]]:
    """The first screen's lines of one cell: its answer, then any warning."""
    conf = cell.confirmation
    if conf is None:
        best = cell.best
        if best is None:
            lines = [(ANSWER, f"{cell.label}: no complete trial yet; {cell.confirm_note}.")]
        else:
            lines = [
                (
                    ANSWER,
                    f"{cell.label}: {cell.confirm_note}: {arch_text(best)} ({best['param_count'] or 0:,} parameters), "
                    f"val loss {best['val_loss']:.5f} (trial {best['trial']}, one seed: no interval).",
                )
            ]
    else:
        w = conf.winner
        status = "" if conf.complete else " (provisional: confirmation trials still to finish)"
        agree = (
            "the search's single best trial is this configuration"
            if conf.agrees
            else f"the search's single best trial ({conf.search_best_of}) is another configuration"
        )
        text = (
            f"{cell.label}: confirmed {arch_text(w.arch)} ({w.n_params:,} parameters){status}, val loss "
            f"{_mean_text(w.mean, w.low, w.high, len(w.values))}; {agree}. {_separation(conf)}"
        )
        test = _test_text(w)
        lines = [(ANSWER, text + (f" {test}" if test else ""))]
    warning = edge_warning(cell)
    if warning:
        lines.append((WARNING, warning))
    return lines


# -- the scaling law ---------------------------------------------------------------------------------
def scaling_points(cells: list[CellReport]) -> list[ScalingPoint]:
    """One point per cell with an answer: the confirmed winner's parameter count and per-seed
    losses, else the best trial's count and loss (one value, marked not confirmed)."""
    out = []
    for c in sorted(cells, key=lambda c: c.budget):
        conf = c.confirmation
        if conf is not None and conf.winner.n_params > 0:
            w = conf.winner
            out.append(ScalingPoint(c.budget, w.n_params, tuple(w.values), True, arch_text(w.arch)))
        elif c.best is not None and c.best.get("param_count"):
            b = c.best
            out.append(ScalingPoint(c.budget, b["param_count"], (b["val_loss"],), False, arch_text(b)))
    return out


def scaling_fits(data: ReportData) -> list[ScalingFit]:
    """The scaling law of each horizon."""
    fits = []
    for horizon in data.horizons:
        cells = [c for c in data.cells if c.horizon == horizon]
        direction = cells[0].direction if cells else "minimize"
        fits.append(fit_scaling(scaling_points(cells), horizon=horizon, direction=direction))
    return fits


def scaling_line(fit: ScalingFit) -> str:
    """A horizon's fitted exponent with its interval and the prediction, or why there is none."""
    where = f"h{fit.horizon} scaling" if fit.horizon is not None else "scaling"
    if not fit.fitted:
        return f"{where}: {fit.reason}."
    alpha = f"alpha = {fit.alpha:.3f}"
    if fit.alpha_low is not None:
        alpha += f" (95% interval {fit.alpha_low:.3f} to {fit.alpha_high:.3f})"
    law = "L = a·N^-alpha + c" if fit.c is not None else "L = a·N^-alpha"
    text = f"{where}: {alpha}, {fit.form} {law} over {fit.n_points} budgets at the winners' parameter counts"
    single = sum(not p.confirmed for p in fit.points)
    if single:
        text += f" ({single} of {fit.n_points} points a single best trial, not confirmed)"
    if fit.c is not None:
        text += f" (c = {fit.c:.4f})"
    text += f"; predicted val loss at {format_budget(fit.next_budget)} parameters: {fit.predicted:.4f}"
    if fit.predicted_low is not None:
        text += f" ({fit.predicted_low:.4f} to {fit.predicted_high:.4f})"
    text += f". {fit.interval_note[:1].upper()}{fit.interval_note[1:]}."
    return text + (f" Note: {fit.note}." if fit.note else "")


def first_screen(data: ReportData) -> list[tuple[str, str]]:
    """Per budget and horizon the answer and its warnings, then each horizon's scaling law."""
    lines: list[tuple[str, str]] = []
    for budget in data.budgets:
        for cell in data.cells_of(budget):
            lines += cell_lines(cell)
    methods = {c.confirmation.method for c in data.cells if c.confirmation is not None}
    lines += [(NOTE, f"How separation is judged ({m}).") for m in sorted(methods)]
    lines += [(SCALING, scaling_line(f)) for f in data.scaling]
    return lines
