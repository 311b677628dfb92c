"""The honest client and the attacks.

Each attack is written once: model poisoning as a parameter dataclass with
``forge`` (:mod:`clients.model_poisoning`), data poisoning as a dataset
wrapper (:mod:`clients.poisoned_data`), omniscient attacks as
``forge(honest_updates, ...)`` run by the server-side adversary
(:mod:`clients.omniscient`). They are exposed as Flower ``NumPyClient``
subclasses (here), as Message-API client mods (:mod:`clients.mods`) and as a
standalone ``NumPyClient`` built from plain arguments (:mod:`clients.standalone`).
"""

from clients.agr_tailored import AgrTailoredClient
from clients.alie import AlieClient
from clients.attack import AttackClient
from clients.class_backdoor import ClassBackdoorClient
from clients.fairness_attack import FairnessAttackClient
from clients.fang import FangClient
from clients.gaussian import Gaussian, GaussianClient
from clients.honest import HonestClient
from clients.ipm import IpmClient
from clients.label_flip import LabelFlip, LabelFlipClient
from clients.mimic import Mimic2Client, MimicClient
from clients.min_max import MinMaxClient
from clients.min_sum import MinSumClient
from clients.model_replacement import (
    ModelReplacementClient,
    Scaling,
    SemanticModelReplacementClient,
)
from clients.naive_poisoning import NaivePoisoningClient, SemanticNaivePoisoningClient
from clients.normalized_mean import NormalizedMeanClient
from clients.omniscient import OmniscientAttackClient
from clients.pixel_trojan import PixelTrigger, PixelTrojanClient
from clients.poisoned_data import PoisonedDataset
from clients.same_value import SameValue, SameValueClient
from clients.schedule import Schedule
from clients.semantic_backdoor import SemanticBackdoorClient
from clients.sign_flip import SignFlip, SignFlipClient
from clients.standalone import StandaloneAttackClient

__all__ = [
    "AgrTailoredClient",
    "AlieClient",
    "AttackClient",
    "ClassBackdoorClient",
    "FairnessAttackClient",
    "FangClient",
    "Gaussian",
    "GaussianClient",
    "HonestClient",
    "IpmClient",
    "LabelFlip",
    "LabelFlipClient",
    "Mimic2Client",
    "MimicClient",
    "MinMaxClient",
    "MinSumClient",
    "ModelReplacementClient",
    "NaivePoisoningClient",
    "NormalizedMeanClient",
    "OmniscientAttackClient",
    "PixelTrigger",
    "PixelTrojanClient",
    "PoisonedDataset",
    "SameValue",
    "SameValueClient",
    "Scaling",
    "Schedule",
    "SemanticBackdoorClient",
    "SemanticModelReplacementClient",
    "SemanticNaivePoisoningClient",
    "SignFlip",
    "SignFlipClient",
    "StandaloneAttackClient",
]
