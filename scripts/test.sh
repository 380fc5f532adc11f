#!/usr/bin/env bash
# The whole test suite: Swift unit and conformance tests (real redis-server), then the
# integration tests under Tests/integration (real `switchboard serve` processes, Redis,
# haproxy, python clients, Chromium). Ends with pytest's summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test || exit 1

echo "==> swift build (debug, with tests)"
swift build --build-tests 2>&1 | grep -v -E "prohibited flag|unhandled; explicitly declare" | tail -n 20
[[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "swift build failed"; exit 1; }

echo "==> swift test"
swift test --skip-build --parallel 2>&1 | tail -n 40
swift_status=${PIPESTATUS[0]}
[[ $swift_status -eq 0 ]] || echo "swift test FAILED (status $swift_status)"

echo "==> pytest Tests/integration"
export SWITCHBOARD_BIN="$PWD/.build/debug/switchboard"
export SOCKETIO_CONFORMANCE_BIN="$PWD/.build/debug/socketio-conformance"
# Two workers (pytest-xdist): independent tests share nothing (own ports, nodes, Redis);
# the browser modules and the CPU-heavy hardening tests each stay on one worker
# (xdist_group, see Tests/integration/conftest.py).
python3 -m pytest Tests/integration -q -p no:cacheprovider -n 2 --dist loadgroup "$@"
py_status=$?
exit $(( swift_status != 0 ? swift_status : py_status ))
