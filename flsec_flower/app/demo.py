"""``flsec demo``: attacks against defences on scikit-learn digits, offline, as one table.

Every cell is a full federated run on Flower's Simulation Engine (all cells
share one Ray session and its client actors): 10 clients on a Dirichlet(0.5)
split of digits, an MLP, 20 rounds. Attacks: sign flip and ALIE with 2 of 10
attackers from round 1, and a single-shot model-replacement backdoor (pixel
trigger, 1 attacker) in the last round, so the final backdoor accuracy is the
one of the round it lands. Defences: FedAvg, coordinate median, Krum,
bucketing (s = 2) + Krum, and RFA under sign flip.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flsec_flower.app.simulation import run_experiments
from flsec_flower.config import from_dict
from flsec_flower.results import SUMMARY_FILE

BASE = {
    "seed": 0,
    "data": {
        "dataset": "digits",
        "num_clients": 10,
        "partition": {"kind": "dirichlet", "alpha": 0.5},
    },
    "model": {"name": "mlp"},
    "training": {"local_epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.05},
    "resources": {"client_num_cpus": 1.0},
}

DEFENCES: dict[str, dict] = {
    "fedavg": {"name": "fedavg"},
    "median": {"name": "median"},
    "krum": {"name": "krum", "params": {"f": 2}},
    "bucketing+krum": {
        "name": "krum",
        "params": {"f": 1},
        "wrappers": [{"name": "bucketing", "params": {"s": 2}}],
    },
    "rfa": {"name": "rfa"},
}


def attacks(rounds: int) -> dict[str, dict | None]:
    """The demo's attack blocks by label (``None``: no attack)."""
    return {
        "none": None,
        "sign_flip": {"name": "sign_flip", "num_malicious": 2},
        "alie": {"name": "alie", "num_malicious": 2},
        "backdoor": {
            "name": "model_replacement",
            "num_malicious": 1,
            "start_round": rounds,
            "single_shot": True,
        },
    }


CELLS: list[tuple[str, str]] = [
    ("none", "fedavg"),
    *[("sign_flip", d) for d in ("fedavg", "median", "krum", "bucketing+krum", "rfa")],
    *[("alie", d) for d in ("fedavg", "median", "krum", "bucketing+krum")],
    *[("backdoor", d) for d in ("fedavg", "median", "krum", "bucketing+krum")],
]
"""(attack, defence) of each demo run."""


def demo_config(attack: str, defence: str, rounds: int, output_dir: Path) -> dict:
    """The raw config of one demo cell."""
    raw = {
        **BASE,
        "name": f"demo-{attack}-{defence.replace('+', '_')}",
        "rounds": rounds,
        "output_dir": str(output_dir),
        "strategy": DEFENCES[defence],
    }
    block = attacks(rounds)[attack]
    if block is not None:
        raw["attack"] = block
    return raw


def run_demo(output_dir: Path, rounds: int = 20, progress: bool = True) -> pd.DataFrame:
    """Run every demo cell in one simulation; return one row per cell with its final metrics."""
    cfgs = [from_dict(demo_config(a, d, rounds, output_dir)) for a, d in CELLS]
    run_dirs = run_experiments(cfgs, progress=progress)
    rows = []
    for (attack, defence), run_dir in zip(CELLS, run_dirs, strict=True):
        summary = pd.read_csv(run_dir / SUMMARY_FILE).iloc[0]
        rows.append(
            {
                "attack": attack,
                "defence": defence,
                "accuracy": summary.get("final_accuracy"),
                "backdoor_acc": summary.get("final_backdoor_accuracy"),
                "detect_precision": summary.get("detect_precision"),
                "detect_recall": summary.get("detect_recall"),
            }
        )
    return pd.DataFrame(rows)
