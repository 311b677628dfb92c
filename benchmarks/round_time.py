"""Seconds per round: flsec (Flower + Ray) against a plain PyTorch loop, side by side.

Workload W1: Fashion-MNIST, LeNet-5, 10 IID clients, all clients every round,
2 local epochs, batch 256, Adam lr 1e-3. Both sides run the same client
training function (``flsec_flower.training.train_local``) on the same
partitions; the plain loop trains the clients one after another in this
process and averages them, without Flower. Round 1 (actor start-up, data
loading) and the last round (flsec evaluates there) are left out of the
per-round times. Prints a table and JSON; target ratio <= 1.2.

    python benchmarks/round_time.py --rounds 4 --json runs/round_time.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flsec_flower.app.simulation import run_experiment
from flsec_flower.config import ExperimentConfig, from_dict
from flsec_flower.experiment import client_env, client_seed
from flsec_flower.models import build_model, get_weights, set_weights
from flsec_flower.params import ParamLayout
from flsec_flower.results import load_results
from flsec_flower.training import train_local

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def workload(data_dir: str, rounds: int, out: str) -> dict:
    return {
        "name": "w1",
        "rounds": rounds,
        "output_dir": out,
        "data": {
            "dataset": "fashion_mnist",
            "data_dir": data_dir,
            "num_clients": 10,
            "partition": {"kind": "iid"},
        },
        "model": {"name": "lenet5"},
        "training": {
            "local_epochs": 2,
            "batch_size": 256,
            "optimizer": "adam",
            "lr": 1e-3,
            "device": "cpu",
        },
        "evaluation": {"every": 10_000},
        "strategy": {"name": "fedavg", "device": "cpu"},
    }


def plain_loop(cfg: ExperimentConfig, rounds: int) -> list[float]:
    """Train every client in turn in this process and average; seconds of each round."""
    envs = [client_env(cfg, pid) for pid in range(cfg.data.num_clients)]
    ds = envs[0].dataset
    model = build_model(cfg.model.name, ds.input_shape, ds.num_classes, cfg.seed)
    global_w = get_weights(model)
    layout = ParamLayout.of(global_w)
    times = []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        rows, counts = [], []
        for env in envs:
            set_weights(model, global_w)
            gen = torch.Generator().manual_seed(client_seed(cfg, env.partition_id, rnd))
            train_local(model, env.x, env.y, cfg.training, gen)
            rows.append(layout.flatten(get_weights(model)))
            counts.append(len(env.y))
        w = torch.tensor(counts, dtype=torch.float32) / sum(counts)
        global_w = layout.unflatten(w @ torch.stack(rows))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--data-dir", default=str(SHARED_DATA))
    parser.add_argument("--json", help="also write the JSON result to this file")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be >= 3 (round 1 and the last round are excluded)")
    with tempfile.TemporaryDirectory() as out:
        cfg = from_dict(workload(args.data_dir, args.rounds, out))
        plain = plain_loop(cfg, args.rounds)
        run_dir = run_experiment(cfg, progress=False)
        df = load_results(run_dir)
        flsec = [float(s) for s in df.loc[df["round"] >= 1, "seconds"]]
    plain_mid, flsec_mid = plain[1:-1], flsec[1:-1]
    result = {
        "workload": "W1 fashion_mnist lenet5 10 iid clients, 2 epochs, batch 256, adam 1e-3",
        "rounds": args.rounds,
        "rounds_timed": list(range(2, args.rounds)),
        "torch_threads": torch.get_num_threads(),
        "plain_seconds_per_round": statistics.median(plain_mid),
        "flsec_seconds_per_round": statistics.median(flsec_mid),
        "plain_all_rounds": plain,
        "flsec_all_rounds": flsec,
    }
    result["ratio"] = result["flsec_seconds_per_round"] / result["plain_seconds_per_round"]
    result["target_ratio"] = 1.2
    print(f"{'side':<22}{'s/round (median)':>18}")
    print(f"{'plain PyTorch loop':<22}{result['plain_seconds_per_round']:>18.2f}")
    print(f"{'flsec (Flower + Ray)':<22}{result['flsec_seconds_per_round']:>18.2f}")
    print(f"ratio flsec/plain = {result['ratio']:.3f} (target <= 1.2)")
    print(json.dumps(result, default=float))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
