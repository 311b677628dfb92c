"""Run directories: resolved config, per-round JSON lines, summary CSV and plots.

A run directory holds

- ``config.yaml``: the resolved experiment;
- ``metrics.jsonl``: one JSON object per round, appended and flushed at once
  (a killed run loses nothing already recorded); in the attack's rounds
  ``attack_round`` is true and ``attack_missed`` says whether no attacker
  took part (client sampling left them out);
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

import pandas as pd
import yaml

from flsec_flower.config import ExperimentConfig
from flsec_flower.experiment import attack_round
from flsec_flower.metrics import detection_scores, precision_recall_f1

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.csv"
CONFIG_FILE = "config.yaml"


def new_run_dir(cfg: ExperimentConfig) -> Path:
    """Create a fresh directory ``<output_dir>/<name>-<timestamp>[-k]`` for a run."""
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = root / (f"{cfg.name}-{stamp}" + (f"-{k}" if k else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not create a run directory under {root}")


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
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: ExperimentConfig,
        malicious: frozenset[int] = frozenset(),
        progress: bool = True,
        on_record: Callable[[int], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.on_record = on_record
        self.cfg = cfg
        self.malicious = malicious
        self.finished = False
        self._start = self._last_time = time.perf_counter()
        self.wall_seconds: float | None = None
        (self.run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
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

    def finish(self) -> None:
        """Write the summary CSV and the plots (once)."""
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


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a run directory's ``metrics.jsonl`` into a DataFrame, one row per round.

    Raises
    ------
    FileNotFoundError
        If ``path`` has no ``metrics.jsonl``.
    """
    file = Path(path) / METRICS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: is {path} a flsec run directory?")
    rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """One row: the final value of each scalar metric, best accuracy, detection over the run."""
    row: dict[str, object] = {"name": cfg.name, "rounds": cfg.rounds, "seed": cfg.seed}
    evaluated = df[df["accuracy"].notna()] if "accuracy" in df else df.iloc[0:0]
    if len(evaluated):
        last = evaluated.iloc[-1]
        for col in evaluated.columns:
            if col.endswith("accuracy") or col in ("loss", "bias"):
                value = last[col]
                if isinstance(value, (int, float)):
                    row[f"final_{col}"] = value
        row["best_accuracy"] = float(evaluated["accuracy"].max())
    if "seconds" in df:
        row["mean_seconds_per_round"] = float(df.loc[df["round"] > 0, "seconds"].mean())
    if "attack_missed" in df:
        row["attack_rounds_missed"] = int(df["attack_missed"].fillna(False).astype(bool).sum())
    if "num_rejected" in df:
        row["total_rejected"] = int(df["num_rejected"].fillna(0).sum())
    if "detect_tp" in df:
        tp, fp, fn = (int(df[f"detect_{k}"].fillna(0).sum()) for k in ("tp", "fp", "fn"))
        row.update({f"detect_{k}": v for k, v in precision_recall_f1(tp, fp, fn).items()})
    return pd.DataFrame([row])
