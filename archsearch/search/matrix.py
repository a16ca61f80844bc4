"""The matrix a config asks for: one cell per (budget, horizon), each with its architectures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from archsearch.architecture import Architecture, ModelSpec
from archsearch.budget import format_budget
from archsearch.config import Config
from archsearch.errors import ArchsearchError
from archsearch.plugin.contracts import calling
from archsearch.plugin.manager import Plugins
from archsearch.space.grid import extremes, get_architectures_for_budget


@attrs.frozen
class Cell:
    budget: int
    horizon: int
    study_name: str
    architectures: tuple[Architecture, ...]

    @property
    def label(self) -> str:
        return f"{format_budget(self.budget)} h{self.horizon}"


def load_data(config: Config) -> Any:
    from archsearch.data.sources import load_frame

    return load_frame(config.data)


def prepare_data(config: Config, frame: Any, horizon: int, tensors: bool = True) -> Any:
    """The data for one horizon; ``tensors`` False: its windows and shape alone
    (:class:`~archsearch.data.shape.DataShape`, the same checks, no torch), what ``plan`` needs."""
    if tensors:
        from archsearch.data.windows import prepare
    else:
        from archsearch.data.shape import describe as prepare

    try:
        return prepare(frame, config.task, config.split, horizon, config.model.context_length)
    except ArchsearchError as exc:
        raise type(exc)(f"horizons: horizon {horizon}: {exc}") from None


def model_spec(config: Config, data: Any, dropout: float | None = None) -> ModelSpec:
    """The model's fixed shape for ``data`` (prepared for one horizon), with ``dropout`` when a
    trial sampled one."""
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
            with calling(plugins.label("estimator", config.model.variant), f"estimating {fixed.key}"):
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
