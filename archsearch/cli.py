"""``python -m archsearch``: the command line.

Exit status: 0 done; 2 an error in the config, the data, a plugin or the storage (one paragraph
on stderr, no traceback); 3 a ``run``/``worker`` stopped by SIGINT, SIGTERM or a STOP file before
the matrix was done (completed trials are kept: resume with the printed command); 130 a second
Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from archsearch.errors import ArchsearchError

#: ``run``/``worker`` stopped (SIGINT, SIGTERM or STOP) before the matrix was done.
EXIT_STOPPED = 3


def _add_plugins(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list every plugin, where it came from and what it provides")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--plugin", action="append", default=[], help="also load this module (as a config would)")
    p.set_defaults(func=cmd_plugins)


def cmd_plugins(args: argparse.Namespace) -> int:
    from archsearch.plugin.manager import DISABLE_AUTOLOAD_ENV, get_plugin_manager

    plugins = get_plugin_manager(args.plugin, keep_broken=True)
    infos = plugins.info()
    if args.format == "json":
        listed = [{"name": i.name, "source": i.source, "provides": i.provides} for i in infos]
        listed += [{"name": b.name, "source": b.source, "broken": b.error} for b in plugins.broken]
        print(json.dumps(listed, indent=2))
        return 0
    for i in infos:
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in i.provides.items())
        print(f"{i.name}\n    source:   {i.source}\n    provides: {provides or 'hooks only'}")
    for b in plugins.broken:
        print(f"{b.name}\n    source:   {b.source}\n    BROKEN:   failed to import: {b.error}")
    if plugins.broken:
        print(
            f"{len(plugins.broken)} plugin(s) failed to import: every other command stops on them; fix or "
            f"uninstall them, or set {DISABLE_AUTOLOAD_ENV}=1 to load no entry points",
            file=sys.stderr,
        )
    return 0


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _add_config_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a config's matrix of cells (resumes when run again)")
    plan = sub.add_parser("plan", help="show each cell's study, architectures, trials and compute")
    status = sub.add_parser("status", help="each cell's trials done/pruned/failed and best so far")
    export = sub.add_parser("export", help="rebuild the CSV and best JSON files from the storage")
    worker = sub.add_parser(
        "worker",
        help="one of many processes sharing the config's storage (e.g. PostgreSQL): runs trials until done",
    )
    for p in (run, plan, status, export, worker):
        p.add_argument("config", help="the experiment's YAML file")
        if p is not export:  # export rebuilds the experiment's files whole
            p.add_argument("--budget", action="append", help="only this budget (repeatable), e.g. 2M")
            p.add_argument("--horizon", action="append", type=int, help="only this horizon (repeatable)")
        p.add_argument("--n-trials", type=int, help="trials per cell")
        p.add_argument("--output", help="output directory")
        p.add_argument("--device", help="auto, cpu, cuda, cuda:1, mps")
        p.add_argument("--storage", help="an Optuna storage URL (default: SQLite in the output directory)")
    run.add_argument("--no-progress", action="store_true", help="plain log lines, no progress bars")
    for p in (run, worker):
        p.add_argument(
            "--sink",
            action="append",
            help="also tell this result sink (repeatable), e.g. mlflow or tensorboard; see `plugins`",
        )
    worker.add_argument(
        "--worker-index",
        type=_non_negative_int,
        help="this worker's number among those sharing the storage (e.g. $SLURM_ARRAY_TASK_ID); its "
        "sampler seed is derived from it, so give each worker its own (default: derived from the host "
        "name and process id)",
    )
    run.set_defaults(func=cmd_run)
    plan.set_defaults(func=cmd_plan)
    status.set_defaults(func=cmd_status)
    export.set_defaults(func=cmd_export)
    worker.set_defaults(func=cmd_worker, no_progress=True)


def _config(args: argparse.Namespace):  # -> Config
    from archsearch.config import apply_overrides, load_config

    config = load_config(args.config)
    config = apply_overrides(
        config,
        budgets=getattr(args, "budget", None),
        horizons=getattr(args, "horizon", None),
        n_trials=args.n_trials,
        output=args.output,
        device=args.device,
        storage=args.storage,
        sinks=getattr(args, "sink", None),
    )
    return config


def _setup_logging(bars: bool) -> None:
    import logging

    logger = logging.getLogger("archsearch")
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if bars:

        class TqdmHandler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                from tqdm import tqdm

                tqdm.write(self.format(record), file=sys.stderr)

        handler: logging.Handler = TqdmHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    from archsearch.search.engine import Engine
    from archsearch.search.progress import Progress, wants_bars

    config = args.loaded_config if "loaded_config" in args else _config(args)
    bars = wants_bars(args.no_progress)
    _setup_logging(bars)
    shared = getattr(args, "func", None) is cmd_worker  # other processes share the studies
    engine = Engine(
        config, progress=Progress() if bars else None, worker=getattr(args, "worker_index", 0), shared=shared
    )
    result = engine.run()
    print(summary_text(result, config))
    if result.stopped:
        from archsearch.search.stop import after_stop

        print(f"stopped ({_redacted(result.stopped)}); completed trials are kept. Resume with:\n  {resume_command()}")
        note = after_stop(config.output_path, shared)
        if note:
            print(note)
        return EXIT_STOPPED
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A worker: ``run`` without progress bars, saying which process it is."""
    import logging
    import zlib

    from archsearch.search.coordination import WORKER
    from archsearch.storage import redact

    config = _config(args)
    _setup_logging(False)
    if config.storage is None:
        logging.getLogger("archsearch").warning(
            "worker %s: no storage given, using %s; workers on other machines need a shared one "
            "(--storage postgresql://... or a journal file on a shared filesystem)",
            WORKER,
            redact(config.storage_url),
        )
    if args.worker_index is None:  # distinct for every process, never 0 (a plain `run`)
        args.worker_index = 1 + zlib.crc32(WORKER.encode())
    logging.getLogger("archsearch").info(
        "worker %s (index %d) on %s", WORKER, args.worker_index, redact(config.storage_url)
    )
    args.loaded_config = config
    return cmd_run(args)


