"""The experiment configuration: YAML -> attrs through a strict cattrs converter.

Every problem in a file is reported together, each as ``path: what was wrong`` (see
``docs/config.md`` for every key). Float fields accept YAML numbers and numeric strings
(PyYAML reads ``1e-3`` without a dot as a string); booleans are never numbers; integers must be
whole numbers; strings must be strings.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any, Literal, NewType

import attrs
import cattrs
import yaml
from cattrs.errors import ClassValidationError

from archsearch.architecture import Architecture, ArchSpace, HeadRule, ModelSpec
from archsearch.budget import format_budget, parse_budget
from archsearch.budget_grid import SPACES
from archsearch.config_errors import describe, describe_value, unknown_key_message
from archsearch.data import DataConfig
from archsearch.errors import BudgetError, ConfigError
from archsearch.splits import SplitConfig
from archsearch.tasks import TaskConfig

Budget = NewType("Budget", int)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
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

    learning_rate: float = 1e-3
    epochs: int = 20
    batch_size: int = 64
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    dropout: float = 0.1
    grad_clip: float | None = 1.0
    patience: int | None = None
    device: str = "auto"
    micro_batch_size: int | None = None
    seed: int = 0
    #: CPU threads for torch; null = 1 below 2M parameters (small models lose more to thread
    #: synchronisation than they gain), else every core.
    cpu_threads: int | None = None
    #: On CUDA, capture the whole training step in a CUDA graph (falls back when it cannot).
    cuda_graphs: bool = True
    #: ``torch.compile`` each trial's model (off: compiling costs more than a short trial saves);
    #: the compile time is recorded per trial (``compile_s`` in the CSV).
    compile: bool = False


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
    context_length: int = 60
    patch_len: int = 10
    stride: int = 5
    head_dropout: float = 0.0
    revin: bool = True
    revin_affine: bool = True
    norm: Literal["batch", "layer"] = "batch"
    padding_patch: Literal["end", "none"] = "end"
    res_attention: bool = True
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


@attrs.frozen
class SamplerConfig:
    name: str = "tpe"
    options: dict[str, Any] = attrs.Factory(dict)
    seed: int | None = 0


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
def _float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {describe_value(value)}")
    try:
        out = float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {describe_value(value)}") from None
    if not math.isfinite(out):
        raise ValueError(f"expected a finite number, got {describe_value(value)}")
    return out


def _int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    ):
        raise ValueError(f"expected a whole number, got {describe_value(value)}")
    return int(value)


def _str(value: Any, _: type) -> str:
    if isinstance(value, dt.date):  # YAML reads an unquoted 2018-01-02 as a date
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe_value(value)}")
    return value


def _bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe_value(value)}")
    return value


def _budget(value: Any, _: type) -> int:
    try:
        return parse_budget(value)
    except BudgetError as exc:
        raise ValueError(str(exc)) from None


def _param_spec(value: Any, _: type) -> ParamSpec:
    """The search-range hook: checks each key knowing the range's type, so that, for example,
    a log-uniform bound is reported as ``expected a positive float``."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping with 'type' and its range, got {describe_value(value)}")
    fields = [f.name for f in attrs.fields(ParamSpec)]
    problems: list[tuple[str, str]] = []
    for key in value:
        if key not in fields:
            problems.append((key, unknown_key_message("", str(key), fields).split(": ", 1)[1]))
    kind = value.get("type")
    kinds = ("log_uniform", "uniform", "int", "categorical")
    if kind not in kinds:
        problems.append(("type", f"expected one of {', '.join(kinds)}, got {describe_value(kind)}"))
    out: dict[str, Any] = {"type": kind}
    if kind == "categorical":
        choices = value.get("choices")
        if not isinstance(choices, list) or not choices:
            problems.append(("choices", f"expected a non-empty list, got {describe_value(choices)}"))
        else:
            out["choices"] = tuple(choices)
        for key in ("low", "high", "step"):
            if key in value:
                problems.append((key, "a categorical parameter takes 'choices' only"))
    elif kind in kinds:
        positive = kind == "log_uniform" or value.get("log") is True
        want = ("a positive " if positive else "a ") + ("whole number" if kind == "int" else "float")
        for key in ("low", "high", "step"):
            raw = value.get(key)
            if raw is None:
                if key != "step":
                    problems.append((key, f"required for a {kind} parameter: expected {want}"))
                continue
            try:
                number = _int(raw, int) if kind == "int" else _float(raw, float)
            except ValueError:
                problems.append((key, f"expected {want}, got {describe_value(raw)}"))
                continue
            if (positive or key == "step") and number <= 0:
                problems.append((key, f"expected {want}, got {describe_value(raw)}"))
                continue
            out[key] = number
        if "low" in out and "high" in out and out["low"] > out["high"]:
            problems.append(("low", f"low ({value['low']}) must not exceed high ({value['high']})"))
        if "log" in value:
            if not isinstance(value["log"], bool):
                problems.append(("log", f"expected true or false, got {describe_value(value['log'])}"))
            else:
                out["log"] = value["log"]
        if "choices" in value:
            problems.append(("choices", f"a {kind} parameter takes low and high, not choices"))
    if problems:
        errors = []
        for key, message in problems:
            err = ValueError(message)
            err.add_note(f"Structuring class ParamSpec @ attribute {key}")
            errors.append(err)
        raise ClassValidationError("While structuring ParamSpec", errors, ParamSpec)
    return ParamSpec(**out)


