from pathlib import Path

import pandas as pd

from flsec_flower.app import registry
from flsec_flower.app.demo import CELLS, demo_config
from flsec_flower.app.sweep import mean_std_table
from flsec_flower.config import from_dict
from flsec_flower.metrics import detection_scores


def test_every_demo_cell_is_a_valid_config(tmp_path):
    assert len(CELLS) >= 12
    for split, attack, defence in CELLS:
        cfg = from_dict(demo_config(split, attack, defence, 20, Path(tmp_path)))
        registry.validate_names(cfg.strategy, cfg.attack.name if cfg.attack else None)
        assert cfg.data.dataset == "digits" and cfg.data.num_clients == 10


def test_every_demo_defence_has_a_no_attack_reference_on_its_split():
    clean = {(split, defence) for split, attack, defence in CELLS if attack == "none"}
    for split, attack, defence in CELLS:
        if attack != "backdoor":
            assert (split, defence) in clean, (split, attack, defence)


def test_mean_std_table_groups_seeds():
    runs = pd.DataFrame(
        {
            "seed": [0, 1, 0, 1],
            "data.partition.alpha": [1.0, 1.0, 0.1, 0.1],
            "final_accuracy": [0.8, 0.6, 0.5, 0.5],
        }
    )
    table = mean_std_table(runs, ["seed", "data.partition.alpha"], ["final_accuracy", "missing"])
    assert list(table["data.partition.alpha"]) == [1.0, 0.1]
    assert list(table["runs"]) == [2, 2]
    assert list(table["final_accuracy"]) == ["0.7000 ± 0.1414", "0.5000 ± 0.0000"]


def test_detection_scores_by_hand():
    s = detection_scores([0, 1, 2, 3, 4], flagged=[0, 1, 9], malicious=[0, 4])
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (1, 1, 1, 2)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    none = detection_scores([0, 1], flagged=[], malicious=[1])
    assert none["recall"] == 0.0 and none["precision"] != none["precision"]  # nan
