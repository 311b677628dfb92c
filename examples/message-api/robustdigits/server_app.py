"""robustdigits: a Flower / PyTorch ServerApp with flsec's Krum inside Bucketing."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from robustdigits.task import Net, load_centralized_dataset, test
from strategies import Bucketing, Krum, MessageStrategy

# Create ServerApp
app = ServerApp()


def make_strategy(context: Context) -> FedAvg:
    """``Bucketing(Krum(f), s)`` from flsec-flower, or Flower's own FedAvg to compare."""
    cfg = context.run_config
    fraction_train = float(cfg["fraction-train"])
    num_nodes = int(cfg["min-nodes"])
    if cfg["defence"] == "fedavg":
        return FedAvg(
            fraction_train=fraction_train,
            fraction_evaluate=0.0,
            min_train_nodes=num_nodes,
            min_available_nodes=num_nodes,
        )
    rule = Bucketing(
        Krum(f=int(cfg["krum-f"]), device="cpu"),
        s=int(cfg["bucket-size"]),
        device="cpu",
        seed=int(cfg["seed"]),
    )
    return MessageStrategy(
        rule,
        fraction_train=fraction_train,
        fraction_evaluate=0.0,
        min_train_nodes=num_nodes,
        min_available_nodes=num_nodes,
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Main entry point for the ServerApp."""
    num_rounds = int(context.run_config["num-server-rounds"])
    lr = float(context.run_config["lr"])
    torch.manual_seed(int(context.run_config["seed"]))

    # Load global model
    global_model = Net()
    arrays = ArrayRecord(global_model.state_dict())

    strategy = make_strategy(context)
    accuracy: dict[int, float] = {}

    def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Evaluate the global model on the held-out test split."""
        model = Net()
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = test(model, load_centralized_dataset(), "cpu")
        accuracy[server_round] = acc
        print(f"robustdigits: round {server_round}: accuracy {acc:.4f}", flush=True)
        return MetricRecord({"accuracy": acc, "loss": loss})

    # Start strategy, run for `num_rounds`
    strategy.start(
        grid=grid,
        initial_arrays=arrays,
        train_config=ConfigRecord({"lr": lr}),
        num_rounds=num_rounds,
        evaluate_fn=global_evaluate,
    )

    results_file = str(context.run_config["results-file"])
    if results_file:
        # flsec's per-round diagnostics by node id: participants, the replies tagged
        # as attacking, the nodes Krum selected, the f it used (Flower's FedAvg: none).
        rule = getattr(strategy, "rule", None)
        rounds = {r: d.as_record() for r, d in rule.diagnostics.items()} if rule else {}
        Path(results_file).write_text(json.dumps({"accuracy": accuracy, "rounds": rounds}))
