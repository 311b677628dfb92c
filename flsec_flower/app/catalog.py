"""What ``flsec list`` prints: every name a config accepts, with its parameters and defaults.

Rules, wrappers and attacks come from :mod:`flsec_flower.app.registry` (each
class's constructor signature gives its parameters and defaults), models
from :mod:`flsec_flower.models`, partition defaults from
:class:`~flsec_flower.config.PartitionConfig`. The README's table is this
module's Markdown (``flsec list --markdown``); a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from flsec_flower import models
from flsec_flower.app import registry
from flsec_flower.config import PartitionConfig
from flsec_flower.data.names import DATASETS, PARTITION_KINDS

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


def write_readme(path: Path) -> None:
    """Replace the table between :data:`README_BEGIN` and :data:`README_END` in ``path``.

    ``python -m flsec_flower.app.catalog [README.md]`` (``make readme-list``)
    after adding a rule, an attack or a parameter.
    """
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{path}: no {README_BEGIN.strip()} ... {README_END} markers")
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    path.write_text(head + README_BEGIN + render_markdown(sections()) + README_END + tail)


if __name__ == "__main__":
    write_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
