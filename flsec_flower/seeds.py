"""Every random stream of a run, derived from the run's seed in one place.

A run is reproducible because each random choice draws from its own stream,
named here: ``numpy_rng(seed, Stream.ATTACKERS)`` picks the attackers,
``numpy_rng(seed, pid, Stream.SHARED_SAMPLE)`` a client's DiverseFL sample,
and so on. Adding a stream means adding a name to :class:`Stream` with a
value no other stream uses (the values are the historical salts, kept so
that runs made before this module existed give the same numbers).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch


class Stream(IntEnum):
    """Salts that separate the numpy streams drawn from one seed."""

    ATTACKERS = 7919
    """Which partitions are malicious (``experiment.malicious_ids``)."""
    ROOT_DATA = 104_729
    """The server's root dataset (FLTrust)."""
    ATTACKER_SAMPLE = 0x11D
    """An attacker's uniform sample of the training set (``attack.data.kind: iid_sample``)."""
    SHARED_SAMPLE = 4099
    """The sample a client shares with the server once (DiverseFL)."""
    GRADIENT_NOISE = 6151
    """The noise a client adds to what it sends (``training.gradient_noise_std``)."""
    UNFAIR_DATA = 0xFA1
    """The fairness attacker's unfair dataset."""
    SEMANTIC_IMAGES = 0x5E3A
    """The images carrying the semantic backdoor's natural feature."""
    EDGE_CASES = 0xED6E
    """Which edge cases the edge-case attacker holds out for testing."""
    TARGETED_EXAMPLES = 0xA17E
    """The examples a targeted model-poisoning attacker wants misclassified (AlterMin)."""


class BatchStream(IntEnum):
    """Offsets added to a client's round seed (:func:`client_seed`) for its other torch streams."""

    HONEST = 0
    """The batch order of honest training."""
    POISON_BATCHES = 1
    """Which examples of a batch a data-poisoning attacker poisons."""
    REPLACEMENT = 2
    """The model-replacement attacker's poisoned training."""


def numpy_rng(seed: int, *keys: int) -> np.random.Generator:
    """The numpy generator of the stream ``keys`` of ``seed``.

    >>> a = numpy_rng(3, Stream.ATTACKERS).integers(100)
    >>> bool(a == np.random.default_rng([3, 7919]).integers(100))
    True
    """
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def client_seed(seed: int, partition_id: int, server_round: int) -> int:
    """Seed of a client's torch streams in a round (add a :class:`BatchStream` offset)."""
    return int(numpy_rng(seed, partition_id, server_round).integers(2**62))


def torch_generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded with ``seed``."""
    return torch.Generator().manual_seed(int(seed))


def round_generator(seed: int, server_round: int) -> torch.Generator:
    """The server's torch stream of a round (the rules' random choices: bucketing, noise)."""
    return torch_generator(seed * 1_000_003 + server_round)


def trainer_generator(seed: int, call: int) -> torch.Generator:
    """The stream of the server-side trainer's ``call``-th training (FLTrust, DiverseFL)."""
    return torch_generator(seed * 7_368_787 + call)
