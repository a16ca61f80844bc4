"""The ``estimator`` suite: the closed-form estimator against building the model on the ``meta``
device and counting, over the default space's bands at 2M, 20M, 200M and 2B; and the time to
enumerate and filter the default grid for all four budgets."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from statistics import median

from archsearch.architecture import ModelSpec
from archsearch.space.grid import DEFAULT_SPACE, filter_by_budget, generate_architecture_grid

BUDGETS = (2_000_000, 20_000_000, 200_000_000, 2_000_000_000)


def suite(quick: bool) -> dict:
    from archsearch.plugin.manager import get_plugin_manager

    plugins = get_plugin_manager(autoload=False)
    spec = ModelSpec()
    rows = []
    grid_ms = []
    for variant in ("patchtst", "patchtst-ci"):
        estimate = plugins.variant(variant).estimate
        build = plugins.variant(variant).build
        # Enumerate + filter the whole default grid for the four budgets, best of 7.
        times = []
        for _ in range(7):
            start = time.perf_counter()
            grid = generate_architecture_grid(DEFAULT_SPACE, spec, estimate)
            bands = [filter_by_budget(grid, b, 0.25) for b in BUDGETS]
            times.append(time.perf_counter() - start)
        grid_ms.append({"variant": variant, "grid_size": len(grid), "enumerate_filter_ms": min(times) * 1e3})
        archs = [a for band in bands for a in band]
        if quick:
            archs = random.Random(0).sample(archs, 16)
        rows.append(
            {"variant": variant, "architectures": len(archs), **_time_counts(archs, spec, estimate, build)}
        )
    lines = [
        "| variant | architectures | estimator (median) | meta build + count (median) | speedup | mismatches |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['variant']} | {r['architectures']} | {r['estimator_us']:.1f} µs | {r['meta_build_ms']:.1f} ms "
            f"| {r['speedup']:,.0f}x | {r['mismatches']} |"
            for r in rows
        ),
        "",
        "| variant | grid size | enumerate + filter, 4 budgets (best of 7) |",
        "| --- | --- | --- |",
        *(f"| {g['variant']} | {g['grid_size']} | {g['enumerate_filter_ms']:.2f} ms |" for g in grid_ms),
        "",
        "Targets: >= 1000x faster, 0 mismatches; enumerating and filtering < 50 ms.",
    ]
    return {"rows": rows, "grid": grid_ms, "markdown": "\n".join(lines), "plots": {}}


def _time_counts(archs: list, spec: ModelSpec, estimate: Callable, build: Callable) -> dict:
    """The estimator's median time per call against building on ``meta`` and counting."""
    import torch

    est_s, meta_s, mismatches = [], [], 0
    for arch in archs:
        start = time.perf_counter()
        for _ in range(100):
            count = estimate(arch, spec)
        est_s.append((time.perf_counter() - start) / 100)
        start = time.perf_counter()
        with torch.device("meta"):
            model = build(arch, spec)
        built = sum(p.numel() for p in model.parameters())
        meta_s.append(time.perf_counter() - start)
        mismatches += built != count
    return {
        "estimator_us": median(est_s) * 1e6,
        "meta_build_ms": median(meta_s) * 1e3,
        "speedup": median(meta_s) / median(est_s),
        "mismatches": mismatches,
    }
