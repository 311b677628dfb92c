"""Training regimes of the five papers: every expectation below is computed by hand."""

import math

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from torch import nn

from clients import HonestClient
from clients.attack import AttackClient
from flsec_flower.app.server_app import ServerSideTrainer, build_strategy
from flsec_flower.client_state import ClientState
from flsec_flower.config import ConfigError, TrainingConfig, attacker_training, from_dict
from flsec_flower.experiment import ClientEnv, experiment_dataset
from flsec_flower.models import build_model, get_weights
from flsec_flower.params import ParamLayout
from flsec_flower.training import lr_at, resolve_batch_size, train_local
from strategies.fedavg import FedAvg


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# ------------------------------------------------------------ lr schedules
def test_inv_sqrt_schedule_at_rounds_1_4_9():
    cfg = TrainingConfig(lr=0.001, lr_schedule="inv_sqrt")
    assert [lr_at(cfg, r) for r in (1, 4, 9)] == pytest.approx([0.001, 0.0005, 0.001 / 3])


def test_step_decay_at_the_milestones():
    # DiverseFL MNIST: 0.06, halved at 500 and 950.
    cfg = TrainingConfig(lr=0.06, lr_schedule="step", lr_milestones=[500, 950], lr_gamma=0.5)
    got = [lr_at(cfg, r) for r in (1, 499, 500, 949, 950, 1000)]
    assert got == pytest.approx([0.06, 0.06, 0.03, 0.03, 0.015, 0.015])


def test_linear_warmup_then_step():
    # DiverseFL CIFAR shape, scaled down: 0.05 -> 0.1 over 4 rounds, x0.4 at round 6.
    cfg = TrainingConfig(
        lr=0.1,
        lr_schedule="step",
        lr_milestones=[6],
        lr_gamma=0.4,
        lr_warmup_rounds=4,
        lr_warmup_start=0.05,
    )
    got = [lr_at(cfg, r) for r in range(1, 8)]
    assert got == pytest.approx([0.0625, 0.075, 0.0875, 0.1, 0.1, 0.04, 0.04])


def test_epoch_step_decay_inside_a_round():
    # Bagdasaryan et al.'s step_sched: lr 0.1 for epoch 1, then 0.05 for epoch 2.
    model = nn.Linear(1, 1)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    cfg = TrainingConfig(
        lr=0.1, local_epochs=2, batch_size=1, epoch_lr_milestones=[1], epoch_lr_gamma=0.5
    )
    train_local(
        model,
        torch.ones(1, 1),
        torch.ones(1, dtype=torch.long),
        cfg,
        torch.Generator().manual_seed(0),
    )
    w1 = 0.1 * 0.5  # -lr * (sigmoid(0) - 1)
    w2 = w1 - 0.05 * (sigmoid(2 * w1) - 1.0)
    assert model.weight.item() == pytest.approx(w2) and model.bias.item() == pytest.approx(w2)


# ------------------------------------------------- batch size and local steps
def test_batch_size_int_or_fraction():
    assert resolve_batch_size(32, 10) == 32
    assert resolve_batch_size(0.1, 3000) == 300
    assert resolve_batch_size(0.1, 25) == 3  # ceil(2.5)
    assert resolve_batch_size(1.0, 7) == 7
    assert resolve_batch_size(0.001, 5) == 1


def test_local_steps_take_exactly_k_batches_of_the_fraction():
    seen = []

    def spy(xb, yb):
        seen.append(len(yb))
        return xb, yb

    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    x, y = torch.randn(8, 2), torch.tensor([0, 1] * 4)
    cfg = TrainingConfig(local_steps=5, batch_size=0.25, local_epochs=7)
    train_local(model, x, y, cfg, torch.Generator().manual_seed(0), batch_transform=spy)
    assert seen == [2, 2, 2, 2, 2]  # 5 steps of ceil(0.25 * 8), across two passes
    seen.clear()
    epochs = TrainingConfig(local_epochs=2, batch_size=3)
    train_local(model, x, y, epochs, torch.Generator().manual_seed(0), batch_transform=spy)
    assert seen == [3, 3, 2, 3, 3, 2]


