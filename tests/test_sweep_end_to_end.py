"""A sweep runs its points in one simulation; each point equals the same run alone."""

import pandas as pd
import pytest
import yaml

from flsec_flower import load_results
from flsec_flower.app.cli import main
from flsec_flower.app.simulation import run_experiment
from flsec_flower.config import load_config

pytestmark = pytest.mark.slow


def test_sweep_points_match_runs_alone(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    raw = {
        "name": "sw",
        "rounds": 2,
        "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "digits", "num_clients": 4, "partition": {"kind": "iid"}},
        "training": {"local_epochs": 2},
        "strategy": {"name": "median"},
        "attack": {"name": "sign_flip", "num_malicious": 1},
        "sweep": {"seed": [0, 1], "strategy.name": ["median", "fedavg"]},
    }
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "± " in out and "strategy.name" in out
    (folder,) = (tmp_path / "runs").glob("sw-sweep-*")
    runs = pd.read_csv(folder / "sweep-runs.csv")
    assert len(runs) == 4
    summary = pd.read_csv(folder / "sweep-summary.csv")
    assert list(summary["strategy.name"]) == ["median", "fedavg"]
    assert list(summary["runs"]) == [2, 2]

    alone_cfg = load_config(
        path, ["sweep={}", "seed=1", "strategy.name=fedavg", f"output_dir={tmp_path / 'alone'}"]
    )
    alone = load_results(run_experiment(alone_cfg, progress=False))
    point = runs[(runs["seed"] == 1) & (runs["strategy.name"] == "fedavg")].iloc[0]
    together = load_results(point["run_dir"])
    assert list(together["accuracy"]) == list(alone["accuracy"])
    assert together["participants"].iloc[-1] == [0, 1, 2, 3]


def test_sweep_over_strategy_dicts_writes_a_table_and_keeps_earlier_sweeps(tmp_path, capsys):
    path = tmp_path / "rules.yaml"
    krum = {"name": "krum", "params": {"f": 1}}
    bucketed = {**krum, "wrappers": [{"name": "bucketing", "params": {"s": 2}}]}
    raw = {
        "name": "rules",
        "rounds": 2,
        "output_dir": str(tmp_path / "runs"),
        # 10 clients in buckets of 2 leave Krum 5 inputs, enough for f = 1
        "data": {"dataset": "digits", "num_clients": 10, "partition": {"kind": "iid"}},
        "model": {"name": "logreg"},
        "sweep": {"strategy": [krum, bucketed]},
    }
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "-q"]) == 0
    assert main(["run", str(path), "-q"]) == 0
    folders = sorted((tmp_path / "runs").glob("rules-sweep-*"))
    assert len(folders) == 2
    for folder in folders:
        table = pd.read_csv(folder / "sweep-summary.csv")
        assert list(table["strategy"]) == [
            "{name: krum, params: {f: 1}}",
            "{name: krum, params: {f: 1}, wrappers: [{name: bucketing, params: {s: 2}}]}",
        ]
        assert list(table["runs"]) == [1, 1]
        runs = pd.read_csv(folder / "sweep-runs.csv")
        assert (runs["wall_seconds"] > 0).all()
