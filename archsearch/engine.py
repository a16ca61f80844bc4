"""The search engine: one Optuna study per (budget, horizon) cell, run to ``n_trials`` each.

A cell's study lives in the configured storage (a SQLite file in the output directory by
default). Every finished trial is told to the sinks at once; re-running the same command resumes.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.architecture import Architecture
from archsearch.budget import format_budget
from archsearch.budget_grid import extremes, get_architectures_for_budget
from archsearch.config import SEARCHABLE, Config
from archsearch.coordination import (
    PID_NAMESPACE,
    WORKER,
    Coordinator,
    Heartbeat,
    count_finished,
    recover_orphans,
    requeue,
    retrying,
)
from archsearch.encodings import Encoding, make_encoding
from archsearch.errors import ArchsearchError, ConfigError, TrialFailed
from archsearch.plugin_manager import Plugins, get_plugin_manager
from archsearch.records import CellSummary, trial_record
from archsearch.registry import Sink

log = logging.getLogger("archsearch")
STUDY_ATTR = "archsearch"
CELL_ATTR = "archsearch_cell"
STOP_FILE = "STOP"


@attrs.frozen
class Cell:
    budget: int
    horizon: int
    study_name: str
    architectures: tuple[Architecture, ...]

    @property
    def label(self) -> str:
        return f"{format_budget(self.budget)} h{self.horizon}"


# -- the matrix ----------------------------------------------------------------------------------
def load_data(config: Config) -> Any:
    from archsearch.data import load_frame

    return load_frame(config.data)


def prepare_data(config: Config, frame: Any, horizon: int) -> Any:
    from archsearch.dataset import prepare

    try:
        return prepare(frame, config.task, config.split, horizon, config.model.context_length)
    except ArchsearchError as exc:
        raise type(exc)(f"horizons: horizon {horizon}: {exc}") from None


def model_spec(config: Config, data: Any, dropout: float | None = None) -> Any:
    spec = config.model_spec(
        data.num_features, data.head, data.n_outputs, data.n_targets, data.target_channels
    )
    return spec if dropout is None else attrs.evolve(spec, dropout=dropout)


def build_cells(config: Config, plugins: Plugins, datasets: dict[int, Any]) -> list[Cell]:
    """Every cell of the matrix with its architecture list (budgets outer, horizons inner)."""
    cells = []
    variant = plugins.variant(config.model.variant)
    fixed = config.fixed_architecture()
    for horizon in config.horizons:
        spec = model_spec(config, datasets[horizon])
        if fixed is not None:
            arch = attrs.evolve(fixed, param_count=variant.estimate(fixed, spec))
            budget_archs = [(arch.param_count, [arch])]
        else:
            budget_archs = [
                (
                    b,
                    get_architectures_for_budget(
                        b,
                        config.architecture.resolve(),
                        spec,
                        config.tolerance,
                        variant=config.model.variant,
                        generator=config.architecture.generator,
                        plugins=plugins,
                    ),
                )
                for b in config.budgets
            ]
        for budget, archs in budget_archs:
            cells.append(Cell(budget, horizon, config.study_name(budget, horizon), tuple(archs)))
    return sorted(cells, key=lambda c: (c.budget, c.horizon))


def coverage_order(archs: Sequence[Architecture], k: int) -> list[Architecture]:
    """The coverage allocation: the extremes first, then the rest by count; ``k`` rounds."""
    first = extremes(archs)
    order = first + [a for a in archs if a not in first]
    return order * k


# -- study set-up --------------------------------------------------------------------------------
def make_storage(config: Config) -> optuna.storages.BaseStorage:
    """The config's storage (``storage``, else SQLite in the output directory)."""
    return open_storage(config.storage_url)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: ``memory``, ``journal:PATH`` (or ``*.journal``), SQLite (the
    folder is created; 60 s lock timeout) or any SQLAlchemy URL; errors name the redacted URL."""
    if url == "memory":  # one process, nothing kept: for benchmarks and throwaway runs
        return optuna.storages.InMemoryStorage()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        if url.endswith(".journal") or url.startswith("journal:"):
            path = url.removeprefix("journal:")
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        # Heartbeats are archsearch's own (archsearch.coordination), the same on every storage.
        for attempt in range(6):
            try:
                storage = optuna.storages.RDBStorage(url, **kwargs)
                if url.startswith("sqlite"):
                    _write_lock_at_begin(storage.engine)
                return storage
            except Exception as exc:
                # Workers starting together race to create the schema; the losers try again.
                if attempt == 5 or not any(
                    m in str(exc) for m in ("already exists", "duplicate key", "UNIQUE constraint")
                ):
                    raise
                time.sleep(random.uniform(0.2, 1.0))
    except Exception as exc:  # noqa: BLE001 - storage errors are the user's to fix
        raise ArchsearchError(
            f"storage {redact(url)} cannot be opened: {type(exc).__name__}: {exc}"
        ) from None


def _write_lock_at_begin(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (``BEGIN IMMEDIATE``).

    Optuna claims a queued trial by reading that it is WAITING and then setting it RUNNING, in
    one transaction with ``SELECT ... FOR UPDATE``, which SQLite ignores; and Python's sqlite3
    starts the transaction only at the first write. Two processes could both read WAITING and
    both run the trial (a coverage trial twice, the second worker then crashing). Taking the lock
    at ``BEGIN`` makes the read and the write one step. The SQLAlchemy recipe for pysqlite:
    the driver's own transaction handling off, ``BEGIN IMMEDIATE`` emitted on begin."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners would not have them


def redact(url: str) -> str:
    """A storage URL with any password replaced by ``***``."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def make_pruner(config: Config) -> optuna.pruners.BasePruner:
    name, options = config.pruner.name, dict(config.pruner.options)
    classes = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    try:
        return classes[name](**options)
    except TypeError as exc:
        raise ArchsearchError(f"pruner.options: {name} does not accept these options: {exc}") from None


