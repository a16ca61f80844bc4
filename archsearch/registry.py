"""What plugins register (kept here for third-party plugins; the module is
:mod:`archsearch.plugin.registry`)."""

from archsearch.plugin.registry import *  # noqa: F403
from archsearch.plugin.registry import __all__  # noqa: F401
