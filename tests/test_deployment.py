"""A real Flower deployment on loopback: SuperLink + 5 SuperNodes, outside apps, ``flwr run``.

Two apps written as a user would write them, each with its own
``pyproject.toml``, import our rules and attacks as a library:

- ``examples/deployment-app`` (legacy ``ServerAppComponents`` +
  ``NumPyClient``): our ``Krum`` and ``SignFlipClient``;
- ``examples/message-api`` (Message API: ``@app.main()``, a ``Grid``, client
  mods): our ``MessageStrategy(Bucketing(Krum(f=1), s))`` and the sign-flip
  client mod. Its default ``s = 2`` needs 10 nodes; here it runs with
  ``s = 1`` (no bucketing) and ``min-nodes = 5``, so Krum with ``f = 1`` on
  five nodes (``n >= 2f + 3``).

The topology is the one of ``docker/compose.yaml`` without Docker:
``flower-superlink --insecure`` on a free port, five ``flower-supernode
--insecure`` with their own ports and ``--node-config "partition-id=i
num-partitions=5"``, a ``FLWR_HOME`` holding ``[superlink.deploy]`` in
``config.toml``, runtime dependency installation disabled. One federation
serves every test of the module (starting it is a good part of the cost);
the test that kills a SuperNode runs last. ``flwr run`` exits 0 even when a
run fails, so the run's status is read with ``flwr ls``; the server apps
write per-round diagnostics (the rule's selection, the attackers that acted,
the failures), which the assertions read.

Every process is started in its own session and stopped by id (its process
group) when the module's tests end, passed or failed; anything left that
carries the federation's private ``FLWR_HOME`` in its environment is killed
by id too. A run a failed test leaves behind is stopped (``flwr stop``)
before the next test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flwr_local import _children, _free_port, _group_alive, _signal_group

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "deployment-app"
MESSAGE_APP = REPO / "examples" / "message-api"
BIN = Path(sys.executable).parent
NUM_NODES = 5
ATTACKER = 0


def _processes_with_env(marker: str) -> list[int]:
    """Ids of this user's processes whose environment contains ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
    return pids


