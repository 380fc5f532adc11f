#!/usr/bin/env python3
"""Long-poll load measurement (issue 4, "Done when"): N long-poll subscribers spread over
a cluster of switchboard nodes on one Redis, a publisher pushing M messages/s into their
room through `POST /api/publish`, and an exact account of what every subscriber got.

    python3 scripts/longpoll_load.py                      # 1,000 subscribers, 2 nodes, 100 msg/s, 30 s
    python3 scripts/longpoll_load.py --subscribers 200 --rate 50 --duration 10

Each subscriber is a plain client loop: `GET /poll?token&rooms=load&cursor&wait=25`,
adopting the returned cursor, on the node it was assigned (round robin). Each published
event carries a sequence number and the publisher's send time, so the report counts,
per subscriber, deliveries, lost sequence numbers, duplicates (same sequence twice or the
same message id twice) and the end-to-end latency (publish call → event parsed by the
client). Subscribers run in `--procs` processes (aiohttp, one asyncio loop each).

Starts its own redis-server and nodes (the release binary if it exists, else debug, or
`--bin` / SWITCHBOARD_BIN) on free ports and stops them at the end.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "Tests" / "integration"))

import switchboard_harness as h  # noqa: E402

ROOM = "load"


def pick_binary(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("SWITCHBOARD_BIN"):
        return os.environ["SWITCHBOARD_BIN"]
    release = ROOT / ".build" / "release" / "switchboard"
    return str(release if release.exists() else ROOT / ".build" / "debug" / "switchboard")


# ------------------------------------------------------------------------------------
# Subscriber processes
# ------------------------------------------------------------------------------------


def subscriber_process(final, index: int, subs: list[tuple[str, str]], wait: int, ready, start_flag, published,
                       stop_at, results) -> None:
    """Runs `subs` [(node url, token)] long-poll loops; reports one dict on `results`."""
    import aiohttp

    async def main() -> dict:
        n = len(subs)
        capacity = 1 << 16
        seen = [bytearray(capacity) for _ in range(n)]
        latencies = array.array("d")
        stats = {"deliveries": 0, "dup_seq": 0, "dup_id": 0, "resets": 0, "polls": 0, "http_errors": 0,
                 "exceptions": 0, "other_events": 0, "empty_polls": 0, "max_batch": 0, "error_samples": {}}
        ids_seen: list[set] = [set() for _ in range(n)]
        timeout = aiohttp.ClientTimeout(total=wait + 20)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def poll(url: str, token: str, cursor: str | None) -> dict | None:
                q = f"{url}/poll?token={quote(token, safe='')}&rooms={ROOM}&wait={wait}"
                if cursor is not None:
                    q += f"&cursor={quote(cursor, safe='')}"
                try:
                    async with session.get(q) as r:
                        body = await r.read()
                        stats["polls"] += 1
                        if r.status != 200:
                            stats["http_errors"] += 1
                            key = f"{r.status} {body[:80].decode('utf-8', 'replace')}"
                            stats["error_samples"][key] = stats["error_samples"].get(key, 0) + 1
                            await asyncio.sleep(0.5)
                            return None
                        return json.loads(body)
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                    stats["exceptions"] += 1
                    key = type(e).__name__
                    stats["error_samples"][key] = stats["error_samples"].get(key, 0) + 1
                    await asyncio.sleep(0.5)
                    return None

            cursors: list[str | None] = [None] * n

            async def first(i: int) -> None:
                url, token = subs[i]
                while cursors[i] is None:
                    body = await poll(url, token, None)
                    if body is not None:
                        cursors[i] = body["cursor"]

            # Sequential-ish warm-up in small groups so the nodes are not hit by 1,000 opens at once.
            for k in range(0, n, 50):
                await asyncio.gather(*(first(i) for i in range(k, min(n, k + 50))))
            ready.release()
            while not start_flag.is_set():
                await asyncio.sleep(0.05)

            gots = [0] * n

            async def loop(i: int) -> None:
                url, token = subs[i]
                mine = seen[i]
                while True:
                    body = await poll(url, token, cursors[i])
                    now = time.time()
                    if body is None:
                        continue
                    cursors[i] = body["cursor"]
                    events = body["events"]
                    if not events:
                        stats["empty_polls"] += 1
                    stats["max_batch"] = max(stats["max_batch"], len(events))
                    for ev in events:
                        t = ev.get("type")
                        if t == "load":
                            seq = ev["seq"]
                            stats["deliveries"] += 1
                            if mine[seq]:
                                stats["dup_seq"] += 1
                            else:
                                mine[seq] = 1
                                gots[i] += 1
                                latencies.append(now - ev["sent"])
                            if ev["id"] in ids_seen[i]:
                                stats["dup_id"] += 1
                            ids_seen[i].add(ev["id"])
                        elif t == "reset":
                            stats["resets"] += 1
                        else:
                            stats["other_events"] += 1

            tasks = [asyncio.create_task(loop(i)) for i in range(n)]
            # A subscriber stops once it has every published message (its poll in flight is
            # abandoned), or at the drain deadline.
            while not all(t.done() for t in tasks):
                await asyncio.sleep(0.1)
                deadline = stop_at.value
                for i, t in enumerate(tasks):
                    if not t.done() and ((final.is_set() and gots[i] >= published.value)
                                         or (deadline > 0 and time.time() >= deadline)):
                        t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        total = published.value
        stats["seen"] = [bytes(seen[i][:total]) for i in range(n)]
        stats["latencies"] = latencies.tobytes()
        stats["cpu_s"] = sum(os.times()[:2])
        stats["index"] = index
        return stats

    results.put(asyncio.run(main()))


# ------------------------------------------------------------------------------------
# Publisher
# ------------------------------------------------------------------------------------


async def publish_all(urls: list[str], api_key: str, rate: float, duration: float) -> dict:
    import aiohttp

    total = int(rate * duration)
    ok = 0
    failed = 0
    call_ms: list[float] = []
    statuses: dict[str, int] = {}
    late = 0
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        published: list[int] = []

        async def one(seq: int) -> None:
            nonlocal ok, failed
            body = json.dumps({"room": ROOM, "event": {"type": "load", "seq": seq, "sent": time.time()}})
            t0 = time.monotonic()
            try:
                async with session.post(urls[seq % len(urls)] + "/api/publish", data=body, headers=headers) as r:
                    await r.read()
                    text = await r.text()
                    if r.status == 200:
                        ok += 1
                        published.append(seq)
                    else:
                        failed += 1
                        key = f"{r.status} {text[:80]}"
                        statuses[key] = statuses.get(key, 0) + 1
            except Exception as e:  # noqa: BLE001
                failed += 1
                statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
            call_ms.append((time.monotonic() - t0) * 1000)

        tasks = []
        start = time.monotonic()
        for seq in range(total):
            target = start + seq / rate
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                late += 1
            tasks.append(asyncio.create_task(one(seq)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    return {"total": total, "ok": ok, "failed": failed, "elapsed": elapsed, "late_sends": late,
            "publish_ms_max": max(call_ms) if call_ms else float("nan"), "errors": statuses,
            "publish_ms_p50": pct(call_ms, 50), "publish_ms_p99": pct(call_ms, 99),
            "published_seqs": sorted(published)}


def pct(values, p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--rate", type=float, default=100.0, help="messages per second")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of publishing")
    ap.add_argument("--wait", type=int, default=25, help="the poll's wait= (s)")
    ap.add_argument("--drain", type=float, default=30.0, help="max seconds after publishing for subscribers to catch up")
    ap.add_argument("--procs", type=int, default=2, help="subscriber processes")
    ap.add_argument("--history", type=int, default=None, help="--history of the nodes (default: the server's)")
    ap.add_argument("--bin", default=None, help="switchboard binary (default: release if built, else debug)")
    ap.add_argument("--json", default=None, help="also write the report as JSON to this file")
    args = ap.parse_args()

    binary = pick_binary(args.bin)
    build = "release" if "/release/" in binary else ("debug" if "/debug/" in binary else "custom")
    print(f"binary: {binary} ({build} build); {os.cpu_count()} CPUs", flush=True)

    redis = h.RedisServer().start()
    api_key = "load-" + secrets.token_hex(8)
    extra = ["--log-level", "warning"]
    if args.history:
        extra += ["--history", str(args.history)]
    nodes = [h.SwitchboardNode(node_id=f"load-{i + 1}", redis=redis.url, binary=binary, api_key=api_key,
                               extra_args=extra, log_level="warning") for i in range(args.nodes)]
    procs: list[mp.Process] = []
    try:
        for n in nodes:
            n.start()
            n.wait_ready()
        urls = [n.url for n in nodes]
        print(f"redis {redis.url}; nodes {', '.join(urls)}", flush=True)

        t0 = time.monotonic()
        tag = secrets.token_hex(2)
        subs: list[tuple[str, str]] = []
        with h.http_client(30) as client:
            for i in range(args.subscribers):
                url = urls[i % len(urls)]
                r = client.post(url + "/api/login", json={"nickname": f"lp{tag}-{i}", "avatar": "1.jpg"})
                r.raise_for_status()
                subs.append((url, r.json()["token"]))
        print(f"logged in {len(subs)} subscribers in {time.monotonic() - t0:.1f}s", flush=True)

        ctx = mp.get_context("spawn")
        ready = ctx.Semaphore(0)
        start_flag = ctx.Event()
        final = ctx.Event()
        published = ctx.Value("i", -1)
        stop_at = ctx.Value("d", 0.0)
        results = ctx.Queue()
        chunks = [subs[k::args.procs] for k in range(args.procs)]
        for k, chunk in enumerate(chunks):
            p = ctx.Process(target=subscriber_process,
                            args=(final, k, chunk, args.wait, ready, start_flag, published, stop_at, results))
            p.start()
            procs.append(p)
        t0 = time.monotonic()
        for _ in procs:
            if not ready.acquire(timeout=300):
                raise SystemExit("subscribers did not all complete their first poll in 300 s")
        print(f"{args.subscribers} subscribers polling (first polls took {time.monotonic() - t0:.1f}s)", flush=True)

        cpu0 = {n.node_id: cpu_seconds(n.proc.pid) for n in nodes}
        redis_cpu0 = cpu_seconds(redis.proc.pid)
        start_flag.set()
        time.sleep(1.0)  # every subscriber parked in a long-poll
        print(f"publishing {int(args.rate * args.duration)} messages at {args.rate}/s …", flush=True)
        pub = asyncio.run(publish_all(urls, api_key, args.rate, args.duration))
        # Only sequences 0..ok-1 are expected when every publish succeeded; failures are reported.
        published.value = pub["total"]
        final.set()
        stop_at.value = time.time() + args.drain
        print(f"published {pub['ok']}/{pub['total']} (HTTP 200) in {pub['elapsed']:.1f}s "
              f"(publish call p50 {pub['publish_ms_p50']:.1f} ms, p99 {pub['publish_ms_p99']:.1f} ms, "
              f"late sends {pub['late_sends']}); draining up to {args.drain:.0f}s …", flush=True)
        t_drain = time.monotonic()
        reports = [results.get(timeout=args.drain + args.wait + 60) for _ in procs]
        drain_took = time.monotonic() - t_drain
        cpu1 = {n.node_id: cpu_seconds(n.proc.pid) for n in nodes}
        redis_cpu = cpu_seconds(redis.proc.pid) - redis_cpu0
        rss = {n.node_id: rss_mb(n.proc.pid) for n in nodes}
        for p in procs:
            p.join(10)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for n in nodes:
            n.stop()
        redis.kill()

    confirmed = set(pub["published_seqs"])
    agg = {k: 0 for k in ("deliveries", "dup_seq", "dup_id", "resets", "polls", "http_errors", "exceptions",
                          "other_events", "empty_polls")}
    max_batch = 0
    latencies = array.array("d")
    lost_per_sub: list[int] = []
    delivered_unconfirmed = set()
    client_cpu = 0.0
    poll_errors: dict[str, int] = {}
    for rep in reports:
        for k, v in rep["error_samples"].items():
            poll_errors[k] = poll_errors.get(k, 0) + v
        for k in agg:
            agg[k] += rep[k]
        max_batch = max(max_batch, rep["max_batch"])
        client_cpu += rep["cpu_s"]
        for bitmap in rep["seen"]:
            lost_per_sub.append(sum(1 for seq in confirmed if not bitmap[seq]))
            delivered_unconfirmed.update(seq for seq in range(len(bitmap)) if bitmap[seq] and seq not in confirmed)
        lat = array.array("d")
        lat.frombytes(rep["latencies"])
        latencies.extend(lat)
    expected = len(confirmed) * args.subscribers
    lost_total = sum(lost_per_sub)
    unique = agg["deliveries"] - agg["dup_seq"]
    lat_ms = sorted(x * 1000 for x in latencies)
    report = {
        "binary": binary, "build": build, "cpus": os.cpu_count(), "nodes": args.nodes,
        "subscribers": args.subscribers, "rate": args.rate, "duration": args.duration, "wait": args.wait,
        "publish_attempted": pub["total"], "publish_200": pub["ok"], "publish_failed_or_timed_out": pub["failed"],
        "failed_publishes_delivered_anyway": len(delivered_unconfirmed),
        "publish_elapsed_s": round(pub["elapsed"], 2), "late_sends": pub["late_sends"],
        "publish_call_ms_p50": round(pub["publish_ms_p50"], 1), "publish_call_ms_p99": round(pub["publish_ms_p99"], 1),
        "publish_call_ms_max": round(pub["publish_ms_max"], 1),
        "expected_deliveries": expected, "deliveries": agg["deliveries"], "unique_deliveries": unique,
        "lost": lost_total, "loss_pct": round(100 * lost_total / expected, 4) if expected else None,
        "subscribers_with_loss": sum(1 for x in lost_per_sub if x > 0),
        "duplicates_by_seq": agg["dup_seq"], "duplicates_by_id": agg["dup_id"], "resets": agg["resets"],
        "polls": agg["polls"], "empty_polls": agg["empty_polls"], "max_batch": max_batch,
        "events_per_poll": round(agg["deliveries"] / max(1, agg["polls"]), 2),
        "http_errors": agg["http_errors"], "client_exceptions": agg["exceptions"], "poll_errors": poll_errors,
        "publish_errors": pub["errors"],
        "latency_ms_p50": round(pct(lat_ms, 50), 1), "latency_ms_p90": round(pct(lat_ms, 90), 1),
        "latency_ms_p99": round(pct(lat_ms, 99), 1), "latency_ms_max": round(lat_ms[-1], 1) if lat_ms else None,
        "drain_s": round(drain_took, 1),
        "cpu_s": {**{k: round(cpu1[k] - cpu0[k], 1) for k in cpu0}, "redis": round(redis_cpu, 1),
                  "subscriber_procs": round(client_cpu, 1)},
        "wall_s_publish_plus_drain": round(pub["elapsed"] + drain_took, 1),
        "node_rss_mb": {k: round(v) for k, v in rss.items()},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if lost_total == 0 and agg["dup_seq"] == 0 and pub["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
