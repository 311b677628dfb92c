"""Robust aggregation rules on a grid of n x d, side by side with Flower's own rules.

Grid: n in {100, 1000} clients x d in {1e5, 1e6, 1e7} parameters (cells whose
matrices do not fit in the free memory are skipped and listed). Our rules:
Krum, Multi-Krum (m = n - f), Bulyan, coordinate median, trimmed mean
(beta = 0.1), RFA (geometric median), FLAME, DiverseFL's filter (guides
given) and bucketing (s = 2) + Krum, with f = n // 10; ``--all-rules`` adds
the others (centred clipping, noisy median, resampling, NNM, RLR, norm
clipping, DP noise, FLTrust, FoolsGold, the oracle), timed alone. Flower's equivalents,
on the same matrix, in both of Flower's APIs:

* ``legacy``: ``flwr.server.strategy.aggregate``'s ``aggregate_krum``,
  ``aggregate_bulyan``, ``aggregate_median``, ``aggregate_trimmed_avg`` on
  ``[([row], 1), ...]`` (views of the matrix, no copy);
* ``msg``: the calls ``flwr.serverapp.strategy``'s ``MultiKrum``/``Krum``,
  ``Bulyan``, ``FedMedian`` and ``FedTrimmedAvg`` make in ``aggregate_train``
  (``select_multikrum``, ``aggregate_arrayrecords``,
  ``aggregate_n_closest_weights``, ``np.median``, ``trim_mean``) on one
  ``RecordDict`` per client. Their time includes decoding the records'
  bytes; the time of one full decode is measured and subtracted before the
  ratio is taken (``msg_s`` is the remainder), which favours Flower.

A Flower cell whose predicted time (from the cost model fitted on the cells
already run: Krum n^2 d, Bulyan n^3 d, median n d) exceeds ``--flower-budget``
seconds is not run; the table says "skip" and the JSON holds the
prediction as ``*_predicted_s`` (never as a time or a ratio). With
``--reference-cap SECONDS`` nothing is predicted: every Flower call runs in a
forked child and is stopped after SECONDS, or twice our rule's time if that
is longer (so a stopped call proves a ratio >= 2; ``capped.py``); the table says
"> SECONDS" and the ratio "> x", a measured lower bound, and the JSON row says
``*_capped: true``. Every pair that finishes is checked for agreement (max |diff|).
Flower's Message-API ``Bulyan`` picks its theta updates by one Multi-Krum
pass instead of the paper's recursive Krum (which ours and Flower's legacy
rule apply), so its result can differ from both.

Then for every rule the cost is fitted as ``t = c n^a d^b`` (least squares
on log t over the cells run) and printed; and each rule's peak memory is
measured in a subprocess: the most resident memory the rule adds while
it runs (the kernel's high-water mark reset once the matrix is built, see
``memprobe.py``), reported as (matrix + that) / matrix; target <= 2 for the
coordinate-wise rules (median, trimmed mean, Bulyan).

Goals checked and printed: Krum and Multi-Krum >= 20x Flower's legacy rule
at n = 100, d = 1e6; no rule slower than Flower's (either API) in any cell.

    python benchmarks/aggregators.py --quick           # about 10 minutes on 2 cores
    python benchmarks/aggregators.py --profile full --json runs/aggregators_full.json
    python benchmarks/aggregators.py --cells 1000x1e6 --reference-cap 300 --skip-memory
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from capped import record_reference, speedup, time_reference
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.server.strategy.aggregate import (
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from memprobe import peak_extra_bytes

from strategies.bucketing import bucketize
from strategies.bulyan import bulyan
from strategies.centered_clipping import centered_clipping
from strategies.diversefl import diversefl
from strategies.dp_noise import gaussian_noise
from strategies.flame import flame
from strategies.fltrust import fltrust
from strategies.foolsgold import foolsgold_weights, weighted_mean
from strategies.krum import krum
from strategies.median import coordinate_median
from strategies.nnm import nearest_neighbour_mixing
from strategies.noisy_median import noisy_median
from strategies.norm_clip import clip_norms
from strategies.oracle import oracle_mean
from strategies.rfa import geometric_median
from strategies.rlr import robust_lr
from strategies.trimmed_mean import trimmed_mean

BETA = 0.1
SIGMA = 0.01
KRUM_TARGET = 20.0
CAP_OVER_OURS = 2.0
"""A Flower call's cap is at least this many times our rule's time on the cell."""
MEMORY_TARGET = 2.0
COORDINATE_WISE = ("median", "trimmed_mean", "bulyan")
PROFILES = {
    "quick": {
        "cells": [(100, 100_000), (100, 1_000_000), (1000, 100_000)],
        "flower_budget": 60.0,
        "memory_cell": (100, 1_000_000),
    },
    "full": {
        "cells": [(n, d) for n in (100, 1000) for d in (100_000, 1_000_000, 10_000_000)],
        "flower_budget": 600.0,
        "memory_cell": (100, 10_000_000),
    },
}
FLOWER_COST_EXPONENT = {"krum": 2, "multikrum": 2, "bulyan": 3, "median": 1, "trimmed_mean": 1}
"""Exponent of n in the cost of Flower's rules (all are linear in d)."""

