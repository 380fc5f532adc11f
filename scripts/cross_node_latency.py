#!/usr/bin/env python3
"""Cross-node latency of a `say` (issue 3, "Done when").

Starts a throw-away redis-server and two `switchboard serve` nodes (or uses running ones
with --node-url), logs in N distinct nicknames, opens N WebSocket subscribers in one
room spread evenly over the two nodes (in worker processes, so the Python clients are not
the bottleneck), then a sender on node 1 says M messages at R per second (`echo:false`).
Each text carries the sender's CLOCK_MONOTONIC (system-wide on Linux, so comparable
across the processes of this machine); latency = receive time − send time, taken when
the subscriber's process reads the frame.

Reports p50/p90/p99/max for the subscribers on the other node (cross-node: the number
asked for) and on the sender's node (same node, for reference), plus losses and
duplicates (by message id).

    python3 scripts/cross_node_latency.py                       # release build if present, else debug
    python3 scripts/cross_node_latency.py --bin .build/debug/switchboard --subscribers 1000 --messages 200 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "Tests" / "integration"))


def raise_fd_limit(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pick_binary(explicit: str | None) -> tuple[str, str]:
    if explicit:
        return explicit, "given"
    release = ROOT / ".build" / "release" / "switchboard"
    if release.exists():
        return str(release), "release"
    return str(ROOT / ".build" / "debug" / "switchboard"), "debug (no release build found)"


# --------------------------------------------------------------------------------------
# Subscriber worker (a separate process)
# --------------------------------------------------------------------------------------


def worker_main(index: int, targets: list[tuple[str, str]], room: str, pipe, batch: int) -> None:
    """targets: (ws url, token). Reports ("ready", connected, errors), waits for "stop",
    reports ("results", [(ws_url, [(seq, recv_ns, id), …]), …])."""
    raise_fd_limit()
    asyncio.run(_worker(index, targets, room, pipe, batch))


async def _worker(index: int, targets, room, pipe, batch: int) -> None:
    from websockets.asyncio.client import connect as ws_connect
    from urllib.parse import urlencode

    loop = asyncio.get_running_loop()
    buffers: list[list] = [[] for _ in targets]
    sockets: list = [None] * len(targets)
    closes: dict[int, str] = {}
    errors: list[str] = []
    gate = asyncio.Semaphore(16)

    async def reader(i: int, ws) -> None:
        buf = buffers[i]
        try:
            async for frame in ws:
                buf.append((time.monotonic_ns(), frame))
        except Exception as e:  # noqa: BLE001
            closes[i] = repr(e)
        else:
            closes[i] = f"closed: {ws.close_code} {ws.close_reason!r}"

    async def open_one(i: int) -> None:
        url, token = targets[i]
        async with gate:
            try:
                ws = await ws_connect(f"{url}?{urlencode({'token': token, 'rooms': room})}", proxy=None,
                                      open_timeout=90, max_size=None, ping_interval=None, close_timeout=1)
                first = json.loads(await asyncio.wait_for(ws.recv(), 90))
                assert first.get("type") == "welcome", first
            except Exception as e:  # noqa: BLE001
                errors.append(f"{url}: {e!r}")
                return
        sockets[i] = ws
        asyncio.create_task(reader(i, ws))

    async def quiet(seconds: float, cap: float) -> None:
        start, last, since = time.monotonic(), -1, time.monotonic()
        while time.monotonic() - start < cap:
            total = sum(len(b) for b in buffers)
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return
            await asyncio.sleep(0.05)

    # In batches: every join sends `joined` (and a coalesced `presence`) to the whole
    # room, so N joins make ~N²/2 frames; all at once they overflow the server's
    # per-connection queues (slow-consumer disconnects) of a Python client.
    for first in range(0, len(targets), batch):
        await asyncio.gather(*(open_one(i) for i in range(first, min(first + batch, len(targets)))))
        await quiet(0.3, 30)
    pipe.send(("ready", sum(1 for s in sockets if s is not None), errors[:5]))
    # Settle: the join storm (every join sends `joined` and `presence` to the room) must
    # be over before measuring — wait until no frame has arrived for 2 s (at most 300 s).
    start, last_total, quiet_since = time.monotonic(), -1, time.monotonic()
    while time.monotonic() - start < 300:
        total = sum(len(b) for b in buffers)
        if total != last_total:
            last_total, quiet_since = total, time.monotonic()
        elif time.monotonic() - quiet_since >= 2.0:
            break
        await asyncio.sleep(0.25)
    pipe.send(("settled", last_total, len(closes), list(closes.values())[:3], time.monotonic() - start))
    await loop.run_in_executor(None, pipe.recv)  # "stop"
    closed_during_run = dict(closes)
    await asyncio.gather(*(s.close() for s in sockets if s is not None), return_exceptions=True)

    results = []
    for i, buf in enumerate(buffers):
        if sockets[i] is None:
            continue
        got = []
        for t, frame in buf:
            if '"lat ' not in frame:
                continue
            event = json.loads(frame)
            if event.get("type") != "message" or event.get("room") != room:
                continue
            parts = event["text"].split()
            got.append((int(parts[1]), t, event["id"], int(parts[2])))
        results.append((targets[i][0], got))
    pipe.send(("results", results, len(closed_during_run), list(closed_during_run.values())[:3]))


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


async def login_all(base_urls: list[str], count: int, tag: str) -> list[tuple[str, str]]:
    """Logs in `count` nicknames, alternating nodes; returns (node base url, token)."""
    import httpx

    out: list = [None] * count
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        async def one(i: int) -> None:
            base = base_urls[i % len(base_urls)]
            async with gate:
                r = await client.post(base + "/api/login", json={"nickname": f"lat-{tag}-{i}", "avatar": "1.jpg"})
            assert r.status_code == 200, f"login {i}: {r.status_code} {r.text}"
            out[i] = (base, r.json()["token"])
        await asyncio.gather(*(one(i) for i in range(count)))
    return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


def summary(name: str, lat_ms: list[float]) -> str:
    if not lat_ms:
        return f"{name}: no deliveries"
    return (f"{name}: n={len(lat_ms)} p50={pct(lat_ms, 50):.2f} ms p90={pct(lat_ms, 90):.2f} ms "
            f"p99={pct(lat_ms, 99):.2f} ms max={max(lat_ms):.2f} ms mean={statistics.fmean(lat_ms):.2f} ms")


async def send_messages(node1_url: str, room: str, count: int, rate: float, tag: str, warmup: int) -> dict:
    import httpx
    from websockets.asyncio.client import connect as ws_connect
    from urllib.parse import urlencode

    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        r = await client.post(node1_url + "/api/login", json={"nickname": f"lat-{tag}-sender", "avatar": "1.jpg"})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
    ws_url = node1_url.replace("http://", "ws://") + "/ws"
    acks: dict = {}
    errors: list = []
    async with ws_connect(f"{ws_url}?{urlencode({'token': token, 'rooms': room})}", proxy=None, max_size=None,
                          ping_interval=None) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome.get("type") == "welcome", welcome

        async def reader() -> None:
            async for frame in ws:
                e = json.loads(frame)
                if e.get("type") == "ack":
                    acks[e["ref"]] = e.get("id")
                elif e.get("type") == "error":
                    errors.append(e)

        task = asyncio.create_task(reader())
        interval = 1.0 / rate
        start = time.monotonic()
        total = warmup + count
        for i in range(total):
            target = start + i * interval
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            seq = i - warmup  # negative: warm-up, not counted
            await ws.send(json.dumps({"type": "say", "room": room, "echo": False, "ref": i,
                                      "text": f"lat {seq} {time.monotonic_ns()}"}))
        send_duration = time.monotonic() - start
        deadline = time.monotonic() + 10
        while len(acks) + len(errors) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
    return {"acks": acks, "errors": errors, "send_duration": send_duration, "total": total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="switchboard binary (default: .build/release/switchboard if it exists, else debug)")
    ap.add_argument("--node-url", action="append", default=[],
                    help="use running nodes instead (give two; the first sends): http://host:port")
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--rate", type=float, default=19.0, help="messages per second (the server allows 20/s per connection, bursts of 40)")
    ap.add_argument("--warmup", type=int, default=5, help="messages sent first and not counted")
    ap.add_argument("--workers", type=int, default=2, help="subscriber processes")
    ap.add_argument("--connect-timeout", type=float, default=900, help="seconds allowed to connect every subscriber")
    ap.add_argument("--batch", type=int, default=20, help="connections a worker opens at a time (then waits for quiet)")
    ap.add_argument("--drain", type=float, default=5.0, help="seconds to wait for stragglers after the last send")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()

    fd_limit = raise_fd_limit()  # inherited by the nodes and redis-server we start
    import switchboard_harness as h  # noqa: E402

    tag = os.urandom(3).hex()
    room = f"lat-{tag}"
    started: list = []
    redis = None
    try:
        if args.node_url:
            assert len(args.node_url) == 2, "give --node-url twice"
            urls = args.node_url
            build = "running nodes"
        else:
            binary, build = pick_binary(args.bin)
            redis = h.RedisServer().start()
            for i in (1, 2):
                n = h.SwitchboardNode(node_id=f"lat-{i}", redis=redis.url, binary=binary, log_level=args.log_level)
                started.append(n.start())
            for n in started:
                n.wait_ready(30)
            urls = [n.url for n in started]
            print(f"binary: {binary} [{build}]; redis {redis.url}; nodes {urls}; logs in {h.log_dir()}", flush=True)
        print(f"fd limit {fd_limit}; {args.subscribers} subscribers in room {room!r} over 2 nodes, "
              f"{args.workers} worker processes; {args.messages} messages at {args.rate}/s from node 1", flush=True)

        t0 = time.monotonic()
        creds = asyncio.run(login_all(urls, args.subscribers, tag))
        print(f"logged in {len(creds)} nicknames in {time.monotonic() - t0:.1f}s", flush=True)
        targets = [(base.replace("http://", "ws://") + "/ws", token) for base, token in creds]

        ctx = mp.get_context("spawn")
        workers = []
        for w in range(args.workers):
            parent, child = ctx.Pipe()
            share = targets[w::args.workers]
            p = ctx.Process(target=worker_main, args=(w, share, room, child, args.batch), daemon=True)
            p.start()
            workers.append((p, parent))
        t0 = time.monotonic()
        connected = 0
        for p, pipe in workers:
            if not pipe.poll(max(1.0, args.connect_timeout - (time.monotonic() - t0))):
                raise RuntimeError(f"a worker did not connect its subscribers within {args.connect_timeout} s")
            kind, n, errs = pipe.recv()
            connected += n
            if errs:
                print(f"connect errors (first few): {errs}", flush=True)
        print(f"connected {connected}/{len(targets)} subscribers in {time.monotonic() - t0:.1f}s", flush=True)
        for p, pipe in workers:
            if not pipe.poll(400):
                raise RuntimeError("a worker did not settle")
            _, frames, nclosed, why, took = pipe.recv()
            print(f"worker settled after {took:.1f}s: {frames} frames received while connecting (join storm), "
                  f"{nclosed} connections closed {why}", flush=True)

        sent = asyncio.run(send_messages(urls[0], room, args.messages, args.rate, tag, args.warmup))
        time.sleep(args.drain)
        for p, pipe in workers:
            pipe.send("stop")
        results = []
        for p, pipe in workers:
            if not pipe.poll(120):
                raise RuntimeError("a worker did not report")
            kind, data, nclosed, why = pipe.recv()
            results.extend(data)
            if nclosed:
                print(f"a worker's connections closed by the end: {nclosed} {why}", flush=True)
            p.join(10)

        # ---- analysis ----
        node1_ws = urls[0].replace("http://", "ws://") + "/ws"
        acked = {ref - args.warmup: ident for ref, ident in sent["acks"].items() if ref >= args.warmup}
        cross, same = [], []
        missing = duplicates = 0
        per_sub_missing: list[int] = []
        for url, got in results:
            counted = [g for g in got if g[0] >= 0]
            ids = [g[2] for g in counted]
            duplicates += len(ids) - len(set(ids))
            seen_seqs = {g[0] for g in counted}
            miss = sum(1 for seq in acked if seq not in seen_seqs)
            missing += miss
            per_sub_missing.append(miss)
            first = {}
            for seq, t, ident, sent_ns in counted:
                first.setdefault(seq, (t - sent_ns) / 1e6)
            (same if url == node1_ws else cross).extend(first.values())
        expected = len(acked) * len(results)
        print()
        print(f"sent {sent['total']} (incl. {args.warmup} warm-up) in {sent['send_duration']:.1f}s; "
              f"acked {len(sent['acks'])}; errors {len(sent['errors'])} {sent['errors'][:3]}")
        print(summary(f"CROSS-NODE (subscribers on node 2, {sum(1 for u, _ in results if u != node1_ws)})", cross))
        print(summary(f"same node  (subscribers on node 1, {sum(1 for u, _ in results if u == node1_ws)})", same))
        print(summary("all", cross + same))
        print(f"deliveries expected {expected}, missing {missing} "
              f"({sum(1 for m in per_sub_missing if m)} subscribers missed something), duplicates {duplicates}")
        print(f"build: {build}")
        return 0
    finally:
        for n in started:
            n.stop()
        if redis is not None:
            redis.kill()


if __name__ == "__main__":
    sys.exit(main())