def search_space_fingerprint(config: Config, cell: Cell, encoding: Encoding) -> dict[str, Any]:
    return {
        "encoding": encoding.describe(),
        "training_search_space": {k: v.as_dict() for k, v in sorted(config.training_search_space.items())},
        "model": config.model.variant,
    }


def check_unchanged(study: optuna.Study, expected: dict[str, Any]) -> None:
    """A study keeps its architecture list and search space; a change is a clear error."""
    stored = study.user_attrs.get(STUDY_ATTR)
    if stored is None:
        if study.get_trials(deepcopy=False):
            return  # a study made by hand or by an older version: nothing to compare
        study.set_user_attr(STUDY_ATTR, expected)
        return
    if stored == expected:
        return
    changes = []
    old_arch = stored.get("encoding", {}).get("architectures", [])
    new_arch = expected["encoding"]["architectures"]
    if old_arch != new_arch:
        added = [a for a in new_arch if a not in old_arch]
        removed = [a for a in old_arch if a not in new_arch]
        changes.append(
            f"the architecture list changed ({len(old_arch)} -> {len(new_arch)}; "
            f"added {added[:5] or 'none'}{'...' if len(added) > 5 else ''}, "
            f"removed {removed[:5] or 'none'}{'...' if len(removed) > 5 else ''})"
        )
    old_ts, new_ts = stored.get("training_search_space", {}), expected["training_search_space"]
    for key in sorted(set(old_ts) | set(new_ts)):
        if old_ts.get(key) != new_ts.get(key):
            changes.append(f"training_search_space.{key}: {old_ts.get(key)} -> {new_ts.get(key)}")
    if stored.get("encoding", {}).get("name") != expected["encoding"]["name"]:
        changes.append(f"encoding: {stored['encoding'].get('name')} -> {expected['encoding']['name']}")
    if stored.get("model") != expected["model"]:
        changes.append(f"model.variant: {stored.get('model')} -> {expected['model']}")
    raise ArchsearchError(
        f"study {study.study_name!r} in the storage was created with another search: {'; '.join(changes)}. "
        "Resume it with the config it was started with, or give this search a new experiment name "
        "(or output_dir/storage)."
    )


