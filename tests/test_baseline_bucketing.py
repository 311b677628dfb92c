"""The bucketing baseline (``baselines/bucketing``), its grid tables and selection histograms."""

import json
from pathlib import Path

import pandas as pd
import pytest

from flsec_flower.app.baselines import (
    PENDING,
    build_grid,
    cells,
    config_value,
    label_keys,
    load_baseline,
    plot_selection,
    run_cells,
    selection_shares,
    selection_table,
    summary_frame,
    write_outputs,
)
from flsec_flower.config import ConfigError
from flsec_flower.results import METRICS_FILE

SLUG = "bucketing"
FIG3_RULES = ("krum", "cm", "rfa1", "rfa8")
FIG3_ATTACKS = ["none", "sign_flip", "label_flip", "gaussian", "alie", "ipm"]
RESAMPLING = [{"name": "bucketing", "params": {"s": 2, "mode": "resampling"}}]


def test_quick_scale_has_every_cell_of_figures_1_to_3(tmp_path):
    todo, skipped = cells(load_baseline(SLUG), "quick", out=tmp_path / "out")
    assert skipped == []
    # Fig. 1a: 4 rules x 2 splits; 1b: 3 f x 2 x 2 splits; 1c: 4 x 2 splits; 3: 8 x 6 attacks
    assert len(todo) == (8 + 12 + 8 + 48) * 3
    assert len({c.name for c in todo}) == len(todo)
    for c in todo:
        cfg, config = c.cfg, c.point["config"]
        assert (cfg.rounds, cfg.evaluation.every, cfg.training.lr) == (12, 3, 0.1)
        assert cfg.data.dataset == "mnist10k" and cfg.model.name == "mlp"
        assert cfg.data.partition.honest_only
        t = cfg.training
        assert (t.local_steps, t.batch_size, t.send, t.worker_momentum) == (1, 32, "gradient", True)
        wrappers = cfg.to_dict()["strategy"]["wrappers"]
        assert wrappers == (RESAMPLING if config.endswith("resampling") else [])
        f = 0 if cfg.attack is None else cfg.attack.num_malicious
        if cfg.attack is not None:
            assert cfg.attack.data.kind == "honest_union"
        if config.startswith("fig1"):  # 8 good workers
            assert cfg.data.num_clients == 8 + f
            assert c.point["data.partition.kind"] in ("iid", "sorted")
        if config.startswith("fig1b"):
            assert f == int(config[7]) and cfg.strategy.params["iterations"] == 1
            assert f == 0 or cfg.attack.name == "normalized_mean"
        if config.startswith("fig1c"):
            assert cfg.attack.name == "mimic2" and cfg.data.partition.mimic2 and f == 2
        if config.startswith("fig3"):
            assert cfg.data.num_clients == 10 and cfg.data.partition.kind == "sorted"
            assert f == (0 if cfg.attack is None else 2)
    fig3 = [c for c in todo if c.point["config"].startswith("fig3")]
    assert {c.point["config"].split("-")[1] for c in fig3} == set(FIG3_RULES)
    assert {config_value(c.cfg, "attack.name") for c in fig3} == set(FIG3_ATTACKS)


def test_gaussian_sigma_is_gradient_std_200_at_every_learning_rate():
    baseline = load_baseline(SLUG)
    for scale in ("quick", "paper10k"):
        todo, _ = cells(baseline, scale, seeds=[0])
        gaussian = [c for c in todo if config_value(c.cfg, "attack.name") == "gaussian"]
        assert len(gaussian) == 8
        for c in gaussian:  # the update -lr g has std sigma, so g has std sigma / lr
            assert c.cfg.attack.params["sigma"] / c.cfg.training.lr == pytest.approx(200.0)


def test_rfa_is_t_weiszfeld_steps_from_the_origin():
    todo, _ = cells(load_baseline(SLUG), "paper10k", seeds=[0])
    rfa = [c for c in todo if c.cfg.strategy.name == "rfa"]
    assert {c.cfg.strategy.params["iterations"] for c in rfa} == {1, 8}
    assert all(c.cfg.strategy.params["init"] == "zero" for c in rfa)
    assert all(c.cfg.strategy.params["tol"] == 0.0 for c in rfa)
    assert all(c.cfg.rounds == 600 and c.cfg.training.lr == 0.01 for c in todo)


def test_grid_is_one_metric_per_row_and_config_with_paper_and_pending():
    runs = pd.DataFrame(
        {
            "config": ["a", "a", "b", "a"],
            "attack.name": ["none", "none", "none", "ipm"],
            "final_accuracy": [0.5, 0.7, 0.9, 0.2],
        }
    )
    spec = {
        "rows": "attack.name",
        "metric": "final_accuracy",
        "percent": True,
        "columns": {"A": "a", "B": "b"},
        "paper": {"none": "high", "alie": "low"},
    }
    # none: A = mean(50, 70) +- sample std 14.14; ipm: B has no cell; alie: paper row only
    assert build_grid(runs, spec).to_dict("records") == [
        {"name": "none", "paper": "high", "A": "60.00 ± 14.14", "B": "90.00 ± 0.00", "seeds": 1},
        {"name": "ipm", "paper": "-", "A": "20.00 ± 0.00", "B": PENDING, "seeds": 0},
        {"name": "alie", "paper": "low", "A": PENDING, "B": PENDING, "seeds": 0},
    ]


