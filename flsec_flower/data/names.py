"""Dataset and partition names, importable without torch (config validation, the CLI)."""

DATASETS: tuple[str, ...] = (
    "digits",
    "fashion_mnist",
    "mnist",
    "mnist10k",
    "cifar10",
    "cifar100",
    "adult",
    "synthetic",
)
"""Names accepted by :func:`flsec_flower.data.load_dataset` (its loaders' keys, in order)."""

PARTITION_KINDS: tuple[str, ...] = ("iid", "dirichlet", "shards", "sorted")
"""Names accepted by :func:`flsec_flower.data.partition_indices`."""

ATTACK_DATA_KINDS: tuple[str, ...] = ("own", "honest_union", "iid_sample", "class_owner")
"""Names accepted by ``attack.data.kind`` (see :func:`flsec_flower.data.layout.client_layout`)."""
