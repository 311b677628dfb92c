"""Experiment configuration: one YAML file, validated into typed dataclasses.

Every key is checked: unknown keys, wrong types and values outside the
allowed set raise :class:`ConfigError`, whose message names the dotted key,
the bad value and what is allowed. The same dotted keys work as ``-o``
overrides of the CLI and as Flower run-config keys.

A ``sweep`` block lists values for dotted keys; :func:`expand_sweep` turns it
into one config per combination::

    sweep:
      seed: [0, 1, 2]
      data.partition.alpha: [1.0, 0.5]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from flsec_flower.data.names import ATTACK_DATA_KINDS, DATASETS, PARTITION_KINDS

MODELS = (
    "logreg",
    "mlp",
    "lenet5",
    "cnn_cifar",
    "resnet18",
    "vgg11_gn",
    "adult_mlp",
    "cnn_diversefl",
    "resnet50",
)


class ConfigError(ValueError):
    """A user error in an experiment configuration; the message names the key."""


@dataclass
class PartitionConfig:
    """How the training set is split across clients."""

    kind: Literal[PARTITION_KINDS] = "iid"  # type: ignore[valid-type]
    alpha: float = 0.5
    shards_per_client: int = 2
    honest_only: bool = False
    mimic2: bool = False


@dataclass
class DataConfig:
    """Dataset, where it lives, and the number of clients."""

    dataset: Literal[DATASETS] = "digits"  # type: ignore[valid-type]
    data_dir: str | None = None
    download: bool = False
    num_clients: int = 10
    partition: PartitionConfig = field(default_factory=PartitionConfig)


@dataclass
class ModelConfig:
    """Model architecture by name, and how its weights start.

    ``pretrain_epochs > 0`` starts round 1 from the model trained centrally
    for that many epochs on the federation's data
    (:mod:`flsec_flower.pretrain`), a stand-in for a converged global model.
    """

    name: Literal[MODELS] = "mlp"  # type: ignore[valid-type]
    init: Literal["default", "zeros"] = "default"
    pretrain_epochs: int = 0


@dataclass
class TrainingConfig:
    """Local training on each client."""

    local_epochs: int = 1
    local_steps: int | None = None
    batch_size: int | float = 32
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    lr_schedule: Literal["constant", "inv_sqrt", "step"] = "constant"
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    lr_warmup_rounds: int = 0
    lr_warmup_start: float = 0.0
    epoch_lr_milestones: list[int] = field(default_factory=list)
    epoch_lr_gamma: float = 0.1
    momentum: float = 0.0
    worker_momentum: bool = False
    weight_decay: float = 0.0
    grad_clip: float | None = None
    gradient_noise_std: float = 0.0
    send: Literal["weights", "gradient"] = "weights"
    device: str = "auto"


@dataclass
class WrapperConfig:
    """A transform around the rule (bucketing, clipping, RLR, DP ...)."""

    name: str = ""
    params: dict = field(default_factory=dict)


@dataclass
class StrategyConfig:
    """The aggregation rule, its parameters, and wrappers applied innermost first."""

    name: str = "fedavg"
    params: dict = field(default_factory=dict)
    wrappers: list[WrapperConfig] = field(default_factory=list)
    device: str = "auto"


@dataclass
class AttackDataConfig:
    """Which training examples the attackers hold (see ``flsec_flower.experiment``)."""

    kind: Literal[ATTACK_DATA_KINDS] = "own"  # type: ignore[valid-type]
    size: int | None = None
    classes: list[int] | None = None


@dataclass
class AttackConfig:
    """Who attacks, how, and when."""

    name: str = ""
    num_malicious: int = 0
    malicious_ids: list[int] | None = None
    start_round: int = 1
    end_round: int | None = None
    single_shot: bool = False
    force_participation: bool | None = None
    data: AttackDataConfig = field(default_factory=AttackDataConfig)
    params: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    @property
    def forced(self) -> bool:
        """Whether attackers are forced into their attack rounds (default: for single shots)."""
        return self.single_shot if self.force_participation is None else self.force_participation


@dataclass
class EvaluationConfig:
    """Server-side evaluation on the centralised test set."""

    every: int = 1
    batch_size: int = 1024
    backdoor_exclude_target: bool = True


@dataclass
class ResourcesConfig:
    """Resources of each simulated client (Ray)."""

    client_num_cpus: float = 1.0
    client_num_gpus: float = 0.0


@dataclass
class ExperimentConfig:
    """One experiment."""

    name: str = "experiment"
    seed: int = 0
    rounds: int = 20
    clients_per_round: int | None = None
    min_fit_clients: int | None = None
    client_timeout: float | None = None
    server_lr: float = 1.0
    server_momentum: float = 0.0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    attack: AttackConfig | None = None
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    sweep: dict = field(default_factory=dict)

    @property
    def sampled_clients(self) -> int:
        """Clients per round (all clients when unset)."""
        return self.clients_per_round or self.data.num_clients

    @property
    def min_results(self) -> int:
        """Fewest client replies a round aggregates (default: a majority of the sampled)."""
        return self.min_fit_clients or self.sampled_clients // 2 + 1

    def to_dict(self) -> dict:
        """Return the config as plain data (YAML-serialisable)."""
        return dataclasses.asdict(self)


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}: got {value!r}, must be finite and {bound}")


def _check_ranges(cfg: ExperimentConfig) -> None:
    _positive("rounds", cfg.rounds)
    _positive("data.num_clients", cfg.data.num_clients)
    _positive("data.partition.alpha", cfg.data.partition.alpha)
    _positive("data.partition.shards_per_client", cfg.data.partition.shards_per_client)
    _check_training(cfg.training, "training")
    _positive("model.pretrain_epochs", cfg.model.pretrain_epochs, allow_zero=True)
    if not 0 <= cfg.server_momentum < 1:
        raise ConfigError(f"server_momentum: got {cfg.server_momentum!r}, must be in [0, 1)")
    _positive("evaluation.every", cfg.evaluation.every)
    _positive("evaluation.batch_size", cfg.evaluation.batch_size)
    _positive("resources.client_num_cpus", cfg.resources.client_num_cpus)
    _positive("resources.client_num_gpus", cfg.resources.client_num_gpus, allow_zero=True)
    gpus = cfg.resources.client_num_gpus
    if gpus > 1 and not float(gpus).is_integer():
        raise ConfigError(
            f"resources.client_num_gpus: got {gpus!r}; Ray gives a client a fraction of one "
            "GPU (0 < x <= 1, e.g. 0.25 for four clients per GPU) or a whole number of GPUs"
        )
    if cfg.clients_per_round is not None and not 1 <= cfg.clients_per_round <= cfg.data.num_clients:
        raise ConfigError(
            f"clients_per_round: got {cfg.clients_per_round!r}, must be between 1 and "
            f"data.num_clients={cfg.data.num_clients}"
        )
    if cfg.min_fit_clients is not None and not 1 <= cfg.min_fit_clients <= cfg.sampled_clients:
        raise ConfigError(
            f"min_fit_clients: got {cfg.min_fit_clients!r}, must be between 1 and the clients "
            f"per round ({cfg.sampled_clients}: clients_per_round or data.num_clients)"
        )
    if cfg.client_timeout is not None:
        _positive("client_timeout", cfg.client_timeout)
    if cfg.attack is not None:
        _check_attack(cfg.attack, cfg.data.num_clients, cfg.rounds)
        _check_training(attacker_training(cfg), "attack.training")
        _check_attack_data(cfg)


def _check_training(t: TrainingConfig, prefix: str) -> None:
    _positive(f"{prefix}.local_epochs", t.local_epochs)
    if t.local_steps is not None:
        _positive(f"{prefix}.local_steps", t.local_steps)
    if isinstance(t.batch_size, float) and not 0 < t.batch_size <= 1:
        raise ConfigError(
            f"{prefix}.batch_size: got {t.batch_size!r}; a float is a fraction of the local "
            "dataset and must be in (0, 1]; write an integer for an absolute batch size"
        )
    _positive(f"{prefix}.batch_size", t.batch_size)
    _positive(f"{prefix}.lr", t.lr)
    _positive(f"{prefix}.lr_gamma", t.lr_gamma)
    _positive(f"{prefix}.lr_warmup_rounds", t.lr_warmup_rounds, allow_zero=True)
    _positive(f"{prefix}.lr_warmup_start", t.lr_warmup_start, allow_zero=True)
    bad = [m for m in t.lr_milestones if m < 1]
    if bad or t.lr_milestones != sorted(set(t.lr_milestones)):
        raise ConfigError(
            f"{prefix}.lr_milestones: got {t.lr_milestones!r}, must be increasing rounds >= 1"
        )
    bad = [m for m in t.epoch_lr_milestones if m < 1]
    if bad or t.epoch_lr_milestones != sorted(set(t.epoch_lr_milestones)):
        raise ConfigError(
            f"{prefix}.epoch_lr_milestones: got {t.epoch_lr_milestones!r}, must be increasing "
            "local epochs >= 1"
        )
    _positive(f"{prefix}.epoch_lr_gamma", t.epoch_lr_gamma)
    if t.lr_milestones and t.lr_schedule != "step":
        raise ConfigError(
            f"{prefix}.lr_milestones: set, but {prefix}.lr_schedule is {t.lr_schedule!r}; "
            "milestones need lr_schedule: step"
        )
    if not 0 <= t.momentum < 1:
        raise ConfigError(f"{prefix}.momentum: got {t.momentum!r}, must be in [0, 1)")
    if t.worker_momentum and (t.optimizer != "sgd" or t.momentum == 0):
        raise ConfigError(
            f"{prefix}.worker_momentum: needs {prefix}.optimizer: sgd and {prefix}.momentum > 0 "
            f"(got optimizer={t.optimizer!r}, momentum={t.momentum!r})"
        )
    _positive(f"{prefix}.weight_decay", t.weight_decay, allow_zero=True)
    _positive(f"{prefix}.gradient_noise_std", t.gradient_noise_std, allow_zero=True)
    if t.grad_clip is not None:
        _positive(f"{prefix}.grad_clip", t.grad_clip)


def attacker_training(cfg: ExperimentConfig) -> TrainingConfig:
    """The attackers' training settings: ``training`` with ``attack.training`` on top.

    ``attack.training`` may set any key of ``training`` (e.g. the backdoor
    attacker's own ``lr``, ``local_epochs`` and ``epoch_lr_milestones``, as
    in Bagdasaryan et al.); keys it does not set keep the honest value.
    """
    if cfg.attack is None or not cfg.attack.training:
        return cfg.training
    merged = {**dataclasses.asdict(cfg.training), **cfg.attack.training}
    return _build(TrainingConfig, merged, "attack.training")


def _check_attack_data(cfg: ExperimentConfig) -> None:
    attack = cfg.attack
    assert attack is not None
    data = attack.data
    attackers = (
        len(attack.malicious_ids) if attack.malicious_ids is not None else attack.num_malicious
    )
    if data.kind == "iid_sample" and (data.size is None or data.size < 1):
        raise ConfigError(
            f"attack.data.size: got {data.size!r}; attack.data.kind='iid_sample' needs a "
            "sample size >= 1"
        )
    if data.kind == "class_owner" and not data.classes:
        raise ConfigError(
            f"attack.data.classes: got {data.classes!r}; attack.data.kind='class_owner' "
            "needs the classes the attackers own, e.g. [3]"
        )
    if cfg.data.partition.honest_only and data.kind == "own" and attackers > 0:
        raise ConfigError(
            "attack.data.kind: 'own' with data.partition.honest_only=true gives the attackers "
            "no data; split among all clients (honest_only: false, as DiverseFL) or choose "
            "honest_union, iid_sample or class_owner"
        )
    if cfg.data.partition.honest_only and attackers >= cfg.data.num_clients:
        raise ConfigError(
            "data.partition.honest_only: every client is an attacker "
            f"(attack.num_malicious={attackers}, data.num_clients={cfg.data.num_clients})"
        )
    if attack.forced and attackers > cfg.sampled_clients:
        raise ConfigError(
            f"attack.force_participation: {attackers} attackers cannot all be sampled among "
            f"clients_per_round={cfg.sampled_clients}"
        )


def _check_attack(attack: AttackConfig, num_clients: int, rounds: int) -> None:
    if not attack.name:
        raise ConfigError("attack.name: missing; name the attack or remove the attack block")
    if attack.malicious_ids is not None:
        bad = [i for i in attack.malicious_ids if not 0 <= i < num_clients]
        if bad:
            raise ConfigError(
                f"attack.malicious_ids: {bad} outside 0..{num_clients - 1} (data.num_clients)"
            )
        if len(set(attack.malicious_ids)) != len(attack.malicious_ids):
            raise ConfigError(f"attack.malicious_ids: {attack.malicious_ids} has duplicates")
    elif not 0 <= attack.num_malicious <= num_clients:
        raise ConfigError(
            f"attack.num_malicious: got {attack.num_malicious!r}, must be between 0 and "
            f"data.num_clients={num_clients} (or give attack.malicious_ids)"
        )
    _positive("attack.start_round", attack.start_round)
    if attack.end_round is not None and attack.end_round < attack.start_round:
        raise ConfigError(
            f"attack.end_round: got {attack.end_round!r}, must be >= attack.start_round="
            f"{attack.start_round}"
        )
    if attack.start_round > rounds:
        raise ConfigError(
            f"attack.start_round: got {attack.start_round!r}, after the last round ({rounds})"
        )


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(key: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{key}: got {value!r}, allowed: {', '.join(repr(a) for a in allowed)}"
            )
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(key, value, arg)
            except ConfigError:
                if len(args) == 2 and type(None) in args:
                    raise
        raise ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}, expected a mapping")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
        (item,) = get_args(tp)
        return [_convert(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}, expected a mapping")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: got {value!r}, expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: got {value!r}, expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: got {value!r}, expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: got {value!r}, expected a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown key; allowed keys here: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in raw:
            where = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(where, raw[name], hints[name])
    return cls(**kwargs)


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way.

    A part that is an integer indexes an existing list, so
    ``strategy.wrappers.1.params.sigma`` sets a key of the second wrapper.

    Examples
    --------
    >>> raw = {"strategy": {"wrappers": [{"name": "a"}, {"name": "b"}]}}
    >>> set_dotted(raw, "strategy.wrappers.1.params.sigma", 0.1)
    >>> raw["strategy"]["wrappers"][1]
    {'name': 'b', 'params': {'sigma': 0.1}}
    """
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise ConfigError(
                    f"{key}: {where}: expected a list index in 0..{len(node) - 1}, got {part!r}"
                )
            if last:
                node[int(part)] = value
                return
            child = node[int(part)]
        else:
            if last:
                node[part] = value
                return
            child = node.get(part)
            if child is None:
                child = node[part] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(
                f"{key}: cannot set inside {where}={child!r}, which is not a mapping or list"
            )
        node = child


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.sub=value``; the value is read as YAML (``0.5``, ``true``, ``[0, 1]``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. data.partition.alpha=0.1")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{key.strip()}: cannot read value {value!r}: {err}") from err
    return key.strip(), parsed


