"""The objective: one claimed trial's architecture and training values, trained and recorded."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs
import optuna

from archsearch.config import SEARCHABLE, Config
from archsearch.errors import TrialFailed
from archsearch.plugin.contracts import calling, check_model
from archsearch.plugin.registry import EpochEvent
from archsearch.records import (
    CONFIRM,
    CONFIRM_SEED,
    STAGE,
    cell_label,
    write_fail_reason,
    write_result,
    write_setup,
)
from archsearch.search.coordination import PID_NAMESPACE, WORKER
from archsearch.search.matrix import Cell, model_spec
from archsearch.space.encodings import Encoding
from archsearch.training.settings import TrainConfig


@attrs.define
class Objective:
    """Called by the trial loop with a claimed trial: samples its architecture and training
    values, records what the trial is, trains it and records what it gave; returns the best
    validation loss. ``train_fn`` is :func:`archsearch.training.trainer.train` and ``build_fn``
    the variant's builder (the overhead benchmark passes null ones to time the engine alone)."""

    config: Config
    cell: Cell
    data: Any
    encoding: Encoding
    train_fn: Callable[..., Any]
    build_fn: Callable[..., Any]
    #: How errors name the variant's plugin (``plugin 'P' (distribution D V)``).
    variant_label: str = "the model variant"
    on_epoch: Callable[[EpochEvent], None] | None = None
    #: Architectures whose first build was checked in this process (plugin.contracts.check_model).
    checked: set[str] = attrs.Factory(set)

    def __call__(self, trial: optuna.Trial) -> float:
        from archsearch.training.trainer import seed_everything

        config, cell = self.config, self.cell
        arch = self.encoding.suggest(trial)
        arch = next(a for a in cell.architectures if a == arch)
        values = sampled_training(config, trial)
        write_setup(
            trial,
            {"experiment": config.experiment, "budget": cell.budget, "horizon": cell.horizon},
            arch.as_dict(),
            {k: values[k] for k in SEARCHABLE},
            self.data,
            WORKER,
            PID_NAMESPACE,
        )
        confirming = trial.user_attrs.get(STAGE) == CONFIRM
        seed = trial.user_attrs[CONFIRM_SEED] if confirming else config.training.seed + trial.number
        set_cpu_threads(config.training.cpu_threads, arch.param_count)
        seed_everything(seed)
        with calling(self.variant_label, f"building {arch.key}"):
            model = self.build_fn(arch, model_spec(config, self.data, values["dropout"]))
        if arch.key not in self.checked:
            check_model(model, arch, self.data, self.variant_label)
            self.checked.add(arch.key)
        settings = train_settings(values, seed, seeded=True)  # seeded above: once per trial
        try:
            result = self.train_fn(
                model, self.data, settings, on_epoch=self._epoch_done(trial, settings.epochs, not confirming)
            )
        except TrialFailed as exc:
            write_fail_reason(trial, str(exc))
            raise
        write_result(trial, result)
        return result.best_val_loss

    def _epoch_done(self, trial: optuna.Trial, epochs: int, prunable: bool = True) -> Callable[[Any], None]:
        """Each epoch: reported to the pruner (which may stop a ``prunable`` trial: confirmation
        trials run every epoch) and to ``on_epoch`` (an :class:`EpochEvent`: the study, the
        trial's number, the epoch and its losses)."""
        cell = self.cell

        def epoch_done(e: Any) -> None:
            trial.report(e.val_loss, e.epoch)
            if self.on_epoch is not None:
                self.on_epoch(
                    EpochEvent(
                        cell.study_name,
                        trial.number,
                        e.epoch,
                        epochs,
                        e.val_loss,
                        getattr(e, "train_loss", None),
                        dict(getattr(e, "metrics", None) or {}),
                        cell_label(cell.budget, cell.horizon),
                    )
                )
            if prunable and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {e.epoch} (val loss {e.val_loss:.5g})")

        return epoch_done


def sampled_training(config: Config, trial: optuna.Trial) -> dict[str, Any]:
    """The config's training values with the searched ones sampled for ``trial``."""
    values = attrs.asdict(config.training)
    for name in SEARCHABLE:
        if name in config.training_search_space:
            values[name] = config.training_search_space[name].suggest(trial, name)
    return values


def train_settings(values: dict[str, Any], seed: int, seeded: bool = False) -> TrainConfig:
    """The trainer's settings from a trial's training values (the config's, with the sampled
    ones in): every :class:`TrainConfig` field the config's ``training`` section also has.
    ``seeded``: the caller seeded the RNGs with ``seed`` already, so the trainer does not again."""
    fields = attrs.fields_dict(TrainConfig)
    shared = {k: v for k, v in values.items() if k in fields and k not in ("seed", "seed_rngs")}
    for k in ("epochs", "batch_size", "warmup_steps"):  # a sampled categorical may be a float
        shared[k] = int(shared[k])
    return TrainConfig(**shared, seed=seed, seed_rngs=not seeded)


SMALL_MODEL = 2_000_000


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and Slurm set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_cpu_threads(threads: int | None, param_count: int) -> None:
    """torch's CPU threads for a trial: as configured, else 1 for small models, else every core
    (local worker processes are configured with their share of the cores)."""
    import torch

    if threads is None:
        threads = 1 if param_count < SMALL_MODEL else available_cores()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