Rule = Callable[[torch.Tensor], torch.Tensor]


def byzantine(n: int) -> int:
    """The f used at n clients: a tenth of them (Bulyan's n >= 4f + 3 holds)."""
    return n // 10


def our_rules(f: int, guides: torch.Tensor | None = None) -> dict[str, Rule]:
    """Our rules as ``updates -> aggregate``, in table order."""
    return {
        "krum": lambda u: krum(u, f).update,
        "multikrum": lambda u: krum(u, f, m=None).update,
        "bulyan": lambda u: bulyan(u, f).update,
        "median": lambda u: coordinate_median(u).update,
        "trimmed_mean": lambda u: trimmed_mean(u, beta=BETA).update,
        "rfa": lambda u: geometric_median(u).update,
        "flame": lambda u: flame(u, torch.zeros_like(u[0]), _gen()).update,
        "diversefl": lambda u: diversefl(u, u.flip(0) if guides is None else guides).update,
        "bucketing+krum": lambda u: _bucket_krum(u, f),
    }


def other_rules(f: int) -> dict[str, Rule]:
    """Our remaining rules and wrappers (``--all-rules``); Flower has none of them."""
    return {
        "rfa_zero_init": lambda u: geometric_median(u, init="zero").update,
        "centered_clipping": lambda u: centered_clipping(u).update,
        "noisy_median": lambda u: noisy_median(u, SIGMA, _gen()).update,
        "resampling+krum": lambda u: _bucket_krum(u, f, "resampling"),
        "nnm+krum": lambda u: krum(nearest_neighbour_mixing(u, f), f).update,
        "rlr(mean)": lambda u: robust_lr(u, u.mean(dim=0), theta=4),
        "norm_clip+mean": lambda u: clip_norms(u, 1.0).mean(dim=0),
        "dp_noise(mean)": lambda u: gaussian_noise(u.mean(dim=0), SIGMA, _gen()),
        "fltrust": lambda u: fltrust(u, u[0]).update,
        "foolsgold": lambda u: weighted_mean(u, foolsgold_weights(u)).update,
        "oracle": lambda u: oracle_mean(u, torch.arange(u.shape[0]) >= f).update,
    }


