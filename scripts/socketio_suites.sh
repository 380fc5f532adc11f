#!/usr/bin/env bash
# Runs the official Engine.IO v4 and Socket.IO v5 protocol test suites (from the
# socket.io repository, docs/engine.io-protocol/v4-test-suite and
# docs/socket.io-protocol/v5-test-suite) against the `socketio-conformance` server,
# and prints pass/fail counts and the failing tests.
#
# Usage:
#   SOCKETIO_GIT=<git dir of a socket.io clone or mirror> scripts/socketio_suites.sh
#   scripts/socketio_suites.sh <git dir>
#
# Environment:
#   SOCKETIO_GIT              git dir of socketio/socket.io (bare or .git); required
#                             unless given as $1
#   SOCKETIO_REF              commit/branch to take the suites from (default HEAD)
#   SOCKETIO_CONFORMANCE_BIN  server binary (default <repo>/.build/debug/socketio-conformance);
#                             waited for (every 30 s, up to BIN_WAIT_SECONDS) if absent
#   BIN_WAIT_SECONDS          default 1200
#   SIO_SUITES_DIR            where the suites are extracted (default /tmp/sio-suites;
#                             wiped and recreated)
#   PORT                      port for the server (default: a free port on 127.0.0.1)
#   SKIP_APT=1                do not try to install the Debian packages
#   FETCH_KEEPALIVE=0         diagnostic: give node-fetch an agent without keep-alive.
#                             node-fetch 3 sends `Connection: close` and Node 20's global
#                             agent keeps sockets alive unless the *response* says
#                             `Connection: close`; a server that closes without saying so
#                             makes the next request on that socket fail with "socket
#                             hang up". This mode shows what fails for other reasons.
#
# Needs no npm registry: the suites' devDependencies come from Debian
# (mocha 10, chai 4, node-ws 8, node-fetch 3). chai-string is not packaged in
# Debian; a small stand-in with the one assertion the suites use (startsWith) is
# written next to them. The suites are ES modules, and ESM resolution ignores
# NODE_PATH, so each suite gets a node_modules/ of symlinks into /usr/share/nodejs,
# and NODE_PRESERVE_SYMLINKS=1 lets packages there find their own dependencies.
#
# Exit status: 0 when every test passed, 1 when some failed, 2 on a setup error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

SOCKETIO_GIT="${1:-${SOCKETIO_GIT:-}}"
SOCKETIO_REF="${SOCKETIO_REF:-HEAD}"
BIN="${SOCKETIO_CONFORMANCE_BIN:-$repo/.build/debug/socketio-conformance}"
BIN_WAIT_SECONDS="${BIN_WAIT_SECONDS:-1200}"
WORK="${SIO_SUITES_DIR:-/tmp/sio-suites}"

die() { echo "socketio_suites: $*" >&2; exit 2; }

[ -n "$SOCKETIO_GIT" ] || die "set SOCKETIO_GIT to the git dir of socketio/socket.io (or pass it as \$1)"
git --git-dir="$SOCKETIO_GIT" rev-parse --verify -q "$SOCKETIO_REF^{commit}" >/dev/null \
    || die "$SOCKETIO_GIT has no commit $SOCKETIO_REF"
