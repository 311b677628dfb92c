"""DeepSight: hand-computed NEUPs, exceedings and DDifs, the paper's property, wiring."""

import math

import numpy as np
import pytest
import torch

from flsec_flower.aggregation import RoundContext
from flsec_flower.app.server_app import build_strategy
from flsec_flower.config import from_dict
from flsec_flower.experiment import experiment_dataset
from flsec_flower.models import build_model, get_weights
from flsec_flower.params import ParamLayout
from strategies import DeepSight
from strategies.deepsight import (
    ddifs,
    deepsight,
    ensemble_clusters,
    neups,
    output_neurons,
    threshold_exceedings,
)


def test_output_layer_and_neups_by_hand():
    f32 = np.dtype("float32")
    layout = ParamLayout(((4,), (2, 2), (2,)), (f32, f32, f32))
    neurons, biases = output_neurons(layout, 10)
    assert neurons.tolist() == [[4, 5, 8], [6, 7, 9]] and biases.tolist() == [8, 9]
    # no weight matrix: every entry of the last array is a neuron
    n1, b1 = output_neurons(ParamLayout(((3,), (2,)), (f32, f32)), 5)
    assert n1.tolist() == [[3], [4]] and b1.tolist() == [3, 4]
    u = torch.zeros(2, 10)
    u[0, [4, 5, 8]] = torch.tensor([1.0, -1.0, 1.0])  # energy 3
    u[0, [6, 7, 9]] = torch.tensor([0.0, 1.0, 0.0])  # energy 1 -> NEUPs 9/10, 1/10
    c = neups(u, neurons)
    assert c.tolist() == [pytest.approx([0.9, 0.1]), [0.0, 0.0]]  # a still output layer: 0
    # xi = max(0.01, 1/2) * 0.9 = 0.45: one exceeding; the still row none
    assert threshold_exceedings(c).tolist() == [1, 0]


def test_ddifs_are_exp_of_loss_differences():
    # evaluate: loss of label k is w[k] (a fake model whose loss per label is its weight)
    def evaluate(w, x, y):
        return float(w[int(y[0])]), 0.0

    u = torch.tensor([[0.0, math.log(2.0)], [-1.0, 0.0], [float("nan"), 0.0]])
    d = ddifs(evaluate, torch.zeros(2), u, torch.zeros(3, 1), 2)
    assert d[0].tolist() == pytest.approx([1.0, 0.5])  # loss up by log 2: ratio 1/2
    assert d[1].tolist() == pytest.approx([math.e, 1.0])
    assert d[2, 0] == pytest.approx(math.exp(-50.0))  # a NaN loss is infinitely bad, clipped


def test_ensemble_joins_what_most_clusterings_join():
    a = np.array([0, 0, 0, 1, 1])
    assert ensemble_clusters([a, a, np.array([0, 1, 2, 3, 4])]).tolist() == [0, 0, 0, 1, 1]


def test_suspicious_cluster_rejected_and_accepted_rows_clipped_by_hand():
    # one neuron per coordinate; rows 0-2 spread over 3 labels (3 exceedings), rows 3-4 on one
    # label (1 exceeding <= median 3 / 2): the cluster of 3 and 4 is all suspicious
    u = torch.tensor(
        [[1.0, 1.0, 1.0], [1.1, 0.9, 1.0], [0.9, 1.1, 1.0], [0.0, 0.0, 9.0], [0.0, 0.0, 8.0]]
    )
    neurons, biases = np.arange(3)[:, None], np.arange(3)
    agg = deepsight(u, neurons, biases, [])
    assert (agg.selected, agg.flagged) == ([0, 1, 2], [3, 4])
    assert agg.scores.tolist() == [3, 3, 3, 1, 1]
    # median norm over all five rows: |(1.1, 0.9, 1)| = sqrt(3.02); row 0 (sqrt 3) is not clipped
    s = math.sqrt(3.02)
    assert agg.update.tolist() == pytest.approx(((u[0] + u[1] + u[2]) / 3).tolist(), rel=1e-6)
    assert float(agg.update.norm()) <= s
    # tau = 1: a cluster is rejected only when all of it is suspicious; still rejected here
    assert deepsight(u, neurons, biases, [], tau=1.0).flagged == [3, 4]
    # every row suspicious (all still): nothing accepted, the model is kept
    still = deepsight(torch.zeros(3, 3), neurons, biases, [])
    assert still.selected == [] and still.update.tolist() == [0.0, 0.0, 0.0]


def digits_setup():
    cfg = from_dict(
        {
            "model": {"name": "logreg"},
            "training": {"lr": 0.5, "local_epochs": 2, "device": "cpu"},
            "strategy": {
                "name": "deepsight",
                "params": {"seeds": 1, "num_inputs": 16},
                "device": "cpu",
            },
        }
    )
    strategy = build_strategy(cfg, None)
    ds = experiment_dataset(cfg)
    init = get_weights(build_model("logreg", ds.input_shape, ds.num_classes, seed=0))
    strategy.layout = ParamLayout.of(init)
    return strategy, ds, strategy.layout.flatten(init)


def test_backdoor_models_trained_on_one_label_are_rejected():
    # the paper's property (Sections 4.2-4.3): a backdoor model trained on homogeneous data
    # (here: a trigger pixel, every label set to the target 0) has few threshold exceedings;
    # its cluster is rejected and the benign models, trained on all labels, are kept
    strategy, ds, g = digits_setup()
    trainer = strategy.local_trainer
    rows = []
    for i in range(7):
        x, y = ds.x_train[i * 60 : (i + 1) * 60], ds.y_train[i * 60 : (i + 1) * 60]
        rows.append(trainer(g, x, y))
    for i in range(3):
        x = ds.x_train[600 + i * 60 : 600 + (i + 1) * 60].clone()
        x.view(len(x), -1)[:, -1] = x.max()
        rows.append(trainer(g, x, torch.zeros(len(x), dtype=torch.long)))
    u = torch.stack(rows)
    ctx = RoundContext(1, list(range(10)), torch.ones(10), g, torch.Generator().manual_seed(0))
    ctx.local_trainer = trainer
    agg = strategy.aggregate_updates(u, ctx)
    assert agg.flagged == [7, 8, 9]
    assert agg.selected == list(range(7))
    assert strategy.root_data is not None and len(strategy.root_data[1]) == 1


def test_needs_its_hooks_and_checks_parameters():
    u = torch.ones(3, 2)
    ctx = RoundContext(1, [0, 1, 2], torch.ones(3), torch.zeros(2), torch.Generator())
    with pytest.raises(RuntimeError, match="root_data"):
        DeepSight(device="cpu").aggregate_updates(u, ctx)
    assert DeepSight(seeds=0, device="cpu").aggregate_updates(u, ctx).selected == [0, 1, 2]
    with pytest.raises(ValueError, match="tau"):
        DeepSight(tau=0.0, device="cpu")
    with pytest.raises(ValueError, match="seeds"):
        DeepSight(seeds=-1, device="cpu")