#: Seconds without a new trial after which a process waiting for another to queue the coverage
#: trials takes it for dead and queues the missing ones itself.
COVERAGE_STALL_S = 10.0


def enqueue_coverage(study: optuna.Study, config: Config, cell: Cell, encoding: Encoding) -> int:
    """Queue the coverage trials once per study, even with several processes starting together.

    The first process to create the marker study ``{study}:coverage`` in the same storage (the
    storage's unique study names make that atomic) queues the trials and then records that it
    did; a process that finds the marker waits while trials keep appearing, and if the record
    does not come (its creator died) queues the missing ones, skipping parameters already queued
    or run.
    """
    if config.allocation.strategy != "coverage" or len(cell.architectures) < 2:
        return 0
    if study.user_attrs.get("coverage_enqueued"):
        return 0
    marker = f"{study.study_name}:coverage"
    try:
        optuna.create_study(study_name=marker, storage=study._storage)
        winner = True
    except optuna.exceptions.DuplicatedStudyError:
        winner = False
    if not winner:  # the winner is queueing: wait while it makes progress
        seen, progress = -1, time.monotonic()
        while time.monotonic() - progress < COVERAGE_STALL_S:
            if study.user_attrs.get("coverage_enqueued"):
                return 0
            n = study._storage.get_n_trials(study._study_id)
            if n != seen:
                seen, progress = n, time.monotonic()
            time.sleep(0.2)
        log.warning("%s: the coverage trials' queueing stalled; queueing the missing ones", study.study_name)
    order = coverage_order(cell.architectures, config.allocation.k)
    for arch in order:
        study.enqueue_trial(encoding.params(arch), user_attrs={"coverage": True}, skip_if_exists=not winner)
    study.set_user_attr("coverage_enqueued", len(order))
    return len(order)


# -- the objective -------------------------------------------------------------------------------
@attrs.define
class Objective:
    config: Config
    plugins: Plugins
    cell: Cell
    data: Any
    encoding: Encoding
    on_epoch: Callable[[int, int, float], None] | None = None
    #: The trainer (``archsearch.trainer.train``) and model builder (the variant's); the overhead
    #: benchmark passes null ones to time the engine around them.
    train_fn: Callable[..., Any] | None = None
    build_fn: Callable[..., Any] | None = None
    study: Any = None

    def __attrs_post_init__(self) -> None:
        if self.train_fn is None:
            from archsearch.trainer import train

            self.train_fn = train
        if self.build_fn is None:
            self.build_fn = self.plugins.variant(self.config.model.variant).build

    def __call__(self, trial: optuna.Trial) -> float:
        from archsearch.trainer import TrainConfig, seed_everything

        config, cell = self.config, self.cell
        arch = self.encoding.suggest(trial)
        arch = next(a for a in cell.architectures if a == arch)
        values = attrs.asdict(config.training)
        for name in SEARCHABLE:
            if name in config.training_search_space:
                values[name] = config.training_search_space[name].suggest(trial, name)
        # Two writes per trial (what it is, then what it gave): each is a transaction on an RDB.
        trial.set_user_attr(
            "setup",
            {
                "experiment": config.experiment,
                "budget": cell.budget,
                "horizon": cell.horizon,
                **arch.as_dict(),
                "training": {k: values[k] for k in SEARCHABLE},
                "baseline_loss": self.data.baseline_loss,
                "split": self.data.split_info,
                "worker": WORKER,
                "pid_namespace": PID_NAMESPACE,
            },
        )
        seed = config.training.seed + trial.number
        set_cpu_threads(config.training.cpu_threads, arch.param_count)
        seed_everything(seed)
        model = self.build_fn(arch, model_spec(config, self.data, values["dropout"]))
        train_config = TrainConfig(
            learning_rate=values["learning_rate"],
            epochs=int(values["epochs"]),
            batch_size=int(values["batch_size"]),
            weight_decay=values["weight_decay"],
            warmup_steps=int(values["warmup_steps"]),
            dropout=values["dropout"],
            grad_clip=values["grad_clip"],
            patience=config.training.patience,
            seed=seed,
            device=config.training.device,
            micro_batch_size=config.training.micro_batch_size,
            cuda_graphs=config.training.cuda_graphs,
            compile=config.training.compile,
        )

        def epoch_done(e: Any) -> None:
            trial.report(e.val_loss, e.epoch)
            if self.on_epoch is not None:
                self.on_epoch(e.epoch, train_config.epochs, e.val_loss)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {e.epoch} (val loss {e.val_loss:.5g})")

        try:
            result = self.train_fn(model, self.data, train_config, on_epoch=epoch_done)
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        trial.set_user_attr(
            "result",
            {
                "train_loss": result.train_loss,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "val_metrics": _finite(result.val_metrics),
                "test_loss": result.test_loss,
                "device": str(result.device),
                "samples_per_s": round(result.samples_per_s, 1),
                "compile_s": round(getattr(result, "compile_s", 0.0), 2),
                "step_kind": getattr(result, "step_kind", ""),
            },
        )
        return result.best_val_loss


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


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}


