"""The honest client and the attacks, as Flower ``NumPyClient`` subclasses."""

from clients.alie import AlieClient
from clients.attack import AttackClient
from clients.class_backdoor import ClassBackdoorClient
from clients.fairness_attack import FairnessAttackClient
from clients.gaussian import GaussianClient
from clients.honest import HonestClient
from clients.ipm import IpmClient
from clients.label_flip import LabelFlipClient
from clients.mimic import Mimic2Client, MimicClient
from clients.min_max import MinMaxClient
from clients.min_sum import MinSumClient
from clients.model_replacement import ModelReplacementClient, SemanticModelReplacementClient
from clients.naive_poisoning import NaivePoisoningClient, SemanticNaivePoisoningClient
from clients.normalized_mean import NormalizedMeanClient
from clients.omniscient import OmniscientAttackClient
from clients.pixel_trojan import PixelTrojanClient
from clients.same_value import SameValueClient
from clients.semantic_backdoor import SemanticBackdoorClient
from clients.sign_flip import SignFlipClient

__all__ = [
    "AlieClient",
    "AttackClient",
    "ClassBackdoorClient",
    "FairnessAttackClient",
    "GaussianClient",
    "HonestClient",
    "IpmClient",
    "LabelFlipClient",
    "Mimic2Client",
    "MimicClient",
    "MinMaxClient",
    "MinSumClient",
    "ModelReplacementClient",
    "NaivePoisoningClient",
    "NormalizedMeanClient",
    "OmniscientAttackClient",
    "PixelTrojanClient",
    "SameValueClient",
    "SemanticBackdoorClient",
    "SemanticModelReplacementClient",
    "SemanticNaivePoisoningClient",
    "SignFlipClient",
]
