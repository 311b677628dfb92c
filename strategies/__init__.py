"""Robust aggregation rules and defences as Flower strategies.

Each module holds one rule: a pure function on the update matrix and the
:class:`~strategies.base.RobustStrategy` subclass that configures it (the
legacy Flower API). :class:`~strategies.message.MessageStrategy` puts any of
them, transforms included, behind Flower's Message API.
"""

from strategies.auror import Auror
from strategies.base import RobustStrategy, WrappingStrategy
from strategies.bucketing import Bucketing
from strategies.bulyan import Bulyan
from strategies.centered_clipping import CenteredClipping
from strategies.clustering import CosineClustering
from strategies.crfl import CRFL
from strategies.deepsight import DeepSight
from strategies.diversefl import DiverseFL
from strategies.dnc import DnC
from strategies.dp_noise import DPNoise
from strategies.fang_rejection import FangRejection
from strategies.fedavg import FedAvg
from strategies.flame import Flame
from strategies.fldetector import FLDetector
from strategies.fltrust import FLTrust
from strategies.foolsgold import FoolsGold
from strategies.krum import Krum, MultiKrum
from strategies.lasa import LASA
from strategies.median import CoordinateMedian
from strategies.message import MessageStrategy
from strategies.nnm import NNM
from strategies.noisy_median import NoisyMedian
from strategies.norm_clip import NormClip
from strategies.oracle import OracleSGD
from strategies.rfa import GeometricMedian
from strategies.rlr import RobustLR
from strategies.signguard import SignGuard
from strategies.trimmed_mean import TrimmedMean

__all__ = [
    "CRFL",
    "LASA",
    "NNM",
    "Auror",
    "Bucketing",
    "Bulyan",
    "CenteredClipping",
    "CoordinateMedian",
    "CosineClustering",
    "DPNoise",
    "DeepSight",
    "DiverseFL",
    "DnC",
    "FLDetector",
    "FLTrust",
    "FangRejection",
    "FedAvg",
    "Flame",
    "FoolsGold",
    "GeometricMedian",
    "Krum",
    "MessageStrategy",
    "MultiKrum",
    "NoisyMedian",
    "NormClip",
    "OracleSGD",
    "RobustLR",
    "RobustStrategy",
    "SignGuard",
    "TrimmedMean",
    "WrappingStrategy",
]
