"""The honest client and the attacks.

Each attack is written once: model poisoning as a parameter dataclass with
``forge`` (:mod:`clients.model_poisoning`), data poisoning as a dataset
wrapper (:mod:`clients.poisoned_data`), omniscient attacks as
``forge(honest_updates, ...)`` run by the server-side adversary
(:mod:`clients.omniscient`). They are exposed as Flower ``NumPyClient``
subclasses (here), as Message-API client mods (:mod:`clients.mods`) and as a
standalone ``NumPyClient`` built from plain arguments (:mod:`clients.standalone`).
"""

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
    "colluding_adversary",
    "fang_adversary",
]
