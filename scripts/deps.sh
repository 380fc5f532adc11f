#!/usr/bin/env bash
# Installs what Switchboard needs on Debian 12, idempotently. Sourced by run.sh and
# test.sh; `deps.sh test` adds what the test suite needs.
set -euo pipefail

APT_RUN=(redis-server libhiredis-dev haproxy)
APT_TEST=(chromium chromium-driver iproute2 docker-compose fonts-noto-color-emoji fonts-wqy-microhei nodejs node-fetch)
PIP_RUN=(honcho)
PIP_TEST=(pytest pytest-xdist websockets httpx requests python-socketio aiohttp selenium PyJWT cryptography docker)

want_apt=("${APT_RUN[@]}")
want_pip=("${PIP_RUN[@]}")
if [[ "${1:-}" == "test" ]]; then
    want_apt+=("${APT_TEST[@]}")
    want_pip+=("${PIP_TEST[@]}")
fi

missing=()
for pkg in "${want_apt[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "==> apt-get install ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! $PY - "${want_pip[@]}" <<'PYEOF'
import importlib.metadata, re, sys
names = [re.split(r"[\[<>=]", n)[0] for n in sys.argv[1:]]
missing = []
for n in names:
    try:
        importlib.metadata.version(n)
    except importlib.metadata.PackageNotFoundError:
        missing.append(n)
sys.exit(1 if missing else 0)
PYEOF
then
    echo "==> pip install ${want_pip[*]}"
    $PY -m pip install -q --disable-pip-version-check "${want_pip[@]}"
fi
