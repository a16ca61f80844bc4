"""The built-in seeded synthetic market (``source: synthetic``): daily bars with a learnable signal."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported when a frame is made: a config loads without it
    import pandas as pd

#: The synthetic market: daily volatility of the shocks in the calm and the volatile regime,
#: persistence and stationary std of the slow and the fast drift, and the slow drift's pull per
#: unit of log deviation from the trend.
_CALM, _VOLATILE = 0.005, 0.01
_SLOW_PHI, _SLOW_SCALE = 0.98, 0.004
_FAST_PHI, _FAST_SCALE = 0.9, 0.003
_PULL = 0.003


def synthetic_frame(rows: int = 3000, features: int = 20, seed: int = 0) -> pd.DataFrame:
    """A seeded synthetic daily market with a learnable signal.

    Log returns are ``r[t+1] = slow[t] + fast[t] + sigma[t] * e[t+1]``: ``slow`` is a persistent
    drift (AR(1), 0.98) that shows in the close's own past (momentum, what a channel-independent
    model can use), gently pulled back to a 7%-a-year trend so the price stays in a range; ``fast``
    (AR(1), 0.9) is visible only through the indicators; ``sigma`` switches between a calm and a
    volatile regime. The indicator columns ``x01..`` are, in turn: noisy readings of ``fast``
    (leading indicators), a noisy reading of the next day's shock, a regime proxy, momentum and
    moving-average oscillators of the close, a volatility estimate, a noisy reading of ``slow``,
    and smoothed or plain noise with no signal (repeating with fresh noise beyond eleven).
    Columns: ``date`` (business days from 2000-01-03), ``open, high, low, close, volume`` and
    ``x01, ...``, ``features`` numeric columns in all. The same ``seed`` gives the same frame.
    """
    import pandas as pd

    if features < 5:
        raise ValueError(f"features must be at least 5 (open, high, low, close, volume); got {features}")
    rng = np.random.default_rng(seed)
    regime = _regimes(rng, rows)
    sigma = np.where(regime == 1, _VOLATILE, _CALM)
    shocks = rng.standard_normal(rows)
    log_price, slow, fast = _log_prices(rng, sigma, shocks)
    columns: dict[str, np.ndarray] = {
        "date": pd.bdate_range("2000-01-03", periods=rows).to_numpy(),
        **_bars(rng, np.exp(log_price), sigma, regime),
    }
    kinds = _indicators(rng, columns["close"], log_price, shocks, slow, fast, regime)
    for i in range(features - 5):
        columns[f"x{i + 1:02d}"] = kinds[i % len(kinds)]()
    return pd.DataFrame(columns)


def _regimes(rng: np.random.Generator, n: int) -> np.ndarray:
    """The volatility regime of each day: 0 calm, 1 volatile (a two-state Markov chain)."""
    regime = np.zeros(n, dtype=int)
    for t in range(1, n):
        stay = 0.985 if regime[t - 1] == 0 else 0.96
        regime[t] = regime[t - 1] if rng.random() < stay else 1 - regime[t - 1]
    return regime


def _log_prices(
    rng: np.random.Generator, sigma: np.ndarray, shocks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The log close from 100, and the slow and fast drifts that, with the shocks, move it."""
    n = len(sigma)
    slow_noise, fast_noise = rng.standard_normal((2, n))
    slow, fast = np.zeros(n), np.zeros(n)
    log_price = np.zeros(n)
    log_price[0] = np.log(100.0)
    trend = np.log(100.0) + 0.07 / 252 * np.arange(n)
    slow_kick = _SLOW_SCALE * np.sqrt(1 - _SLOW_PHI**2)
    fast_kick = _FAST_SCALE * np.sqrt(1 - _FAST_PHI**2)
    for t in range(1, n):
        deviation = log_price[t - 1] - trend[t - 1]
        slow[t] = _SLOW_PHI * slow[t - 1] + slow_kick * slow_noise[t] - _PULL * (1 - _SLOW_PHI) * deviation
        fast[t] = _FAST_PHI * fast[t - 1] + fast_kick * fast_noise[t]
        log_price[t] = log_price[t - 1] + slow[t - 1] + fast[t - 1] + sigma[t] * shocks[t]
    return log_price, slow, fast


def _bars(
    rng: np.random.Generator, close: np.ndarray, sigma: np.ndarray, regime: np.ndarray
) -> dict[str, np.ndarray]:
    """The daily ``open, high, low, close, volume`` columns around the closes."""
    n = len(close)
    gap = 0.002 * rng.standard_normal(n)
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(gap)
    spread = sigma * np.abs(rng.standard_normal((2, n))) * 0.8
    high = np.maximum(open_, close) * np.exp(spread[0])
    low = np.minimum(open_, close) * np.exp(-spread[1])
    volume = np.exp(15 + 0.5 * regime + 0.3 * rng.standard_normal(n) + 8 * np.abs(np.log(close / open_)))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _indicators(
    rng: np.random.Generator,
    close: np.ndarray,
    log_price: np.ndarray,
    shocks: np.ndarray,
    slow: np.ndarray,
    fast: np.ndarray,
    regime: np.ndarray,
) -> list[Callable[[], np.ndarray]]:
    """The kinds of indicator column, in order; each call makes one (drawing its noise then)."""
    import pandas as pd

    n = len(close)
    returns = np.diff(log_price, prepend=log_price[0])
    next_shock = np.concatenate([shocks[1:], [0.0]])

    def ema(x: np.ndarray, span: int) -> np.ndarray:
        return pd.Series(x).ewm(span=span, adjust=False).mean().to_numpy()

    def noise(scale: float = 1.0) -> np.ndarray:
        return scale * rng.standard_normal(n)

    return [
        lambda: fast / _FAST_SCALE + noise(0.5),
        lambda: fast / _FAST_SCALE + noise(1.0),
        lambda: next_shock + noise(1.5),
        lambda: regime + noise(0.5),
        lambda: np.log(close / ema(close, 10)) * 20,
        lambda: pd.Series(returns).rolling(20, min_periods=1).sum().to_numpy() * 10,
        lambda: ema(np.abs(returns), 10) * 100,
        lambda: ema(noise(), 5),
        lambda: slow / _SLOW_SCALE + noise(1.0),
        lambda: np.log(ema(close, 5) / ema(close, 30)) * 20,
        lambda: noise(),
    ]
