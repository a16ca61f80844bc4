"""``budget-grid``: every architecture of the space whose exact count is within the tolerance."""

from __future__ import annotations

from archsearch import hookimpl
from archsearch.architecture import Architecture
from archsearch.registry import ArchitectureGenerator, GridRequest
from archsearch.space.grid import select


def generate(request: GridRequest) -> list[Architecture]:
    return select(request.budget, request.space, request.spec, request.estimate, request.tolerance)


@hookimpl
def archsearch_register_generators() -> list[ArchitectureGenerator]:
    return [
        ArchitectureGenerator(
            "budget-grid", generate, "the space's cross product within ±tolerance of the budget"
        )
    ]
