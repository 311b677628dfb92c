"""Sweep tables over dict- and list-valued keys; one folder per sweep."""

import pandas as pd

from flsec_flower.app.sweep import cell_label, mean_std_table, write_sweep
from flsec_flower.config import expand_sweep, from_dict

KRUM = {"name": "krum", "params": {"f": 2}}
BUCKETED = {
    "name": "krum",
    "params": {"f": 2},
    "wrappers": [{"name": "bucketing", "params": {"s": 2}}],
}


def test_dict_and_list_values_get_readable_hashable_labels():
    assert cell_label(KRUM) == "{name: krum, params: {f: 2}}"
    assert cell_label([1, 2]) == "[1, 2]"
    assert cell_label(0.5) == 0.5


def test_mean_std_table_groups_runs_by_strategy_dict_labels():
    runs = pd.DataFrame(
        {
            "seed": [0, 1, 0, 1],
            "strategy": [
                cell_label(KRUM),
                cell_label(KRUM),
                cell_label(BUCKETED),
                cell_label(BUCKETED),
            ],
            "final_accuracy": [0.5, 0.7, 0.8, 0.8],
        }
    )
    table = mean_std_table(runs, ["seed", "strategy"], ["final_accuracy"])
    assert table["strategy"].tolist() == [cell_label(KRUM), cell_label(BUCKETED)]
    # mean 0.6, sample std sqrt(0.02) = 0.1414; the second group has no spread
    assert table["final_accuracy"].tolist() == ["0.6000 ± 0.1414", "0.8000 ± 0.0000"]


def test_each_sweep_writes_a_new_folder(tmp_path):
    runs = pd.DataFrame({"seed": [0], "final_accuracy": [0.5]})
    first = write_sweep(runs, runs, tmp_path, "s")
    second = write_sweep(runs.assign(final_accuracy=0.9), runs, tmp_path, "s")
    assert first.parent != second.parent
    assert pd.read_csv(first.parent / "sweep-runs.csv")["final_accuracy"].tolist() == [0.5]
    assert pd.read_csv(second.parent / "sweep-runs.csv")["final_accuracy"].tolist() == [0.9]


def test_a_sweep_over_whole_strategy_blocks_expands_to_each_block():
    cfg = from_dict({"sweep": {"strategy": [KRUM, BUCKETED]}})
    (p1, c1), (_, c2) = expand_sweep(cfg)
    assert (c1.strategy.name, c1.strategy.wrappers) == ("krum", [])
    assert c2.strategy.wrappers[0].name == "bucketing" and c2.strategy.wrappers[0].params == {
        "s": 2
    }
    assert p1 == {"strategy": KRUM}
