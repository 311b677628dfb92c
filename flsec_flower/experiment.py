"""What every process of a run derives from the config alone: attackers, data views, seeds.

The Ray actors, the ServerApp and the tests all call these functions, so they
agree on the split and on who attacks without exchanging anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from flsec_flower import seeds
from flsec_flower.cache import BoundedCache
from flsec_flower.config import AttackDataConfig, ConfigError, ExperimentConfig
from flsec_flower.data import Dataset, client_layout, load_dataset
from flsec_flower.params import resolve_device


def malicious_ids(cfg: ExperimentConfig) -> frozenset[int]:
    """Attackers' partition ids: ``attack.malicious_ids`` or a seeded draw of ``num_malicious``."""
    attack = cfg.attack
    if attack is None:
        return frozenset()
    if attack.malicious_ids is not None:
        return frozenset(attack.malicious_ids)
    rng = seeds.numpy_rng(cfg.seed, seeds.Stream.ATTACKERS)
    drawn = rng.choice(cfg.data.num_clients, size=attack.num_malicious, replace=False)
    return frozenset(int(i) for i in drawn)


def attack_round(cfg: ExperimentConfig, server_round: int) -> bool:
    """Whether the attack is scheduled in ``server_round``.

    From ``attack.start_round`` to ``attack.end_round`` (inclusive,
    open-ended when unset), or ``start_round`` alone with ``single_shot``.
    """
    attack = cfg.attack
    if attack is None or server_round < attack.start_round:
        return False
    if attack.single_shot:
        return server_round == attack.start_round
    return attack.end_round is None or server_round <= attack.end_round


def participation_schedule(cfg: ExperimentConfig) -> dict[int, list[int]]:
    """``{round: partition ids that must be sampled}`` for the strategy's ``configure_fit``.

    With ``attack.force_participation`` (default for ``single_shot``), every
    attacker is sampled in every attack round (Bagdasaryan et al. select the
    attacker in round T); otherwise the schedule is empty and attackers are
    sampled like everyone else.
    """
    attackers = sorted(malicious_ids(cfg))
    if cfg.attack is None or not cfg.attack.forced or not attackers:
        return {}
    return {r: attackers for r in range(1, cfg.rounds + 1) if attack_round(cfg, r)}


def experiment_dataset(cfg: ExperimentConfig) -> Dataset:
    """The run's dataset (loaded once per process)."""
    return load_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.data.download, cfg.seed)


_INDICES: BoundedCache[str, list[np.ndarray]] = BoundedCache("client_indices", 32)


def client_indices(cfg: ExperimentConfig, dataset: Dataset) -> list[np.ndarray]:
    """Training-set indices of every partition (computed once per process).

    The layout is :func:`~flsec_flower.data.client_layout` with the config's
    ``data.partition`` and ``attack.data`` blocks; the attack class may
    reserve training examples no honest client holds (semantic-backdoor images).

    Raises
    ------
    ConfigError
        If the layout cannot be built from the config (the message names the key).
    """
    return _INDICES.get_or_build(_data_key(cfg), lambda: _build_indices(cfg, dataset))


def _build_indices(cfg: ExperimentConfig, dataset: Dataset) -> list[np.ndarray]:
    part, attack = cfg.data.partition, cfg.attack
    data = attack.data if attack is not None else AttackDataConfig()
    try:
        return client_layout(
            dataset.y_train.numpy(),
            cfg.data.num_clients,
            malicious_ids(cfg),
            part.kind,
            alpha=part.alpha,
            shards_per_client=part.shards_per_client,
            seed=cfg.seed,
            honest_only=part.honest_only,
            mimic2=part.mimic2,
            attack_kind=data.kind,
            sample_size=data.size,
            classes=data.classes or (),
            reserved=_reserved(cfg, dataset),
        )
    except ValueError as err:
        raise ConfigError(f"data.partition / attack.data: {err}") from err


ReservedData = Callable[[ExperimentConfig, Dataset], "np.ndarray | None"]
"""``reserved(cfg, dataset)``: training indices the configured attack keeps from honest clients."""

_RESERVED_DATA: list[ReservedData] = []


def register_reserved_data(reserved: ReservedData) -> None:
    """Install the lookup of the attack's reserved examples.

    The core knows no attack; the assembly layer (``flsec_flower.app.registry``,
    at import) installs a function that asks the configured attack's class.
    """
    _RESERVED_DATA[:] = [reserved]


def _reserved(cfg: ExperimentConfig, dataset: Dataset) -> np.ndarray | None:
    """Training examples the attack keeps from honest clients (``None`` for most attacks)."""
    if cfg.attack is None or not malicious_ids(cfg):
        return None
    if not _RESERVED_DATA:
        raise RuntimeError(
            "an attack's data layout needs the attack classes: import flsec_flower.app.registry "
            "before computing partitions"
        )
    return _RESERVED_DATA[0](cfg, dataset)


def preset_indices(cfg: ExperimentConfig, indices: list[np.ndarray]) -> None:
    """Install partition indices computed elsewhere.

    The driver ships them to the Ray actors, which then skip the partitioners.
    """
    _INDICES.get_or_build(_data_key(cfg), lambda: indices)


@dataclass
class ClientEnv:
    """Everything a client of the run needs: its id, its data, the run's config.

    Parameters
    ----------
    partition_id : int
        The client's partition.
    x, y : torch.Tensor
        Its training partition, on ``device``.
    dataset : Dataset
        The whole dataset (CPU), for attacks that need more than the partition
        (semantic backdoor images, the fairness attack's unfair dataset).
    cfg : ExperimentConfig
        The experiment.
    device : torch.device
        Training device.
    """

    partition_id: int
    x: torch.Tensor
    y: torch.Tensor
    dataset: Dataset
    cfg: ExperimentConfig
    device: torch.device


_PARTITIONS: BoundedCache[tuple[str, int, str], tuple[torch.Tensor, torch.Tensor]] = BoundedCache(
    "partition_tensors", 1024
)


def _partition_tensors(
    cfg: ExperimentConfig, partition_id: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    def build() -> tuple[torch.Tensor, torch.Tensor]:
        dataset = experiment_dataset(cfg)
        idx = torch.as_tensor(np.array(client_indices(cfg, dataset)[partition_id], dtype=np.int64))
        return dataset.x_train[idx].to(device), dataset.y_train[idx].to(device)

    return _PARTITIONS.get_or_build((_data_key(cfg), partition_id, device), build)


def client_env(cfg: ExperimentConfig, partition_id: int) -> ClientEnv:
    """Build (and cache per process) the environment of one client."""
    if not 0 <= partition_id < cfg.data.num_clients:
        raise ValueError(
            f"partition id {partition_id} outside 0..{cfg.data.num_clients - 1} (data.num_clients)"
        )
    device = resolve_device(cfg.training.device)
    x, y = _partition_tensors(cfg, partition_id, str(device))
    return ClientEnv(partition_id, x, y, experiment_dataset(cfg), cfg, device)


def _data_key(cfg: ExperimentConfig) -> str:
    d = cfg.data
    return repr((d.dataset, d.data_dir, d.num_clients, d.partition, cfg.seed, cfg.attack))


def client_seed(cfg: ExperimentConfig, partition_id: int, server_round: int) -> int:
    """Seed of a client's batch order in a round."""
    return seeds.client_seed(cfg.seed, partition_id, server_round)
