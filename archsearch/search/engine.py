"""The search engine: one Optuna study per (budget, horizon) cell, run to ``n_trials`` each.

A short orchestrator over the search's parts: the matrix (:mod:`~archsearch.search.matrix`),
each cell's study (:mod:`~archsearch.search.study`), the objective, the trial loop
(:mod:`~archsearch.search.loop`), the listeners, and local worker processes
(:mod:`~archsearch.search.workers`). A cell's study lives in the configured storage (a SQLite
file in the output directory by default); re-running the same command resumes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import optuna

from archsearch.config import Config, structure
from archsearch.errors import ConfigError
from archsearch.outputs import check_output_dir
from archsearch.plugin.contracts import CheckedSampler, calling
from archsearch.plugin.manager import Plugins, get_plugin_manager
from archsearch.records import CellSummary, study_uid
from archsearch.search import loop, workers
from archsearch.search.confirm import confirmed_block
from archsearch.search.coordination import recover_orphans
from archsearch.search.identity import check_stored
from archsearch.search.listeners import Listener, Listeners, LogLine, ProgressBars, SinkListener
from archsearch.search.matrix import Cell, build_cells, load_data, prepare_data
from archsearch.search.objective import Objective
from archsearch.search.stop import StopRequest
from archsearch.search.study import enqueue_coverage, open_study, sampler_seed
from archsearch.space.encodings import Encoding
from archsearch.storage import make_storage

log = logging.getLogger("archsearch")


@attrs.define
class RunResult:
    cells: list[CellSummary]
    stopped: str | None
    output_dir: Path


def check_plugin_names(config: Config, plugins: Plugins) -> None:
    """The config's plugin names against what is registered, before anything runs: one
    :class:`ConfigError` naming the file and every key with an unknown name, or a sink whose
    optional packages are not installed (:meth:`SinkPlugin.missing`)."""
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
        elif kind == "sink" and (missing := plugins.sink(name).missing()):
            found.append(f"{key}: {missing}")
    if found:
        raise ConfigError(config.source, found)


def _train(*args: Any, **kwargs: Any) -> Any:
    """:func:`archsearch.training.trainer.train`, imported when a trial first trains (torch)."""
    from archsearch.training.trainer import train

    return train(*args, **kwargs)


class Engine:
    """Runs a config's matrix of cells; the CLI's ``run`` and ``worker`` commands use it.

    ``train_fn`` and ``build_fn`` replace the trainer and the variant's model builder (the
    benchmarks time the engine around null ones); ``worker`` is this process's index among the
    processes sharing the studies (it seeds the sampler); ``shared``: other processes share them
    (a ``worker`` command, a local worker), which turns TPE's constant liar on (``auto``)."""

    def __init__(
        self,
        config: Config,
        plugins: Plugins | None = None,
        progress: Any = None,
        train_fn: Callable[..., Any] | None = None,
        build_fn: Callable[..., Any] | None = None,
        worker: int = 0,
        shared: bool = False,
    ) -> None:
        self.config = config
        self.worker, self.shared = worker, shared
        self.plugins = plugins or get_plugin_manager(config.plugins)
        check_plugin_names(config, self.plugins)
        self.train_fn = train_fn or _train
        self.build_fn = build_fn or self.plugins.variant(config.model.variant).build
        self.progress = progress
        self.output_dir = config.output_path
        self._datasets: dict[int, Any] = {}

    def datasets(self) -> dict[int, Any]:
        """The data prepared for each horizon (loaded once)."""
        if not self._datasets:
            frame = load_data(self.config)
            self._datasets = {h: prepare_data(self.config, frame, h) for h in self.config.horizons}
        return self._datasets

    def cells(self) -> list[Cell]:
        return build_cells(self.config, self.plugins, self.datasets())

    def listeners(self) -> Listeners:
        """The configured sinks, then the per-trial log line, then (on a terminal) the bars."""
        named: dict[str, Listener] = {}
        for name in self.config.sinks:
            with calling(self.plugins.label("sink", name), f"opening sink {name!r}"):
                named[name] = SinkListener(self.plugins.sink(name).factory(self.output_dir, self.config))
        named["log line"] = LogLine()
        if self.progress is not None:
            named["progress bar"] = ProgressBars(self.progress)
        return Listeners(named)

    def sampler(self, trials_before: int = 0, nonce: int = 0) -> optuna.samplers.BaseSampler:
        """The configured sampler for this process (``worker``) joining a study that already holds
        ``trials_before`` trials, seeded with :func:`sampler_seed` and the session's ``nonce``;
        its errors name its plugin."""
        s = self.config.sampler
        label = self.plugins.label("sampler", s.name)
        seed = sampler_seed(s.seed, self.worker == 0 and trials_before == 0, nonce)
        with calling(label, f"building sampler {s.name!r}"):
            inner = self.plugins.sampler(s.name).factory(s.factory_options(self.shared), seed)
        return CheckedSampler(inner, label)

    def open_study(self, cell: Cell, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, Encoding]:
        return open_study(self.config, cell, storage, self.sampler)

    def run(self) -> RunResult:
        """Run every cell; with several local workers planned (GPU or ``workers.processes``),
        each budget's cells run in that many processes, then the results are read back."""
        check_output_dir(self.output_dir)
        cells = self.cells()
        check_stored(self.config, cells, make_storage(self.config))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        budgets = sorted({c.budget for c in cells})
        plans = [
            (b, workers.plan(self.config, [c for c in cells if c.budget == b], self.datasets()))
            for b in budgets
        ]
        if any(slots for _, slots in plans):
            return self._run_with_workers(cells, plans)
        return self._run_here(cells)

    def _run_with_workers(self, cells: list[Cell], plans: list[tuple[int, Any]]) -> RunResult:
        make_storage(self.config)  # the schema, before the workers race to create it
        stop = StopRequest(self.output_dir)
        with stop:
            for budget, slots in plans:
                if stop.requested:
                    break
                if slots:
                    fixed = self.config.fixed_architecture() is not None
                    workers.run_budget(self.config, None if fixed else budget, slots, run_worker)
                else:
                    self._run_here([c for c in cells if c.budget == budget])
        storage = make_storage(self.config)
        summaries = []
        for cell in cells:
            try:
                study = optuna.load_study(study_name=cell.study_name, storage=storage)
            except KeyError:
                continue
            direction = study.direction.name.lower()
            summary = CellSummary(
                self.config.experiment, cell.budget, cell.horizon, study.study_name, direction, study_uid=study_uid(study)
            )
            summary.confirmed = confirmed_block(summary.refresh(study), direction)
            summaries.append(summary)
        return RunResult(summaries, stop.reason, self.output_dir)

    def _run_here(self, cells: list[Cell]) -> RunResult:
        storage = make_storage(self.config)
        listeners = self.listeners()
        summaries: list[CellSummary] = []
        stop = StopRequest(self.output_dir)
        try:
            with stop:
                for cell in cells:
                    summaries.append(self.run_cell(cell, storage, listeners, stop))
                    if stop.requested:
                        break
        finally:
            listeners.close()
        return RunResult(summaries, stop.reason, self.output_dir)

    def run_cell(
        self, cell: Cell, storage: optuna.storages.BaseStorage, listeners: Listeners, stop: StopRequest
    ) -> CellSummary:
        """Open (or resume) the cell's study, recover dead processes' trials, queue the coverage
        trials once, then run the trial loop."""
        study, encoding = self.open_study(cell, storage)
        recovered = recover_orphans(study)
        if recovered:
            log.warning(
                "%s: %d trial(s) of a process that died were failed and queued again", cell.label, recovered
            )
        queued = enqueue_coverage(study, self.config, cell, encoding)
        if queued:
            log.info("%s: queued %d coverage trials (every architecture, extremes first)", cell.label, queued)
        data = self.datasets()[cell.horizon]
        variant = self.plugins.label("estimator", self.config.model.variant)
        objective = Objective(self.config, cell, data, encoding, self.train_fn, self.build_fn, variant)
        return loop.run_cell(self.config, cell, study, objective, listeners, stop)


def run_worker(slot: Any, raw: dict[str, Any], source: str, file_horizons: tuple[int, ...] = ()) -> None:
    """One local worker process (see :func:`archsearch.search.workers.run_budget`): the engine
    on the given config, its log lines tagged with the slot."""
    logger = logging.getLogger("archsearch")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [worker {slot.index}] %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    config = structure(raw, source, file_horizons)
    Engine(config, worker=slot.index, shared=True).run()
