"""Write the Docker Compose file of a Flower 1.41 deployment with ``--nodes`` SuperNodes.

One SuperLink (one HTTP port, 8000, for the Fleet, Control and Runtime APIs),
``N`` SuperNodes (``--node-config "partition-id=i num-partitions=N"``,
runtime API on port 9094 of their own container) and, since every component
runs with ``--isolation process``, one SuperExec container per SuperLink and
per SuperNode to run the ServerApp and the ClientApps: Flower's official
``flwr/superexec`` image with flsec-flower installed (``docker/Dockerfile``).
SuperLink and SuperNodes use Flower's official images unchanged.

With ``--tls`` the SuperLink serves TLS (``certs/`` from ``docker/certs.sh``)
and admits only SuperNodes whose public key was registered with ``flwr
supernode register`` (``--enable-supernode-auth``); each SuperNode signs with
its own private key (``keys/supernode-i``). The SuperNode-to-SuperExec
runtime API stays inside the Compose network without TLS.

``docker/compose.yaml`` (4 nodes) and ``docker/compose.tls.yaml`` (4 nodes,
TLS) are this script's output; a test checks that they are current.

    python docker/compose.py --nodes 8 > docker/compose.8.yaml
    python docker/compose.py --nodes 8 --tls > docker/compose.tls.8.yaml
"""

from __future__ import annotations

import argparse

import yaml

SUPERLINK_PORT = 8000
SUPERNODE_PORT = 9094
FLWR_VERSION = "${FLWR_VERSION:-1.41.0}"
CERTS = "/app/certificates"
KEYS = "/app/keys"


def _superexec(runtime_api: str, tls: bool, depends_on: str) -> dict:
    """A SuperExec container (our image) that runs the apps of the component at ``runtime_api``."""
    auth = ["--root-certificates", f"{CERTS}/ca.crt"] if tls else ["--insecure"]
    service = {
        "build": {
            "context": "..",
            "dockerfile": "docker/Dockerfile",
            "args": {"FLWR_VERSION": FLWR_VERSION},
        },
        "image": f"flsec-superexec:{FLWR_VERSION}",
        "command": [*auth, "--runtime-api-address", runtime_api],
        "depends_on": [depends_on],
        "restart": "unless-stopped",
    }
    if tls:
        service["volumes"] = [f"./certs:{CERTS}:ro"]
    return service


def _superlink(tls: bool) -> dict:
    if tls:
        security = [
            "--ssl-ca-certfile",
            f"{CERTS}/ca.crt",
            "--ssl-certfile",
            f"{CERTS}/server.pem",
            "--ssl-keyfile",
            f"{CERTS}/server.key",
            "--enable-supernode-auth",
        ]
    else:
        security = ["--insecure"]
    service = {
        "image": f"flwr/superlink:{FLWR_VERSION}",
        "command": [
            *security,
            "--isolation",
            "process",
            "--host",
            "0.0.0.0",
            "--port",
            str(SUPERLINK_PORT),
            "--disable-runtime-dependency-installation",
        ],
        "ports": [f"{SUPERLINK_PORT}:{SUPERLINK_PORT}"],
        "restart": "unless-stopped",
    }
    if tls:
        service["volumes"] = [f"./certs:{CERTS}:ro"]
    return service


def _supernode(partition_id: int, num_partitions: int, tls: bool) -> dict:
    if tls:
        security = [
            "--root-certificates",
            f"{CERTS}/ca.crt",
            "--auth-supernode-private-key",
            f"{KEYS}/supernode-{partition_id}",
        ]
    else:
        security = ["--insecure"]
    service = {
        "image": f"flwr/supernode:{FLWR_VERSION}",
        "command": [
            *security,
            "--superlink",
            f"superlink:{SUPERLINK_PORT}",
            "--isolation",
            "process",
            "--host",
            "0.0.0.0",
            "--port",
            str(SUPERNODE_PORT),
            "--node-config",
            f"partition-id={partition_id} num-partitions={num_partitions}",
        ],
        "depends_on": ["superlink"],
        "restart": "unless-stopped",
    }
    if tls:
        service["volumes"] = [
            f"./certs:{CERTS}:ro",
            f"./keys/supernode-{partition_id}:{KEYS}/supernode-{partition_id}:ro",
        ]
    return service


def compose(nodes: int, tls: bool = False) -> dict:
    """The Compose document for ``nodes`` SuperNodes.

    Services: ``superlink``, ``superexec-serverapp`` and, per node ``i``,
    ``supernode-i`` and ``superexec-clientapp-i``.

    Raises
    ------
    ValueError
        If ``nodes`` is not a positive integer.
    """
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"--nodes must be a positive integer, got {nodes!r}")
    services = {
        "superlink": _superlink(tls),
        "superexec-serverapp": _superexec(f"superlink:{SUPERLINK_PORT}", tls, "superlink"),
    }
    for i in range(nodes):
        services[f"supernode-{i}"] = _supernode(i, nodes, tls)
    for i in range(nodes):
        services[f"superexec-clientapp-{i}"] = _superexec(
            f"supernode-{i}:{SUPERNODE_PORT}", False, f"supernode-{i}"
        )
    return {"services": services}


def render(nodes: int, tls: bool = False) -> str:
    """The Compose file as text, with a header saying how it was made."""
    flags = f"--nodes {nodes}" + (" --tls" if tls else "")
    header = (
        f"# Generated by `python docker/compose.py {flags}`: edit compose.py, not this file.\n"
        "# Run from the repository root (see docker/README.md):\n"
        "#   docker compose -f docker/<this file> up --build -d\n"
    )
    return header + yaml.safe_dump(compose(nodes, tls), sort_keys=False, width=100)


def main() -> None:
    """Print the Compose file for ``--nodes`` SuperNodes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4, help="SuperNodes (default 4)")
    parser.add_argument("--tls", action="store_true", help="TLS and SuperNode authentication")
    args = parser.parse_args()
    try:
        print(render(args.nodes, args.tls), end="")
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
