"""Names to classes: the one place that knows the concrete rules and attacks.

A new rule or attack is one new file plus one line here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from clients import (
    AgrTailoredClient,
    AlieClient,
    AlterMinClient,
    ClassBackdoorClient,
    DbaClient,
    EdgeCaseClient,
    FairnessAttackClient,
    FangClient,
    GaussianClient,
    HonestClient,
    IpmClient,
    LabelFlipClient,
    Mimic2Client,
    MimicClient,
    MinMaxClient,
    MinSumClient,
    ModelReplacementClient,
    NaivePoisoningClient,
    NeurotoxinClient,
    NormalizedMeanClient,
    PixelTrojanClient,
    SameValueClient,
    SemanticBackdoorClient,
    SemanticModelReplacementClient,
    SemanticNaivePoisoningClient,
    SignFlipClient,
    ThreeDFedClient,
)
from flsec_flower.config import ConfigError, ExperimentConfig, StrategyConfig
from flsec_flower.data import Dataset
from flsec_flower.experiment import (
    ClientEnv,
    client_env,
    experiment_dataset,
    malicious_ids,
    register_reserved_data,
)
from strategies import (
    CRFL,
    LASA,
    NNM,
    Auror,
    Bucketing,
    Bulyan,
    CenteredClipping,
    CoordinateMedian,
    CosineClustering,
    DeepSight,
    DiverseFL,
    DnC,
    DPNoise,
    FangRejection,
    FedAvg,
    Flame,
    FLDetector,
    FLTrust,
    FoolsGold,
    GeometricMedian,
    Krum,
    MultiKrum,
    NoisyMedian,
    NormClip,
    OracleSGD,
    RobustLR,
    RobustStrategy,
    SignGuard,
    TrimmedMean,
    WrappingStrategy,
)
from strategies._too_few import ByzantineBound

# ---- aggregation rules (strategy.name)
RULES: dict[str, type[RobustStrategy]] = {
    "fedavg": FedAvg,
    "diversefl": DiverseFL,
    "flame": Flame,
    "fltrust": FLTrust,
    "foolsgold": FoolsGold,
    "oracle": OracleSGD,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
    "median": CoordinateMedian,
    "trimmed_mean": TrimmedMean,
    "rfa": GeometricMedian,
    "geometric_median": GeometricMedian,
    "centered_clipping": CenteredClipping,
    "noisy_median": NoisyMedian,
    "dnc": DnC,
    "signguard": SignGuard,
    "clustering": CosineClustering,
    "crfl": CRFL,
    "fldetector": FLDetector,
    "auror": Auror,
    "fang_rejection": FangRejection,
    "lasa": LASA,
    "deepsight": DeepSight,
}

# ---- transforms around a rule (strategy.wrappers[i].name)
WRAPPERS: dict[str, type[WrappingStrategy]] = {
    "bucketing": Bucketing,
    "dp_noise": DPNoise,
    "nnm": NNM,
    "norm_clip": NormClip,
    "rlr": RobustLR,
}

# ---- attacks (attack.name)
ATTACKS: dict[str, type[HonestClient]] = {
    "agr_tailored": AgrTailoredClient,
    "alie": AlieClient,
    "alter_min": AlterMinClient,
    "class_backdoor": ClassBackdoorClient,
    "dba": DbaClient,
    "edge_case": EdgeCaseClient,
    "fairness_attack": FairnessAttackClient,
    "fang": FangClient,
    "gaussian": GaussianClient,
    "ipm": IpmClient,
    "label_flip": LabelFlipClient,
    "mimic": MimicClient,
    "mimic2": Mimic2Client,
    "min_max": MinMaxClient,
    "min_sum": MinSumClient,
    "model_replacement": ModelReplacementClient,
    "model_replacement_semantic": SemanticModelReplacementClient,
    "naive_poisoning": NaivePoisoningClient,
    "naive_poisoning_semantic": SemanticNaivePoisoningClient,
    "neurotoxin": NeurotoxinClient,
    "normalized_mean": NormalizedMeanClient,
    "pixel_trojan": PixelTrojanClient,
    "same_value": SameValueClient,
    "semantic_backdoor": SemanticBackdoorClient,
    "sign_flip": SignFlipClient,
    "three_dfed": ThreeDFedClient,
}

# Keys the runner passes to every strategy; not user parameters.
_COMMON = {
    "inner",
    "server_lr",
    "server_momentum",
    "device",
    "seed",
    "min_results",
    "registration_timeout",
    "registration_hint",
}

# Server-side hooks a rule may take at construction; not user parameters.
# ``malicious_partition_ids`` is ground truth: only the simulation-only OracleSGD takes it.
HOOKS = {
    "local_trainer",
    "adversary",
    "gradient_lr",
    "root_data",
    "samples",
    "malicious_partition_ids",
}

Hook = Callable[[Mapping[str, Any]], Any]
"""``hook(params) -> value``: a server-side hook for one rule or wrapper.

