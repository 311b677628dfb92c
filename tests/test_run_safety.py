"""Run directories a user can trust: status, truncated metrics, resume state, clear errors."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from flsec_flower import load_results
from flsec_flower.app import cli
from flsec_flower.checkpoint import read_status
from flsec_flower.config import ConfigError, from_dict, load_config
from flsec_flower.results import RunRecorder, new_run_dir
from strategies import CenteredClipping, FoolsGold, NormClip

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def tiny_config(tmp_path: Path, **extra: object) -> dict:
    raw = {
        "name": "tiny",
        "rounds": 6,
        "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "digits", "num_clients": 4},
    }
    raw.update(extra)
    return raw


def write_yaml(path: Path, raw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def recorded_run(tmp_path: Path, rounds_done: int) -> Path:
    """A run directory as a run killed after ``rounds_done`` rounds leaves it."""
    cfg = from_dict(tiny_config(tmp_path))
    recorder = RunRecorder(new_run_dir(cfg), cfg, progress=False)
    for r in range(rounds_done + 1):
        recorder.record(r, {"accuracy": 0.1 * (r + 1), "loss": 2.0 - r})
    return recorder.run_dir


# ------------------------------------------------------------ metrics + status
def test_partial_last_line_is_dropped(tmp_path):
    run_dir = recorded_run(tmp_path, 2)
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 3, "accur')
    assert list(load_results(run_dir)["round"]) == [0, 1, 2]


def test_broken_line_in_the_middle_is_an_error(tmp_path):
    run_dir = recorded_run(tmp_path, 1)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", lines[1]]) + "\n")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_results(run_dir)


def test_status_follows_the_run(tmp_path):
    run_dir = recorded_run(tmp_path, 2)
    status = read_status(run_dir)
    assert (status["status"], status["rounds_completed"], status["rounds"]) == ("running", 2, 6)
    cfg = from_dict(tiny_config(tmp_path))
    recorder = RunRecorder(run_dir, cfg, progress=False, resume_round=2)
    for r in (3, 4, 5, 6):
        recorder.record(r, {"accuracy": 0.5, "loss": 1.0})
    status = read_status(run_dir)
    assert (status["status"], status["rounds_completed"]) == ("completed", 6)
    assert list(load_results(run_dir)["round"]) == [0, 1, 2, 3, 4, 5, 6]


def test_resume_drops_rounds_after_the_checkpoint(tmp_path):
    run_dir = recorded_run(tmp_path, 3)
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 4, "acc')
    cfg = from_dict(tiny_config(tmp_path))
    RunRecorder(run_dir, cfg, progress=False, resume_round=2)
    assert list(load_results(run_dir)["round"]) == [0, 1, 2]
    assert (run_dir / "metrics.jsonl").read_text().endswith("\n")


def test_checkpoint_written_after_each_round(tmp_path):
    cfg = from_dict(tiny_config(tmp_path))
    recorder = RunRecorder(new_run_dir(cfg), cfg, progress=False)
    counter = iter(range(100))
    recorder.checkpoint_state = lambda: {"value": torch.tensor(float(next(counter)))}
    recorder.record(0, {})
    assert not (recorder.run_dir / "checkpoint.pt").exists()  # round 0 changes nothing
    recorder.record(1, {})
    recorder.record(2, {})
    saved = torch.load(recorder.run_dir / "checkpoint.pt", weights_only=False)
    assert saved["round"] == 2 and saved["value"].item() == 1.0


# -------------------------------------------------------------- strategy state
def test_wrapped_centered_clipping_state_round_trips():
    kwargs = {"device": "cpu", "seed": 0}
    first = NormClip(CenteredClipping(tau=1.0, **kwargs), max_norm=5.0, **kwargs)
    first.global_params = torch.arange(3.0)
    first.inner.centre = torch.tensor([1.0, -2.0, 0.5])
    state = first.state_dict()
    first.inner.centre += 100.0  # later rounds do not change the saved state
    second = NormClip(CenteredClipping(tau=1.0, **kwargs), max_norm=5.0, **kwargs)
    second.load_state_dict(state)
    assert torch.equal(second.global_params, torch.arange(3.0))
    assert torch.equal(second.inner.centre, torch.tensor([1.0, -2.0, 0.5]))


def test_foolsgold_history_survives_a_resume():
    """Resumed FoolsGold weights a round exactly as the uninterrupted one."""
    from flsec_flower.aggregation import RoundContext

    def ctx(r):
        return RoundContext(
            server_round=r,
            partition_ids=[0, 1, 2],
            num_examples=torch.ones(3),
            global_params=torch.zeros(4),
            generator=torch.Generator().manual_seed(r),
        )

    rounds = [torch.randn(3, 4, generator=torch.Generator().manual_seed(r)) for r in range(3)]
    straight = FoolsGold(device="cpu")
    for r, u in enumerate(rounds[:2]):
        straight.aggregate_updates(u, ctx(r))
    resumed = FoolsGold(device="cpu")
    resumed.load_state_dict(straight.state_dict())
    expected = straight.aggregate_updates(rounds[2], ctx(2)).update
    assert torch.equal(resumed.aggregate_updates(rounds[2], ctx(2)).update, expected)
    fresh = FoolsGold(device="cpu").aggregate_updates(rounds[2], ctx(2)).update
    assert not torch.equal(fresh, expected)  # the history matters


# ------------------------------------------------------------------ CLI errors
def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"strategy": {"name": "krumm"}}, "strategy.name"),
        ({"attack": {"name": "nope", "num_malicious": 1}}, "attack.name"),
        ({"rounds": "six"}, "rounds"),
    ],
)
def test_config_errors_are_one_line_exit_2(tmp_path, capsys, extra, needle):
    cfg = write_yaml(tmp_path / "cfg.yaml", tiny_config(tmp_path, **extra))
    code, err = run_cli(capsys, "run", str(cfg), "-q")
    assert code == 2
    assert err.startswith("flsec: error:") and needle in err and "\n" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_yaml_that_is_not_a_mapping(tmp_path, capsys):
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- a\n- b\n")
    code, err = run_cli(capsys, "run", str(cfg))
    assert code == 2 and str(cfg) in err and "mapping" in err


def test_missing_dataset_folder(tmp_path, capsys):
    raw = tiny_config(tmp_path, data={"dataset": "mnist10k", "data_dir": str(tmp_path / "no")})
    code, err = run_cli(capsys, "run", str(write_yaml(tmp_path / "c.yaml", raw)))
    assert code == 2 and "mnist10k.npz" in err


def truncate(src: Path, dst: Path, size: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:size])


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist10k", "adult"])
def test_corrupt_dataset_file_is_named(tmp_path, capsys, dataset):
    root = tmp_path / "data"
    if dataset == "fashion_mnist":
        (root / "FashionMNIST" / "raw").mkdir(parents=True)
        for f in (SHARED / "FashionMNIST" / "raw").iterdir():
            shutil.copy(f, root / "FashionMNIST" / "raw" / f.name)
        bad = root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
        truncate(SHARED / "FashionMNIST" / "raw" / bad.name, bad, 3000)
    elif dataset == "mnist10k":
        bad = root / "mnist10k" / "mnist10k.npz"
        truncate(SHARED / "mnist10k" / "mnist10k.npz", bad, 50_000)
    else:
        bad = root / "adult" / "adult.data"
        truncate(SHARED / "adult" / "adult.data", bad, 100_000)
        shutil.copy(SHARED / "adult" / "adult.test", root / "adult" / "adult.test")
    raw = tiny_config(tmp_path, data={"dataset": dataset, "data_dir": str(root)})
    code, err = run_cli(capsys, "run", str(write_yaml(tmp_path / "c.yaml", raw)))
    assert code == 2 and str(bad) in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_output_dir_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    raw = tiny_config(tmp_path, output_dir=str(tmp_path / "file" / "runs"))
    code, err = run_cli(capsys, "run", str(write_yaml(tmp_path / "c.yaml", raw)))
    assert code == 2 and "output_dir" in err and "\n" not in err


# ---------------------------------------------------------------------- report
def test_report_on_an_interrupted_run(tmp_path, capsys):
    run_dir = recorded_run(tmp_path, 2)
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 3, "acc')
    RunRecorder(run_dir, from_dict(tiny_config(tmp_path)), progress=False, resume_round=2).mark(
        "interrupted", "stopped by SIGINT"
    )
    assert cli.main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "interrupted after round 2 of 6" in out
    assert f"flsec run --resume {run_dir}" in out
    rows = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("rounds "))
    assert rows["rounds"].strip() == "2"
    assert not (run_dir / "summary.csv").exists()


# ----------------------------------------------------------------------- paths
def test_relative_paths_resolve_against_the_yaml_folder(tmp_path, monkeypatch):
    cfg_file = write_yaml(
        tmp_path / "exp" / "cfg.yaml",
        {"output_dir": "out", "data": {"dataset": "digits", "data_dir": "../shared"}},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../exp/cfg.yaml")
    assert Path(cfg.output_dir) == cfg_file.parent.resolve() / "out"
    assert Path(cfg.data.data_dir).resolve() == (tmp_path / "shared").resolve()
    cfg = load_config(cfg_file, ["output_dir=mine", "data.data_dir=/abs/data"])
    assert Path(cfg.output_dir) == elsewhere.resolve() / "mine"
    assert cfg.data.data_dir == "/abs/data"


def test_min_fit_clients_is_checked():
    with pytest.raises(ConfigError, match="min_fit_clients"):
        from_dict({"data": {"num_clients": 4}, "clients_per_round": 3, "min_fit_clients": 4})
    assert from_dict({"data": {"num_clients": 5}}).min_results == 3
    assert from_dict({"data": {"num_clients": 5}, "min_fit_clients": 5}).min_results == 5


def test_resume_needs_a_run_directory(tmp_path, capsys):
    code, err = run_cli(capsys, "run", "--resume", str(tmp_path))
    assert code == 2 and "not a flsec run directory" in err
