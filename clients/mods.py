"""Attacks as Flower client mods: any Message-API ClientApp becomes an attacker.

A mod wraps the ClientApp's train handler (Flower's ``Mod``:
``mod(msg, context, call_next) -> Message``, like Flower's own
``fixedclipping_mod``). A model-poisoning mod lets the handler train
honestly, takes the reply's ``ArrayRecord`` ``X`` and the global one ``G``
the server sent, and returns ``G + forged(X - G)`` using the same attack
object as the ``NumPyClient`` (:mod:`clients.model_poisoning`)::

    from clients.mods import sign_flip_mod, scaling_mod

    app = ClientApp(mods=[sign_flip_mod])            # or [scaling_mod(gamma=10.0)]

Other messages (evaluate, query) pass through untouched. The round is the
config's ``server-round`` (Flower's Message-API strategies) or
``server_round`` (ours), else the message's ``group_id`` when it is a
number (Flower's legacy server), else the mod counts the train messages in
the node's ``Context.state`` (which survives the fresh ClientApp process
Flower starts per message in a deployment).

Errors: a bad attack name or parameter raises ``ValueError`` when the mod is
built; a message the mod cannot attack (no or several ``ArrayRecord``s,
reply arrays whose names or shapes differ from the global model's, a zero
honest update that a sign flip or a boost would leave zero) gets an error
reply (``ErrorCode.MOD_FAILED_PRECONDITION``) naming the mod and the reason,
never a silently honest reply.

Data-poisoning attacks do not change the reply: they are dataset wrappers
used inside the train handler (:mod:`clients.poisoned_data`). Omniscient
attacks (ALIE, IPM, mimic, min-max, min-sum, normalized mean) forge from the
*other* clients' updates of the round, which no client sees in a Flower
deployment; :func:`tag_mod` marks the attacker's replies and the server-side
adversary (:func:`clients.omniscient.colluding_adversary` of the attack's
parameter dataclass, e.g. :class:`clients.ipm.Ipm`, given to the strategy at
construction) replaces the tagged rows with the attack's
``forge(honest_updates, ...)``. That is the simulation's model of collusion;
a single client mod cannot mount these attacks on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import ERROR
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import NDArrays
from flwr.common.constant import ErrorCode
from flwr.common.logger import log

from clients.attack import ACTIVE_TAG, check_classes
from clients.edge_case import NormBallProjection
from clients.gaussian import Gaussian
from clients.model_poisoning import UpdateAttack, update_is_zero
from clients.model_replacement import Scaling
from clients.neurotoxin import Neurotoxin
from clients.same_value import SameValue
from clients.schedule import Schedule, round_from_config
from clients.sign_flip import SignFlip
from clients.three_dfed import Colluder, ThreeDFed, craft_update

MODEL_POISONING: dict[str, type] = {
    "gaussian": Gaussian,
    "norm_projection": NormBallProjection,
    "same_value": SameValue,
    "scaling": Scaling,
    "sign_flip": SignFlip,
}
"""Model-poisoning attacks by name (``scaling``: model replacement's boost;
``norm_projection``: the edge-case attack's projection onto a norm ball)."""

STATE_KEY = "flsec.attack_mod"
"""``Context.state`` config record where a mod counts its train messages."""

NEUROTOXIN_STATE = "flsec.neurotoxin_mod"
"""``Context.state`` array record where :func:`neurotoxin_mod` keeps the last global model."""

THREE_DFED_STATE = "flsec.three_dfed_mod"
"""``Context.state`` array record where :func:`three_dfed_mod` keeps its memory."""


def is_train(msg: Message) -> bool:
    """Whether ``msg`` is a train message (``train`` or ``train.<action>``)."""
    return msg.metadata.message_type.split(".")[0] == MessageType.TRAIN


def message_round(msg: Message, ctxt: Context) -> int:
    """The server round of a train message (see the module docstring for the order).

    Counting (the last resort) stores the count in ``ctxt.state[STATE_KEY]``;
    a round read from the message also resets the count to it.
    """
    named = None
    for record in msg.content.config_records.values():
        named = round_from_config(record)
        if named is not None:
            break
    if named is None and msg.metadata.group_id.isdigit():
        named = int(msg.metadata.group_id)
    if STATE_KEY not in ctxt.state.config_records:
        ctxt.state[STATE_KEY] = ConfigRecord({"train_calls": 0})
    counter = ctxt.state.config_records[STATE_KEY]
    calls = counter["train_calls"]
    assert isinstance(calls, int)
    current = calls + 1 if named is None else named
    counter["train_calls"] = current
    return current


def _error(msg: Message, name: str, reason: str) -> Message:
    text = f"{name}: {reason}"
    log(ERROR, text)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=text), reply_to=msg)


