"""The ``flsec`` command: ``run``, ``demo``, ``report``, ``list`` and ``baseline``.

Arguments are parsed and the config validated before torch, Ray and Flower
are imported (each subcommand imports what it needs), so ``flsec --help``
and a config error answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flsec_flower.config import ConfigError, load_config

if TYPE_CHECKING:
    import pandas as pd

EXIT_USER_ERROR = 2
"""A bad config, data file or path: one line on stderr."""
EXIT_RUN_FAILED = 1

SUMMARY_METRICS = [
    "final_accuracy",
    "best_accuracy",
    "final_bias",
    "final_backdoor_accuracy",
    "final_attacked_group_accuracy",
    "detect_precision",
    "detect_recall",
    "mean_seconds_per_round",
    "wall_seconds",
]


def _wide_tables() -> None:
    import pandas as pd

    pd.set_option("display.width", 200)


def summary_table(table: pd.DataFrame, keys: list[str]) -> str:
    """The terminal summary of ``flsec run``: sweep keys, then :data:`SUMMARY_METRICS`.

    Metrics a run does not produce (no backdoor, no attacked group) are left out.
    """
    shown = [c for c in [*keys, "runs", *SUMMARY_METRICS, "run_dir"] if c in table]
    return table[shown].to_string(index=False)


def _run(args: argparse.Namespace) -> int:
    if (args.config is None) == (args.resume is None):
        raise ConfigError("flsec run: give either a config file or --resume RUN_DIR")
    if args.resume is not None:
        if args.override:
            raise ConfigError("--resume: overrides (-o) cannot change a run being resumed")
        from flsec_flower.app.simulation import resume_experiment

        run_dir = resume_experiment(Path(args.resume), progress=not args.quiet)
        print(f"completed: {run_dir}")
        return 0
    cfg = load_config(args.config, args.override)
    from flsec_flower.app.sweep import mean_std_table, run_sweep, write_sweep

    _wide_tables()
    runs = run_sweep(cfg, progress=not args.quiet)
    keys = list(cfg.sweep)
    table = mean_std_table(runs, keys, SUMMARY_METRICS) if keys else runs
    print(summary_table(table, keys))
    if keys:
        path = write_sweep(runs, table, Path(cfg.output_dir), cfg.name)
        print(f"sweep summary: {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flsec_flower.app.demo import run_demo

    _wide_tables()
    table = run_demo(Path(args.output_dir), rounds=args.rounds, progress=not args.quiet)
    print()
    print(table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}"))
    return 0


def _report(args: argparse.Namespace) -> int:
    from flsec_flower.checkpoint import read_status
    from flsec_flower.config import from_dict, read_yaml
    from flsec_flower.plots import plot_run
    from flsec_flower.results import CONFIG_FILE, load_results, summarize

    _wide_tables()
    run_dir = Path(args.run_dir)
    df = load_results(run_dir)
    cfg = from_dict(read_yaml(run_dir / CONFIG_FILE))
    completed = int(df["round"].max()) if "round" in df and len(df) else 0
    status = read_status(run_dir)
    state = (status or {}).get("status") or (
        "completed" if completed >= cfg.rounds else "unfinished (no status.json)"
    )
    cols = [
        c
        for c in [
            "round",
            "accuracy",
            "loss",
            "bias",
            "backdoor_accuracy",
            "attacked_group_accuracy",
            "num_rejected",
            "detect_precision",
            "detect_recall",
            "seconds",
        ]
        if c in df
    ]
    evaluated = df[df["accuracy"].notna()] if "accuracy" in df else df
    print(evaluated[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    summary = summarize(df, cfg)
    summary.insert(1, "status", state)
    print()
    print(summary.T.to_string(header=False))
    files = plot_run(df, run_dir)
    print("plots: " + ", ".join(str(f) for f in files))
    if state != "completed":
        print(
            f"status: {state} after round {completed} of {cfg.rounds}; "
            f"resume with: flsec run --resume {run_dir}"
        )
    elif not (run_dir / "summary.csv").exists():
        summary.to_csv(run_dir / "summary.csv", index=False)
    return 0


def _list(args: argparse.Namespace) -> int:
    from flsec_flower.app.catalog import render_catalogue, render_markdown, render_text, sections

    if args.catalogue:
        print(render_catalogue(), end="")
    else:
        print((render_markdown if args.markdown else render_text)(sections()), end="")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from flsec_flower.app.baselines import BASELINES_DIR, run_baseline
    from flsec_flower.config import parse_override

    files = run_baseline(
        args.slug,
        scale=args.scale,
        out=Path(args.out) if args.out else None,
        seeds=args.seeds,
        root=Path(args.root) if args.root else BASELINES_DIR,
        extra=dict(parse_override(o) for o in args.override),
        progress=not args.quiet,
        run=not args.no_run,
        only=args.only,
    )
    for path in files:
        if path.suffix == ".md":
            print(path.read_text())
    print("written: " + ", ".join(str(f) for f in files))
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run an experiment (or a sweep) from a YAML file")
    run.add_argument("config", nargs="?", help="experiment YAML file")
    run.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. -o data.partition.alpha=0.1",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped run from its last completed round",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="offline demo on scikit-learn digits")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--rounds", type=int, help="rounds per run (default: the demo's 12)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)


def _add_report(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="tables and plots of a run (finished or not)")
    report.add_argument("run_dir")
    report.set_defaults(func=_report)


def _add_list(sub: argparse._SubParsersAction) -> None:
    listing = sub.add_parser(
        "list",
        help="every dataset, partition kind, model, rule, wrapper and attack, with parameters",
    )
    listing.add_argument("--markdown", action="store_true", help="Markdown tables (the README's)")
    listing.add_argument(
        "--catalogue",
        action="store_true",
        help="papers and threat models of every rule, wrapper and attack (Markdown, the README's)",
    )
    listing.set_defaults(func=_list)


def _add_baseline(sub: argparse._SubParsersAction) -> None:
    base = sub.add_parser("baseline", help="reproduce a paper's tables from baselines/<slug>/")
    base.add_argument("slug", help="folder under baselines/, e.g. data-distribution")
    base.add_argument("--scale", default="quick", help="override set of the baseline (quick|paper)")
    base.add_argument("--out", help="output folder (default runs/baselines/<slug>/<scale>)")
    base.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the baseline's)")
    base.add_argument("--root", help="folder holding the baselines (default: the repo's)")
    base.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key in every cell, after the scale's overrides",
    )
    base.add_argument(
        "--no-run",
        action="store_true",
        help="run nothing; write the tables from the cells already finished",
    )
    base.add_argument(
        "--only",
        nargs="+",
        metavar="CONFIG",
        help="run only these configs (their name); the tables still read every finished cell",
    )
    base.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    base.set_defaults(func=_baseline)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``flsec``."""
    parser = argparse.ArgumentParser(prog="flsec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_demo(sub)
    _add_report(sub)
    _add_list(sub)
    _add_baseline(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: printed as one line, exit status 2."""
    errors: list[type[BaseException]] = [ConfigError, FileNotFoundError, NotADirectoryError]
    data = sys.modules.get("flsec_flower.data.dataset")
    if data is not None:
        errors.append(data.DataError)
    return tuple(errors)


def _run_failures() -> tuple[type[BaseException], ...]:
    """Exceptions that end a run for a reason outside the config: one line, exit status 1."""
    base = sys.modules.get("strategies.base")
    return (base.TooFewClientsError,) if base is not None else ()


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit with status 2.

    A run that stops because too few clients replied prints one line and
    exits with status 1; Ctrl-C and SIGTERM exit with 130
    (:mod:`flsec_flower.app.interrupts`).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        if isinstance(err, user_errors()):
            print(f"flsec: error: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
        if isinstance(err, _run_failures()):
            print(f"flsec: run failed: {err}", file=sys.stderr)
            return EXIT_RUN_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
