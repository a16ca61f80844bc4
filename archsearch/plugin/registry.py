"""What plugins register: named generators, model variants, samplers and sinks.

Each ``archsearch_register_*`` hook returns a list of these; the plugin manager joins the lists
and refuses two entries of one kind under the same name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from archsearch.architecture import Architecture, ArchSpace, ModelSpec

__all__ = [
    "ActivationShape",
    "ArchitectureGenerator",
    "EpochEvent",
    "GridRequest",
    "ModelVariant",
    "SamplerPlugin",
    "Sink",
    "SinkPlugin",
]

if TYPE_CHECKING:
    import optuna
    import torch


@attrs.frozen
class GridRequest:
    """What a generator is asked for: architectures of ``variant`` near ``budget`` parameters."""

    budget: int
    space: ArchSpace
    spec: ModelSpec
    variant: str
    tolerance: float
    estimate: Callable[[Architecture, ModelSpec], int]


@attrs.frozen
class ArchitectureGenerator:
    """Turns a :class:`GridRequest` into the list of candidate architectures, sorted by count."""

    name: str
    generate: Callable[[GridRequest], list[Architecture]]
    description: str = ""


@attrs.frozen
class ActivationShape:
    """What a variant's encoder sees for one (micro-)batch, for memory planning
    (:func:`archsearch.training.memory.estimate_trial_memory`).

    ``sequences`` run through the encoder (the batch, or batch x channels for a
    channel-independent model), ``tokens`` each; ``residual_attention``: the attention scores are
    kept for the next layer; ``edge_bytes``: activations saved outside the encoder layers
    (inputs, patches, the head's input) for the whole batch.
    """

    sequences: int
    tokens: int
    residual_attention: bool = False
    edge_bytes: int = 0


@attrs.frozen
class ModelVariant:
    """A model family: its exact parameter-count estimator, its builder and its shape.

    ``estimate(arch, spec)`` must equal ``sum(p.numel() for p in build(arch, spec).parameters())``.
    ``build`` imports torch lazily so listing plugins stays fast. ``activation_shape(arch, spec,
    batch, element_bytes)`` returns the :class:`ActivationShape` of a batch (``element_bytes``: 2
    under bf16 autocast, else 4); a variant without one is planned as a model that patches all
    features jointly (:func:`archsearch.training.memory.joint_patches_shape`).
    """

    name: str
    estimate: Callable[[Architecture, ModelSpec], int]
    build: Callable[[Architecture, ModelSpec], torch.nn.Module]
    description: str = ""
    activation_shape: Callable[[Architecture, ModelSpec, int, int], ActivationShape] | None = None


@attrs.frozen
class SamplerPlugin:
    """``factory(options, seed)`` returns an ``optuna.samplers.BaseSampler``."""

    name: str
    factory: Callable[[Mapping[str, Any], int | None], optuna.samplers.BaseSampler]
    description: str = ""


@attrs.frozen
class EpochEvent:
    """One epoch of a running trial, as sinks with an ``epoch_finished`` method hear it (epochs
    count from 1; ``train_loss`` None when the trainer gives none)."""

    study_name: str
    trial: int
    epoch: int
    epochs: int
    val_loss: float
    train_loss: float | None = None
    metrics: Mapping[str, float] = attrs.Factory(dict)
    #: The cell's label (``8K_h2``).
    cell: str = ""


class Sink(Protocol):
    """A result sink: told of every finished trial (complete, pruned or failed) with the row of
    :func:`archsearch.records.trial_record` (``study_name``, ``trial``, ``storage``: the URL with
    its password masked) and its cell's :class:`~archsearch.records.CellSummary`, and of every
    finished cell. When a run starts, the storage's finished trials are told again with
    ``record["replayed"] = True``, so a sink can rebuild what it lost (the CSV adds missing rows)
    or skip them (a notifier). A sink may also have ``epoch_finished(event: EpochEvent)``, told
    after every epoch of the trials this process runs; one without it is not told."""

    def trial_finished(self, record: Mapping[str, Any], cell: Any) -> None: ...

    def cell_finished(self, cell: Any) -> None: ...

    def close(self) -> None: ...


@attrs.frozen
class SinkPlugin:
    """``factory(output_dir: Path, config: archsearch.config.Config)`` returns a :class:`Sink`.

    ``requires``: modules the sink imports when opened (an optional extra); a run whose config
    names the sink while one is missing stops before anything runs, with ``install``, the
    command that brings them (``pip install "archsearch[mlflow]"``)."""

    name: str
    factory: Callable[[Any, str], Sink]
    description: str = ""
    requires: tuple[str, ...] = ()
    install: str = ""

    def missing(self) -> str | None:
        """Why the sink cannot open here (a required module is not installed), or None."""
        import importlib.util

        absent = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if not absent:
            return None
        names = ", ".join(repr(m) for m in absent)
        how = f"; install it with: {self.install}" if self.install else ""
        return f"sink {self.name!r} needs the Python package {names}, which is not installed{how}"
