"""The DiverseFL baseline (``baselines/diversefl``): its cells, tables by attack, smoke run."""

from pathlib import Path

import pandas as pd
import pytest

from flsec_flower.app.baselines import (
    build_table,
    cells,
    config_value,
    label_keys,
    load_baseline,
    run_cells,
    summary_frame,
    write_outputs,
)
from flsec_flower.config import from_dict
from flsec_flower.results import SUMMARY_FILE

SLUG = "diversefl"
RULES = ("diversefl-1pct", "diversefl-3pct", "oracle", "median", "nmedian", "bulyan")
ATTACKS = ["none", "gaussian", "sign_flip", "same_value", "label_flip"]


def test_quick_scale_is_the_main_panels_and_the_backdoor_at_three_seeds(tmp_path):
    todo, skipped = cells(load_baseline(SLUG), "quick", out=tmp_path / "out")
    five = ("diversefl-1pct", "oracle", "median", "nmedian", "bulyan")
    panels = {f"{p}-{r}" for p in ("softmax", "nn") for r in five}
    backdoor = {"backdoor-baselines", "backdoor-diversefl"}
    assert {c.point["config"] for c in todo} == panels | backdoor
    # Fig. 3 and 4: rules x (none, Gaussian, sign flip) x seeds; Fig. 7: 4 rules x seeds
    assert len(todo) == len(panels) * 3 * 3 + 4 * 3
    attacks = {config_value(c.cfg, "attack.name") for c in todo if c.point["config"] in panels}
    assert attacks == {"none", "gaussian", "sign_flip"}
    sigmas = {
        c.point["config"].split("-")[0]: c.cfg.attack.params["sigma"]
        for c in todo
        if c.cfg.attack is not None and c.cfg.attack.name == "gaussian"
    }
    assert sigmas == {"softmax": 10.0, "nn": 0.6}
    assert {c.cfg.seed for c in todo} == {0, 1, 2}
    assert all((c.cfg.rounds, c.cfg.evaluation.every) == (10, 10) for c in todo)
    assert sorted(name for name, _ in skipped) == ["nn-diversefl-3pct", "softmax-diversefl-3pct"]
    assert all("runs at: paper10k, paper, smoke" in reason for _, reason in skipped)


def test_paper10k_scale_has_every_rule_and_attack_of_the_paper(tmp_path):
    todo, skipped = cells(load_baseline(SLUG), "paper10k", out=tmp_path / "out")
    assert skipped == []
    # (settings x rules x attacks + backdoor: 2 baselines + 2 fractions) x seeds
    assert len(todo) == (2 * len(RULES) * len(ATTACKS) + 4) * 3
    assert len({c.name for c in todo}) == len(todo)
    configs = {f"{p}-{r}" for p in ("softmax", "nn") for r in RULES}
    assert {c.point["config"] for c in todo} == configs | {
        "backdoor-baselines",
        "backdoor-diversefl",
    }
    backdoor = [c for c in todo if c.point["config"].startswith("backdoor")]
    for c in backdoor:
        assert c.cfg.model.name == "mlp" and c.cfg.attack.name == "class_backdoor"
        assert (c.cfg.attack.data.kind, c.cfg.attack.data.classes) == ("class_owner", [3])
        assert c.cfg.attack.params == {"source_class": 3, "target_class": 4, "gamma": 7.0}
    assert {c.cfg.strategy.name for c in backdoor} == {"fedavg", "oracle", "diversefl"}
    assert all(c.cfg.strategy.params.get("weighted") is False for c in backdoor[:2])
    for c in (c for c in todo if c not in backdoor):
        cfg = c.cfg
        assert (cfg.rounds, cfg.evaluation.every) == (1000, 50)
        assert cfg.data.dataset == "mnist10k" and cfg.data.num_clients == 23
        assert cfg.data.partition.kind == "sorted"
        assert cfg.training.local_steps == 1 and cfg.training.send == "gradient"
        assert config_value(cfg, "attack.name") in ATTACKS
        if cfg.attack is not None:
            assert cfg.attack.num_malicious == 5 and cfg.attack.data.kind == "own"
        softmax = c.point["config"].startswith("softmax")
        assert cfg.model.name == ("logreg" if softmax else "mlp")
        if softmax:
            assert cfg.model.init == "zeros" and cfg.training.batch_size == 300
            assert (cfg.training.lr, cfg.training.lr_schedule) == (0.001, "inv_sqrt")
            assert cfg.training.weight_decay == 0.0067
        else:
            assert cfg.training.batch_size == 0.1 and cfg.training.lr == 0.06
            assert cfg.training.lr_milestones == [500, 950] and cfg.training.lr_gamma == 0.5
            assert cfg.training.weight_decay == 0.0005
        rule = c.point["config"].split("-", 1)[1]
        noise = cfg.training.gradient_noise_std
        assert noise == ((100.0 if softmax else 0.01) if rule == "nmedian" else 0.0)
        if rule.startswith("diversefl"):
            assert cfg.strategy.params == {
                "fraction": 0.01 if rule.endswith("1pct") else 0.03,
                "eps1": 0.5,
                "eps2": 2.0,
            }
        if rule == "bulyan":  # Bulyan needs n >= 4f + 3
            assert 4 * cfg.strategy.params["f"] + 3 <= cfg.data.num_clients


