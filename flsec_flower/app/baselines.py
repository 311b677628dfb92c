"""Paper baselines: ``flsec baseline <slug>`` runs ``baselines/<slug>/`` and writes its tables.

A baseline folder holds experiment YAML files and one spec, ``baseline.yaml``::

    title: The impact of data distribution on fairness and robustness
    seeds: [0, 1, 2]                 # default seeds; --seeds replaces them
    configs:                         # experiment files, run in this order
      - file: fmnist-clean.yaml
      - file: cifar10-clean.yaml
        skip: no CIFAR-10 on this machine   # validated, never run
      - file: cifar10-long.yaml
        scales: [paper]              # run at these scales only (validated at every scale)
      - file: fmnist-long.yaml
        scales: {quick: {rounds: 5}, paper: {}}   # ... each with its own overrides
    scales:                          # dotted-key overrides applied to every config
      quick: {rounds: 10}
      paper: {}
    tables:
      - name: table1                 # writes table1.md and table1.csv
        title: "Table I: accuracy and bias per alpha"
        config: fmnist-clean         # the experiment's name
        rows: data.partition.alpha   # a swept key
        columns: {Accuracy: final_accuracy, Bias: final_bias}   # header: summary metric
        percent: true                # metrics in [0, 1] shown x 100
        paper: {1.0: {Accuracy: "90.08 ± 0.17"}}               # optional paper column
    figures:
      - name: bias_vs_alpha          # writes bias_vs_alpha.png
        x: data.partition.alpha
        y: final_bias
        configs: {no attack: fmnist-clean, backdoor: fmnist-backdoor}
      - name: curve                  # x: round plots a metric per round (metrics.jsonl)
        x: round
        y: accuracy
        by: data.num_clients         # optional: one curve per value of a swept key
        configs: {attack: fmnist-backdoor}

A config entry may carry its own ``scales: {quick: {attack.start_round: 5}}``,
applied after the scale's overrides.

``grids`` compare configs side by side (:func:`build_grid`: a row per value
of ``rows``, a column per config, one ``metric``) and ``histograms`` draw how
often each client was in a rule's selection (:func:`plot_selection`)::

    grids:
      - {name: fig3, rows: attack.name, metric: final_accuracy, percent: true,
         columns: {Krum: fig3-krum, Krum + R: fig3-krum-resampling}, paper: {none: text}}
    histograms:
      - {name: krum_selection, configs: {Krum: fig1a-krum}, by: data.partition.kind}

A *cell* is one run: a config at one point of its ``sweep`` and one seed,
named ``<config name>-<key><value>-...-seed<s>``. Every cell's run folder
lands in ``<out>/runs/``; a cell whose folder holds the same resolved config
and all its rounds is finished and skipped when the command is run again,
so an interrupted baseline resumes where it stopped; ``only`` (``--only``)
restricts which configs run. Cells that share
``data.num_clients`` and the client resources run in one simulation
(:func:`flsec_flower.app.simulation.run_experiments`).

Relative paths in a baseline's configs (``data.data_dir``) resolve against
the folder that holds ``baselines/`` (the checkout root), whatever the
current directory, so ``data_dir: ../shared/data`` names the same folder
from anywhere.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from flsec_flower.config import (
    ConfigError,
    ExperimentConfig,
    expand_sweep,
    from_dict,
    read_yaml,
    resolve_paths,
)
from flsec_flower.results import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, load_results

BASELINES_DIR = Path(__file__).resolve().parents[2] / "baselines"
"""The repository's ``baselines/`` folder."""

SPEC_FILE = "baseline.yaml"
SPEC_KEYS = ("title", "seeds", "configs", "scales", "tables", "figures", "grids", "histograms")
TABLE_KEYS = {
    "required": ("name", "config", "rows", "columns"),
    "optional": ("title", "percent", "paper"),
}
FIGURE_KEYS = {
    "required": ("name", "x", "y", "configs"),
    "optional": ("title", "xlabel", "ylabel", "log_x", "by", "labels"),
}
GRID_KEYS = {
    "required": ("name", "rows", "metric", "columns"),
    "optional": ("title", "percent", "paper"),
}
HISTOGRAM_KEYS = {
    "required": ("name", "configs"),
    "optional": ("title", "by", "labels"),
}


