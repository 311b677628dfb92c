"""Fang et al.'s ERR/LFR rejection: hand-computed leave-one-out, the paper's property, wiring."""

import numpy as np
import pytest
import torch
from torch.nn.functional import cross_entropy

from flsec_flower.aggregation import RoundContext
from flsec_flower.app.server_app import ServerSideTrainer, build_strategy
from flsec_flower.config import from_dict
from flsec_flower.experiment import experiment_dataset
from flsec_flower.models import build_model, get_weights, set_weights
from flsec_flower.params import ParamLayout
from strategies import FangRejection
from strategies._too_few import TooFewClientsError
from strategies.fang_rejection import fang_rejection


def squared(target):
    """Validation loss (w - target)^2 and error 1 when |w - target| > 0.5, in one dimension."""
    return lambda w: (float((w[0] - target) ** 2), float(abs(float(w[0]) - target) > 0.5))


def test_leave_one_out_by_hand():
    u = torch.tensor([[1.0], [2.0], [0.0], [-3.0]])
    # mean of all 0: loss 1, error 1. Without row i the means are -1/3, -2/3, 0, 1:
    # losses 16/9, 25/9, 1, 0 -> loss impacts -7/9, -16/9, 0, 1; errors 1, 1, 1, 0 -> 0, 0, 0, 1
    agg = fang_rejection(u, torch.zeros(1), squared(1.0), f=1, criterion="lfr")
    assert agg.scores.tolist() == pytest.approx([-7 / 9, -16 / 9, 0.0, 1.0])
    assert agg.flagged == [3]
    assert agg.update.tolist() == pytest.approx([1.0])  # mean of 1, 2, 0
    agg = fang_rejection(u, torch.zeros(1), squared(1.0), f=2, criterion="err")
    assert agg.scores.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert (agg.flagged, agg.update.tolist()) == ([0, 3], [1.0])  # ties go to the lower row
    # f = 1: LFR's {3} and ERR's {3}; the union needs n > 2f
    assert fang_rejection(u, torch.zeros(1), squared(1.0), f=1, criterion="union").flagged == [3]
    with pytest.raises(ValueError, match=r"\(union\) needs n > 2f updates; got n=4, f=2"):
        fang_rejection(u, torch.zeros(1), squared(1.0), f=2, criterion="union")


def test_non_finite_evaluation_counts_as_worst():
    def evaluate(w):
        return (float("nan"), 1.0) if float(w.abs().max()) > 100 else (float(w[0] ** 2), 0.0)

    u = torch.tensor([[0.1], [-0.1], [0.0], [1e30]])
    agg = fang_rejection(u, torch.zeros(1), evaluate, f=1, criterion="lfr")
    assert agg.flagged == [3] and agg.scores[3] == float("inf")


def test_rejects_the_updates_that_raise_the_validation_loss():
    # the paper's property: on a clean validation set, the models of attackers that pull the
    # global model away from the task raise the loss most and are removed (least squares)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(100, 10)), dtype=torch.float32)
    w_star = torch.tensor(rng.normal(size=10), dtype=torch.float32)
    y = x @ w_star

    def evaluate(w):
        residual = x @ w - y
        return float((residual**2).mean()), float((residual.abs() > 0.5).float().mean())

    honest = w_star + 0.05 * torch.tensor(rng.normal(size=(7, 10)), dtype=torch.float32)
    bad = -2.0 * honest[:3]
    u = torch.cat([bad, honest])
    for criterion in ("err", "lfr"):
        agg = fang_rejection(u, torch.zeros(10), evaluate, f=3, criterion=criterion)
        assert agg.flagged == [0, 1, 2], criterion
        assert torch.allclose(agg.update, honest.mean(0), atol=1e-6)


def test_strategy_needs_its_validation_set_and_bounds_f():
    u = torch.tensor([[1.0], [2.0], [0.0]])
    ctx = RoundContext(1, [0, 1, 2], torch.ones(3), torch.zeros(1), torch.Generator())
    with pytest.raises(RuntimeError, match="root_data"):
        FangRejection(f=1, device="cpu").aggregate_updates(u, ctx)
    strategy = FangRejection(
        f=2, criterion="union", device="cpu", root_data=(torch.zeros(1), torch.zeros(1))
    )
    with pytest.raises(TooFewClientsError, match="n=3, f=2"):
        strategy.aggregate_updates(u, ctx)
    with pytest.raises(ValueError, match="criterion must be one of err, lfr, union"):
        FangRejection(f=1, criterion="loss", device="cpu")


def test_server_side_evaluation_and_validation_set_wiring():
    cfg = from_dict(
        {
            "model": {"name": "logreg"},
            "strategy": {
                "name": "fang_rejection",
                "params": {"f": 1, "root_size": 30},
                "device": "cpu",
            },
        }
    )
    ds = experiment_dataset(cfg)
    model = build_model("logreg", ds.input_shape, ds.num_classes, seed=3)
    init = get_weights(model)
    layout = ParamLayout.of(init)
    flat = layout.flatten(init, torch.device("cpu"))
    x, y = ds.x_train[:40], ds.y_train[:40]
    loss, error = ServerSideTrainer(cfg, layout).evaluate(flat, x, y)
    set_weights(model, init)
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(float(cross_entropy(logits, y)), rel=1e-5)
    assert error == pytest.approx(float((logits.argmax(1) != y).float().mean()))
    strategy = build_strategy(cfg, None)
    assert strategy.root_data is not None and len(strategy.root_data[1]) == 30
