"""The report's text: the best-per-cell table, the counts, the importances, the reading guide, and
``report.md`` made of them (for a terminal or a PR)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archsearch.budget import format_budget
from archsearch.report.cells import CellReport, ReportData
from archsearch.report.importance import SPEARMAN
from archsearch.report.plot import Figure

TABLE_COLUMNS = (
    ("cell", "cell"),
    ("best val loss", "val_loss"),
    ("baseline", "baseline_loss"),
    ("trial", "trial"),
    ("d_model", "d_model"),
    ("n_layers", "n_layers"),
    ("n_heads", "n_heads"),
    ("d_ff", "d_ff"),
    ("params", "param_count"),
    ("lr", "learning_rate"),
    ("epochs", "epochs"),
    ("batch", "batch_size"),
    ("wd", "weight_decay"),
    ("warmup", "warmup_steps"),
    ("dropout", "dropout"),
    ("complete", "n_complete"),
    ("pruned", "n_pruned"),
    ("failed", "n_failed"),
)
PROGRESS_COLUMNS = (("running", "n_running"), ("waiting", "n_waiting"))


def _fmt(key: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    if key in ("val_loss", "baseline_loss"):
        return f"{value:.5f}"
    if key == "param_count":
        return f"{value:,}"
    if key == "learning_rate":
        return f"{value:.2e}"
    if key == "weight_decay":
        return f"{value:.1e}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def table_columns(data: ReportData) -> tuple[tuple[str, str], ...]:
    busy = any(c.n_running or c.n_waiting for c in data.cells)
    return TABLE_COLUMNS + (PROGRESS_COLUMNS if busy else ())


def table_rows(data: ReportData) -> list[list[str]]:
    """The best-per-cell table as text cells (one row per cell)."""
    many = len({c.experiment for c in data.cells}) > 1
    rows = []
    for c in data.cells:
        counts = {
            "n_complete": c.n_complete,
            "n_pruned": c.n_pruned,
            "n_failed": c.n_failed,
            "n_running": c.n_running,
            "n_waiting": c.n_waiting,
        }
        label = f"{c.experiment} {c.label}" if many else c.label
        row = []
        for _, key in table_columns(data):
            if key == "cell":
                row.append(label)
            elif key in counts:
                row.append(str(counts[key]))
            elif c.best is None:
                row.append("no complete trial" if key == "val_loss" else "")
            else:
                row.append(_fmt(key, c.best.get(key)))
        rows.append(row)
    return rows


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _totals(data: ReportData) -> str:
    n = len(data.cells)
    complete = sum(c.n_complete for c in data.cells)
    pruned = sum(c.n_pruned for c in data.cells)
    failed = sum(c.n_failed for c in data.cells)
    text = (
        f"{n} cell{'s' if n != 1 else ''} ({_plural(len(data.budgets), 'budget')} x "
        f"{_plural(len(data.horizons), 'horizon')}): "
        f"{complete} complete, {pruned} pruned, {failed} failed trials"
    )
    if data.from_storage:
        running, waiting = data.in_progress
        text += f", {running} running, {waiting} waiting"
    empty = [c.label for c in data.cells if c.best is None]
    if empty:
        text += f"; no complete trial yet in {', '.join(empty)}"
    return text + "."


def _importance_text(cell: CellReport) -> str:
    if not cell.importance:
        return f"{cell.label}: none ({cell.importance_note or 'no complete trials'})"
    if cell.importance_method == SPEARMAN:
        top = ", ".join(f"{k} {v:+.2f}" for k, v in list(cell.importance.items())[:4])
        return f"{cell.label} (Spearman ρ): {top}"
    top = ", ".join(f"{k} {v:.2f}" for k, v in list(cell.importance.items())[:4])
    return f"{cell.label} (fANOVA): {top}"


READING = (
    "**Scaling.** Each line is one horizon's best validation loss at each budget. A line that keeps "
    "falling says more parameters still help at this data size; a flat or rising line says the data, "
    "not the model, is the limit (or that the larger budgets were searched less well). The dotted "
    "line is the loss of the best constant predictor: a best trial near it learned little.",
    "**Depth and width.** Each point is a trial, coloured by learning rate. Where the best points "
    "cluster along n_layers, d_model and n_layers/d_model shows which shapes work at the budget; a "
    "band of colours at one shape shows how much the learning rate, not the shape, decides the loss. "
    "Ringed points are the extremes tried (smallest/largest d_model, fewest/most layers).",
    "**Caveats.** Most architectures get only a few trials, each with different training "
    "parameters, and validation loss is noisy: a difference smaller than the spread of one "
    "architecture's points is not a finding. Coverage trials (squares in the history) run every "
    "architecture once before the sampler chooses, so early trials are not the sampler's picks. "
    "Pruned trials show the loss at the epoch they were stopped and are never the best.",
)


def markdown(data: ReportData, figures: Sequence[Figure], generated: str) -> str:
    lines = [f"# archsearch report: {data.title}", ""]
    lines.append(f"Source: {data.source}. Generated {generated}.")
    lines.append("")
    notice = data.partial_notice()
    if notice:
        lines += [f"> **{notice}**", ""]
    lines += [_totals(data), ""]
    for note in data.notes:
        lines += [f"_{note}_", ""]
    columns = table_columns(data)
    lines += ["## Best architecture per budget and horizon", ""]
    lines.append("| " + " | ".join(h for h, _ in columns) + " |")
    lines.append("| " + " | ".join("---" if k == "cell" else "---:" for _, k in columns) + " |")
    for row in table_rows(data):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    by_name = {f.name: f for f in figures}
    if "scaling.png" in by_name:
        lines += ["## Scaling", "", "![Best validation loss against budget](scaling.png)", ""]
    for budget in data.budgets:
        lines += [f"## {format_budget(budget)}", ""]
        for f in figures:
            if f.budget == budget:
                lines.append(f"- [{f.title}]({f.name})")
        lines.append("- Parameter importance:")
        for cell in data.cells_of(budget):
            lines.append(f"  - {_importance_text(cell)}")
        lines.append("")
    lines += ["## Reading the plots", ""]
    for paragraph in READING:
        lines += [paragraph, ""]
    return "\n".join(lines)
