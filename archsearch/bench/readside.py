"""The ``readside`` suite: ``status``, ``export`` and ``report`` on a study of 500 and of 5,000
finished trials (SQLite), and the start-up of ``plan``, ``grid`` and ``plugins``, each timed as
the command a user runs (a fresh ``python -m archsearch`` process, imports included).

A study is built quickly in the archsearch format: the engine runs a few null-objective trials
(so every attribute is exactly what the engine writes), then the rows of those trials in every
trial table are copied, with fresh trial numbers and values, in one transaction until the study
holds the number of trials asked for.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import yaml

from archsearch.bench.overhead import null_config

#: Trials the engine itself runs; the rest are copies of them.
TEMPLATE_TRIALS = 20
SIZES = (500, 5000)
#: Commands run on each study, and their targets at 5,000 trials (seconds, or times the 500-trial time).
TARGETS = {"status": ("s", 2.0), "export": ("x", 2.0), "report": ("x", 2.0)}
#: The start-up commands; ``plan`` of the quickstart config has a target of 2 s.
PLAN_TARGET_S = 2.0
_PROBE = (
    "import sys\nfrom archsearch.cli import main\ncode = main(sys.argv[1:])\n"
    "print('\\nIMPORTED:' + ','.join(m for m in ('torch', 'pandas') if m in sys.modules))\n"
    "raise SystemExit(code)\n"
)


def raw_config(output: Path, n_trials: int) -> dict[str, Any]:
    """One cell (2M, horizon 1) on synthetic data, TPE, the csv and json sinks."""
    return null_config("readside", n_trials, output)


def build_study(root: Path, n_trials: int, seed: int = 0) -> Path:
    """A config file under ``root`` whose SQLite storage holds one cell of ``n_trials`` finished
    trials in the archsearch format; returns the config's path."""
    import optuna
    from optuna.trial import TrialState

    from archsearch.bench.overhead import null_train
    from archsearch.config import load_config
    from archsearch.search.engine import Engine

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "readside.yaml"
    engine_trials = min(n_trials, TEMPLATE_TRIALS)
    while True:  # until the coverage queue is used up: a finished study has no waiting trial
        path.write_text(yaml.safe_dump(raw_config(root / "out", engine_trials)))
        config = load_config(path)
        Engine(config, train_fn=null_train, build_fn=lambda arch, spec: arch.key).run()
        waiting = sum(
            len(
                optuna.load_study(study_name=s, storage=config.storage_url).get_trials(
                    states=(TrialState.WAITING,)
                )
            )
            for s in (config.study_name(b, h) for b in config.budgets for h in config.horizons)
        )
        if not waiting:
            break
        engine_trials += waiting
    path.write_text(yaml.safe_dump(raw_config(root / "out", n_trials)))
    config = load_config(path)
    for budget in config.budgets:
        for horizon in config.horizons:
            copy_trials(config.storage_url, config.study_name(budget, horizon), n_trials, seed)
    return path


def copy_trials(url: str, study_name: str, total: int, seed: int = 0) -> int:
    """Copy the study's complete search trials (their rows in every table keyed by ``trial_id``)
    until it holds ``total`` of them, each copy with the next number and a new value, in one
    transaction; confirmation trials and given-back claims stay as the engine left them. Returns
    how many were added."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    studies, trials = meta.tables["studies"], meta.tables["trials"]
    children = [t for t in meta.tables.values() if "trial_id" in t.c and t.name != "trials"]
    with engine.begin() as conn:
        sid = conn.execute(
            sa.select(studies.c.study_id).where(studies.c.study_name == study_name)
        ).scalar_one()
        count = conn.execute(sa.select(sa.func.count()).select_from(trials).where(trials.c.study_id == sid))
        numbered = count.scalar_one()
        templates = _search_trials(conn, meta, sid)
        if len(templates) >= total or not templates:
            return 0
        ids = [t["trial_id"] for t in templates]
        rows: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for child in children:
            by_trial = rows.setdefault(child.name, {i: [] for i in ids})
            for r in conn.execute(sa.select(child).where(child.c.trial_id.in_(ids))).mappings():
                by_trial[r["trial_id"]].append(dict(r))
        first_id = conn.execute(sa.select(sa.func.max(trials.c.trial_id))).scalar_one() + 1
        added = total - len(templates)
        rng = random.Random(seed)
        new_trials: list[dict[str, Any]] = []
        new_rows: dict[str, list[dict[str, Any]]] = {child.name: [] for child in children}
        for i in range(added):
            template = templates[i % len(templates)]
            new_trials.append({**template, "trial_id": first_id + i, "number": numbered + i})
            for child in children:
                (key,) = [c.name for c in child.primary_key.columns]
                for r in rows[child.name][template["trial_id"]]:
                    row = {k: v for k, v in r.items() if k != key} | {"trial_id": first_id + i}
                    if child.name == "trial_values":
                        row["value"] = rng.uniform(0.5, 1.5)
                    new_rows[child.name].append(row)
        conn.execute(trials.insert(), new_trials)
        for child in children:
            if new_rows[child.name]:
                conn.execute(child.insert(), new_rows[child.name])
    engine.dispose()
    return added


def _search_trials(conn: Any, meta: Any, study_id: int) -> list[dict[str, Any]]:
    """The study's complete trials that are neither confirmation trials nor given-back claims."""
    import json

    import sqlalchemy as sa

    from archsearch.records import CONFIRM, STAGE, SURPLUS

    trials, attrs = meta.tables["trials"], meta.tables["trial_user_attributes"]
    marks = conn.execute(
        sa.select(attrs.c.trial_id, attrs.c.key, attrs.c.value_json)
        .join(trials, trials.c.trial_id == attrs.c.trial_id)
        .where(trials.c.study_id == study_id, attrs.c.key.in_((STAGE, SURPLUS)))
    )
    apart = {i for i, key, raw in marks if (json.loads(raw) == CONFIRM if key == STAGE else json.loads(raw))}
    complete = sa.select(trials).where(trials.c.study_id == study_id, trials.c.state == "COMPLETE")
    return [
        dict(r)
        for r in conn.execute(complete.order_by(trials.c.number)).mappings()
        if r["trial_id"] not in apart
    ]


