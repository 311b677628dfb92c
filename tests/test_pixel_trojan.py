import math

import numpy as np
import pytest
import torch
from torch import nn

from clients.honest import HonestClient
from clients.pixel_trojan import PixelTrojanClient, backdoor_metric, stamp, trigger
from flsec_flower.app import registry
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import ClientEnv


def make_env(params=None, attack=None, shape=(1, 8, 8), n=40, exclude=True):
    raw = {
        "rounds": 10,
        "data": {"num_clients": 4},
        "model": {"name": "logreg"},
        "training": {"batch_size": 8, "device": "cpu"},
        "evaluation": {"backdoor_exclude_target": exclude},
        "attack": {
            "name": "pixel_trojan",
            "malicious_ids": [0],
            "params": params or {},
            **(attack or {}),
        },
    }
    cfg = from_dict(raw)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 10
    x = torch.rand(n, *shape, generator=g) * 0.5
    ds = Dataset("toy", x, y, x.clone(), y.clone(), num_classes=10)
    return ClientEnv(0, x, y, ds, cfg, torch.device("cpu"))


def changed(before, after):
    return {tuple(i) for i in torch.nonzero(before != after).tolist()}


def test_plus_is_ozdayi_fmnist_trigger_and_nothing_else():
    x = torch.rand(2, 1, 28, 28) * 0.5
    out = stamp(x, "plus")
    want = {(r, 5) for r in range(5, 10)} | {(7, c) for c in range(3, 8)}
    assert changed(x, out) == {(n, 0, r, c) for n in range(2) for r, c in want}
    assert (out[:, 0, 7, 3:8] == 1.0).all() and (out[:, 0, 5:10, 5] == 1.0).all()
    assert torch.equal(x, x.clone())  # input untouched
    assert out.shape == x.shape and out.dtype == x.dtype


def test_square_is_ozdayi_fmnist_square():
    x = torch.zeros(1, 1, 28, 28)
    out = stamp(x, "square")
    assert changed(x, out) == {(0, 0, r, c) for r in range(21, 26) for c in range(21, 26)}


def test_checkerboard_writes_the_3x3_corner_of_every_channel():
    x = torch.full((1, 3, 32, 32), 0.5)
    out = stamp(x, "checkerboard")
    corner = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    for ch in range(3):
        assert torch.equal(out[0, ch, -3:, -3:], corner)
    assert changed(x, out) == {
        (0, ch, 29 + i, 29 + j) for ch in range(3) for i in range(3) for j in range(3)
    }


def test_custom_mask_on_images_and_tabular_inputs():
    x = torch.zeros(2, 1, 6, 6)
    assert changed(x, stamp(x, "custom", mask=[[0, 1], [-1, -1]], value=0.7)) == {
        (n, 0, r, c) for n in range(2) for r, c in [(0, 1), (5, 5)]
    }
    t = torch.zeros(3, 10)
    out = stamp(t, "custom", mask=[[-2], [-1]])
    assert out[:, -2:].eq(1).all() and out[:, :-2].eq(0).all()


def test_offset_and_size_and_small_images():
    x = torch.zeros(1, 1, 8, 8)
    out = stamp(x, "plus", trigger_size=3, offset=[0, 0])
    assert changed(x, out) == {(0, 0, 0, 1), (0, 0, 1, 1), (0, 0, 2, 1), (0, 0, 1, 0), (0, 0, 1, 2)}
    where, _ = trigger((1, 8, 8), "plus")  # default moved up/left to fit
    assert int(where.sum()) == 9
    assert where[3:8, 5].all() and where[5, 3:8].all()


@pytest.mark.parametrize(
    ("kwargs", "shape", "name"),
    [
        ({"pattern": "star"}, (1, 8, 8), "pattern"),
        ({"offset": [5, 5]}, (1, 8, 8), "offset"),
        ({"offset": [1]}, (1, 8, 8), "offset"),
        ({"trigger_size": 9}, (1, 8, 8), "trigger_size"),
        ({"pattern": "custom"}, (1, 8, 8), "mask"),
        ({"mask": [[0, 0]]}, (1, 8, 8), "mask"),
        ({"pattern": "custom", "mask": [[8, 0]]}, (1, 8, 8), "mask"),
        ({"pattern": "plus"}, (10,), "pattern"),
    ],
)
def test_bad_trigger_parameters_name_the_parameter(kwargs, shape, name):
    with pytest.raises(ValueError, match=name):
        trigger(shape, **kwargs)


def test_poison_fraction_stamps_floor_f_of_the_source_class():
    env = make_env({"source_class": 3, "target_class": 7, "poison_fraction": 0.5})
    client = registry.build_client(env, True)
    x, y = client.training_data(1)
    poisoned = torch.nonzero((x != env.x).flatten(1).any(1)).flatten()
    assert len(poisoned) == 2  # floor(0.5 * 4 samples of class 3)
    assert (env.y[poisoned] == 3).all() and (y[poisoned] == 7).all()
    assert torch.equal(x[poisoned], stamp(env.x[poisoned], "plus"))
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[poisoned] = False
    assert torch.equal(y[rest], env.y[rest]) and torch.equal(x[rest], env.x[rest])
    x2, _ = client.training_data(2)
    assert torch.equal(x, x2)  # the same poisoned subset every round


