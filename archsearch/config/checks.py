"""Checks across keys, and of a value's meaning, run after a config has structured."""

from __future__ import annotations

from collections.abc import Callable

from archsearch.budget import format_budget
from archsearch.config.messages import describe_value, unknown_key_message
from archsearch.config.schema import CONSTANT_LIAR_SAMPLERS, NAME_PATTERN, SEARCHABLE, Config
from archsearch.space.grid import SPACES


def problems(config: Config) -> list[str]:
    """Every problem that involves more than one key, or a value's meaning."""
    return (
        _matrix(config)
        + _run(config)
        + _searched(config)
        + _model(config)
        + _sharing(config)
        + _training(config)
    )


#: What each searchable training value may be: a test and its words.
DOMAINS: dict[str, tuple[Callable[[float], bool], str]] = {
    "learning_rate": (lambda v: v > 0, "a positive number"),
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "warmup_steps": (lambda v: v >= 0, "0 or more"),
    "dropout": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    "grad_clip": (lambda v: v > 0, "a positive number"),
}


def _searched(config: Config) -> list[str]:
    """Search ranges inside their parameter's domain (dropout 0.5..1.5 is not a search space)."""
    out = []
    for name, spec in config.training_search_space.items():
        if name not in DOMAINS:
            continue
        ok, words = DOMAINS[name]
        if spec.type == "categorical":
            bad = [
                c for c in spec.choices if not isinstance(c, int | float) or isinstance(c, bool) or not ok(c)
            ]
            if bad:
                out.append(f"training_search_space.{name}.choices: {bad} outside {name}'s domain ({words})")
            continue
        for bound in ("low", "high"):
            value = getattr(spec, bound)
            if value is not None and not ok(value):
                out.append(
                    f"training_search_space.{name}.{bound}: {value} is outside {name}'s domain ({words})"
                )
    return out


def _matrix(config: Config) -> list[str]:
    """The experiment's name, budgets, horizons and band."""
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
    return out


def _run(config: Config) -> list[str]:
    """Trials, device, timeout, the searched keys and the space."""
    out = []
    if config.n_trials <= 0:
        out.append(f"n_trials: expected a positive number of trials per cell, got {config.n_trials}")
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
    return out


def _model(config: Config) -> list[str]:
    out = []
    for key in ("d_model", "n_layers", "n_heads", "d_ff_ratios"):
        values = getattr(config.architecture, key)
        if values is not None and (not values or min(values) <= 0):
            out.append(f"architecture.{key}: expected a list of positive whole numbers, got {list(values)}")
    m = config.model
    if m.patch_len > m.context_length:
        out.append(
            f"model.patch_len: {m.patch_len} must not exceed model.context_length ({m.context_length})"
        )
    for key in ("context_length", "patch_len", "stride"):
        if getattr(m, key) <= 0:
            out.append(f"model.{key}: expected a positive whole number, got {getattr(m, key)}")
    return out


def _sharing(config: Config) -> list[str]:
    """How trials are allocated, shared between workers and written."""
    out = []
    if config.allocation.k <= 0:
        out.append(
            f"allocation.k: expected a positive number of trials per architecture, got {config.allocation.k}"
        )
    if not 0 < config.workers.heartbeat_interval < config.workers.grace_period:
        out.append(
            "workers: expected 0 < heartbeat_interval < grace_period, got "
            f"{config.workers.heartbeat_interval} and {config.workers.grace_period}"
        )
    if not config.workers.storage_outage_s >= 0:
        out.append(
            "workers.storage_outage_s: expected seconds >= 0 to wait out a storage outage, got "
            f"{config.workers.storage_outage_s}"
        )
    if not config.sinks:
        out.append("sinks: expected at least one sink, e.g. [csv, json]")
    return out + _constant_liar(config)


def _constant_liar(config: Config) -> list[str]:
    s = config.sampler
    if s.constant_liar != "auto" and not isinstance(s.constant_liar, bool):
        return [f"sampler.constant_liar: expected auto, true or false, got {describe_value(s.constant_liar)}"]
    if s.constant_liar == "auto":
        return []
    if s.name not in CONSTANT_LIAR_SAMPLERS:
        return [
            f"sampler.constant_liar: sampler {s.name!r} has no constant liar (it is Optuna TPE's: "
            f"{', '.join(CONSTANT_LIAR_SAMPLERS)}); remove the key or leave it auto"
        ]
    if "constant_liar" in s.options:
        return ["sampler.constant_liar: also set in sampler.options; set it once (sampler.constant_liar)"]
    return []


def _training(config: Config) -> list[str]:
    out = []
    t = config.training
    for key in ("learning_rate", "epochs", "batch_size"):
        if getattr(t, key) <= 0:
            out.append(f"training.{key}: expected a positive value, got {getattr(t, key)}")
    if not 0 <= t.dropout < 1:
        out.append(f"training.dropout: expected a fraction in [0, 1), got {t.dropout}")
    if t.lr_schedule.kind == "onecycle" and "warmup_steps" in config.training_search_space:
        out.append(
            "training_search_space.warmup_steps: lr_schedule kind onecycle warms up by itself (pct_start)"
        )
    return out
