"""The fairness-attack baseline (Rance & Svoboda) and the runner features it added."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import flsec_flower.app.registry  # noqa: F401  (registers the attacks' data layouts)
from flsec_flower.app.baselines import (
    BASELINES_DIR,
    Cell,
    build_table,
    cells,
    finished_run,
    load_baseline,
    round_curves,
    run_baseline,
    summary_frame,
)
from flsec_flower.config import from_dict
from flsec_flower.experiment import client_env, client_indices, experiment_dataset, malicious_ids
from flsec_flower.results import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE

SLUG = "fairness-attack"


def _by_config(scale: str) -> dict[str, list[Cell]]:
    todo, _ = cells(load_baseline(SLUG), scale)
    out: dict[str, list[Cell]] = {}
    for c in todo:
        out.setdefault(c.point["config"], []).append(c)
    return out


def test_quick_scale_keeps_every_row_of_the_paper():
    quick, paper = _by_config("quick"), _by_config("paper")
    for name in ("fmnist-baseline", "fmnist-round80", "fmnist-full", "adult-clean", "adult-attack"):
        got = sorted((c.cfg.data.num_clients, c.cfg.seed) for c in quick[name])
        assert got == [(n, s) for n in (3, 10, 30) for s in (0, 1, 2)], name
    assert {c.cfg.attack.num_malicious for c in quick["fmnist-baseline"]} == {0}
    assert {c.cfg.attack.num_malicious for c in quick["fmnist-full"]} == {1}
    # clean until round 80 of 200: the same 40 % of the rounds at the quick scale
    for scale, rounds, start in ((quick, 10, 5), (paper, 200, 81)):
        cfg = scale["fmnist-round80"][0].cfg
        assert (cfg.rounds, cfg.attack.start_round) == (rounds, start)
        assert (start - 1) / rounds == pytest.approx(0.4)
    assert {c.cfg.attack.start_round for c in quick["adult-attack"]} == {10}
    rules = {json.dumps(c.point["strategy"], sort_keys=True) for c in quick["adult-defences"]}
    names = " ".join(rules)
    for rule in ('"fedavg"', '"krum"', '"median"', '"norm_clip"', '"flame"', '"rlr"'):
        assert rule in names
    assert len(rules) == 6
    clean = {json.dumps(c.point["strategy"], sort_keys=True) for c in quick["adult-defences-clean"]}
    assert clean == rules
    assert {c.cfg.attack.num_malicious for c in quick["adult-defences-clean"]} == {0}


def test_cifar_configs_are_the_papers_setting_and_skipped():
    _, skipped = cells(load_baseline(SLUG), "paper")
    assert {name for name, _ in skipped} == {"cifar10-baseline", "cifar10-round80", "cifar10-full"}
    raw = yaml.safe_load((BASELINES_DIR / SLUG / "cifar10-full.yaml").read_text())
    cfg = from_dict(raw)
    assert (cfg.model.name, cfg.data.dataset, cfg.rounds) == ("resnet50", "cifar10", 200)
    assert (cfg.training.lr, cfg.training.momentum, cfg.training.batch_size) == (0.1, 0.9, 32)


def test_attackers_clean_estimate_comes_from_its_own_disjoint_share():
    todo, _ = cells(load_baseline(SLUG), "quick", seeds=[0])
    cfg = next(c.cfg for c in todo if c.point["config"] == "adult-attack")
    ds = experiment_dataset(cfg)
    parts = client_indices(cfg, ds)
    (attacker,) = malicious_ids(cfg)
    honest = np.concatenate([p for i, p in enumerate(parts) if i != attacker])
    assert len(np.intersect1d(parts[attacker], honest)) == 0
    env = client_env(cfg, attacker)
    assert len(env.y) == len(parts[attacker]) > 0
    assert np.array_equal(env.x.numpy(), ds.x_train[parts[attacker]].numpy())


def _run_dir(path: Path, values: list[float | None], summary: dict) -> Path:
    path.mkdir(parents=True)
    lines = [json.dumps({"round": r, "accuracy": v}) for r, v in enumerate(values)]
    (path / METRICS_FILE).write_text("\n".join(lines) + "\n")
    pd.DataFrame([summary]).to_csv(path / SUMMARY_FILE, index=False)
    return path


def test_round_curve_is_mean_and_std_over_cells_per_round(tmp_path):
    a = _run_dir(tmp_path / "a", [0.1, None, 0.5], {})
    b = _run_dir(tmp_path / "b", [0.3, None, 0.9], {})
    stats = round_curves(pd.DataFrame({"run_dir": [str(a), str(b)]}), "accuracy")
    assert list(stats.index) == [0, 2]  # round 1 was not evaluated
    assert stats["mean"].tolist() == pytest.approx([0.2, 0.7])
    assert stats["std"].tolist() == pytest.approx([np.sqrt(0.02), np.sqrt(0.08)])
    assert round_curves(pd.DataFrame({"run_dir": [str(a)]}), "missing").empty


def test_swept_mapping_rows_are_labelled_by_their_json(tmp_path):
    raw = {"name": "t", "data": {"num_clients": 4}}
    todo, runs = [], {}
    for i, (rule, seed, acc) in enumerate(
        [({"name": "median"}, 0, 0.5), ({"name": "median"}, 1, 0.7), ({"name": "fedavg"}, 0, 0.9)]
    ):
        cfg = from_dict({**raw, "name": f"c{i}"})
        todo.append(Cell(cfg, {"strategy": rule, "seed": seed, "config": "t"}))
        runs[cfg.name] = _run_dir(tmp_path / f"c{i}", [acc], {"final_accuracy": acc})
    frame = summary_frame(todo, runs)
    table = build_table(
        frame, {"config": "t", "rows": "strategy", "columns": {"Acc": "final_accuracy"}}
    )
    assert table["strategy"].tolist() == ['{"name": "median"}', '{"name": "fedavg"}']
    assert table["Acc"].tolist() == ["0.6000 ± 0.1414", "0.9000 ± 0.0000"]


def test_config_entry_scales_apply_after_the_scale_and_before_extra(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "x.yaml").write_text(yaml.safe_dump({"name": "x", "rounds": 50}))
    (folder / "y.yaml").write_text(yaml.safe_dump({"name": "y", "rounds": 50}))
    spec = {
        "configs": [{"file": "x.yaml", "scales": {"quick": {"rounds": 7}}}, {"file": "y.yaml"}],
        "scales": {"quick": {"rounds": 3, "seed": 4}, "paper": {}},
    }
    (folder / "baseline.yaml").write_text(yaml.safe_dump(spec))
    baseline = load_baseline("b", tmp_path)
    todo, _ = cells(baseline, "quick", seeds=[0])
    assert {c.name.split("-")[0]: c.cfg.rounds for c in todo} == {"x": 7, "y": 3}
    todo, _ = cells(baseline, "quick", seeds=[0], extra={"rounds": 9})
    assert {c.cfg.rounds for c in todo} == {9}
    todo, _ = cells(baseline, "paper", seeds=[0])
    assert {c.cfg.rounds for c in todo} == {50}


@pytest.mark.slow
def test_smoke_every_cell_runs_and_tables_and_figures_are_written(tmp_path):
    out = tmp_path / "out"
    files = run_baseline(SLUG, scale="smoke", out=out, seeds=[0], progress=False)
    names = {f.name for f in files}
    for table in ("table1_baseline", "table1_round80", "table1_full", "defences_adult"):
        assert {f"{table}.md", f"{table}.csv"} <= names
    assert {"figure2_attacked_group.png", "defences_attacked_group.png"} <= names
    runs = pd.read_csv(out / "cells.csv")
    assert len(runs) == 17 and runs["final_accuracy"].between(0, 1).all()
    adult = runs[runs["config"].str.startswith("adult")]
    assert adult["final_attacked_group_accuracy"].between(0, 1).all()
    defences = pd.read_csv(out / "defences_adult.csv")
    assert len(defences) == 6 and defences["Overall"].str.contains("±").all()


def test_finished_cell_with_a_swept_list_in_its_name_is_found(tmp_path):
    todo, _ = cells(load_baseline(SLUG), "quick", seeds=[0], out=tmp_path / "out")
    cell = next(c for c in todo if "rlr" in c.name)
    assert "[" in cell.name  # the wrappers list: a glob character class if not escaped
    run_dir = Path(cell.cfg.output_dir) / f"{cell.name}-20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cell.cfg.to_dict(), sort_keys=False))
    rounds = range(cell.cfg.rounds + 1)
    (run_dir / METRICS_FILE).write_text("".join(json.dumps({"round": r}) + "\n" for r in rounds))
    (run_dir / SUMMARY_FILE).write_text("name\nx\n")
    assert finished_run(cell) == run_dir


def test_swept_integers_stay_integers_when_other_configs_lack_the_key(tmp_path):
    todo, runs = [], {}
    for i, point in enumerate([{"data.num_clients": 3}, {"strategy": {"name": "median"}}]):
        cfg = from_dict({"name": f"c{i}", "data": {"num_clients": 4}})
        todo.append(Cell(cfg, {**point, "seed": 0, "config": f"t{i}"}))
        runs[cfg.name] = _run_dir(tmp_path / f"c{i}", [0.5], {"final_accuracy": 0.5})
    frame = summary_frame(todo, runs)
    spec = {"config": "t0", "rows": "data.num_clients", "columns": {"Acc": "final_accuracy"}}
    table = build_table(frame, {**spec, "paper": {3: {"Acc": "50"}}})
    assert table["num_clients"].tolist() == [3]  # the paper's row 3 matched, not "3.0" + pending
    assert table["Acc (ours)"].tolist() == ["0.5000 ± 0.0000"]


def test_a_table_without_finished_cells_says_pending(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "x.yaml").write_text(yaml.safe_dump({"name": "x", "rounds": 1}))
    spec = {
        "configs": [{"file": "x.yaml"}],
        "scales": {"quick": {}},
        "tables": [
            {"name": "t", "config": "x", "rows": "seed", "columns": {"A": "final_accuracy"}}
        ],
    }
    (folder / "baseline.yaml").write_text(yaml.safe_dump(spec))
    run_baseline("b", out=tmp_path / "out", root=tmp_path, progress=False, run=False)
    text = (tmp_path / "out" / "t.md").read_text()
    assert text.endswith("pending (not run): no finished cell.\n")
