"""Every key that travels between a client and the server, in one place.

Strategies (``strategies/``), attacks (``clients/``) and the assembly layer
(``flsec_flower/app/``) read and write these keys on both ends of the wire;
naming them once keeps the two ends in agreement. The values are what Flower
carries; changing one changes the protocol.

Older public names stay as re-exports: ``clients.attack.ACTIVE_TAG`` and
``flsec_flower.aggregation.ATTACK_ACTIVE_METRIC`` are :data:`ATTACK_ACTIVE`,
``strategies.base.PARTITION_ID_QUERY`` is :data:`PARTITION_ID`,
``strategies.diversefl.SAMPLE_QUERY`` and ``clients.honest.DIVERSEFL_SAMPLE``
are :data:`DIVERSEFL_SAMPLE`, ``flsec_flower.client_state.CHECKPOINT_DIR_KEY``
is :data:`CHECKPOINT_DIR`.
"""

from __future__ import annotations

# ---- fit / evaluate config (server -> client)
SERVER_ROUND = "server_round"
"""Legacy-API config key of the round (set by the server app's ``on_fit_config_fn``)."""

MESSAGE_SERVER_ROUND = "server-round"
"""Message-API config key of the round (set by Flower's and our Message-API strategies)."""

CELL = "cell"
"""Config key naming the sweep cell (experiment) a multi-cell client answers as."""

CHECKPOINT_DIR = "checkpoint_dir"
"""Fit-config key of the run's checkpoint folder (set by the runner)."""

# ---- fit metrics (client -> server)
PARTITION_ID = "partition_id"
"""Fit-metrics key of the client's data partition; also the ``get_properties`` query
(:data:`QUERY` value) that asks for it and the key of the reply."""

ATTACK_ACTIVE = "attack_active"
"""Fit-metrics key an attacking client sets to ``True`` in the rounds it attacks."""

MALICIOUS = "malicious"
"""Fit-metrics key an attacking client sets to ``True`` in every round."""

TRAIN_LOSS = "train_loss"
"""Fit-metrics key of the client's mean local training loss."""

MODEL_REPLACEMENT_GAMMA = "gamma"
"""Fit-metrics key of the model-replacement attacker's boost factor in its active rounds."""

NUM_EXAMPLES = "num-examples"
"""Message-API metrics key of a reply's example count (Flower's ``weighted_by_key``)."""

# ---- Message-API record names (both ways)
ARRAYS = "arrays"
"""Message-API ``RecordDict`` key of the model's ``ArrayRecord``."""

CONFIG = "config"
"""Message-API ``RecordDict`` key of the ``ConfigRecord`` the server sends."""

# ---- get_properties queries (server -> client) and replies
QUERY = "query"
"""``get_properties`` config key naming what the server asks for."""

DIVERSEFL_SAMPLE = "diversefl_sample"
"""``get_properties`` query (and reply key) of DiverseFL's shared sample."""

SAMPLE_FRACTION = "fraction"
"""``get_properties`` config key of the fraction of its data DiverseFL asks a client to share."""
