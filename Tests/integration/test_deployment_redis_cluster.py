"""Deployment on a Redis Cluster (issue 15): docker/docker-compose.redis-cluster.yml
validates, runs six cluster nodes and its init step under the scalable edges with the
flags `switchboard serve` reads — and its init script, run for real against six local
cluster-enabled redis-servers (service names and addresses mapped onto loopback ports),
builds a working 3-master, 3-replica cluster, and is a no-op when run again.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from switchboard_harness import switchboard_bin
from test_redis_cluster import RedisCluster

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker/docker-compose.redis-cluster.yml"


def compose_config() -> dict:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is not installed (scripts/deps.sh test installs Debian's docker-compose)"
    result = subprocess.run([compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_cluster_compose_validates_and_wires_edges_to_the_cluster():
    config = compose_config()
    services = config["services"]
    nodes = [f"redis-{i}" for i in range(1, 7)]
    for name in nodes:
        command = services[name]["command"]
        assert command[:3] == ["redis-server", "--cluster-enabled", "yes"], command
        assert "healthcheck" in services[name]
    init = services["cluster-init"]
    script = init["command"][0]
    assert "--cluster-replicas 1" in script and "--cluster create" in script
    assert set(init["depends_on"]) == set(nodes)
    edge = services["edge"]
    assert edge["depends_on"]["cluster-init"]["condition"] == "service_completed_successfully"
    env = edge["environment"]
    url = env["REDIS_URL"]
    assert url.startswith("redis+cluster://"), url
    for seed in url.removeprefix("redis+cluster://").split(","):
        host, port = seed.split(":")
        assert host in nodes and port == "6379", seed
    assert int(env["SWITCHBOARD_REDIS_MIN_REPLICAS"]) == 1
    # Scalable: no fixed name, no host port, node ids from the hostname.
    assert "container_name" not in edge and "ports" not in edge and "NODE_ID" not in env
    assert services["lb"]["ports"][0]["target"] == 8080
    text = COMPOSE.read_text()
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in text
    assert f'- "{env["PORT"]}"' in text and f"edge:{env['PORT']}" in (ROOT / "docker/haproxy.cfg").read_text()
    # Every setting is one `switchboard serve` documents (secrets are environment only).
    help_text = subprocess.run([switchboard_bin(), "serve", "--help"], capture_output=True, text=True).stdout
    help_text = re.sub(r"\s+", " ", help_text)
    for name in set(env) - {"SWITCHBOARD_SECRET", "SWITCHBOARD_API_KEY"}:
        assert f"({name})" in help_text, f"serve --help does not document {name}"


WRAPPER = """#!{python}
# redis-cli with the compose service names and their addresses mapped to loopback ports.
import os, sys
ports = dict(item.split("=") for item in os.environ["SB_PORTS"].split(","))
args = []
it = iter(sys.argv[1:])
for arg in it:
    if arg == "-h":
        args += ["-h", "127.0.0.1", "-p", ports[next(it)]]
        continue
    if arg.startswith("10.99.0.") and arg.endswith(":6379"):
        arg = "127.0.0.1:" + ports["redis-" + arg.split(".")[3].split(":")[0]]
    args.append(arg)
os.execv("{real}", ["redis-cli"] + args)
"""

GETENT = """#!/bin/sh
# getent hosts redis-N → 10.99.0.N
echo "10.99.0.${2#redis-} $2"
"""


def test_cluster_init_script_builds_the_cluster(redis_server_binary):
    # `config` keeps compose's `$$` escapes; the container's shell sees single `$`.
    script = compose_config()["services"]["cluster-init"]["command"][0].replace("$$", "$")
    cluster = RedisCluster()
    try:
        for server in cluster.servers:
            server.start()
        bin_dir = Path(tempfile.mkdtemp(prefix="sb-init-"))
        (bin_dir / "redis-cli").write_text(WRAPPER.replace("{python}", sys.executable).replace("{real}", shutil.which("redis-cli")))
        (bin_dir / "getent").write_text(GETENT)
        for tool in ("redis-cli", "getent"):
            (bin_dir / tool).chmod(0o755)
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
                   SB_PORTS=",".join(f"redis-{i + 1}={s.port}" for i, s in enumerate(cluster.servers)))
        for attempt in ("create", "again"):
            result = subprocess.run(["sh", "-ec", script], env=env, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, (attempt, result.stdout[-2000:], result.stderr[-2000:])
            if attempt == "again":
                assert "Performing hash slots allocation" not in result.stdout, "the init step ran twice"
        cluster.wait_ok()
        cluster.wait_replicated()
        masters = cluster.masters()
        assert len(masters) == 3 and sum(hi - lo + 1 for m in masters for lo, hi in m["ranges"]) == 16384
    finally:
        cluster.stop()
