from __future__ import annotations

from pathlib import Path

import pytest

from archsearch.plugin.manager import Plugins, get_plugin_manager

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SPY_CSV = SHARED_DATA / "SPY_daily.csv"


@pytest.fixture
def pm() -> Plugins:
    """A fresh plugin manager with the built-ins only."""
    return get_plugin_manager(autoload=False)


@pytest.fixture
def spy_csv() -> Path:
    if not SPY_CSV.exists():
        pytest.skip(f"real data not found at {SPY_CSV} (the shared/ folder beside the checkout)")
    return SPY_CSV
