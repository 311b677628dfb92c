"""PNG plots of a run: accuracy and loss, per-class accuracy, client selection.

``accuracy_loss.png`` has one quantity per panel (test accuracy, test loss,
backdoor accuracy, bias, accuracy by group), so no line hides another of a
different meaning. Several lines share a panel only when they measure the same
quantity on different subsets (groups, classes); those get distinct colours,
line styles and markers, series with equal values share one line and one
legend entry, and the legend sits outside the plotting area. The attacked
group of a group-mode fairness attack (``attacked_group_accuracy``) is a
thick red band under the other lines (it hides none of them).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

SCALAR_PANELS: list[tuple[str, str, bool]] = [
    ("accuracy", "Test accuracy", True),
    ("loss", "Test loss", False),
    ("backdoor_accuracy", "Backdoor accuracy (attack success)", True),
    ("bias", "Bias (accuracy gap between groups)", False),
]
"""``(column, title, is an accuracy in [0, 1])`` of the single-line panels, in order."""

ATTACKED_GROUP = "attacked_group_accuracy"
GROUP_TITLE = "Accuracy by group"
_LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}
_LEGEND_BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.2), "borderaxespad": 0.0}


def _styles() -> Iterator[dict]:
    """Distinct line styles: colour, dash pattern and marker all change from line to line."""
    colours = plt.get_cmap("tab10").colors
    dashes = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    for i in itertools.count():
        yield {
            "color": colours[i % len(colours)],
            "linestyle": dashes[i % len(dashes)],
            "marker": markers[i % len(markers)],
            "markersize": 4,
        }


def group_columns(df: pd.DataFrame) -> list[str]:
    """The accuracies on subsets of the test set that ``df`` holds.

    Group columns ``<attr>=<value>[_label=<y>]_accuracy``, the fairness
    attack's ``target_accuracy`` / ``other_accuracy`` and
    ``attacked_group_accuracy``.
    """
    named = ("target_accuracy", "other_accuracy", ATTACKED_GROUP)
    return [
        c
        for c in df.columns
        if c.endswith("_accuracy")
        and ("=" in c or c in named)
        and pd.api.types.is_numeric_dtype(df[c])
    ]


def accuracy_figure(df: pd.DataFrame) -> plt.Figure:
    """The figure of ``accuracy_loss.png`` for the evaluated rounds ``df``.

    One panel per quantity of :data:`SCALAR_PANELS` that ``df`` has, then,
    when the run measured accuracy on subsets, a full-width panel
    :data:`GROUP_TITLE` with one styled line per subset and its legend below
    the axes.
    """
    scalars = [p for p in SCALAR_PANELS if p[0] in df and pd.api.types.is_numeric_dtype(df[p[0]])]
    groups = group_columns(df)
    cols = len(scalars) if len(scalars) <= 3 else 2
    rows = math.ceil(len(scalars) / cols)
    fig = plt.figure(figsize=(11, 3.2 * rows + 4.5 * bool(groups)), layout="constrained")
    heights = [1.0] * rows + [1.4] * bool(groups)
    grid = fig.add_gridspec(rows + bool(groups), cols, height_ratios=heights)
    for i, (col, title, is_accuracy) in enumerate(scalars):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.plot(df["round"], df[col], marker=".", color="tab:red" if col == "loss" else "tab:blue")
        _label(ax, title, col, is_accuracy)
    if groups:
        ax = fig.add_subplot(grid[rows, :])
        styles = _styles()
        for same in _identical(df, groups):
            label = " = ".join(same)
            if ATTACKED_GROUP in same:
                style = {"color": "crimson", "linewidth": 7, "alpha": 0.5, "zorder": 1.5}
                label += " (attacked group)"
            else:
                style = next(styles)
            ax.plot(df["round"], df[same[0]], label=label, **style)
        _label(ax, GROUP_TITLE, "accuracy", True)
        ax.legend(fontsize="small", ncol=2, **_LEGEND_BELOW)
    return fig


def _identical(df: pd.DataFrame, columns: list[str]) -> list[list[str]]:
    """``columns`` grouped by equal values (NaN equal to NaN), first-seen order.

    Equal series would hide one under the other (the fairness attack's
    ``target_accuracy`` is ``sex=0_accuracy`` when the target group is
    ``sex=0``); they become one line whose label names them all.
    """
    groups: list[list[str]] = []
    for col in columns:
        values = df[col].to_numpy(dtype=float)
        for same in groups:
            if np.array_equal(df[same[0]].to_numpy(dtype=float), values, equal_nan=True):
                same.append(col)
                break
        else:
            groups.append([col])
    return groups


def per_class_figure(evaluated: pd.DataFrame) -> plt.Figure:
    """Per-class test accuracy: one styled line per class, legend outside the axes."""
    per_class = pd.DataFrame(evaluated["per_class_accuracy"].tolist(), index=evaluated["round"])
    fig, ax = plt.subplots(figsize=(8, 4))
    for cls, style in zip(per_class.columns, _styles(), strict=False):
        ax.plot(per_class.index, per_class[cls], label=f"class {cls}", **style)
    _label(ax, "Per-class accuracy", "accuracy", True)
    ax.legend(fontsize="x-small", ncol=1 + len(per_class.columns) // 13, **_LEGEND_OUTSIDE)
    fig.tight_layout()
    return fig


def plot_run(df: pd.DataFrame, run_dir: Path) -> list[Path]:
    """Write the run's plots into ``run_dir``; return the files written."""
    written = []
    evaluated = df[df["accuracy"].notna()] if "accuracy" in df else df.iloc[0:0]
    if len(evaluated):
        written.append(_save(accuracy_figure(evaluated), run_dir / "accuracy_loss.png"))
    if "per_class_accuracy" in df and len(evaluated):
        written.append(_save(per_class_figure(evaluated), run_dir / "per_class_accuracy.png"))
    if "selected" in df and df["selected"].notna().any():
        counts: Counter[int] = Counter()
        for sel in df["selected"].dropna():
            counts.update(sel)
        ids = sorted(set(counts) | {p for ps in df["participants"].dropna() for p in ps})
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar(ids, [counts[i] for i in ids])
        ax.set(
            xlabel="client (partition id)",
            ylabel="rounds selected",
            title="How often each client was selected",
        )
        fig.tight_layout()
        written.append(_save(fig, run_dir / "selection_histogram.png"))
    return written


def _label(ax: Axes, title: str, ylabel: str, is_accuracy: bool) -> None:
    ax.set(xlabel="round", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if is_accuracy:
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
