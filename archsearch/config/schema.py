"""The experiment configuration's schema: one attrs class per section (``docs/config.md``
describes every key). Training and model defaults are not written here: they are the trainer's
(:class:`~archsearch.training.settings.TrainConfig`) and the model shape's
(:class:`~archsearch.architecture.ModelSpec`), read with :func:`default_of`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, NewType

import attrs

from archsearch.architecture import Architecture, ArchSpace, HeadRule, ModelSpec
from archsearch.budget import format_budget
from archsearch.data.sources import DataConfig
from archsearch.data.splits import SplitConfig
from archsearch.data.tasks import TaskConfig
from archsearch.space.grid import SPACES
from archsearch.storage import STORAGE_OUTAGE_S
from archsearch.training.settings import LRSchedule, Precision, TrainConfig, warmup_with_onecycle

Budget = NewType("Budget", int)
#: A device name, checked by :func:`archsearch.device.device_problem` while the file is read.
Device = NewType("Device", str)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of the attrs class ``cls``: the one source of a default that
    two classes share."""
    return attrs.fields_dict(cls)[name].default


#: The default storage: a SQLite file of this name in the output directory.
DB_NAME = "archsearch.db"


@attrs.frozen
class ParamSpec:
    """One training parameter's search range, in the seed's format."""

    type: Literal["log_uniform", "uniform", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any, name: str) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(
                name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(name, self.low, self.high, log=self.type == "log_uniform", step=self.step)

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in attrs.asdict(self).items()
            if v is not None and v is not False
        }


@attrs.frozen
class TrainingDefaults:
    """Training settings used as they are unless ``training_search_space`` searches them."""

    learning_rate: float = default_of(TrainConfig, "learning_rate")
    epochs: int = default_of(TrainConfig, "epochs")
    batch_size: int = default_of(TrainConfig, "batch_size")
    weight_decay: float = default_of(TrainConfig, "weight_decay")
    warmup_steps: int = default_of(TrainConfig, "warmup_steps")
    dropout: float = default_of(TrainConfig, "dropout")
    grad_clip: float | None = default_of(TrainConfig, "grad_clip")
    patience: int | None = default_of(TrainConfig, "patience")
    device: Device = default_of(TrainConfig, "device")  # noqa: RUF009 - a str
    micro_batch_size: int | None = default_of(TrainConfig, "micro_batch_size")
    seed: int = default_of(TrainConfig, "seed")
    #: CPU threads for torch; null = 1 below 2M parameters (small models lose more to thread
    #: synchronisation than they gain), else every core.
    cpu_threads: int | None = None
    #: On CUDA, capture the whole training step in a CUDA graph (falls back when it cannot).
    cuda_graphs: bool = default_of(TrainConfig, "cuda_graphs")
    #: ``torch.compile`` each trial's model (off: compiling costs more than a short trial saves);
    #: the compile time is recorded per trial (``compile_s`` in the CSV).
    compile: bool = default_of(TrainConfig, "compile")
    #: The learning-rate schedule: ``{kind: cosine}`` (warmup then cosine, the default),
    #: ``constant``, ``exponential`` (``gamma``, ``hold_epochs``) or ``onecycle`` (``pct_start``).
    lr_schedule: LRSchedule = default_of(TrainConfig, "lr_schedule")  # noqa: RUF009 - frozen
    #: Leave the ragged last batch of every epoch out, on every device.
    drop_last: bool = default_of(TrainConfig, "drop_last")
    #: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``bf16`` or ``fp32``; recorded per trial.
    precision: Precision = default_of(TrainConfig, "precision")  # noqa: RUF009 - a str

    def __attrs_post_init__(self) -> None:
        if self.lr_schedule.kind == "onecycle" and self.warmup_steps:
            raise ValueError(warmup_with_onecycle(self.warmup_steps))


SEARCHABLE = ("learning_rate", "epochs", "batch_size", "weight_decay", "warmup_steps", "dropout", "grad_clip")


