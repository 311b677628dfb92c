"""Naive (data-only) backdoor poisoning: Bagdasaryan et al.'s baseline, without scaling."""

from __future__ import annotations

from clients.backdoor import BackdoorClient, PoisonTraining
from clients.pixel_trojan import PixelBackdoor
from clients.semantic_backdoor import SemanticBackdoorParams


class NaivePoisoningClient(BackdoorClient):
    """Pixel-trigger backdoor by data poisoning alone: the baseline of Bagdasaryan et al.

    Bagdasaryan, Veit, Hua, Estrin & Shmatikov, "How To Backdoor Federated
    Learning", AISTATS 2020, compare model replacement with an attacker that
    trains on its backdoor data and submits the result unscaled. This client
    is that attacker for a pixel trigger: :class:`~clients.backdoor.PoisonTraining`
    (its own learning rate and epochs) and
    :class:`~clients.pixel_trojan.PixelBackdoor` (e.g. ``items_per_batch: 20``
    for the paper's batch mixing).
    """

    training_type = PoisonTraining
    backdoor_type = PixelBackdoor


class SemanticNaivePoisoningClient(BackdoorClient):
    """Semantic backdoor by data poisoning alone: the baseline of Bagdasaryan et al.

    :class:`~clients.backdoor.PoisonTraining` and
    :class:`~clients.semantic_backdoor.SemanticBackdoorParams`.
    """

    training_type = PoisonTraining
    backdoor_type = SemanticBackdoorParams