def test_default_fraction_is_half_of_all_samples():
    env = make_env()
    x, y = PixelTrojanClient(env).training_data(1)
    assert int((x != env.x).flatten(1).any(1).sum()) == 20
    assert int((y == 7).sum()) >= 20


def test_schedule_is_respected():
    env = make_env(attack={"start_round": 2, "end_round": 3})
    client = PixelTrojanClient(env)
    for r, active in [(1, False), (2, True), (3, True), (4, False)]:
        x, _ = client.training_data(r)
        assert (not torch.equal(x, env.x)) is active


def test_items_per_batch_replaces_the_first_c_items():
    env = make_env({"items_per_batch": 3, "source_class": 2})
    client = registry.build_client(env, True)
    x, y = client.training_data(1)
    assert x is env.x and y is env.y
    mix = client.batch_transform(1)
    xb, yb = env.x[10:18].clone(), env.y[10:18].clone()
    mx, my = mix(xb, yb)
    assert torch.equal(mx[3:], xb[3:]) and torch.equal(my[3:], yb[3:])
    assert (my[:3] == 7).all()
    pool = stamp(env.x[env.y == 2], "plus")
    for item in mx[:3]:
        assert any(torch.equal(item, p) for p in pool)
    assert client.batch_transform(0) is None


def test_fit_with_items_per_batch_differs_from_honest():
    env = make_env({"items_per_batch": 4})
    init = HonestClient(env).get_parameters({})
    bad, _, _ = PixelTrojanClient(env, items_per_batch=4).fit(init, {"server_round": 1})
    good, _, _ = HonestClient(env).fit(init, {"server_round": 1})
    assert all(np.isfinite(a).all() for a in bad)
    assert not np.array_equal(bad[0], good[0])


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"poison_fraction": 0.5, "items_per_batch": 2}, "poison_fraction"),
        ({"poison_fraction": 1.5}, "poison_fraction"),
        ({"items_per_batch": 9}, "items_per_batch"),
        ({"target_class": 10}, "target_class"),
        ({"source_class": -1}, "source_class"),
        ({"offset": [7, 7]}, "offset"),
    ],
)
def test_bad_client_parameters_are_config_errors(params, name):
    with pytest.raises(ConfigError, match=rf"(\}}: |params\.){name}\b"):
        registry.build_client(make_env(params), True)


class Constant(nn.Module):
    def __init__(self, label, classes=10):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.label, self.classes = label, classes

    def forward(self, x):
        return (
            nn.functional.one_hot(torch.full((len(x),), self.label), self.classes).float() + self.w
        )


class TrueLabel(nn.Module):
    """Predicts the label written as label / 10 in pixel (0, 0, 0), which no trigger touches."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        label = torch.round(x[:, 0, 0, 0] * 10).long()
        return nn.functional.one_hot(label, 10).float() + self.w


def test_backdoor_metric_is_one_for_a_model_that_always_predicts_the_target():
    env = make_env()
    metric = PixelTrojanClient.server_metrics(env.cfg, env.dataset)
    assert metric(Constant(7)) == {"backdoor_accuracy": 1.0}
    assert metric(Constant(3)) == {"backdoor_accuracy": 0.0}


@pytest.mark.parametrize(("exclude", "want"), [(True, 0.0), (False, 0.1)])
def test_backdoor_metric_excludes_target_labelled_images(exclude, want):
    env = make_env(exclude=exclude)
    x = env.dataset.x_test.clone()
    x[:, 0, 0, 0] = env.dataset.y_test.float() / 10
    ds = Dataset("toy", env.x, env.y, x, env.dataset.y_test, num_classes=10)
    metric = PixelTrojanClient.server_metrics(env.cfg, ds)
    assert metric(TrueLabel())["backdoor_accuracy"] == pytest.approx(want)


def test_backdoor_metric_restricted_to_the_source_class():
    env = make_env({"source_class": 4, "target_class": 4 + 1})
    x = env.dataset.x_test.clone()
    x[:, 0, 0, 0] = env.dataset.y_test.float() / 10
    ds = Dataset("toy", env.x, env.y, x, env.dataset.y_test, num_classes=10)
    metric = PixelTrojanClient.server_metrics(env.cfg, ds)
    assert metric(TrueLabel())["backdoor_accuracy"] == 0.0  # only class-4 images, all predicted 4
    assert metric(Constant(5))["backdoor_accuracy"] == 1.0
    assert math.isnan(backdoor_metric(torch.zeros(0, 1, 8, 8), 1)(Constant(1))["backdoor_accuracy"])
