#!/usr/bin/env bash
# Runs Switchboard locally.
#   bash scripts/run.sh            Redis + three edge nodes (8081-8083) + haproxy on 8080 (Procfile)
#   bash scripts/run.sh --single   one node on the in-process broker on 8080 (no Redis)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

echo "==> swift build -c release --product switchboard"
swift build -c release --product switchboard 2>&1 | grep -v -E "prohibited flag|unhandled; explicitly declare" | tail -n 5
BIN="$PWD/.build/release/switchboard"

export SWITCHBOARD_SECRET="${SWITCHBOARD_SECRET:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export SWITCHBOARD_API_KEY="${SWITCHBOARD_API_KEY:-dev-api-key}"
export SWITCHBOARD_BIN="$BIN"

if [[ "${1:-}" == "--single" ]]; then
    echo "==> Switchboard (single node, in-process broker): open http://localhost:${PORT:-8080}"
    exec "$BIN" serve --host "${HOST:-0.0.0.0}" --port "${PORT:-8080}" --node-id single
fi

echo "==> Switchboard cluster: redis :6379, edges :8081-8083, haproxy :8080"
echo "==> open http://localhost:8080"
exec python3 -m honcho -f Procfile start
