"""Sweeps: one run per combination of swept values, then a mean ± std table.

A swept key may take any value, mappings and lists included (e.g. a list of
whole ``strategy`` blocks); tables label such values by :func:`cell_label`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from flsec_flower.app.simulation import run_experiments
from flsec_flower.config import ExperimentConfig, expand_sweep
from flsec_flower.results import SUMMARY_FILE, fresh_dir


def run_sweep(cfg: ExperimentConfig, progress: bool = True) -> pd.DataFrame:
    """Run every point of ``cfg.sweep``; return one summary row per run with its point.

    Points that share the number of clients and the client resources run in
    one simulation (Ray starts once); a sweep over those keys runs a
    simulation per group.
    """
    points = expand_sweep(cfg)
    groups: dict[tuple, list[int]] = {}
    for i, (_, run_cfg) in enumerate(points):
        key = (run_cfg.data.num_clients, repr(run_cfg.resources))
        groups.setdefault(key, []).append(i)
    run_dirs: dict[int, Path] = {}
    for members in groups.values():
        dirs = run_experiments([points[i][1] for i in members], progress=progress)
        run_dirs.update(zip(members, dirs, strict=True))
    rows = []
    for i, (point, _) in enumerate(points):
        summary = pd.read_csv(run_dirs[i] / SUMMARY_FILE).iloc[0].to_dict()
        labels = {k: cell_label(v) for k, v in point.items()}
        rows.append({**labels, **summary, "run_dir": str(run_dirs[i])})
    return pd.DataFrame(rows)


def cell_label(value: Any) -> Any:
    """A hashable, readable label of a swept value.

    Scalars are kept; mappings and lists become one-line YAML in flow style,
    e.g. ``{name: krum, params: {f: 2}}``.
    """
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return value


def mean_std_table(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Group runs by the swept ``keys`` other than ``seed``; ``mean ± std`` of each metric."""
    group_keys = [k for k in keys if k != "seed" and k in runs]
    present = [m for m in metrics if m in runs]
    if not group_keys:
        runs = runs.assign(_all="all")
        group_keys = ["_all"]
    rows = []
    for values, group in runs.groupby(group_keys, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(group_keys, values, strict=True))
        row["runs"] = len(group)
        for m in present:
            col = pd.to_numeric(group[m], errors="coerce")
            std = col.std(ddof=1) if len(col) > 1 else 0.0
            row[m] = f"{col.mean():.4f} ± {std:.4f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.drop(columns=["_all"]) if "_all" in table else table


def write_sweep(runs: pd.DataFrame, table: pd.DataFrame, out_dir: Path, name: str) -> Path:
    """Write the sweep's tables into a new folder; return the summary's path.

    The folder is ``<out_dir>/<name>-sweep-<timestamp>[-k]``, new for every
    sweep (an earlier sweep's files are never overwritten); it holds
    ``sweep-runs.csv`` (one row per run) and ``sweep-summary.csv`` (mean ± std).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = fresh_dir(out_dir, f"{name}-sweep")
    runs.to_csv(folder / "sweep-runs.csv", index=False)
    path = folder / "sweep-summary.csv"
    table.to_csv(path, index=False)
    return path