@attrs.frozen
class FixedArchitecture:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int


@attrs.frozen
class ModelConfig:
    """The model variant and the parameters every architecture shares."""

    variant: str = "patchtst"
    context_length: int = default_of(ModelSpec, "context_length")
    patch_len: int = default_of(ModelSpec, "patch_len")
    stride: int = default_of(ModelSpec, "stride")
    head_dropout: float = default_of(ModelSpec, "head_dropout")
    attention_dropout: float | None = attrs.field(
        default=default_of(ModelSpec, "attention_dropout"),
        validator=attrs.fields(ModelSpec).attention_dropout.validator,
    )
    revin: bool = default_of(ModelSpec, "revin")
    revin_affine: bool = default_of(ModelSpec, "revin_affine")
    norm: Literal["batch", "layer"] = default_of(ModelSpec, "norm")
    padding_patch: Literal["end", "none"] = default_of(ModelSpec, "padding_patch")
    res_attention: bool = default_of(ModelSpec, "res_attention")
    architecture: FixedArchitecture | None = None


@attrs.frozen
class ArchitectureConfig:
    """Which architectures a cell searches: a named space, optionally with values replaced."""

    space: str = "default"
    generator: str = "budget-grid"
    d_model: tuple[int, ...] | None = None
    n_layers: tuple[int, ...] | None = None
    n_heads: tuple[int, ...] | None = None
    d_ff_ratios: tuple[int, ...] | None = None
    head_rule: HeadRule | None = None
    max_architectures: int | None = None
    #: How a trial's architecture becomes Optuna parameters: ``structured`` (ordered width, depth,
    #: ratio and heads coordinates; the default, chosen on the tabular benchmark, docs/benchmarks.md)
    #: or ``index`` (one categorical over the list, the plan's ``arch_idx``).
    encoding: Literal["structured", "index"] = "structured"

    def resolve(self) -> ArchSpace:
        base = SPACES[self.space]
        changes = {
            k: getattr(self, k)
            for k in ("d_model", "n_layers", "n_heads", "d_ff_ratios", "head_rule", "max_architectures")
            if getattr(self, k) is not None
        }
        return attrs.evolve(base, **changes)


#: The samplers that take Optuna's ``constant_liar`` (TPESampler's remedy for parallel workers
#: proposing the same point: running trials count as bad ones).
CONSTANT_LIAR_SAMPLERS = ("tpe",)


@attrs.frozen
class SamplerConfig:
    name: str = "tpe"
    options: dict[str, Any] = attrs.Factory(dict)
    seed: int | None = 0
    #: ``auto`` (on when several workers share a study), ``true`` or ``false``; checked by
    #: :mod:`archsearch.config.checks` (any YAML value structures, so the message names the key).
    constant_liar: Any = "auto"

    def factory_options(self, shared: bool) -> dict[str, Any]:
        """The options the sampler's factory gets: ``options``, with ``constant_liar`` for the
        samplers that take it (``auto``: ``shared``, several workers on the study), unless
        ``options`` sets it."""
        options = dict(self.options)
        if self.name in CONSTANT_LIAR_SAMPLERS and "constant_liar" not in options:
            options["constant_liar"] = shared if self.constant_liar == "auto" else self.constant_liar
        return options


@attrs.frozen
class PrunerConfig:
    name: Literal["none", "median", "successive_halving", "hyperband"] = "none"
    options: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class AllocationConfig:
    """``coverage``: every architecture ``k`` times (extremes first) before the sampler chooses."""

    strategy: Literal["coverage", "none"] = "coverage"
    k: int = 1


@attrs.frozen
class ConfirmConfig:
    """The confirmation stage: once a cell's search has its trials, the ``top_k`` best distinct
    configurations (architecture + training values) are trained again with ``seeds`` fresh seeds
    each; the cell's answer is the one with the best mean over its seeds (``confirm: null``: the
    single best search trial, unconfirmed)."""

    top_k: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    #: At least 2: an interval needs two values.
    seeds: int = attrs.field(default=3, validator=attrs.validators.ge(2))