def resume_command() -> str:
    """The command line to run again, its passwords shown as ``***`` (then said so)."""
    import shlex

    from archsearch.redaction import redact_text

    words = sys.argv[1:]
    shown = [redact_text(a) for a in words]
    line = "python -m archsearch " + " ".join(shlex.quote(a) for a in shown)
    if shown != words:
        line += "\n  (the storage password is shown as ***: give it again, e.g. in PGPASSWORD)"
    return line


def summary_text(result, config) -> str:
    from archsearch.budget import format_budget

    lines = [f"results in {result.output_dir}/ (storage {_redacted(config.storage_url)})"]
    for s in result.cells:
        head = f"  {format_budget(s.budget)} h{s.horizon}: {s.n_complete} complete, {s.n_pruned} pruned, {s.n_failed} failed"
        if s.best:
            b = s.best
            head += (
                f"; best val_loss {b['val_loss']:.5f}: d_model={b['d_model']} n_layers={b['n_layers']} "
                f"n_heads={b['n_heads']} d_ff={b['d_ff']} ({b['param_count']:,} parameters), trial {b['trial']}"
            )
        lines.append(head)
        if s.confirmed:
            lines.append(f"    {confirmed_line(s.confirmed)}")
    return "\n".join(lines)


def confirmed_line(c: dict) -> str:
    """One line: the confirmed winner with its interval, and how it stands to the runner-up."""
    w, r = c["winner"], c["runner_up"]
    a = w["arch"]
    line = (
        f"confirmed: d_model={a['d_model']} n_layers={a['n_layers']} n_heads={a['n_heads']} d_ff={a['d_ff']} "
        f"({w['n_params']:,} parameters) mean val_loss {w['mean']:.5f} "
        f"[95% {w['low']:.5f}, {w['high']:.5f}] over {len(w['values'])} seeds"
    )
    if r is not None:
        line += f"; runner-up {r['mean']:.5f} ({'separated' if c['separated'] else 'not separated'})"
    if not c["complete"]:
        line += "; provisional (confirmation trials still to run)"
    return line


def _redacted(text: str) -> str:
    from archsearch.redaction import redact_text

    return redact_text(text)


