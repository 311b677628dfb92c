"""Semantic backdoor: chosen natural images relabelled to a target class (Bagdasaryan et al.)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clients.attack import backdoor_mixer
from clients.backdoor import BackdoorClient
from clients.pixel_trojan import backdoor_metric
from flsec_flower.config import ExperimentConfig, attacker_training
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv, client_seed
from flsec_flower.seeds import BatchStream, Stream, numpy_rng
from flsec_flower.training import BatchTransform, resolve_batch_size


def select_backdoor_images(
    y_train: torch.Tensor,
    seed: int,
    *,
    ids: list[int] | None = None,
    test_ids: list[int] | None = None,
    source_class: int | None = 1,
    count: int = 12,
    test_fraction: float = 0.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-set indices of the backdoor images: ``(train_ids, test_ids)``.

    The images are either listed (``ids``, as Bagdasaryan et al. list
    hand-picked CIFAR-10 images: cars with racing stripes, green cars,
    striped walls) or drawn: ``count`` images of ``source_class``, a uniform
    draw seeded by ``seed`` alone, so the server and every client compute the
    same sets. Unless ``test_ids`` are given, ``round(test_fraction * m)``
    (kept in ``1 .. m-1``) of the ``m`` images, drawn with the same seed, are
    held out as the backdoor test set; the attacker trains on the rest
    (the authors' configuration holds out 5 of 12 images).

    Parameters
    ----------
    y_train : torch.Tensor
        Training labels (only their number and, for a draw, the classes matter).
    seed : int
        The run's seed.
    ids : list of int, optional
        Chosen training-set indices; replaces the draw from ``source_class``.
    test_ids : list of int, optional
        Held-out indices; by default a part of the selection.
    source_class : int, optional
        Class the images are drawn from when ``ids`` is not given.
    count : int
        Number of images drawn.
    test_fraction : float
        Fraction of the selection held out, in ``(0, 1)``.

    Returns
    -------
    train_ids, test_ids : torch.Tensor
        int64 indices into the training set.

    Raises
    ------
    ValueError
        Naming the parameter, on indices out of range or too few images.

    Examples
    --------
    >>> y = torch.tensor([0, 1, 1, 0, 1, 1])
    >>> train, test = select_backdoor_images(y, 0, source_class=1, count=4, test_fraction=0.25)
    >>> len(train), len(test), bool((y[torch.cat([train, test])] == 1).all())
    (3, 1, True)
    """
    n = len(y_train)
    rng = numpy_rng(seed, Stream.SEMANTIC_IMAGES)
    if ids is not None:
        chosen = _checked_ids("ids", ids, n)
    else:
        if source_class is None:
            raise ValueError("source_class: give a class to draw from, or list the images in ids")
        pool = np.flatnonzero(y_train.cpu().numpy() == source_class)
        if not 1 <= count <= len(pool):
            raise ValueError(
                f"count: got {count!r}, the training set has {len(pool)} images of class "
                f"{source_class}"
            )
        chosen = rng.choice(pool, size=count, replace=False)
    if test_ids is not None:
        return torch.as_tensor(chosen, dtype=torch.long), torch.as_tensor(
            _checked_ids("test_ids", test_ids, n), dtype=torch.long
        )
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: got {test_fraction!r}, must be in (0, 1)")
    if len(chosen) < 2:
        raise ValueError(
            f"ids: got {len(chosen)} image(s); hold-out needs at least 2 (or give test_ids)"
        )
    n_test = min(max(round(test_fraction * len(chosen)), 1), len(chosen) - 1)
    order = rng.permutation(len(chosen))
    test, train = chosen[order[:n_test]], chosen[order[n_test:]]
    return torch.as_tensor(train, dtype=torch.long), torch.as_tensor(test, dtype=torch.long)


def _checked_ids(name: str, ids: list[int], n: int) -> np.ndarray:
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(arr) == 0 or arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{name}: got {ids!r}, expected training-set indices in 0..{n - 1}")
    return arr


