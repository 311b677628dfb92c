"""Real ``flsec run`` processes: SIGKILL then ``--resume``, SIGINT and SIGTERM (Ray, slow)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flsec_flower import load_results
from flsec_flower.checkpoint import read_status

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, rounds: int, **extra: object) -> Path:
    raw = {
        "name": "tiny",
        "seed": 3,
        "rounds": rounds,
        "output_dir": "runs",
        "data": {"dataset": "digits", "num_clients": 4, "partition": {"kind": "iid"}},
        "model": {"name": "mlp"},
        "training": {"local_epochs": 2, "lr": 0.05},
        **extra,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def flsec(*args: str) -> subprocess.Popen:
    """Start ``flsec`` in its own process group (so the test can clean up Ray with it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "flsec_flower.app.cli", *args, "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def wait_for_round(out_dir: Path, server_round: int, proc: subprocess.Popen) -> Path:
    """Wait until a run under ``out_dir`` has checkpointed ``server_round``; its directory."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for status_file in out_dir.glob("*/status.json"):
            if json.loads(status_file.read_text())["rounds_completed"] >= server_round:
                return status_file.parent
        time.sleep(0.2)
    raise AssertionError(f"round {server_round} not reached")


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the run left behind
    return proc.returncode, err, time.monotonic() - start


def test_sigkill_then_resume_gives_the_uninterrupted_metrics(tmp_path):
    """State of every kind must survive: centred clipping's centre, Mimic's running
    estimate, the server momentum and each client's worker momentum."""
    cfg = write_config(
        tmp_path,
        rounds=6,
        server_momentum=0.5,
        training={"local_epochs": 2, "lr": 0.05, "momentum": 0.9, "worker_momentum": True},
        strategy={"name": "centered_clipping", "params": {"tau": 0.5}},
        attack={"name": "mimic", "malicious_ids": [1], "params": {"warmup": 3}},
    )
    straight = flsec("run", str(cfg), "-o", f"output_dir={tmp_path / 'straight'}")
    assert finish(straight, 600)[0] == 0
    (straight_dir,) = (tmp_path / "straight").iterdir()

    killed = flsec("run", str(cfg), "-o", f"output_dir={tmp_path / 'killed'}")
    run_dir = wait_for_round(tmp_path / "killed", 2, killed)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert read_status(run_dir)["status"] == "running"  # what a SIGKILL leaves
    assert load_results(run_dir)["round"].max() < 6

    code, err, _ = finish(flsec("run", "--resume", str(run_dir)), 600)
    assert code == 0, err
    assert read_status(run_dir)["status"] == "completed"
    want, got = load_results(straight_dir), load_results(run_dir)
    assert list(got["round"]) == [0, 1, 2, 3, 4, 5, 6]
    for column in ("accuracy", "loss", "bias"):
        assert got[column].tolist() == pytest.approx(want[column].tolist(), rel=1e-6), column


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_within_seconds_and_says_how_to_resume(tmp_path, sig):
    cfg = write_config(tmp_path, rounds=200)
    proc = flsec("run", str(cfg))
    run_dir = wait_for_round(tmp_path / "runs", 1, proc)
    proc.send_signal(sig)
    code, err, seconds = finish(proc, 60)
    assert code == 130
    assert seconds < 15
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"flsec: {sig.name}: stopped after round")
    assert f"flsec run --resume {run_dir}" in last
    status = read_status(run_dir)
    assert status["status"] == "interrupted"
    assert status["rounds_completed"] == load_results(run_dir)["round"].max() >= 1


def test_unreachable_ray_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("FLSEC_RAY_START_TIMEOUT", "5")
    cfg = write_config(tmp_path, rounds=2)
    code, err, seconds = finish(flsec("run", str(cfg)), 120)
    assert code == 1
    assert seconds < 60
    last = err.strip().splitlines()[-1]
    assert last.startswith("flsec: error: Ray did not start within 5 s (127.0.0.1:1)")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert read_status(run_dir)["status"] == "failed"