def cmd_plan(args: argparse.Namespace) -> int:
    from archsearch.search.overview import plan_rows

    config = _config(args)
    rows = plan_rows(config)
    print(f"{'study':<28} {'archs':>5} {'trials':>10} {'params (min..max)':>29} {'windows':>8}  compute")
    for r in rows:
        trials = f"{r['n_trials']}+{r['confirm_trials']}" if r["confirm_trials"] else str(r["n_trials"])
        print(
            f"{r['study_name']:<28} {r['architectures']:>5} {trials:>10} "
            f"{r['params_min']:>14,}..{r['params_max']:<14,} {r['train_windows']:>8,}  "
            f"{r['param_sample_epochs']:.3g} param-sample-epochs, ~{r['flops']:.2g} FLOP"
        )
    total = sum(r["flops"] for r in rows)
    print(
        f"{len(rows)} cells, {sum(r['n_trials'] for r in rows)} search trials"
        f" + {sum(r['confirm_trials'] for r in rows)} confirmation trials; compute ~{total:.3g} FLOP "
        "(6 x parameters x patches x windows x mean epochs, per trial, x trials; an upper bound with early stopping)"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from archsearch.search.overview import status_rows

    config = _config(args)
    rows = status_rows(config)
    print(
        f"{'study':<34} {'done':>5} {'pruned':>6} {'failed':>6} {'running':>7} {'waiting':>7} {'confirm':>8}"
        "  best search trial"
    )
    for r in rows:
        best = (
            f"{r['best_value']:.5f} (trial {r['best_trial']}: {r['best_arch']})"
            if r["best_value"] is not None
            else "-"
        )
        print(
            f"{r['study_name']:<34} {r['complete']:>5} {r['pruned']:>6} {r['failed']:>6} {r['running']:>7} "
            f"{r['waiting']:>7} {_confirm_progress(r):>8}  {best}"
        )
    print(
        "done/pruned/failed/running/waiting: search trials; confirm: confirmation trials finished / queued "
        "(queued once the search has its trials; '-' when confirm is off)"
    )
    return 0


def _confirm_progress(row: dict) -> str:
    total = row["confirm_total"] or row["confirm_planned"]
    return f"{row['confirm_done']}/{total}" if total else "-"


def cmd_export(args: argparse.Namespace) -> int:
    from archsearch.search.overview import export

    config = _config(args)
    paths = export(config)
    for p in paths:
        print(p)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="tables and plots of an experiment's results: HTML, PNG and Markdown",
        description="Write the best architecture per cell, the scaling view, depth/width plots, the "
        "optimisation history and parameter importance into OUTPUT_DIR/report/ (or --output).",
    )
    p.add_argument(
        "source",
        metavar="CONFIG|OUTPUT_DIR",
        help="the experiment's YAML file (reads its storage, running studies included), its output "
        "directory (archsearch.db if there, else experiment_results.csv) or a results CSV",
    )
    p.add_argument(
        "--format",
        action="append",
        choices=("html", "png", "md"),
        help="html (one self-contained file), png (the figures) or md (a summary linking the PNGs); "
        "repeatable; default all three",
    )
    p.add_argument("--output", help="directory to write into (default: the output directory's report/)")
    p.add_argument("--storage", help="read this Optuna storage URL instead of the config's")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from archsearch.report import FORMATS, build_report

    data, paths = build_report(args.source, args.format or FORMATS, args.output, args.storage)
    notice = data.partial_notice()
    if notice:
        print(notice, file=sys.stderr)
    for p in paths:
        print(p)
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from archsearch.bench import SUITES

    p = sub.add_parser("bench", help="run benchmark suites: " + ", ".join(SUITES) + ", or all")
    p.add_argument(
        "suites", nargs="*", default=["all"], metavar="SUITE", help="suite names, or all (default)"
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller sizes: all suites in under 10 minutes on 2 cores"
    )
    p.add_argument("--output", default="bench-results", help="directory for the JSON, Markdown and PNG files")
    p.add_argument(
        "--generate",
        action="store_true",
        help="(architectures) train the tabular benchmark into archsearch/bench/data/ first (a development checkout; SPY data shipped as builtin:spy-daily); resumes",
    )
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from archsearch.bench import SUITES, run_suites

    names = list(SUITES) if args.suites in (["all"], []) else args.suites
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ArchsearchError(f"unknown suite {unknown[0]!r}; the suites are {', '.join(SUITES)} and all")
    if args.generate:
        from archsearch.bench.tabular import generate

        generate()
    run_suites(names, args.quick, Path(args.output))
    print(f"results in {args.output}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archsearch",
        description="Find the best transformer architecture at each parameter budget.",
    )
    from archsearch import __version__

    parser.add_argument("--version", action="version", version=f"archsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from archsearch.cli_grid import add_grid

    add_grid(sub)
    _add_plugins(sub)
    _add_config_commands(sub)
    _add_bench(sub)
    _add_report(sub)
    return parser


def _redacting_excepthook(kind: type[BaseException], value: BaseException, tb: object) -> None:
    """An unexpected error's traceback, as Python prints it, with the passwords hidden."""
    import traceback

    from archsearch.redaction import redact_text

    sys.stderr.write(redact_text("".join(traceback.format_exception(kind, value, tb))))


def main(argv: Sequence[str] | None = None) -> int:
    from archsearch.redaction import redact_text, remember_secrets

    for word in sys.argv[1:] if argv is None else argv:  # --storage URL: hidden wherever it shows
        remember_secrets(word)
    sys.excepthook = _redacting_excepthook
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so that a reader that has gone is caught below
        return code
    except ArchsearchError as exc:
        print(f"archsearch {args.command}: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archsearch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `archsearch plan CONFIG | head`: the reader has gone, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
