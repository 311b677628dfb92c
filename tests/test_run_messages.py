"""What ``flsec run`` tells the user: the attached Ray cluster, the attacked group's accuracy."""

import sys
import types

import pandas as pd

from flsec_flower.app.cli import summary_table
from flsec_flower.app.simulation import start_ray
from flsec_flower.config import from_dict
from flsec_flower.results import summarize


def _fake_ray(initialised: bool) -> types.ModuleType:
    ray = types.ModuleType("ray")
    ray.calls = []
    ray.is_initialized = lambda: initialised
    ray.init = lambda **kw: (
        ray.calls.append(kw) or types.SimpleNamespace(address_info={"gcs_address": "10.0.0.7:6379"})
    )
    ray.cluster_resources = lambda: {"CPU": 64.0, "GPU": 4.0, "memory": 256 * 2**30}
    return ray


def _cfg(**extra):
    return from_dict({"name": "t", "rounds": 2, "data": {"dataset": "digits"}, **extra})


def test_attaching_to_a_cluster_prints_its_address_and_resources(monkeypatch, capsys):
    ray = _fake_ray(initialised=False)
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    start_ray(_cfg())
    assert ray.calls[0]["address"] == "auto"
    assert capsys.readouterr().out.strip() == (
        "attached to Ray cluster at 10.0.0.7:6379: 64 CPUs, 4 GPUs, 256.0 GiB memory"
    )


def test_a_local_ray_prints_nothing(monkeypatch, capsys):
    ray = _fake_ray(initialised=False)
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start_ray(_cfg())
    assert "address" not in ray.calls[0]
    assert capsys.readouterr().out == ""


def test_run_summary_shows_the_attacked_groups_accuracy():
    df = pd.DataFrame(
        {
            "round": [0, 1, 2],
            "accuracy": [0.5, 0.7, 0.8],
            "loss": [1.0, 0.6, 0.5],
            "target_accuracy": [0.5, 0.6, 0.65],
            "attacked_group_accuracy": [0.4, 0.2, 0.125],
        }
    )
    text = summary_table(summarize(df, _cfg()).assign(run_dir="runs/x"), keys=[])
    header, row = text.splitlines()
    cells = dict(zip(header.split(), row.split(), strict=True))
    assert cells["final_attacked_group_accuracy"] == "0.125"
    assert cells["final_accuracy"] == "0.8"
    assert "final_backdoor_accuracy" not in cells


def test_sweep_summary_keeps_the_attacked_groups_accuracy():
    table = pd.DataFrame(
        {"seed": [1], "runs": [2], "final_accuracy": ["0.8 ± 0.1"], "extra": [1]}
    ).assign(final_attacked_group_accuracy=["0.2 ± 0.05"])
    header = summary_table(table, keys=["seed"]).splitlines()[0].split()
    assert header == ["seed", "runs", "final_accuracy", "final_attacked_group_accuracy"]
