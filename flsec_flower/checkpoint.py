"""A run directory's state on disk: its status and its resume checkpoint.

``status.json`` says what a run directory holds, so an unfinished folder is
never mistaken for a finished run::

    {"status": "running" | "interrupted" | "failed" | "completed",
     "rounds_completed": 2, "rounds": 6, "message": "...", "updated": "..."}

``checkpoint.pt`` holds, after each completed round, what a killed run needs
to continue from that round (``flsec run --resume RUN_DIR``): the round, the
strategy's :meth:`~strategies.base.RobustStrategy.state_dict` (global model
and state kept across rounds), the simulation adversary's state and the
server-side trainer's call count. Both files are written atomically (a temp
file, then a rename), so a kill leaves the previous version, never half a file.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
CHECKPOINT_FILE = "checkpoint.pt"
CLIENT_STATE_DIR = "client_state"
STATUSES = ("running", "interrupted", "failed", "completed")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temp file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_status(
    run_dir: Path, status: str, rounds_completed: int, rounds: int, message: str = ""
) -> None:
    """Record the run's status (one of :data:`STATUSES`) in ``status.json``."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    record = {
        "status": status,
        "rounds_completed": rounds_completed,
        "rounds": rounds,
        "message": message,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(Path(run_dir) / STATUS_FILE, (json.dumps(record) + "\n").encode())


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``status.json``, or ``None`` for a folder without one (older runs)."""
    file = Path(run_dir) / STATUS_FILE
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain objects) to ``checkpoint.pt`` atomically."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT_FILE, buffer.getvalue())


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The run's last checkpoint (on the CPU), or ``None`` when it has none."""
    import torch

    file = Path(run_dir) / CHECKPOINT_FILE
    if not file.is_file():
        return None
    return torch.load(file, map_location="cpu", weights_only=False)