@attrs.frozen
class WorkersConfig:
    """Several processes (on one or many machines) sharing one study through the storage."""

    #: Seconds between a running trial's heartbeats.
    heartbeat_interval: float = 30.0
    #: Seconds without a heartbeat after which another worker fails the trial and retries it.
    grace_period: float = 120.0
    #: Worker processes per GPU for ``run`` on CUDA; null = automatic (more for small models,
    #: as many as fit in free memory, at most 8).
    per_gpu: int | None = None
    #: The GPUs ``run`` uses (CUDA indices); null = every visible one.
    devices: tuple[int, ...] | None = None
    #: Worker processes for ``run`` on this machine whatever the device (overrides per_gpu).
    processes: int | None = None
    #: Seconds each storage call waits out an outage (a database restarting, a lost connection,
    #: a locked SQLite file) before the process gives up with a clear error.
    storage_outage_s: float = STORAGE_OUTAGE_S


@attrs.frozen
class Config:
    experiment: str
    budgets: tuple[Budget, ...] = ()
    horizons: tuple[int, ...] = (1,)
    tolerance: float = 0.25
    data: DataConfig = attrs.Factory(DataConfig)
    task: TaskConfig = attrs.Factory(TaskConfig)
    split: SplitConfig = attrs.Factory(SplitConfig)
    model: ModelConfig = attrs.Factory(ModelConfig)
    architecture: ArchitectureConfig = attrs.Factory(ArchitectureConfig)
    training: TrainingDefaults = attrs.Factory(TrainingDefaults)
    training_search_space: dict[str, ParamSpec] = attrs.Factory(dict)
    n_trials: int = 50
    timeout_hours: float | None = None
    direction: Literal["minimize", "maximize"] = "minimize"
    sampler: SamplerConfig = attrs.Factory(SamplerConfig)
    pruner: PrunerConfig = attrs.Factory(PrunerConfig)
    allocation: AllocationConfig = attrs.Factory(AllocationConfig)
    confirm: ConfirmConfig | None = attrs.Factory(ConfirmConfig)
    workers: WorkersConfig = attrs.Factory(WorkersConfig)
    storage: str | None = None
    output_dir: str = "runs/{experiment}"
    sinks: tuple[str, ...] = ("csv", "json")
    plugins: tuple[str, ...] = ()
    #: Where the config came from (a file name); not a key of the file.
    source: str = attrs.field(default="<config>", eq=False, init=False)
    #: The horizons the config file lists, before a ``--horizon`` slice (file names depend on them).
    file_horizons: tuple[int, ...] = attrs.field(default=(), eq=False, init=False)

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir.format(experiment=self.experiment))

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.output_path / DB_NAME}"

    def study_name(self, budget: int, horizon: int) -> str:
        return f"{self.experiment}_{format_budget(budget)}_h{horizon}"

    def fixed_architecture(self) -> Architecture | None:
        a = self.model.architecture
        return None if a is None else Architecture(a.d_model, a.n_layers, a.n_heads, a.d_ff)

    def model_spec(
        self, num_features: int, head: str, n_outputs: int, n_targets: int, targets=()
    ) -> ModelSpec:
        """The model's fixed shape: the data's, and every ``model`` key that ModelSpec has."""
        shared = {k: getattr(self.model, k) for k in _MODEL_SPEC_KEYS}
        return ModelSpec(
            num_features=num_features,
            head=head,
            n_outputs=n_outputs,
            n_targets=n_targets,
            dropout=self.training.dropout,
            target_channels=tuple(targets),
            **shared,
        )


#: The ``model`` keys that are ModelSpec fields too (context_length, patch_len, revin, ...).
_MODEL_SPEC_KEYS = tuple(
    f.name for f in attrs.fields(ModelConfig) if f.name in {g.name for g in attrs.fields(ModelSpec)}
)


# -- the converter ----------------------------------------------------------------------------
