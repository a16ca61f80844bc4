"""YAML -> :class:`~archsearch.config.schema.Config` through a strict cattrs converter.

Float fields accept YAML numbers and numeric strings (PyYAML reads ``1e-3`` without a dot as a
string); booleans are never numbers; integers must be whole numbers; strings must be strings.
Every problem in a file is reported together, each as ``path: what was wrong``.
"""

from __future__ import annotations

import datetime as dt
import math
import typing
from pathlib import Path
from typing import Any

import attrs
import cattrs
import yaml
from cattrs.errors import ClassValidationError
from cattrs.gen import make_dict_structure_fn

from archsearch.budget import parse_budget
from archsearch.config.checks import problems
from archsearch.config.messages import describe, describe_value, unknown_key_message
from archsearch.config.schema import Budget, Config, Device, ParamSpec
from archsearch.device import device_problem
from archsearch.errors import BudgetError, ConfigError


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
                wanted = want if positive else want.replace("a ", "a positive ", 1)
                problems.append((key, f"expected {wanted}, got {describe_value(raw)}"))
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


def _device(value: Any, _: type) -> str:
    name = _str(value, str)
    problem = device_problem(name)
    if problem:
        raise ValueError(problem)
    return name


def _with_value_hooks(conv: cattrs.Converter) -> cattrs.Converter:
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook(Budget, _budget)
    conv.register_structure_hook(Device, _device)
    conv.register_structure_hook(ParamSpec, _param_spec)
    conv.register_unstructure_hook(ParamSpec, ParamSpec.as_dict)
    return conv


def _list_only(structure_list: Any) -> Any:
    """A list key given one value (``horizons: 3``) is an error saying so, not a string taken
    apart letter by letter (``budgets: 25K``)."""

    def hook(value: Any, cls: type) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {describe_value(value)} (write it as [{value}])")
        return structure_list(value, cls)

    return hook


def _mapping_only(structure_section: Any) -> Any:
    """A section given a plain value (``data: file.csv``) is an error saying a mapping is expected."""

    def hook(value: Any, cls: type) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of keys, got {describe_value(value)}")
        return structure_section(value, cls)

    return hook


def make_converter() -> cattrs.Converter:
    """The strict converter: the value hooks above, lists only as lists, sections only as mappings."""
    plain = _with_value_hooks(cattrs.Converter(forbid_extra_keys=True, detailed_validation=True))
    conv = _with_value_hooks(cattrs.Converter(forbid_extra_keys=True, detailed_validation=True))
    conv.register_structure_hook_factory(
        lambda t: typing.get_origin(t) is tuple, lambda t: _list_only(plain.get_structure_hook(t))
    )
    conv.register_structure_hook_factory(
        lambda t: attrs.has(t) and t is not ParamSpec,
        lambda t: _mapping_only(
            make_dict_structure_fn(t, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True)
        ),
    )
    return conv


CONVERTER = make_converter()


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
    sinks: list[str] | None = None,
) -> Config:
    """The CLI's overrides (``--budget``, ``--horizon``, ``--n-trials``, ``--output``, ``--device``,
    ``--storage``; ``--sink`` adds a sink to the config's)."""
    if not budgets and not horizons and not sinks and all(v is None for v in (n_trials, output, device, storage)):
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
    if sinks:
        raw["sinks"] = [*raw["sinks"], *(s for s in sinks if s not in raw["sinks"])]
    return structure(raw, f"{config.source} (with command-line overrides)", config.file_horizons)