``params`` are the rule's parameters (the config's over the constructor's
defaults), e.g. FLTrust's root set is drawn with its ``root_size``.
"""


def _lookup(table: dict[str, Any], name: str, key: str) -> Any:
    if name not in table:
        allowed = ", ".join(sorted(table)) or "(none registered)"
        raise ConfigError(f"{key}: unknown name {name!r}; allowed: {allowed}")
    return table[name]


def parameters(cls: type) -> list[inspect.Parameter]:
    """The config parameters of a rule, wrapper or attack class, from its constructors.

    Walks the class's ``__init__`` signatures from the most derived up to
    :class:`RobustStrategy` / :class:`HonestClient`; a name's first
    occurrence (the most derived, with its default) wins. The runner's own
    arguments (``inner``, ``server_lr``, ``device``, ``env`` ...) are left out.
    An attack with a parameter dataclass (``params_type``) declares its
    parameters there: its fields are the parameters.
    """
    params_type = getattr(cls, "params_type", None)
    if params_type is not None:
        return [
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
            )
            for f in dataclasses.fields(params_type)
        ]
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                found.setdefault(p.name, p)
        if klass in (RobustStrategy, HonestClient):
            break
    return [p for n, p in found.items() if n not in _COMMON | HOOKS and n not in ("env", "model")]


def _constructor_names(cls: type) -> set[str]:
    """Every keyword a rule's constructors name, up to :class:`RobustStrategy`."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names.update(inspect.signature(klass.__init__).parameters)
        if klass is RobustStrategy:
            break
    return names


def _user_parameters(cls: type) -> list[str]:
    return [p.name for p in parameters(cls)]