def make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook(Budget, _budget)
    conv.register_structure_hook(ParamSpec, _param_spec)
    conv.register_unstructure_hook(ParamSpec, ParamSpec.as_dict)
    return conv


CONVERTER = make_converter()


# -- checks across keys ------------------------------------------------------------------------
def problems(config: Config) -> list[str]:
    """Every problem that involves more than one key, or a value's meaning."""
    out = []
    if not NAME_PATTERN.match(config.experiment) or config.experiment in {".", ".."}:
        out.append(
            f"experiment: {config.experiment!r} cannot name files and studies; use letters, digits, "
            "'-', '_' and '.' only, not starting with '.' or '-'"
        )
    fixed = config.model.architecture
    if not config.budgets and fixed is None:
        out.append(
            "budgets: expected at least one budget (e.g. [2M, 20M]), or model.architecture for a fixed one"
        )
    if config.budgets and fixed is not None:
        out.append(
            "budgets: model.architecture fixes the architecture; remove budgets or the fixed architecture"
        )
    if len(set(config.budgets)) != len(config.budgets):
        out.append(f"budgets: {[format_budget(b) for b in config.budgets]} lists a budget twice")
    if not config.horizons:
        out.append("horizons: expected at least one horizon (steps ahead), e.g. [1, 3, 5]")
    for i, h in enumerate(config.horizons):
        if h <= 0:
            out.append(f"horizons[{i}]: expected a positive number of steps, got {h}")
    if len(set(config.horizons)) != len(config.horizons):
        out.append(f"horizons: {list(config.horizons)} lists a horizon twice")
    if not 0 < config.tolerance < 1:
        out.append(f"tolerance: expected a fraction strictly between 0 and 1, got {config.tolerance}")
    if config.n_trials <= 0:
        out.append(f"n_trials: expected a positive number of trials per cell, got {config.n_trials}")
    if not DEVICE_PATTERN.fullmatch(config.training.device):
        out.append(
            f"training.device: expected auto, cpu, cuda, cuda:N or mps, got {config.training.device!r}"
        )
    if config.training.grad_clip is not None and config.training.grad_clip <= 0:
        out.append(f"training.grad_clip: expected a positive number or null, got {config.training.grad_clip}")
    if config.timeout_hours is not None and config.timeout_hours <= 0:
        out.append(f"timeout_hours: expected a positive number of hours or null, got {config.timeout_hours}")
    for key in config.training_search_space:
        if key not in SEARCHABLE:
            out.append(unknown_key_message("training_search_space", key, list(SEARCHABLE)))
    if config.architecture.space not in SPACES:
        out.append(
            f"architecture.space: unknown space {config.architecture.space!r}; named spaces: {', '.join(SPACES)}"
        )
    m = config.model
    if m.patch_len > m.context_length:
        out.append(
            f"model.patch_len: {m.patch_len} must not exceed model.context_length ({m.context_length})"
        )
    for key in ("context_length", "patch_len", "stride"):
        if getattr(m, key) <= 0:
            out.append(f"model.{key}: expected a positive whole number, got {getattr(m, key)}")
    if config.allocation.k <= 0:
        out.append(
            f"allocation.k: expected a positive number of trials per architecture, got {config.allocation.k}"
        )
    if not 0 < config.workers.heartbeat_interval < config.workers.grace_period:
        out.append(
            "workers: expected 0 < heartbeat_interval < grace_period, got "
            f"{config.workers.heartbeat_interval} and {config.workers.grace_period}"
        )
    if not config.sinks:
        out.append("sinks: expected at least one sink, e.g. [csv, json]")
    t = config.training
    for key in ("learning_rate", "epochs", "batch_size"):
        if getattr(t, key) <= 0:
            out.append(f"training.{key}: expected a positive value, got {getattr(t, key)}")
    if not 0 <= t.dropout < 1:
        out.append(f"training.dropout: expected a fraction in [0, 1), got {t.dropout}")
    return out