def timed(args: list[str], cwd: Path | None = None) -> tuple[float, str]:
    """Run ``python -m archsearch ARGS`` in a fresh process: its wall time and the heavy modules it
    imported (torch, pandas)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"archsearch {' '.join(args)} exited {out.returncode}: {out.stderr.strip()}")
    imported = out.stdout.rsplit("IMPORTED:", 1)[-1].strip()
    return seconds, imported or "-"


def _median_run(args: list[str], repeats: int) -> tuple[float, str]:
    runs = [timed(args) for _ in range(repeats)]
    return median(s for s, _ in runs), runs[-1][1]


def _quickstart() -> Path | None:
    import archsearch

    path = Path(archsearch.__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    return path if path.is_file() else None


def read_side_rows(tmp: Path, repeats: int) -> list[dict[str, Any]]:
    """Per command: its median time at each study size, the ratio, the target and whether it is met."""
    times: dict[str, dict[int, tuple[float, str]]] = {name: {} for name in TARGETS}
    build_s = {}
    for size in SIZES:
        start = time.perf_counter()
        config = build_study(tmp / f"n{size}", size)
        build_s[size] = time.perf_counter() - start
        for name in TARGETS:
            extra = ["--output", str(tmp / f"n{size}" / "report")] if name == "report" else []
            times[name][size] = _median_run([name, str(config), *extra], repeats)
    small, big = SIZES
    rows = []
    for name, (kind, target) in TARGETS.items():
        t_small, t_big = times[name][small][0], times[name][big][0]
        ratio = t_big / t_small
        met = t_big <= target if kind == "s" else ratio <= target
        rows.append(
            {
                "command": name,
                f"s_{small}": t_small,
                f"s_{big}": t_big,
                "ratio": ratio,
                "target": f"<= {target:g} s" if kind == "s" else f"<= {target:g}x",
                "met": met,
                "imports": times[name][big][1],
                "build_s": build_s[big],
            }
        )
    return rows


def start_up_rows(tmp: Path, repeats: int) -> list[dict[str, Any]]:
    quickstart = _quickstart()
    plan_config = quickstart or tmp / f"n{SIZES[0]}" / "readside.yaml"
    commands = {
        f"plan {plan_config.name}": ["plan", str(plan_config)],
        "grid --budget 2M": ["grid", "--budget", "2M"],
        "plugins": ["plugins"],
    }
    rows = []
    for label, args in commands.items():
        seconds, imported = _median_run(args, repeats)
        target = PLAN_TARGET_S if args[0] == "plan" and quickstart else None
        rows.append(
            {
                "command": label,
                "seconds": seconds,
                "imports": imported,
                "target": f"<= {target:g} s" if target else "",
                "met": None if target is None else seconds <= target,
            }
        )
    return rows


def _met(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "**no**")


def suite(quick: bool) -> dict:
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        reads = read_side_rows(Path(tmp), repeats)
        starts = start_up_rows(Path(tmp), 3)
    small, big = SIZES
    lines = [
        f"| command | {small:,} trials | {big:,} trials | ratio | target at {big:,} | met | imports torch/pandas |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['command']} | {r[f's_{small}']:.2f} s | {r[f's_{big}']:.2f} s | {r['ratio']:.2f}x "
            f"| {r['target']} | {_met(r['met'])} | {r['imports']} |"
            for r in reads
        ),
        "",
        "| start-up | median of 3 | target | met | imports torch/pandas |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {r['command']} | {r['seconds']:.2f} s | {r['target']} | {_met(r['met'])} | {r['imports']} |"
            for r in starts
        ),
        "",
        f"Each figure is the wall time of a fresh `python -m archsearch` process (median of {repeats} for "
        f"the read side), on one SQLite cell of finished trials; the {big:,}-trial study was built in "
        f"{reads[0]['build_s']:.1f} s (the engine's own {TEMPLATE_TRIALS} trials, then their rows copied "
        "in one transaction).",
    ]
    return {"rows": reads, "start_up": starts, "markdown": "\n".join(lines), "plots": {}}
