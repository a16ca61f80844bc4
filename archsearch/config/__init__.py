"""The experiment configuration: the schema (attrs classes), YAML -> schema through a strict
cattrs converter, checks across keys, and how a problem is put into words."""

from archsearch._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ["Config", "DB_NAME", "SEARCHABLE", "ParamSpec", "TrainingDefaults"], "archsearch.config.schema"
    ),
    **dict.fromkeys(["apply_overrides", "load_config", "structure", "to_dict"], "archsearch.config.convert"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