case "$(realpath -m "$WORK")" in
    "$repo"|"$repo"/*) die "SIO_SUITES_DIR must be outside the repository" ;;
esac

# --- Debian packages -------------------------------------------------------------
pkgs=(mocha chai node-ws node-fetch)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "${SKIP_APT:-0}" = 1 ] && die "missing Debian packages: ${missing[*]}"
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v node >/dev/null || die "node is not installed"
MOCHA=/usr/share/nodejs/mocha/bin/mocha.js
[ -f "$MOCHA" ] || die "$MOCHA not found"

# --- the suites --------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK"
commit="$(git --git-dir="$SOCKETIO_GIT" rev-parse "$SOCKETIO_REF^{commit}")"
declare -A suite_dir=(
    [engine.io]=docs/engine.io-protocol/v4-test-suite
    [socket.io]=docs/socket.io-protocol/v5-test-suite
)
suites=(engine.io socket.io)
for s in "${suites[@]}"; do
    mkdir -p "$WORK/$s"
    # Archive the suite's own tree: archiving the commit with a pathspec walks the
    # whole tree and complains about blobs a partial mirror leaves out.
    git --git-dir="$SOCKETIO_GIT" archive "$commit:${suite_dir[$s]}" | tar -x -C "$WORK/$s"
    [ -f "$WORK/$s/test-suite.js" ] || die "no test-suite.js in ${suite_dir[$s]} at $commit"
    # Modules: symlinks into Debian's tree, plus the chai-string stand-in.
    mkdir -p "$WORK/$s/node_modules"
    for m in /usr/share/nodejs/*; do ln -s "$m" "$WORK/$s/node_modules/$(basename "$m")"; done
    mkdir -p "$WORK/$s/node_modules/chai-string"
    cat >"$WORK/$s/node_modules/chai-string/package.json" <<'EOF'
{ "name": "chai-string", "version": "0.0.0-local", "main": "index.js" }
EOF
    cat >"$WORK/$s/node_modules/chai-string/index.js" <<'EOF'
// Local stand-in for chai-string (not packaged in Debian): startsWith/startWith
// and endsWith/endWith, the matchers the protocol test suites use.
module.exports = function (chai) {
  const add = (names, test, verb) => {
    for (const name of names) {
      chai.Assertion.addChainableMethod(name, function (expected) {
        const actual = this._obj;
        this.assert(
          typeof actual === "string" && typeof expected === "string" && test(actual, expected),
          `expected #{this} to ${verb} #{exp}`,
          `expected #{this} not to ${verb} #{exp}`,
          expected, actual);
      });
    }
  };
  add(["startsWith", "startWith"], (a, e) => a.startsWith(e), "start with");
  add(["endsWith", "endWith"], (a, e) => a.endsWith(e), "end with");
};
EOF
done

# --- the server ------------------------------------------------------------------
waited=0
while [ ! -x "$BIN" ]; do
    [ "$waited" -ge "$BIN_WAIT_SECONDS" ] && die "$BIN did not appear within ${BIN_WAIT_SECONDS}s"
    echo "waiting for $BIN ($waited s so far)"
    sleep 30
    waited=$((waited + 30))
done
# Wait until the binary is no longer being written (size and mtime steady for 5 s).
while :; do
    a="$(stat -c '%s %Y' "$BIN")"; sleep 5; b="$(stat -c '%s %Y' "$BIN")"
    [ "$a" = "$b" ] && break
    echo "$BIN is still changing; waiting"
done
# Run a private copy, so a rebuild during the run cannot swap it out.
cp "$BIN" "$WORK/socketio-conformance"

if [ -z "${PORT:-}" ]; then
    PORT="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
fi
URL="http://127.0.0.1:$PORT"
for s in "${suites[@]}"; do
    if [ "${FETCH_KEEPALIVE:-1}" = 0 ]; then
        sed -i 's#^globalThis.fetch = fetch;$#import { Agent } from "node:http";\nconst noKeepAlive = new Agent({ keepAlive: false });\nglobalThis.fetch = (url, options = {}) => fetch(url, { agent: noKeepAlive, ...options });#' \
            "$WORK/$s/node-imports.js"
        grep -q noKeepAlive "$WORK/$s/node-imports.js" || die "could not patch $s/node-imports.js"
    fi
    sed -i "s#http://localhost:3000#$URL#" "$WORK/$s/test-suite.js"
    grep -q "const URL = \"$URL\"" "$WORK/$s/test-suite.js" || die "could not point $s/test-suite.js at $URL"
done

server_log="$WORK/server.log"
"$WORK/socketio-conformance" --host 127.0.0.1 --port "$PORT" >"$server_log" 2>&1 &
server_pid=$!
stop_server() {
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT
for _ in $(seq 100); do
    grep -q "listening" "$server_log" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; die "server exited"; }
    sleep 0.1
done
grep -q "listening" "$server_log" || die "server did not start listening on $PORT"
echo "server: $BIN (copy) on $URL, pid $server_pid, log $server_log"
echo "suites: socketio/socket.io@$commit in $WORK"
[ "${FETCH_KEEPALIVE:-1}" = 0 ] && echo "diagnostic mode: node-fetch without keep-alive (FETCH_KEEPALIVE=0)"

# --- run ---------------------------------------------------------------------------
export NODE_PATH=/usr/share/nodejs
export NODE_PRESERVE_SYMLINKS=1
total_pass=0
total_fail=0
declare -A expected=([engine.io]=25 [socket.io]=32)
for s in "${suites[@]}"; do
    (cd "$WORK/$s" && node "$MOCHA" --exit --reporter json \
        --reporter-option "output=$WORK/$s-results.json" test-suite.js \
        >"$WORK/$s-mocha.log" 2>&1) || true
    [ -s "$WORK/$s-results.json" ] || { cat "$WORK/$s-mocha.log" >&2; die "mocha wrote no results for $s"; }
    read -r p f < <(node -e '
const r = require(process.argv[1]);
console.log(`${r.stats.passes} ${r.stats.failures}`);
' "$WORK/$s-results.json")
    echo
    echo "== $s suite: $p passed, $f failed (of $((p + f)); the suite has ${expected[$s]} tests)"
    node -e '
const r = require(process.argv[1]);
for (const t of r.failures) {
  const msg = (t.err && (t.err.message || t.err.code)) || "(no message)";
  console.log(`  FAIL ${t.fullTitle}\n       ${msg.split("\n")[0]}`);
}' "$WORK/$s-results.json"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
done

stop_server
trap - EXIT
echo
echo "results: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