def _construct(cls: type, params: dict, key: str, **fixed: Any) -> Any:
    allowed = _user_parameters(cls)
    for name in params:
        if name not in allowed:
            raise ConfigError(
                f"{key}.{name}: unknown parameter of {cls.__name__}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )
    try:
        return cls(**fixed, **params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}: {cls.__name__} rejected {params!r}: {err}") from err


def _hook_values(cls: type, params: Mapping[str, Any], hooks: Mapping[str, Hook]) -> dict:
    """The hooks ``cls``'s constructor takes, computed for its parameters."""
    names = _constructor_names(cls)
    resolved = {p.name: p.default for p in parameters(cls)} | dict(params)
    return {name: hook(resolved) for name, hook in hooks.items() if name in names}


def build_strategy(
    cfg: StrategyConfig, hooks: Mapping[str, Hook] | None = None, **common: Any
) -> RobustStrategy:
    """Build the configured rule and wrap it, innermost wrapper first.

    ``common`` holds the Flower and runner keyword arguments every strategy
    takes (``server_lr``, ``device``, ``seed``, ``evaluate_fn``, ...).
    ``hooks`` maps a server-side hook's constructor keyword (see
    :data:`HOOKS`) to a :data:`Hook`; each rule and wrapper gets the hooks
    its constructor takes (every one takes ``local_trainer``, ``adversary``
    and ``gradient_lr``; FLTrust, FangRejection and DeepSight ``root_data``; only the
    simulation-only OracleSGD ``malicious_partition_ids``).
    """
    hooks = {} if hooks is None else hooks
    unknown = sorted(set(hooks) - HOOKS)
    if unknown:
        raise ValueError(f"unknown server hooks {unknown}; known: {sorted(HOOKS)}")
    rule = _lookup(RULES, cfg.name, "strategy.name")
    fixed = _hook_values(rule, cfg.params, hooks)
    strategy = _construct(rule, cfg.params, "strategy.params", **common, **fixed)
    for i, wrapper in enumerate(cfg.wrappers):
        key = f"strategy.wrappers[{i}]"
        cls = _lookup(WRAPPERS, wrapper.name, f"{key}.name")
        fixed = _hook_values(cls, wrapper.params, hooks)
        strategy = _construct(
            cls, wrapper.params, f"{key}.params", inner=strategy, **common, **fixed
        )
    return strategy


def check_round_size(cfg: StrategyConfig, strategy: RobustStrategy, n: int) -> None:
    """Refuse a config whose rounds of ``n`` updates cannot meet a rule's Byzantine bound.

    Walks the built strategy from the outermost wrapper in: Bucketing turns
    ``n`` into ``ceil(n / s)`` means for what it wraps and its
    ``on_too_few`` governs the rules inside it. A rule whose policy is
    ``"raise"`` and whose bound (``f``, or trimmed mean's ``b``) does not fit
    would stop the run in round 1; this says so before the run starts.

    Raises
    ------
    ConfigError
        Naming the bound's key and, through bucketing, the ``s`` key.
    """
    keys = [f"strategy.wrappers[{i}]" for i in reversed(range(len(cfg.wrappers)))]
    rows, policy, via = n, None, ""
    level: object = strategy
    for key in [*keys, "strategy"]:
        if (
            isinstance(level, ByzantineBound)
            and (policy or level.on_too_few) == "raise"
            and not level.fits(rows)
        ):
            raise ConfigError(
                f"{key}.params.{level.f_param}: {type(level).__name__} with "
                f"{level.f_param}={level.wanted_f(rows)} needs {level.requirement}, but rounds "
                f"have n={rows} updates{via}; lower {key}.params.{level.f_param}"
                + (", raise clients_per_round" if not via else "")
                + f" or set {key}.params.on_too_few: reduce_f"
            )
        if isinstance(level, Bucketing):
            policy = level.on_too_few
            via += (
                f" ({key}.params.s={level.s} makes {level.groups_for(rows)} bucket means "
                f"of {rows} updates)"
            )
            rows = level.groups_for(rows)
        level = getattr(level, "inner", None)


def attack_class(name: str) -> type[HonestClient]:
    """The client class of attack ``name``."""
    return _lookup(ATTACKS, name, "attack.name")


def build_client(env: ClientEnv, malicious: bool, **kwargs: Any) -> HonestClient:
    """The client of partition ``env.partition_id``: honest, or the configured attack."""
    attack = env.cfg.attack
    if not malicious or attack is None:
        return HonestClient(env, **kwargs)
    return _construct(attack_class(attack.name), attack.params, "attack.params", env=env, **kwargs)


def validate_names(strategy: StrategyConfig, attack_name: str | None) -> None:
    """Check rule, wrapper and attack names and parameters before a run starts."""
    for i, wrapper in enumerate(strategy.wrappers):
        _lookup(WRAPPERS, wrapper.name, f"strategy.wrappers[{i}].name")
    _lookup(RULES, strategy.name, "strategy.name")
    if attack_name is not None:
        attack_class(attack_name)


def validate_experiment(cfg: ExperimentConfig) -> None:
    """Check a whole experiment before it runs (see :func:`flsec_flower.app.simulation.validate`).

    Names, the strategy built once on the CPU, its Byzantine bound against
    rounds of ``clients_per_round`` updates, the dataset's files, and one
    attacking client. Shared by ``flsec run`` and the ``flwr run`` ServerApp;
    it lives here so the ServerApp's thread imports nothing the ClientApp's
    loader imports at the same time.
    """
    validate_names(cfg.strategy, cfg.attack.name if cfg.attack else None)
    strategy = build_strategy(cfg.strategy, device="cpu", seed=cfg.seed)
    check_round_size(cfg.strategy, strategy, cfg.sampled_clients)
    experiment_dataset(cfg)
    attackers = sorted(malicious_ids(cfg))
    if attackers:
        build_client(client_env(cfg, attackers[0]), malicious=True)


def _reserved_data(cfg: ExperimentConfig, dataset: Dataset) -> np.ndarray | None:
    """The configured attack's reserved training examples (semantic-backdoor images)."""
    assert cfg.attack is not None
    return attack_class(cfg.attack.name).reserved_indices(cfg, dataset)


register_reserved_data(_reserved_data)
