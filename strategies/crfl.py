"""CRFL (Xie, Chen, Chen & Li): clip the global model's norm and smooth it with Gaussian noise."""

from __future__ import annotations

import math
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import row_norms
from strategies._params import check_number
from strategies.base import RobustStrategy


def contraction(clip: float, sigma: float) -> float:
    r"""CRFL's per-round contraction factor :math:`2\Phi(\rho_t / \sigma) - 1`.

    Equal to :math:`\mathrm{erf}(\rho_t / (\sqrt2 \sigma))`: the factor by
    which one round of clipping to :math:`\rho_t` and noise
    :math:`\mathcal N(0, \sigma^2 I)` contracts the distance between the
    clean and the backdoored model distributions in Xie et al.'s
    certification bound (the product over the rounds after the attack
    divides the squared certified radius; the authors' ``cal_prob_bound``).
    1 without noise.

    Examples
    --------
    >>> round(contraction(1.0, 1.0), 4)
    0.6827
    >>> contraction(1.0, 0.0)
    1.0
    """
    return 1.0 if sigma == 0 else math.erf(clip / (math.sqrt(2.0) * sigma))


def crfl(
    updates: torch.Tensor,
    global_params: torch.Tensor,
    generator: torch.Generator,
    clip: float,
    sigma: float,
    weights: torch.Tensor | None = None,
) -> Aggregate:
    r"""One CRFL round: FedAvg, then norm clipping and Gaussian smoothing of the new model.

    .. math::
        w' = G + \textstyle\sum_i p_i u_i, \qquad
        w'' = \frac{w'}{\max(1, \lVert w' \rVert / \rho_t)} + \mathcal N(0, \sigma^2 I),

    and the returned update is :math:`w'' - G` (so the server, with
    ``server_lr = 1``, lands on :math:`w''`). :math:`p_i` are uniform or the
    normalised ``weights``. Xie, Chen, Chen and Li, "CRFL: Certifiably
    Robust Federated Learning against Backdoor Attacks", ICML 2021,
    Algorithm 1 (training with parameter clipping and perturbation). The
    certification itself (Monte-Carlo parameter smoothing of the final
    model on test inputs) is not part of aggregation; the round metric
    ``crfl_contraction`` is the factor :func:`contraction` of its bound.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    global_params : torch.Tensor
        Current global model :math:`G`, shape ``(d,)``.
    generator : torch.Generator
        CPU generator of the noise.
    clip : float
        Model-norm bound :math:`\rho_t` of this round.
    sigma : float
        Noise standard deviation :math:`\sigma`.
    weights : torch.Tensor, optional
        Client weights (sample counts), shape ``(n,)``; uniform when ``None``.

    Returns
    -------
    Aggregate
        The update :math:`w'' - G`; metrics ``crfl_model_norm`` (of
        :math:`w'`), ``crfl_clip`` and ``crfl_contraction``.

    Examples
    --------
    >>> u = torch.tensor([[3.0, 0.0], [3.0, 8.0]])
    >>> agg = crfl(u, torch.zeros(2), torch.Generator().manual_seed(0), clip=2.5, sigma=0.0)
    >>> agg.update, agg.metrics["crfl_model_norm"]
    (tensor([1.5000, 2.0000]), 5.0)
    """
    n = updates.shape[0]
    w = torch.ones(n, dtype=torch.float64) if weights is None else weights.double().cpu()
    mean = (w / w.sum()).to(device=updates.device, dtype=updates.dtype) @ updates
    model = global_params.to(torch.float64) + mean.to(torch.float64)
    norm = float(row_norms(model))
    model = model * min(1.0, clip / norm) if norm > 0 else model
    noise = torch.randn(model.shape, generator=generator, dtype=torch.float64)
    model = model + sigma * noise.to(model.device)
    update = (model - global_params.to(torch.float64)).to(updates.dtype)
    metrics = {
        "crfl_model_norm": norm,
        "crfl_clip": clip,
        "crfl_contraction": contraction(clip, sigma),
    }
    return Aggregate(update=update, selected=list(range(n)), metrics=metrics)


class CRFL(RobustStrategy):
    r"""CRFL (:func:`crfl`), the bound growing with the round: ``clip + clip_growth * t``.

    The authors' MNIST setting grows the bound with the round,
    :math:`\rho_t = 2 + 0.1\,t`, with :math:`\sigma = 0.01`: those are the
    defaults. The bound is on the norm of the whole model, so it must suit
    the model's size. The noise is seeded with ``ctx.generator``.

    Parameters
    ----------
    clip : float
        Model-norm bound at round 0, ``> 0``.
    clip_growth : float
        Increase of the bound per round, ``>= 0``.
    sigma : float
        Noise standard deviation, ``>= 0``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`; ``weighted=True``
        weights the mean by the reported sample counts, as CRFL's FedAvg.
    """

    supports_weighting = True

    def __init__(
        self,
        *,
        clip: float = 2.0,
        clip_growth: float = 0.1,
        sigma: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.clip = check_number("clip", clip, 0.0)
        if self.clip == 0:
            raise ValueError("clip must be positive, got 0")
        self.clip_growth = check_number("clip_growth", clip_growth, 0.0)
        self.sigma = check_number("sigma", sigma, 0.0)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Average, clip the new model to this round's bound and add the noise."""
        clip = self.clip + self.clip_growth * ctx.server_round
        weights = ctx.num_examples if self.weighted else None
        return crfl(updates, ctx.global_params, ctx.generator, clip, self.sigma, weights)
