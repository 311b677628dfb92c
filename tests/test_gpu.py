"""GPU paths: fractional-GPU client config, ``device: auto`` aggregation, CUDA = CPU results.

The CUDA tests skip on machines without a GPU (the reason says so); the
config and device-resolution tests run everywhere.
"""

import json

import pytest
import torch

from flsec_flower.app.simulation import check_gpus, run_experiment
from flsec_flower.config import ConfigError, from_dict
from strategies import Krum
from strategies.bulyan import bulyan
from strategies.krum import krum
from strategies.median import coordinate_median
from strategies.trimmed_mean import trimmed_mean

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)


def config(gpus: float, **extra: object) -> dict:
    return {"resources": {"client_num_cpus": 1.0, "client_num_gpus": gpus}, **extra}


@pytest.mark.parametrize("gpus", [0.0, 0.25, 0.5, 1.0, 2.0])
def test_fractional_or_whole_gpus_are_accepted(gpus):
    assert from_dict(config(gpus)).resources.client_num_gpus == gpus


@pytest.mark.parametrize("gpus", [1.5, -0.25, float("nan")])
def test_bad_gpu_counts_name_the_key(gpus):
    with pytest.raises(ConfigError, match=r"resources\.client_num_gpus"):
        from_dict(config(gpus))


def test_gpu_clients_on_a_cluster_without_gpus_are_refused():
    cfg = from_dict(config(0.25))
    with pytest.raises(ConfigError, match=r"client_num_gpus: got 0.25, but the Ray cluster has 0"):
        check_gpus(cfg, {"CPU": 2.0})
    check_gpus(cfg, {"CPU": 2.0, "GPU": 1.0})
    check_gpus(from_dict(config(0.0)), {"CPU": 2.0})


def test_device_auto_aggregates_where_cuda_is():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert Krum(f=1).device.type == expected


@needs_cuda
def test_rules_on_cuda_equal_the_cpu():
    gen = torch.Generator().manual_seed(0)
    host = torch.randn((23, 5000), generator=gen) * torch.rand((23, 1), generator=gen)
    dev = host.cuda()
    assert krum(dev, 4).selected == krum(host, 4).selected
    multi_cpu, multi_gpu = krum(host, 4, m=None), krum(dev, 4, m=None)
    assert multi_gpu.selected == multi_cpu.selected
    torch.testing.assert_close(multi_gpu.update.cpu(), multi_cpu.update)
    assert bulyan(dev, 4).selected == bulyan(host, 4).selected
    torch.testing.assert_close(bulyan(dev, 4).update.cpu(), bulyan(host, 4).update)
    torch.testing.assert_close(coordinate_median(dev).update.cpu(), coordinate_median(host).update)
    torch.testing.assert_close(trimmed_mean(dev, b=3).update.cpu(), trimmed_mean(host, b=3).update)


@needs_cuda
@pytest.mark.slow
def test_quarter_gpu_clients_and_cuda_aggregation_run_a_simulation(tmp_path):
    cfg = from_dict(
        {
            "name": "gpu",
            "rounds": 2,
            "output_dir": str(tmp_path),
            "data": {"dataset": "digits", "num_clients": 4, "partition": {"kind": "iid"}},
            "model": {"name": "logreg"},
            "training": {"local_steps": 1, "batch_size": 32, "lr": 0.1, "device": "auto"},
            "strategy": {"name": "krum", "params": {"f": 0}, "device": "auto"},
            "resources": {"client_num_cpus": 1.0, "client_num_gpus": 0.25},
        }
    )
    run_dir = run_experiment(cfg, progress=False)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["round"] == 2
    assert len(lines[-1]["participants"]) == 4
