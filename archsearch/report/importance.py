"""Which parameters matter in a cell: Optuna's fANOVA over the storage's search trials, else (CSV
only) the rank correlation of each parameter with the validation loss; from
:data:`MIN_IMPORTANCE_TRIALS` complete search trials, with readable parameter names."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from archsearch.records import TRAINING_FIELDS
from archsearch.report.cells import CellReport, finite

#: Complete search trials a cell needs before parameter importance is computed: below it, a
#: random forest (fANOVA) or a rank correlation ranks noise (3 trials once ranked weight_decay first).
MIN_IMPORTANCE_TRIALS = 20


#: Numeric columns whose rank correlation with the val loss is the CSV-only importance.
RANK_FIELDS = ("d_model", "n_layers", "n_heads", "d_ff", "param_count", *TRAINING_FIELDS)


#: The readable name of each parameter an architecture encoding suggests
#: (``archsearch.space.encodings``: the structured encoding's positions among the cell's widths and
#: depths, its d_ff / d_model ratio and head count; the index encoding's one categorical). The
#: report names parameters through :func:`readable` only.
PARAM_LABELS = {
    "arch_width": "d_model",
    "arch_depth": "n_layers",
    "arch_ratio": "d_ff ratio",
    "arch_heads": "n_heads",
    "architecture": "architecture",
}


FANOVA = "fANOVA (optuna.importance.FanovaImportanceEvaluator)"


SPEARMAN = "Spearman rank correlation with val loss"


def readable(name: str) -> str:
    """A parameter's name as the report shows it (training parameters keep theirs)."""
    return PARAM_LABELS.get(name, name)


def storage_importance(cell: CellReport, study: Any, trials: Sequence[Any] | None = None) -> None:
    """Optuna's fANOVA importances over the parameters that vary among the complete ``trials``
    (the search's; default: the study's), else the rank correlation."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False) if trials is None else trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        cell.importance_note = too_few(len(complete))
        return
    names = set.intersection(*(set(t.params) for t in complete))
    varied = sorted(n for n in names if len({repr(t.params[n]) for t in complete}) > 1)
    if not varied:
        cell.importance_note = "no parameter took 2 or more distinct values among the complete trials"
        return
    verbosity = optuna.logging.get_verbosity()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
            only = optuna.create_study(direction=study.direction)  # the search's trials alone
            only.add_trials(complete)
            values = optuna.importance.get_param_importances(
                only, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=varied
            )
    except Exception as exc:  # noqa: BLE001 - fall back to the rank correlation
        rank_importance(cell)
        cell.importance_note = (
            f"Optuna's importance failed ({type(exc).__name__}: {exc}); {cell.importance_note}"
        )
        return
    finally:
        optuna.logging.set_verbosity(verbosity)
    cell.importance = {readable(k): float(v) for k, v in values.items()}
    cell.importance_method = FANOVA
    cell.importance_note = f"over {len(complete)} complete search trials"


def too_few(n: int) -> str:
    return f"too few trials ({n} complete; importance needs {MIN_IMPORTANCE_TRIALS})"


def rank_importance(cell: CellReport) -> None:
    """Spearman's rank correlation of each varying numeric column with the val loss."""
    import pandas as pd

    done = cell.complete()
    if len(done) < MIN_IMPORTANCE_TRIALS:
        cell.importance_note = too_few(len(done))
        return
    frame = pd.DataFrame([{k: t.get(k) for k in (*RANK_FIELDS, "val_loss")} for t in done], dtype=float)
    ranks = frame.rank()
    out = {}
    for key in RANK_FIELDS:
        column = frame[key].dropna()
        if column.nunique() < 2:
            continue
        rho = ranks[key].corr(ranks["val_loss"])
        if finite(rho):
            out[key] = float(rho)
    cell.importance = dict(sorted(out.items(), key=lambda kv: -abs(kv[1])))
    cell.importance_method = SPEARMAN
    if not out:
        cell.importance_note = "no parameter took 2 or more distinct values among the complete trials"
    else:
        cell.importance_note = f"over {len(done)} complete search trials (the results CSV holds no Optuna study to run fANOVA on)"
