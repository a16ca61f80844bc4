"""Commands import only what they use: ``plan`` answers without torch (window counts need no
tensors), ``status`` and ``export`` without pandas; the torch-free data description agrees with
the prepared data and rejects the same data with the same words."""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from engine_helpers import REPO

from archsearch.data.shape import describe
from archsearch.data.sources import DataConfig, LoadedFrame, load_frame
from archsearch.data.splits import SplitConfig
from archsearch.data.tasks import TaskConfig
from archsearch.data.windows import prepare
from archsearch.errors import DataError

#: Runs the command in this fresh interpreter, then prints which heavy modules it imported.
PROBE = (
    "import sys\nfrom archsearch.cli import main\ncode = main(sys.argv[1:])\nassert code == 0, code\n"
    "print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))\n"
)


def imported(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_plan_imports_no_torch():
    assert "torch" not in imported("plan", "configs/quickstart.yaml")


def test_status_and_export_import_neither_torch_nor_pandas(tmp_path):
    from archsearch.bench.readside import build_study

    config = build_study(tmp_path / "study", 30)
    for command in ("status", "export"):
        assert imported(command, str(config)) == [], command


CASES = [
    (TaskConfig(kind="threshold", threshold=0.01), SplitConfig(), 3, 20),
    (TaskConfig(kind="forecast"), SplitConfig(context_from_previous=True), 4, 16),
    (TaskConfig(kind="forecast", targets=("close", "open")), SplitConfig(fractions=(0.6, 0.2, 0.2)), 2, 10),
]


@pytest.mark.parametrize(("task", "split", "horizon", "context"), CASES)
def test_describe_agrees_with_prepare(task, split, horizon, context):
    frame = load_frame(DataConfig(synthetic_rows=400, synthetic_features=8))
    shape, data = (
        describe(frame, task, split, horizon, context),
        prepare(frame, task, split, horizon, context),
    )
    assert shape.split_info == data.split_info
    for name in ("num_features", "head", "n_outputs", "n_targets", "target_channels", "context_length"):
        assert getattr(shape, name) == getattr(data, name), name
    for split_name in ("train", "val", "test"):
        assert shape.n_windows(split_name) == data.n_windows(split_name) > 0
        assert np.array_equal(shape.ends[split_name], data.ends[split_name].numpy())


def _frame(close: list[float]) -> LoadedFrame:
    values = pd.DataFrame({"close": close, "x": np.arange(len(close), dtype=float)})
    return LoadedFrame(values, None, "test data", 0, ("close", "x"), "close")


@pytest.mark.parametrize(
    ("close", "horizon", "context", "words"),
    [
        ([1.0] * 30, 5, 10, "too few rows"),
        ([1.0] * 80 + [-1.0] + [1.0] * 19, 2, 5, "needs a positive target"),
    ],
)
def test_describe_rejects_what_prepare_rejects(close, horizon, context, words):
    """``plan`` must not show a matrix that ``run`` would refuse: the same error, word for word."""
    frame, task = _frame(close), TaskConfig(kind="threshold", threshold=0.01)
    with pytest.raises(DataError, match=words) as described:
        describe(frame, task, SplitConfig(), horizon, context)
    with pytest.raises(DataError) as prepared:
        prepare(frame, task, SplitConfig(), horizon, context)
    assert str(described.value) == str(prepared.value)
