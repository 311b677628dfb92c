"""End to end through Flower's Simulation Engine and Ray (digits, 4 clients, 2 rounds)."""

import json

import pandas as pd
import pytest

from flsec_flower import load_results
from flsec_flower.app.simulation import run_experiment
from flsec_flower.config import from_dict

pytestmark = pytest.mark.slow


def test_digits_two_rounds_through_flower_and_ray(tmp_path):
    cfg = from_dict(
        {
            "name": "e2e",
            "rounds": 2,
            "output_dir": str(tmp_path),
            "data": {"dataset": "digits", "num_clients": 4, "partition": {"kind": "iid"}},
            "model": {"name": "mlp"},
            "training": {"local_epochs": 2, "lr": 0.05},
        }
    )
    run_dir = run_experiment(cfg, progress=False)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [0, 1, 2]
    assert lines[2]["participants"] == [0, 1, 2, 3]
    assert lines[2]["num_rejected"] == 0
    assert lines[2]["accuracy"] > max(0.3, lines[0]["accuracy"] + 0.2)  # chance is 0.1
    df = load_results(run_dir)
    assert list(df["round"]) == [0, 1, 2]
    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary.loc[0, "final_accuracy"] == pytest.approx(lines[2]["accuracy"])
    for png in ("accuracy_loss.png", "per_class_accuracy.png"):
        assert (run_dir / png).stat().st_size > 1000
    assert "e2e" in (run_dir / "config.yaml").read_text()
