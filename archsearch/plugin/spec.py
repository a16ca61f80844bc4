"""Every hook archsearch calls. Hook names share the prefix ``archsearch_``.

Registration hooks return lists of named entries (see :mod:`archsearch.plugin.registry`); the plugin
manager calls each implementation separately, joins the lists, and stops with an error naming
both plugins when two entries of one kind share a name. Built-in plugins (``archsearch.plugins.*``)
use these same hooks.
"""

from __future__ import annotations

import pluggy

from archsearch.plugin.registry import ArchitectureGenerator, ModelVariant, SamplerPlugin, SinkPlugin

hookspec = pluggy.HookspecMarker("archsearch")
hookimpl = pluggy.HookimplMarker("archsearch")


@hookspec
def archsearch_register_generators() -> list[ArchitectureGenerator]:
    """Return architecture generators, each turning a budget request into candidate architectures.

    Called once when the plugin manager is built. Every plugin's list is joined; a name offered
    twice is an error. The config chooses one generator by name (default ``budget-grid``).
    """


@hookspec
def archsearch_register_estimators() -> list[ModelVariant]:
    """Return model variants: an exact parameter-count estimator and a builder per variant.

    Called once when the plugin manager is built. Every plugin's list is joined; a variant name
    offered twice is an error. The estimator must equal the built model's parameter count.
    """


@hookspec
def archsearch_register_samplers() -> list[SamplerPlugin]:
    """Return sampler factories, each building an ``optuna.samplers.BaseSampler``.

    Called once when the plugin manager is built. Every plugin's list is joined; a name offered
    twice is an error. Factories import their heavy dependencies when called, not at import.
    """


@hookspec
def archsearch_register_sinks() -> list[SinkPlugin]:
    """Return result-sink factories; a sink hears of every finished trial and every finished cell,
    and (with an ``epoch_finished`` method) of every epoch of the trials its process runs.

    Called once when the plugin manager is built. Every plugin's list is joined; a name offered
    twice is an error. A sink that raises while running is reported and disabled; the study goes on.
    A sink whose ``requires`` modules are missing stops the run before it starts, naming ``install``.
    """