def _check_entries(where: str, entries: list, keys: dict[str, tuple[str, ...]]) -> None:
    allowed = (*keys["required"], *keys["optional"])
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{where}[{i}]: expected a mapping with {', '.join(keys['required'])}"
            )
        for key in entry:
            if key not in allowed:
                raise ConfigError(f"{where}[{i}].{key}: unknown key; allowed: {', '.join(allowed)}")
        missing = [k for k in keys["required"] if k not in entry]
        if missing:
            raise ConfigError(f"{where}[{i}]: missing {', '.join(missing)}")


@dataclass
class Cell:
    """One run of a baseline: a config at one sweep point and seed."""

    cfg: ExperimentConfig
    point: dict[str, Any]

    @property
    def name(self) -> str:
        """The run's name, also the prefix of its run folder."""
        return self.cfg.name


@dataclass
class Baseline:
    """A parsed ``baselines/<slug>/`` folder."""

    slug: str
    folder: Path
    spec: dict[str, Any]
    configs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scales(self) -> dict[str, dict[str, Any]]:
        """Override sets by scale name."""
        return self.spec.get("scales") or {}


def load_baseline(slug: str, root: Path = BASELINES_DIR) -> Baseline:
    """Read ``<root>/<slug>/baseline.yaml``.

    Raises
    ------
    ConfigError
        If the folder or its spec is missing, or the spec has an unknown key.
    """
    folder = Path(root) / slug
    if not (folder / SPEC_FILE).is_file():
        known = sorted(p.parent.name for p in Path(root).glob(f"*/{SPEC_FILE}"))
        raise ConfigError(
            f"baseline {slug!r}: no {folder / SPEC_FILE}; known baselines: "
            f"{', '.join(known) or 'none'}"
        )
    spec = read_yaml(folder / SPEC_FILE)
    for key in spec:
        if key not in SPEC_KEYS:
            raise ConfigError(
                f"{folder / SPEC_FILE}: {key}: unknown key; allowed: {', '.join(SPEC_KEYS)}"
            )
    configs = spec.get("configs") or []
    for i, entry in enumerate(configs):
        if not isinstance(entry, dict) or "file" not in entry:
            raise ConfigError(f"{folder / SPEC_FILE}: configs[{i}]: expected {{file: NAME.yaml}}")
    _check_entries(f"{folder / SPEC_FILE}: tables", spec.get("tables") or [], TABLE_KEYS)
    _check_entries(f"{folder / SPEC_FILE}: figures", spec.get("figures") or [], FIGURE_KEYS)
    _check_entries(f"{folder / SPEC_FILE}: grids", spec.get("grids") or [], GRID_KEYS)
    _check_entries(
        f"{folder / SPEC_FILE}: histograms", spec.get("histograms") or [], HISTOGRAM_KEYS
    )
    return Baseline(slug, folder, spec, configs)


