"""Publish-heavy bench (issue 15): one Redis vs a 3-master Redis Cluster, same three edges.

Many rooms, a high message rate, few subscribers per room: `switchboard bench` publishes
through edge 1 (`POST /api/publish`) to `--rooms` rooms round robin, subscribers spread
over the three edges (two thirds of deliveries cross nodes). Reported per run: deliveries/s,
publish→arrival p50/p99, loss, and the CPU every redis-server process used during the run
(utime+stime from /proc) divided by the messages accepted.

    SWITCHBOARD_BIN=.build/release/switchboard [RATE=2000] python3 benchmarks/redis_cluster.py [runs]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests/integration"))
import switchboard_harness as h  # noqa: E402
from test_redis_cluster import cluster_port  # noqa: E402

RATE = int(os.environ.get("RATE", "2000"))
DURATION, SUBSCRIBERS, ROOMS = 10, 300, 100
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cluster_servers() -> tuple[list[h.RedisServer], str]:
    import subprocess
    import tempfile
    directory = tempfile.mkdtemp(prefix="sb-bench-cluster-")
    servers = []
    for _ in range(3):
        port = cluster_port()
        servers.append(h.RedisServer(port=port, extra_args=[
            "--cluster-enabled", "yes", "--cluster-config-file", f"{directory}/nodes-{port}.conf", "--dir", directory]).start())
    subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers), "--cluster-yes"],
                   check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 30
    while not all("cluster_state:ok" in s.command("CLUSTER", "INFO") for s in servers):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return servers, "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)


def one_run(mode: str) -> dict:
    if mode == "single":
        servers = [h.RedisServer().start()]
        url = servers[0].url
    else:
        servers, url = cluster_servers()
    nodes = []
    try:
        nodes = [h.SwitchboardNode(node_id=f"edge-{i}", redis=url).start() for i in (1, 2, 3)]
        for n in nodes:
            n.wait_ready(30)
        before = sum(cpu_seconds(s.proc.pid) for s in servers)
        result = h.run_bench([n.url for n in nodes], "--subscribers", str(SUBSCRIBERS), "--rooms", str(ROOMS),
                             "--rate", str(RATE), "--duration", str(DURATION), "--publishers", "4", timeout=300)
        redis_cpu = sum(cpu_seconds(s.proc.pid) for s in servers) - before
        return {"mode": mode, "deliveries_per_s": result["deliveriesPerSecond"], "accepted": result["accepted"],
                "p50_ms": result["latency"]["p50"], "p99_ms": result["latency"]["p99"],
                "lost": result["ledger"].get("lost"), "redis_cpu_s": redis_cpu,
                "redis_cpu_us_per_msg": redis_cpu / max(1, result["accepted"]) * 1e6}
    finally:
        for n in nodes:
            n.stop()
        for s in servers:
            s.kill()


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for _ in range(runs):
        for mode in ("single", "cluster"):
            print(json.dumps(one_run(mode)), flush=True)
