"""DiverseFL (Prakash & Avestimehr): per-client guiding updates computed on a shared sample.

Protocol. Once, each client shares a small sample of its training data (a
``fraction`` of it, 3 % by default) with the server: in
:meth:`DiverseFL.configure_fit` the server sends
``get_properties({"query": "diversefl_sample", "fraction": f})`` to every
sampled client it has not asked yet and keeps the answer (the bytes of an
``.npz`` file with arrays ``x`` and ``y``, see
:meth:`clients.honest.HonestClient.get_properties`) keyed by partition id.
Every round it computes each client's *guiding update* by running the
clients' local procedure (``ctx.local_trainer``) from the global model on
that client's sample, and accepts the client's update only when it points
the same way as, and has a similar norm to, its guiding update.

``ctx.local_trainer`` runs the same procedure as the clients, including the
number of optimiser steps (the norm test compares update sizes): a sample of
``k`` examples stands for a partition of about ``k / fraction`` examples, and
the guide takes ``local_trainer.steps_for(k / fraction)`` mini-batch steps on it.
"""

from __future__ import annotations

import io
import logging
import math
import zipfile
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.common import Code, FitIns, GetPropertiesIns, Parameters
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy

from flsec_flower.aggregation import Aggregate, RoundContext
from flsec_flower.wire import DIVERSEFL_SAMPLE, QUERY, SAMPLE_FRACTION
from strategies._linalg import row_norms
from strategies.base import RobustStrategy

logger = logging.getLogger("flsec")

SAMPLE_QUERY = DIVERSEFL_SAMPLE
"""``get_properties`` query (and reply key) of the shared sample."""

_BLOCK_ELEMENTS = 1 << 24


