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


class StructuredEncoding:
    """Ordered coordinates: ``arch_width`` and ``arch_depth`` (integer positions among the list's
    distinct widths and depths, so neighbours are near), ``arch_ratio`` (d_ff / d_model) and
    ``arch_heads`` (each only when the list has more than one value). A suggested point maps to
    the list member nearest to it (squared distance in positions; a different ratio counts 0.5,
    different heads 0.25; ties go to the smaller count), so every point is a valid architecture
    and every member is reachable: its own coordinates map back to it."""

    name = "structured"

    def __init__(self, architectures: Sequence[Architecture]) -> None:
        self.architectures = list(architectures)
        self.widths = sorted({a.d_model for a in architectures})
        self.depths = sorted({a.n_layers for a in architectures})
        self.ratios = sorted({a.d_ff // a.d_model for a in architectures})
        self.heads = sorted({a.n_heads for a in architectures})

    def _coordinates(self, arch: Architecture) -> tuple[int, int, int, int]:
        return (
            self.widths.index(arch.d_model),
            self.depths.index(arch.n_layers),
            arch.d_ff // arch.d_model,
            arch.n_heads,
        )

    def nearest(self, width: int, depth: int, ratio: int, heads: int) -> Architecture:
        def distance(a: Architecture) -> tuple[float, int]:
            w, d, r, h = self._coordinates(a)
            return (
                (w - width) ** 2 + (d - depth) ** 2 + 0.5 * (r != ratio) + 0.25 * (h != heads),
                a.param_count,
            )

        return min(self.architectures, key=distance)

    def suggest(self, trial: Any) -> Architecture:
        width = trial.suggest_int("arch_width", 0, len(self.widths) - 1) if len(self.widths) > 1 else 0
        depth = trial.suggest_int("arch_depth", 0, len(self.depths) - 1) if len(self.depths) > 1 else 0
        ratio = (
            trial.suggest_categorical("arch_ratio", self.ratios) if len(self.ratios) > 1 else self.ratios[0]
        )
        heads = trial.suggest_categorical("arch_heads", self.heads) if len(self.heads) > 1 else self.heads[0]
        return self.nearest(width, depth, ratio, heads)

    def params(self, arch: Architecture) -> dict[str, Any]:
        w, d, r, h = self._coordinates(arch)
        out: dict[str, Any] = {}
        if len(self.widths) > 1:
            out["arch_width"] = w
        if len(self.depths) > 1:
            out["arch_depth"] = d
        if len(self.ratios) > 1:
            out["arch_ratio"] = r
        if len(self.heads) > 1:
            out["arch_heads"] = h
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "architectures": [a.key for a in self.architectures]}


ENCODINGS = {"index": IndexEncoding, "structured": StructuredEncoding}


def make_encoding(name: str, architectures: Sequence[Architecture]) -> Encoding:
    return ENCODINGS[name](architectures)
