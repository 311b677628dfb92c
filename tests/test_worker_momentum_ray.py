"""Worker momentum survives Flower's fresh client per round inside the Ray simulation."""

import json

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from flsec_flower.app.simulation import run_experiment
from flsec_flower.config import from_dict
from flsec_flower.experiment import client_env, experiment_dataset
from flsec_flower.models import build_model

pytestmark = pytest.mark.slow


def he_et_al(cfg, rounds: int, persist: bool) -> float:
    """Test loss after ``rounds`` of distributed SGD with worker momentum, written out directly.

    Every client: ``g_i`` = full-batch gradient at ``x``; ``m_i <- beta m_i + g_i``
    (``m_i`` reset every round when ``persist`` is false); server:
    ``x <- mean_i (x - lr m_i)``.
    """
    ds = experiment_dataset(cfg)
    model = build_model("logreg", ds.input_shape, ds.num_classes, cfg.seed)
    w, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    lr, beta = cfg.training.lr, cfg.training.momentum
    n = cfg.data.num_clients
    mom = [(torch.zeros_like(w), torch.zeros_like(b)) for _ in range(n)]
    for _ in range(rounds):
        new_w, new_b = torch.zeros_like(w), torch.zeros_like(b)
        for i in range(n):
            env = client_env(cfg, i)
            wi, bi = w.clone().requires_grad_(), b.clone().requires_grad_()
            loss = F.cross_entropy(env.x.flatten(1) @ wi.T + bi, env.y)
            gw, gb = torch.autograd.grad(loss, (wi, bi))
            mw, mb = mom[i] if persist else (torch.zeros_like(w), torch.zeros_like(b))
            mom[i] = (beta * mw + gw, beta * mb + gb)
            new_w += (w - lr * mom[i][0]) / n
            new_b += (b - lr * mom[i][1]) / n
        w, b = new_w, new_b
    logits = ds.x_test.flatten(1) @ w.T + b
    return float(F.cross_entropy(logits, ds.y_test))


def test_worker_momentum_matches_he_et_al_through_ray(tmp_path):
    cfg = from_dict(
        {
            "name": "worker-momentum",
            "rounds": 3,
            "output_dir": str(tmp_path),
            "data": {"dataset": "digits", "num_clients": 2, "partition": {"kind": "iid"}},
            "model": {"name": "logreg"},
            "training": {
                "local_steps": 1,
                "batch_size": 1.0,
                "lr": 0.1,
                "momentum": 0.9,
                "worker_momentum": True,
            },
        }
    )
    run_dir = run_experiment(cfg, progress=False)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["round"] == 3
    expected = he_et_al(cfg, 3, persist=True)
    assert lines[-1]["loss"] == pytest.approx(expected, rel=1e-4)
    assert abs(he_et_al(cfg, 3, persist=False) - expected) > 1e-2
