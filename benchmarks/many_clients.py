"""1,000 simulated clients per round: round time and peak memory of the driver and the actors.

Workload: scikit-learn digits (embedded; 1,437 training images, IID over
1,000 clients, so one or two images each), logistic regression (650
parameters), one local SGD step per round, FedAvg on the CPU, evaluation
only after the last round. Two settings run one after the other:
``fraction 1.0`` (all 1,000 clients every round) and ``fraction 0.1`` (a
seeded sample of 100). The runner sets ``min_fit_clients`` and
``min_available_clients`` to the intended counts, so round 1 cannot start
with the clients registered so far; the script checks that every round had
exactly the intended number of participants.

Memory: the driver's peak RSS (``ru_maxrss``) and, polled every 0.5 s, the
RSS of the Ray worker processes descended from this process (the client
actors of this run only: other Ray sessions on the machine are not ours):
the largest single actor and the largest sum.

    python benchmarks/many_clients.py --rounds 3 --json runs/many_clients.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

from flsec_flower.app.simulation import run_experiment
from flsec_flower.config import from_dict
from flsec_flower.results import load_results

PAGE = resource.getpagesize()


def workload(clients: int, fraction: float, rounds: int, out: str, cpus: float) -> dict:
    return {
        "name": f"many-{clients}-{fraction}",
        "rounds": rounds,
        "output_dir": out,
        "clients_per_round": max(1, round(clients * fraction)),
        "data": {"dataset": "digits", "num_clients": clients, "partition": {"kind": "iid"}},
        "model": {"name": "logreg"},
        "training": {"local_steps": 1, "batch_size": 32, "lr": 0.1, "device": "cpu"},
        "evaluation": {"every": rounds},
        "strategy": {"name": "fedavg", "device": "cpu"},
        "resources": {"client_num_cpus": cpus},
    }


def descendants(root: int) -> list[int]:
    """Process ids below ``root`` in the process tree (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def actor_rss() -> list[int]:
    """RSS in bytes of every Ray client actor process descended from this one."""
    sizes = []
    for pid in descendants(os.getpid()):
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"ClientAppActor" not in name:
                continue
            sizes.append(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE)
        except (OSError, IndexError, ValueError):
            continue
    return sizes


class ActorMemory(threading.Thread):
    """Polls :func:`actor_rss` until stopped; keeps the largest actor and the largest sum."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.max_actor = 0
        self.max_total = 0
        self.max_count = 0
        self.done = threading.Event()

    def run(self) -> None:
        """Poll until :attr:`done` is set."""
        while not self.done.wait(self.interval):
            sizes = actor_rss()
            if sizes:
                self.max_actor = max(self.max_actor, max(sizes))
                self.max_total = max(self.max_total, sum(sizes))
                self.max_count = max(self.max_count, len(sizes))


def measure(clients: int, fraction: float, rounds: int, cpus: float) -> dict:
    """Run one setting; return its round times, participant counts and memory peaks."""
    with tempfile.TemporaryDirectory() as out:
        cfg = from_dict(workload(clients, fraction, rounds, out, cpus))
        poll = ActorMemory()
        poll.start()
        start = time.perf_counter()
        run_dir = run_experiment(cfg, progress=False)
        wall = time.perf_counter() - start
        poll.done.set()
        poll.join()
        df = load_results(run_dir)
    rounds_df = df[df["round"] >= 1]
    seconds = [float(s) for s in rounds_df["seconds"]]
    participants = [len(p) for p in rounds_df["participants"]]
    return {
        "clients": clients,
        "fraction": fraction,
        "intended_per_round": cfg.sampled_clients,
        "participants_per_round": participants,
        "under_sampled": any(p != cfg.sampled_clients for p in participants),
        "round_seconds": seconds,
        "median_round_s_after_first": statistics.median(seconds[1:]) if rounds > 1 else None,
        "wall_s": wall,
        "accuracy_last": float(df["accuracy"].dropna().iloc[-1]),
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "actor_peak_rss_mib": poll.max_actor / 2**20,
        "actors_total_peak_rss_mib": poll.max_total / 2**20,
        "actors_seen": poll.max_count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--client-cpus", type=float, default=1.0, help="resources.client_num_cpus")
    parser.add_argument("--json", type=Path, help="also write the JSON record here")
    args = parser.parse_args()
    rows = [measure(args.clients, f, args.rounds, args.client_cpus) for f in args.fractions]
    print(
        f"{'clients':>8}{'per round':>10}{'round 1 s':>10}{'later s':>9}{'under':>6}"
        f"{'driver MiB':>11}{'actor MiB':>10}{'actors MiB':>11}{'actors':>7}"
    )
    for r in rows:
        later = r["median_round_s_after_first"]
        print(
            f"{r['clients']:>8}{r['intended_per_round']:>10}{r['round_seconds'][0]:>10.1f}"
            f"{(later or 0.0):>9.1f}{'yes' if r['under_sampled'] else 'no':>6}"
            f"{r['driver_peak_rss_mib']:>11.0f}{r['actor_peak_rss_mib']:>10.0f}"
            f"{r['actors_total_peak_rss_mib']:>11.0f}{r['actors_seen']:>7}"
        )
    record = {"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "rows": rows}
    print(json.dumps(record, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