def test_batch_size_and_regime_config_keys():
    assert from_dict({"training": {"batch_size": 0.1}}).training.batch_size == 0.1
    assert from_dict({"training": {"batch_size": 64}}).training.batch_size == 64
    assert isinstance(from_dict({"training": {"batch_size": 64}}).training.batch_size, int)
    cases = [
        ({"training": {"batch_size": 1.5}}, "training.batch_size"),
        ({"training": {"batch_size": 0.0}}, "training.batch_size"),
        ({"training": {"batch_size": "all"}}, "training.batch_size"),
        ({"training": {"local_steps": 0}}, "training.local_steps"),
        ({"training": {"lr_milestones": [5, 3], "lr_schedule": "step"}}, "lr_milestones"),
        ({"training": {"lr_milestones": [5]}}, "lr_schedule"),
        ({"training": {"worker_momentum": True}}, "training.worker_momentum"),
        ({"training": {"send": "delta"}}, "training.send"),
        ({"training": {"gradient_noise_std": -1.0}}, "training.gradient_noise_std"),
        ({"server_momentum": 1.0}, "server_momentum"),
        ({"model": {"init": "ones"}}, "model.init"),
        ({"training": {"epoch_lr_milestones": [0]}}, "training.epoch_lr_milestones"),
        ({"training": {"gradient_noise_std": float("nan")}}, "training.gradient_noise_std"),
        ({"training": {"lr": float("inf")}}, "training.lr"),
    ]
    for raw, key in cases:
        with pytest.raises(ConfigError, match=key):
            from_dict(raw)


# ------------------------------------------------------------ attack.training
def test_attack_training_overrides_only_the_keys_it_sets():
    cfg = from_dict(
        {
            "training": {"lr": 0.1, "local_epochs": 2, "momentum": 0.9},
            "attack": {
                "name": "sign_flip",
                "num_malicious": 1,
                "training": {
                    "lr": 0.05,
                    "local_epochs": 6,
                    "lr_schedule": "step",
                    "lr_milestones": [2],
                    "lr_gamma": 0.1,
                },
            },
        }
    )
    t = attacker_training(cfg)
    assert (t.lr, t.local_epochs, t.momentum, t.lr_milestones) == (0.05, 6, 0.9, [2])
    assert lr_at(t, 2) == pytest.approx(0.005)
    assert cfg.training.lr == 0.1
    with pytest.raises(ConfigError, match=r"attack\.training\.epochs"):
        from_dict({"attack": {"name": "x", "num_malicious": 1, "training": {"epochs": 3}}})
    with pytest.raises(ConfigError, match=r"attack\.training\.lr"):
        from_dict({"attack": {"name": "x", "num_malicious": 1, "training": {"lr": -1}}})


# ---------------------------------------------------------- worker momentum
def two_param_env(training: dict, attack: dict | None = None) -> ClientEnv:
    """One example x = 1, label 1 on ``Linear(1, 1)``: gradient ``(sigmoid(w + b) - 1) [1, 1]``."""
    raw = {"training": training}
    if attack is not None:
        raw["attack"] = attack
    cfg = from_dict(raw)
    x, y = torch.ones(1, 1), torch.ones(1, dtype=torch.long)
    return ClientEnv(0, x, y, None, cfg, torch.device("cpu"))  # type: ignore[arg-type]


def fit(client: HonestClient, weights: list[np.ndarray], server_round: int) -> list[np.ndarray]:
    out, _, _ = client.fit(weights, {"server_round": server_round})
    return [np.asarray(a, dtype=np.float64) for a in out]


def test_worker_momentum_persists_across_fresh_clients():
    lr, beta = 0.1, 0.9
    env = two_param_env(
        {"lr": lr, "momentum": beta, "worker_momentum": True, "local_steps": 1, "batch_size": 1}
    )
    records = RecordDict()
    zero = [np.zeros((1, 1), np.float32), np.zeros(1, np.float32)]

    c1 = HonestClient(env, nn.Linear(1, 1))
    c1.state = ClientState(records, 0, 0)
    w1 = fit(c1, zero, 1)
    g1 = sigmoid(0.0) - 1.0  # -0.5
    m1 = g1
    assert w1[0].item() == pytest.approx(-lr * m1) and w1[1].item() == pytest.approx(-lr * m1)

    c2 = HonestClient(env, nn.Linear(1, 1))  # a fresh client object, the node's state
    c2.state = ClientState(records, 0, 0)
    w2 = fit(c2, [a.astype(np.float32) for a in w1], 2)
    g2 = sigmoid(2 * 0.05) - 1.0
    m2 = beta * m1 + g2  # -0.925...
    assert w2[0].item() == pytest.approx(0.05 - lr * m2, abs=1e-6)
    assert w2[1].item() == pytest.approx(0.05 - lr * m2, abs=1e-6)
    stored = ClientState(records, 0, 0).load("momentum", 3)
    assert [a.item() for a in stored] == pytest.approx([m2, m2], abs=1e-6)
    # Another cell of the same node starts from zero momentum.
    assert ClientState(records, 1, 0).load("momentum", 3) is None


def test_worker_momentum_needs_the_context_state():
    env = two_param_env({"momentum": 0.9, "worker_momentum": True, "local_steps": 1})
    client = HonestClient(env, nn.Linear(1, 1))
    with pytest.raises(RuntimeError, match=r"Context\.state"):
        fit(client, [np.zeros((1, 1), np.float32), np.zeros(1, np.float32)], 1)


