"""archsearch: the best transformer architecture at each parameter budget.

The public face. The code is organised by concept (see docs/architecture.md): ``config/``,
``plugin/``, ``space/``, ``data/``, ``training/``, ``search/``, ``report/``, with
:mod:`archsearch.records` the one owner of what is stored on studies and trials,
:mod:`archsearch.storage` and :mod:`archsearch.outputs` for where results live.
"""

from archsearch._lazy import lazy_exports
from archsearch.architecture import Architecture, ArchSpace, ModelSpec
from archsearch.budget import format_budget, parse_budget
from archsearch.errors import ArchsearchError
from archsearch.plugin.spec import hookimpl
from archsearch.space.grid import (
    ARCH_SEARCH_SPACE,
    estimate_param_count,
    filter_by_budget,
    generate_architecture_grid,
    get_architectures_for_budget,
)


def _version() -> str:
    """The installed distribution's version (pyproject.toml holds the one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("archsearch")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        return "0+unknown"


__version__ = _version()

#: Heavier names, imported on first use (optuna, torch, pandas, matplotlib).
_LAZY = {
    "Engine": "archsearch.search.engine",
    "build_report": "archsearch.report",
    "get_plugin_manager": "archsearch.plugin.manager",
    "load_config": "archsearch.config",
}
__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "ARCH_SEARCH_SPACE",
    "ArchSpace",
    "Architecture",
    "ArchsearchError",
    "Engine",
    "ModelSpec",
    "build_report",
    "estimate_param_count",
    "filter_by_budget",
    "format_budget",
    "generate_architecture_grid",
    "get_architectures_for_budget",
    "get_plugin_manager",
    "hookimpl",
    "load_config",
    "parse_budget",
]
