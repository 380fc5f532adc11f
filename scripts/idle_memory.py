#!/usr/bin/env python3
"""Idle memory per WebSocket connection: VmRSS of a `switchboard serve` process before
and after N idle connections (each logged in, in room `lobby`).

    python3 scripts/idle_memory.py --bin .build/release/switchboard --connections 1000
"""
import argparse, asyncio, os, resource, socket, subprocess, sys, time
import httpx
from websockets.asyncio.client import connect


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = free_port()
    env = dict(os.environ, SWITCHBOARD_SECRET="bench", LOG_LEVEL="warning")
    proc = subprocess.Popen([args.bin, "serve", "--host", "127.0.0.1", "--port", str(port)] + args.extra,
                            env=env, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    if (await http.get(base + "/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            # Warm up: one connection, so lazily created structures exist before "before".
            warm = (await http.post(base + "/api/login", json={"nickname": "warm"})).json()["token"]
            async with connect(f"ws://127.0.0.1:{port}/ws?token={warm}&rooms=lobby") as ws:
                await ws.recv()
            await asyncio.sleep(1)
            tokens = []
            for i in range(args.connections):
                r = await http.post(base + "/api/login", json={"nickname": f"u{i}", "avatar": "1.jpg"})
                tokens.append(r.json()["token"])
        before = rss_kb(proc.pid)
        sockets = []
        sem = asyncio.Semaphore(100)

        async def open_one(token):
            async with sem:
                ws = await connect(f"ws://127.0.0.1:{port}/ws?token={token}&rooms=lobby", ping_interval=None,
                                   max_queue=None)
                await ws.recv()  # welcome
                sockets.append(ws)

        t0 = time.monotonic()
        await asyncio.gather(*(open_one(t) for t in tokens))
        opened = time.monotonic() - t0
        await asyncio.sleep(args.settle)
        after = rss_kb(proc.pid)
        per = (after - before) * 1024 / args.connections
        print(f"connections={args.connections} open_time={opened:.2f}s rss_before={before} KB rss_after={after} KB "
              f"per_connection={per / 1024:.1f} KB ({per:.0f} bytes)")
        for ws in sockets:
            await ws.close()
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=".build/debug/switchboard")
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("extra", nargs="*")
    asyncio.run(main(p.parse_args()))
