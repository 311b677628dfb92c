"""Import cost of ``strategies`` and ``clients`` (issue 13, item 3).

Flower 1.41 starts a fresh ``flwr-clientapp`` process for every message of a
deployment, so an app that uses our attacks pays ``import clients`` per
message. Each case starts a fresh ``python -c "import X"`` (this checkout
first on ``PYTHONPATH``) and times it to exit: wall clock, and the CPU
seconds (user + system) the child used, which a busy machine inflates far
less than the wall clock; the medians over ``--repeats`` runs are reported.

``strategies`` and ``clients`` are checked against the 1 s target (wall):
they resolve their names on first use, so the import alone loads neither
torch nor Flower (``torch``/``flwr`` columns). What an app pays once it uses
a rule or an attack is in the rows ``strategies.krum`` (a rule),
``clients.mods`` (the client mods of a Message-API app) and our own client
and server apps. Reference rows (the empty interpreter, ``torch``, ``flwr``,
and ``torch`` + ``flwr.common`` together) show the floor set by the two
dependencies every rule and attack needs; the ``over floor`` columns are a
case's medians (wall / CPU) minus the floor's. The modules loaded are listed
for the heavy optional dependencies (pandas, torchvision, scikit-learn,
scipy, matplotlib), which must not appear. Prints a table and the JSON
record (with the date and the machine's load average).

    python benchmarks/import_time.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 1.0
HEAVY = ("pandas", "torchvision", "sklearn", "scipy", "matplotlib")
FLOOR = "torch, flwr.common"
REFERENCES = ("sys", "torch", "flwr", FLOOR)
CASES = (
    "strategies",
    "clients",
    "strategies.krum",
    "clients.mods",
    "flsec_flower.app.client_app",
    "flsec_flower.app.server_app",
)
TARGETED = ("strategies", "clients")


def time_import(module: str, repeats: int) -> dict:
    """Median and max wall seconds of a fresh ``import module``; what it loaded of note."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    seconds, cpu, loaded = [], [], set()
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,  # `python -c` puts the working directory first on sys.path
            check=True,
        )
        seconds.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        loaded = {name.split(".")[0] for name in proc.stdout.split()}
    return {
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "cpu_median_s": statistics.median(cpu),
        "heavy_loaded": sorted(loaded & set(HEAVY)),
        "torch_loaded": "torch" in loaded,
        "flwr_loaded": "flwr" in loaded,
    }


def main() -> None:
    """Run the reference rows and the cases, print a table and the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {m: time_import(m, args.repeats) for m in (*REFERENCES, *CASES)}
    floor = results[FLOOR]
    print(
        f"{'import':<30} {'median s':>9} {'max s':>7} {'cpu s':>6} {'over floor wall/cpu':>20} "
        f"{'target':>7} {'torch':>5} {'flwr':>5}  heavy"
    )
    for name, r in results.items():
        target = ("ok" if r["median_s"] < TARGET_SECONDS else "MISSED") if name in TARGETED else ""
        over = ""
        if name in CASES:
            wall = r["median_s"] - floor["median_s"]
            over = f"{wall:.3f} / {r['cpu_median_s'] - floor['cpu_median_s']:.2f}"
        heavy = ",".join(r["heavy_loaded"]) or "-"
        torch, flwr = ("yes" if r[k] else "no" for k in ("torch_loaded", "flwr_loaded"))
        print(
            f"{name:<30} {r['median_s']:>9.3f} {r['max_s']:>7.3f} {r['cpu_median_s']:>6.2f} "
            f"{over:>20} {target:>7} {torch:>5} {flwr:>5}  {heavy}"
        )
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_1m": os.getloadavg()[0],
        "target_s": TARGET_SECONDS,
        "repeats": args.repeats,
        "floor": FLOOR,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "cases": results,
    }
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
