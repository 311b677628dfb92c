"""``flwr run .`` from the repository root runs the default experiment to the end."""

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.flwr_local import LocalFlower, _children, _free_port, _signal_group

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_flwr_run_finishes_and_writes_results(tmp_path):
    with LocalFlower(REPO) as flower:
        row = flower.run(
            run_config={
                "rounds": 2,
                "output_dir": str(tmp_path),
                "data.num_clients": 4,
                "clients_per_round": 4,
                "data.partition.kind": "iid",
                "training.local_epochs": 3,
            },
            federation_config={
                "num-supernodes": 4,
                "client-resources-num-cpus": 1,
                "client-resources-num-gpus": 0.0,
            },
        )
        log = "" if row["status"] == "finished:completed" else flower.logs(row["run-id"])
    assert row["status"] == "finished:completed", f"{row['status-details']}\n{log}"
    (run_dir,) = list(tmp_path.iterdir())
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [0, 1, 2]
    assert lines[-1]["participants"] == [0, 1, 2, 3]
    assert lines[-1]["accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert (run_dir / "summary.csv").is_file()


def _readme_block() -> str:
    """The bash block that follows the README's 'run verbatim' marker."""
    text = (REPO / "README.md").read_text()
    after = text.split("<!-- run verbatim by tests/test_flwr_run.py -->", 1)[1]
    return after.split("```bash\n", 1)[1].split("```", 1)[0]


def test_readme_flwr_run_commands_work_verbatim(tmp_path):
    if not (REPO / ".venv" / "bin" / "activate").is_file():
        pytest.skip("the README's commands use the checkout's .venv (make install)")
    home = tmp_path / "flwr_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV")}
    env.update(
        FLWR_HOME=str(home),
        RAY_TMPDIR=tempfile.mkdtemp(prefix="ray_"),  # short: Ray's socket paths have a limit
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(_free_port()),
        FLWR_LOCAL_CONTROL_API_PORT=str(_free_port()),
    )
    database = str(home / "local-superlink" / "state.db")
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _readme_block()],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        ls = subprocess.run(
            [str(REPO / ".venv" / "bin" / "flwr"), "ls", "--format", "json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        runs = json.loads(ls.stdout)["runs"]
        assert [r["status"] for r in runs] == ["finished:completed"] * 2, ls.stdout
    finally:
        for pid in _pids_with(database):
            for pgid in [*_children(pid), pid]:
                _signal_group(pgid, signal.SIGTERM)


def _pids_with(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (the local SuperLink of this test)."""
    found = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]
