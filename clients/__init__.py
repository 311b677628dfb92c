"""The honest client and the attacks.

Each attack is written once: model poisoning as a parameter dataclass with
``forge`` (:mod:`clients.model_poisoning`), data poisoning as a dataset
wrapper (:mod:`clients.poisoned_data`), omniscient attacks as
``forge(honest_updates, ...)`` run by the server-side adversary
(:mod:`clients.omniscient`). They are exposed as Flower ``NumPyClient``
subclasses (here), as Message-API client mods (:mod:`clients.mods`) and as a
standalone ``NumPyClient`` built from plain arguments (:mod:`clients.standalone`).

Names are resolved on first use (:func:`flsec_flower.lazy.lazy_attributes`): ``import clients``
costs almost nothing, which matters where Flower starts a fresh process
per message. A new module adds its names to ``_LAZY``, to the
``TYPE_CHECKING`` imports (for type checkers) and to ``__all__``;
``tests/test_import_cost.py`` checks that the three agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flsec_flower.lazy import lazy_attributes

if TYPE_CHECKING:
    from clients.agr_tailored import AgrTailored, AgrTailoredClient
    from clients.alie import Alie, AlieClient
    from clients.alter_min import AlterMinClient
    from clients.attack import AttackClient
    from clients.backdoor import BackdoorClient, PoisonTraining
    from clients.class_backdoor import ClassBackdoorClient
    from clients.dba import DbaClient, DistributedTrigger
    from clients.edge_case import EdgeCaseClient, NormBallProjection
    from clients.fairness_attack import FairnessAttackClient
    from clients.fang import Fang, FangClient, fang_adversary
    from clients.gaussian import Gaussian, GaussianClient
    from clients.honest import HonestClient
    from clients.ipm import Ipm, IpmClient
    from clients.label_flip import LabelFlip, LabelFlipClient
    from clients.mimic import Mimic, Mimic2, Mimic2Client, MimicClient
    from clients.min_max import MinMax, MinMaxClient
    from clients.min_sum import MinSum, MinSumClient
    from clients.model_replacement import (
        ModelReplacementClient,
        Replacement,
        Scaling,
        SemanticModelReplacementClient,
    )
    from clients.naive_poisoning import NaivePoisoningClient, SemanticNaivePoisoningClient
    from clients.neurotoxin import Neurotoxin, NeurotoxinClient
    from clients.normalized_mean import NormalizedMean, NormalizedMeanClient
    from clients.omniscient import OmniscientAttackClient, colluding_adversary
    from clients.pixel_trojan import PixelBackdoor, PixelTrigger, PixelTrojanClient
    from clients.poisoned_data import PoisonedDataset
    from clients.same_value import SameValue, SameValueClient
    from clients.schedule import Schedule
    from clients.semantic_backdoor import (
        SemanticBackdoor,
        SemanticBackdoorClient,
        SemanticBackdoorParams,
    )
    from clients.sign_flip import SignFlip, SignFlipClient
    from clients.standalone import StandaloneAttackClient
    from clients.three_dfed import ThreeDFed, ThreeDFedClient

_LAZY: dict[str, str] = {
    "Fang": "clients.fang",
    "FangClient": "clients.fang",
    "fang_adversary": "clients.fang",
    "AgrTailored": "clients.agr_tailored",
    "AgrTailoredClient": "clients.agr_tailored",
    "Alie": "clients.alie",
    "AlieClient": "clients.alie",
    "AlterMinClient": "clients.alter_min",
    "AttackClient": "clients.attack",
    "BackdoorClient": "clients.backdoor",
    "PoisonTraining": "clients.backdoor",
    "ClassBackdoorClient": "clients.class_backdoor",
    "DbaClient": "clients.dba",
    "DistributedTrigger": "clients.dba",
    "EdgeCaseClient": "clients.edge_case",
    "NormBallProjection": "clients.edge_case",
    "FairnessAttackClient": "clients.fairness_attack",
    "Gaussian": "clients.gaussian",
    "GaussianClient": "clients.gaussian",
    "HonestClient": "clients.honest",
    "Ipm": "clients.ipm",
    "IpmClient": "clients.ipm",
    "LabelFlip": "clients.label_flip",
    "LabelFlipClient": "clients.label_flip",
    "Mimic": "clients.mimic",
    "Mimic2": "clients.mimic",
    "Mimic2Client": "clients.mimic",
    "MimicClient": "clients.mimic",
    "MinMax": "clients.min_max",
    "MinMaxClient": "clients.min_max",
    "MinSum": "clients.min_sum",
    "MinSumClient": "clients.min_sum",
    "ModelReplacementClient": "clients.model_replacement",
    "Replacement": "clients.model_replacement",
    "Scaling": "clients.model_replacement",
    "SemanticModelReplacementClient": "clients.model_replacement",
    "NaivePoisoningClient": "clients.naive_poisoning",
    "SemanticNaivePoisoningClient": "clients.naive_poisoning",
    "Neurotoxin": "clients.neurotoxin",
    "NeurotoxinClient": "clients.neurotoxin",
    "NormalizedMean": "clients.normalized_mean",
    "NormalizedMeanClient": "clients.normalized_mean",
    "colluding_adversary": "clients.omniscient",
    "OmniscientAttackClient": "clients.omniscient",
    "PixelBackdoor": "clients.pixel_trojan",
    "PixelTrigger": "clients.pixel_trojan",
    "PixelTrojanClient": "clients.pixel_trojan",
    "PoisonedDataset": "clients.poisoned_data",
    "SameValue": "clients.same_value",
    "SameValueClient": "clients.same_value",
    "Schedule": "clients.schedule",
    "SemanticBackdoor": "clients.semantic_backdoor",
    "SemanticBackdoorClient": "clients.semantic_backdoor",
    "SemanticBackdoorParams": "clients.semantic_backdoor",
    "SignFlip": "clients.sign_flip",
    "SignFlipClient": "clients.sign_flip",
    "StandaloneAttackClient": "clients.standalone",
    "ThreeDFed": "clients.three_dfed",
    "ThreeDFedClient": "clients.three_dfed",
}
"""Public name -> the module that defines it."""

__all__ = [
    "AgrTailored",
    "AgrTailoredClient",
    "Alie",
    "AlieClient",
    "AlterMinClient",
    "AttackClient",
    "BackdoorClient",
    "ClassBackdoorClient",
    "DbaClient",
    "DistributedTrigger",
    "EdgeCaseClient",
    "FairnessAttackClient",
    "Fang",
    "FangClient",
    "Gaussian",
    "GaussianClient",
    "HonestClient",
    "Ipm",
    "IpmClient",
    "LabelFlip",
    "LabelFlipClient",
    "Mimic",
    "Mimic2",
    "Mimic2Client",
    "MimicClient",
    "MinMax",
    "MinMaxClient",
    "MinSum",
    "MinSumClient",
    "ModelReplacementClient",
    "NaivePoisoningClient",
    "Neurotoxin",
    "NeurotoxinClient",
    "NormBallProjection",
    "NormalizedMean",
    "NormalizedMeanClient",
    "OmniscientAttackClient",
    "PixelBackdoor",
    "PixelTrigger",
    "PixelTrojanClient",
    "PoisonTraining",
    "PoisonedDataset",
    "Replacement",
    "SameValue",
    "SameValueClient",
    "Scaling",
    "Schedule",
    "SemanticBackdoor",
    "SemanticBackdoorClient",
    "SemanticBackdoorParams",
    "SemanticModelReplacementClient",
    "SemanticNaivePoisoningClient",
    "SignFlip",
    "SignFlipClient",
    "StandaloneAttackClient",
    "ThreeDFed",
    "ThreeDFedClient",
    "colluding_adversary",
    "fang_adversary",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__, globals())
