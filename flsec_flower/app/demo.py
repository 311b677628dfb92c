"""``flsec demo``: attacks against defences on scikit-learn digits, offline, as one table.

Every cell is a full federated run on Flower's Simulation Engine (all cells
share one Ray session and its client actors): 10 clients, an MLP trained
2 local epochs of SGD (lr 0.1), 12 rounds. On an IID split: sign flip
(each attacker sends its update times -4, so FedAvg's mean of 8 honest and
2 flipped updates is about zero) with 2 of 10 attackers from round 1
against FedAvg, coordinate median, Krum and bucketing (s = 2) + Krum, each
with its no-attack row; a single-shot model-replacement backdoor (pixel
trigger, 1 attacker) in the last round against FedAvg, norm clipping and
FLAME. On a strongly non-IID split (Dirichlet(0.1)): Krum with and without
bucketing, with and without sign flip, beside FedAvg's clean accuracy (He,
Karimireddy & Jaggi's claim that bucketing rescues Krum on heterogeneous
data).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flsec_flower.app.simulation import run_experiments
from flsec_flower.config import from_dict
from flsec_flower.results import SUMMARY_FILE

ROUNDS = 12
"""Rounds of every demo run (``flsec demo --rounds`` overrides it)."""

SPLITS: dict[str, dict] = {
    "iid": {"kind": "iid"},
    "dir0.1": {"kind": "dirichlet", "alpha": 0.1},
}
"""Partition block of each split label: IID, and strongly non-IID."""

SIGN_FLIP_SCALE = 4.0
"""Attackers send ``-4 u``: with 2 of 10 the mean of all updates is about zero."""

BASE = {
    "seed": 0,
    "data": {"dataset": "digits", "num_clients": 10},
    "model": {"name": "mlp"},
    "training": {"local_epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.1},
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
    "norm_clip": {
        "name": "fedavg",
        "wrappers": [{"name": "norm_clip", "params": {"max_norm": 1.0}}],
    },
    "flame": {"name": "flame"},
}


def attacks(rounds: int) -> dict[str, dict | None]:
    """The demo's attack blocks by label (``None``: no attack)."""
    return {
        "none": None,
        "sign_flip": {
            "name": "sign_flip",
            "num_malicious": 2,
            "params": {"scale": SIGN_FLIP_SCALE},
        },
        "backdoor": {
            "name": "model_replacement",
            "num_malicious": 1,
            "start_round": rounds,
            "single_shot": True,
        },
    }


BYZANTINE = ("fedavg", "median", "krum", "bucketing+krum")

CELLS: list[tuple[str, str, str]] = [
    *[("iid", a, d) for a in ("none", "sign_flip") for d in BYZANTINE],
    *[("iid", "backdoor", d) for d in ("fedavg", "norm_clip", "flame")],
    ("dir0.1", "none", "fedavg"),
    *[("dir0.1", a, d) for a in ("none", "sign_flip") for d in ("krum", "bucketing+krum")],
]
"""(split, attack, defence) of each demo run; every defence has its no-attack row."""


def demo_config(split: str, attack: str, defence: str, rounds: int, output_dir: Path) -> dict:
    """The raw config of one demo cell."""
    data = {**BASE["data"], "partition": SPLITS[split]}
    raw = {
        **BASE,
        "data": data,
        "name": f"demo-{split}-{attack}-{defence.replace('+', '_')}",
        "rounds": rounds,
        "output_dir": str(output_dir),
        "strategy": DEFENCES[defence],
    }
    block = attacks(rounds)[attack]
    if block is not None:
        raw["attack"] = block
    return raw


def run_demo(output_dir: Path, rounds: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Run every demo cell in one simulation; return one row per cell with its final metrics.

    ``rounds`` defaults to :data:`ROUNDS`.
    """
    rounds = ROUNDS if rounds is None else rounds
    cfgs = [from_dict(demo_config(s, a, d, rounds, output_dir)) for s, a, d in CELLS]
    run_dirs = run_experiments(cfgs, progress=progress)
    rows = []
    for (split, attack, defence), run_dir in zip(CELLS, run_dirs, strict=True):
        summary = pd.read_csv(run_dir / SUMMARY_FILE).iloc[0]
        rows.append(
            {
                "split": split,
                "attack": attack,
                "defence": defence,
                "accuracy": summary.get("final_accuracy"),
                "backdoor_acc": summary.get("final_backdoor_accuracy"),
                "detect_precision": summary.get("detect_precision"),
                "detect_recall": summary.get("detect_recall"),
            }
        )
    return pd.DataFrame(rows)
