"""``archsearch grid``: the architectures within a parameter budget, as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import io
import json

from archsearch.errors import ArchsearchError


def add_grid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="list the architectures within a parameter budget")
    p.add_argument(
        "--budget", required=True, help="the parameter budget, e.g. 2M, 20m, 1.5B, 500K, 2_000_000"
    )
    p.add_argument(
        "--num-features", type=int, default=20, help="input channels of the model (default: %(default)s)"
    )
    p.add_argument(
        "--context-length", type=int, default=60, help="time steps the model sees (default: %(default)s)"
    )
    p.add_argument("--patch-len", type=int, default=10, help="time steps per patch (default: %(default)s)")
    p.add_argument("--stride", type=int, default=5, help="steps between patch starts (default: %(default)s)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.25,
        help="keep architectures within this fraction of the budget, 0.25 = ±25%% (default: %(default)s)",
    )
    p.add_argument("--model", default="patchtst", help="model variant (see `archsearch plugins`)")
    p.add_argument("--space", default="default", help="named architecture space: default or design-2025")
    p.add_argument(
        "--generator",
        default="budget-grid",
        help="architecture generator (see `archsearch plugins`; default: %(default)s)",
    )
    p.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="a table for reading, or JSON or CSV for tools (default: %(default)s)",
    )
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="also load this module (as a config's plugins: would), e.g. for its model or generator; repeatable",
    )
    p.set_defaults(func=cmd_grid)


def cmd_grid(args: argparse.Namespace) -> int:
    from archsearch.architecture import ModelSpec
    from archsearch.budget import parse_budget
    from archsearch.space.grid import extreme_labels, get_architectures_for_budget

    try:
        spec = ModelSpec(
            num_features=args.num_features,
            context_length=args.context_length,
            patch_len=args.patch_len,
            stride=args.stride,
        )
    except ValueError as exc:
        raise ArchsearchError(f"grid: {exc}") from None
    budget = parse_budget(args.budget)
    plugins = None
    if args.plugin:
        from archsearch.plugin.manager import get_plugin_manager

        plugins = get_plugin_manager(args.plugin)
    archs = get_architectures_for_budget(
        budget,
        args.space,
        spec,
        args.tolerance,
        variant=args.model,
        generator=args.generator,
        plugins=plugins,
    )
    labels = extreme_labels(archs)
    rows = [{**a.as_dict(), "extreme": "; ".join(labels[a])} for a in archs]
    _print_rows(args, budget, rows)
    return 0


def _print_rows(args: argparse.Namespace, budget: int, rows: list[dict]) -> None:
    from archsearch.budget import format_budget

    if args.format == "json":
        print(
            json.dumps(
                {
                    "budget": format_budget(budget),
                    "budget_params": budget,
                    "tolerance": args.tolerance,
                    "model": args.model,
                    "space": args.space,
                    "count": len(rows),
                    "architectures": rows,
                },
                indent=2,
            )
        )
    elif args.format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        print(out.getvalue(), end="")
    else:
        print(f"{'d_model':>8} {'n_layers':>8} {'n_heads':>7} {'d_ff':>6} {'param_count':>14}  extreme")
        for r in rows:
            print(
                f"{r['d_model']:>8} {r['n_layers']:>8} {r['n_heads']:>7} {r['d_ff']:>6} "
                f"{r['param_count']:>14,}  {r['extreme']}"
            )
        lo, hi = int(budget * (1 - args.tolerance)), int(budget * (1 + args.tolerance))
        print(
            f"{len(rows)} architectures of {args.model} within ±{args.tolerance:.0%} of "
            f"{format_budget(budget)} ({lo:,}..{hi:,} parameters), space {args.space}"
        )
