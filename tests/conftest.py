from __future__ import annotations

from pathlib import Path

import pytest

from archsearch.plugin.manager import Plugins, get_plugin_manager

REPO = Path(__file__).resolve().parents[1]
#: The SPY daily bars shipped with the package (archsearch/data/builtin/).
SPY_SOURCE = "builtin:spy-daily"


@pytest.fixture
def pm() -> Plugins:
    """A fresh plugin manager with the built-ins only."""
    return get_plugin_manager(autoload=False)


@pytest.fixture
def spy_csv() -> str:
    """The real data as a ``data.source`` value."""
    return SPY_SOURCE
