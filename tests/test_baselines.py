"""The baseline runner (``flsec baseline``) and the data-distribution baseline's configs."""

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flsec_flower.app import baselines
from flsec_flower.app.baselines import (
    BASELINES_DIR,
    PENDING,
    build_table,
    cells,
    finished_run,
    load_baseline,
    markdown,
    run_baseline,
)
from flsec_flower.config import AttackConfig, ConfigError, PartitionConfig
from flsec_flower.results import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE

SLUG = "data-distribution"


def _root(tmp_path: Path) -> Path:
    """A copy of ``baselines/`` that this branch's config schema accepts.

    The configs give the attacker a fixed IID sample (``attack.data``) and
    split the data among the honest clients (``data.partition.honest_only``),
    engineer h3's keys; where the schema lacks them, the copy drops them and
    the attacker trains on its own Dirichlet partition.
    """
    root = tmp_path / "baselines"
    shutil.copytree(BASELINES_DIR / SLUG, root / SLUG)
    attack_keys = {f.name for f in dataclasses.fields(AttackConfig)}
    partition_keys = {f.name for f in dataclasses.fields(PartitionConfig)}
    for path in (root / SLUG).glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        if "data" not in attack_keys and raw.get("attack"):
            raw["attack"].pop("data", None)
        if "honest_only" not in partition_keys and "data" in raw:
            raw["data"]["partition"].pop("honest_only", None)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def test_quick_scale_has_every_paper_cell(tmp_path):
    baseline = load_baseline(SLUG, _root(tmp_path))
    todo, skipped = cells(baseline, "quick", out=tmp_path / "out")
    assert len(todo) == 3 * 3 * 3  # configs x alphas x seeds
    assert len({c.name for c in todo}) == len(todo)
    assert {c.point["data.partition.alpha"] for c in todo} == {1.0, 0.5, 0.25}
    assert {c.cfg.seed for c in todo} == {0, 1, 2}
    assert [name for name, _ in skipped] == [
        "cifar10-clean",
        "cifar10-backdoor",
        "cifar10-backdoor-rlr",
    ]
    for c in todo:
        assert c.cfg.data.dataset == "fashion_mnist" and c.cfg.data.num_clients == 10
        assert c.cfg.training.local_epochs == 2 and c.cfg.training.batch_size == 256
        assert c.cfg.training.optimizer == "adam"
        assert c.cfg.output_dir == str(tmp_path / "out" / "runs")
    rlr = [c for c in todo if c.point["config"] == "fmnist-backdoor-rlr"]
    assert all(c.cfg.strategy.wrappers[0].params == {"theta": 4} for c in rlr)
    attacked = [c for c in todo if c.cfg.attack is not None]
    assert len(attacked) == 18
    assert all(c.cfg.attack.params["target_class"] == 7 for c in attacked)
    assert [c.name for c in todo[:2]] == [
        "fmnist-clean-alpha1.0-seed0",
        "fmnist-clean-alpha0.5-seed0",
    ]
    assert {c.cfg.seed for c in todo[:9]} == {0}  # seed by seed


def test_unknown_scale_and_slug_name_the_problem(tmp_path):
    root = _root(tmp_path)
    with pytest.raises(ConfigError, match=r"--scale 'huge'.*quick, paper"):
        cells(load_baseline(SLUG, root), "huge")
    with pytest.raises(ConfigError, match="known baselines: data-distribution"):
        load_baseline("nope", root)
    spec_file = root / SLUG / "baseline.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["tables"][1]["colums"] = spec["tables"][1].pop("columns")
    spec_file.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"tables\[1\]\.colums: unknown key"):
        load_baseline(SLUG, root)


