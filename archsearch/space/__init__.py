"""The architecture space: the budget grid (every architecture within a band of a budget) and
the encodings that turn an architecture into Optuna parameters."""

from archsearch._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        [
            "DEFAULT_SPACE",
            "SPACES",
            "extremes",
            "filter_by_budget",
            "generate_architecture_grid",
            "get_architectures_for_budget",
        ],
        "archsearch.space.grid",
    ),
    **dict.fromkeys(["Encoding", "make_encoding"], "archsearch.space.encodings"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