# -- running -------------------------------------------------------------------------------------
class StopRequest:
    """SIGINT/SIGTERM or a ``STOP`` file: finish the current trial, write outputs, exit 0.

    A second SIGINT interrupts at once (the running trial is then failed and retried on resume).
    """

    def __init__(self, output_dir: Path) -> None:
        self.stop_file = output_dir / STOP_FILE
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        log.warning("%s received: finishing the current trial, then stopping (again to abort)", self.reason)

    @property
    def requested(self) -> bool:
        if self.reason is None and self.stop_file.exists():
            self.reason = f"{self.stop_file} exists"
        return self.reason is not None


@attrs.define
class RunResult:
    cells: list[CellSummary]
    stopped: str | None
    output_dir: Path


def sampler_seed(seed: int | None, worker: int = 0, trials_before: int = 0) -> int | None:
    """The sampler seed of one process's session on a study.

    Processes that share a study must not share a sampler seed, nor may a resumed run reuse the
    seed of the session before it: each sampler would draw the same random numbers again, and
    propose the parameters already tried (in its random start-up trials, and in the TPE draws that
    follow). Worker 0 opening an empty study keeps ``seed``, so a run in one process repeats a
    seeded run exactly; any other (``worker``, ``trials_before``) gets a seed derived from all three
    (NumPy's ``SeedSequence``), the same every time for the same triple. ``None`` stays ``None``.
    """
    if seed is None or (worker == 0 and trials_before == 0):
        return seed
    return int(np.random.SeedSequence([seed % (1 << 64), worker, trials_before]).generate_state(1)[0])


def check_plugin_names(config: Config, plugins: Plugins) -> None:
    """The config's plugin names against what is registered, before anything runs: one
    :class:`ConfigError` naming the file and every key with an unknown name."""
    wanted = [
        ("model.variant", "estimator", "variant", config.model.variant),
        ("sampler.name", "sampler", "sampler", config.sampler.name),
        ("architecture.generator", "generator", "generator", config.architecture.generator),
    ] + [(f"sinks[{i}]", "sink", "sink", name) for i, name in enumerate(config.sinks)]
    found = []
    for key, kind, label, name in wanted:
        names = plugins.names(kind)
        if name not in names:
            found.append(f"{key}: unknown {label} {name!r}; available: {', '.join(names) or 'none'}")
    if found:
        raise ConfigError(config.source, found)


