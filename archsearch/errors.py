"""User-facing errors.

Every mistake a user can make (a bad config key, a budget nothing fits, a broken plugin) raises an
:class:`ArchsearchError` whose message is one readable paragraph naming the file, key or column and
what was expected. The CLI prints the message and exits with status 2; no traceback.
"""

from __future__ import annotations


class ArchsearchError(Exception):
    """A mistake in the user's input, printed by the CLI as one paragraph (exit status 2)."""


class ConfigError(ArchsearchError):
    """A configuration file (or override) is invalid. Holds every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} in the configuration:\n{lines}")


class PluginError(ArchsearchError):
    """A plugin failed to import, clashed with another plugin, or raised while registering."""


class BudgetError(ArchsearchError):
    """A budget that cannot be parsed, or one that no architecture fits."""


class DataError(ArchsearchError):
    """A data file or column that cannot be used as asked."""


class TrialFailed(Exception):
    """A trial that cannot produce a result (NaN loss, out of memory at micro-batch 1).

    Not a user error: the search engine records the reason on the trial and goes on.
    """