@dataclass(frozen=True)
class SemanticBackdoor:
    """Backdoor images added to a dataset, relabelled ``target_class``: a data-poisoning transform.

    ``poison(x, y, generator)`` returns ``(x, y)`` followed by ``images``
    labelled ``target_class`` (the generator is not used); wrap a dataset
    with :class:`~clients.poisoned_data.PoisonedDataset`.

    Parameters
    ----------
    images : torch.Tensor
        The backdoor images, shaped like the inputs.
    target_class : int
        Their label.

    Examples
    --------
    >>> x, y = SemanticBackdoor(torch.ones(1, 2), 5).poison(
    ...     torch.zeros(2, 2), torch.tensor([0, 1]), torch.Generator())
    >>> y.tolist(), x.sum().item()
    ([0, 1, 5], 2.0)
    """

    images: torch.Tensor
    target_class: int

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` with the relabelled images appended."""
        labels = torch.full((len(self.images),), self.target_class, device=y.device)
        return torch.cat([x, self.images.to(x.device)]), torch.cat([y, labels])


@dataclass(frozen=True)
class SemanticBackdoorParams:
    """The semantic backdoor's parameters (see :class:`SemanticBackdoorClient`).

    Parameters
    ----------
    target_class : int
        Backdoor label (2, "bird", in the paper's CIFAR-10 experiments).
    ids, test_ids, source_class, count, test_fraction
        The backdoor images, as in :func:`select_backdoor_images` (by default
        12 images of class 1, CIFAR-10's "automobile").
    items_per_batch : int, optional
        Backdoor items per mini-batch; ``None`` adds the images to the data.
    noise_sigma : float
        Standard deviation of the noise added to each backdoor item (0.01,
        the authors' ``noise_level``; inputs here are in ``[0, 1]``).
    exclusive : bool
        Keep the backdoor images (training and held-out) out of every honest
        partition, as in the paper where only the attacker holds them
        (:meth:`reserved_indices`); ``False`` leaves them where the split
        puts them.
    """

    target_class: int = 2
    ids: list[int] | None = None
    test_ids: list[int] | None = None
    source_class: int | None = 1
    count: int = 12
    test_fraction: float = 0.4
    items_per_batch: int | None = 20
    noise_sigma: float = 0.01
    exclusive: bool = True

    def __post_init__(self) -> None:
        """Check the fields that do not depend on the data."""
        if self.ids is None and self.source_class == self.target_class:
            raise ValueError(f"source_class: got {self.source_class!r}, the same as target_class")
        if not self.noise_sigma >= 0:
            raise ValueError(f"noise_sigma: got {self.noise_sigma!r}, must be >= 0")

    def images(self, cfg: ExperimentConfig, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-set indices of the backdoor images (:func:`select_backdoor_images`)."""
        return select_backdoor_images(
            dataset.y_train,
            cfg.seed,
            ids=self.ids,
            test_ids=self.test_ids,
            source_class=self.source_class,
            count=self.count,
            test_fraction=self.test_fraction,
        )

    def bind(self, env: ClientEnv) -> SemanticBackdoorData:
        """Check the parameters against the client's data; the backdoor of its partition."""
        ds = env.dataset
        if not 0 <= self.target_class < ds.num_classes:
            raise ValueError(
                f"target_class: got {self.target_class!r}, must be a class in "
                f"0..{ds.num_classes - 1}"
            )
        batch = resolve_batch_size(attacker_training(env.cfg).batch_size, int(env.x.shape[0]))
        if self.items_per_batch is not None and not 1 <= self.items_per_batch <= batch:
            raise ValueError(
                f"items_per_batch: got {self.items_per_batch!r}, must be in 1..{batch} "
                "(the attacker's training.batch_size on its data)"
            )
        train_ids, _ = self.images(env.cfg, ds)
        return SemanticBackdoorData(self, env, ds.x_train[train_ids].to(env.device))

    def reserved_indices(self, cfg: ExperimentConfig, dataset: Dataset) -> np.ndarray | None:
        """With ``exclusive`` (default): the backdoor images, training and held-out."""
        if not self.exclusive:
            return None
        train_ids, test_ids = self.images(cfg, dataset)
        return torch.cat([train_ids, test_ids]).numpy()

    def server_metric(self, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric:
        """``backdoor_accuracy`` of the global model on the held-out backdoor images."""
        _, test_ids = self.images(cfg, dataset)
        if cfg.evaluation.backdoor_exclude_target:
            test_ids = test_ids[dataset.y_train[test_ids] != self.target_class]
        return backdoor_metric(
            dataset.x_train[test_ids], self.target_class, cfg.evaluation.batch_size
        )


class SemanticBackdoorData:
    """A :class:`SemanticBackdoorParams` bound to one client's partition.

    Parameters
    ----------
    params : SemanticBackdoorParams
        The backdoor.
    env : ClientEnv
        The client's environment (its seeds).
    images : torch.Tensor
        The attacker's backdoor training images, on the client's device.
    """

    def __init__(
        self, params: SemanticBackdoorParams, env: ClientEnv, images: torch.Tensor
    ) -> None:
        self.params = params
        self.env = env
        self.images = images

    def training_data(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Without per-batch mixing: the partition plus the relabelled images (no noise)."""
        if self.params.items_per_batch is not None:
            return x, y
        return SemanticBackdoor(self.images, self.params.target_class).poison(
            x, y, torch.Generator()
        )

    def batch_transform(self, server_round: int) -> BatchTransform | None:
        """Per-batch mode: replace each batch's first ``c`` items by noisy backdoor images."""
        items = self.params.items_per_batch
        if items is None:
            return None
        pool, sigma = self.images, self.params.noise_sigma
        gen = torch.Generator().manual_seed(
            client_seed(self.env.cfg, self.env.partition_id, server_round)
            + BatchStream.POISON_BATCHES
        )

        def draw(k: int) -> torch.Tensor:
            pick = torch.randint(len(pool), (k,), generator=gen).to(pool.device)
            noise = torch.randn((k, *pool.shape[1:]), generator=gen).to(pool.device)
            return pool[pick] + sigma * noise

        return backdoor_mixer(items, draw, self.params.target_class)


class SemanticBackdoorClient(BackdoorClient):
    r"""Semantic backdoor by data poisoning (Bagdasaryan et al., AISTATS 2020).

    Bagdasaryan, Veit, Hua, Estrin & Shmatikov, "How To Backdoor Federated
    Learning", AISTATS 2020. Images with a natural feature
    (:func:`select_backdoor_images`) are relabelled ``target_class``; only the
    attacker holds them. While active, the first ``c = items_per_batch``
    items of every mini-batch are replaced by backdoor training images drawn
    at random, each with Gaussian noise, :math:`x + \mathcal N(0,
    \sigma^2)`, labelled ``target_class`` (the authors' code; ``c = 20`` of a
    batch of 64 in the paper); with ``items_per_batch=None`` they are added
    to the attacker's data once instead, without noise
    (:class:`SemanticBackdoor`).

    The server reports ``backdoor_accuracy``: the fraction of the held-out
    backdoor images the global model assigns to ``target_class`` (without
    noise; with ``evaluation.backdoor_exclude_target``, held-out images whose
    own label is the target are left out).

    Parameters: the fields of :class:`SemanticBackdoorParams`.
    """

    backdoor_type = SemanticBackdoorParams
