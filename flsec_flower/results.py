"""Run directories: resolved config, per-round JSON lines, summary CSV and plots.

A run directory holds

- ``config.yaml``: the resolved experiment;
- ``metrics.jsonl``: one JSON object per round, appended and synced at once
  (a killed run loses nothing already recorded; a line cut short by a kill
  is dropped by :func:`load_results`); in the attack's rounds
  ``attack_round`` is true and ``attack_missed`` says whether no attacker
  took part (client sampling left them out);
- ``status.json`` and ``checkpoint.pt``: the run's status and its resume
  point (:mod:`flsec_flower.checkpoint`);
- ``summary.csv``: one row with the final and best metrics and the run's own
  ``wall_seconds`` (from :meth:`RunRecorder.start`, not from process start),
  written at the end;
- ``accuracy_loss.png``, ``per_class_accuracy.png`` and, for rules that
  select clients, ``selection_histogram.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from flsec_flower.checkpoint import atomic_write_bytes, save_checkpoint, write_status
from flsec_flower.config import ConfigError, ExperimentConfig
from flsec_flower.experiment import attack_round
from flsec_flower.metrics import detection_scores, precision_recall_f1

if TYPE_CHECKING:
    import pandas as pd

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.csv"
CONFIG_FILE = "config.yaml"


def new_run_dir(cfg: ExperimentConfig) -> Path:
    """Create a fresh directory ``<output_dir>/<name>-<timestamp>[-k]`` for a run.

    Raises
    ------
    ConfigError
        If ``output_dir`` cannot be created (e.g. it lies under a regular file).
    """
    root = Path(cfg.output_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as err:
        raise ConfigError(f"output_dir: cannot create {str(root)!r}: {err.strerror}") from err
    return fresh_dir(root, cfg.name)


def fresh_dir(root: Path, prefix: str) -> Path:
    """Create and return a new folder ``<root>/<prefix>-<timestamp>[-k]`` (never an old one)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = root / (f"{prefix}-{stamp}" + (f"-{k}" if k else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not create a folder {prefix}-{stamp}-k under {root}")


def _clean(value: object) -> object:
    """Make a value JSON-safe: non-finite floats become ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class RunRecorder:
    """Receives each round's record, writes it, shows progress, finishes the run.

    Parameters
    ----------
    run_dir : pathlib.Path
        The run's directory (created by :func:`new_run_dir`).
    cfg : ExperimentConfig
        The experiment; ``config.yaml`` is written at once.
    malicious : frozenset of int
        Attackers' partition ids, to score the defence's flags.
    progress : bool
        Show a progress bar (round, accuracy, seconds per round).
    on_record : callable, optional
        Called with the round number after each round's line is written
        (progress reports of a caller running several experiments).
    resume_round : int, optional
        Continue a run whose checkpoint is at this round: lines of later
        rounds (written before the kill, after the checkpoint) are dropped;
        ``-1`` (no checkpoint) drops every line and starts again.

    Attributes
    ----------
    checkpoint_state : callable, optional
        Returns the state to checkpoint after each completed round (set by
        the server; none: no checkpoint).
    rounds_completed : int
        The last round recorded.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: ExperimentConfig,
        malicious: frozenset[int] = frozenset(),
        progress: bool = True,
        on_record: Callable[[int], None] | None = None,
        resume_round: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.on_record = on_record
        self.cfg = cfg
        self.malicious = malicious
        self.finished = False
        self.checkpoint_state: Callable[[], dict] | None = None
        self._start = self._last_time = time.perf_counter()
        self.wall_seconds: float | None = None
        if resume_round is None:
            (self.run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            self.rounds_completed = 0
        else:
            _keep_rounds(self.run_dir / METRICS_FILE, resume_round)
            self.rounds_completed = max(resume_round, 0)
        self.mark("running")
        self.progress = progress
        self._bar = None

    def start(self) -> None:
        """Start the run's clock (several runs may share one process and be built together)."""
        self._start = self._last_time = time.perf_counter()

    def record(self, server_round: int, record: dict) -> None:
        """Append the round's line to ``metrics.jsonl`` (flushed) and update progress."""
        now = time.perf_counter()
        line = {"round": server_round, "seconds": now - self._last_time}
        self._last_time = now
        line.update(record)
        if self.malicious and attack_round(self.cfg, server_round):
            line["attack_round"] = True
            line["attack_missed"] = not record.get("attack_participants")
        participants = record.get("participants")
        if self.malicious and participants:
            flagged = self._flagged(record)
            if flagged is not None:
                line.update(
                    {
                        f"detect_{k}": v
                        for k, v in detection_scores(participants, flagged, self.malicious).items()
                    }
                )
        with open(self.run_dir / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(_clean(line)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if server_round > 0:
            self.rounds_completed = server_round
            if self.checkpoint_state is not None:
                save_checkpoint(self.run_dir, {"round": server_round, **self.checkpoint_state()})
            if server_round < self.cfg.rounds:
                self.mark("running")
        if self.progress and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.cfg.rounds, desc=self.cfg.name, unit="round", leave=True)
        if self._bar is not None and server_round > 0:
            acc = record.get("accuracy")
            self._bar.set_postfix(
                acc="-" if acc is None else f"{acc:.3f}", s_per_round=f"{line['seconds']:.2f}"
            )
            self._bar.update(1)
        if server_round >= self.cfg.rounds:
            self.finish()
        if self.on_record is not None:
            self.on_record(server_round)

    @staticmethod
    def _flagged(record: dict) -> list[int] | None:
        if record.get("flagged") is not None:
            return record["flagged"]
        if record.get("selected") is not None:
            return sorted(set(record["participants"]) - set(record["selected"]))
        return None

    def mark(self, status: str, message: str = "") -> None:
        """Write the run's ``status.json`` (see :func:`flsec_flower.checkpoint.write_status`)."""
        write_status(self.run_dir, status, self.rounds_completed, self.cfg.rounds, message)

    def finish(self) -> None:
        """Write the summary CSV and the plots (once), then mark the run completed."""
        if self.finished:
            return
        self.finished = True
        self.wall_seconds = time.perf_counter() - self._start
        if self._bar is not None:
            self._bar.close()
        df = load_results(self.run_dir)
        summary = summarize(df, self.cfg).assign(wall_seconds=self.wall_seconds)
        summary.to_csv(self.run_dir / SUMMARY_FILE, index=False)
        from flsec_flower.plots import plot_run

        plot_run(df, self.run_dir)
        self.mark("completed")


def _read_lines(file: Path) -> list[dict]:
    """The JSON lines of ``file``; a last line cut short by a kill is dropped."""
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{file}: line {number} is not valid JSON ({err.msg})") from err
    return rows


def _keep_rounds(file: Path, last_round: int) -> None:
    """Rewrite ``metrics.jsonl`` atomically with the rounds up to ``last_round`` only."""
    rows = _read_lines(file) if file.is_file() else []
    text = "".join(json.dumps(r) + "\n" for r in rows if r.get("round", 0) <= last_round)
    atomic_write_bytes(file, text.encode())


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a run directory's ``metrics.jsonl`` into a DataFrame, one row per round.

    A last line cut short (the process was killed while writing it) is dropped.

    Raises
    ------
    FileNotFoundError
        If ``path`` has no ``metrics.jsonl``.
    ValueError
        If a line other than the last is not valid JSON.
    """
    file = Path(path) / METRICS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: is {path} a flsec run directory?")
    import pandas as pd  # not at module load: the server app imports this module

    return pd.DataFrame(_read_lines(file))


def after_attack(df: pd.DataFrame, evaluated: pd.DataFrame) -> dict[str, float]:
    """Accuracy metrics from the first attack round on (Bagdasaryan et al.'s durability).

    ``df`` holds every recorded round, ``evaluated`` those with an evaluation.
    For every scalar ``*accuracy`` column ``m`` of the evaluated rounds:
    ``attack_m``, its value right after the first round with
    ``attack_round`` (the global model the attack produced, NaN if that
    round was not evaluated), and ``mean_after_attack_m``, its mean over the
    evaluated rounds from that round on (the paper's mean backdoor accuracy
    over the rounds of a repeated attack). Empty without an attack round.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"round": [1, 2, 3], "attack_round": [None, True, None],
    ...                    "backdoor_accuracy": [0.1, 0.9, 0.5]})
    >>> after_attack(df, df)
    {'attack_backdoor_accuracy': 0.9, 'mean_after_attack_backdoor_accuracy': 0.7}
    """
    import pandas as pd  # not at module load: the server app imports this module

    if "attack_round" not in df:
        return {}
    flags = df["attack_round"].fillna(False).astype(bool)
    if not flags.any():
        return {}
    first = df.loc[flags, "round"].min()
    at, after = evaluated[evaluated["round"] == first], evaluated[evaluated["round"] >= first]
    out: dict[str, float] = {}
    for col in evaluated.columns:
        values = pd.to_numeric(after[col], errors="coerce") if col.endswith("accuracy") else None
        if values is None or values.isna().all():
            continue
        out[f"attack_{col}"] = float(at[col].iloc[0]) if len(at) else math.nan
        out[f"mean_after_attack_{col}"] = float(values.mean())
    return out


def summarize(df: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """One row: the final value of each scalar metric, best accuracy, detection over the run.

    ``rounds`` counts the rounds recorded in ``df`` (fewer than ``cfg.rounds``
    for a run that did not finish).
    """
    completed = int(df["round"].max()) if "round" in df and len(df) else 0
    row: dict[str, object] = {"name": cfg.name, "rounds": completed, "seed": cfg.seed}
    evaluated = df[df["accuracy"].notna()] if "accuracy" in df else df.iloc[0:0]
    if len(evaluated):
        last = evaluated.iloc[-1]
        for col in evaluated.columns:
            if col.endswith("accuracy") or col in ("loss", "bias"):
                value = last[col]
                if isinstance(value, (int, float)):
                    row[f"final_{col}"] = value
        row["best_accuracy"] = float(evaluated["accuracy"].max())
        row.update(after_attack(df, evaluated))
    if "seconds" in df:
        row["mean_seconds_per_round"] = float(df.loc[df["round"] > 0, "seconds"].mean())
    if "attack_missed" in df:
        row["attack_rounds_missed"] = int(df["attack_missed"].fillna(False).astype(bool).sum())
    if "num_rejected" in df:
        row["total_rejected"] = int(df["num_rejected"].fillna(0).sum())
    if "detect_tp" in df:
        tp, fp, fn = (int(df[f"detect_{k}"].fillna(0).sum()) for k in ("tp", "fp", "fn"))
        row.update({f"detect_{k}": v for k, v in precision_recall_f1(tp, fp, fn).items()})
    import pandas as pd  # not at module load: the server app imports this module

    return pd.DataFrame([row])
