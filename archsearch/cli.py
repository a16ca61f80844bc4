"""``python -m archsearch``: the command line."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence

from archsearch.errors import ArchsearchError


def _add_grid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="list the architectures within a parameter budget")
    p.add_argument("--budget", required=True, help="e.g. 2M, 20m, 1.5B, 500K, 2_000_000")
    p.add_argument("--num-features", type=int, default=20)
    p.add_argument("--context-length", type=int, default=60)
    p.add_argument("--patch-len", type=int, default=10)
    p.add_argument("--stride", type=int, default=5)
    p.add_argument("--tolerance", type=float, default=0.25)
    p.add_argument("--model", default="patchtst", help="model variant (see `archsearch plugins`)")
    p.add_argument("--space", default="default", help="named architecture space: default or design-2025")
    p.add_argument("--generator", default="budget-grid")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(func=cmd_grid)


def cmd_grid(args: argparse.Namespace) -> int:
    from archsearch.architecture import ModelSpec
    from archsearch.budget import format_budget, parse_budget
    from archsearch.budget_grid import extreme_labels, get_architectures_for_budget

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
    archs = get_architectures_for_budget(
        budget, args.space, spec, args.tolerance, variant=args.model, generator=args.generator
    )
    labels = extreme_labels(archs)
    rows = [{**a.as_dict(), "extreme": "; ".join(labels[a])} for a in archs]
    if args.format == "json":
        print(
            json.dumps(
                {
                    "budget": format_budget(budget),
                    "budget_params": budget,
                    "tolerance": args.tolerance,
                    "model": args.model,
                    "space": args.space,
                    "count": len(archs),
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
            f"{len(archs)} architectures of {args.model} within ±{args.tolerance:.0%} of "
            f"{format_budget(budget)} ({lo:,}..{hi:,} parameters), space {args.space}"
        )
    return 0


def _add_plugins(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list every plugin, where it came from and what it provides")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--plugin", action="append", default=[], help="also load this module (as a config would)")
    p.set_defaults(func=cmd_plugins)


def cmd_plugins(args: argparse.Namespace) -> int:
    from archsearch.plugin_manager import get_plugin_manager

    infos = get_plugin_manager(args.plugin).info()
    if args.format == "json":
        print(
            json.dumps(
                [{"name": i.name, "source": i.source, "provides": i.provides} for i in infos], indent=2
            )
        )
        return 0
    for i in infos:
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in i.provides.items())
        print(f"{i.name}\n    source:   {i.source}\n    provides: {provides or 'hooks only'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archsearch",
        description="Find the best transformer architecture at each parameter budget.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_grid(sub)
    _add_plugins(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ArchsearchError as exc:
        print(f"archsearch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archsearch: interrupted", file=sys.stderr)
        return 130