def test_table_is_mean_and_std_over_seeds_in_percent():
    runs = pd.DataFrame(
        {
            "config": ["a", "a", "a", "b"],
            "data.partition.alpha": [1.0, 1.0, 0.5, 1.0],
            "final_accuracy": [0.90, 0.80, 0.70, 0.10],
        }
    )
    spec = {
        "name": "t",
        "config": "a",
        "rows": "data.partition.alpha",
        "columns": {"Acc": "final_accuracy"},
        "percent": True,
        "paper": {1.0: {"Acc": "91 ± 1"}, 0.25: {"Acc": "80 ± 2"}},
    }
    table = build_table(runs, spec)
    assert list(table.columns) == ["alpha", "Acc (paper)", "Acc (ours)", "seeds"]
    # mean 85, sample std sqrt(((90-85)^2 + (80-85)^2) / 1) = 7.07
    assert table.to_dict("records") == [
        {"alpha": 1.0, "Acc (paper)": "91 ± 1", "Acc (ours)": "85.00 ± 7.07", "seeds": 2},
        {"alpha": 0.5, "Acc (paper)": "-", "Acc (ours)": "70.00 ± 0.00", "seeds": 1},
        {"alpha": "0.25", "Acc (paper)": "80 ± 2", "Acc (ours)": PENDING, "seeds": 0},
    ]
    assert markdown(table).splitlines()[2] == "| 1.0 | 91 ± 1 | 85.00 ± 7.07 | 2 |"


def _fake_run(cell, rounds: list[int], suffix: str = "20260101-000000") -> Path:
    run_dir = Path(cell.cfg.output_dir) / f"{cell.name}-{suffix}"
    run_dir.mkdir(parents=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cell.cfg.to_dict(), sort_keys=False))
    (run_dir / METRICS_FILE).write_text("".join(json.dumps({"round": r}) + "\n" for r in rounds))
    (run_dir / SUMMARY_FILE).write_text("name\nx\n")
    return run_dir


def test_finished_cell_needs_all_rounds_and_the_same_config(tmp_path):
    baseline = load_baseline(SLUG, _root(tmp_path))
    todo, _ = cells(baseline, "quick", out=tmp_path / "out")
    first, second, third = todo[0], todo[1], todo[2]
    rounds = first.cfg.rounds
    assert rounds == baseline.scales["quick"]["rounds"]
    done = _fake_run(first, list(range(rounds + 1)))
    _fake_run(second, list(range(rounds)))  # killed before its last round
    stale = _fake_run(third, list(range(rounds + 1)))
    raw = yaml.safe_load((stale / CONFIG_FILE).read_text())
    raw["training"]["lr"] = 0.5  # the config changed since
    (stale / CONFIG_FILE).write_text(yaml.safe_dump(raw))
    assert finished_run(first) == done
    assert finished_run(second) is None
    assert finished_run(third) is None


@pytest.mark.slow
def test_smoke_every_cell_runs_and_tables_are_written(tmp_path):
    out = tmp_path / "out"
    root = _root(tmp_path)
    files = run_baseline(SLUG, scale="smoke", out=out, seeds=[0], root=root, progress=False)
    names = {f.name for f in files}
    for table in ("table1_fairness", "table2_robustness", "table3_rlr"):
        assert {f"{table}.md", f"{table}.csv"} <= names
    assert {"bias_vs_alpha.png", "backdoor_vs_alpha.png"} <= names
    runs = pd.read_csv(out / "cells.csv")
    assert len(runs) == 9 and runs["final_accuracy"].between(0, 1).all()
    table4 = pd.read_csv(out / "table4_bias_attack.csv")
    assert list(table4["alpha"]) == [1.0, 0.5, 0.25]
    assert table4["Bias (ours)"].str.contains("±").all()
    again = run_baseline(SLUG, scale="smoke", out=out, seeds=[0], root=root, progress=False)
    assert len(list((out / "runs").iterdir())) == 9  # resumed: nothing ran twice
    assert {f.name for f in again} == names


def test_progress_line_names_the_cell_and_extrapolates_the_eta(tmp_path, monkeypatch, capsys):
    todo, _ = cells(load_baseline(SLUG, _root(tmp_path)), "quick", out=tmp_path / "out")
    clock = iter([0.0, 30.0, 60.0])
    monkeypatch.setattr(baselines.time, "perf_counter", lambda: next(clock))
    r = todo[0].cfg.rounds
    report = baselines.Progress(todo[:2], offset=1, total=5)  # 2 pending cells x r rounds
    report(0, 0)  # the initial evaluation is no progress
    report(0, 1)  # 30 s for 1 round, 2r - 1 left
    report(1, 1)  # 60 s for 2 rounds, 2r - 2 left
    assert capsys.readouterr().err.splitlines() == [
        f"cell 2/5 {todo[0].name} round 1/{r} elapsed 0.5 min ETA {(2 * r - 1) / 2:.1f} min",
        f"cell 3/5 {todo[1].name} round 1/{r} elapsed 1.0 min ETA {r - 1:.1f} min",
    ]


