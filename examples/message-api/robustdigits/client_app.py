"""robustdigits: a Flower / PyTorch ClientApp; the nodes picked by the run config attack."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from robustdigits.task import Net, load_data
from robustdigits.task import test as test_fn
from robustdigits.task import train as train_fn


def attacker_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run flsec's sign-flip mod on the attacking nodes, pass the others through.

    A node attacks when ``attack = "sign-flip"`` and its ``partition-id``
    (node config) is below ``num-attackers`` (run config). It replies
    ``G - attack-scale * (X - G)``: ``clients.mods.sign_flip_mod`` for a
    scale of 1, the same attack with its ``scale`` parameter otherwise.
    Under flsec's defence, ``clients.mods.tag_mod`` also marks the reply as
    attacking: ground truth for the server's diagnostics
    (``attack_participants``), read by no rule. Not under Flower's FedAvg,
    which averages the train metrics and needs the same keys from every node.
    """
    attacks = context.run_config["attack"] == "sign-flip"
    if attacks and int(context.node_config["partition-id"]) < int(
        context.run_config["num-attackers"]
    ):
        from clients.mods import attack_mod, sign_flip_mod, tag_mod

        scale = float(context.run_config["attack-scale"])
        mod = sign_flip_mod if scale == 1.0 else attack_mod("sign_flip", scale=scale)

        if context.run_config["defence"] == "fedavg":
            return mod(msg, context, call_next)

        def forged(inner: Message, ctxt: Context) -> Message:
            return mod(inner, ctxt, call_next)

        return tag_mod()(msg, context, forged)
    return call_next(msg, context)


# Flower ClientApp
app = ClientApp(mods=[attacker_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the model on local data."""
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    device = "cuda:0" if torch.cuda.is_available() else "cpu"

    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    trainloader, _ = load_data(partition_id, num_partitions, int(context.run_config["batch-size"]))

    train_loss = train_fn(
        model,
        trainloader,
        int(context.run_config["local-epochs"]),
        float(msg.content["config"]["lr"]),
        device,
    )

    model_record = ArrayRecord(model.state_dict())
    metrics = {"train_loss": train_loss, "num-examples": len(trainloader.dataset)}
    content = RecordDict({"arrays": model_record, "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the model on local validation data."""
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    device = "cuda:0" if torch.cuda.is_available() else "cpu"

    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    _, valloader = load_data(partition_id, num_partitions, int(context.run_config["batch-size"]))

    eval_loss, eval_acc = test_fn(model, valloader, device)
    metrics = {"eval_loss": eval_loss, "eval_acc": eval_acc, "num-examples": len(valloader.dataset)}
    content = RecordDict({"metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