def decode_sample(blob: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a shared sample: ``.npz`` bytes with a float array ``x`` and an integer array ``y``.

    Parameters
    ----------
    blob : bytes
        What the client returned.

    Returns
    -------
    tuple of torch.Tensor
        ``x`` as float32 and ``y`` as int64, on the CPU.

    Raises
    ------
    ValueError
        If ``blob`` is not such a file, the arrays are empty, of different
        lengths, of the wrong kind, or ``x`` has non-finite values.

    Examples
    --------
    >>> buf = io.BytesIO()
    >>> np.savez(buf, x=np.zeros((2, 3), np.float32), y=np.array([0, 1]))
    >>> x, y = decode_sample(buf.getvalue())
    >>> tuple(x.shape), y.tolist()
    ((2, 3), [0, 1])
    """
    if not isinstance(blob, bytes):
        raise ValueError(f"the sample is {type(blob).__name__}, not bytes")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"the sample is not an .npz file with arrays x and y: {err}") from err
    if not (np.issubdtype(x.dtype, np.floating) and np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"x must be float and y integer, got {x.dtype} and {y.dtype}")
    if y.ndim != 1 or x.ndim < 1 or x.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ValueError(f"x {x.shape} and y {y.shape} are not one non-empty labelled set")
    if not np.isfinite(x).all() or (y < 0).any():
        raise ValueError("x has non-finite values or y negative labels")
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def diversefl(
    updates: torch.Tensor, guides: torch.Tensor, eps1: float = 0.5, eps2: float = 2.0
) -> Aggregate:
    r"""Keep the updates that agree with their guiding updates; average them.

    Client ``i`` with update :math:`u_i` and guiding update :math:`g_i` is
    accepted when

    .. math:: C_1 = \langle u_i, g_i \rangle > 0 \quad\text{and}\quad
              \epsilon_1 < C_2 = \frac{\lVert u_i \rVert}{\lVert g_i \rVert} < \epsilon_2,

    and the aggregate is the mean of the accepted updates (zero, i.e. the
    global model is kept, when none is accepted). Prakash, Hashemi, Wang,
    Annavaram and Avestimehr, "Mitigating Byzantine Attacks in Federated
    Learning" (DiverseFL), arXiv:2010.07541, 2020.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    guides : torch.Tensor
        Guiding update of each row, shape ``(n, d)``. A zero (or non-finite)
        guide rejects its row.
    eps1, eps2 : float
        Bounds of the accepted norm ratio, ``0 <= eps1 < eps2``.

    Returns
    -------
    Aggregate
        Mean of the accepted rows; accepted rows selected, the others
        flagged; ``scores`` are the cosine similarities ``cos(u_i, g_i)``.

    Examples
    --------
    >>> g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    >>> u = torch.tensor([[1.5, 0.5], [-1.0, 0.0], [9.0, 0.0]])
    >>> agg = diversefl(u, g)
    >>> agg.update, agg.selected, agg.flagged
    (tensor([1.5000, 0.5000]), [0], [1, 2])
    """
    n, d = updates.shape
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    dots = torch.zeros(n, dtype=torch.float64, device=updates.device)
    for start in range(0, d, step):
        u = updates[:, start : start + step].to(torch.float64)
        g = guides[:, start : start + step].to(device=updates.device, dtype=torch.float64)
        dots += (u * g).sum(dim=1)
    u_norm = row_norms(updates)
    g_norm = row_norms(guides).to(updates.device)
    ratio = u_norm / g_norm
    accept = (dots > 0) & (ratio > eps1) & (ratio < eps2)
    cosine = torch.nan_to_num(dots / (u_norm * g_norm), nan=0.0)
    selected = accept.nonzero().flatten().tolist()
    flagged = (~accept).nonzero().flatten().tolist()
    if not selected:
        update = torch.zeros(d, dtype=updates.dtype, device=updates.device)
    else:
        update = (accept.to(updates.dtype) / len(selected)) @ updates
    return Aggregate(update=update, selected=selected, flagged=flagged, scores=cosine)


class DiverseFL(RobustStrategy):
    """DiverseFL: collect shared samples, compute guiding updates, filter (:func:`diversefl`).

    A client whose sample is missing or unusable (it did not answer, sent a
    malformed file, or training on it failed) is flagged every round.

    Parameters
    ----------
    fraction : float
        Fraction of its training partition each client shares, in ``(0, 1]``.
    eps1, eps2 : float
        Bounds of the accepted norm ratio ``||u_i|| / ||g_i||`` (paper: 0.5 and 2).
    samples : mapping of int to (torch.Tensor, torch.Tensor), optional
        Shared samples the server already holds, by partition id; the
        clients in it are not asked again.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`; ``local_trainer``
        (the clients' procedure on the server) is required before the first
        aggregation.

    Attributes
    ----------
    samples : dict[int, tuple[torch.Tensor, torch.Tensor]]
        The shared samples by partition id (CPU tensors).
    """

    state_attributes: ClassVar[tuple[str, ...]] = ("samples", "_asked")
    message_api: ClassVar[bool] = False
    """The shared samples are asked for with ``get_properties``, a legacy-API query."""

    def __init__(
        self,
        *,
        fraction: float = 0.03,
        eps1: float = 0.5,
        eps2: float = 2.0,
        samples: Mapping[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        if not (math.isfinite(eps1) and math.isfinite(eps2) and 0 <= eps1 < eps2):
            raise ValueError(f"need 0 <= eps1 < eps2 (finite), got eps1={eps1!r}, eps2={eps2!r}")
        self.fraction = float(fraction)
        self.eps1 = float(eps1)
        self.eps2 = float(eps2)
        self.samples: dict[int, tuple[torch.Tensor, torch.Tensor]] = dict(samples or {})
        self._asked: set[int] = set(self.samples)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Sample clients as the base does; ask the new ones for their shared sample."""
        instructions = super().configure_fit(server_round, parameters, client_manager)
        for proxy, _ in instructions:
            pid = self._partition_of(proxy)
            if pid not in self._asked:
                self._asked.add(pid)
                self._fetch_sample(proxy, pid, server_round)
        return instructions

    def _fetch_sample(self, proxy: ClientProxy, pid: int, server_round: int) -> None:
        ins = GetPropertiesIns(
            {**self.properties_config, QUERY: SAMPLE_QUERY, SAMPLE_FRACTION: self.fraction}
        )
        try:
            res = proxy.get_properties(ins, timeout=None, group_id=server_round)
            if res.status.code != Code.OK:
                raise ValueError(f"status {res.status.code}: {res.status.message}")
            self.samples[pid] = decode_sample(res.properties.get(SAMPLE_QUERY))
        except Exception as err:  # a client's failure must not stop the server
            logger.warning("DiverseFL: no usable sample from partition %d: %s", pid, err)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Compute every row's guiding update on its client's sample and filter."""
        if ctx.local_trainer is None:
            raise RuntimeError(
                "DiverseFL needs local_trainer= (the clients' local procedure on the server)"
            )
        guides = torch.zeros_like(updates)
        for row, pid in enumerate(ctx.partition_ids):
            sample = self.samples.get(pid)
            if sample is None:
                logger.warning(
                    "round %d: partition %d has no shared sample; flagged", ctx.server_round, pid
                )
                continue
            try:
                x, y = sample
                local_size = round(len(y) / self.fraction)
                steps = ctx.local_trainer.steps_for(local_size)
                guide = ctx.local_trainer(
                    ctx.global_params,
                    x,
                    y,
                    steps=steps,
                    server_round=ctx.server_round,
                    reference_size=local_size,
                )
                guides[row] = guide.to(device=updates.device, dtype=updates.dtype)
            except (RuntimeError, ValueError, IndexError) as err:
                logger.warning(
                    "round %d: training on partition %d's sample failed (%s); flagged",
                    ctx.server_round,
                    pid,
                    err,
                )
        agg = diversefl(updates, guides, self.eps1, self.eps2)
        if not agg.selected:
            logger.warning("round %d: DiverseFL accepted no update; model kept", ctx.server_round)
        return agg