def test_a_grid_with_an_unknown_key_names_it(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "baseline.yaml").write_text(
        "grids:\n  - {name: g, rows: r, metric: m, columns: {}, colour: red}\n"
    )
    with pytest.raises(ConfigError, match=r"grids\[0\]\.colour: unknown key"):
        load_baseline("x", tmp_path)


def _run(tmp_path: Path, name: str, selected: list, participants: list[int]) -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    lines = [{"round": 0, "accuracy": 0.1}]
    lines += [
        {"round": r, "selected": sel, "participants": participants}
        for r, sel in enumerate(selected, start=1)
    ]
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run_dir


def test_selection_shares_count_rounds_per_worker(tmp_path):
    # 4 rounds over workers 0..3: worker 1 in 3 of them, 2 in 2 (a bucket may list it twice)
    run = _run(tmp_path, "r", [[1], [1, 2], [2, 2], [1, 0]], [0, 1, 2, 3])
    assert selection_shares(run).to_dict() == {0: 0.25, 1: 0.75, 2: 0.5, 3: 0.0}
    none = _run(tmp_path, "n", [None, None], [0, 1])
    assert selection_shares(none).empty


def test_selection_table_and_histogram_average_over_seeds(tmp_path):
    runs = pd.DataFrame(
        {
            "config": ["k", "k", "k"],
            "data.partition.kind": ["iid", "iid", "sorted"],
            "run_dir": [
                str(_run(tmp_path, "a", [[0], [0]], [0, 1])),
                str(_run(tmp_path, "b", [[0], [1]], [0, 1])),
                str(_run(tmp_path, "c", [[1], [1]], [0, 1])),
            ],
        }
    )
    spec = {
        "name": "h",
        "configs": {"Krum": "k"},
        "by": "data.partition.kind",
        "labels": {"Krum, sorted": "Krum non-iid"},
    }
    table = selection_table(runs, spec)
    # iid: worker 0 selected in 1.0 and 0.5 of the rounds -> 0.75 +- 0.354
    assert table.round(3).to_dict("records") == [
        {"series": "Krum, kind iid", "partition_id": 0, "mean": 0.75, "std": 0.354, "seeds": 2},
        {"series": "Krum, kind iid", "partition_id": 1, "mean": 0.25, "std": 0.354, "seeds": 2},
        {"series": "Krum non-iid", "partition_id": 0, "mean": 0.0, "std": 0.0, "seeds": 1},
        {"series": "Krum non-iid", "partition_id": 1, "mean": 1.0, "std": 0.0, "seeds": 1},
    ]
    png, csv = plot_selection(runs, spec, tmp_path / "h.png")
    assert png.stat().st_size > 0
    assert pd.read_csv(csv).shape == (4, 5)
    assert selection_table(pd.DataFrame(), spec).empty  # no finished cell yet (--no-run)
    png, csv = plot_selection(pd.DataFrame(), spec, tmp_path / "empty.png")
    assert png.stat().st_size > 0 and pd.read_csv(csv).empty


@pytest.mark.slow
def test_smoke_every_config_and_attack_runs_and_outputs_are_written(tmp_path):
    """Every config once (its first sweep point), every Figure 3 attack once (Krum)."""
    out = tmp_path / "out"
    baseline = load_baseline(SLUG)
    todo, _ = cells(baseline, "smoke", seeds=[0], out=out)
    seen: set = set()
    picked = []
    for c in todo:
        key = (c.point["config"], c.point["config"] == "fig3-krum" and c.name)
        if key not in seen:
            seen.add(key)
            picked.append(c)
    assert len(picked) == 22 + len(FIG3_ATTACKS) - 1
    run_dirs = run_cells(picked, progress=False)
    files = write_outputs(
        baseline, summary_frame(picked, run_dirs, label_keys(baseline)), out, "smoke"
    )
    names = {f.name for f in files}
    for grid in ("fig1a_krum_no_attack", "fig1b_normalized_mean_attack", "fig1c_mimic2"):
        assert {f"{grid}.md", f"{grid}.csv"} <= names
    assert {"fig3_attacks.md", "fig1a_krum_selection.png", "fig3_krum.png"} <= names
    runs = pd.read_csv(out / "cells.csv")
    assert len(runs) == len(picked) and runs["final_accuracy"].between(0, 1).all()
    fig3 = pd.read_csv(out / "fig3_attacks.csv")
    assert list(fig3["name"]) == FIG3_ATTACKS
    assert fig3["Krum"].str.contains("±").all()
    selection = pd.read_csv(out / "fig1a_krum_selection.csv")
    assert set(selection["partition_id"]) == set(range(8))
    krum = selection[selection["series"] == "Krum, kind iid"]
    assert krum["mean"].sum() == pytest.approx(1.0)  # Krum selects one worker per round
