"""The data: sources (CSV, Parquet, synthetic), chronological splits, the task (threshold labels
or a forecast) and the windows a model trains on."""

from archsearch._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ["DataConfig", "LoadedFrame", "load_frame", "synthetic_frame"], "archsearch.data.sources"
    ),
    **dict.fromkeys(["SplitConfig", "split_ranges"], "archsearch.data.splits"),
    **dict.fromkeys(["TaskConfig"], "archsearch.data.tasks"),
    **dict.fromkeys(["PreparedData", "prepare"], "archsearch.data.windows"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
