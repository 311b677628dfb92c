"""The example YAML of each paper's setup loads, validates and runs 2 rounds at tiny size."""

from pathlib import Path

import pandas as pd
import pytest

from flsec_flower import load_results
from flsec_flower.app.simulation import run_experiments, validate
from flsec_flower.config import expand_sweep, load_config
from flsec_flower.experiment import client_indices, experiment_dataset, malicious_ids

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

DIGITS = ["data.dataset=digits", "model.name=mlp", "data.download=false"]
SHRINK = {
    "ozdayi": [*DIGITS, "attack.data.size=200"],
    "he-bucketing": [*DIGITS, "attack.num_malicious=2", "strategy.params.f=1"],
    "diversefl": [*DIGITS, "attack.num_malicious=2", "strategy.params.fraction=0.03"],
    "bagdasaryan": [*DIGITS, "clients_per_round=2", "attack.start_round=2"],
    "rance-svoboda": [],
}


def shrunk(name: str, out: Path):
    common = [
        "rounds=2",
        "sweep={}",
        "data.num_clients=10",
        "training.local_epochs=1",
        "training.device=cpu",
        "strategy.device=cpu",
        f"output_dir={out}",
    ]
    return load_config(CONFIGS / f"{name}.yaml", [*common, *SHRINK[name]])


def test_there_is_one_config_per_paper():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(SHRINK)


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_each_config_loads_at_full_size_and_validates_shrunk(name, tmp_path):
    full = load_config(CONFIGS / f"{name}.yaml")
    assert all(cfg.rounds >= 10 for _, cfg in expand_sweep(full))
    validate(shrunk(name, tmp_path))


def test_he_layout_gives_byzantine_workers_all_good_data(tmp_path):
    cfg = shrunk("he-bucketing", tmp_path)
    parts = client_indices(cfg, experiment_dataset(cfg))
    bad = malicious_ids(cfg)
    good = sorted(int(i) for p, part in enumerate(parts) if p not in bad for i in part)
    assert good == list(range(len(experiment_dataset(cfg).y_train)))
    for pid in bad:
        assert parts[pid].tolist() == good


@pytest.mark.slow
def test_every_paper_config_runs_two_rounds(tmp_path):
    cfgs = {name: shrunk(name, tmp_path) for name in sorted(SHRINK)}
    run_dirs = dict(zip(cfgs, run_experiments(list(cfgs.values()), progress=False), strict=True))
    for run_dir in run_dirs.values():
        summary = pd.read_csv(run_dir / "summary.csv")
        assert summary["final_accuracy"].between(0, 1).all()
    bagdasaryan = load_results(run_dirs["bagdasaryan"])
    attack_round = bagdasaryan[bagdasaryan["round"] == 2].iloc[0]
    # 2 of 10 clients per round, yet the single-shot attacker takes part in round 2
    assert attack_round["attack_participants"] == sorted(malicious_ids(cfgs["bagdasaryan"]))
    assert not attack_round["attack_missed"]
    fairness = pd.read_csv(run_dirs["rance-svoboda"] / "summary.csv")
    assert fairness["final_attacked_group_accuracy"].between(0, 1).all()
