"""The panel structure of a run's plots: one quantity per panel, legends outside, attacked group."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from flsec_flower.plots import GROUP_TITLE, accuracy_figure, per_class_figure, plot_run


def _fairness_run() -> pd.DataFrame:
    rounds = [0, 1, 2, 3]
    return pd.DataFrame(
        {
            "round": rounds,
            "accuracy": [0.5, 0.7, 0.8, 0.82],
            "loss": [0.7, 0.5, 0.4, 0.39],
            "bias": [0.1, 0.2, 0.3, 0.3],
            "target_accuracy": [0.6, 0.8, 0.9, 0.9],
            "sex=0_accuracy": [0.6, 0.8, 0.9, 0.9],  # the same numbers as target_accuracy
            "sex=1_accuracy": [0.4, 0.6, 0.7, 0.75],
            "sex=0_label=1_accuracy": [0.3, 0.2, 0.1, 0.05],
            "other_accuracy": [0.4, 0.6, 0.7, 0.75],
            "attacked_group_accuracy": [0.3, 0.2, 0.1, 0.05],
            "per_class_accuracy": [[0.5, 0.5], [0.6, 0.8], [0.7, 0.9], [0.7, 0.9]],
        }
    )


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


def test_one_quantity_per_panel_and_groups_in_their_own_panel():
    fig = accuracy_figure(_fairness_run())
    assert _titles(fig) == [
        "Test accuracy",
        "Test loss",
        "Bias (accuracy gap between groups)",
        GROUP_TITLE,
    ]
    for ax in fig.axes[:3]:
        assert len(ax.get_lines()) == 1
        assert ax.get_legend() is None
    assert fig.axes[1].get_ylabel() == "loss"
    plt.close(fig)


def test_group_lines_have_distinct_styles_and_the_attacked_group_stands_out():
    fig = accuracy_figure(_fairness_run())
    ax = fig.axes[-1]
    lines = {line.get_label(): line for line in ax.get_lines()}
    # equal series share one line: none hides under another
    assert set(lines) == {
        "target_accuracy = sex=0_accuracy",
        "sex=1_accuracy = other_accuracy",
        "sex=0_label=1_accuracy = attacked_group_accuracy (attacked group)",
    }
    styles = [(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in lines.values()]
    assert len(set(styles)) == len(styles)
    a, b = lines["target_accuracy = sex=0_accuracy"], lines["sex=1_accuracy = other_accuracy"]
    assert a.get_linestyle() != b.get_linestyle() and a.get_marker() != b.get_marker()
    attacked = lines["sex=0_label=1_accuracy = attacked_group_accuracy (attacked group)"]
    assert list(attacked.get_ydata()) == [0.3, 0.2, 0.1, 0.05]
    others = [ln for label, ln in lines.items() if "attacked group" not in label]
    assert attacked.get_linewidth() > 2 * max(ln.get_linewidth() for ln in others)
    assert attacked.get_zorder() < min(ln.get_zorder() for ln in others)  # a band underneath
    plt.close(fig)


def test_legends_sit_outside_the_axes():
    df = _fairness_run()
    for fig in (accuracy_figure(df), per_class_figure(df)):
        fig.canvas.draw()
        ax = next(a for a in fig.axes if a.get_legend() is not None)
        legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend.x0 >= box.x1 or legend.y1 <= box.y0
        plt.close(fig)


def test_a_run_without_groups_or_backdoor_has_accuracy_and_loss_only():
    df = _fairness_run()[["round", "accuracy", "loss"]]
    fig = accuracy_figure(df)
    assert _titles(fig) == ["Test accuracy", "Test loss"]
    plt.close(fig)


def test_backdoor_accuracy_gets_its_own_panel(tmp_path):
    df = _fairness_run()[["round", "accuracy", "loss"]].assign(
        backdoor_accuracy=[0.0, 0.9, 0.95, 1.0]
    )
    fig = accuracy_figure(df)
    assert _titles(fig)[2] == "Backdoor accuracy (attack success)"
    assert list(fig.axes[2].get_lines()[0].get_ydata()) == [0.0, 0.9, 0.95, 1.0]
    plt.close(fig)
    written = plot_run(df, tmp_path)
    assert [p.name for p in written] == ["accuracy_loss.png"]
