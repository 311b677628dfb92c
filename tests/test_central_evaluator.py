"""CentralEvaluator: the NHWC layout it uses for images on CPU changes no metric."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from flsec_flower.config import ExperimentConfig
from flsec_flower.data.dataset import Dataset
from flsec_flower.evaluation import CentralEvaluator
from flsec_flower.models import build_model, get_weights
from flsec_flower.training import evaluate


@pytest.fixture
def images() -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(300, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (300,), generator=gen)
    return Dataset("toy-images", x[:100], y[:100], x[100:], y[100:], num_classes=10)


def test_metrics_equal_those_of_the_plain_layout(images):
    model = build_model("lenet5", (1, 28, 28), 10, 3, "default")
    reference = copy.deepcopy(model)
    weights = get_weights(model)
    evaluator = CentralEvaluator(ExperimentConfig(), images, model, torch.device("cpu"))
    assert evaluator.model.state_dict()["0.0.weight"].is_contiguous(
        memory_format=torch.channels_last
    )
    loss, metrics = evaluator(0, weights, {})
    want = evaluate(reference, images.x_test, images.y_test, 10)
    assert metrics["accuracy"] == want.accuracy
    assert metrics["per_class_accuracy"] == pytest.approx(want.per_class_accuracy, nan_ok=True)
    assert loss == pytest.approx(want.loss, rel=1e-5)


def test_weights_read_back_from_the_evaluated_model_keep_their_order(images):
    model = build_model("lenet5", (1, 28, 28), 10, 3, "default")
    before = get_weights(model)
    CentralEvaluator(ExperimentConfig(), images, model, torch.device("cpu"))
    after = get_weights(model)
    for a, b in zip(before, after, strict=True):
        assert b.flags.c_contiguous
        np.testing.assert_array_equal(a, b)
