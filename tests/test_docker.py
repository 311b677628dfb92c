"""``docker/`` checked without Docker: Compose files, Dockerfile, certificate script.

Registries are unreachable here, so nothing is built or started. Every
container command is parsed by the installed Flower's own argument parser
for that program (an unknown or misspelt flag fails), the topology is
checked (SuperNode partition ids, SuperExec runtime addresses), the
committed Compose files must equal ``docker/compose.py``'s output, and
``docker/certs.sh`` is run into a temporary folder when openssl and
ssh-keygen are installed.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import flwr
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from flwr.supercore.cli.flower_superexec import _parse_args as superexec_parser
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink as superlink_parser
from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode as supernode_parser

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
_spec = importlib.util.spec_from_file_location("docker_compose", DOCKER / "compose.py")
compose = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compose)

PARSERS = {"superlink": superlink_parser, "supernode": supernode_parser}


def _parse(service: str, command: list[str]):
    kind = re.sub(r"-\d+$", "", service).split("-")[0]
    parser = PARSERS.get(kind, superexec_parser)()
    return parser.parse_args(command)


@pytest.mark.parametrize(
    ("name", "nodes", "tls"), [("compose.yaml", 4, False), ("compose.tls.yaml", 4, True)]
)
def test_committed_compose_files_are_the_generators_output(
    name: str, nodes: int, tls: bool
) -> None:
    assert (DOCKER / name).read_text() == compose.render(nodes, tls)


@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("nodes", [1, 4, 7])
def test_every_command_parses_with_the_installed_flower(nodes: int, tls: bool) -> None:
    services = yaml.safe_load(compose.render(nodes, tls))["services"]
    expected = {"superlink", "superexec-serverapp"}
    expected |= {f"supernode-{i}" for i in range(nodes)}
    expected |= {f"superexec-clientapp-{i}" for i in range(nodes)}
    assert set(services) == expected
    args = {name: _parse(name, s["command"]) for name, s in services.items()}

    link = args["superlink"]
    assert link.isolation == "process"
    assert (link.host, link.port) == ("0.0.0.0", compose.SUPERLINK_PORT)
    assert link.runtime_dependency_install is False
    assert link.insecure is not tls
    assert link.enable_supernode_auth is tls
    if tls:
        assert link.ssl_certfile and link.ssl_keyfile and link.ssl_ca_certfile
    assert args["superexec-serverapp"].runtime_api_address == f"superlink:{compose.SUPERLINK_PORT}"

    partitions = []
    for i in range(nodes):
        node = args[f"supernode-{i}"]
        assert node.superlink == f"superlink:{compose.SUPERLINK_PORT}"
        assert node.isolation == "process"
        assert node.insecure is not tls
        assert (node.auth_supernode_private_key is not None) is tls
        config = dict(kv.split("=") for kv in node.node_config.split())
        assert config["num-partitions"] == str(nodes)
        partitions.append(int(config["partition-id"]))
        executor = args[f"superexec-clientapp-{i}"]
        assert executor.runtime_api_address == f"supernode-{i}:{node.port}"
        assert services[f"superexec-clientapp-{i}"]["depends_on"] == [f"supernode-{i}"]
    assert partitions == list(range(nodes))


def test_images_are_flowers_official_ones_at_the_installed_version() -> None:
    services = yaml.safe_load(compose.render(2))["services"]
    default = compose.FLWR_VERSION.split(":-")[1].rstrip("}")
    assert default == flwr.__version__
    assert services["superlink"]["image"].startswith("flwr/superlink:")
    assert services["supernode-0"]["image"].startswith("flwr/supernode:")
    assert services["superexec-serverapp"]["build"]["dockerfile"] == "docker/Dockerfile"


def test_dockerfile_extends_flowers_superexec_image_with_our_package() -> None:
    lines = [x.strip() for x in (DOCKER / "Dockerfile").read_text().splitlines()]
    args = dict(x.split(" ", 1)[1].split("=") for x in lines if x.startswith("ARG "))
    assert args["FLWR_VERSION"] == flwr.__version__
    (base,) = [x for x in lines if x.startswith("FROM ")]
    assert base == "FROM flwr/superexec:${FLWR_VERSION}"
    copied = [p for x in lines if x.startswith("COPY ") for p in x.split()[1:-1]]
    for package in ("flsec_flower", "strategies", "clients", "pyproject.toml", "constraints.txt"):
        assert package in copied
    for path in copied:
        assert (REPO / path).exists(), f"COPY {path}: not in the repository"
    assert any("-c constraints.txt" in x for x in lines)
    assert lines[-1] == 'ENTRYPOINT ["flower-superexec"]'


def test_compose_rejects_a_bad_node_count() -> None:
    with pytest.raises(ValueError, match="--nodes"):
        compose.compose(0)


@pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("ssh-keygen")), reason="needs openssl, ssh-keygen"
)
def test_certs_script_makes_a_server_certificate_and_node_keys(tmp_path: Path) -> None:
    subprocess.run(["bash", str(DOCKER / "certs.sh"), "3", str(tmp_path)], check=True)
    certs = tmp_path / "certs"
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.pem")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    san = subprocess.run(
        ["openssl", "x509", "-in", str(certs / "server.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:superlink" in san and "IP Address:127.0.0.1" in san
    assert not (certs / "ca.key").exists()  # the CA key is not in the mounted folder
    for i in range(3):
        key = load_ssh_private_key((tmp_path / "keys" / f"supernode-{i}").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # what flower-supernode accepts
        public = load_ssh_public_key((tmp_path / "keys" / f"supernode-{i}.pub").read_bytes())
        assert public.public_numbers() == key.public_key().public_numbers()
    assert not (tmp_path / "keys" / "supernode-3").exists()


def test_certs_script_rejects_a_bad_node_count(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(DOCKER / "certs.sh"), "zero", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "NODES must be a positive integer" in done.stderr
