#!/usr/bin/env python3
"""What "accepted means replicated" costs: the latency of a `say` until its `ack`, on one
node over a Redis master with one replica, with `--redis-min-replicas 0` and `1`.

    SWITCHBOARD_BIN=.build/release/switchboard python3 benchmarks/replication_latency.py

For each setting, WRITERS WebSocket connections (default 1 and 16) each send `say`,
wait for the answer and send the next at once (closed loop; the node's rate limit is
lifted), for SECONDS_PER_RUN seconds; it prints the ack latency
p50/p99 and the acks per second. Every process runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "integration"))

import switchboard_harness as h  # noqa: E402
from switchboard_harness import Clients  # noqa: E402

SECONDS = float(os.environ.get("SECONDS_PER_RUN", "8"))
WRITERS = [int(w) for w in os.environ.get("WRITERS", "1,16").split(",")]


async def measure(node: h.SwitchboardNode, writers: int) -> tuple[list[float], int]:
    room = h.unique_room("lat")
    latencies: list[float] = []
    refused = 0

    async with Clients() as c:
        clients = [(await c.user(node, h.unique_name("w"), rooms=[room]))[0] for _ in range(writers)]

        async def writer(client) -> None:
            nonlocal refused
            deadline = time.monotonic() + SECONDS
            i = 0
            while time.monotonic() < deadline:
                ref = f"r{i}"
                sent = time.perf_counter()
                await client.send({"type": "say", "room": room, "text": f"m{i}", "ref": ref, "echo": False})
                answer = await client.recv_until(lambda e: e.get("ref") == ref, 10)
                if answer.get("type") == "ack":
                    latencies.append((time.perf_counter() - sent) * 1000)
                else:
                    refused += 1
                i += 1

        await asyncio.gather(*(writer(x) for x in clients))
    return latencies, refused


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    master = h.RedisServer().start()
    replica = h.RedisServer(extra_args=["--replicaof", "127.0.0.1", str(master.port), "--dir", str(h.log_dir())]).start()
    try:
        deadline = time.monotonic() + 15
        while "master_link_status:up" not in replica.command("INFO", "replication"):
            assert time.monotonic() < deadline, "replica not linked"
            time.sleep(0.1)
        for replicas in (0, 1):
            node = h.SwitchboardNode(redis=master.url, extra_args=["--redis-min-replicas", str(replicas),
                                                                   "--rate", "100000", "--burst", "100000"]).start()
            try:
                node.wait_ready(20)
                for writers in WRITERS:
                    latencies, refused = h.run(measure(node, writers), SECONDS + 60)
                    print(f"min-replicas {replicas}, {writers:2d} writers: ack p50 {percentile(latencies, 50):.2f} ms, "
                          f"p99 {percentile(latencies, 99):.2f} ms, {len(latencies) / SECONDS:.0f} acks/s, "
                          f"{refused} refused", flush=True)
            finally:
                node.stop()
    finally:
        replica.kill()
        master.kill()


if __name__ == "__main__":
    main()
