"""archsearch: the best transformer architecture at each parameter budget."""

from archsearch.architecture import Architecture, ArchSpace, ModelSpec
from archsearch.budget import format_budget, parse_budget
from archsearch.budget_grid import (
    ARCH_SEARCH_SPACE,
    estimate_param_count,
    filter_by_budget,
    generate_architecture_grid,
    get_architectures_for_budget,
)
from archsearch.errors import ArchsearchError
from archsearch.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "ARCH_SEARCH_SPACE",
    "ArchSpace",
    "Architecture",
    "ArchsearchError",
    "ModelSpec",
    "estimate_param_count",
    "filter_by_budget",
    "format_budget",
    "generate_architecture_grid",
    "get_architectures_for_budget",
    "hookimpl",
    "parse_budget",
]
