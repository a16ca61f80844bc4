"""The report's text: the best-per-cell table, the counts, the importances, the reading guide, and
``report.md`` made of them (for a terminal or a PR)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archsearch.budget import format_budget
from archsearch.report.cells import CellReport, ReportData
from archsearch.report.importance import SPEARMAN
from archsearch.report.plot import Figure
from archsearch.report.trust import ANSWER, NOTE, SCALING, WARNING, first_screen

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
TABLE_HEADING = "The search's best single trial per budget and horizon (before confirmation)"


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
        f"{complete} complete, {pruned} pruned, {failed} failed search trials"
    )
    if data.from_storage:
        running, waiting = data.in_progress
        text += f", {running} running, {waiting} waiting"
    confirm, done = sum(c.n_confirm for c in data.cells), sum(c.n_confirm_done for c in data.cells)
    if confirm:
        text += f"; and {_plural(confirm, 'confirmation trial')} ({done} finished)"
    empty = [c.label for c in data.cells if c.best is None]
    if empty:
        text += f"; no complete trial yet in {', '.join(empty)}"
    return text + "."


def _importance_text(cell: CellReport) -> str:
    if not cell.importance:
        return f"{cell.label}: none ({cell.importance_note or 'no complete trials'})"
    signed = cell.importance_method == SPEARMAN
    top = ", ".join(
        f"{k} {v:+.2f}" if signed else f"{k} {v:.2f}" for k, v in list(cell.importance.items())[:4]
    )
    return f"{cell.label}, {cell.importance_method} {cell.importance_note}: {top}"


ANSWER_HEADING = "The answer per budget and horizon"
#: How each kind of first-screen line starts in report.md.
MD_MARKS = {WARNING: "⚠ **Edge of the space.** ", SCALING: "", NOTE: "_", ANSWER: ""}


def _md_line(kind: str, text: str) -> str:
    return f"- {MD_MARKS[kind]}{text}{'_' if kind == NOTE else ''}"


READING = (
    "**The answer.** A confirmed architecture is the search's best few configurations trained again "
    "over fresh seeds; its loss is the mean over those seeds with the 95% t-interval of that mean. "
    "When the runner-up is not separated from it, the two are equally good on this data: pick either. "
    '"Not confirmed (single best trial)" is one noisy draw, the best of many, so it flatters itself. '
    "Test loss is shown for the confirmed winner only, against the constant predictor, and was never "
    "used to choose: a winner whose test loss is worse than the constant predictor's learned nothing "
    "that carries to new data.",
    "**Edges of the space.** A winner with the smallest or largest d_model, or the fewest or most "
    "layers, of its cell's architectures may be cut off by the space: the warning names the config key "
    "to widen (`architecture.d_model`, `architecture.n_layers`). A value outside the budget's band "
    "(`tolerance`) cannot be added by widening the list alone.",
    "**Scaling.** Each point is one budget's answer at its winner's actual parameter count, with its "
    "95% interval; the dashed line is the fitted law L(N) = a·N^-alpha (+ c with 4 or more budgets), "
    "its exponent's interval bootstrapped from the confirmation seeds, and the diamond its prediction "
    "at ten times the largest budget. A larger alpha means more parameters help more; an interval "
    "that reaches 0 says the data cannot tell. The dotted line is the constant predictor's loss.",
    "**Depth and width.** Each point is a search trial, coloured by learning rate. Where the best points "
    "cluster along n_layers, d_model and n_layers/d_model shows which shapes work at the budget; a "
    "band of colours at one shape shows how much the learning rate, not the shape, decides the loss. "
    "Ringed points are the extremes tried (each kind named once, at its best point); the black "
    "diamond is the confirmed winner's mean over seeds.",
    "**Caveats.** Most architectures get only a few trials, each with different training "
    "parameters, and validation loss is noisy: a difference smaller than the spread of one "
    "architecture's points is not a finding. Coverage trials (squares in the history) run every "
    "architecture once before the sampler chooses, so early trials are not the sampler's picks. "
    "Pruned trials show the loss at the epoch they were stopped and are never the best. Parameter "
    "importance is shown from 20 complete search trials on; fewer rank noise.",
)


def markdown(data: ReportData, figures: Sequence[Figure], generated: str) -> str:
    lines = [f"# archsearch report: {data.title}", ""]
    lines.append(f"Source: {data.source}. Generated {generated}.")
    lines.append("")
    notice = data.partial_notice()
    if notice:
        lines += [f"> **{notice}**", ""]
    lines += [f"## {ANSWER_HEADING}", ""]
    lines += [_md_line(kind, text) for kind, text in first_screen(data)]
    lines.append("")
    lines += [_totals(data), ""]
    for note in data.notes:
        lines += [f"_{note}_", ""]
    columns = table_columns(data)
    lines += [f"## {TABLE_HEADING}", ""]
    lines.append("| " + " | ".join(h for h, _ in columns) + " |")
    lines.append("| " + " | ".join("---" if k == "cell" else "---:" for _, k in columns) + " |")
    for row in table_rows(data):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    by_name = {f.name: f for f in figures}
    if "scaling.png" in by_name:
        lines += ["## Scaling", "", f"![{by_name['scaling.png'].title}](scaling.png)", ""]
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