def test_client_state_disk_mirror_restores_the_newest_earlier_round(tmp_path):
    state = ClientState(RecordDict(), 0, 3)
    state.save("momentum", [np.array([1.0])], 1, str(tmp_path))
    state.save("momentum", [np.array([2.0])], 2, str(tmp_path))
    state.save("momentum", [np.array([5.0])], 5, str(tmp_path))
    files = sorted(p.name for p in (tmp_path / "clients" / "3").iterdir())
    assert files == ["round_1.pt", "round_2.pt", "round_5.pt"]
    resumed = ClientState(RecordDict(), 0, 3)  # an empty Context.state after a restart
    assert resumed.load("momentum", 3, str(tmp_path))[0].item() == 2.0
    assert ClientState(RecordDict(), 0, 3).load("momentum", 1, str(tmp_path)) is None


# ------------------------------------------------- gradient messages and noise
def test_client_sends_the_gradient_with_send_gradient():
    env = two_param_env({"lr": 0.5, "local_steps": 1, "batch_size": 1, "send": "gradient"})
    g = fit(
        HonestClient(env, nn.Linear(1, 1)),
        [np.full((1, 1), 0.2, np.float32), np.full(1, 0.1, np.float32)],
        1,
    )
    expected = sigmoid(0.3) - 1.0  # d BCE / d(w, b) at x = 1, y = 1
    assert [a.item() for a in g] == pytest.approx([expected, expected], abs=1e-6)


def fit_res(vec, pid):
    params = ndarrays_to_parameters([np.asarray(vec, np.float32)])
    return None, FitRes(Status(Code.OK, ""), params, 10, {"partition_id": pid})


def test_server_applies_minus_lr_times_the_aggregate_gradient():
    init = ndarrays_to_parameters([np.array([1.0, 2.0], np.float32)])
    strategy = FedAvg(device="cpu", initial_parameters=init, server_lr=1.0)
    strategy.initialize_parameters(None)  # type: ignore[arg-type]
    strategy.gradient_lr = lambda r: 0.1 / r
    params, _ = strategy.aggregate_fit(2, [fit_res([2.0, 0.0], 0), fit_res([4.0, -2.0], 1)], [])
    # x - (0.1 / 2) * mean(g) = [1, 2] - 0.05 * [3, -1]
    assert parameters_to_ndarrays(params)[0] == pytest.approx([0.85, 2.05])
    # A gradient that overflows once scaled by -lr is rejected, not aggregated.
    strategy.gradient_lr = lambda r: 10.0
    huge = [fit_res([3e38, 0.0], 0), fit_res([1.0, 1.0], 1)]
    params, metrics = strategy.aggregate_fit(3, huge, [])
    assert metrics["num_rejected"] == 1
    assert parameters_to_ndarrays(params)[0] == pytest.approx([0.85 - 10.0, 2.05 - 10.0])


def test_server_momentum_two_rounds_by_hand():
    init = ndarrays_to_parameters([np.array([0.0, 0.0], np.float32)])
    strategy = FedAvg(device="cpu", initial_parameters=init, server_lr=0.5, server_momentum=0.9)
    strategy.initialize_parameters(None)  # type: ignore[arg-type]
    # Round 1: the clients' weights are x + u; mean update [1, 2]; m = [1, 2]; x = [0.5, 1].
    p1, _ = strategy.aggregate_fit(1, [fit_res([0.0, 2.0], 0), fit_res([2.0, 2.0], 1)], [])
    assert parameters_to_ndarrays(p1)[0] == pytest.approx([0.5, 1.0])
    # Round 2: mean update [-1, 0]; m = 0.9 [1, 2] + [-1, 0] = [-0.1, 1.8]; x += 0.5 m.
    p2, _ = strategy.aggregate_fit(2, [fit_res([-0.5, 1.0], 0), fit_res([-0.5, 1.0], 1)], [])
    assert parameters_to_ndarrays(p2)[0] == pytest.approx([0.45, 1.9])
    assert strategy.server_momentum_buffer.tolist() == pytest.approx([-0.1, 1.8])
    assert "server_momentum_buffer" in FedAvg.state_attributes


class Passive(AttackClient):
    """An attack that changes nothing: an attacker training honestly."""


