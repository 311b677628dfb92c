"""The wire keys: distinct strings, and the older public names are the same keys."""

from clients.attack import ACTIVE_TAG
from clients.honest import DIVERSEFL_SAMPLE
from clients.schedule import ROUND_KEYS
from flsec_flower import wire
from flsec_flower.aggregation import ATTACK_ACTIVE_METRIC
from flsec_flower.client_state import CHECKPOINT_DIR_KEY
from strategies.base import PARTITION_ID_QUERY
from strategies.diversefl import SAMPLE_QUERY


def _keys() -> dict[str, object]:
    return {name: value for name, value in vars(wire).items() if name.isupper()}


def test_wire_keys_are_distinct_non_empty_strings():
    keys = _keys()
    assert len(keys) >= 14
    assert all(isinstance(v, str) and v for v in keys.values())
    assert len(set(keys.values())) == len(keys)


def test_older_public_names_are_the_wire_keys():
    assert ACTIVE_TAG == ATTACK_ACTIVE_METRIC == wire.ATTACK_ACTIVE == "attack_active"
    assert PARTITION_ID_QUERY == wire.PARTITION_ID == "partition_id"
    assert SAMPLE_QUERY == DIVERSEFL_SAMPLE == wire.DIVERSEFL_SAMPLE == "diversefl_sample"
    assert CHECKPOINT_DIR_KEY == wire.CHECKPOINT_DIR == "checkpoint_dir"
    assert ROUND_KEYS == ("server_round", "server-round")
