"""What ``flsec list`` prints, and the README's catalogue of rules and attacks.

``flsec list``: every name a config accepts, with its parameters and defaults.

Rules, wrappers and attacks come from :mod:`flsec_flower.app.registry` (each
class's constructor signature gives its parameters and defaults), models
from :mod:`flsec_flower.models`, partition defaults from
:class:`~flsec_flower.config.PartitionConfig`. The README's table is this
module's Markdown (``flsec list --markdown``); a test keeps the two equal.

The catalogue (:func:`render_catalogue`, ``flsec list --catalogue``) lists
every registered rule, wrapper and attack with its paper and threat model.
The paper, the Byzantine bound of rules without a ``requirement`` and the
server-side data come from :data:`DEFENCES` and :data:`ATTACK_PAPERS` (a
test fails when a registered name has no entry); the rest is read off the
classes: the bound of :class:`~strategies._too_few.ByzantineBound` rules,
the history (state kept across rounds, :meth:`state_names`), whether an
attack is omniscient, and the Flower faces.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.client import NumPyClient
from flwr.server.strategy import Strategy

from clients.model_poisoning import ModelPoisoningClient
from clients.mods import MODEL_POISONING
from clients.omniscient import OmniscientAttackClient
from flsec_flower import models
from flsec_flower.app import registry
from flsec_flower.config import PartitionConfig
from flsec_flower.data.names import DATASETS, PARTITION_KINDS
from strategies.base import RobustStrategy

DATASET_DESCRIPTIONS: dict[str, str] = {
    "digits": "scikit-learn's 8x8 handwritten digits, 10 classes; no files (the offline demo)",
    "fashion_mnist": "Fashion-MNIST 28x28, 10 classes; torchvision layout under `data.data_dir`",
    "mnist": "MNIST 28x28, 10 classes; torchvision layout under `data.data_dir`",
    "mnist10k": "10,000 MNIST digits in one `mnist10k.npz` under `data.data_dir`, seeded split",
    "cifar10": "CIFAR-10 32x32 colour, 10 classes; torchvision layout under `data.data_dir`",
    "cifar100": "CIFAR-100 32x32 colour, 100 classes; torchvision layout under `data.data_dir`",
    "adult": "UCI Adult census income, 103 features, binary; group attribute `sex`",
    "synthetic": "seeded Gaussian blobs shaped as 8x8 images, 10 classes; no files (tests)",
}
"""One line per name of :data:`~flsec_flower.data.names.DATASETS`."""

PARTITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "iid": ("seeded shuffle cut into near-equal parts", ()),
    "dirichlet": ("per-class shares drawn from Dirichlet(alpha): label skew", ("alpha",)),
    "shards": (
        "sort by label, random shards per client (McMahan et al.)",
        ("shards_per_client",),
    ),
    "sorted": ("sort by label, contiguous chunks (He et al.)", ()),
}
"""Per name of :data:`~flsec_flower.data.names.PARTITION_KINDS`: description and the
``data.partition`` keys it reads."""

README_BEGIN = "<!-- flsec list --markdown: begin -->\n"
README_END = "<!-- flsec list --markdown: end -->"
CATALOGUE_BEGIN = "<!-- flsec list --catalogue: begin -->\n"
CATALOGUE_END = "<!-- flsec list --catalogue: end -->"


@dataclass(frozen=True)
class Defence:
    """What the classes cannot say about a rule or wrapper.

    ``bound`` is the tolerated share of Byzantine updates for rules without
    a ``requirement`` (those with one show it); ``server_data`` what the
    server must hold besides the updates.
    """

    paper: str
    bound: str = "—"
    server_data: str = "—"


DEFENCES: dict[str, Defence] = {
    "fedavg": Defence("McMahan et al., AISTATS 2017", "none"),
    "diversefl": Defence(
        "Prakash & Avestimehr, arXiv 2020", "any f", "a small sample of every client's data"
    ),
    "flame": Defence("Nguyen et al., USENIX Security 2022", "f < n/2"),
    "fltrust": Defence("Cao, Fang, Liu & Gong, NDSS 2021", "any f", "root dataset"),
    "foolsgold": Defence("Fung, Yoon & Beschastnikh, RAID 2020", "sybils (any f)"),
    "oracle": Defence("reference (DiverseFL's oracle)", "any f", "ground truth (simulation)"),
    "krum": Defence("Blanchard et al., NeurIPS 2017"),
    "multikrum": Defence("Blanchard et al., NeurIPS 2017"),
    "bulyan": Defence("El Mhamdi, Guerraoui & Rouault, ICML 2018"),
    "median": Defence("Yin et al., ICML 2018", "f < n/2"),
    "trimmed_mean": Defence("Yin et al., ICML 2018"),
    "rfa": Defence("Pillutla, Kakade & Harchaoui, IEEE TSP 2022", "f < n/2"),
    "geometric_median": Defence("Pillutla, Kakade & Harchaoui, IEEE TSP 2022", "f < n/2"),
    "centered_clipping": Defence("Karimireddy, He & Jaggi, ICML 2021", "a minority"),
    "noisy_median": Defence("Chen et al., NeurIPS 2020", "f < n/2"),
    "dnc": Defence("Shejwalkar & Houmansadr, NDSS 2021"),
    "signguard": Defence("Xu, Huang, Song & Lan, ICDCS 2022", "f < n/2"),
    "clustering": Defence("Sattler, Müller, Wiegand & Samek, ICASSP 2020", "f < n/2"),
    "crfl": Defence("Xie, Chen, Chen & Li, ICML 2021", "certified radius (backdoors)"),
    "fldetector": Defence("Zhang, Cao, Jia & Gong, KDD 2022", "f < n/2"),
    "auror": Defence("Shen, Tople & Saxena, ACSAC 2016", "a minority"),
    "lasa": Defence("Xu, Zhang & Hu, WACV 2025", "a minority"),
    "deepsight": Defence(
        "Rieger, Nguyen, Miettinen & Sadeghi, NDSS 2022",
        "backdoors (a minority)",
        "the model, run on random inputs",
    ),
    "fang_rejection": Defence(
        "Fang, Cao, Jia & Gong, USENIX Security 2020 (ERR/LFR)", server_data="validation set"
    ),
    "bucketing": Defence("He, Karimireddy & Jaggi, ICLR 2022", "the inner rule's, s f < n/2"),
    "dp_noise": Defence("Bagdasaryan et al., AISTATS 2020 (weak DP)", "backdoors"),
    "nnm": Defence("Allouah et al., AISTATS 2023"),
    "norm_clip": Defence("Bagdasaryan et al., AISTATS 2020 (norm bounding)", "backdoors"),
    "rlr": Defence("Ozdayi, Kantarcioglu & Gel, AAAI 2021", "backdoors"),
}
"""Paper, bound and server-side data of every registered rule and wrapper."""

ATTACK_PAPERS: dict[str, tuple[str, str]] = {
    "agr_tailored": ("Shejwalkar & Houmansadr, NDSS 2021 (AGR-tailored)", "model poisoning"),
    "alie": ("Baruch, Baruch & Goldberg, NeurIPS 2019", "model poisoning"),
    "alter_min": (
        "Bhagoji, Chakraborty, Mittal & Calo, ICML 2019",
        "targeted model poisoning (boosted, stealthy)",
    ),
    "class_backdoor": ("Prakash & Avestimehr, arXiv 2020", "data + model poisoning"),
    "dba": ("Xie, Huang, Chen & Li, ICLR 2020", "backdoor, data poisoning (colluding)"),
    "edge_case": ("Wang et al., NeurIPS 2020", "backdoor, data poisoning (+ PGD)"),
    "fairness_attack": ("Rance & Svoboda, arXiv 2023", "data + model poisoning"),
    "fang": ("Fang, Cao, Jia & Gong, USENIX Security 2020", "model poisoning"),
    "gaussian": ("He, Karimireddy & Jaggi, ICLR 2022", "model poisoning"),
    "ipm": ("Xie, Koyejo & Gupta, UAI 2019", "model poisoning"),
    "label_flip": ("He, Karimireddy & Jaggi, ICLR 2022", "data poisoning"),
    "mimic": ("Karimireddy, He & Jaggi, ICLR 2022", "model poisoning"),
    "mimic2": ("Karimireddy, He & Jaggi, ICLR 2022", "model poisoning"),
    "min_max": ("Shejwalkar & Houmansadr, NDSS 2021", "model poisoning"),
    "min_sum": ("Shejwalkar & Houmansadr, NDSS 2021", "model poisoning"),
    "model_replacement": ("Bagdasaryan et al., AISTATS 2020", "backdoor, model poisoning"),
    "model_replacement_semantic": (
        "Bagdasaryan et al., AISTATS 2020",
        "backdoor, model poisoning",
    ),
    "naive_poisoning": ("Bagdasaryan et al., AISTATS 2020", "backdoor, data poisoning"),
    "naive_poisoning_semantic": ("Bagdasaryan et al., AISTATS 2020", "backdoor, data poisoning"),
    "neurotoxin": ("Zhang et al., ICML 2022", "backdoor, data + model poisoning"),
    "normalized_mean": ("He, Karimireddy & Jaggi, ICLR 2022", "model poisoning"),
    "pixel_trojan": ("Ozdayi et al., AAAI 2021", "backdoor, data poisoning"),
    "same_value": ("He, Karimireddy & Jaggi, ICLR 2022", "model poisoning"),
    "semantic_backdoor": ("Bagdasaryan et al., AISTATS 2020", "backdoor, data poisoning"),
    "sign_flip": ("He, Karimireddy & Jaggi, ICLR 2022", "model poisoning"),
    "three_dfed": (
        "Li, Pang, Wu, Sun, Wang & Zhou, IEEE S&P 2023",
        "backdoor, data + model poisoning (colluding, adaptive)",
    ),
}
"""Paper and kind of every registered attack."""


@dataclass(frozen=True)
class Section:
    """One table of ``flsec list``: the config key the names go in, and one row per name.

    Each row is ``(name, parameters, description)``; each parameter reads
    ``key=default`` (``key`` alone when required).
    """

    title: str
    key: str
    rows: list[tuple[str, tuple[str, ...], str]]


def _summary(doc: str | None) -> str:
    """First line of a docstring, reST roles and double backticks made Markdown."""
    line = (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""
    line = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", line)
    return line.replace("``", "`")


def _signature(params: list[inspect.Parameter]) -> tuple[str, ...]:
    return tuple(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in params
    )


def _classes(table: dict[str, type]) -> list[tuple[str, tuple[str, ...], str]]:
    return [
        (name, _signature(registry.parameters(cls)), _summary(cls.__doc__))
        for name, cls in table.items()
    ]


def sections() -> list[Section]:
    """The tables of ``flsec list``, in the order a config is written."""
    defaults = {f.name: f.default for f in dataclasses.fields(PartitionConfig)}
    partitions = [
        (kind, tuple(f"{k}={defaults[k]!r}" for k in keys), text)
        for kind, (text, keys) in ((k, PARTITIONS[k]) for k in PARTITION_KINDS)
    ]
    return [
        Section("Datasets", "data.dataset", [(n, (), DATASET_DESCRIPTIONS[n]) for n in DATASETS]),
        Section("Partition kinds", "data.partition.kind", partitions),
        Section(
            "Models",
            "model.name",
            [(n, (), _summary(f.__doc__)) for n, f in models.model_builders().items()],
        ),
        Section("Aggregation rules", "strategy.name", _classes(registry.RULES)),
        Section("Wrappers", "strategy.wrappers[i].name", _classes(registry.WRAPPERS)),
        Section("Attacks", "attack.name", _classes(registry.ATTACKS)),
    ]


def render_text(tables: list[Section]) -> str:
    """Plain text: a heading per section, then ``name  parameters`` and the description."""
    out = []
    for section in tables:
        out.append(f"{section.title} ({section.key}):")
        width = max(len(name) for name, _, _ in section.rows)
        for name, params, text in section.rows:
            out.append(f"  {name:<{width}}  {', '.join(params) or '-'}")
            out.append(f"  {'':<{width}}  {text}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_markdown(tables: list[Section]) -> str:
    """Markdown: a table per section (name, parameters with defaults, description)."""
    out = []
    for section in tables:
        out += [
            f"**{section.title}** (`{section.key}`)",
            "",
            "| name | parameters (defaults) | description |",
            "|---|---|---|",
        ]
        for name, params, text in section.rows:
            shown = ", ".join(f"`{p}`" for p in params) or "—"
            out.append(f"| `{name}` | {shown} | {text.replace('|', '/')} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _entry(table: dict, name: str, what: str) -> object:
    if name not in table:
        raise KeyError(
            f"{what} {name!r} has no catalogue entry: add it to "
            f"flsec_flower.app.catalog.{'DEFENCES' if table is DEFENCES else 'ATTACK_PAPERS'}"
        )
    return table[name]


def _history(cls: type) -> str:
    base = set(registry.RobustStrategy.state_names())
    kept = [n for n in cls.state_names() if n not in base]
    return ", ".join(f"`{n}`" for n in kept) if kept else "no"


def _faces(cls: type, faces: tuple[tuple[Callable[[type], bool], str], ...]) -> str:
    return ", ".join(name for has, name in faces if has(cls)) or "—"


def _message_face(cls: type) -> bool:
    return issubclass(cls, RobustStrategy) and cls.message_api


def _mod_face(cls: type) -> bool:
    if getattr(cls, "client_mod", None) is not None:
        return True
    return issubclass(cls, ModelPoisoningClient) and cls.params_type in MODEL_POISONING.values()


RULE_FACES: tuple[tuple[Callable[[type], bool], str], ...] = (
    (lambda cls: issubclass(cls, Strategy), "legacy `Strategy`"),
    (_message_face, "Message API (`MessageStrategy`)"),
)
"""Flower faces a rule class may have: a test on the class and its name in the catalogue."""

ATTACK_FACES: tuple[tuple[Callable[[type], bool], str], ...] = (
    (lambda cls: issubclass(cls, NumPyClient), "`NumPyClient`"),
    (_mod_face, "client mod (`clients.mods`)"),
    (lambda cls: issubclass(cls, OmniscientAttackClient), "`tag_mod` + server adversary"),
)
"""Flower faces an attack class may have."""


def defence_rows(table: dict[str, type]) -> list[tuple[str, ...]]:
    """One row per rule or wrapper: name, paper, bound, server data, history, faces."""
    rows = []
    for name, cls in table.items():
        entry = _entry(DEFENCES, name, "rule")
        assert isinstance(entry, Defence)
        requirement = getattr(cls, "requirement", "")
        bound = f"{requirement} (`{cls.f_param}`)" if requirement else entry.bound
        history = _history(cls)
        faces = _faces(cls, RULE_FACES)
        rows.append((name, entry.paper, bound, entry.server_data, history, faces))
    return rows


def attack_rows() -> list[tuple[str, ...]]:
    """One row per attack: name, paper, kind, omniscient or not, Flower faces."""
    rows = []
    for name, cls in registry.ATTACKS.items():
        paper, kind = _entry(ATTACK_PAPERS, name, "attack")  # type: ignore[misc]
        omniscient = (
            "yes (`omniscient: false`: own updates only)"
            if issubclass(cls, OmniscientAttackClient)
            else "no"
        )
        rows.append((name, paper, kind, omniscient, _faces(cls, ATTACK_FACES)))
    return rows


def render_catalogue() -> str:
    """Markdown: the catalogue of defences and attacks with their papers and threat models."""
    tables = [
        (
            "Aggregation rules (`strategy.name`)",
            ("name", "paper", "Byzantine bound", "server data", "history", "Flower faces"),
            defence_rows(registry.RULES),
        ),
        (
            "Wrappers (`strategy.wrappers[i].name`)",
            ("name", "paper", "Byzantine bound", "server data", "history", "Flower faces"),
            defence_rows(registry.WRAPPERS),
        ),
        (
            "Attacks (`attack.name`)",
            ("name", "paper", "kind", "omniscient", "Flower faces"),
            attack_rows(),
        ),
    ]
    out = []
    for title, header, rows in tables:
        out += [f"**{title}**", "", "| " + " | ".join(header) + " |"]
        out.append("|" + "---|" * len(header))
        out += [
            f"| `{r[0]}` | " + " | ".join(c.replace("|", "/") for c in r[1:]) + " |" for r in rows
        ]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _replace(text: str, begin: str, end: str, body: str, path: Path) -> str:
    if begin not in text or end not in text:
        raise ValueError(f"{path}: no {begin.strip()} ... {end} markers")
    head, rest = text.split(begin, 1)
    return head + begin + body + end + rest.split(end, 1)[1]


def write_readme(path: Path) -> None:
    """Rewrite the ``flsec list --markdown`` table and the catalogue between their markers.

    ``python -m flsec_flower.app.catalog [README.md]`` (``make readme-list``)
    after adding a rule, an attack or a parameter.
    """
    text = _replace(path.read_text(), README_BEGIN, README_END, render_markdown(sections()), path)
    if CATALOGUE_BEGIN in text:
        text = _replace(text, CATALOGUE_BEGIN, CATALOGUE_END, render_catalogue(), path)
    path.write_text(text)


if __name__ == "__main__":
    write_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
