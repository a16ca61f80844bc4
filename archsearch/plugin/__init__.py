"""The plugin system: the hook specifications, what plugins register, and the manager that loads
built-ins, entry points and config-listed modules (the rest of archsearch talks to its
:class:`~archsearch.plugin.manager.Plugins`, never to pluggy)."""

from archsearch._lazy import lazy_exports
from archsearch.plugin import registry  # light (attrs only): its names are the plugin API

_EXPORTS = {
    **dict.fromkeys(["hookimpl", "hookspec"], "archsearch.plugin.spec"),
    **dict.fromkeys(["Plugins", "get_plugin_manager", "get_plugins"], "archsearch.plugin.manager"),
    **dict.fromkeys(registry.__all__, "archsearch.plugin.registry"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
