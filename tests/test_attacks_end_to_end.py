"""Attacks against defences through Flower and Ray on digits (10 clients, a few rounds)."""

import pytest

from flsec_flower import load_results
from flsec_flower.app.simulation import run_experiment
from flsec_flower.config import from_dict

pytestmark = pytest.mark.slow


def run(tmp_path, name, rounds, strategy, attack):
    cfg = from_dict(
        {
            "name": name,
            "rounds": rounds,
            "output_dir": str(tmp_path),
            "data": {"dataset": "digits", "num_clients": 10, "partition": {"kind": "iid"}},
            "model": {"name": "mlp"},
            "training": {"local_epochs": 2, "lr": 0.05},
            "strategy": strategy,
            "attack": attack,
        }
    )
    return load_results(run_experiment(cfg, progress=False)).set_index("round")


def test_single_shot_model_replacement_lands_on_fedavg_not_on_krum(tmp_path):
    attack = {
        "name": "model_replacement",
        "num_malicious": 1,
        "start_round": 4,
        "single_shot": True,
    }
    fedavg = run(tmp_path, "mr-fedavg", 4, {"name": "fedavg"}, attack)
    krum = run(tmp_path, "mr-krum", 4, {"name": "krum", "params": {"f": 1}}, attack)
    assert fedavg.loc[3, "backdoor_accuracy"] < 0.2  # before the shot
    assert fedavg.loc[4, "backdoor_accuracy"] >= 0.9  # the round it lands
    assert krum.loc[4, "backdoor_accuracy"] < 0.2
    assert krum.loc[4, "detect_recall"] == 1.0  # Krum did not pick the attacker


def test_sign_flip_breaks_fedavg_not_median(tmp_path):
    attack = {"name": "sign_flip", "num_malicious": 2, "params": {"scale": 10.0}}
    fedavg = run(tmp_path, "sf-fedavg", 4, {"name": "fedavg"}, attack)
    median = run(tmp_path, "sf-median", 4, {"name": "median"}, attack)
    assert fedavg.loc[4, "accuracy"] <= 0.15  # 10 classes: chance level
    assert median.loc[4, "accuracy"] >= 0.2
    assert median.loc[4, "accuracy"] > median.loc[1, "accuracy"]


def test_fairness_attack_keeps_target_classes_and_drops_the_others(tmp_path):
    attack = {"name": "fairness_attack", "num_malicious": 1, "params": {"target_classes": [0, 1]}}
    df = run(tmp_path, "fair-fedavg", 3, {"name": "fedavg"}, attack)
    assert df.loc[3, "target_accuracy"] >= 0.9
    assert df.loc[3, "other_accuracy"] <= 0.1
