"""Built-in plugins, installed as ``archsearch.plugins`` and registered like third-party ones."""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "archsearch.plugins.budget_grid",
    "archsearch.plugins.patchtst",
    "archsearch.plugins.patchtst_ci",
    "archsearch.plugins.samplers",
    "archsearch.plugins.sinks",
    "archsearch.plugins.tracking_mlflow",
    "archsearch.plugins.tracking_tensorboard",
)
