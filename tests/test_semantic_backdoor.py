import pytest
import torch
from torch import nn

from clients.semantic_backdoor import SemanticBackdoorClient, select_backdoor_images
from flsec_flower.app import registry
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import ClientEnv


def make_env(params=None, seed=0, n=60, exclude=True):
    raw = {
        "seed": seed,
        "rounds": 10,
        "data": {"num_clients": 4},
        "model": {"name": "logreg"},
        "training": {"batch_size": 32, "device": "cpu"},
        "evaluation": {"backdoor_exclude_target": exclude},
        "attack": {"name": "semantic_backdoor", "malicious_ids": [0], "params": params or {}},
    }
    cfg = from_dict(raw)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 5
    x = torch.rand(n, 1, 4, 4, generator=g)
    ds = Dataset("toy", x, y, x[:10].clone(), y[:10].clone(), num_classes=5)
    return ClientEnv(0, x[:20], y[:20], ds, cfg, torch.device("cpu"))


def test_selection_is_deterministic_disjoint_and_from_the_source_class():
    y = torch.arange(100) % 5
    train, test = select_backdoor_images(y, 3, source_class=1, count=12, test_fraction=0.4)
    again = select_backdoor_images(y, 3, source_class=1, count=12, test_fraction=0.4)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert (len(train), len(test)) == (7, 5)
    assert not set(train.tolist()) & set(test.tolist())
    assert (y[train] == 1).all() and (y[test] == 1).all()
    other = select_backdoor_images(y, 4, source_class=1, count=12, test_fraction=0.4)
    assert set(other[0].tolist()) | set(other[1].tolist()) != set(train.tolist()) | set(
        test.tolist()
    )


def test_listed_ids_and_test_ids():
    y = torch.zeros(50, dtype=torch.long)
    train, test = select_backdoor_images(y, 0, ids=[3, 4, 5], test_ids=[9])
    assert train.tolist() == [3, 4, 5] and test.tolist() == [9]
    train, test = select_backdoor_images(y, 0, ids=[3, 4, 5, 6], test_fraction=0.5)
    assert sorted(train.tolist() + test.tolist()) == [3, 4, 5, 6] and len(test) == 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"source_class": 1, "count": 30}, "count"),
        ({"ids": [0, 100]}, "ids"),
        ({"ids": [1], "test_fraction": 0.5}, "ids"),
        ({"ids": [1, 2], "test_ids": [-1]}, "test_ids"),
        ({"source_class": 1, "test_fraction": 1.0}, "test_fraction"),
        ({"source_class": None}, "source_class"),
    ],
)
def test_selection_errors_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        select_backdoor_images(torch.arange(100) % 5, 0, **kwargs)


def test_batches_get_c_noisy_backdoor_images_labelled_target():
    env = make_env({"source_class": 1, "count": 6, "items_per_batch": 3, "noise_sigma": 0.0})
    client = registry.build_client(env, True)
    train_ids, test_ids = select_backdoor_images(
        env.dataset.y_train, 0, source_class=1, count=6, test_fraction=0.4
    )
    mix = client.batch_transform(1)
    xb, yb = env.x[:8].clone(), env.y[:8].clone()
    mx, my = mix(xb, yb)
    assert torch.equal(mx[3:], xb[3:]) and torch.equal(my[3:], yb[3:])
    assert (my[:3] == 2).all()
    pool = env.dataset.x_train[train_ids]
    held_out = env.dataset.x_train[test_ids]
    for item in mx[:3]:
        assert any(torch.equal(item, p) for p in pool)
        assert not any(torch.equal(item, p) for p in held_out)


def test_noise_has_the_given_sigma():
    env = make_env({"items_per_batch": 8, "noise_sigma": 0.5})
    client = registry.build_client(env, True)
    mx, _ = client.batch_transform(1)(env.x[:8], env.y[:8])
    pool = client.backdoor.images
    residual = torch.stack([min((m - p for p in pool), key=lambda d: d.abs().sum()) for m in mx])
    assert 0.35 < float(residual.std()) < 0.65


def test_without_batch_mixing_the_images_are_added_once():
    env = make_env({"items_per_batch": None, "count": 10})
    client = registry.build_client(env, True)
    x, y = client.training_data(1)
    assert len(x) == 20 + 6 and torch.equal(x[:20], env.x) and (y[20:] == 2).all()
    assert client.training_data(1)[0].shape == x.shape
    inactive = make_env({"items_per_batch": None})
    inactive.cfg.attack.start_round = 5
    assert registry.build_client(inactive, True).training_data(1)[0] is inactive.x


class Constant(nn.Module):
    def __init__(self, label):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.label = label

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.label), 5).float() + self.w


def test_server_metric_on_the_held_out_images():
    env = make_env({"count": 10})
    metric = SemanticBackdoorClient.server_metrics(env.cfg, env.dataset)
    assert metric(Constant(2)) == {"backdoor_accuracy": 1.0}
    assert metric(Constant(1)) == {"backdoor_accuracy": 0.0}


class Lookup(nn.Module):
    """Predicts the training label of the training image equal to the input."""

    def __init__(self, x, y):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.x, self.y = x.flatten(1), y

    def forward(self, x):
        hit = (x.flatten(1)[:, None, :] == self.x[None]).all(-1).float().argmax(1)
        return nn.functional.one_hot(self.y[hit], 5).float() + self.w


@pytest.mark.parametrize(("exclude", "want"), [(True, 0.0), (False, 0.5)])
def test_server_metric_exclusion_with_listed_images(exclude, want):
    # held out: image 1 (class 1) and image 2 (class 2, the target)
    env = make_env({"ids": [5, 6], "test_ids": [1, 2]}, exclude=exclude)
    metric = SemanticBackdoorClient.server_metrics(env.cfg, env.dataset)
    assert metric(Constant(2))["backdoor_accuracy"] == 1.0
    model = Lookup(env.dataset.x_train, env.dataset.y_train)
    assert metric(model)["backdoor_accuracy"] == want


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"target_class": 1}, "source_class"),
        ({"target_class": 5}, "target_class"),
        ({"items_per_batch": 0}, "items_per_batch"),
        ({"noise_sigma": -1.0}, "noise_sigma"),
        ({"count": 1000}, "count"),
    ],
)
def test_bad_parameters_are_config_errors(params, name):
    with pytest.raises(ConfigError, match=rf"(\}}: |params\.){name}\b"):
        registry.build_client(make_env(params), True)
