"""Markdown tables of the backdoor sweep (``backdoor-sweep.yaml``) from its run folders.

Each run folder holds the ``config.yaml`` it ran and its ``summary.csv``;
the tables need only those, so runs of several sweeps (or of a sweep cut
short) can be put together. A cell is the mean ± sample standard deviation
over the seeds present (``n=1``: the one value); the row is the rule with
its wrappers, the column the attack (``none (x)`` when no client is
malicious: attack ``x``'s backdoor metric on a clean run).
Runs in which a client failed are left out; of two runs of one cell and
seed the later folder counts.

Usage::

    python benchmarks/catalogue/backdoor_table.py runs/catalogue-backdoor-sweep-2026*
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd
import yaml

METRICS = {
    "final_accuracy": "Main-task accuracy",
    "final_backdoor_accuracy": "Backdoor accuracy",
}


def failures(run_dir: Path) -> int:
    """Client failures over the rounds of a run (``num_failures`` in its ``metrics.jsonl``)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return sum(int(json.loads(line).get("num_failures") or 0) for line in lines if line)


def run_row(run_dir: Path) -> dict[str, object] | None:
    """The rule, attack, seed and final metrics of one finished run; ``None`` if unfinished.

    A run in which a client failed (e.g. a Ray actor killed for memory) is
    not the configured setting, so it counts as unfinished too.
    """
    summary = run_dir / "summary.csv"
    if not summary.is_file() or failures(run_dir) > 0:
        return None
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    strategy = cfg["strategy"]
    rule = "`" + strategy["name"] + "`"
    for wrapper in strategy.get("wrappers") or []:
        rule = f"`{wrapper['name']}`({rule})"
    attack = cfg.get("attack")
    name = attack["name"] if attack else "none"
    if attack and attack["num_malicious"] == 0:
        name = f"none ({name})"
    values = pd.read_csv(summary).iloc[0]
    return {
        "rule": rule,
        "attack": name,
        "seed": cfg["seed"],
        **{m: values.get(m, math.nan) for m in METRICS},
    }


def cell(values: pd.Series) -> str:
    """``mean ± std`` over the seeds, ``—`` when no run reports the metric."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "—"
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {std:.3f}"


def tables(runs: pd.DataFrame, rules: list[str]) -> str:
    """One markdown table per metric, rows in the order ``rules``, clean columns first."""
    attacks = sorted(dict.fromkeys(runs["attack"]), key=lambda a: not a.startswith("none"))
    seeds = sorted(set(runs["seed"]))
    out = [f"Runs: {len(runs)}, seeds {seeds}.", ""]
    for metric, title in METRICS.items():
        out += [f"**{title}**", "", "| rule | " + " | ".join(attacks) + " |"]
        out.append("|---" * (len(attacks) + 1) + "|")
        for rule in rules:
            mine = runs[runs["rule"] == rule]
            cells = [cell(mine.loc[mine["attack"] == a, metric]) for a in attacks]
            out.append(f"| {rule} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def natural(path: Path) -> tuple[str, int]:
    """Sort key of a run folder: its stem, then its ``-N`` suffix as a number (``-10`` last)."""
    stem, _, suffix = path.name.rpartition("-")
    return (stem, int(suffix)) if suffix.isdigit() and len(suffix) < 4 else (path.name, -1)


def main() -> None:
    """Print the tables of the given run folders."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders of the sweep")
    args = parser.parse_args()
    rows = [row for d in sorted(args.run_dirs, key=natural) if (row := run_row(d)) is not None]
    if not rows:
        raise SystemExit("no finished run (summary.csv, no client failure) among the folders")
    runs = pd.DataFrame(rows)
    rules = list(dict.fromkeys(runs["rule"]))
    print(tables(runs.drop_duplicates(["rule", "attack", "seed"], keep="last"), rules))


if __name__ == "__main__":
    main()
