"""The files beside the storage are verifiably the storage's (issue 19, items 2 and 7): every row
and best JSON carries its study's identity; a torn, truncated, garbage or foreign CSV is rebuilt
on start, with one warning naming it; a full disk never tears a row; a finished run's CSV is what
``export`` writes, row for row, failed trials included (those the heartbeat watch failed too)."""

from __future__ import annotations

import errno
import json
import pathlib
import shutil

import optuna
import pytest
from engine_helpers import read_csv, write_config

from archsearch.cli import main
from archsearch.errors import TrialFailed
from archsearch.outputs import CSV_NAME, read_results

STUDY = "tiny_8K_h2"


def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'out' / 'archsearch.db'}"


def load(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=db_url(tmp_path))


def run(path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["run", str(path), "--no-progress", *extra])
    return code, capsys.readouterr().err


def keyed(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(rows, key=lambda r: (r["study_name"], int(r["trial"])))


def csv_equals_export(tmp_path, path, capsys) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The run's CSV and what ``export`` writes from the storage, each keyed by (study, trial)."""
    csv_path = tmp_path / "out" / CSV_NAME
    ran = csv_path.read_text()
    assert main(["export", str(path)]) == 0
    capsys.readouterr()
    exported = csv_path.read_text()
    assert ran.splitlines()[0] == exported.splitlines()[0], "the same columns"
    csv_path.write_text(ran)
    return keyed(read_csv(csv_path)), keyed(read_csv_text(tmp_path, exported))


def read_csv_text(tmp_path, text: str) -> list[dict[str, str]]:
    other = tmp_path / "exported.csv"
    other.write_text(text)
    return read_csv(other)


# -- a finished run's CSV is export's --------------------------------------------------------------
def test_a_finished_runs_csv_is_exports_row_for_row_failed_trials_included(tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path, n_trials=2)
    assert run(path, capsys)[0] == 0
    # A trial claimed by a worker elsewhere that then went silent: the watch fails it in this run.
    study = load(tmp_path)
    stalled = study._storage.create_new_trial(study._study_id)
    study._storage.set_trial_user_attr(stalled, "setup", {"worker": "elsewhere:1"})
    from archsearch.training.trainer import train

    calls = []

    def sometimes_failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise TrialFailed("simulated: the loss went to nan")
        return train(*args, **kwargs)

    monkeypatch.setattr("archsearch.search.engine._train", sometimes_failing)
    path = write_config(tmp_path, n_trials=8, workers={"heartbeat_interval": 0.2, "grace_period": 0.5})
    code, err = run(path, capsys)
    assert code == 0, err
    assert "no heartbeat from worker elsewhere:1" in err
    ran, exported = csv_equals_export(tmp_path, path, capsys)
    assert ran == exported
    states = [r["state"] for r in ran]
    assert states.count("FAIL") == 2 and states.count("COMPLETE") == 8
    number = next(t.number for t in load(tmp_path).trials if t._trial_id == stalled)
    watched = next(r for r in ran if int(r["trial"]) == number)
    assert watched["state"] == "FAIL" and watched["fail_reason"].startswith(
        "no heartbeat from worker elsewhere:1"
    )
    uid = load(tmp_path).user_attrs["archsearch_uid"]
    assert {r["study_uid"] for r in ran} == {uid}
    assert json.loads((tmp_path / "out" / "tiny_8K_best.json").read_text())["study_uid"] == uid


# -- torn, truncated, garbage -----------------------------------------------------------------------
def _cut_mid_row(text: str) -> str:
    return text[: len(text) - 40]


def _cut_mid_header(text: str) -> str:
    return text[:30]


def _garbage(text: str) -> str:
    return text[:200] + "\x00\x00\x00\xff garbage \x00" + text[200:]


@pytest.mark.parametrize("damage", [_cut_mid_row, _cut_mid_header, _garbage])
def test_a_torn_csv_is_rebuilt_from_the_storage_on_start(tmp_path, capsys, damage):
    path = write_config(tmp_path, n_trials=3)
    assert run(path, capsys)[0] == 0
    csv_path = tmp_path / "out" / CSV_NAME
    whole = csv_path.read_text()
    csv_path.write_text(damage(whole))
    code, err = run(path, capsys, "--n-trials", "4")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "rebuilt from the storage" in line]
    assert len(warnings) == 1 and str(csv_path) in warnings[0], err
    state = read_results(csv_path)
    assert state is not None and state.problem is None
    ran, exported = csv_equals_export(tmp_path, path, capsys)
    assert ran == exported and len(ran) == 4


