"""GPU against CPU in one command: the aggregation grid and a round-time comparison.

1. Aggregation: every rule of ``benchmarks/aggregators.py`` on the same
   random ``(n, d)`` matrices on the CPU and on CUDA (``strategy.device``
   ``cpu`` against ``auto``), the GPU synchronised before the clock is read;
   the speed-up and the largest difference of the two results are printed.
2. Rounds: the same simulation twice, CPU clients (``training.device: cpu``,
   ``resources.client_num_gpus: 0``) against fractional-GPU clients
   (``training.device: auto``, ``resources.client_num_gpus: 0.25``, four
   clients per GPU) with aggregation on CUDA; median seconds per round
   without the first (start-up) and the last (evaluation) round.

Needs a CUDA device: without one it says so and exits with status 2.

    python benchmarks/gpu.py --json runs/gpu.json
    python benchmarks/gpu.py --cells 100x1000000 1000x1000000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from aggregators import available_bytes, byzantine, our_rules

from flsec_flower.app.simulation import run_experiment
from flsec_flower.config import from_dict
from flsec_flower.results import load_results

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_CELLS = ["100x100000", "100x1000000", "1000x100000", "1000x1000000", "100x10000000"]


def synced_time(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> tuple:
    """Best wall time of ``repeats`` calls (after one warm-up call), GPU synchronised."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def aggregation_grid(cells: list[tuple[int, int]], repeats: int, gpu: torch.device) -> list[dict]:
    """Every rule on CPU and CUDA for each cell that fits in host and GPU memory."""
    rows = []
    gpu_free = torch.cuda.mem_get_info(gpu)[0]
    for n, d in cells:
        size = n * d * 4
        if available_bytes() < 3 * size or gpu_free < 3 * size:
            rows.append({"n": n, "d": d, "skipped": "does not fit in memory"})
            continue
        host = torch.from_numpy(np.random.default_rng(0).standard_normal((n, d), dtype=np.float32))
        dev = host.to(gpu)
        for name, rule in our_rules(byzantine(n)).items():
            cpu_s, cpu_out = synced_time(lambda r=rule, x=host: r(x), torch.device("cpu"), repeats)
            gpu_s, gpu_out = synced_time(lambda r=rule, x=dev: r(x), gpu, repeats)
            diff = float((cpu_out - gpu_out.cpu()).abs().max())
            rows.append({"rule": name, "n": n, "d": d, "cpu_s": cpu_s, "cuda_s": gpu_s})
            rows[-1] |= {"speedup": cpu_s / gpu_s, "max_abs_diff": diff}
            print(f"  {name} n={n} d={d:.0e}: cpu {cpu_s:.3f} s, cuda {gpu_s:.4f} s", flush=True)
        del dev
        torch.cuda.empty_cache()
    return rows


def workload(data_dir: str, rounds: int, out: str, gpu: bool) -> dict:
    """Fashion-MNIST + LeNet-5 when the data is there, else digits + MLP; 10 IID clients."""
    fashion = (Path(data_dir) / "FashionMNIST").exists()
    return {
        "name": "gpu" if gpu else "cpu",
        "rounds": rounds,
        "output_dir": out,
        "data": {
            "dataset": "fashion_mnist" if fashion else "digits",
            "data_dir": data_dir,
            "num_clients": 10,
            "partition": {"kind": "iid"},
        },
        "model": {"name": "lenet5" if fashion else "mlp"},
        "training": {
            "local_epochs": 2,
            "batch_size": 256 if fashion else 32,
            "optimizer": "adam",
            "lr": 1e-3,
            "device": "auto" if gpu else "cpu",
        },
        "evaluation": {"every": 10_000},
        "strategy": {"name": "fedavg", "device": "auto" if gpu else "cpu"},
        "resources": {"client_num_cpus": 1.0, "client_num_gpus": 0.25 if gpu else 0.0},
    }


def round_times(data_dir: str, rounds: int) -> dict:
    """Median seconds per middle round, CPU clients against 0.25-GPU clients."""
    result: dict = {}
    for side in ("cpu", "gpu"):
        with tempfile.TemporaryDirectory() as out:
            cfg = from_dict(workload(data_dir, rounds, out, side == "gpu"))
            df = load_results(run_experiment(cfg, progress=False))
        seconds = [float(s) for s in df.loc[df["round"] >= 1, "seconds"]]
        result[side] = {"all_rounds_s": seconds, "median_s": statistics.median(seconds[1:-1])}
        result["workload"] = f"{cfg.data.dataset} {cfg.model.name} 10 iid clients, 2 epochs"
    result["speedup"] = result["cpu"]["median_s"] / result["gpu"]["median_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=DEFAULT_CELLS, help="NxD cells")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4, help="simulation rounds (>= 3)")
    parser.add_argument("--data-dir", default=str(SHARED_DATA))
    parser.add_argument("--skip-rounds", action="store_true", help="aggregation grid only")
    parser.add_argument("--json", type=Path, help="also write the JSON record here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: benchmarks/gpu.py compares CUDA with the CPU", file=sys.stderr)
        sys.exit(2)
    if args.rounds < 3:
        parser.error("--rounds must be >= 3 (the first and the last round are left out)")
    gpu = torch.device("cuda")
    cells = [tuple(int(x) for x in c.lower().split("x")) for c in args.cells]
    record: dict = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(gpu)}
    record["aggregation"] = aggregation_grid(cells, args.repeats, gpu)
    if not args.skip_rounds:
        record["rounds"] = round_times(args.data_dir, args.rounds)
    print(f"\n{record['gpu']}, {record['date']}")
    print(f"{'rule':<15}{'n':>6}{'d':>7}{'cpu s':>9}{'cuda s':>9}{'x':>8}{'max|diff|':>11}")
    for r in record["aggregation"]:
        if "skipped" in r:
            print(f"{'(all)':<15}{r['n']:>6}{r['d']:>7.0e}  skipped: {r['skipped']}")
            continue
        print(
            f"{r['rule']:<15}{r['n']:>6}{r['d']:>7.0e}{r['cpu_s']:>9.3f}{r['cuda_s']:>9.4f}"
            f"{r['speedup']:>7.1f}x{r['max_abs_diff']:>11.1e}"
        )
    if "rounds" in record:
        rt = record["rounds"]
        print(f"\nround time ({rt['workload']}): cpu clients {rt['cpu']['median_s']:.2f} s, "
              f"0.25-GPU clients {rt['gpu']['median_s']:.2f} s, {rt['speedup']:.2f}x")  # fmt: skip
    print(json.dumps(record, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
