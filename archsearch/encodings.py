"""How a trial's architecture is expressed as Optuna parameters.

An encoding maps a budget's architecture list onto parameters whose distributions never change
for that list, so Optuna's search space stays fixed across trials and resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from archsearch.architecture import Architecture


class Encoding(Protocol):
    name: str

    def suggest(self, trial: Any) -> Architecture: ...

    def params(self, arch: Architecture) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...


class IndexEncoding:
    """The plan's encoding: one categorical parameter ``architecture`` over the list's keys
    (``d128-L8-h2-ff512``). Samplers learn nothing that carries to neighbouring shapes."""

    name = "index"
    PARAM = "architecture"

    def __init__(self, architectures: Sequence[Architecture]) -> None:
        self.by_key = {a.key: a for a in architectures}

    def suggest(self, trial: Any) -> Architecture:
        return self.by_key[trial.suggest_categorical(self.PARAM, list(self.by_key))]

    def params(self, arch: Architecture) -> dict[str, Any]:
        return {self.PARAM: arch.key}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "architectures": list(self.by_key)}


ENCODINGS = {"index": IndexEncoding}


def make_encoding(name: str, architectures: Sequence[Architecture]) -> Encoding:
    return ENCODINGS[name](architectures)
