"""The model-replacement baseline (Bagdasaryan et al.) and the library features it added."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import flsec_flower.app.registry  # noqa: F401  (registers the attacks' data layouts)
from flsec_flower.app.baselines import cells, load_baseline, run_baseline
from flsec_flower.config import ConfigError, from_dict, set_dotted
from flsec_flower.data import load_dataset
from flsec_flower.experiment import client_indices, experiment_dataset
from flsec_flower.models import build_model, get_weights, set_weights
from flsec_flower.pretrain import pooled_indices, pretrained_weights
from flsec_flower.results import after_attack

SLUG = "model-replacement"


def test_list_index_overrides_set_one_wrapper_and_name_bad_indices():
    raw = {"strategy": {"wrappers": [{"name": "norm_clip", "params": {"max_norm": 1.0}}]}}
    set_dotted(raw, "strategy.wrappers.0.params.max_norm", 0.5)
    assert raw["strategy"]["wrappers"][0]["params"] == {"max_norm": 0.5}
    with pytest.raises(ConfigError, match=r"strategy\.wrappers\.3: expected a list index in 0..0"):
        set_dotted(raw, "strategy.wrappers.3.params.sigma", 0.1)
    with pytest.raises(ConfigError, match="expected a list index"):
        set_dotted(raw, "strategy.wrappers.x", 0.1)
    with pytest.raises(ConfigError, match="not a mapping or list"):
        set_dotted({"rounds": 3}, "rounds.x", 1)


def test_swept_wrapper_parameter_reaches_the_config():
    cfg = from_dict(
        {
            "strategy": {
                "name": "fedavg",
                "wrappers": [
                    {"name": "norm_clip", "params": {"max_norm": 1.0}},
                    {"name": "dp_noise", "params": {"sigma": 0.001}},
                ],
            },
        },
        [("strategy.wrappers.1.params.sigma", 0.01)],
    )
    assert [w.params for w in cfg.strategy.wrappers] == [{"max_norm": 1.0}, {"sigma": 0.01}]


def test_after_attack_reads_the_first_attack_round_and_the_mean_from_it():
    df = pd.DataFrame(
        {
            "round": [0, 1, 2, 3, 4],
            "accuracy": [0.1, 0.8, 0.8, None, 0.9],
            "backdoor_accuracy": [0.0, 0.0, 1.0, None, 0.4],
            "attack_round": [None, None, True, True, None],
            "per_class_accuracy": [[0.1]] * 5,
        }
    )
    evaluated = df[df["accuracy"].notna()]
    got = after_attack(df, evaluated)
    assert got["attack_backdoor_accuracy"] == 1.0
    assert got["mean_after_attack_backdoor_accuracy"] == pytest.approx(0.7)
    assert got["mean_after_attack_accuracy"] == pytest.approx(0.85)
    assert not any(k.startswith(("attack_per", "mean_after_attack_per")) for k in got)
    assert after_attack(df.drop(columns="attack_round"), evaluated) == {}
    # the attack round was not evaluated: its value is NaN, the mean starts there
    late = df.assign(attack_round=[None, True, None, None, None])
    assert np.isnan(after_attack(late, evaluated.iloc[[0, 2, 3]])["attack_accuracy"])


def test_pretraining_trains_on_the_pooled_partitions_and_is_deterministic():
    raw = {
        "data": {"dataset": "synthetic", "num_clients": 4},
        "model": {"name": "logreg", "pretrain_epochs": 2},
        "training": {"lr": 0.1, "batch_size": 16},
    }
    cfg = from_dict(raw)
    ds = experiment_dataset(cfg)
    parts = client_indices(cfg, ds)
    assert list(pooled_indices(parts)) == sorted({int(i) for p in parts for i in p})
    weights = pretrained_weights(cfg, ds, parts)
    again = pretrained_weights(from_dict(raw), ds, parts)
    assert all(np.array_equal(a, b) for a, b in zip(weights, again, strict=True))
    model = build_model("logreg", ds.input_shape, ds.num_classes, cfg.seed)
    fresh = get_weights(model)
    assert any(not np.array_equal(a, b) for a, b in zip(weights, fresh, strict=True))

    def accuracy(w):
        set_weights(model, w)
        with torch.no_grad():
            return float((model(ds.x_test).argmax(1) == ds.y_test).float().mean())

    assert accuracy(weights) > accuracy(fresh) + 0.2
    assert pretrained_weights(from_dict({**raw, "model": {"name": "logreg"}}), ds, parts) is None
    # a different pooled set is a different pre-training
    other = pretrained_weights(cfg, ds, parts[:2])
    assert any(not np.array_equal(a, b) for a, b in zip(weights, other, strict=True))


def test_negative_pretrain_epochs_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.pretrain_epochs"):
        from_dict({"model": {"pretrain_epochs": -1}})


def _by_config(scale: str) -> dict[str, list]:
    todo, _ = cells(load_baseline(SLUG), scale)
    out: dict[str, list] = {}
    for c in todo:
        out.setdefault(c.point["config"], []).append(c)
    return out


def test_quick_scale_keeps_the_papers_comparisons():
    quick = _by_config("quick")
    for name in ("single-shot-pixel", "single-shot-semantic"):
        attacks = {c.cfg.attack.name for c in quick[name]}
        assert len(attacks) == 2 and any(a.startswith("naive") for a in attacks)
        for c in quick[name]:
            a = c.cfg.attack
            assert (a.single_shot, a.force_participation, a.num_malicious) == (True, True, 1)
            assert 1 < a.start_round < c.cfg.rounds
    cfg = quick["single-shot-semantic"][0].cfg
    assert cfg.model.pretrain_epochs > 0 and cfg.data.num_clients == 100
    assert cfg.sampled_clients == 10 and cfg.attack.params["exclusive"] is True
    # the striped T-shirts are T-shirts (class 0), labelled as another class
    ds = load_dataset("fashion_mnist", cfg.data.data_dir, False, 0)
    assert set(ds.y_train[cfg.attack.params["ids"]].tolist()) == {0}
    assert cfg.attack.params["target_class"] != 0
    gammas = sorted(c.cfg.attack.params["gamma"] for c in quick["gamma"] if c.cfg.seed == 0)
    assert gammas[-2] == cfg.sampled_clients / cfg.server_lr and gammas[0] < 10
    fractions = {c.cfg.attack.num_malicious for c in quick["fraction-replacement"]}
    assert fractions == {1, 5, 10}
    rules = {json.dumps(c.point["strategy"]) for c in quick["defences-replace"]}
    assert all(r in " ".join(rules) for r in ('"krum"', '"multikrum"', '"norm_clip"', '"flame"'))
    modes = {n: quick[f"defences-{n}"][0].cfg.attack.params["mode"] for n in ("train-and-scale",)}
    assert modes == {"train-and-scale": "train_and_scale"}
    clip = sorted({c.cfg.strategy.wrappers[0].params["max_norm"] for c in quick["dp-clip"]})
    noise = sorted({c.cfg.strategy.wrappers[1].params["sigma"] for c in quick["dp-noise"]})
    assert len(clip) >= 3 and len(noise) >= 3 and noise[0] == 0.0
    assert all(len({c.cfg.seed for c in v}) == 3 for v in quick.values())


def test_paper_scale_attacks_after_five_rounds_and_keeps_cifar_skipped():
    todo, skipped = cells(load_baseline(SLUG), "paper")
    single = [c for c in todo if c.point["config"] == "single-shot-semantic"]
    assert {(c.cfg.rounds, c.cfg.attack.start_round) for c in single} == {(100, 6)}
    assert [name for name, _ in skipped] == ["bagdasaryan-cifar-semantic"]


@pytest.mark.slow
def test_smoke_every_cell_runs_and_tables_are_written(tmp_path):
    out = tmp_path / "out"
    run_baseline(SLUG, scale="smoke", out=out, seeds=[0], progress=False)
    frame = pd.read_csv(out / "cells.csv")
    todo, _ = cells(load_baseline(SLUG), "smoke", seeds=[0])
    assert len(frame) == len(todo) == 7
    assert frame["attack_backdoor_accuracy"].between(0, 1).all()
    table = pd.read_csv(out / "single_shot_pixel.csv")
    assert set(table["name"]) == {"model_replacement", "naive_poisoning"}
    assert "Backdoor after attack (ours)" in table and (table["seeds"] == 1).all()
    defences = pd.read_csv(out / "defences_train_and_scale.csv")
    assert list(defences["seeds"]) == [1] and "Attacker caught (recall)" in defences
    for name in ("durability_semantic", "durability_pixel", "dp_noise_tradeoff"):
        assert (out / f"{name}.png").stat().st_size > 0
