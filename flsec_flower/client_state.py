"""Per-client state that outlives one round: worker momentum.

Flower builds a fresh ``NumPyClient`` for every message, so nothing kept on
the client object survives to the next round. What must survive lives in
the ``Context.state`` (a ``RecordDict``) of the client's node, which Flower
keeps between messages of a run (in simulation: the node's context store of
the SuperLink's VCE, updated after every message).

Keys are ``flsec.<cell>.<partition_id>.<name>``: ``cell`` numbers the
experiment when several share one federation
(:class:`flsec_flower.app.server_app.SequentialServer`), so experiments never see
each other's state. Each entry is an ``ArrayRecord`` of a list of arrays.

When the fit config carries ``"checkpoint_dir"`` (set by the runner when it
checkpoints), :meth:`ClientState.save` also writes the state to
``<checkpoint_dir>/clients/<partition_id>/round_<r>.pt`` (a temp file,
then an atomic rename), and :meth:`ClientState.load` of a client whose
``Context.state`` holds nothing restores the newest file with a round
before the current one (a resumed run).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict

from flsec_flower.wire import CHECKPOINT_DIR

CHECKPOINT_DIR_KEY = CHECKPOINT_DIR
"""Fit-config key of the run's checkpoint folder (set by the runner)."""

_ROUND_FILE = re.compile(r"round_(\d+)\.pt")


class ClientState:
    """The state of one client (``partition_id``) of one experiment (``cell``).

    Parameters
    ----------
    records : flwr.app.RecordDict
        The node's ``Context.state``.
    cell : int
        The experiment's index in a shared federation (0 alone).
    partition_id : int
        The client.
    """

    def __init__(self, records: RecordDict, cell: int, partition_id: int) -> None:
        self.records = records
        self.cell = cell
        self.partition_id = partition_id

    def key(self, name: str) -> str:
        """The ``Context.state`` key of the entry ``name``."""
        return f"flsec.{self.cell}.{self.partition_id}.{name}"

    def load(
        self, name: str, server_round: int, checkpoint_dir: str | None = None
    ) -> list[np.ndarray] | None:
        """The arrays stored under ``name``; ``None`` when there are none.

        With an empty ``Context.state`` and a ``checkpoint_dir``, the newest
        checkpoint with a round ``< server_round`` is restored first.
        """
        if checkpoint_dir is not None and not self._own_keys():
            self._restore(Path(checkpoint_dir), server_round)
        record = self.records.get(self.key(name))
        if record is None:
            return None
        return [np.array(a) for a in record.to_numpy_ndarrays()]

    def save(
        self,
        name: str,
        arrays: list[np.ndarray],
        server_round: int,
        checkpoint_dir: str | None = None,
    ) -> None:
        """Store ``arrays`` under ``name``; mirror all entries to disk with ``checkpoint_dir``."""
        self.records[self.key(name)] = ArrayRecord.from_numpy_ndarrays(
            [np.ascontiguousarray(a) for a in arrays]
        )
        if checkpoint_dir is not None:
            self._write(Path(checkpoint_dir), server_round)

    def _own_keys(self) -> list[str]:
        prefix = self.key("")
        return [k for k in self.records if k.startswith(prefix)]

    def _folder(self, checkpoint_dir: Path) -> Path:
        return checkpoint_dir / "clients" / str(self.partition_id)

    def _write(self, checkpoint_dir: Path, server_round: int) -> None:
        folder = self._folder(checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        prefix = self.key("")
        payload = {
            k[len(prefix) :]: [torch.from_numpy(a) for a in self.records[k].to_numpy_ndarrays()]
            for k in self._own_keys()
        }
        target = folder / f"round_{server_round}.pt"
        tmp = folder / f".round_{server_round}.pt.{os.getpid()}.tmp"
        torch.save({"cell": self.cell, "round": server_round, "state": payload}, tmp)
        os.replace(tmp, target)

    def _restore(self, checkpoint_dir: Path, server_round: int) -> None:
        folder = self._folder(checkpoint_dir)
        if not folder.is_dir():
            return
        rounds = [
            int(m.group(1))
            for p in folder.iterdir()
            if (m := _ROUND_FILE.fullmatch(p.name)) and int(m.group(1)) < server_round
        ]
        if not rounds:
            return
        saved = torch.load(folder / f"round_{max(rounds)}.pt", weights_only=True)
        if saved["cell"] != self.cell:
            return
        for name, tensors in saved["state"].items():
            self.records[self.key(name)] = ArrayRecord.from_numpy_ndarrays(
                [t.numpy() for t in tensors]
            )