def _value_label(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def cells(
    baseline: Baseline,
    scale: str,
    seeds: list[int] | None = None,
    out: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[list[Cell], list[tuple[str, str]]]:
    """Expand every config into cells at ``scale``; also return the skipped configs.

    Each config gets the scale's overrides, then its entry's own overrides
    for that scale (``scales: {quick: {...}}``), then ``extra``, then
    ``output_dir = <out>/runs``; its sweep is expanded and crossed with the
    seeds. Cells are ordered seed by seed, so an interrupted run has every
    table at fewer seeds rather than some tables complete and others empty.
    Skipped configs (``skip: reason``, or ``scales: [...]`` without ``scale``)
    are validated all the same.

    Raises
    ------
    ConfigError
        If the scale is unknown or a config is invalid.
    """
    if scale not in baseline.scales:
        raise ConfigError(
            f"--scale {scale!r}: not defined in {baseline.folder / SPEC_FILE}; "
            f"allowed: {', '.join(baseline.scales)}"
        )
    seeds = list(seeds if seeds is not None else baseline.spec.get("seeds") or [0])
    last = dict(extra or {})
    if out is not None:
        last["output_dir"] = str(Path(out) / "runs")
    per_config: list[tuple[str, list[tuple[dict[str, Any], ExperimentConfig]]]] = []
    skipped: list[tuple[str, str]] = []
    for entry in baseline.configs:
        path = baseline.folder / entry["file"]
        only = entry.get("scales")
        own = (only.get(scale) or {}) if isinstance(only, dict) else {}
        overrides = {**(baseline.scales[scale] or {}), **own, **last}
        try:
            raw = resolve_paths(read_yaml(path), baseline.folder.parent.parent)
            cfg = from_dict(raw, overrides.items())
            points = expand_sweep(cfg)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
        if entry.get("skip"):
            skipped.append((cfg.name, str(entry["skip"])))
        elif isinstance(only, list) and scale not in only:
            skipped.append((cfg.name, f"not at scale {scale!r}; runs at: {', '.join(only)}"))
        else:
            per_config.append((cfg.name, points))
    result: list[Cell] = []
    for seed in seeds:
        for name, points in per_config:
            for point, point_cfg in points:
                full = {**point, "seed": seed}
                label = "-".join(
                    f"{k.rsplit('.', 1)[-1]}{_value_label(v)}" for k, v in full.items()
                )
                raw = point_cfg.to_dict()
                raw.update(seed=seed, name=f"{name}-{label}")
                result.append(Cell(from_dict(raw), full | {"config": name}))
    return result, skipped


def finished_run(cell: Cell) -> Path | None:
    """The cell's run folder if one holds the same resolved config and all its rounds."""
    root = Path(cell.cfg.output_dir)
    wanted = cell.cfg.to_dict()
    for run_dir in sorted(root.glob(f"{glob.escape(cell.name)}-*"), reverse=True):
        try:
            saved = read_yaml(run_dir / CONFIG_FILE)
            lines = (run_dir / METRICS_FILE).read_text().splitlines()
        except (ConfigError, OSError):
            continue
        if saved != wanted or not (run_dir / SUMMARY_FILE).is_file():
            continue
        rounds = {json.loads(line)["round"] for line in lines if line.strip()}
        if set(range(1, cell.cfg.rounds + 1)) <= rounds:
            return run_dir
    return None


class Progress:
    """Prints ``cell i/N name round r/R ETA`` after every round.

    ``pending`` is every cell still to run, in the order they run, so the
    ETA extrapolates over all of them, not only the current simulation's.
    """

    def __init__(self, pending: list[Cell], offset: int, total: int) -> None:
        self.pending = pending
        self.offset = offset
        self.total = total
        self.rounds_left = sum(c.cfg.rounds for c in pending)
        self.rounds_done = 0
        self.start = time.perf_counter()

    def __call__(self, index: int, server_round: int) -> None:
        """Report round ``server_round`` of pending cell ``index``."""
        if server_round == 0:
            return
        self.rounds_done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.rounds_done * (self.rounds_left - self.rounds_done)
        cell = self.pending[index]
        print(
            f"cell {self.offset + index + 1}/{self.total} {cell.name} "
            f"round {server_round}/{cell.cfg.rounds} elapsed {elapsed / 60:.1f} min "
            f"ETA {eta / 60:.1f} min",
            file=sys.stderr,
            flush=True,
        )

    def shifted(self, start: int) -> Callable[[int, int], None]:
        """The report for one simulation whose cell ``i`` is pending cell ``start + i``."""
        return lambda index, server_round: self(start + index, server_round)


def run_cells(
    todo: list[Cell],
    progress: bool = True,
    run: bool = True,
    only: Collection[str] | None = None,
) -> dict[str, Path]:
    """Run the cells not finished yet; return the finished cells' run folders by name.

    Cells sharing ``data.num_clients`` and the client resources run in one
    simulation. With ``run=False`` nothing runs: only the cells already
    finished are returned. With ``only`` (config names), only those configs'
    cells run; the other configs' finished cells are returned all the same.
    """
    from flsec_flower.app.simulation import run_experiments

    done = {c.name: path for c in todo if (path := finished_run(c)) is not None}
    chosen = [c for c in todo if only is None or c.point["config"] in only]
    pending = [c for c in chosen if c.name not in done] if run else []
    if progress:
        print(
            f"{len(done)}/{len(todo)} cells already finished, {len(pending)} to run",
            file=sys.stderr,
        )
    groups: dict[tuple, list[Cell]] = {}
    for c in pending:
        groups.setdefault((c.cfg.data.num_clients, repr(c.cfg.resources)), []).append(c)
    ordered = [c for group in groups.values() for c in group]
    report = Progress(ordered, len(done), len(todo)) if progress else None
    start = 0
    for group in groups.values():
        on_round = report.shifted(start) if report else None
        dirs = run_experiments([c.cfg for c in group], progress=False, on_round=on_round)
        done.update(zip((c.name for c in group), dirs, strict=True))
        start += len(group)
    return done


def check_only(only: Collection[str], todo: list[Cell], skipped: list[tuple[str, str]]) -> None:
    """Check that every name in ``only`` (``--only``) is a config that runs at this scale.

    Raises
    ------
    ConfigError
        Naming the config that is unknown or not run at this scale (and why).
    """
    runnable = list(dict.fromkeys(c.point["config"] for c in todo))
    reasons = dict(skipped)
    for name in only:
        if name in reasons:
            raise ConfigError(f"--only {name}: this config is not run here ({reasons[name]})")
        if name not in runnable:
            raise ConfigError(
                f"--only {name}: no such config in this baseline; "
                f"configs (their name): {', '.join(runnable)}"
            )


def config_value(cfg: ExperimentConfig, key: str) -> Any:
    """The resolved value of dotted ``key`` in ``cfg`` as a table label.

    A missing key or ``null`` (e.g. ``attack.name`` of a cell whose sweep set
    ``attack: null``) reads ``"none"``; a mapping or list reads as its one-line
    JSON, so every label can be grouped on.

    Examples
    --------
    >>> cfg = from_dict({"name": "x", "attack": None})
    >>> config_value(cfg, "attack.name"), config_value(cfg, "data.num_clients")
    ('none', 10)
    """
    value: Any = cfg.to_dict()
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "none" if value is None else _hashable(value)


def _hashable(value: Any) -> Any:
    return _value_label(value) if isinstance(value, (list, dict)) else value


def label_keys(baseline: Baseline) -> tuple[str, ...]:
    """The config keys the tables' ``rows`` and the figures' ``x`` read."""
    return (
        *(t["rows"] for t in baseline.spec.get("tables") or []),
        *(f["x"] for f in baseline.spec.get("figures") or []),
        *(g["rows"] for g in baseline.spec.get("grids") or []),
    )


def summary_frame(
    todo: list[Cell], run_dirs: dict[str, Path], keys: tuple[str, ...] = ()
) -> pd.DataFrame:
    """One row per finished cell: its sweep point, seed, config name and summary metrics.

    Swept mappings and lists are written as their one-line JSON. Each of
    ``keys`` that is not a swept key (a table's ``rows`` or a figure's ``x``
    may name any config key) is added as a column of the cell's resolved
    value (:func:`config_value`). Swept values keep their type.
    """
    rows, swept = [], set()
    for c in (c for c in todo if c.name in run_dirs):
        summary = pd.read_csv(run_dirs[c.name] / SUMMARY_FILE).iloc[0].to_dict()
        point = {k: _hashable(v) for k, v in c.point.items()}
        swept.update(point)
        resolved = {k: config_value(c.cfg, k) for k in keys if k not in point}
        rows.append({**summary, **resolved, **point, "run_dir": str(run_dirs[c.name])})
    frame = pd.DataFrame(rows)
    for key in swept:  # swept values keep their type (an integer stays one)
        frame[key] = pd.Series([row.get(key) for row in rows], index=frame.index, dtype=object)
    return frame


def _mean_std(values: pd.Series, percent: bool) -> str:
    col = pd.to_numeric(values, errors="coerce").dropna() * (100.0 if percent else 1.0)
    if col.empty:
        return "-"
    std = col.std(ddof=1) if len(col) > 1 else 0.0
    digits = 2 if percent else 4
    return f"{col.mean():.{digits}f} ± {std:.{digits}f}"


PENDING = "pending (not run)"
"""What a table shows for a row of the paper that no finished cell covers."""


def build_table(runs: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """A table of ``mean ± std`` over seeds: one row per value of ``spec["rows"]``.

    With a ``paper`` mapping, each metric column ``M`` is preceded by
    ``M (paper)``, the paper's value for that row, and rows of the paper that
    no finished cell covers show :data:`PENDING`.
    """
    rows_key, columns = spec["rows"], spec["columns"]
    percent = bool(spec.get("percent", False))
    paper = {str(k): v for k, v in (spec.get("paper") or {}).items()}
    subset = runs[runs["config"] == spec["config"]] if "config" in runs else runs.iloc[0:0]
    groups = dict(iter(subset.groupby(rows_key, sort=False))) if len(subset) else {}
    values = [*groups, *(k for k in paper if k not in {str(v) for v in groups})]
    out = []
    for value in values:
        group = groups.get(value)
        row: dict[str, Any] = {rows_key.rsplit(".", 1)[-1]: value}
        for header, metric in columns.items():
            if paper:
                row[f"{header} (paper)"] = (paper.get(str(value)) or {}).get(header, "-")
            if group is None:
                ours = PENDING
            else:
                ours = _mean_std(group[metric], percent) if metric in group else "-"
            row[f"{header} (ours)" if paper else header] = ours
        row["seeds"] = 0 if group is None else len(group)
        out.append(row)
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``table`` (values as written)."""
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def round_curves(subset: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and std over ``subset``'s cells of ``metric`` per round, from their metrics files.

    Rounds where the metric was not evaluated are left out.
    """
    frames = []
    for run_dir in subset["run_dir"]:
        df = load_results(run_dir)
        if metric in df:
            frames.append(df[["round", metric]].dropna())
    if not frames:
        return pd.DataFrame(columns=["mean", "std"])
    return pd.concat(frames).groupby("round")[metric].agg(["mean", "std"]).fillna(0.0)


def plot_figure(runs: pd.DataFrame, spec: dict[str, Any], path: Path) -> Path:
    """Mean of ``spec["y"]`` against ``spec["x"]`` per config, std as error bars.

    With ``x: round`` the curve is ``spec["y"]`` per round, read from each
    cell's metrics file (std as a band); ``by: <swept key>`` then draws one
    curve per value of that key in each config, named ``"<config label>,
    <key> <value>"`` unless ``labels`` maps ``"<config label>, <value>"``
    to a legend text.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    round_x = spec["x"] == "round"
    fig, ax = plt.subplots(figsize=(7, 4.5) if round_x else (5, 4))
    for label, config in spec["configs"].items():
        subset = runs[runs["config"] == config] if "config" in runs else runs.iloc[0:0]
        if round_x:
            by = spec.get("by")
            parts = subset.groupby(by, sort=False) if by and not subset.empty else [("", subset)]
            for value, part in parts:
                stats = round_curves(part, spec["y"]) if len(part) else pd.DataFrame()
                if stats.empty:
                    continue
                name = f"{label}, {by.rsplit('.', 1)[-1]} {value}" if by else label
                name = (spec.get("labels") or {}).get(f"{label}, {value}", name)
                ax.plot(stats.index, stats["mean"], marker=".", label=name)
                low, high = stats["mean"] - stats["std"], stats["mean"] + stats["std"]
                ax.fill_between(stats.index, low, high, alpha=0.2)
            continue
        if subset.empty or spec["y"] not in subset:
            continue
        stats = subset.groupby(spec["x"])[spec["y"]].agg(["mean", "std"]).fillna(0.0)
        ax.errorbar(
            stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=label
        )
    ax.set(
        xlabel=spec.get("xlabel", spec["x"]),
        ylabel=spec.get("ylabel", spec["y"]),
    )
    ax.set_title(spec.get("title", ""), fontsize="medium")
    if spec.get("log_x"):
        ax.set_xscale("log")
    if ax.lines:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build_grid(runs: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """One metric as ``mean ± std`` over seeds: a row per value of ``rows``, a column per config.

    ``spec["columns"]`` maps a column header to an experiment name, so one
    table compares several configs (e.g. each rule with and without
    bucketing) on the same rows (e.g. the attacks). With a ``paper`` mapping
    (row value to text) a ``paper`` column comes first. A row value that a
    config has no finished cell for reads :data:`PENDING`; ``seeds`` is the
    fewest seeds of any column in the row.

    Examples
    --------
    >>> runs = pd.DataFrame({"config": ["a", "a", "b"], "attack.name": ["x", "x", "x"],
    ...                      "final_accuracy": [0.5, 0.7, 0.9]})
    >>> spec = {"rows": "attack.name", "metric": "final_accuracy", "percent": True,
    ...         "columns": {"A": "a", "B": "b"}}
    >>> build_grid(runs, spec).to_dict("records")
    [{'name': 'x', 'A': '60.00 ± 14.14', 'B': '90.00 ± 0.00', 'seeds': 1}]
    """
    rows_key, metric = spec["rows"], spec["metric"]
    percent = bool(spec.get("percent", False))
    paper = {str(k): v for k, v in (spec.get("paper") or {}).items()}
    groups: dict[str, dict[Any, pd.DataFrame]] = {}
    for header, config in spec["columns"].items():
        subset = runs[runs["config"] == config] if "config" in runs else runs.iloc[0:0]
        groups[header] = dict(iter(subset.groupby(rows_key, sort=False))) if len(subset) else {}
    values: list[Any] = []
    for by_value in groups.values():
        values += [v for v in by_value if v not in values]
    values += [k for k in paper if k not in {str(v) for v in values}]
    out = []
    for value in values:
        row: dict[str, Any] = {rows_key.rsplit(".", 1)[-1]: value}
        if paper:
            row["paper"] = paper.get(str(value), "-")
        counts = []
        for header, by_value in groups.items():
            group = by_value.get(value)
            if group is None:
                row[header] = PENDING
                counts.append(0)
            else:
                row[header] = _mean_std(group[metric], percent) if metric in group else "-"
                counts.append(len(group))
        row["seeds"] = min(counts)
        out.append(row)
    return pd.DataFrame(out)


def write_grids(
    runs: pd.DataFrame, specs: list[dict[str, Any]], out: Path, scale: str
) -> list[Path]:
    """Write every grid (:func:`build_grid`) as ``<name>.md`` and ``<name>.csv``."""
    written = []
    for spec in specs:
        written += write_table(build_grid(runs, spec), spec, out, scale)
    return written


def write_table(table: pd.DataFrame, spec: dict[str, Any], out: Path, scale: str) -> list[Path]:
    """Write one table as ``<name>.md`` (title, scale note) and ``<name>.csv``."""
    md, csv = out / f"{spec['name']}.md", out / f"{spec['name']}.csv"
    note = f"Scale `{scale}`; ours: mean ± std over the seeds column."
    body = markdown(table) if len(table) else f"{PENDING}: no finished cell.\n"
    md.write_text(f"{spec.get('title', spec['name'])}\n\n{note}\n\n{body}")
    table.to_csv(csv, index=False)
    return [md, csv]


def selection_shares(run_dir: str | Path) -> pd.Series:
    """Share of a run's rounds in which each client was in the rule's selection.

    Read from the ``selected`` partition ids that rules such as Krum record
    per round in ``metrics.jsonl`` (with bucketing, every member of the
    selected bucket). Clients that took part but were never selected count
    0; rounds without a selection are left out. Empty when the rule records
    no selection.
    """
    df = load_results(run_dir)
    if "selected" not in df:
        return pd.Series(dtype=float)
    rounds = df[df["selected"].notna() & (df["round"] > 0)]
    if rounds.empty:
        return pd.Series(dtype=float)
    listed = [*rounds["selected"], *rounds.get("participants", pd.Series()).dropna()]
    counts = pd.Series(0.0, index=sorted({p for ids in listed for p in ids}))
    for sel in rounds["selected"]:
        counts.loc[sorted(set(sel))] += 1.0
    return counts / len(rounds)


def selection_table(runs: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Mean and std over seeds of :func:`selection_shares`, per series and client.

    A series is a ``configs`` label, or ``"<label>, <by> <value>"`` per value
    of the swept key ``by`` (renamed by ``labels["<label>, <value>"]``).
    Columns: ``series``, ``partition_id``, ``mean``, ``std``, ``seeds``.
    """
    by = spec.get("by")
    rows = []
    for label, config in spec["configs"].items():
        subset = runs[runs["config"] == config] if "config" in runs else runs.iloc[0:0]
        parts = subset.groupby(by, sort=False) if by and not subset.empty else [("", subset)]
        for value, part in parts:
            if part.empty:
                continue
            shares = [s for s in map(selection_shares, part["run_dir"]) if len(s)]
            if not shares:
                continue
            name = f"{label}, {by.rsplit('.', 1)[-1]} {value}" if by else label
            name = (spec.get("labels") or {}).get(f"{label}, {value}", name)
            stats = pd.concat(shares, axis=1).fillna(0.0)
            for pid, values in stats.iterrows():
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                rows.append(
                    {
                        "series": name,
                        "partition_id": int(pid),
                        "mean": float(values.mean()),
                        "std": std,
                        "seeds": len(values),
                    }
                )
    return pd.DataFrame(rows, columns=["series", "partition_id", "mean", "std", "seeds"])


def plot_selection(runs: pd.DataFrame, spec: dict[str, Any], path: Path) -> list[Path]:
    """Selection histogram: share of rounds each client was selected, one bar group per client.

    Bars are :func:`selection_table`'s means (std as error bars), one colour
    per series; the numbers are written beside the PNG as ``<name>.csv``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = selection_table(runs, spec)
    table.to_csv(path.with_suffix(".csv"), index=False)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = list(dict.fromkeys(table["series"]))
    width = 0.8 / max(1, len(series))
    for k, name in enumerate(series):
        part = table[table["series"] == name]
        x = part["partition_id"] + (k - (len(series) - 1) / 2) * width
        ax.bar(x, part["mean"], width, yerr=part["std"], capsize=2, label=name)
    ax.set(xlabel="worker (partition id)", ylabel="share of rounds selected")
    ax.set_title(spec.get("title", ""), fontsize="medium")
    if series:
        ax.set_xticks(sorted(set(table["partition_id"])))
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path, path.with_suffix(".csv")]


def write_outputs(baseline: Baseline, runs: pd.DataFrame, out: Path, scale: str) -> list[Path]:
    """Write ``cells.csv``, every table as Markdown and CSV, every figure as PNG."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "cells.csv"]
    runs.to_csv(written[0], index=False)
    for spec in baseline.spec.get("tables") or []:
        written += write_table(build_table(runs, spec), spec, out, scale)
    for spec in baseline.spec.get("figures") or []:
        written.append(plot_figure(runs, spec, out / f"{spec['name']}.png"))
    written += write_grids(runs, baseline.spec.get("grids") or [], out, scale)
    for spec in baseline.spec.get("histograms") or []:
        written += plot_selection(runs, spec, out / f"{spec['name']}.png")
    return written


def run_baseline(
    slug: str,
    scale: str = "quick",
    out: Path | None = None,
    seeds: list[int] | None = None,
    root: Path = BASELINES_DIR,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    run: bool = True,
    only: list[str] | None = None,
) -> list[Path]:
    """Run (or resume) baseline ``slug`` at ``scale``; return the files written.

    ``out`` defaults to ``runs/baselines/<slug>/<scale>``; ``extra`` holds
    dotted-key overrides applied after the scale's. With ``run=False`` the
    tables are written from the cells already finished (a partial result
    while a run is under way); nothing runs. ``only`` names configs (their
    ``name``) whose cells alone run; the tables still read every finished
    cell, so the other configs' rows keep what is already in ``out``.

    Raises
    ------
    ConfigError
        If the scale, a config or a name in ``only`` is invalid.
    """
    baseline = load_baseline(slug, root)
    out = Path(out) if out is not None else Path("runs") / "baselines" / slug / scale
    todo, skipped = cells(baseline, scale, seeds, out, extra)
    if only is not None:
        check_only(only, todo, skipped)
    for name, reason in skipped:
        print(f"{name}: not run here ({reason})", file=sys.stderr)
    run_dirs = run_cells(todo, progress, run, only)
    return write_outputs(baseline, summary_frame(todo, run_dirs, label_keys(baseline)), out, scale)