class Deployment:
    """A SuperLink and SuperNodes on 127.0.0.1, each in its own process group."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "flwr-home"
        self.home.mkdir()
        self.port = _free_port()
        (self.home / "config.toml").write_text(
            '[superlink]\ndefault = "deploy"\n\n'
            f'[superlink.deploy]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # This checkout's flsec-flower, also inside the flwr-*app processes.
            PYTHONPATH=str(REPO),
            FLWR_HOME=str(self.home),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        )
        self.superlink: subprocess.Popen | None = None
        self.supernodes: dict[int, subprocess.Popen] = {}
        self.open_runs: set[int] = set()  # submitted, not yet seen finished

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (the child writes it)
        return subprocess.Popen(
            argv,
            cwd=self.tmp,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_superlink(self) -> None:
        """Start the SuperLink and wait until its HTTP port answers ``/health``."""
        self.superlink = self._start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--disable-runtime-dependency-installation",
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.superlink.poll() is not None:
                raise RuntimeError(f"flower-superlink exited: {self.log('superlink')}")
            url = f"http://127.0.0.1:{self.port}/health"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=0.5):
                return
            time.sleep(0.2)
        raise TimeoutError("flower-superlink did not answer /health within 60 s")

    def start_supernode(self, partition_id: int) -> None:
        """Start the SuperNode of ``partition_id`` on its own free port."""
        self.supernodes[partition_id] = self._start(
            f"supernode-{partition_id}",
            [
                str(BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(_free_port()),
                "--node-config",
                f"partition-id={partition_id} num-partitions={NUM_NODES}",
            ],
        )

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI from the app's directory against this SuperLink."""
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            cwd=APP,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        """Wait until ``count`` SuperNodes are online (``flwr supernode ls``)."""
        deadline = time.monotonic() + timeout
        online = 0
        while time.monotonic() < deadline:
            for pid, proc in self.supernodes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"supernode {pid} exited: {self.log(f'supernode-{pid}')}")
            ls = self.flwr("supernode", "ls", "deploy", "--format", "json")
            if ls.returncode == 0:
                nodes = json.loads(ls.stdout)["nodes"]
                online = sum(n["status"] == "online" for n in nodes)
                if online >= count:
                    return
            time.sleep(1)
        raise TimeoutError(f"{online} of {count} SuperNodes online after {timeout} s")

    def submit(self, run_config: dict[str, object], app: Path = APP) -> int:
        """``flwr run <app> deploy`` with ``run_config``; return the run id."""
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        done = self.flwr(
            "run", str(app), "deploy", "--format", "json", "--run-config", overrides, timeout=120
        )
        payload = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
        if done.returncode != 0 or not payload.get("success"):
            raise RuntimeError(f"flwr run failed ({done.returncode}): {done.stdout}{done.stderr}")
        run_id = int(payload["run-id"])
        self.open_runs.add(run_id)
        return run_id

    def status(self, run_id: int) -> dict:
        """The run's row of ``flwr ls --run-id``."""
        ls = self.flwr("ls", "deploy", "--run-id", str(run_id), "--format", "json")
        assert ls.returncode == 0, ls.stdout + ls.stderr
        return json.loads(ls.stdout)["runs"][0]

    def wait_finished(self, run_id: int, timeout: float) -> dict:
        """Poll ``flwr ls`` until the run's status is final; return its row.

        Every ``flwr`` call is a fresh Python process; polling every 2 s
        leaves the cores to the run.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.status(run_id)
            if row["status"].startswith("finished"):
                self.open_runs.discard(run_id)
                return row
            time.sleep(2)
        raise TimeoutError(f"run {run_id} not finished after {timeout} s: {self.status(run_id)}")

    def stop_unfinished_runs(self) -> None:
        """``flwr stop`` every run not seen finished (one a failed test left behind)."""
        for run_id in sorted(self.open_runs):
            self.flwr("stop", str(run_id), "deploy")
        self.open_runs.clear()

    def check_supernodes(self) -> None:
        """Fail when a SuperNode is gone (the test that kills one must run last)."""
        dead = sorted(pid for pid, proc in self.supernodes.items() if proc.poll() is not None)
        if dead:
            raise RuntimeError(
                f"SuperNode(s) {dead} are not running; the test that kills one must run last"
            )

    def kill_supernode(self, partition_id: int) -> None:
        """SIGKILL a SuperNode and everything it started (a machine that dies)."""
        proc = self.supernodes[partition_id]
        groups = [proc.pid, *_children(proc.pid)]
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        proc.wait(timeout=10)

    def log(self, name: str) -> str:
        """The last lines a process wrote."""
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""

    def run_log(self, run_id: int) -> str:
        """The run's log as the SuperLink keeps it."""
        return self.flwr("log", str(run_id), "deploy", "--show").stdout[-6000:]

    def stop(self) -> None:
        """Stop every process this deployment started, by process group, then stragglers."""
        procs = [*self.supernodes.values(), *([self.superlink] if self.superlink else [])]
        groups = {g for p in procs for g in (p.pid, *_children(p.pid))}
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.3)
        for pgid in groups:
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        for pid in _processes_with_env(f"FLWR_HOME={self.home}\0"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


@pytest.fixture(scope="module")
def federation() -> Iterator[Deployment]:
    """A SuperLink with five SuperNodes online, for the module; everything stopped afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="flsec_deploy_"))
    dep = Deployment(tmp)
    try:
        dep.start_superlink()
        for partition_id in range(NUM_NODES):
            dep.start_supernode(partition_id)
        dep.wait_for_nodes(NUM_NODES)
        yield dep
    finally:
        dep.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def deployment(federation: Deployment) -> Iterator[Deployment]:
    """The module's federation, every SuperNode running; a run left unfinished is stopped."""
    federation.check_supernodes()
    try:
        yield federation
    finally:
        federation.stop_unfinished_runs()


def _rounds(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _submit(dep: Deployment, rounds: int) -> tuple[int, Path]:
    metrics = dep.tmp / f"rounds-{time.monotonic_ns()}.jsonl"
    run_id = dep.submit(
        {
            "num-server-rounds": rounds,
            "attacker-partition": ATTACKER,
            "metrics-file": str(metrics),
        }
    )
    return run_id, metrics


def test_message_api_example_excludes_the_sign_flip_mod_node(deployment: Deployment) -> None:
    results = deployment.tmp / "robustdigits.json"
    rounds = 2
    run_id = deployment.submit(
        {
            "num-server-rounds": rounds,
            "min-nodes": NUM_NODES,
            "bucket-size": 1,  # s = 2 on five nodes leaves 3 bucket means: too few for f = 1
            "krum-f": 1,
            "attack": "sign-flip",
            "num-attackers": 1,  # partition 0
            "results-file": str(results),
        },
        app=MESSAGE_APP,
    )
    row = deployment.wait_finished(run_id, timeout=180)
    assert row["status"] == "finished:completed", deployment.run_log(run_id)
    out = json.loads(results.read_text())
    diagnostics = [out["rounds"][str(r)] for r in range(1, rounds + 1)]
    # Rows are identified by node id (the SuperLink's, not a client's claim).
    attackers = {tuple(d["attack_participants"]) for d in diagnostics}
    assert len(attackers) == 1 and len(next(iter(attackers))) == 1, diagnostics
    (attacker,) = next(iter(attackers))  # the same node attacked every round
    for d in diagnostics:
        assert len(d["participants"]) == NUM_NODES and attacker in d["participants"]
        assert d["f_used"] == 1
        assert len(d["selected"]) == 1 and attacker not in d["selected"]
    accuracy = {int(k): v for k, v in out["accuracy"].items()}
    assert accuracy[rounds] > 0.6 > accuracy[0], accuracy  # 10 classes: chance is 0.1


def test_krum_excludes_the_sign_flipper_and_the_run_outlives_a_killed_supernode(
    deployment: Deployment,
) -> None:
    # One run of examples/deployment-app for both claims (each run is most of the cost):
    # round 1 on all five nodes, Krum(f=1) never selecting the sign-flipping node; then an
    # honest node is killed while round 2 is under way. Flower's defaults
    # (min_fit_clients = min_available_clients = 2), as the app keeps them: the dead node's
    # reply counts as a failure and later rounds go on without it. Last in the module: the
    # federation keeps one SuperNode fewer afterwards.
    victim = NUM_NODES - 1
    run_id, metrics = _submit(deployment, rounds=3)
    deadline = time.monotonic() + 180
    while not any(r["round"] == 1 for r in _rounds(metrics)):
        assert time.monotonic() < deadline, deployment.run_log(run_id)
        time.sleep(0.2)
    deployment.kill_supernode(victim)  # round 2 is under way: its messages are out
    row = deployment.wait_finished(run_id, timeout=240)
    assert row["status"] == "finished:completed", deployment.run_log(run_id)
    rounds = [r for r in _rounds(metrics) if r["round"] >= 1]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert rounds[0]["participants"] == list(range(NUM_NODES))
    assert rounds[0]["f_used"] == 1  # Krum(f=1) on n = 5 >= 2f + 3
    assert victim not in rounds[-1]["participants"]
    assert len(rounds[-1]["participants"]) == NUM_NODES - 1
    assert rounds[-1]["f_used"] == 0  # four nodes left: on_too_few="reduce_f" ran f = 0
    for r in rounds:
        assert r["attack_participants"] == [ATTACKER]  # the attacker acted every round
        assert len(r["selected"]) == 1
        assert ATTACKER not in r["selected"]
