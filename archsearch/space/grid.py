"""Architectures within a parameter budget: the grid, the band filter and the named spaces.

The public names follow the user's original plan: :data:`ARCH_SEARCH_SPACE`,
:func:`estimate_param_count`, :func:`generate_architecture_grid`, :func:`filter_by_budget` and
:func:`get_architectures_for_budget`. Why the default space is not the plan's preset is in
``docs/architecture-space.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from archsearch.architecture import Architecture, ArchSpace, ModelSpec
from archsearch.budget import format_budget
from archsearch.errors import BudgetError

if TYPE_CHECKING:
    from archsearch.plugin.manager import Plugins

Estimator = Callable[[Architecture, ModelSpec], int]

#: The plan's "definitive" preset, kept by name: every head count that divides d_model.
DESIGN_2025 = ArchSpace(
    d_model=(64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048),
    n_layers=(2, 3, 4, 6, 8, 12, 16, 24, 32, 48),
    n_heads=(2, 4, 8, 16, 32),
    d_ff_ratios=(2, 4),
    head_rule="all",
)

#: The default: denser widths and depths reaching the 2B band, one head count per width.
#: Gives 29 / 27 / 34 / 29 architectures at 2M / 20M / 200M / 2B (20 features, context 60).
DEFAULT_SPACE = ArchSpace(
    d_model=(64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096),
    n_layers=(2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96),
    n_heads=(2, 4, 8, 16, 32),
    d_ff_ratios=(2, 4),
    head_rule="head-dim-64",
)

SPACES: dict[str, ArchSpace] = {"default": DEFAULT_SPACE, "design-2025": DESIGN_2025}

#: The plan's module constant: the values of the default space.
ARCH_SEARCH_SPACE: dict[str, list[int]] = {
    "d_model": list(DEFAULT_SPACE.d_model),
    "n_layers": list(DEFAULT_SPACE.n_layers),
    "n_heads": list(DEFAULT_SPACE.n_heads),
    "d_ff_ratios": list(DEFAULT_SPACE.d_ff_ratios),
}


def get_space(name: str) -> ArchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise BudgetError(
            f"architecture space {name!r} is unknown; the named spaces are {', '.join(sorted(SPACES))}"
        ) from None


def _estimator(variant: str) -> Estimator:
    from archsearch.plugin.manager import get_plugins

    return get_plugins().variant(variant).estimate


def estimate_param_count(
    d_model: int,
    n_layers: int,
    n_heads: int,
    d_ff: int,
    spec: ModelSpec | None = None,
    variant: str = "patchtst",
) -> int:
    """The exact parameter count of one architecture of ``variant`` (closed form, no torch)."""
    arch = Architecture(d_model, n_layers, n_heads, d_ff)
    return _estimator(variant)(arch, spec or ModelSpec())


def generate_architecture_grid(space: ArchSpace, spec: ModelSpec, estimate: Estimator) -> list[Architecture]:
    """Every valid combination of ``space`` with its exact count, sorted by count."""
    grid = []
    for d in space.d_model:
        heads = space.head_choices(d)
        for n_layers in space.n_layers:
            for ratio in space.d_ff_ratios:
                for h in heads:
                    arch = Architecture(d, n_layers, h, ratio * d)
                    grid.append(Architecture(d, n_layers, h, ratio * d, estimate(arch, spec)))
    return sorted(grid, key=_order)


def _order(a: Architecture) -> tuple[int, int, int, int, int]:
    return (a.param_count, a.d_model, a.n_layers, a.d_ff, a.n_heads)


def in_band(count: int, budget: int, tolerance: float) -> bool:
    return abs(count - budget) <= tolerance * budget


def filter_by_budget(
    grid: Iterable[Architecture], budget: int, tolerance: float = 0.25
) -> list[Architecture]:
    """The members of ``grid`` whose count lies within ``budget * (1 ± tolerance)``, by count."""
    return sorted((a for a in grid if in_band(a.param_count, budget, tolerance)), key=_order)


EXTREMES = (
    ("smallest d_model", "d_model", min),
    ("largest d_model", "d_model", max),
    ("fewest layers", "n_layers", min),
    ("most layers", "n_layers", max),
)


def extreme_labels(archs: Sequence[Architecture]) -> dict[Architecture, list[str]]:
    """For each architecture, which extremes of ``archs`` it holds (every holder is labelled)."""
    labels: dict[Architecture, list[str]] = {a: [] for a in archs}
    for label, attr, pick in EXTREMES:
        if archs:
            value = pick(getattr(a, attr) for a in archs)
            for a in archs:
                if getattr(a, attr) == value:
                    labels[a].append(label)
    return labels


def extremes(archs: Sequence[Architecture]) -> list[Architecture]:
    """One architecture for each of the smallest and largest d_model and n_layers present
    (the first by count when several share the value)."""
    picks = []
    for _, attr, pick in EXTREMES if archs else ():
        value = pick(getattr(a, attr) for a in archs)
        picks.append(next(a for a in archs if getattr(a, attr) == value))
    return list(dict.fromkeys(picks))


def thin(archs: Sequence[Architecture], limit: int) -> list[Architecture]:
    """At most ``limit`` of ``archs`` (sorted by count): the extremes, then evenly spaced ones."""
    if len(archs) <= limit:
        return list(archs)
    keep = extremes(archs)
    if len(keep) >= limit:
        return sorted(keep[:limit], key=_order)
    rest = [a for a in archs if a not in keep]
    slots = limit - len(keep)
    step = len(rest) / slots
    keep += [rest[int(i * step + step / 2)] for i in range(slots)]
    return sorted(keep, key=_order)


def select(
    request_budget: int, space: ArchSpace, spec: ModelSpec, estimate: Estimator, tolerance: float
) -> list[Architecture]:
    """The budget-grid generator: the band of the grid, thinned to ``max_architectures``.

    Raises :class:`BudgetError` naming the nearest counts below and above when nothing fits.
    """
    if not 0 < tolerance < 1:
        raise BudgetError(f"tolerance must lie strictly between 0 and 1, got {tolerance}")
    grid = generate_architecture_grid(space, spec, estimate)
    band = filter_by_budget(grid, request_budget, tolerance)
    if not band:
        below = [a for a in grid if a.param_count < request_budget]
        above = [a for a in grid if a.param_count > request_budget]
        near = []
        if below:
            near.append(f"the nearest below is {below[-1].key} with {below[-1].param_count:,}")
        if above:
            near.append(f"the nearest above is {above[0].key} with {above[0].param_count:,}")
        raise BudgetError(
            f"no architecture of the space fits budget {format_budget(request_budget)} "
            f"(±{tolerance:.0%}: {int(request_budget * (1 - tolerance)):,}.."
            f"{int(request_budget * (1 + tolerance)):,} parameters); "
            f"{' and '.join(near) or 'the space is empty'}. "
            "Widen the tolerance, change the budget, or add widths/depths to the space."
        )
    if space.max_architectures is not None:
        band = thin(band, space.max_architectures)
    return band


def get_architectures_for_budget(
    budget: int | str,
    space: ArchSpace | str = "default",
    spec: ModelSpec | None = None,
    tolerance: float = 0.25,
    variant: str = "patchtst",
    generator: str = "budget-grid",
    plugins: Plugins | None = None,
) -> list[Architecture]:
    """The plan's main entry point: the candidate architectures for one budget, by count."""
    from archsearch.budget import parse_budget
    from archsearch.plugin.contracts import calling, check_architectures
    from archsearch.plugin.manager import get_plugins
    from archsearch.plugin.registry import GridRequest

    plugins = plugins or get_plugins()
    estimate = plugins.variant(variant).estimate
    variant_label = plugins.label("estimator", variant)

    def checked_estimate(arch: Architecture, spec: ModelSpec) -> int:
        with calling(variant_label, f"estimating the parameters of {arch.key}"):
            return estimate(arch, spec)

    request = GridRequest(
        budget=parse_budget(budget),
        space=get_space(space) if isinstance(space, str) else space,
        spec=spec or ModelSpec(),
        variant=variant,
        tolerance=tolerance,
        estimate=checked_estimate,
    )
    generate = plugins.generator(generator).generate
    label = plugins.label("generator", generator)
    with calling(label, f"generating architectures for budget {request.budget:,}"):
        archs = generate(request)
    return check_architectures(archs, request, label)
