"""The papers' data layouts: hand-computed splits, attacker data, exclusive images."""

import numpy as np
import pytest

import flsec_flower.app.registry  # noqa: F401  (installs the attacks' reserved-data lookup)
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.data import client_layout, load_dataset
from flsec_flower.experiment import client_indices, malicious_ids


def _sorted_labels(per_class: int = 231, seed: int = 0) -> np.ndarray:
    """10 classes of ``per_class`` examples each, shuffled (2310 examples by default)."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(10), per_class))


# 2310 = 23 * 100 + 10: the first 10 clients hold 101 examples, the other 13 hold 100.
SIZES_23 = [101] * 10 + [100] * 13


def _start(k: int) -> int:
    return 101 * k if k < 10 else 1010 + 100 * (k - 10)


def _check_sorted_23(y: np.ndarray, parts: list[np.ndarray]) -> None:
    assert [len(p) for p in parts] == SIZES_23
    for k, part in enumerate(parts):
        # positions _start(k) .. _start(k) + size - 1 of the label-sorted set; class c
        # occupies positions 231c .. 231c + 230
        first, last = _start(k), _start(k) + SIZES_23[k] - 1
        assert sorted(y[part].tolist()) == [p // 231 for p in range(first, last + 1)]
    # e.g. client 2 holds positions 202..302: 29 zeros then 72 ones
    assert np.bincount(y[parts[2]], minlength=10).tolist()[:3] == [29, 72, 0]
    assert set(y[parts[22]].tolist()) == {9}


def test_diversefl_sorted_split_among_all_23_clients_attackers_keep_their_part():
    y = _sorted_labels()
    parts = client_layout(y, 23, {0, 5, 9, 14, 20}, "sorted", attack_kind="own")
    _check_sorted_23(y, parts)


def test_he_sorted_split_among_23_good_workers_attackers_see_all_good_data():
    y = _sorted_labels()
    bad = {3, 17}
    parts = client_layout(y, 25, bad, "sorted", honest_only=True, attack_kind="honest_union")
    good = [p for i, p in enumerate(parts) if i not in bad]
    _check_sorted_23(y, good)
    for i in bad:
        assert parts[i].tolist() == list(range(2310))


def test_honest_only_with_own_attacker_data_is_a_config_error():
    raw = {
        "data": {"num_clients": 5, "partition": {"kind": "sorted", "honest_only": True}},
        "attack": {"name": "sign_flip", "num_malicious": 1},
    }
    with pytest.raises(ConfigError, match=r"attack\.data\.kind"):
        from_dict(raw)


def test_iid_sample_has_its_size_and_ignores_the_honest_split():
    y = np.random.default_rng(1).integers(0, 10, 2000)
    layouts = [
        client_layout(
            y, 10, {4}, kind, honest_only=True, attack_kind="iid_sample", sample_size=1000
        )
        for kind in ("sorted", "iid", "dirichlet")
    ]
    sample = layouts[0][4]
    assert len(sample) == 1000 and len(np.unique(sample)) == 1000
    for parts in layouts[1:]:
        assert parts[4].tolist() == sample.tolist()
    # the honest clients split the whole set among themselves: the sample is not
    # carved out of it (documented: independent, so it overlaps honest data)
    honest = np.concatenate([p for i, p in enumerate(layouts[0]) if i != 4])
    assert sorted(honest.tolist()) == list(range(2000))
    assert len(np.intersect1d(sample, honest)) == 1000


def test_iid_sample_without_size_is_a_config_error():
    raw = {"attack": {"name": "sign_flip", "num_malicious": 1, "data": {"kind": "iid_sample"}}}
    with pytest.raises(ConfigError, match=r"attack\.data\.size"):
        from_dict(raw)


def test_mimic2_first_half_of_good_workers_share_one_dataset():
    y = np.repeat(np.arange(5), 2)  # 10 examples, sorted split of 2 each over 5 clients
    parts = client_layout(
        y, 6, {5}, "sorted", honest_only=True, mimic2=True, attack_kind="honest_union"
    )
    # 5 honest clients: floor(5/2) = 2 twins (0 and 1) hold the union of their parts
    assert [p.tolist() for p in parts[:5]] == [[0, 1, 2, 3], [0, 1, 2, 3], [4, 5], [6, 7], [8, 9]]
    assert parts[5].tolist() == list(range(10))


def test_class_owner_attacker_holds_the_class_honest_clients_do_not():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    parts = client_layout(y, 4, {1}, "sorted", attack_kind="class_owner", classes=[3])
    # examples 0..5 split into 4 sorted parts of 2, 2, 1, 1; the attacker adds class 3
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3, 6, 7], [4], [5]]


def test_class_owner_classes_split_among_several_attackers():
    y = np.array([0, 0, 0, 0, 3, 3, 3])
    parts = client_layout(
        y, 4, {0, 3}, "sorted", honest_only=True, attack_kind="class_owner", classes=[3]
    )
    assert [p.tolist() for p in parts] == [[4, 5], [0, 1], [2, 3], [6]]


def test_semantic_backdoor_images_are_absent_from_every_honest_partition():
    raw = {
        "seed": 3,
        "data": {"dataset": "digits", "num_clients": 6, "partition": {"kind": "iid"}},
        "attack": {
            "name": "semantic_backdoor",
            "num_malicious": 1,
            "params": {"source_class": 1, "target_class": 7, "count": 12},
        },
    }
    cfg = from_dict(raw)
    ds = load_dataset("digits", seed=3)
    reserved = _reserved_ids(cfg, ds)
    assert len(reserved) == 12
    parts = client_indices(cfg, ds)
    for pid, part in enumerate(parts):
        if pid not in malicious_ids(cfg):
            assert not np.isin(reserved, part).any()
    covered = np.concatenate(parts)
    assert len(covered) == len(ds.y_train) - 12
    shared = from_dict(raw, [("attack.params.exclusive", False)])
    assert len(np.concatenate(client_indices(shared, ds))) == len(ds.y_train)


def _reserved_ids(cfg, ds) -> np.ndarray:
    from clients.semantic_backdoor import select_backdoor_images

    train, test = select_backdoor_images(ds.y_train, cfg.seed, source_class=1, count=12)
    return np.concatenate([train.numpy(), test.numpy()])


def test_num_malicious_zero_is_a_clean_baseline():
    cfg = from_dict({"attack": {"name": "sign_flip", "num_malicious": 0}})
    assert malicious_ids(cfg) == frozenset()