def test_eta_counts_the_cells_of_every_simulation_not_only_the_current_one(
    tmp_path, monkeypatch, capsys
):
    todo, _ = cells(load_baseline(SLUG, _root(tmp_path)), "quick", out=tmp_path / "out")

    def resized(cell, num_clients):
        data = dataclasses.replace(cell.cfg.data, num_clients=num_clients)
        return dataclasses.replace(cell, cfg=dataclasses.replace(cell.cfg, rounds=2, data=data))

    first = [resized(c, 10) for c in todo[:2]]
    second = [resized(todo[2], 7)]  # another num_clients: a second simulation

    def fake_run(cfgs, progress, on_round):  # every round takes 60 s of the fake clock
        for i, cfg in enumerate(cfgs):
            for r in range(cfg.rounds + 1):
                on_round(i, r)
        return [tmp_path / cfg.name for cfg in cfgs]

    clock = iter(60.0 * k for k in range(7))
    monkeypatch.setattr(baselines.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr("flsec_flower.app.simulation.run_experiments", fake_run)
    baselines.run_cells(first + second)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "0/3 cells already finished, 3 to run"
    # 6 rounds in all at 1 min each: after round k, 6 - k minutes are left, and the
    # last round of the first simulation (k = 4) still has the second one's 2 to go.
    assert [line.rsplit("ETA ", 1)[1] for line in lines[1:]] == [
        f"{6 - k:.1f} min" for k in range(1, 7)
    ]
    assert lines[5].startswith(f"cell 3/3 {second[0].name} round 1/2 ")


def test_only_runs_the_named_configs_and_keeps_the_others_finished_cells(tmp_path, monkeypatch):
    todo, _ = cells(load_baseline(SLUG, _root(tmp_path)), "quick", out=tmp_path / "out")
    clean = [c for c in todo if c.point["config"] == "fmnist-clean"]
    rlr = [c for c in todo if c.point["config"] == "fmnist-backdoor-rlr"]
    kept = _fake_run(clean[0], list(range(clean[0].cfg.rounds + 1)))
    ran: list[str] = []

    def fake_run(cfgs, progress, on_round):
        ran.extend(cfg.name for cfg in cfgs)
        return [tmp_path / cfg.name for cfg in cfgs]

    monkeypatch.setattr("flsec_flower.app.simulation.run_experiments", fake_run)
    done = baselines.run_cells(todo, progress=False, only=["fmnist-backdoor-rlr"])
    assert ran == [c.name for c in rlr]  # 9 cells; fmnist-clean and fmnist-backdoor stay
    assert set(done) == {clean[0].name, *ran}
    assert done[clean[0].name] == kept


def test_only_names_an_unknown_or_skipped_config(tmp_path):
    root = _root(tmp_path)
    with pytest.raises(ConfigError, match=r"--only fmnist-cleen: no such config.*fmnist-clean"):
        run_baseline(SLUG, "quick", out=tmp_path / "out", root=root, only=["fmnist-cleen"])
    with pytest.raises(ConfigError, match=r"--only cifar10-clean: this config is not run here"):
        run_baseline(SLUG, "quick", out=tmp_path / "out", root=root, only=["cifar10-clean"])
    assert not (tmp_path / "out").exists()  # checked before anything runs or is written


def test_cli_passes_only_to_the_runner(monkeypatch):
    from flsec_flower.app import cli

    seen = {}
    monkeypatch.setattr(baselines, "run_baseline", lambda slug, **kw: seen.update(kw) or [])
    assert cli.main(["baseline", SLUG, "--only", "fmnist-clean", "fmnist-backdoor"]) == 0
    assert seen["only"] == ["fmnist-clean", "fmnist-backdoor"]
