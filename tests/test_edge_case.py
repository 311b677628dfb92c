"""Edge-case backdoor: the tail selection, the attacker's data, PGD's projection and its mod."""

import numpy as np
import pytest
import torch
from torch import nn

from clients.edge_case import (
    EDGE_CASE_NORM,
    EdgeCaseBackdoor,
    EdgeCaseClient,
    NormBallProjection,
    projected_steps,
    tail_examples,
)
from clients.model_replacement import update_norm
from clients.mods import attack_mod
from flsec_flower.app import registry
from flsec_flower.config import ConfigError
from flsec_flower.data import Dataset
from flsec_flower.models import get_weights
from tests.attack_env import toy_env
from tests.test_attack_mods import (
    GLOBAL,
    TRAINED,
    context,
    fake_handler,
    reply_arrays,
    task_identity,  # noqa: F401  (fixture)
    train_message,
)


def make_env(params=None, attack=None):
    y = torch.arange(60) % 3 * 2  # classes 0, 2, 4; 20 examples each
    x = torch.rand(60, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x[y == 2] *= 0.1
    x[[1, 4]] = 1.0  # two examples of class 2 far from the others
    ds = Dataset("toy", x, y, x[:6].clone(), y[:6].clone(), num_classes=6)
    params = {"source_class": 2, "target_class": 5, **(params or {})}
    return toy_env("edge_case", [0], params, attack, data=(x[:30], y[:30]), dataset=ds)


def test_tail_is_the_farthest_from_the_class_mean():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 4.0], [9.0, 9.0], [0.0, -1.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 0, 1, 0, 0])
    # class 0 mean (0.8, 0.6); distances 1.0, 0.63, 3.5, -, 1.79, 2.28
    assert tail_examples(x, y, 0, 0.6).tolist() == [2, 5, 4]
    assert tail_examples(x, y, 0, 0.01).tolist() == [2, 5]  # at least two
    with pytest.raises(ValueError, match="source_class"):
        tail_examples(x, y, 1, 0.5)


def test_split_holds_out_part_of_the_tail_and_reserves_all_of_it():
    env = make_env({"tail_fraction": 0.25})
    params = EdgeCaseBackdoor(source_class=2, target_class=5, tail_fraction=0.25)
    train, test = params.split(env.dataset, env.cfg.seed)
    assert len(train) == 3 and len(test) == 2  # ceil(0.25 * 20) = 5, round(0.4 * 5) held out
    tail = tail_examples(env.dataset.x_train, env.dataset.y_train, 2, 0.25)
    assert sorted(torch.cat([train, test]).tolist()) == sorted(tail.tolist())
    assert {1, 4} <= set(tail.tolist())
    reserved = EdgeCaseClient.reserved_indices(env.cfg, env.dataset)
    assert sorted(reserved.tolist()) == sorted(tail.tolist())
    shared = make_env({"exclusive": False})
    assert EdgeCaseClient.reserved_indices(shared.cfg, shared.dataset) is None


def test_attacker_trains_on_its_partition_plus_the_relabelled_edge_cases():
    env = make_env({"tail_fraction": 0.25}, {"start_round": 2})
    client = registry.build_client(env, True)
    x, y = client.training_data(1)
    assert torch.equal(x, env.x) and torch.equal(y, env.y)
    x, y = client.training_data(2)
    train, _ = EdgeCaseBackdoor(2, 5, 0.25).split(env.dataset, env.cfg.seed)
    assert torch.equal(x[30:], env.dataset.x_train[train]) and (y[30:] == 5).all()
    assert torch.equal(x[:30], env.x)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"target_class": 2}, "target_class"),
        ({"target_class": 6}, "target_class"),
        ({"tail_fraction": 0.0}, "tail_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"pgd_radius": -1.0}, "pgd_radius"),
    ],
)
def test_bad_parameters_name_the_key(params, name):
    with pytest.raises(ConfigError, match=name):
        registry.build_client(make_env(params), True)


def test_norm_ball_projection_by_hand():
    g = [np.zeros(2, np.float32), np.array([7], np.int64)]
    x = [np.array([3.0, 4.0], np.float32), np.array([9], np.int64)]
    out = NormBallProjection(1.0).forge(g, x, None)
    np.testing.assert_allclose(out[0], [3.0 / np.sqrt(29), 4.0 / np.sqrt(29)], rtol=1e-6)
    assert out[1].tolist() == [9] and out[0].dtype == np.float32  # integers are not updates
    assert NormBallProjection(10.0).forge(g, x, None) is x  # inside the ball: unchanged
    bad = NormBallProjection(1.0).forge(g, [np.array([np.nan, 1.0], np.float32), x[1]], None)
    assert bad[0].tolist() == [0.0, 0.0] and bad[1].tolist() == [7]


def test_projected_steps_keep_every_step_inside_the_ball():
    model = nn.Linear(4, 1)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    seen = []
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    with projected_steps(model, 0.5):
        model.register_forward_pre_hook(
            lambda m, a: seen.append(
                float((torch.cat([p.detach().flatten() for p in m.parameters()]) - start).norm())
            )
        )
        for _ in range(4):
            opt.zero_grad()
            model(torch.ones(3, 4)).sum().backward()
            opt.step()
    assert max(seen) <= 0.5 + 1e-6 and seen[-1] == pytest.approx(0.5, rel=1e-5)


def test_pgd_client_sends_an_update_within_the_radius():
    env = make_env({"pgd_radius": 0.05}, {"training": {"lr": 1.0}})
    client = registry.build_client(env, True)
    init = get_weights(client.model)
    sent, _, metrics = client.fit(init, {"server_round": 1})
    assert update_norm(init, sent) == pytest.approx(0.05, rel=1e-5)
    assert metrics[EDGE_CASE_NORM] == pytest.approx(0.05, rel=1e-5)


def test_server_metric_is_the_held_out_edge_cases_share_labelled_target():
    env = make_env({"tail_fraction": 0.25})
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].bias[5] = 1.0
    assert EdgeCaseClient.server_metrics(env.cfg, env.dataset)(model) == {"backdoor_accuracy": 1.0}


def test_norm_projection_mod_by_hand():
    reply = attack_mod("norm_projection", radius=0.5)(
        train_message({"server-round": 1}), context(), fake_handler()
    )
    out = reply_arrays(reply)
    u = np.concatenate([TRAINED[k] - GLOBAL[k] for k in ("w", "b")])  # norm sqrt(1.3125)
    got = np.concatenate([out[k] - GLOBAL[k] for k in ("w", "b")])
    np.testing.assert_allclose(got, u * 0.5 / np.sqrt(1.3125), rtol=1e-6)
