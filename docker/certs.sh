#!/usr/bin/env bash
# TLS certificates for the SuperLink and authentication keys for the SuperNodes.
#
#   docker/certs.sh [NODES] [OUT_DIR]      (defaults: 4, the docker/ folder)
#
# Writes OUT_DIR/certs/ca.crt (a self-signed CA, 10 years; its key in OUT_DIR/ca/ca.key,
# outside the folder the containers mount) and server.pem,
# server.key (the SuperLink's certificate, signed by the CA, valid for the names
# superlink, localhost and 127.0.0.1), and OUT_DIR/keys/supernode-i, supernode-i.pub
# (an ECDSA P-384 key pair per SuperNode in OpenSSH format, as
# `flower-supernode --auth-supernode-private-key` and `flwr supernode register` read
# them). Existing files are kept: delete them to rotate. Needs openssl and ssh-keygen.
set -euo pipefail

nodes="${1:-4}"
out="${2:-$(cd "$(dirname "$0")" && pwd)}"
if ! [[ "$nodes" =~ ^[1-9][0-9]*$ ]]; then
    echo "certs.sh: NODES must be a positive integer, got '$nodes'" >&2
    exit 2
fi
for tool in openssl ssh-keygen; do
    command -v "$tool" >/dev/null || { echo "certs.sh: $tool is not installed" >&2; exit 2; }
done
mkdir -p "$out/certs" "$out/keys" "$out/ca"
certs="$out/certs"
cakey="$out/ca/ca.key"

if [[ ! -f "$certs/ca.crt" ]]; then
    openssl req -x509 -newkey rsa:4096 -sha256 -days 3650 -nodes \
        -keyout "$cakey" -out "$certs/ca.crt" -subj "/CN=flsec-flower CA" 2>/dev/null
fi
if [[ ! -f "$certs/server.pem" ]]; then
    ext="$(mktemp)"
    trap 'rm -f "$ext"' EXIT
    printf '%s\n' \
        "subjectAltName = DNS:superlink, DNS:localhost, IP:127.0.0.1" \
        "keyUsage = digitalSignature, keyEncipherment" \
        "extendedKeyUsage = serverAuth" > "$ext"
    openssl req -newkey rsa:4096 -nodes -keyout "$certs/server.key" \
        -out "$certs/server.csr" -subj "/CN=superlink" 2>/dev/null
    openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.crt" -CAkey "$cakey" \
        -CAserial "$out/ca/ca.srl" -CAcreateserial -out "$certs/server.pem" -days 365 -sha256 -extfile "$ext" 2>/dev/null
    rm -f "$certs/server.csr"
fi
# The images run as a non-root user: the mounted files must be readable by it.
chmod 644 "$certs/ca.crt" "$certs/server.pem" "$certs/server.key"

for ((i = 0; i < nodes; i++)); do
    key="$out/keys/supernode-$i"
    if [[ ! -f "$key" ]]; then
        ssh-keygen -q -t ecdsa -b 384 -N "" -C "supernode-$i" -f "$key"
    fi
    chmod 644 "$key"
done
echo "certificates in $certs, SuperNode keys in $out/keys ($nodes nodes)"
