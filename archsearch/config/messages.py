"""Turning cattrs' exception groups into one line per problem: ``path: what was wrong``."""

from __future__ import annotations

import difflib
import re
from typing import Any

import attrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from archsearch.errors import BudgetError


def _child_path(path: str, note: str) -> str:
    # cattrs notes read "Structuring class X @ attribute name", "Structuring mapping value @ key 'k'",
    # "Structuring typing.List[int] @ index 3".
    if "@ attribute " in note:
        return _join(path, note.rsplit("@ attribute ", 1)[1])
    if "@ key " in note:
        return _join(path, note.rsplit("@ key ", 1)[1].strip("'\""))
    if "@ index " in note:
        return f"{path}[{note.rsplit('@ index ', 1)[1]}]"
    return path


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _field_names(cls: type) -> list[str]:
    return [f.alias or f.name for f in attrs.fields(cls) if f.init] if attrs.has(cls) else []


def unknown_key_message(path: str, key: str, valid: list[str]) -> str:
    where = _join(path, key)
    close = (
        difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        or [
            v
            for v in valid
            if "".join(part[:1] for part in v.split("_")) == key.lower() or v.startswith(key.lower())
        ][:1]
    )
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown key{hint} (valid keys here: {', '.join(sorted(valid))})"


def describe(exc: BaseException, path: str = "") -> list[str]:
    """Every problem in a cattrs exception tree, as ``path: message`` lines."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        lines = []
        for sub in exc.exceptions:
            notes = getattr(sub, "__notes__", None) or []
            child = _child_path(path, str(notes[-1])) if notes else path
            lines += describe(sub, child)
        return lines
    if isinstance(exc, ForbiddenExtraKeysError):
        valid = _field_names(exc.cl)
        return [unknown_key_message(path, key, valid) for key in sorted(exc.extra_fields)]
    if isinstance(exc, KeyError):
        key = str(exc.args[0])
        where = path if path.rsplit(".", 1)[-1] == key else _join(path, key)  # cattrs notes name it too
        return [f"{where}: required key is missing"]
    text = str(exc)
    literal = re.fullmatch(r"(.*) not in literal typing\.Literal\[(.*)\]", text, re.S)
    if literal:
        return [f"{path or 'top level'}: expected one of {literal[2]}, got {literal[1]!r}"]
    count = re.fullmatch(r"(Not enough|Too many) values in (.*) to structure as tuple\[(.*)\]", text, re.S)
    if count:
        n = len(count[3].split(","))
        return [f"{path or 'top level'}: expected a list of {n} values, got {count[2]}"]
    named = re.fullmatch(r"([a-z][a-z_]*) ((?:must|lists) .*)", text, re.S)
    if named and path and isinstance(exc, ValueError):  # a validator naming its own field
        return [f"{_join(path, named[1])}: {named[2]}"]
    if isinstance(exc, BudgetError | ValueError | TypeError):
        return [f"{path or 'top level'}: {exc}"]
    return [f"{path or 'top level'}: {type(exc).__name__}: {exc}"]


def describe_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
