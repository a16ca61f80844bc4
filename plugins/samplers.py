"""Built-in samplers: ``tpe``, ``random``, ``gp``, ``cmaes``, ``qmc`` and ``skopt``.

Each factory takes the config's ``sampler_options`` mapping, passed to the sampler class as keyword
arguments, and the study seed. A key the sampler class does not take is refused with a
:class:`~archsearch.errors.PluginError` naming the sampler, the key and the accepted keys (read
from the class signature). ``seed`` is never an option: it comes from the study seed. Optuna,
scikit-optimize and cmaes are imported when a factory is called, never when plugins are listed.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from archsearch import hookimpl
from archsearch.errors import PluginError
from archsearch.registry import SamplerPlugin

if TYPE_CHECKING:
    import optuna

CMAES_MISSING = (
    "sampler 'cmaes' needs the 'cmaes' package, which is not installed in this environment. "
    "Install it with `pip install cmaes` (into the environment that runs archsearch), or choose "
    "another sampler: tpe, gp, qmc, random or skopt. Note that CMA-ES only models float and int "
    "parameters; categorical ones are sampled independently at random."
)


def accepted_options(cls: type) -> list[str]:
    """The keyword arguments of ``cls`` a config may set (everything but ``seed``)."""
    return sorted(
        name
        for name, p in inspect.signature(cls).parameters.items()
        if name != "seed" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


def check_options(sampler: str, cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as a dict, or a :class:`PluginError` naming the first key ``cls`` does not take."""
    accepted = accepted_options(cls)
    for key in options:
        if key == "seed":
            raise PluginError(
                f"sampler {sampler!r}: option 'seed' cannot be set in the sampler options; the "
                "sampler is seeded from the study's seed"
            )
        if key not in accepted:
            raise PluginError(
                f"sampler {sampler!r}: unknown option {key!r}; accepted options: "
                f"{', '.join(accepted) or 'none'}"
            )
    return dict(options)


def build(
    sampler: str,
    cls: type,
    options: Mapping[str, Any],
    seed: int | None,
    defaults: Mapping[str, Any] | None = None,
) -> optuna.samplers.BaseSampler:
    """``cls(**defaults, **options, seed=seed)``, with bad values reported as a PluginError."""
    kwargs = {**(defaults or {}), **check_options(sampler, cls, options), "seed": seed}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise PluginError(
            f"sampler {sampler!r}: invalid options {dict(options)!r}: {type(exc).__name__}: {exc}"
        ) from exc


def tpe(options: Mapping[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    """Multivariate TPE; the engine passes ``constant_liar`` (``sampler.constant_liar``, resolved by
    :meth:`archsearch.config.schema.SamplerConfig.factory_options`) unless the options set it."""
    import optuna

    return build("tpe", optuna.samplers.TPESampler, options, seed, {"multivariate": True})


def random_sampler(options: Mapping[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    return build("random", optuna.samplers.RandomSampler, options, seed)


def gp(options: Mapping[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    return build("gp", optuna.samplers.GPSampler, options, seed)


def cmaes(options: Mapping[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    check_options("cmaes", optuna.samplers.CmaEsSampler, options)
    if importlib.util.find_spec("cmaes") is None:
        raise PluginError(CMAES_MISSING)
    return build("cmaes", optuna.samplers.CmaEsSampler, options, seed)


def qmc(options: Mapping[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    with warnings.catch_warnings():
        # QMCSampler is still marked experimental in Optuna 5; choosing it in a config is consent.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return build("qmc", optuna.samplers.QMCSampler, options, seed, {"scramble": True})


def skopt(options: Mapping[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    from archsearch.plugins.skopt_sampler import SkoptSampler

    return build("skopt", SkoptSampler, options, seed)


@hookimpl
def archsearch_register_samplers() -> list[SamplerPlugin]:
    return [
        SamplerPlugin(
            "tpe",
            tpe,
            "Optuna's tree-structured Parzen estimator (multivariate by default; constant liar when "
            "workers share a study, see sampler.constant_liar); any TPESampler option",
        ),
        SamplerPlugin("random", random_sampler, "independent uniform random sampling (no options)"),
        SamplerPlugin(
            "gp",
            gp,
            "Optuna's Gaussian-process Bayesian optimisation (GPSampler; uses torch and scipy)",
        ),
        SamplerPlugin(
            "cmaes",
            cmaes,
            "Optuna's CMA-ES (CmaEsSampler); needs `pip install cmaes`; categoricals sampled at random",
        ),
        SamplerPlugin(
            "qmc",
            qmc,
            "quasi-Monte Carlo (QMCSampler, scrambled Sobol by default): even coverage, no model",
        ),
        SamplerPlugin(
            "skopt",
            skopt,
            "scikit-optimize Bayesian optimisation (base_estimator GP, RF or ET), rebuilt per trial",
        ),
    ]
