"""Smoke runs of `switchboard bench` against one node: every accepted message reaches
every subscriber exactly once. A correctness check of the load generator and the fan-out,
never a speed test (performance is measured by benchmarks/run.sh, not here)."""

from __future__ import annotations


import pytest

import switchboard_harness as h


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
def test_bench_fan_out_loses_nothing(node_factory, transport: str) -> None:
    node = node_factory(node_id=f"bench-{transport}")
    result = h.run_bench(
        [node.url], "--transport", transport, "--subscribers", "200", "--duration", "2", "--rate", "50", "--publish-grace", "60",
        "--room", h.unique_room("bench"), "--pids", str(node.proc.pid),
    )
    ledger = result["ledger"]
    assert result["connected"] == 200 and result["connectFailures"] == 0
    assert result["publishFailures"] == 0
    assert result["accepted"] == result["sent"] == 100
    assert ledger["subscribers"] == 200 and ledger["dropped"] == 0
    assert ledger["lost"] == 0, result
    assert ledger["duplicates"] == 0 and ledger["staleIDs"] == 0 and ledger["unexpected"] == 0, result
    assert ledger["delivered"] == result["sent"] * 200
    assert result["latency"]["count"] == ledger["delivered"]
    assert result["memory"][0]["idleKB"] > 0


def test_bench_refuses_a_wrong_api_key(node_factory) -> None:
    node = node_factory(node_id="bench-key")
    result = h.run_bench([node.url], "--subscribers", "2", "--duration", "0.2", "--rate", "10", api_key="wrong")
    assert result["sent"] > 0 and result["accepted"] == 0
    assert result["publishFailures"] == result["sent"]