def test_only_honest_clients_add_gradient_noise():
    sigma = 2.0
    training = {"lr": 0.1, "local_steps": 1, "gradient_noise_std": sigma, "send": "gradient"}
    attack = {"name": "sign_flip", "num_malicious": 1}
    env = two_param_env(training, attack)
    d = 20_000
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, d))
    honest = HonestClient(env, model)
    zero = [np.zeros((d, 1), np.float32), np.zeros(d, np.float32)]
    noisy = np.concatenate([a.ravel() for a in honest.fit(zero, {"server_round": 1})[0]])
    clean = np.concatenate(
        [a.ravel() for a in Passive(env, model).fit(zero, {"server_round": 1})[0]]
    )
    z = noisy - clean
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(sigma, rel=0.03)
    # Weights mode: the noise enters as w - lr * z.
    env_w = two_param_env({**training, "send": "weights"}, attack)
    w_noisy = HonestClient(env_w, model).fit(zero, {"server_round": 1})[0]
    w_clean = Passive(env_w, model).fit(zero, {"server_round": 1})[0]
    dz = np.concatenate([(a - b).ravel() for a, b in zip(w_noisy, w_clean, strict=True)])
    assert dz.std() == pytest.approx(0.1 * sigma, rel=0.03)


# ------------------------------------------------------- server-side training
def test_server_side_trainer_follows_the_honest_regime():
    cfg = from_dict(
        {
            "model": {"name": "logreg"},
            "training": {"batch_size": 0.1, "local_epochs": 2, "lr_schedule": "inv_sqrt"},
        }
    )
    ds = experiment_dataset(cfg)
    init = get_weights(build_model("logreg", ds.input_shape, ds.num_classes, seed=0))
    trainer = ServerSideTrainer(cfg, ParamLayout.of(init))
    assert trainer.steps_for(95) == 2 * 10  # 2 epochs of ceil(95 / ceil(9.5)) batches
    assert ServerSideTrainer(from_dict({"training": {"local_steps": 1}}), None).steps_for(95) == 1
    # One full-batch step: the update at round 4 is half the update at round 1 (lr / sqrt(4)).
    full = from_dict(
        {
            "model": {"name": "logreg"},
            "training": {"batch_size": 1.0, "local_steps": 1, "lr_schedule": "inv_sqrt"},
        }
    )
    trainer = ServerSideTrainer(full, ParamLayout.of(init))
    flat = ParamLayout.of(init).flatten(init, torch.device("cpu"))
    x, y = ds.x_train[:50], ds.y_train[:50]
    u1 = trainer(flat, x, y, server_round=1)
    u4 = trainer(flat, x, y, server_round=4)
    assert float(u1.abs().sum()) > 0
    assert torch.allclose(u4, 0.5 * u1, atol=1e-6)
    # A 10% batch of a 1000-example client is 100 examples: the whole 50-example sample.
    tenth = from_dict(
        {"model": {"name": "logreg"}, "training": {"batch_size": 0.1, "local_steps": 1}}
    )
    guide = ServerSideTrainer(tenth, ParamLayout.of(init))(flat, x, y, steps=1, reference_size=1000)
    assert torch.allclose(guide, u1, atol=1e-6)


def test_zero_init_is_the_initial_global_model():
    cfg = from_dict({"model": {"name": "logreg", "init": "zeros"}, "strategy": {"device": "cpu"}})
    strategy = build_strategy(cfg, None)
    arrays = parameters_to_ndarrays(strategy.initial_parameters)
    assert [a.shape for a in arrays] == [(10, 64), (10,)]
    assert all(not a.any() for a in arrays)


def test_adam_first_step_moves_each_parameter_by_lr():
    # Adam's first step is lr * m_hat / (sqrt(v_hat) + eps) = lr * g / (|g| + eps).
    model = nn.Linear(1, 1)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    cfg = TrainingConfig(optimizer="adam", lr=0.01, local_steps=1, batch_size=1)
    train_local(
        model,
        torch.ones(1, 1),
        torch.ones(1, dtype=torch.long),
        cfg,
        torch.Generator().manual_seed(0),
    )
    step = 0.01 * 0.5 / (0.5 + 1e-8)  # g = sigmoid(0) - 1 = -0.5
    assert model.weight.item() == pytest.approx(step) and model.bias.item() == pytest.approx(step)


def test_attackers_use_attack_training_only_in_their_active_rounds():
    env = two_param_env(
        {"lr": 0.1},
        {
            "name": "sign_flip",
            "malicious_ids": [0],
            "start_round": 2,
            "end_round": 2,
            "training": {"lr": 0.7, "local_epochs": 3},
        },
    )
    attacker = Passive(env, nn.Linear(1, 1))
    assert (attacker.training_config(1).lr, attacker.training_config(1).local_epochs) == (0.1, 1)
    assert (attacker.training_config(2).lr, attacker.training_config(2).local_epochs) == (0.7, 3)
    assert attacker.training_config(3).lr == 0.1
    assert HonestClient(env, nn.Linear(1, 1)).training_config(2).lr == 0.1