def _single_array_record(msg: Message) -> tuple[str, ArrayRecord] | str:
    records = msg.content.array_records
    if len(records) != 1:
        return f"expects exactly one ArrayRecord, found {len(records)}"
    return next(iter(records.items()))


def _reply_arrays(sent: ArrayRecord, reply: Message) -> tuple[str, NDArrays, NDArrays] | str:
    """``(key, G, X)`` of a train reply whose arrays match those sent, else the reason."""
    got = _single_array_record(reply)
    if isinstance(got, str):
        return f"the train handler's reply: {got}"
    key, record = got
    if list(record.keys()) != list(sent.keys()):
        return "the reply's arrays are not named as those the server sent"
    global_weights = sent.to_numpy_ndarrays()
    trained = record.to_numpy_ndarrays()
    for array_name, g, x in zip(record.keys(), global_weights, trained, strict=True):
        if g.shape != x.shape:
            return f"array {array_name!r}: reply shape {x.shape}, global {g.shape}"
    return key, global_weights, trained


def _replace_arrays(reply: Message, key: str, weights: NDArrays) -> None:
    names = list(reply.content.array_records[key].keys())
    reply.content.array_records[key] = ArrayRecord(
        {k: Array(np.asarray(v)) for k, v in zip(names, weights, strict=True)}
    )


def build_attack(name: str, **params: Any) -> UpdateAttack:
    """The model-poisoning attack ``name`` with ``params``.

    Raises
    ------
    ValueError
        For an unknown name (listing the known ones and where the other
        kinds live) or a parameter the attack rejects.
    """
    if name not in MODEL_POISONING:
        raise ValueError(
            f"attack {name!r} is not a model-poisoning attack a client mod can apply; "
            f"allowed: {', '.join(sorted(MODEL_POISONING))}. Data-poisoning attacks are "
            "dataset wrappers (clients.poisoned_data); omniscient ones forge on the server "
            "(clients.omniscient, with tag_mod on the attackers)"
        )
    try:
        return MODEL_POISONING[name](**params)  # type: ignore[no-any-return]
    except TypeError as err:
        raise ValueError(f"attack {name!r}: {err}") from err


def attack_mod(
    attack: str | UpdateAttack,
    *,
    schedule: Schedule | None = None,
    seed: int | None = None,
    **params: Any,
) -> Mod:
    """A client mod that forges the train reply's update with a model-poisoning attack.

    Parameters
    ----------
    attack : str or UpdateAttack
        A name of :data:`MODEL_POISONING` (then ``params`` are its
        parameters), or an attack object such as ``SignFlip(scale=2.0)``.
    schedule : Schedule, optional
        Rounds in which the mod attacks (every round by default); outside
        them the reply passes through unchanged.
    seed : int, optional
        Seed of the attack's randomness (Gaussian), combined with the node
        id and the round; fresh randomness when omitted.
    **params
        The attack's parameters, with a name.

    Returns
    -------
    Mod
        ``mod(msg, context, call_next) -> Message``.

    Raises
    ------
    ValueError
        For an unknown attack or a bad parameter.

    Examples
    --------
    >>> mod = attack_mod("scaling", gamma=10.0)
    >>> mod.__name__
    'scaling_mod'
    """
    if isinstance(attack, str):
        forger = build_attack(attack, **params)
    elif params:
        raise ValueError(f"attack_mod: parameters {sorted(params)} need an attack name")
    else:
        forger = attack
    plan = Schedule() if schedule is None else schedule
    name = f"{_name_of(forger)}_mod"

    def mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if not is_train(msg):
            return call_next(msg, ctxt)
        sent = _single_array_record(msg)
        if isinstance(sent, str):
            return _error(msg, name, sent)
        server_round = message_round(msg, ctxt)
        reply = call_next(msg, ctxt)
        if reply.has_error() or not plan.active(server_round):
            return reply
        got = _reply_arrays(sent[1], reply)
        if isinstance(got, str):
            return _error(msg, name, got)
        key, global_weights, trained = got
        if forger.needs_training and update_is_zero(global_weights, trained):
            return _error(
                msg,
                name,
                f"round {server_round}: the train handler returned the global model "
                "unchanged, so the forged update would be zero (an honest-looking reply)",
            )
        rng = np.random.default_rng(None if seed is None else [seed, ctxt.node_id, server_round])
        _replace_arrays(reply, key, forger.forge(global_weights, trained, rng))
        return reply

    mod.__name__ = mod.__qualname__ = name
    return mod


