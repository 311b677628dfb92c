"""Local training and evaluation on in-memory tensors (no DataLoader in the hot loop).

The training regime of a round (see README, "Writing a config"):

- local work is ``training.local_epochs`` passes over the data, or exactly
  ``training.local_steps`` mini-batch steps (``1``: distributed SGD, one
  stochastic gradient per round);
- the batch size is ``training.batch_size`` examples (an int) or that
  fraction of the data trained on (a float in (0, 1]), see
  :func:`resolve_batch_size`;
- the learning rate of round ``r`` is :func:`lr_at`;
- with ``training.worker_momentum`` the SGD momentum buffer carries over
  from the client's previous round (:mod:`flsec_flower.client_state`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from flsec_flower.config import TrainingConfig

ExtraLoss = Callable[[nn.Module], torch.Tensor]
"""``extra(model) -> scalar``: a term added to the batch loss (constrain-and-scale)."""

BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``transform(x_batch, y_batch) -> (x_batch, y_batch)``: the batch trained on (backdoor mixing)."""


def classification_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; binary cross-entropy when the model has a single logit."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
    return F.cross_entropy(logits, y)


def predict(logits: torch.Tensor) -> torch.Tensor:
    """Predicted class: argmax, or ``logit > 0`` for a single logit."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def resolve_batch_size(batch_size: int | float, num_examples: int) -> int:
    """Examples per mini-batch for a dataset of ``num_examples``.

    An ``int`` is an absolute size (a last, smaller batch takes the rest); a
    ``float`` ``f`` in (0, 1] is a fraction of the data trained on:
    ``max(1, ceil(f * num_examples))`` (DiverseFL: 10% of the local set).

    Examples
    --------
    >>> resolve_batch_size(32, 1000), resolve_batch_size(0.1, 1000), resolve_batch_size(0.1, 5)
    (32, 100, 1)
    """
    if isinstance(batch_size, float):
        return max(1, math.ceil(batch_size * num_examples))
    return int(batch_size)


def lr_at(cfg: TrainingConfig, server_round: int) -> float:
    r"""Learning rate of round ``server_round`` (1-based) under ``cfg``'s schedule.

    With base rate :math:`\eta_0` = ``lr``:

    - ``constant``: :math:`\eta_r = \eta_0`;
    - ``inv_sqrt``: :math:`\eta_r = \eta_0 / \sqrt{r}` (DiverseFL, after Li et
      al. 2019: :math:`0.001/\sqrt r`);
    - ``step``: :math:`\eta_r = \eta_0 \gamma^{|\{m \in M : m \le r\}|}`
      for milestones :math:`M` = ``lr_milestones`` and
      :math:`\gamma` = ``lr_gamma`` (decay *at* round m: round m already uses
      the decayed rate).

    A linear warmup of :math:`W` = ``lr_warmup_rounds`` rounds replaces the
    first :math:`W` rates by
    :math:`\eta_s + (\eta_r - \eta_s)\, r / W` with
    :math:`\eta_s` = ``lr_warmup_start`` (DiverseFL, CIFAR: 0.05 to 0.1
    over 1000 rounds), reaching the schedule's rate at round :math:`W`.

    Examples
    --------
    >>> cfg = TrainingConfig(lr=0.1, lr_schedule="inv_sqrt")
    >>> [round(lr_at(cfg, r), 6) for r in (1, 4, 9)]
    [0.1, 0.05, 0.033333]
    """
    if server_round < 1:
        raise ValueError(f"server_round must be >= 1, got {server_round}")
    lr = cfg.lr
    if cfg.lr_schedule == "inv_sqrt":
        lr = cfg.lr / math.sqrt(server_round)
    elif cfg.lr_schedule == "step":
        lr = cfg.lr * cfg.lr_gamma ** sum(m <= server_round for m in cfg.lr_milestones)
    if server_round <= cfg.lr_warmup_rounds:
        start = cfg.lr_warmup_start
        lr = start + (lr - start) * server_round / cfg.lr_warmup_rounds
    return lr


def for_round(cfg: TrainingConfig, server_round: int) -> TrainingConfig:
    """``cfg`` with the learning rate of ``server_round`` as a constant rate."""
    return dataclasses.replace(
        cfg,
        lr=lr_at(cfg, server_round),
        lr_schedule="constant",
        lr_milestones=[],
        lr_warmup_rounds=0,
    )


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    r"""SGD (with momentum and weight decay) or Adam, as configured.

    ``weight_decay`` :math:`\lambda` adds :math:`\lambda\theta` to the
    gradient before the step, for both optimisers (``torch.optim.Adam``'s
    coupled decay, not AdamW): an L2 term :math:`\tfrac\lambda2\|\theta\|^2`
    in the loss. This is DiverseFL's :math:`\lambda` regularisation
    (eq. 2 and 4: :math:`\theta^r = \theta^{r-1} - \mu^r(g^r +
    \lambda\theta^{r-1})`). SGD momentum :math:`\beta` keeps
    :math:`m \leftarrow \beta m + g` and steps :math:`\theta \leftarrow
    \theta - \eta m`.
    """
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainingConfig,
    generator: torch.Generator,
    extra_loss: ExtraLoss | None = None,
    epochs: int | None = None,
    batch_transform: BatchTransform | None = None,
    max_steps: int | None = None,
    momentum_buffers: list[torch.Tensor] | None = None,
) -> float:
    """Train ``model`` in place on ``(x, y)``: ``cfg.local_epochs`` epochs or ``local_steps`` steps.

    The learning rate starts at ``cfg.lr`` (pass :func:`for_round` of the
    config for a round's scheduled rate) and is multiplied by
    ``cfg.epoch_lr_gamma`` after each local epoch listed in
    ``cfg.epoch_lr_milestones`` (Bagdasaryan et al., Algorithm 2: "if epoch
    e in step_sched then lr_adv <- lr_adv / step_rate").

    Mini-batches are drawn from a seeded permutation of the tensors, on the
    tensors' device.

    Parameters
    ----------
    model : torch.nn.Module
        Model on the same device as ``x``.
    x, y : torch.Tensor
        Inputs and integer labels.
    cfg : TrainingConfig
        Optimiser, learning rate, batch size, gradient clipping.
    generator : torch.Generator
        CPU generator for the batch order.
    extra_loss : callable, optional
        Added to every batch's loss.
    epochs : int, optional
        Overrides ``cfg.local_epochs`` and ``cfg.local_steps``.
    batch_transform : callable, optional
        Applied to every mini-batch before the forward pass (an attack mixes
        backdoor items into each batch).
    max_steps : int, optional
        Train for exactly this many mini-batch steps instead of a number of
        epochs, reshuffling after every pass (DiverseFL's guiding update on a
        small sample takes as many steps as the client did). Without
        ``max_steps`` and ``epochs``, ``cfg.local_steps`` when set.
    momentum_buffers : list of torch.Tensor, optional
        SGD momentum buffers, one per parameter, to start from (worker
        momentum carried across rounds); updated in place. A list of zero
        tensors is the fresh start.

    Returns
    -------
    float
        Mean training loss over all batches (``nan`` when ``x`` is empty).
    """
    n = x.shape[0]
    if n == 0:
        return float("nan")
    model.train()
    opt = make_optimizer(model, cfg)
    params = list(model.parameters())
    if momentum_buffers is not None:
        if cfg.optimizer != "sgd" or len(momentum_buffers) != len(params):
            raise ValueError(
                f"momentum_buffers: need SGD and {len(params)} buffers, got "
                f"optimizer={cfg.optimizer!r} and {len(momentum_buffers)} buffers"
            )
        for p, buf in zip(params, momentum_buffers, strict=True):
            opt.state[p]["momentum_buffer"] = buf.to(p.device, p.dtype).clone()
    if max_steps is None and epochs is None:
        max_steps = cfg.local_steps
    batch = resolve_batch_size(cfg.batch_size, n)
    total = torch.zeros((), device=x.device)
    steps = 0
    num_epochs = epochs if epochs is not None else cfg.local_epochs
    epoch = 0
    while steps < max_steps if max_steps is not None else epoch < num_epochs:
        epoch += 1
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, batch):
            if max_steps is not None and steps >= max_steps:
                break
            idx = order[start : start + batch]
            opt.zero_grad(set_to_none=True)
            xb, yb = x[idx], y[idx]
            if batch_transform is not None:
                xb, yb = batch_transform(xb, yb)
            loss = classification_loss(model(xb), yb)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += loss.detach()
            steps += 1
        if epoch in cfg.epoch_lr_milestones:
            for group in opt.param_groups:
                group["lr"] *= cfg.epoch_lr_gamma
    if momentum_buffers is not None:
        for i, p in enumerate(params):
            buf = opt.state[p].get("momentum_buffer")
            if buf is not None:
                momentum_buffers[i] = buf.detach().clone()
    return float(total) / steps if steps else float("nan")


@dataclass
class EvalResult:
    """Loss and accuracies of a model on one labelled set."""

    loss: float
    accuracy: float
    per_class_accuracy: list[float]

    @property
    def bias(self) -> float:
        """Max minus min class accuracy over the classes present."""
        present = [a for a in self.per_class_accuracy if a == a]
        return max(present) - min(present) if present else float("nan")


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 1024
) -> EvalResult:
    """Loss, accuracy and per-class accuracy (``nan`` for absent classes)."""
    model.eval()
    n = x.shape[0]
    if n == 0:
        return EvalResult(float("nan"), float("nan"), [float("nan")] * num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros(num_classes, dtype=torch.float64, device=x.device)
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = model(xb)
        loss_sum += classification_loss(logits, yb).double() * len(yb)
        hits = (predict(logits) == yb).double()
        correct.index_add_(0, yb, hits)
    counts = torch.bincount(y, minlength=num_classes).double()
    per_class = torch.where(counts > 0, correct / counts.clamp(min=1), torch.nan)
    return EvalResult(
        loss=float(loss_sum) / n,
        accuracy=float(correct.sum()) / n,
        per_class_accuracy=[float(a) for a in per_class.cpu()],
    )
