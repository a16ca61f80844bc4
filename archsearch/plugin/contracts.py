"""What the engine checks of every plugin it calls, so that a plugin's mistake is a clear error
naming the plugin, never a traceback nor a result that only looks valid.

- A generator's architectures: at least one, heads that divide the width, each carrying the
  variant's estimated count, each inside the budget's band (:func:`check_architectures`).
- A variant's first build of each architecture: the built model's parameters equal the estimate,
  and its output has the shape the task's labels have (:func:`check_model`).
- Any plugin's exception (a sampler, a factory, a generator, a variant) is reported as
  ``plugin 'P' (distribution D V) failed while <what>: <reason>`` (:func:`calling`,
  :class:`CheckedSampler`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import optuna

from archsearch.architecture import Architecture
from archsearch.errors import ArchsearchError, PluginError

if TYPE_CHECKING:
    from archsearch.plugin.registry import GridRequest

#: Exceptions that are not a plugin's mistake: archsearch's own control flow.
PASS_THROUGH: tuple[type[BaseException], ...] = (ArchsearchError, optuna.TrialPruned, KeyboardInterrupt)


@contextlib.contextmanager
def calling(label: str, what: str) -> Iterator[None]:
    """Run a plugin call; its exception becomes :class:`PluginError` ``{label} failed while {what}``."""
    try:
        yield
    except PASS_THROUGH:
        raise
    except Exception as exc:
        raise PluginError(f"{label} failed while {what}: {type(exc).__name__}: {exc}") from exc


def check_architectures(archs: Any, request: GridRequest, label: str) -> list[Architecture]:
    """The generator's answer for ``request``, checked (see the module docstring)."""
    where = f"for budget {request.budget:,} (variant {request.variant})"
    if not isinstance(archs, Sequence) or not archs:
        raise PluginError(f"{label} returned no architectures {where}: expected a non-empty list")
    low, high = request.budget * (1 - request.tolerance), request.budget * (1 + request.tolerance)
    for arch in archs:
        if not isinstance(arch, Architecture):
            raise PluginError(f"{label} returned {arch!r} {where}: expected archsearch.Architecture values")
        if arch.d_model % arch.n_heads:
            raise PluginError(f"{label} returned {arch.key} {where}: n_heads must divide d_model")
        expected = request.estimate(arch, request.spec)
        if arch.param_count != expected:
            raise PluginError(
                f"{label} returned {arch.key} {where} with param_count {arch.param_count:,}, but the variant's "
                f"estimator counts {expected:,}: a generator sets param_count = request.estimate(arch, request.spec)"
            )
        if not low <= arch.param_count <= high:
            raise PluginError(
                f"{label} returned {arch.key} {where} with {arch.param_count:,} parameters, outside the band "
                f"{int(low):,}..{int(high):,} (±{request.tolerance:.0%})"
            )
    return list(archs)


def check_model(model: Any, arch: Architecture, data: Any, label: str) -> None:
    """A variant's first build of ``arch``: its parameters equal the estimate, and its output for
    two training windows has the labels' shape. Anything that is not a torch module (a benchmark's
    null builder) is not checked."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return
    built = sum(p.numel() for p in model.parameters())
    if built != arch.param_count:
        raise PluginError(
            f"{label} built {arch.key} with {built:,} parameters, but its estimator counts "
            f"{arch.param_count:,}: estimate(arch, spec) must equal the built model's parameter count"
        )
    x, y = data.batch("train", torch.arange(min(2, data.n_windows("train"))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), calling(label, f"running {arch.key} on a batch of {x.shape[0]}"):
            out = model(x)
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(y.shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(
            f"{label} built {arch.key}, whose output for inputs {tuple(x.shape)} is {got}; the task needs "
            f"{tuple(y.shape)} (see docs/plugins.md, the output-shape contract)"
        )


class CheckedSampler(optuna.samplers.BaseSampler):
    """A sampler plugin's sampler, whose exceptions name the plugin (:func:`calling`)."""

    def __init__(self, inner: optuna.samplers.BaseSampler, label: str) -> None:
        self.inner = inner
        self.label = label

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        with calling(self.label, "inferring the relative search space"):
            return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        with calling(self.label, "sampling"):
            return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        with calling(self.label, f"sampling {param_name}"):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        with calling(self.label, "preparing a trial"):
            self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        with calling(self.label, "finishing a trial"):
            self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
