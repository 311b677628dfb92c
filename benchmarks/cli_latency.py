"""How long ``flsec`` takes to answer before any simulation: ``--help`` and a config error.

Each case starts a fresh ``python -m flsec_flower.app.cli`` process (this
checkout first on ``PYTHONPATH``) and times it to exit, wall clock; the
median over ``--repeats`` runs is reported against the 1 s target. The
config-error cases are a YAML key with a bad value, a YAML file that is not
a mapping, and an unknown top-level key given with ``-o``; each must exit
with status 2 after printing one line. Prints a table and the JSON record.

    python benchmarks/cli_latency.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 1.0


def time_command(args: list[str], repeats: int) -> dict:
    """Median wall seconds of ``python -m flsec_flower.app.cli ARGS``, its exit code and stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seconds, proc = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "flsec_flower.app.cli", *args],
            capture_output=True,
            text=True,
            env=env,
        )
        seconds.append(time.perf_counter() - start)
    assert proc is not None
    return {
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "exit_code": proc.returncode,
        "stderr_lines": len(proc.stderr.strip().splitlines()),
    }


def main() -> None:
    """Run the cases, print a table and the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bad_value = Path(tmp) / "bad_value.yaml"
        bad_value.write_text("rounds: -1\n")
        not_mapping = Path(tmp) / "list.yaml"
        not_mapping.write_text("- a\n- b\n")
        cases = {
            "flsec --help": ["--help"],
            "flsec run (bad value)": ["run", str(bad_value)],
            "flsec run (not a mapping)": ["run", str(not_mapping)],
            "flsec run -o (unknown key)": ["run", str(bad_value), "-o", "epochs=3"],
        }
        results = {name: time_command(argv, args.repeats) for name, argv in cases.items()}
    print(f"{'case':<30} {'median s':>9} {'max s':>7} {'exit':>5} {'target':>7}")
    for name, r in results.items():
        ok = "ok" if r["median_s"] < TARGET_SECONDS else "MISSED"
        print(f"{name:<30} {r['median_s']:>9.3f} {r['max_s']:>7.3f} {r['exit_code']:>5} {ok:>7}")
    record = {"target_s": TARGET_SECONDS, "repeats": args.repeats, "cases": results}
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
