"""The ``flsec`` command: ``run``, ``demo``, ``report`` and ``baseline``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from flsec_flower.config import ConfigError, load_config

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


def _run(args: argparse.Namespace) -> int:
    from flsec_flower.sweep import mean_std_table, run_sweep, write_sweep

    cfg = load_config(args.config, args.override)
    runs = run_sweep(cfg, progress=not args.quiet)
    keys = list(cfg.sweep)
    table = mean_std_table(runs, keys, SUMMARY_METRICS) if keys else runs
    shown = [c for c in [*keys, "runs", *SUMMARY_METRICS, "run_dir"] if c in table]
    print(table[shown].to_string(index=False))
    if keys:
        path = write_sweep(runs, table, Path(cfg.output_dir), cfg.name)
        print(f"sweep summary: {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flsec_flower.demo import run_demo

    table = run_demo(Path(args.output_dir), rounds=args.rounds, progress=not args.quiet)
    print()
    print(table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}"))
    return 0


def _report(args: argparse.Namespace) -> int:
    from flsec_flower.config import from_dict, read_yaml
    from flsec_flower.plots import plot_run
    from flsec_flower.results import CONFIG_FILE, load_results, summarize

    run_dir = Path(args.run_dir)
    df = load_results(run_dir)
    cfg = from_dict(read_yaml(run_dir / CONFIG_FILE))
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
    print()
    print(summary.T.to_string(header=False))
    files = plot_run(df, run_dir)
    print("plots: " + ", ".join(str(f) for f in files))
    if not (run_dir / "summary.csv").exists():
        summary.to_csv(run_dir / "summary.csv", index=False)
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from flsec_flower.baselines import BASELINES_DIR, run_baseline
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
    )
    for path in files:
        if path.suffix == ".md":
            print(path.read_text())
    print("written: " + ", ".join(str(f) for f in files))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``flsec``."""
    parser = argparse.ArgumentParser(prog="flsec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment (or a sweep) from a YAML file")
    run.add_argument("config", help="experiment YAML file")
    run.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. -o data.partition.alpha=0.1",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="offline demo on scikit-learn digits")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--rounds", type=int, default=20)
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    report = sub.add_parser("report", help="tables and plots of a finished run")
    report.add_argument("run_dir")
    report.set_defaults(func=_report)
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
    base.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    base.set_defaults(func=_baseline)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"flsec: error: {err}", file=sys.stderr)
        return 2


pd.set_option("display.width", 200)

if __name__ == "__main__":
    sys.exit(main())