def from_dict(raw: dict, overrides: typing.Iterable[tuple[str, Any]] = ()) -> ExperimentConfig:
    """Validate a raw mapping (with dotted-key overrides applied) into a config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration must be a mapping, got {type(raw).__name__}")
    raw = _deepcopy(raw)
    for key, value in overrides:
        set_dotted(raw, key, value)
    cfg = _build(ExperimentConfig, raw)
    _check_ranges(cfg)
    return cfg


def _deepcopy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deepcopy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deepcopy(v) for v in raw]
    return raw


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or bad YAML is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return raw


PATH_KEYS = ("output_dir", "data.data_dir")
"""Config keys holding paths: relative ones are resolved when a config is loaded."""


def _absolute(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def resolve_paths(raw: dict, base: Path) -> dict:
    """Make the relative paths (:data:`PATH_KEYS`) of a raw config absolute against ``base``.

    ``raw`` is changed in place and returned.
    """
    for key in PATH_KEYS:
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            node[last] = _absolute(node[last], base)
    return raw


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> ExperimentConfig:
    """Load and validate a YAML experiment file with ``key=value`` overrides.

    Relative paths (:data:`PATH_KEYS`) in the file resolve against the
    file's folder; in an override, against the current directory.
    """
    raw = resolve_paths(read_yaml(path), Path(path).resolve().parent)
    parsed = [parse_override(o) for o in overrides]
    cwd = Path.cwd()
    return from_dict(raw, [(k, _absolute(v, cwd) if k in PATH_KEYS else v) for k, v in parsed])


def expand_sweep(cfg: ExperimentConfig) -> list[tuple[dict[str, Any], ExperimentConfig]]:
    """Expand ``cfg.sweep`` into ``(point, config)`` pairs, one per combination.

    ``point`` maps each swept dotted key to its value in that run. A config
    without a sweep expands to itself with an empty point.
    """
    if not cfg.sweep:
        return [({}, cfg)]
    for key, values in cfg.sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: expected a non-empty list of values, got {values!r}")
    keys = list(cfg.sweep)
    base = cfg.to_dict()
    base["sweep"] = {}
    runs = []
    for combo in itertools.product(*(cfg.sweep[k] for k in keys)):
        point = dict(zip(keys, combo, strict=True))
        runs.append((point, from_dict(base, point.items())))
    return runs


def from_run_config(run_config: dict[str, Any]) -> ExperimentConfig:
    """Build a config from Flower's flat run config (dotted keys, as in pyproject.toml)."""
    return from_dict({}, run_config.items())