def _name_of(attack: UpdateAttack) -> str:
    for known, cls in MODEL_POISONING.items():
        if type(attack) is cls:
            return known
    return type(attack).__name__


def scaling_mod(
    gamma: float | None = None,
    norm_bound: float | None = None,
    *,
    schedule: Schedule | None = None,
) -> Mod:
    r"""Model replacement's boost as a mod: :math:`G + \gamma (X - G)` (:class:`Scaling`)."""
    return attack_mod(Scaling(gamma, norm_bound), schedule=schedule)


def tag_mod(schedule: Schedule | None = None) -> Mod:
    """Tag the train replies of an omniscient attacker (its update is forged server-side).

    In its active rounds the reply's ``MetricRecord`` gets
    :data:`~clients.attack.ACTIVE_TAG` ``= 1``, which the server-side
    :class:`~clients.omniscient.ColludingAdversary` reads (see the module
    docstring). The update itself is the honest one.
    """
    plan = Schedule() if schedule is None else schedule

    def tag_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if not is_train(msg):
            return call_next(msg, ctxt)
        server_round = message_round(msg, ctxt)
        reply = call_next(msg, ctxt)
        if reply.has_error() or not plan.active(server_round):
            return reply
        metrics = reply.content.metric_records
        if len(metrics) != 1:
            return _error(
                msg, "tag_mod", f"expects one MetricRecord in the reply, found {len(metrics)}"
            )
        next(iter(metrics.values()))[ACTIVE_TAG] = 1
        return reply

    return tag_mod


def neurotoxin_mod(mask_ratio: float = 0.95, *, schedule: Schedule | None = None) -> Mod:
    r"""Neurotoxin's projection as a mod: the reply's update kept on the rarely-changed coordinates.

    The mod stores every global model it sees in ``Context.state``
    (:data:`NEUROTOXIN_STATE`); in an active round with a stored one of the
    same shapes it sends :math:`G_t + m \odot (X - G_t)`, ``m`` the bottom
    ``mask_ratio`` of :math:`|G_t - G_{t-1}|` (:class:`~clients.neurotoxin.Neurotoxin`).
    A mod sees only the trained reply, so unlike
    :class:`~clients.neurotoxin.NeurotoxinClient` it cannot mask each local
    step's gradient: the train handler trains freely (on backdoored data,
    :mod:`clients.poisoned_data`) and only the result is projected. Without
    a stored global model (the node's first train message) the reply passes
    through unchanged.

    Raises
    ------
    ValueError
        If ``mask_ratio`` is not in ``(0, 1]``.

    Examples
    --------
    >>> neurotoxin_mod(0.9).__name__
    'neurotoxin_mod'
    """
    transform = Neurotoxin(mask_ratio)
    plan = Schedule() if schedule is None else schedule

    def neurotoxin_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if not is_train(msg):
            return call_next(msg, ctxt)
        sent = _single_array_record(msg)
        if isinstance(sent, str):
            return _error(msg, "neurotoxin_mod", sent)
        server_round = message_round(msg, ctxt)
        stored = ctxt.state.array_records.get(NEUROTOXIN_STATE)
        previous = None if stored is None else stored.to_numpy_ndarrays()
        ctxt.state[NEUROTOXIN_STATE] = ArrayRecord(
            {k: Array(np.array(v.numpy())) for k, v in sent[1].items()}
        )
        reply = call_next(msg, ctxt)
        if reply.has_error() or not plan.active(server_round):
            return reply
        got = _reply_arrays(sent[1], reply)
        if isinstance(got, str):
            return _error(msg, "neurotoxin_mod", got)
        key, global_weights, trained = got
        if previous is None or [p.shape for p in previous] != [g.shape for g in global_weights]:
            return reply
        mask = transform.mask(previous, global_weights)
        _replace_arrays(reply, key, transform.project(global_weights, trained, mask))
        return reply

    return neurotoxin_mod


