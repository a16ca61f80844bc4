"""The search: the matrix of cells, one Optuna study per cell, the objective, the trial loop,
several workers on one study, listeners, and the read-only views (plan, status, export)."""

from archsearch._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Engine", "RunResult"], "archsearch.search.engine"),
    **dict.fromkeys(["Cell", "build_cells"], "archsearch.search.matrix"),
    **dict.fromkeys(["export", "plan_rows", "status_rows"], "archsearch.search.overview"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
