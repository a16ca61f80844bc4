"""``python -m archsearch bench``: the benchmark suites, each writing JSON, Markdown and PNG plots.

Figures are ratios measured in the same run on the same machine; absolute times are context.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUITES: dict[str, str] = {
    "estimator": "archsearch.bench.estimator",
    "overhead": "archsearch.bench.overhead",
    "samplers": "archsearch.bench.optima",
    "architectures": "archsearch.bench.tabular",
    "training": "archsearch.bench.training",
    "distributed": "archsearch.bench.distributed",
    "readside": "archsearch.bench.readside",
}


def machine() -> dict[str, Any]:
    import os

    import optuna
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_suites(
    names: list[str], quick: bool, output: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run each suite, write ``{suite}.json``, ``{suite}.md`` and its PNGs into ``output``."""
    import importlib

    output.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        module = importlib.import_module(SUITES[name])
        log(f"== {name}{' (quick)' if quick else ''}")
        start = time.perf_counter()
        result = module.suite(quick)
        seconds = time.perf_counter() - start
        plots = result.pop("plots", {})
        for file, figure in plots.items():
            figure.savefig(output / file, dpi=110, bbox_inches="tight")
        doc = {"suite": name, "quick": quick, "seconds": round(seconds, 1), "machine": machine(), **result}
        (output / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        text = f"## {name}\n\n{result['markdown']}\n\n({seconds:.0f} s{', --quick' if quick else ''})\n"
        if plots:
            text += "\n" + "\n".join(f"![{file}]({file})" for file in plots) + "\n"
        (output / f"{name}.md").write_text(text)
        log(text)
        results[name] = doc
    return results