def three_dfed_mod(
    rank: int,
    attackers: int,
    seed: int,
    *,
    num_classes: int = 10,
    schedule: Schedule | None = None,
    **params: Any,
) -> Mod:
    r"""3DFed's update transform as a mod: noise masks, decoy models and indicators on the reply.

    The mod of attacker ``rank`` (``0 .. attackers-1``) among ``attackers``
    colluding nodes that share ``seed`` (every shared choice of a round is
    drawn from it, :class:`~clients.three_dfed.Colluder`) sends what
    :class:`~clients.three_dfed.ThreeDFedClient` sends
    (:func:`~clients.three_dfed.craft_update`): the masked backdoor or,
    in the last ``k`` ranks, a decoy, each with its indicator. It keeps the
    attacker's memory (its indicators, :math:`\alpha`, ``k`` and the global
    model) in ``Context.state`` (:data:`THREE_DFED_STATE`) and reads the
    indicators from the next round's global model, as the client does.

    A mod sees only the trained reply ``X``: the train handler trains the
    backdoor (on data poisoned with :mod:`clients.poisoned_data`; the
    constrained loss is the handler's to add), and ``X`` also stands for
    the benign model, so the backdoor is not scaled to the benign norm
    (:math:`s = 1`) and a decoy is ``X`` with its coordinate moved. Fit
    metrics are not added (the client's are booleans, which a
    ``MetricRecord`` does not carry).

    Parameters
    ----------
    rank, attackers, seed : int
        This attacker's rank, the number of colluders, their shared seed.
    num_classes : int
        Classes of the model's output layer (the ``(num_classes, h)`` array).
    schedule : Schedule, optional
        Rounds in which the mod attacks (every round by default).
    **params
        Fields of :class:`~clients.three_dfed.ThreeDFed` (the trigger's
        fields other than ``target_class`` are the handler's business).

    Raises
    ------
    ValueError
        Naming the parameter, for a bad rank, count or field.

    Examples
    --------
    >>> three_dfed_mod(0, 3, seed=7, decoys=1).__name__
    'three_dfed_mod'
    """
    try:
        transform = ThreeDFed(**params)
    except TypeError as err:
        raise ValueError(f"three_dfed_mod: {err}") from err
    check_classes(transform, num_classes)
    if transform.mask_neurons > num_classes - 1:
        raise ValueError(
            f"mask_neurons: got {transform.mask_neurons}, at most {num_classes - 1} output "
            "neurons are not the target"
        )
    transform.check_attackers(attackers)
    who = Colluder(rank, attackers, seed, num_classes)
    plan = Schedule() if schedule is None else schedule

    def three_dfed_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if not is_train(msg):
            return call_next(msg, ctxt)
        sent = _single_array_record(msg)
        if isinstance(sent, str):
            return _error(msg, "three_dfed_mod", sent)
        server_round = message_round(msg, ctxt)
        reply = call_next(msg, ctxt)
        if reply.has_error() or not plan.active(server_round):
            return reply
        got = _reply_arrays(sent[1], reply)
        if isinstance(got, str):
            return _error(msg, "three_dfed_mod", got)
        key, global_weights, trained = got
        stored = ctxt.state.array_records.get(THREE_DFED_STATE)
        memory = None if stored is None else stored.to_numpy_ndarrays()
        try:
            crafted = craft_update(
                transform, who, global_weights, trained, trained, memory, server_round
            )
        except ValueError as err:
            return _error(msg, "three_dfed_mod", f"round {server_round}: {err}")
        ctxt.state[THREE_DFED_STATE] = ArrayRecord(
            {str(i): Array(np.ascontiguousarray(a)) for i, a in enumerate(crafted.memory)}
        )
        _replace_arrays(reply, key, crafted.weights)
        return reply

    return three_dfed_mod


sign_flip_mod: Callable[[Message, Context, ClientAppCallable], Message] = attack_mod("sign_flip")
"""Sign flipping, every round: the reply carries ``G - (X - G)``."""

gaussian_mod: Callable[[Message, Context, ClientAppCallable], Message] = attack_mod("gaussian")
"""The Gaussian attack (``sigma = 200``), every round: ``G + N(0, 200^2 I)``."""

same_value_mod: Callable[[Message, Context, ClientAppCallable], Message] = attack_mod("same_value")
"""The same-value attack (``sigma = 100``), every round: ``G + 100``."""

__all__ = [
    "MODEL_POISONING",
    "attack_mod",
    "build_attack",
    "gaussian_mod",
    "message_round",
    "neurotoxin_mod",
    "same_value_mod",
    "scaling_mod",
    "sign_flip_mod",
    "tag_mod",
    "three_dfed_mod",
]
