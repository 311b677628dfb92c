"""ServerApp: flsec-flower's Krum, a central test on digits, one JSON line per round."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.common import Context, NDArrays, Scalar, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig

from deployment_app.task import SEED
from flsec_flower.data import load_dataset
from flsec_flower.models import build_model, get_weights, set_weights
from flsec_flower.training import evaluate
from strategies import Krum


def server_fn(context: Context) -> ServerAppComponents:
    """Krum over every connected SuperNode, evaluated centrally after each round."""
    config = context.run_config
    digits = load_dataset("digits", seed=SEED)
    model = build_model("mlp", digits.input_shape, digits.num_classes, SEED)

    def evaluate_fn(
        server_round: int, weights: NDArrays, _config: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]]:
        set_weights(model, weights)
        res = evaluate(model, digits.x_test, digits.y_test, digits.num_classes)
        return res.loss, {"accuracy": res.accuracy}

    strategy = Krum(
        f=int(config["krum-f"]),
        on_too_few="reduce_f",
        device="cpu",
        seed=SEED,
        initial_parameters=ndarrays_to_parameters(get_weights(model)),
        fraction_evaluate=0.0,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
    )
    metrics_file = str(config["metrics-file"])
    if metrics_file:
        path = Path(metrics_file)

        def write_round(server_round: int, record: dict) -> None:
            with path.open("a") as out:
                out.write(json.dumps({"round": server_round, **record}) + "\n")

        strategy.round_listener = write_round
    num_rounds = int(config["num-server-rounds"])
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=num_rounds))


app = ServerApp(server_fn=server_fn)
