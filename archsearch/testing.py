"""Contract checks for plugins, shipped with archsearch so that an installed plugin can run in its
own tests exactly what the engine checks (see docs/plugins.md)::

    from archsearch.testing import check_generator, check_model_variant, check_sampler

    def test_my_plugin():
        check_model_variant("my-model", plugin_modules=["my_plugin"])
        check_sampler("my-sampler", plugin_modules=["my_plugin"])

Each raises :class:`~archsearch.errors.PluginError` (or ``AssertionError`` for a sampler that is
not reproducible) with the same message a run would give, and returns None when the plugin keeps
its contract. Small models on synthetic data: each takes about a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from archsearch.architecture import Architecture
from archsearch.plugin.contracts import CheckedSampler, calling, check_architectures, check_model

#: Small architectures that every variant should build (heads divide the widths).
SMALL_ARCHITECTURES = (Architecture(8, 1, 2, 16), Architecture(16, 2, 4, 64), Architecture(24, 3, 2, 48))


def _plugins(plugin_modules: Iterable[str]) -> Any:
    from archsearch.plugin.manager import get_plugin_manager

    return get_plugin_manager(list(plugin_modules))


def _tasks() -> list[tuple[Any, Any]]:
    """Prepared synthetic data for a threshold task and a two-channel forecast, with their specs."""
    from archsearch.data.sources import DataConfig, load_frame
    from archsearch.data.splits import SplitConfig
    from archsearch.data.tasks import TaskConfig
    from archsearch.data.windows import prepare

    frame = load_frame(DataConfig(synthetic_rows=400, synthetic_features=5))
    out = []
    for task in (TaskConfig(kind="threshold"), TaskConfig(kind="forecast", targets=("close", "open"))):
        data = prepare(frame, task, SplitConfig(), 4, 20)
        out.append((data, data.model_spec(patch_len=5, stride=5)))
    return out


def check_model_variant(
    name: str, plugin_modules: Iterable[str] = (), architectures: Sequence[Architecture] = SMALL_ARCHITECTURES
) -> None:
    """The variant's estimate equals its built model's parameter count, and the model's output
    has the labels' shape, for a classification and a forecast head."""
    plugins = _plugins(plugin_modules)
    variant, label = plugins.variant(name), plugins.label("estimator", name)
    for data, spec in _tasks():
        for arch in architectures:
            with calling(label, f"estimating {arch.key}"):
                counted = Architecture(
                    arch.d_model, arch.n_layers, arch.n_heads, arch.d_ff, variant.estimate(arch, spec)
                )
            with calling(label, f"building {arch.key}"):
                model = variant.build(counted, spec)
            check_model(model, counted, data, label)


def check_generator(
    name: str,
    plugin_modules: Iterable[str] = (),
    budgets: Sequence[int] = (2_000_000, 20_000_000),
    variant: str = "patchtst",
) -> None:
    """The generator's architectures for each budget: non-empty, valid, counted and in the band."""
    from archsearch.architecture import ModelSpec
    from archsearch.plugin.registry import GridRequest
    from archsearch.space.grid import DEFAULT_SPACE

    plugins = _plugins(plugin_modules)
    generate, label = plugins.generator(name).generate, plugins.label("generator", name)
    for budget in budgets:
        request = GridRequest(
            budget, DEFAULT_SPACE, ModelSpec(), variant, 0.25, plugins.variant(variant).estimate
        )
        with calling(label, f"generating architectures for budget {budget:,}"):
            archs = generate(request)
        check_architectures(archs, request, label)


def check_sampler(name: str, plugin_modules: Iterable[str] = (), n_trials: int = 12, seed: int = 3) -> None:
    """The sampler repeats itself with a seed, stays inside the distributions, and copes with
    failed, pruned and queued trials."""
    import optuna

    plugins = _plugins(plugin_modules)
    factory, label = plugins.sampler(name).factory, plugins.label("sampler", name)
    runs = []
    for _ in range(2):
        with calling(label, f"building sampler {name!r}"):
            sampler = CheckedSampler(factory({}, seed), label)
        study = optuna.create_study(sampler=sampler)
        study.enqueue_trial({"lr": 1e-3, "layers": 2, "norm": "layer"})
        for i in range(n_trials):
            trial = study.ask()
            p = {
                "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
                "layers": trial.suggest_int("layers", 1, 6),
                "norm": trial.suggest_categorical("norm", ["layer", "batch"]),
            }
            if not (1e-5 <= p["lr"] <= 1e-1 and 1 <= p["layers"] <= 6 and p["norm"] in ("layer", "batch")):
                raise AssertionError(f"{label} suggested {p}, outside the distributions it was given")
            state = (
                (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)[i % 2] if i % 5 == 4 else None
            )
            if state is None:
                study.tell(trial, abs(p["layers"] - 3) + abs(p["lr"] - 1e-3))
            else:
                study.tell(trial, state=state)
        runs.append([t.params for t in study.trials])
    if runs[0] != runs[1]:
        raise AssertionError(f"{label}: two studies with seed {seed} suggested different parameters")
