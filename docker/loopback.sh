#!/usr/bin/env bash
# The docker/ topology without Docker, on 127.0.0.1: a SuperLink, NODES SuperNodes, one run.
#
#   docker/loopback.sh [APP_DIR] [NODES]   (defaults: examples/deployment-app, 4)
#
# Starts flower-superlink and NODES flower-supernode processes (insecure, free ports,
# --node-config "partition-id=i num-partitions=NODES"), a private FLWR_HOME with the
# connection [superlink.loopback], runtime dependency installation disabled; waits for
# the SuperNodes, submits `flwr run APP_DIR loopback`, polls `flwr ls` until the run is
# final (flwr run exits 0 even when the run fails) and prints its row and log. Every
# process it started is stopped by id on exit, also on Ctrl-C or error. Exit status 0
# only when the run's status is finished:completed. Extra run config: RUN_CONFIG="k=v ...".
# Uses the flwr commands on PATH (activate the project's venv first).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
app="$(cd "${1:-$root/examples/deployment-app}" && pwd)"
nodes="${2:-4}"
if ! [[ "$nodes" =~ ^[1-9][0-9]*$ ]]; then
    echo "loopback.sh: NODES must be a positive integer, got '$nodes'" >&2
    exit 2
fi
for tool in flower-superlink flower-supernode flwr; do
    command -v "$tool" >/dev/null || { echo "loopback.sh: $tool not on PATH" >&2; exit 2; }
done

work="$(mktemp -d -t flsec-loopback.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 2
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    echo "logs kept in $work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

export FLWR_HOME="$work/flwr-home"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_TELEMETRY_ENABLED=0
mkdir -p "$FLWR_HOME"
port="$(free_port)"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "loopback"

[superlink.loopback]
address = "127.0.0.1:$port"
insecure = true
TOML

setsid flower-superlink --insecure --host 127.0.0.1 --port "$port" \
    --disable-runtime-dependency-installation > "$work/superlink.log" 2>&1 &
pids+=("$!")
for ((i = 0; i < nodes; i++)); do
    setsid flower-supernode --insecure --superlink "127.0.0.1:$port" \
        --host 127.0.0.1 --port "$(free_port)" \
        --node-config "partition-id=$i num-partitions=$nodes" > "$work/supernode-$i.log" 2>&1 &
    pids+=("$!")
done

echo "waiting for $nodes SuperNodes on 127.0.0.1:$port ..."
for _ in $(seq 120); do
    online="$(flwr supernode ls loopback --format json 2>/dev/null |
        python3 -c 'import json, sys; print(sum(n["status"] == "online" for n in json.load(sys.stdin)["nodes"]))' 2>/dev/null || echo 0)"
    [[ "$online" -ge "$nodes" ]] && break
    sleep 1
done
[[ "$online" -ge "$nodes" ]] || { echo "only $online of $nodes SuperNodes online" >&2; exit 1; }

cd "$app"
submitted="$(flwr run . loopback --format json ${RUN_CONFIG:+--run-config "$RUN_CONFIG"})"
run_id="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["run-id"])' "$submitted")"
echo "run $run_id submitted"
while :; do
    status="$(flwr ls loopback --run-id "$run_id" --format json |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["status"])')"
    [[ "$status" == finished:* ]] && break
    sleep 2
done
flwr ls loopback --run-id "$run_id"
flwr log "$run_id" loopback --show | tail -n 40
echo "run $run_id: $status"
[[ "$status" == "finished:completed" ]]
