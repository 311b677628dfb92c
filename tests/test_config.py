import re

import pytest

from flsec_flower.app.cli import main
from flsec_flower.config import (
    ConfigError,
    expand_sweep,
    from_dict,
    from_run_config,
    load_config,
    parse_override,
)


def test_defaults_validate():
    cfg = from_dict({})
    assert cfg.data.dataset == "digits"
    assert cfg.sampled_clients == cfg.data.num_clients


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"data\.partiton: unknown key.*partition"):
        from_dict({"data": {"partiton": {"kind": "iid"}}})


def test_bad_enum_names_key_value_and_allowed():
    with pytest.raises(ConfigError) as err:
        from_dict({"data": {"partition": {"kind": "dirichlett"}}})
    msg = str(err.value)
    assert "data.partition.kind" in msg and "'dirichlett'" in msg and "'dirichlet'" in msg


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"rounds": 0}, "rounds"),
        ({"rounds": "ten"}, "rounds"),
        ({"training": {"lr": -1}}, "training.lr"),
        ({"training": {"optimizer": "rmsprop"}}, "training.optimizer"),
        ({"data": {"partition": {"alpha": 0}}}, "data.partition.alpha"),
        ({"clients_per_round": 11}, "clients_per_round"),
        ({"attack": {"name": "sign_flip", "num_malicious": -1}}, "attack.num_malicious"),
        ({"attack": {"name": "x", "malicious_ids": [12]}}, "attack.malicious_ids"),
        (
            {"attack": {"name": "x", "num_malicious": 1, "start_round": 5, "end_round": 2}},
            "attack.end_round",
        ),
        ({"model": {"name": "resnet101"}}, "model.name"),
        ({"evaluation": {"every": True}}, "evaluation.every"),
    ],
)
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ":"):
        from_dict(raw)


def test_overrides_parse_yaml_values():
    assert parse_override("data.partition.alpha=0.1") == ("data.partition.alpha", 0.1)
    assert parse_override("attack.malicious_ids=[0, 3]") == ("attack.malicious_ids", [0, 3])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("rounds")
    cfg = from_dict({}, [("data.partition.alpha", 0.1), ("strategy.params.f", 2)])
    assert cfg.data.partition.alpha == 0.1 and cfg.strategy.params == {"f": 2}


def test_sweep_expands_product():
    cfg = from_dict({"sweep": {"seed": [0, 1], "data.partition.alpha": [1.0, 0.5, 0.25]}})
    runs = expand_sweep(cfg)
    assert len(runs) == 6
    assert {(p["seed"], p["data.partition.alpha"]) for p, _ in runs} == {
        (s, a) for s in (0, 1) for a in (1.0, 0.5, 0.25)
    }
    for point, run_cfg in runs:
        assert run_cfg.seed == point["seed"] and not run_cfg.sweep
        assert run_cfg.data.partition.alpha == point["data.partition.alpha"]
    with pytest.raises(ConfigError, match=r"sweep\.rounds"):
        expand_sweep(from_dict({"sweep": {"rounds": 3}}))
    with pytest.raises(ConfigError, match=r"data\.partition\.alfa"):
        expand_sweep(from_dict({"sweep": {"data.partition.alfa": [1.0]}}))


def test_run_config_dotted_keys():
    cfg = from_run_config({"rounds": 3, "data.partition.kind": "sorted", "model.name": "logreg"})
    assert cfg.rounds == 3 and cfg.data.partition.kind == "sorted" and cfg.model.name == "logreg"


def test_load_config_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\nrounds: 3\ndata:\n  num_clients: 5\n")
    cfg = load_config(path, ["rounds=4"])
    assert cfg.rounds == 4 and cfg.data.num_clients == 5
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("rounds: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text("rounds: 2\ntraining:\n  lr: 0.1\n  epochs: 3\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "training.epochs: unknown key" in err[0] and "local_epochs" in err[0]
    assert "Traceback" not in capsys.readouterr().err


def test_cli_unknown_strategy_is_config_error(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("rounds: 1\nstrategy: {name: krumm}\noutput_dir: " + str(tmp_path) + "\n")
    assert main(["run", str(path)]) == 2
    assert "strategy.name: unknown name 'krumm'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        ("{name: sign_flip, num_malicious: 2, params: {scael: 2}}", "attack.params.scael: unknown"),
        (
            "{name: sign_flip, num_malicious: 2, params: {scale: -1}}",
            "attack.params: SignFlipClient",
        ),
        ("{name: signflip, num_malicious: 2}", "attack.name: unknown name 'signflip'"),
    ],
)
def test_cli_bad_attack_fails_before_ray(tmp_path, capsys, attack, expected):
    path = tmp_path / "a.yaml"
    path.write_text(f"rounds: 1\noutput_dir: {tmp_path}\nattack: {attack}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


def test_cli_bad_strategy_parameter_value(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(
        f"rounds: 1\noutput_dir: {tmp_path}\nstrategy: {{name: krum, params: {{f: -1}}}}\n"
    )
    assert main(["run", str(path)]) == 2
    assert "strategy.params: Krum rejected" in capsys.readouterr().err


def test_flwr_app_defaults_fit_flowers_default_simulated_federation():
    """A bare ``flwr run .`` gets Flower's default federation: its size must match the app's."""
    from pathlib import Path

    from flwr.supercore.constant import DEFAULT_SIMULATION_CONFIG

    from flsec_flower.config import from_run_config

    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    app_config = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"]

    def flat(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    cfg = from_run_config(dict(flat(app_config)))
    assert cfg.data.num_clients == DEFAULT_SIMULATION_CONFIG.num_supernodes
    assert cfg.sampled_clients <= cfg.data.num_clients