# -- foreign ------------------------------------------------------------------------------------------
def test_a_csv_of_a_deleted_storage_is_replaced_by_the_new_ones_rows(tmp_path, capsys):
    path = write_config(tmp_path, n_trials=3)
    assert run(path, capsys)[0] == 0
    old_rows = read_csv(tmp_path / "out" / CSV_NAME)
    (tmp_path / "out" / "archsearch.db").unlink()  # the database deleted, the run repeated
    code, err = run(path, capsys)
    assert code == 0, err
    assert sum("rebuilt from the storage" in line and CSV_NAME in line for line in err.splitlines()) == 1
    rows = read_csv(tmp_path / "out" / CSV_NAME)
    uid = load(tmp_path).user_attrs["archsearch_uid"]
    assert len(rows) == 3 and {r["study_uid"] for r in rows} == {uid} != {r["study_uid"] for r in old_rows}
    assert {r["val_loss"] for r in rows} == {
        str(t.value) for t in load(tmp_path).trials if t.value is not None
    }


def test_rows_of_another_experiment_sharing_the_output_are_kept(tmp_path, capsys):
    path = write_config(tmp_path, n_trials=2)
    assert run(path, capsys)[0] == 0
    other = write_config(tmp_path, "other.yaml", experiment="other", n_trials=2)
    assert run(other, capsys)[0] == 0
    csv_path = tmp_path / "out" / CSV_NAME
    csv_path.write_text(_cut_mid_row(csv_path.read_text()))  # the last row is other's
    code, err = run(path, capsys)
    assert code == 0 and "rebuilt from the storage" in err
    rows = read_csv(csv_path)
    assert sorted(r["experiment"] for r in rows) == ["other", "tiny", "tiny"]


# -- a full disk ----------------------------------------------------------------------------------------
class FullDisk:
    """A file whose ``n``-th write (counting all such files) writes half its data, then fails."""

    count = 0

    def __init__(self, real, fail_at: int) -> None:
        self.real, self.fail_at = real, fail_at

    def write(self, data):
        FullDisk.count += 1
        if FullDisk.count == self.fail_at:
            self.real.write(data[: len(data) // 2])
            self.real.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_full_disk_never_tears_a_row_nor_loses_a_trial_and_the_next_start_repairs(
    tmp_path, capsys, monkeypatch
):
    path = write_config(tmp_path, n_trials=5)
    real_open = pathlib.Path.open
    FullDisk.count = 0

    def open_(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        if self.name == CSV_NAME and "a" in mode:  # a row appended
            return FullDisk(f, fail_at=3)
        return f

    monkeypatch.setattr(pathlib.Path, "open", open_)
    code, err = run(path, capsys)
    monkeypatch.undo()
    assert code == 0, err
    assert "No space left on device" in err and "sink 'csv' failed" in err
    csv_path = tmp_path / "out" / CSV_NAME
    state = read_results(csv_path)
    assert state is not None and state.problem is None, "no torn row"
    assert len(state.rows) == 2
    assert sum(t.state.name == "COMPLETE" for t in load(tmp_path).trials) == 5, (
        "every trial is in the storage"
    )
    shutil.copy(csv_path, tmp_path / "after_full_disk.csv")
    assert run(path, capsys)[0] == 0  # the next start
    ran, exported = csv_equals_export(tmp_path, path, capsys)
    assert ran == exported and len(ran) == 5
