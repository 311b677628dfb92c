"""The honest client, and the hooks every attack overrides."""

from __future__ import annotations

import io
from typing import ClassVar

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import Config, NDArrays, Scalar
from torch import nn

from clients.schedule import RoundClock
from flsec_flower import wire
from flsec_flower.aggregation import Adversary
from flsec_flower.client_state import ClientState
from flsec_flower.config import ExperimentConfig, TrainingConfig
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv, client_seed
from flsec_flower.models import build_model, get_weights, set_weights
from flsec_flower.seeds import Stream, numpy_rng
from flsec_flower.training import (
    BatchTransform,
    ExtraLoss,
    evaluate,
    for_round,
    lr_at,
    train_local,
)

MOMENTUM_STATE = "momentum"
"""Name of the worker-momentum buffers in the client's :class:`ClientState`."""

DIVERSEFL_SAMPLE = wire.DIVERSEFL_SAMPLE
"""``get_properties`` query of DiverseFL's shared sample (see ``strategies.diversefl``)."""


class HonestClient(NumPyClient):
    r"""A client that trains honestly on its partition and returns its model.

    A round runs :meth:`training_data`, :meth:`train` (every batch through
    :meth:`batch_transform`) and :meth:`craft`; an
    attack overrides the hook it needs (poisoned data, another loss, a forged
    update). The fit metrics carry the client's ``partition_id``.

    What is sent (``training.send``), with :math:`x` the global model,
    :math:`w` the crafted weights and :math:`\eta_r` the honest learning
    rate of round :math:`r` (:func:`~flsec_flower.training.lr_at`):

    - ``weights``: :math:`w` (the server forms :math:`U_i = w - x`);
    - ``gradient``: :math:`g = (x - w)/\eta_r`, the gradient of one SGD
      step (the momentum :math:`m_i` with worker momentum); the server forms
      :math:`U_i = -\eta_r g` (see :class:`~strategies.base.RobustStrategy`).

    With ``training.gradient_noise_std`` :math:`\sigma > 0` an honest client
    adds :math:`z \sim \mathcal N(0, \sigma^2 I)` to its gradient, i.e.
    sends :math:`g + z` or :math:`w - \eta_r z` (Noisy Median of Chen et
    al., as DiverseFL's N-Median baseline uses it; attackers add none).

    Parameters
    ----------
    env : ClientEnv
        The client's id, data, the run's config and the device.
    model : torch.nn.Module, optional
        A model of the run's architecture to reuse (its weights are
        overwritten every round); built from the config when omitted.

    Attributes
    ----------
    state : ClientState or None
        The client's state across rounds (Flower ``Context.state``), set by
        the ClientApp; needed by ``training.worker_momentum``.
    """

    adds_gradient_noise: ClassVar[bool] = True
    """Whether ``training.gradient_noise_std`` applies (honest clients only)."""

    def __init__(self, env: ClientEnv, model: nn.Module | None = None) -> None:
        self.env = env
        self.state: ClientState | None = None
        self.checkpoint_dir: str | None = None
        self.partition_id = env.partition_id
        self.clock = RoundClock()
        if model is None:
            ds = env.dataset
            model = build_model(env.cfg.model.name, ds.input_shape, ds.num_classes, env.cfg.seed)
        self.model = model.to(env.device)

    # ----------------------------------------------------------------- hooks
    def training_data(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Data trained on this round (an attack may return a poisoned view)."""
        return self.env.x, self.env.y

    def training_config(self, server_round: int) -> TrainingConfig:
        """Training settings of this round (an attacker's own in its active rounds)."""
        return self.env.cfg.training

    def train(self, x: torch.Tensor, y: torch.Tensor, server_round: int) -> float:
        """Train ``self.model`` on ``(x, y)``; return the mean loss."""
        return self.train_with(x, y, server_round, self.training_config(server_round))

    def batch_transform(self, server_round: int) -> BatchTransform | None:
        """Rewrites each mini-batch of this round (backdoor mixing); ``None`` for none."""
        return None

    def train_with(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        server_round: int,
        cfg: TrainingConfig,
        extra_loss: ExtraLoss | None = None,
        epochs: int | None = None,
    ) -> float:
        """Train ``self.model`` with ``cfg`` in this round's seeded batch order.

        The learning rate is ``cfg``'s schedule at ``server_round``. Every
        mini-batch goes through :meth:`batch_transform`; ``extra_loss`` and
        ``epochs`` are as in :func:`~flsec_flower.training.train_local`. With
        ``cfg.worker_momentum`` the momentum buffers start from the client's
        stored ones (zero in its first round) and are stored back.
        """
        gen = torch.Generator().manual_seed(
            client_seed(self.env.cfg, self.partition_id, server_round)
        )
        buffers = self._load_momentum(server_round) if cfg.worker_momentum else None
        loss = train_local(
            self.model,
            x,
            y,
            for_round(cfg, max(1, server_round)),
            gen,
            extra_loss=extra_loss,
            epochs=epochs,
            batch_transform=self.batch_transform(server_round),
            momentum_buffers=buffers,
        )
        if buffers is not None:
            self._save_momentum(buffers, server_round)
        return loss

    def _load_momentum(self, server_round: int) -> list[torch.Tensor]:
        if self.state is None:
            raise RuntimeError(
                f"client {self.partition_id}: training.worker_momentum needs the client's "
                "Context.state (set client.state = ClientState(...))"
            )
        stored = self.state.load(MOMENTUM_STATE, server_round, self.checkpoint_dir)
        params = list(self.model.parameters())
        if stored is None:
            return [torch.zeros_like(p) for p in params]
        return [
            torch.from_numpy(a).to(p.device, p.dtype) for a, p in zip(stored, params, strict=True)
        ]

    def _save_momentum(self, buffers: list[torch.Tensor], server_round: int) -> None:
        assert self.state is not None
        arrays = [b.detach().cpu().numpy() for b in buffers]
        self.state.save(MOMENTUM_STATE, arrays, server_round, self.checkpoint_dir)

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """Weights returned to the server (an attack may forge them)."""
        return trained

    def fit_metrics(self, server_round: int) -> dict[str, Scalar]:
        """Extra metrics of the fit reply (attacks tag themselves here)."""
        return {}

    @classmethod
    def server_metrics(cls, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric | None:
        """Metrics the server computes on the global model for this attack (e.g. backdoor)."""
        return None

    @classmethod
    def reserved_indices(cls, cfg: ExperimentConfig, dataset: Dataset) -> np.ndarray | None:
        """Training indices no honest client may hold (``None``: no restriction)."""
        return None

    @classmethod
    def server_adversary(cls, cfg: ExperimentConfig) -> Adversary | None:
        """The server-side forging step of an omniscient attack (``None`` for the others)."""
        return None

    # ------------------------------------------------------------ Flower API
    def get_properties(self, config: Config) -> dict[str, Scalar]:
        """Answer the server's queries: ``partition_id``, or DiverseFL's shared sample.

        With ``config["query"] == "diversefl_sample"`` the reply is
        ``{"diversefl_sample": bytes}``: an ``.npz`` file (arrays ``x``,
        ``y``) of a seeded ``config["fraction"]`` of the training partition.
        """
        if config.get(wire.QUERY) == DIVERSEFL_SAMPLE:
            return {
                DIVERSEFL_SAMPLE: self.shared_sample(float(config.get(wire.SAMPLE_FRACTION, 0.03)))
            }
        return {wire.PARTITION_ID: self.partition_id}

    def shared_sample(self, fraction: float) -> bytes:
        """A seeded sample (at least one example) of the partition as ``.npz`` bytes."""
        n = int(self.env.x.shape[0])
        k = min(n, max(1, round(fraction * n)))
        rng = numpy_rng(self.env.cfg.seed, self.partition_id, Stream.SHARED_SAMPLE)
        idx = torch.from_numpy(np.sort(rng.choice(n, size=k, replace=False)))
        buf = io.BytesIO()
        np.savez(
            buf,
            x=self.env.x[idx.to(self.env.x.device)].cpu().numpy(),
            y=self.env.y[idx.to(self.env.y.device)].cpu().numpy(),
        )
        return buf.getvalue()

    def get_parameters(self, config: Config) -> NDArrays:
        """Return the current local model."""
        return get_weights(self.model)

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train on this round's data from the global model and return the result.

        The round is the config's ``server_round`` (ours) or ``server-round``
        (Flower's Message API); without either the client counts its fit calls
        (:class:`~clients.schedule.RoundClock`).
        """
        server_round = self.clock.tick(config)
        checkpoint_dir = config.get(wire.CHECKPOINT_DIR)
        self.checkpoint_dir = None if checkpoint_dir is None else str(checkpoint_dir)
        set_weights(self.model, parameters)
        x, y = self.training_data(server_round)
        loss = self.train(x, y, server_round)
        weights = self.encode(
            parameters, self.craft(parameters, get_weights(self.model), server_round), server_round
        )
        metrics: dict[str, Scalar] = {wire.PARTITION_ID: self.partition_id, wire.TRAIN_LOSS: loss}
        metrics.update(self.fit_metrics(server_round))
        return weights, int(x.shape[0]), metrics

    def encode(self, global_weights: NDArrays, weights: NDArrays, server_round: int) -> NDArrays:
        """What is sent for ``weights``: the weights or the gradient, plus honest noise.

        See the class docstring for the formulas.
        """
        t = self.env.cfg.training
        sigma = t.gradient_noise_std if self.adds_gradient_noise else 0.0
        if t.send == "weights" and sigma == 0:
            return weights
        lr = lr_at(t, max(1, server_round))
        rng = numpy_rng(self.env.cfg.seed, self.partition_id, server_round, Stream.GRADIENT_NOISE)
        out = []
        for x, w in zip(global_weights, weights, strict=True):
            if t.send == "weights" and not np.issubdtype(np.asarray(w).dtype, np.floating):
                out.append(w)
                continue
            g = (np.asarray(x, dtype=np.float64) - np.asarray(w, dtype=np.float64)) / lr
            if sigma > 0 and np.issubdtype(np.asarray(w).dtype, np.floating):
                g = g + rng.normal(0.0, sigma, size=g.shape)
            sent = g if t.send == "gradient" else np.asarray(x, dtype=np.float64) - lr * g
            out.append(sent.astype(np.asarray(w).dtype if t.send == "weights" else np.float32))
        return out

    def evaluate(
        self, parameters: NDArrays, config: Config
    ) -> tuple[float, int, dict[str, Scalar]]:
        """Evaluate the global model on the client's own partition."""
        set_weights(self.model, parameters)
        res = evaluate(self.model, self.env.x, self.env.y, self.env.dataset.num_classes)
        loss = res.loss if np.isfinite(res.loss) else 0.0
        return loss, int(self.env.x.shape[0]), {"accuracy": res.accuracy}
