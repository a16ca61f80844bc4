"""The documented ``archsearch.plugin_manager.get_plugin_manager`` (the module is
:mod:`archsearch.plugin.manager`)."""

from archsearch.plugin.manager import get_plugin_manager

__all__ = ["get_plugin_manager"]