class Engine:
    """Runs a config's matrix of cells; the CLI's ``run`` and ``worker`` commands use it."""

    def __init__(
        self,
        config: Config,
        plugins: Plugins | None = None,
        progress: Any = None,
        train_fn: Callable[..., Any] | None = None,
        build_fn: Callable[..., Any] | None = None,
        worker: int = 0,
    ) -> None:
        self.config = config
        self.worker = worker
        self.train_fn = train_fn
        self.build_fn = build_fn
        self.plugins = plugins or get_plugin_manager(config.plugins)
        check_plugin_names(config, self.plugins)
        self.progress = progress
        self.output_dir = config.output_path
        self._frame: Any = None
        self._datasets: dict[int, Any] = {}

    def datasets(self) -> dict[int, Any]:
        if not self._datasets:
            self._frame = load_data(self.config)
            self._datasets = {h: prepare_data(self.config, self._frame, h) for h in self.config.horizons}
        return self._datasets

    def cells(self) -> list[Cell]:
        return build_cells(self.config, self.plugins, self.datasets())

    def open_sinks(self) -> dict[str, Sink]:
        return {
            name: self.plugins.sink(name).factory(self.output_dir, self.config) for name in self.config.sinks
        }

    def sampler(self, trials_before: int = 0) -> optuna.samplers.BaseSampler:
        """The configured sampler, seeded with :func:`sampler_seed` for this process (``worker``)
        joining a study that already holds ``trials_before`` trials."""
        s = self.config.sampler
        return self.plugins.sampler(s.name).factory(
            s.options, sampler_seed(s.seed, self.worker, trials_before)
        )

    def open_study(self, cell: Cell, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, Encoding]:
        encoding = make_encoding(self.config.architecture.encoding, cell.architectures)
        study = optuna.create_study(
            study_name=cell.study_name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(),  # a stand-in: the real one needs the trial count
            pruner=make_pruner(self.config),
            direction=self.config.direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != self.config.direction:
            raise ArchsearchError(
                f"study {cell.study_name!r} was created to {study.direction.name.lower()}; the config says "
                f"direction: {self.config.direction}"
            )
        check_unchanged(study, search_space_fingerprint(self.config, cell, encoding))
        study.sampler = self.sampler(trials_before=storage.get_n_trials(study._study_id))
        if CELL_ATTR not in study.user_attrs:
            study.set_user_attr(
                CELL_ATTR,
                {"experiment": self.config.experiment, "budget": cell.budget, "horizon": cell.horizon},
            )
        return study, encoding

    def run(self) -> RunResult:
        """Run every cell; with several local workers planned (GPU or ``workers.processes``),
        each budget's cells run in that many processes, then the results are read back."""
        from archsearch import local_workers

        config = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        cells = self.cells()
        if self.train_fn is None and self.build_fn is None:  # not a benchmark's null objective
            budgets = sorted({c.budget for c in cells})
            plans = [
                (b, local_workers.plan(config, [c for c in cells if c.budget == b], self.datasets()))
                for b in budgets
            ]
            if any(slots for _, slots in plans):
                return self._run_with_workers(cells, plans)
        return self._run_here(cells)

    def _run_with_workers(self, cells: list[Cell], plans: list[tuple[int, Any]]) -> RunResult:
        from archsearch import local_workers

        make_storage(self.config)  # the schema, before the workers race to create it
        stop = StopRequest(self.output_dir)
        with stop:
            for budget, slots in plans:
                if stop.requested:
                    break
                if slots:
                    fixed = self.config.fixed_architecture() is not None
                    local_workers.run_budget(self.config, None if fixed else budget, slots)
                else:
                    self._run_here([c for c in cells if c.budget == budget])
        storage = make_storage(self.config)
        summaries = []
        for cell in cells:
            try:
                study = optuna.load_study(study_name=cell.study_name, storage=storage)
            except KeyError:
                continue
            summaries.append(
                CellSummary.from_trials(self.config.experiment, cell.budget, cell.horizon, study)
            )
        return RunResult(summaries, stop.reason, self.output_dir)

    def _run_here(self, cells: list[Cell]) -> RunResult:
        config = self.config
        storage = make_storage(config)
        sinks = self.open_sinks()
        summaries: list[CellSummary] = []
        stop = StopRequest(self.output_dir)
        try:
            with stop:
                for cell in cells:
                    summaries.append(self.run_cell(cell, storage, sinks, stop))
                    if stop.requested:
                        break
        finally:
            for name, sink in sinks.items():
                _safely(name, sink.close, sinks)
        return RunResult(summaries, stop.reason, self.output_dir)

    def run_trial(self, study: optuna.Study, trial: optuna.Trial, objective: Objective) -> FrozenTrial:
        """Run one claimed trial and tell the storage how it ended; a trial that raises anything
        but a pruning or a :class:`TrialFailed` is failed too, its parameters queued again, and
        the error re-raised. A trial that another worker failed meanwhile (it saw no heartbeat
        for ``workers.grace_period``: a stalled process or a lost connection) is left as that
        worker recorded it; its retry runs elsewhere."""
        state, value, error = TrialState.FAIL, None, None
        storage = study._storage
        try:
            value = objective(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrialFailed as exc:
            log.warning("trial %d failed: %s", trial.number, exc)
        except optuna.exceptions.UpdateFinishedTrialError:
            return self._taken_away(study, trial)
        except BaseException as exc:  # noqa: BLE001 - recorded on the trial, then re-raised
            error = exc
        values = value if state == TrialState.COMPLETE else None
        try:
            if state == TrialState.COMPLETE and not math.isfinite(value):
                state, values = TrialState.FAIL, None
                trial.set_user_attr("fail_reason", f"objective returned {value}")
            if error is not None:
                # Interrupted (a second Ctrl-C) or broken: the same parameters run again, queued
                # before this trial is failed (see coordination.requeue).
                trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
                retrying(lambda: requeue(study, storage.get_trial(trial._trial_id)), "queueing a retry")
        except optuna.exceptions.UpdateFinishedTrialError:
            return self._taken_away(study, trial)
        retrying(lambda: study.tell(trial, values, state=state, skip_if_finished=True), "reporting a trial")
        if error is not None:
            raise error
        return storage.get_trial(trial._trial_id)

    @staticmethod
    def _taken_away(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
        frozen = study._storage.get_trial(trial._trial_id)
        log.warning(
            "trial %d was failed by another worker while this one ran it (%s); its parameters run again "
            "in a retry, and this run's result is dropped",
            trial.number,
            frozen.user_attrs.get("fail_reason", "no reason recorded"),
        )
        return frozen

    def run_cell(
        self, cell: Cell, storage: optuna.storages.BaseStorage, sinks: dict[str, Sink], stop: StopRequest
    ) -> CellSummary:
        config = self.config
        study, encoding = self.open_study(cell, storage)
        recovered = recover_orphans(study)
        if recovered:
            log.warning(
                "%s: %d trial(s) of a process that died were failed and queued again", cell.label, recovered
            )
        queued = enqueue_coverage(study, config, cell, encoding)
        if queued:
            log.info("%s: queued %d coverage trials (every architecture, extremes first)", cell.label, queued)
        summary = CellSummary(config.experiment, cell.budget, cell.horizon, cell.study_name, config.direction)
        for t in study.get_trials(deepcopy=False):
            summary.add(t)
            if t.state.is_finished() and not t.user_attrs.get("surplus"):
                record = {**trial_record(t, cell.study_name), "replayed": True}
                for name, sink in list(sinks.items()):
                    _safely(name, lambda s=sink, r=record: s.trial_finished(r, summary), sinks)
        summary.n_running = 0
        objective = Objective(
            config,
            self.plugins,
            cell,
            self.datasets()[cell.horizon],
            encoding,
            train_fn=self.train_fn,
            build_fn=self.build_fn,
        )
        objective.study = study
        bar = self.progress.cell(cell, summary, config.n_trials) if self.progress else None
        if bar is not None:
            objective.on_epoch = bar.epoch
        last_refresh = [time.monotonic()]

        def finished(trial: FrozenTrial) -> None:
            summary.add(trial)
            if time.monotonic() - last_refresh[0] > 5.0:  # other workers' trials count too
                summary.refresh(study)
                last_refresh[0] = time.monotonic()
            record = trial_record(trial, cell.study_name)
            for name, sink in list(sinks.items()):
                _safely(name, lambda s=sink: s.trial_finished(record, summary), sinks)
            log_trial(record, summary, cell, config)
            if bar is not None:
                bar.trial(record, summary)

        deadline = time.monotonic() + config.timeout_hours * 3600 if config.timeout_hours else math.inf
        w = config.workers
        coordinator = Coordinator(study, config.n_trials, w.heartbeat_interval, w.grace_period)
        heartbeat = Heartbeat(study, w.heartbeat_interval)
        try:
            heartbeat.__enter__()
            while not stop.requested:
                if time.monotonic() > deadline:
                    log.warning("%s: timeout_hours (%s) reached", cell.label, config.timeout_hours)
                    break
                recovered = coordinator.watch()
                if recovered:
                    summary.n_failed += recovered
                claim = coordinator.may_claim()
                if claim is False:
                    break
                if claim is None:  # the other workers' running trials may finish the cell
                    time.sleep(min(1.0, w.heartbeat_interval))
                    continue
                trial = retrying(study.ask, "claiming a trial")
                with heartbeat.beating(trial):  # from the claim on: sampling and building take time too
                    if coordinator.surplus(trial):
                        coordinator.release(trial)
                        continue
                    coordinator.own.add(trial._trial_id)
                    frozen = self.run_trial(study, trial, objective)
                finished(frozen)
        finally:
            heartbeat.__exit__()
            if bar is not None:
                bar.close()
        summary.refresh(study)
        summary.n_running = 0
        summary.finished = count_finished(study) >= config.n_trials
        for name, sink in list(sinks.items()):
            _safely(name, lambda s=sink: s.cell_finished(summary), sinks)
        return summary


def _safely(name: str, call: Callable[[], Any], sinks: dict[str, Sink]) -> None:
    """Run a sink call; a sink that raises is reported and disabled, the study goes on."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - a broken sink must not stop the study
        log.error(
            "sink %r failed (%s: %s); it is disabled for the rest of this run", name, type(exc).__name__, exc
        )
        sinks.pop(name, None)


def log_trial(record: dict[str, Any], summary: CellSummary, cell: Cell, config: Config) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    best = summary.best["val_loss"] if summary.best else float("nan")
    value = record["val_loss"]
    shown = f"{value:.5f}" if isinstance(value, float) else "-"
    log.info(
        "%s trial %d %s: d_model=%s n_layers=%s n_heads=%s d_ff=%s params=%s lr=%.2e epochs=%s batch=%s "
        "wd=%.1e warmup=%s val_loss=%s train_loss=%s %.1fs | best %.5f (%d done, %d pruned, %d failed)%s",
        cell.label,
        record["trial"],
        record["state"],
        record["d_model"],
        record["n_layers"],
        record["n_heads"],
        record["d_ff"],
        f"{record['param_count']:,}" if record["param_count"] != "" else "?",
        record["learning_rate"] or float("nan"),
        record["epochs"],
        record["batch_size"],
        record["weight_decay"] or float("nan"),
        record["warmup_steps"],
        shown,
        f"{record['train_loss']:.5f}" if isinstance(record["train_loss"], float) else "-",
        record["duration_s"] or 0.0,
        best,
        summary.n_complete,
        summary.n_pruned,
        summary.n_failed,
        f" [{record['fail_reason']}]" if record["fail_reason"] else "",
    )