def test_attack_sigmas_are_the_papers_gradient_sigmas_times_the_first_rate():
    todo, _ = cells(load_baseline(SLUG), "paper10k", seeds=[0])
    for c in todo:
        if c.cfg.attack is None or c.cfg.attack.name not in ("gaussian", "same_value"):
            continue
        sigma_z = 1e4 if c.point["config"].startswith("softmax") else 10.0
        expected = c.cfg.training.lr * sigma_z  # U = -lr_1 z
        if c.cfg.attack.name == "same_value":
            expected = -expected  # z = sigma_S * 1 moves the model by -lr_1 sigma_S
        assert c.cfg.attack.params["sigma"] == pytest.approx(expected)


def test_config_value_reads_resolved_keys_and_labels_null_and_mappings():
    cfg = from_dict(
        {"name": "x", "attack": {"name": "gaussian", "num_malicious": 2, "params": {"sigma": 3}}}
    )
    assert config_value(cfg, "attack.name") == "gaussian"
    assert config_value(cfg, "attack.params") == '{"sigma": 3}'
    assert config_value(from_dict({"name": "x"}), "attack.name") == "none"
    assert config_value(cfg, "no.such.key") == "none"


def _finished(tmp_path: Path, cell, accuracy: float, precision: float) -> Path:
    run_dir = tmp_path / cell.name.replace('"', "")
    run_dir.mkdir(parents=True)
    pd.DataFrame(
        [{"name": cell.name, "final_accuracy": accuracy, "detect_precision": precision}]
    ).to_csv(run_dir / SUMMARY_FILE, index=False)
    return run_dir


def test_a_sweep_over_attack_mappings_is_a_table_by_attack_name(tmp_path):
    todo, _ = cells(load_baseline(SLUG), "paper10k", seeds=[0, 1])
    mine = [c for c in todo if c.point["config"] == "softmax-diversefl-1pct"]
    assert len(mine) == 10
    values = {  # (attack, seed) -> accuracy, precision
        ("none", 0): (0.80, 0.0),
        ("none", 1): (0.70, 0.0),
        ("sign_flip", 0): (0.60, 1.0),
        ("sign_flip", 1): (0.50, 0.5),
    }
    run_dirs = {}
    for c in mine:
        key = (config_value(c.cfg, "attack.name"), c.cfg.seed)
        if key in values:
            run_dirs[c.name] = _finished(tmp_path, c, *values[key])
    runs = summary_frame(todo, run_dirs, keys=("attack.name",))
    assert len(runs) == 4
    swept = runs["attack"].dropna()  # attack: null is a missing value
    assert list(swept) == ['{"name": "sign_flip", "num_malicious": 5}'] * 2  # one-line JSON
    spec = {
        "name": "t",
        "config": "softmax-diversefl-1pct",
        "rows": "attack.name",
        "columns": {"Accuracy": "final_accuracy", "Precision": "detect_precision"},
        "percent": True,
    }
    table = build_table(runs, spec)
    # none: mean 75, sample std sqrt(2 * 5^2) = 7.07; sign flip: 55 +- 7.07, precision 75 +- 35.36
    assert table.to_dict("records") == [
        {"name": "none", "Accuracy": "75.00 ± 7.07", "Precision": "0.00 ± 0.00", "seeds": 2},
        {"name": "sign_flip", "Accuracy": "55.00 ± 7.07", "Precision": "75.00 ± 35.36", "seeds": 2},
    ]


@pytest.mark.slow
def test_smoke_every_config_and_attack_runs_and_tables_are_written(tmp_path):
    """Every config once (sign flip), every attack once (DiverseFL 1 %), both backdoor configs."""
    out = tmp_path / "out"
    baseline = load_baseline(SLUG)
    todo, _ = cells(baseline, "smoke", seeds=[0], out=out)
    picked = [
        c
        for c in todo
        if c.point["config"]
        in ("softmax-diversefl-1pct", "backdoor-baselines", "backdoor-diversefl")
        or config_value(c.cfg, "attack.name") == "sign_flip"
    ]
    assert len(picked) == len(ATTACKS) + (2 * len(RULES) - 1) + 4
    run_dirs = run_cells(picked, progress=False)
    files = write_outputs(
        baseline, summary_frame(picked, run_dirs, label_keys(baseline)), out, "smoke"
    )
    names = {f.name for f in files}
    for setting in ("softmax", "nn"):
        assert f"{setting}_accuracy.png" in names
        for rule in RULES:
            assert f"{setting}_{rule.replace('-', '_')}.csv" in names
    runs = pd.read_csv(out / "cells.csv")
    assert len(runs) == len(picked) and runs["final_accuracy"].between(0, 1).all()
    table = pd.read_csv(out / "softmax_diversefl_1pct.csv")
    assert list(table["name"]) == ATTACKS
    assert table["Accuracy (ours)"].str.contains("±").all()
    diversefl = runs[runs["attack"].notna() & runs["config"].str.contains("diversefl")]
    assert diversefl["detect_recall"].between(0, 1).all()
    backdoor = pd.read_csv(out / "backdoor_diversefl.csv")
    assert list(backdoor["fraction"]) == [0.01, 0.03]
    assert backdoor["Backdoor (ours)"].str.contains("±").all()
    assert backdoor["Main task (ours)"].str.contains("±").all()
