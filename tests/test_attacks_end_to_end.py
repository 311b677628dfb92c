"""Attacks against defences through Flower and Ray on digits (10 clients, a few rounds).

The module's five runs share one simulation (one Ray start, one set of client
actors; :func:`~flsec_flower.app.simulation.run_experiments`); each test reads
its runs' metrics.
"""

import pandas as pd
import pytest

from flsec_flower import load_results
from flsec_flower.app.simulation import run_experiments
from flsec_flower.config import from_dict

pytestmark = pytest.mark.slow

SINGLE_SHOT = {
    "name": "model_replacement",
    "num_malicious": 1,
    "start_round": 4,
    "single_shot": True,
}
SIGN_FLIP = {"name": "sign_flip", "num_malicious": 2, "params": {"scale": 10.0}}
FAIRNESS = {"name": "fairness_attack", "num_malicious": 1, "params": {"target_classes": [0, 1]}}
RUNS = {
    "mr-fedavg": (4, {"name": "fedavg"}, SINGLE_SHOT),
    "mr-krum": (4, {"name": "krum", "params": {"f": 1}}, SINGLE_SHOT),
    "sf-fedavg": (4, {"name": "fedavg"}, SIGN_FLIP),
    "sf-median": (4, {"name": "median"}, SIGN_FLIP),
    "fair-fedavg": (3, {"name": "fedavg"}, FAIRNESS),
}
"""Run name -> (rounds, strategy, attack)."""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """Each run's metrics by round, all runs in one simulation."""
    out = tmp_path_factory.mktemp("attacks")
    cfgs = [
        from_dict(
            {
                "name": name,
                "rounds": rounds,
                "output_dir": str(out),
                "data": {"dataset": "digits", "num_clients": 10, "partition": {"kind": "iid"}},
                "model": {"name": "mlp"},
                "training": {"local_epochs": 2, "lr": 0.05},
                "strategy": strategy,
                "attack": attack,
            }
        )
        for name, (rounds, strategy, attack) in RUNS.items()
    ]
    run_dirs = run_experiments(cfgs, progress=False)
    return {
        name: load_results(run_dir).set_index("round")
        for name, run_dir in zip(RUNS, run_dirs, strict=True)
    }


def test_single_shot_model_replacement_lands_on_fedavg_not_on_krum(results):
    fedavg, krum = results["mr-fedavg"], results["mr-krum"]
    assert fedavg.loc[3, "backdoor_accuracy"] < 0.2  # before the shot
    assert fedavg.loc[4, "backdoor_accuracy"] >= 0.9  # the round it lands
    assert krum.loc[4, "backdoor_accuracy"] < 0.2
    assert krum.loc[4, "detect_recall"] == 1.0  # Krum did not pick the attacker


def test_sign_flip_breaks_fedavg_not_median(results):
    fedavg, median = results["sf-fedavg"], results["sf-median"]
    assert fedavg.loc[4, "accuracy"] <= 0.15  # 10 classes: chance level
    assert median.loc[4, "accuracy"] >= 0.2
    assert median.loc[4, "accuracy"] > median.loc[1, "accuracy"]


def test_fairness_attack_keeps_target_classes_and_drops_the_others(results):
    df = results["fair-fedavg"]
    assert df.loc[3, "target_accuracy"] >= 0.9
    assert df.loc[3, "other_accuracy"] <= 0.1
