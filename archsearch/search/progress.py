"""Progress display: a bar per cell on a terminal, else nothing beyond the per-trial log lines."""

from __future__ import annotations

import sys
from typing import Any

from archsearch.records import CellSummary


class CellBar:
    def __init__(self, cell: Any, summary: CellSummary, total: int) -> None:
        from tqdm import tqdm

        done = summary.n_complete + summary.n_pruned + summary.confirm_done
        self.bar = tqdm(
            total=total, initial=min(done, total), desc=cell.label, unit="trial", dynamic_ncols=True
        )
        self.arch = ""
        self.best = summary.best["val_loss"] if summary.best else None
        self._refresh(epoch="")

    def _refresh(self, epoch: str) -> None:
        best = f"{self.best:.4f}" if isinstance(self.best, float) else "-"
        self.bar.set_postfix_str(f"best {best} | {self.arch} {epoch}".rstrip(), refresh=True)

    def epoch(self, epoch: int, epochs: int, val_loss: float) -> None:
        """``epoch`` counts from 1, as the trainer's ``EpochResult.epoch`` does."""
        self._refresh(epoch=f"epoch {epoch}/{epochs} val {val_loss:.4f}")

    def trial(self, record: dict[str, Any], summary: CellSummary) -> None:
        self.arch = f"d{record['d_model']} L{record['n_layers']}"
        self.best = summary.best["val_loss"] if summary.best else None
        if record["state"] in ("COMPLETE", "PRUNED"):
            self.bar.update(1)
        self._refresh(epoch="")

    def close(self) -> None:
        self.bar.close()


class Progress:
    """Makes a :class:`CellBar` per cell; log lines go through ``tqdm.write`` meanwhile."""

    def cell(self, cell: Any, summary: CellSummary, total: int) -> CellBar:
        return CellBar(cell, summary, total)


def wants_bars(no_progress: bool) -> bool:
    return not no_progress and sys.stderr.isatty()
