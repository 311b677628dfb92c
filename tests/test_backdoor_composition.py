"""Backdoor attacks composed of parts (issue 11): data, training, update transform."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from clients.attack import compose_params
from clients.backdoor import BackdoorClient, PoisonTraining
from clients.model_replacement import (
    ModelReplacementClient,
    Replacement,
    SemanticModelReplacementClient,
)
from clients.naive_poisoning import NaivePoisoningClient
from clients.pixel_trojan import PixelBackdoor, PixelTrojanClient
from clients.poisoned_data import PoisonedDataset
from clients.semantic_backdoor import SemanticBackdoor, SemanticBackdoorParams
from flsec_flower.config import ExperimentConfig


def fields(cls):
    return [(f.name, f.default) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize(
    ("client", "parts"),
    [
        (PixelTrojanClient, [PixelBackdoor]),
        (NaivePoisoningClient, [PoisonTraining, PixelBackdoor]),
        (ModelReplacementClient, [Replacement, PoisonTraining, PixelBackdoor]),
        (SemanticModelReplacementClient, [Replacement, PoisonTraining, SemanticBackdoorParams]),
    ],
)
def test_parameters_are_the_parts_fields_declared_once(client, parts):
    assert fields(client.params_type) == [f for part in parts for f in fields(part)]
    assert client.part_types() == tuple(parts)


def test_semantic_images_as_a_dataset_wrapper():
    base = [(torch.zeros(2), 0), (torch.ones(2), 1)]
    images = torch.full((2, 2), 7.0)
    data = PoisonedDataset(base, SemanticBackdoor(images, target_class=4))
    assert len(data) == 4
    assert [int(y) for _, y in data] == [0, 1, 4, 4]
    assert torch.equal(data[3][0], images[1])


def test_poison_training_defaults_and_checks():
    cfg = ExperimentConfig()
    assert PoisonTraining().config(cfg).lr == cfg.training.lr
    with pytest.raises(ValueError, match="poison_epochs: got 0"):
        PoisonTraining(poison_epochs=0)


def test_replacement_resolves_the_default_boost_once():
    cfg = ExperimentConfig(server_lr=0.5, clients_per_round=4)
    resolved = Replacement(split=False).for_run(cfg)
    assert resolved.gamma == 8.0
    g, x = [np.zeros(2)], [np.array([1.0, -1.0])]
    assert resolved.forge(g, x, None)[0].tolist() == [8.0, -8.0]
    scale = Replacement(mode="train_and_scale", norm_bound=1.0).for_run(cfg)
    assert scale.boost(g, x) == pytest.approx(2**-0.5)


def test_a_new_backdoor_is_a_composition():
    class Boosted(BackdoorClient):
        update_type = Replacement
        backdoor_type = PixelBackdoor

    names = [f.name for f in dataclasses.fields(Boosted.params_type)]
    assert names[:6] == [f.name for f in dataclasses.fields(Replacement)]
    assert "poison_lr" not in names
    assert compose_params("P", (PoisonTraining,))().poison_lr is None
