"""Which parameters matter in a cell: Optuna's fANOVA over the storage, else (CSV only) the rank
correlation of each parameter with the validation loss."""

from __future__ import annotations

import warnings
from typing import Any

from archsearch.records import TRAINING_FIELDS
from archsearch.report.cells import CellReport, finite

#: Complete trials a cell needs before parameter importance is computed.
MIN_IMPORTANCE_TRIALS = 3


#: Numeric columns whose rank correlation with the val loss is the CSV-only importance.
RANK_FIELDS = ("d_model", "n_layers", "n_heads", "d_ff", "param_count", *TRAINING_FIELDS)


FANOVA = "fANOVA (Optuna), over complete trials"


SPEARMAN = "Spearman rank correlation with val loss, over complete trials"


def storage_importance(cell: CellReport, study: Any) -> None:
    """Optuna's fANOVA importances over the parameters that vary; else the rank correlation."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        cell.importance_note = _too_few(len(complete))
        return
    names = set.intersection(*(set(t.params) for t in complete))
    varied = sorted(n for n in names if len({repr(t.params[n]) for t in complete}) > 1)
    if not varied:
        cell.importance_note = "no parameter took 2 or more distinct values among the complete trials"
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=varied
            )
    except Exception as exc:  # noqa: BLE001 - fall back to the rank correlation
        rank_importance(cell)
        cell.importance_note = (
            f"Optuna's importance failed ({type(exc).__name__}: {exc}); {cell.importance_note}"
        )
        return
    cell.importance = dict(values)
    cell.importance_method = FANOVA


def _too_few(n: int) -> str:
    return f"{n} complete trial{'s' if n != 1 else ''}; importance needs at least {MIN_IMPORTANCE_TRIALS}"


def rank_importance(cell: CellReport) -> None:
    """Spearman's rank correlation of each varying numeric column with the val loss."""
    import pandas as pd

    done = cell.complete()
    if len(done) < MIN_IMPORTANCE_TRIALS:
        cell.importance_note = _too_few(len(done))
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
        cell.importance_note = "rank correlation (the results CSV holds no Optuna study to run fANOVA on)"