def _bucket_krum(updates: torch.Tensor, f: int, mode: str = "bucketing") -> torch.Tensor:
    """Krum on buckets of 2, with the largest f <= ``f`` the bucket count allows."""
    buckets = bucketize(updates, 2, _gen(), mode)[0]
    return krum(buckets, min(f, (buckets.shape[0] - 3) // 2)).update


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def legacy_rules(f: int, n: int) -> dict[str, Callable[[list], np.ndarray]]:
    """Flower's legacy built-ins on ``[([row], 1), ...]``; Bulyan gets a copy (it pops)."""
    return {
        "krum": lambda res: aggregate_krum(res, f, 0)[0],
        "multikrum": lambda res: aggregate_krum(res, f, n - f)[0],
        "bulyan": lambda res: aggregate_bulyan(list(res), f, aggregate_krum, to_keep=0)[0],
        "median": lambda res: aggregate_median(res)[0],
        "trimmed_mean": lambda res: aggregate_trimmed_avg(res, BETA)[0],
    }


def _layers(contents: list[RecordDict]) -> list[np.ndarray]:
    return [c["arrays"]["w"].numpy() for c in contents]


def _msg_bulyan(contents: list[RecordDict], f: int) -> np.ndarray:
    """``flwr.serverapp.strategy.Bulyan.aggregate_train``'s steps, without message checks."""
    theta = len(contents) - 2 * f
    selected = select_multikrum(contents, f, theta)
    arrays = [c["arrays"].to_numpy_ndarrays() for c in selected]
    median = [np.median(layer, axis=0) for layer in zip(*arrays, strict=True)]
    return aggregate_n_closest_weights(median, arrays, theta - 2 * f)[0]


def _msg_mean(selected: list[RecordDict]) -> np.ndarray:
    return aggregate_arrayrecords(selected, "num-examples")["w"].numpy()


def msg_rules(f: int, n: int) -> dict[str, Callable[[list], np.ndarray]]:
    """The Message-API strategies' aggregation calls on one ``RecordDict`` per client."""
    return {
        "krum": lambda c: select_multikrum(c, f, 1)[0]["arrays"]["w"].numpy(),
        "multikrum": lambda c: _msg_mean(select_multikrum(c, f, n - f)),
        "bulyan": lambda c: _msg_bulyan(c, f),
        "median": lambda c: np.median(np.stack(_layers(c)), axis=0),
        "trimmed_mean": lambda c: trim_mean(np.stack(_layers(c)), BETA),
    }


def records(host: np.ndarray) -> list[RecordDict]:
    """One reply content per row, as a Flower Message-API client sends it."""
    return [
        RecordDict(
            {"arrays": ArrayRecord({"w": Array(row)}), "metrics": MetricRecord({"num-examples": 1})}
        )
        for row in host
    ]


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (one more while a call takes under a second)."""
    timing = time_reference(fn, None, repeats)
    return timing.seconds, timing.output


def available_bytes() -> int:
    """``MemAvailable`` from ``/proc/meminfo``."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def predict(rows: list[dict], side: str, rule: str, n: int, d: int) -> float | None:
    """Predicted seconds of a Flower rule from its largest cell run (cost n^k d)."""
    done = [r for r in rows if r["rule"] == rule and r.get(f"{side}_s") is not None]
    if not done:
        return None
    ref = max(done, key=lambda r: r["n"] ** FLOWER_COST_EXPONENT[rule] * r["d"])
    k = FLOWER_COST_EXPONENT[rule]
    return ref[f"{side}_s"] * (n / ref["n"]) ** k * (d / ref["d"])


def run_cell(
    n: int,
    d: int,
    budget: float,
    cap: float | None,
    rows: list[dict],
    all_rules: bool,
    save: Callable[[list[dict]], None] = lambda out: None,
) -> list[dict]:
    """Time every rule (ours and Flower's) on one random ``(n, d)`` matrix.

    ``save`` gets the cell's rows after our rules and after each Flower call
    (a run stopped mid-cell keeps what it measured).

    Without a ``cap``, a Flower call predicted (from ``rows``) over ``budget``
    seconds is skipped; with one, every Flower call runs and is stopped at
    ``cap`` seconds, or twice our rule's time if that is longer, so that a
    stopped call proves Flower >= 2x slower (:mod:`capped`); nothing is predicted.
    """
    f = byzantine(n)
    rng = np.random.default_rng(0)
    host = rng.standard_normal((n, d), dtype=np.float32)
    host *= rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32)
    updates = torch.from_numpy(host)
    legacy, msg = legacy_rules(f, n), msg_rules(f, n)
    out: list[dict] = []
    outputs: dict[str, np.ndarray] = {}
    rules = our_rules(f) | (other_rules(f) if all_rules else {})
    for name, rule in rules.items():
        seconds, agg = timed(lambda rule=rule: rule(updates))
        outputs[name] = agg.numpy()
        out.append({"rule": name, "n": n, "d": d, "f": f, "ours_s": seconds})
        print(f"  n={n} d={d:.0e} {name}: {seconds:.3f} s", file=sys.stderr, flush=True)
    save(out)
    results = [([row], 1) for row in host]
    for row in out:
        name = row["rule"]
        if name not in legacy:
            continue
        guess = None if cap is not None else predict(rows + out, "legacy", name, n, d)
        if guess is not None and guess > budget:
            row["legacy_predicted_s"] = guess
            continue
        call = lambda name=name: legacy[name](results)  # noqa: E731
        record_reference(row, "legacy", call, _cap_for(row, cap), outputs[name])
        _log_reference(row, "legacy")
        save(out)
    if available_bytes() < 5 * host.nbytes:
        for row in out:
            row["msg_skipped"] = "memory (the records need 5 copies of the matrix)"
        return out
    contents = records(host)
    decode, _ = timed(lambda: [c["arrays"].to_numpy_ndarrays() for c in contents])
    for row in out:
        name = row["rule"]
        if name not in msg:
            continue
        guess = None if cap is not None else predict(rows + out, "msg", name, n, d)
        if guess is not None and guess > budget:
            row["msg_predicted_s"] = guess
            continue
        row["msg_decode_s"] = decode
        call = lambda name=name: msg[name](contents)  # noqa: E731
        record_reference(row, "msg", call, _cap_for(row, cap), outputs[name], offset=decode)
        _log_reference(row, "msg")
        save(out)
    return out


def _cap_for(row: dict, cap: float | None) -> float | None:
    """The cap of one Flower call: ``cap``, raised to twice our time so a stop proves >= 2x."""
    return None if cap is None else max(cap, CAP_OVER_OURS * row["ours_s"])


def _log_reference(row: dict, side: str) -> None:
    """One stderr line per Flower call: its time, the cap it hit, or why it failed."""
    if f"{side}_failed" in row:
        said = f"failed: {row[side + '_failed']}"
    elif row.get(f"{side}_capped"):
        said = f"stopped at the cap after {row[side + '_stopped_after_s']:.1f} s"
    else:
        said = f"{row[side + '_s']:.3f} s"
    print(f"  flower {side} {row['rule']}: {said}", file=sys.stderr, flush=True)


def fit_rows(rows: list[dict], earlier: list[dict]) -> list[dict]:
    """Rows for the fit: ``rows``, and ``earlier``'s for (rule, n, d) not in ``rows``."""
    here = {(r["rule"], r["n"], r["d"]) for r in rows}
    return rows + [r for r in earlier if (r["rule"], r["n"], r["d"]) not in here]


def fit_exponents(rows: list[dict], key: str) -> dict[str, dict]:
    """Fit ``t = c n^a d^b`` per rule by least squares on log t (needs 3 cells, n and d varied)."""
    fits = {}
    for rule in dict.fromkeys(r["rule"] for r in rows):
        cells = [r for r in rows if r["rule"] == rule and r.get(key)]
        if len({r["n"] for r in cells}) < 2 or len({r["d"] for r in cells}) < 2:
            continue
        a = np.array([[1.0, np.log(r["n"]), np.log(r["d"])] for r in cells])
        coef = np.linalg.lstsq(a, np.log([r[key] for r in cells]), rcond=None)[0]
        fits[rule] = {"n_exponent": float(coef[1]), "d_exponent": float(coef[2])}
        fits[rule]["cells"] = len(cells)
    return fits


WARMUP_COLUMNS = 4096
"""Columns of the small matrix each rule runs on once before its memory is measured."""


def memory_worker(rule: str, n: int, d: int) -> None:
    """Print as JSON the peak RSS one rule adds over a fresh ``(n, d)`` matrix.

    The rule first runs once on an ``(n, 4096)`` matrix, so lazy imports and
    thread pools are not counted; the high-water mark is then reset after the
    matrix is built (:func:`memprobe.peak_extra_bytes`).
    """
    guides = torch.rand((n, d)) if rule == "diversefl" else None
    small_guides = None if guides is None else guides[:, :WARMUP_COLUMNS].clone()
    our_rules(byzantine(n), small_guides)[rule](torch.rand((n, WARMUP_COLUMNS)))
    updates = torch.rand((n, d))
    call = our_rules(byzantine(n), guides)[rule]
    print(json.dumps({"rule": rule, "extra_bytes": peak_extra_bytes(lambda: call(updates))}))


def memory(n: int, d: int) -> list[dict]:
    """Each rule's peak memory over the update matrix, one subprocess per rule.

    ``ratio`` is the peak footprint of aggregating, the matrix plus the most
    the rule adds, over the matrix: ``1 + extra / matrix`` (DiverseFL's
    guides, an input of the same size, count as held before the rule).
    """
    size = n * d * 4
    rows = []
    for name in our_rules(1):
        row: dict = {"rule": name, "n": n, "d": d, "matrix_bytes": size}
        rows.append(row)
        inputs = 2 if name == "diversefl" else 1
        if available_bytes() < (inputs + 1.5) * size:
            row["skipped"] = "does not fit in the free memory"
            print(f"  memory {name}: skipped, does not fit", file=sys.stderr, flush=True)
            continue
        command = [sys.executable, __file__, "--memory-worker", name, "--n", str(n), "--d", str(d)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            row["skipped"] = f"worker exited with {done.returncode}: {done.stderr[-300:]}"
            print(f"  memory {name}: {row['skipped']}", file=sys.stderr, flush=True)
            continue
        extra = json.loads(done.stdout.strip().splitlines()[-1])["extra_bytes"]
        row["extra_bytes"] = extra
        row["ratio"] = 1.0 + extra / size
        if name in COORDINATE_WISE:
            row["met"] = row["ratio"] <= MEMORY_TARGET
        print(f"  memory {name}: +{extra / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    return rows


def _cell(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _reference_cells(row: dict, side: str) -> tuple[str, str]:
    """Flower's time and ratio as table text: measured, ``> cap`` (a bound), skip or fail."""
    if f"{side}_predicted_s" in row:
        return "skip", "-"
    if f"{side}_failed" in row:
        return "fail", "-"
    if row.get(f"{side}_capped"):
        return f"> {row[side + '_stopped_after_s']:.3g}", f"> {speedup(row, side)[0]:.1f}x"
    return _cell(row.get(f"{side}_s")), _cell(row.get(f"{side}_speedup"), "{:.1f}x")


def grid_table(rows: list[dict]) -> str:
    head = (
        f"{'rule':<18}{'n':>6}{'d':>7}{'ours s':>9}{'legacy s':>10}{'x':>9}"
        f"{'msg s':>9}{'x':>9}{'max|diff|':>11}"
    )
    lines = [head]
    for r in rows:
        diffs = [r[key] for key in ("legacy_diff", "msg_diff") if key in r]
        legacy, legacy_x = _reference_cells(r, "legacy")
        msg, msg_x = _reference_cells(r, "msg")
        lines.append(
            f"{r['rule']:<18}{r['n']:>6}{r['d']:>7.0e}{r['ours_s']:>9.3f}"
            f"{legacy:>10}{legacy_x:>9}{msg:>9}{msg_x:>9}"
            f"{_cell(max(diffs) if diffs else None, '{:.1e}'):>11}"
        )
    return "\n".join(lines)


def fit_table(fits: dict[str, dict[str, dict]]) -> str:
    lines = [f"{'rule':<15}{'ours':>22}{'Flower legacy':>22}{'Flower msg':>22}"]
    for rule in fits["ours_s"]:
        parts = []
        for key in ("ours_s", "legacy_s", "msg_s"):
            fit = fits[key].get(rule)
            parts.append(
                "-" if fit is None else f"n^{fit['n_exponent']:.2f} d^{fit['d_exponent']:.2f}"
            )
        lines.append(f"{rule:<15}" + "".join(f"{p:>22}" for p in parts))
    return "\n".join(lines)


def memory_table(rows: list[dict]) -> str:
    lines = [f"{'rule':<15}{'extra MiB':>10}{'matrix MiB':>12}{'peak/matrix':>13}{'met':>5}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['rule']:<15} skipped: {r['skipped']}")
            continue
        met = {True: "yes", False: "NO"}.get(r.get("met"), "-")
        lines.append(
            f"{r['rule']:<15}{r['extra_bytes'] / 2**20:>10.0f}{r['matrix_bytes'] / 2**20:>12.0f}"
            f"{r['ratio']:>13.2f}{met:>5}"
        )
    return "\n".join(lines)


def _unmeasured(row: dict, side: str) -> str:
    """Why a Flower side has neither a time nor a bound for this row."""
    if f"{side}_predicted_s" in row:
        return f"skipped, predicted {row[side + '_predicted_s']:.4g} s (not run)"
    if f"{side}_failed" in row:
        return f"failed: {row[side + '_failed']}"
    if f"{side}_skipped" in row:
        return f"skipped: {row[side + '_skipped']}"
    return "not run"


def goals(rows: list[dict]) -> dict:
    """Krum / Multi-Krum >= 20x Flower's legacy at (100, 1e6); nothing slower than Flower.

    A Flower call stopped at the cap counts through its proven lower bound
    (:func:`capped.speedup`). ``not_proven`` lists the (rule, cell, side)
    pairs with neither a measured ratio >= 1 nor a bound >= 1: skipped on a
    prediction, failed, or stopped at a cap below our own time.
    """
    krum_cell = {
        r["rule"]: speedup(r, "legacy")
        for r in rows
        if (r["n"], r["d"]) == (100, 1_000_000) and r["rule"] in ("krum", "multikrum")
    }
    slower, unproven = [], []
    for r in rows:
        if r["rule"] not in FLOWER_COST_EXPONENT:
            continue
        for side in ("legacy", "msg"):
            value, bound = speedup(r, side)
            where = f"{r['rule']} n={r['n']} d={r['d']:.0e} vs {side}"
            if value is None:
                unproven.append(f"{where}: {_unmeasured(r, side)}")
            elif value < 1.0 and bound:
                unproven.append(f"{where}: > {value:.2f}x (capped)")
            elif value < 1.0:
                slower.append(f"{where} ({value:.2f}x)")
    return {
        "krum_speedup_at_100_1e6": {rule: value for rule, (value, _) in krum_cell.items()},
        "krum_speedup_is_lower_bound": {rule: bound for rule, (_, bound) in krum_cell.items()},
        "krum_met": bool(krum_cell)
        and all((value or 0) >= KRUM_TARGET for value, _ in krum_cell.values()),
        "slower_than_flower": slower,
        "not_proven": unproven,
    }


def parse_cells(text: str) -> list[tuple[int, int]]:
    """``"1000x1e5,100x1e7"`` -> ``[(1000, 100000), (100, 10000000)]``."""
    try:
        return [(int(float(n)), int(float(d))) for n, d in (c.split("x") for c in text.split(","))]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--cells: expected NxD[,NxD...], got {text!r}") from exc


def write_json(path: Path, record: dict | list) -> None:
    """Write ``record`` to ``path`` (after every cell too, so a stopped run keeps its cells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--quick", action="store_true", help="same as --profile quick")
    parser.add_argument("--flower-budget", type=float, help="seconds a Flower cell may take")
    parser.add_argument(
        "--cells", type=parse_cells, help="run these cells instead, e.g. 1000x1e5,100x1e7"
    )
    parser.add_argument(
        "--predict-from",
        type=Path,
        help="JSON of an earlier run whose cells also feed the Flower time predictions",
    )
    parser.add_argument(
        "--reference-cap",
        type=float,
        metavar="SECONDS",
        help="run every Flower call, stopped after SECONDS or twice our time if longer (in a "
        "forked child): the cell reports 'Flower > t' and the ratio as a lower bound; "
        "nothing is predicted",
    )
    parser.add_argument(
        "--fit-with",
        type=Path,
        nargs="+",
        default=[],
        metavar="JSON",
        help="earlier runs whose measured cells join the fitted cost (not the table)",
    )
    parser.add_argument("--all-rules", action="store_true", help="also time our other rules")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory runs")
    parser.add_argument(
        "--memory-only",
        nargs=2,
        type=float,
        metavar=("N", "D"),
        help="only measure memory, at this cell (e.g. 100 1e7)",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON record here")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_cap is not None and (args.predict_from or args.flower_budget):
        parser.error(
            "--reference-cap runs every Flower call and stops it at the cap; "
            "--flower-budget and --predict-from skip calls on a prediction: give one or the other"
        )
    if args.memory_worker:
        memory_worker(args.memory_worker, args.n, args.d)
        return
    if args.memory_only:
        n, d = (int(v) for v in args.memory_only)
        rows = memory(n, d)
        print(f"\npeak memory of aggregating, n={n}, d={d:.0e} (target <= {MEMORY_TARGET}x)")
        print(memory_table(rows))
        print("\n" + json.dumps(rows, indent=2))
        if args.json:
            write_json(args.json, rows)
        return
    profile = PROFILES["quick" if args.quick else args.profile]
    budget = args.flower_budget or profile["flower_budget"]
    cap = args.reference_cap
    record: dict = {
        "profile": "quick" if args.quick else args.profile,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, torch threads "
        f"{torch.get_num_threads()}, {available_bytes() / 2**30:.0f} GiB available at start",
        "beta": BETA,
        "f": "n // 10",
        "flower_budget_s": None if cap is not None else budget,
        "reference_cap_s": cap,
        "predicted_from": str(args.predict_from) if args.predict_from else None,
        "cells": args.cells or profile["cells"],
        "skipped_cells": [],
    }
    rows: list[dict] = []

    def save(out: list[dict]) -> None:
        """Write the cells done and the current cell's rows so far to ``--json``."""
        if args.json:
            write_json(args.json, record | {"grid": rows + out, "partial": True})

    prior = json.loads(args.predict_from.read_text())["grid"] if args.predict_from else []
    for n, d in args.cells or profile["cells"]:
        if available_bytes() < 3.5 * n * d * 4:
            reason = (
                f"does not fit in memory: needs {3.5 * n * d * 4 / 2**30:.0f} GiB "
                f"(3.5 matrices), {available_bytes() / 2**30:.0f} GiB available"
            )
            record["skipped_cells"].append({"n": n, "d": d, "reason": reason})
            print(f"skip n={n} d={d:.0e}: {reason}", file=sys.stderr)
            continue
        rows += run_cell(n, d, budget, cap, prior + rows, args.all_rules, save)
    record["grid"] = rows
    earlier = [row for path in args.fit_with for row in json.loads(path.read_text())["grid"]]
    fitted = fit_rows(rows, earlier)
    record["fit_cells_from"] = ["this run", *map(str, args.fit_with)]
    record["fits"] = {key: fit_exponents(fitted, key) for key in ("ours_s", "legacy_s", "msg_s")}
    record["goals"] = goals(rows)
    print(f"\nf = n // 10, beta = {BETA}")
    if cap is not None:
        print(
            f"'> t': Flower's call stopped at the {cap:g} s cap after t s; "
            "'> x': the ratio's lower bound (both measured, not predicted)"
        )
    else:
        print(
            f"'skip': Flower's call not run, predicted over {budget:.0f} s "
            "(the prediction is in the JSON as *_predicted_s; not a measurement)"
        )
    print("Flower msg Bulyan selects by one Multi-Krum pass (not recursive Krum): may differ")
    print(grid_table(rows))
    for cell in record["skipped_cells"]:
        print(f"cell n={cell['n']} d={cell['d']:.0e} skipped: {cell['reason']}")
    print(f"\nfitted cost t ~ n^a d^b, cells from: {', '.join(record['fit_cells_from'])}")
    print(fit_table(record["fits"]))
    if not args.skip_memory:
        n, d = profile["memory_cell"]
        record["memory"] = memory(n, d)
        print(f"\npeak memory of aggregating, n={n}, d={d:.0e} (target <= {MEMORY_TARGET}x)")
        print(memory_table(record["memory"]))
    print(f"\ngoals: {json.dumps(record['goals'])}")
    print("\n" + json.dumps(record, indent=2))
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