def _top_key(problem: str) -> str:
    return problem.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]


def structure(raw: Any, source: str = "<config>", file_horizons: tuple[int, ...] = ()) -> Config:
    """Build a :class:`Config` from parsed YAML, or raise :class:`ConfigError` with every problem.
    ``file_horizons``: the config file's horizons when ``raw`` is a slice of it (default: its own)."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"top level: expected a mapping of keys, got {describe_value(raw)}"])
    try:
        config = CONVERTER.structure(raw, Config)
    except ClassValidationError as exc:
        found = describe(exc)
        # Check what did structure for problems across keys too, so one run reports everything.
        failed = {_top_key(line) for line in found}
        rest = {k: v for k, v in raw.items() if k not in failed}
        rest.setdefault("experiment", "x")
        try:
            partial = CONVERTER.structure(rest, Config)
        except ClassValidationError:
            partial = None
        if partial is not None:
            found += [p for p in problems(partial) if _top_key(p) in raw and _top_key(p) not in failed]
        raise ConfigError(source, found) from None
    found = problems(config)
    if found:
        raise ConfigError(source, found)
    object.__setattr__(config, "source", source)
    object.__setattr__(config, "file_horizons", tuple(file_horizons) or tuple(config.horizons))
    return config


def load_config(path: str | Path) -> Config:
    """Read a YAML config file (``yaml.safe_load``) and structure it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), ["the file does not exist" if not path.exists() else "not a file"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from None
    return structure(raw, str(path))


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data (round-trips through :func:`structure`)."""
    out = CONVERTER.unstructure(config)
    out.pop("source", None)
    out.pop("file_horizons", None)
    return out


def apply_overrides(
    config: Config,
    budgets: list[str] | None = None,
    horizons: list[int] | None = None,
    n_trials: int | None = None,
    output: str | None = None,
    device: str | None = None,
    storage: str | None = None,
) -> Config:
    """The CLI's overrides (``--budget``, ``--horizon``, ``--n-trials``, ``--output``, ``--device``)."""
    if not budgets and not horizons and all(v is None for v in (n_trials, output, device, storage)):
        return config
    raw = to_dict(config)
    if budgets:
        raw["budgets"] = list(budgets)
    if horizons:
        raw["horizons"] = list(horizons)
    if n_trials is not None:
        raw["n_trials"] = n_trials
    if output is not None:
        raw["output_dir"] = output
    if device is not None:
        raw["training"]["device"] = device
    if storage is not None:
        raw["storage"] = storage
    return structure(raw, f"{config.source} (with command-line overrides)", config.file_horizons)
