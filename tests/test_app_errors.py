"""``flwr run`` with a bad run config: the run fails with one line naming the key."""

import io
import logging

import pytest
from flwr.common import Context, RecordDict

from flsec_flower.app.errors import OneLineUserErrors
from flsec_flower.app.server_app import _server_fn
from flsec_flower.config import ConfigError


def _logged(err: BaseException) -> str:
    logger = logging.getLogger(f"test_app_errors.{id(err)}")
    logger.propagate = False
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    logger.addFilter(OneLineUserErrors())
    try:
        raise err
    except BaseException as raised:
        logger.error("%s raised an exception", "Simulation", exc_info=raised)
    return stream.getvalue()


def test_a_config_error_is_logged_as_one_line_without_traceback():
    out = _logged(ConfigError("strategy.name: unknown name 'nope'; allowed: fedavg, krum"))
    assert out == "flsec: error: strategy.name: unknown name 'nope'; allowed: fedavg, krum\n"


def test_a_missing_data_file_is_one_line_too():
    out = _logged(FileNotFoundError("/data/adult.data does not exist"))
    assert out == "flsec: error: /data/adult.data does not exist\n"


def test_other_exceptions_keep_their_traceback():
    out = _logged(RuntimeError("a bug"))
    assert out.startswith("Simulation raised an exception\nTraceback")
    assert "RuntimeError: a bug" in out


def _context(run_config: dict) -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"strategy.name": "nope"}, "strategy.name: unknown name 'nope'; allowed: auror, bulyan, "),
        ({"data.partition.kind": "zipf"}, "data.partition.kind: got 'zipf', allowed: 'iid'"),
        ({"rounds": "ten"}, "rounds: "),
    ],
)
def test_server_app_rejects_a_bad_run_config_before_any_run_directory(tmp_path, override, message):
    config = {"output_dir": str(tmp_path), "data.dataset": "digits", **override}
    with pytest.raises(ConfigError) as err:
        _server_fn(_context(config))
    assert str(err.value).startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_server_app_builds_a_valid_run_config(tmp_path):
    components = _server_fn(_context({"output_dir": str(tmp_path), "rounds": 2}))
    assert components.config.num_rounds == 2
    (run_dir,) = list(tmp_path.iterdir())
    assert (run_dir / "config.yaml").is_file()
