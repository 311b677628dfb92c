"""Robust aggregation rules and defences as Flower strategies.

Each module holds one rule: a pure function on the update matrix and the
:class:`~strategies.base.RobustStrategy` subclass that configures it (the
legacy Flower API). :class:`~strategies.message.MessageStrategy` puts any of
them, transforms included, behind Flower's Message API.

Names are resolved on first use (:func:`flsec_flower.lazy.lazy_attributes`): ``import strategies``
costs almost nothing, which matters where Flower starts a fresh process
per message. A new module adds its names to ``_LAZY``, to the
``TYPE_CHECKING`` imports (for type checkers) and to ``__all__``;
``tests/test_import_cost.py`` checks that the three agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flsec_flower.lazy import lazy_attributes

if TYPE_CHECKING:
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

_LAZY: dict[str, str] = {
    "DeepSight": "strategies.deepsight",
    "Auror": "strategies.auror",
    "RobustStrategy": "strategies.base",
    "WrappingStrategy": "strategies.base",
    "Bucketing": "strategies.bucketing",
    "Bulyan": "strategies.bulyan",
    "CenteredClipping": "strategies.centered_clipping",
    "CosineClustering": "strategies.clustering",
    "CRFL": "strategies.crfl",
    "DiverseFL": "strategies.diversefl",
    "DnC": "strategies.dnc",
    "DPNoise": "strategies.dp_noise",
    "FangRejection": "strategies.fang_rejection",
    "FedAvg": "strategies.fedavg",
    "Flame": "strategies.flame",
    "FLDetector": "strategies.fldetector",
    "FLTrust": "strategies.fltrust",
    "FoolsGold": "strategies.foolsgold",
    "Krum": "strategies.krum",
    "MultiKrum": "strategies.krum",
    "LASA": "strategies.lasa",
    "CoordinateMedian": "strategies.median",
    "MessageStrategy": "strategies.message",
    "NNM": "strategies.nnm",
    "NoisyMedian": "strategies.noisy_median",
    "NormClip": "strategies.norm_clip",
    "OracleSGD": "strategies.oracle",
    "GeometricMedian": "strategies.rfa",
    "RobustLR": "strategies.rlr",
    "SignGuard": "strategies.signguard",
    "TrimmedMean": "strategies.trimmed_mean",
}
"""Public name -> the module that defines it."""

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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__, globals())
