"""Hangar side of the peers benchmark (see bench/peers/run).

Starts the release binary as a user would (`hangar server --config FILE`,
SQLite in a temporary data directory, or PostgreSQL with --database-url; no
local worker; rate limits off in the config file), takes the admin API key
the first start prints, creates a team key for the workers
(`POST /api/v1/api-keys {"team": true}`), then measures:

1. idle RSS of the server process;
2. dispatch latency, unloaded: L runs created one after the other
   (`POST /api/v1/agent/runs {"prompt": "bench"}`), each after the previous
   assignment arrived; POST sent → `task_assignment` received by one of the W
   protocol-level workers (matched by run id);
3. throughput: N runs created by C concurrent HTTP clients (keep-alive
   connections spread over P processes) and completed at once by W
   protocol-level workers (spread over processes too) that answer each
   `task_assignment` with `task_claimed` then `task_completed`; from the
   clients' release until the API lists no queued or running run; then every
   created run is checked through the API to be SUCCEEDED, listed once and
   assigned once;
4. server RSS with M idle workers connected (jittered ramp and reconnects),
   and how long connecting all of them took;
5. optionally (--duration S) a sustained phase at --rate runs/s, printing the
   server's RSS every 30 s and the same no-loss check at the end.

`--only idle` runs phase 4 alone.

Writes the figures as JSON (--json) for bench/peers/report.py.
"""

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "peers"))
import common  # noqa: E402
from common import log  # noqa: E402

NON_TERMINAL = ("QUEUED", "PENDING", "CLAIMED", "INPROGRESS")


# ---------------------------------------------------------------- HTTP client


class Http:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (the load
    generator must cost less than the server it measures)."""

    def __init__(self, url, key):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.key = key
        self.reader = self.writer = None

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method, path, body=None):
        if self.writer is None:
            await self.connect()
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.key}\r\n"
            + ("Content-Type: application/json\r\n" if body is not None else "")
            + f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        self.writer.write(head + data)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length, chunked = None, False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            payload = b"".join(parts)
        else:
            payload = await self.reader.readexactly(length or 0)
        return status, payload

    async def json(self, method, path, body=None, ok=(200, 201)):
        status, payload = await self.request(method, path, body)
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
        return json.loads(payload) if payload else None

    def close(self):
        if self.writer is not None:
            self.writer.close()


def sync_json(url, key, method, path, body=None):
    async def go():
        h = Http(url, key)
        try:
            return await h.json(method, path, body)
        finally:
            h.close()

    return asyncio.run(go())


# ------------------------------------------------------- protocol-level worker


def ws_url(url, worker_id):
    u = urllib.parse.urlsplit(url)
    return f"ws://{u.hostname}:{u.port}/api/v1/selfhosted/worker/ws?worker_id={worker_id}"


def hello_frame():
    # As crates/hangar-cli/benches/dispatch.rs `protocol_worker` sends it.
    return json.dumps({"type": "worker_hello", "data": {
        "version": "bench", "backend": "none", "max_concurrent_tasks": 0,
        "labels": {}, "running": []}})


def claimed_and_completed(assignment, worker_id):
    # As dispatch.rs `claimed_and_completed`: task_claimed then task_completed.
    task_id, execution_id = assignment["task_id"], assignment["execution_id"]
    return (
        json.dumps({"type": "task_claimed", "data": {
            "task_id": task_id, "worker_id": worker_id, "execution_id": execution_id}}),
        json.dumps({"type": "task_completed", "data": {
            "task_id": task_id, "message": "ok", "execution_id": execution_id}}),
    )


async def open_worker(url, key, worker_id, open_timeout=30):
    from websockets.asyncio.client import connect

    # No permessage-deflate (a protocol worker of Hangar's does not ask for
    # it); the server's pings are answered by the library; no client pings.
    ws = await connect(
        ws_url(url, worker_id),
        additional_headers={"Authorization": f"Bearer {key}"},
        compression=None,
        ping_interval=None,
        open_timeout=open_timeout,
        max_queue=None,
    )
    await ws.send(hello_frame())
    return ws


async def serve_worker(ws, worker_id, received, arrived=None):
    """Answers every assignment at once; received[run_id] gets the arrival
    times; `arrived` (an asyncio.Event) is set after each."""
    from websockets.exceptions import ConnectionClosed

    try:
        async for text in ws:
            t = time.monotonic()
            frame = json.loads(text)
            if frame.get("type") != "task_assignment":
                continue
            a = frame["data"]
            received.setdefault(a["task_id"], []).append(t)
            if arrived is not None:
                arrived.set()
            claimed, completed = claimed_and_completed(a, worker_id)
            await ws.send(claimed)
            await ws.send(completed)
    except ConnectionClosed:
        pass


class RawIdleWorker:
    """An idle worker on a bare asyncio stream: the WebSocket handshake, a
    masked `worker_hello`, then pongs to the server's pings and nothing else.
    Cheaper than the websockets library, so that opening M of them measures
    the server rather than the Python generator."""

    def __init__(self, url, key, worker_id):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.path = f"/api/v1/selfhosted/worker/ws?worker_id={worker_id}"
        self.key = key
        self.writer = None

    @staticmethod
    def frame(opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        body = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big") if n else b""
        return head + mask + body

    async def open(self, timeout):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout)
        self.writer = writer
        nonce = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
             f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
             f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {self.key}\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise RuntimeError(head.split(b"\r\n")[0].decode("latin-1"))
        writer.write(self.frame(0x1, hello_frame().encode()))
        return asyncio.create_task(self.keep(reader))

    async def keep(self, reader):
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await reader.readexactly(8), "big")
                payload = await reader.readexactly(n)
                op = b0 & 0x0F
                if op == 0x9:
                    self.writer.write(self.frame(0xA, payload))
                elif op == 0x8:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


def worker_proc(url, key, ids, ready, stop, out):
    """A process holding workers `ids`, answering until `stop` is set."""
    common.raise_nofile()

    async def main():
        received = {}
        socks = [await open_worker(url, key, i) for i in ids]
        tasks = [asyncio.create_task(serve_worker(ws, i, received)) for ws, i in zip(socks, ids)]
        ready.put(len(socks))
        c0, t0 = common.self_cpu(), time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        cpu, wall = common.self_cpu() - c0, time.monotonic() - t0
        for ws in socks:
            await ws.close()
        for t in tasks:
            t.cancel()
        out.put({"role": "workers", "received": received, "cpu_s": cpu, "wall_s": wall})

    asyncio.run(main())


def client_proc(url, key, conns, per_conn, rate_per_conn, start, out, created):
    """A process creating runs over `conns` keep-alive connections, each
    per_conn runs; paced at rate_per_conn runs/s each when rate_per_conn > 0,
    or for as long as `per_conn` allows."""

    async def one(h, sent):
        interval = 1.0 / rate_per_conn if rate_per_conn > 0 else 0.0
        next_at = time.monotonic() + random.random() * interval
        errors = 0
        for _ in range(per_conn):
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
            t = time.monotonic()
            status, payload = await h.request("POST", "/api/v1/agent/runs", {"prompt": "bench"})
            if status not in (200, 201):
                errors += 1
                if errors <= 3:
                    log(f"create failed: {status} {payload[:200]!r}")
                continue
            sent[json.loads(payload)["run_id"]] = t
            with created.get_lock():
                created.value += 1
        h.close()
        return errors

    async def main():
        sent = {}
        conns_ = [Http(url, key) for _ in range(conns)]
        for h in conns_:
            await h.connect()
        # Connected before the clock starts; released together.
        await asyncio.get_running_loop().run_in_executor(None, start.wait)
        c0 = common.self_cpu()
        errors = sum(await asyncio.gather(*(one(h, sent) for h in conns_)))
        out.put({"role": "clients", "sent": sent, "errors": errors,
                 "cpu_s": common.self_cpu() - c0, "t_end": time.monotonic()})

    asyncio.run(main())


def idle_proc(url, key, ids, concurrency, deadline_s, out, stop):
    """Opens idle workers `ids` (at most `concurrency` handshakes at once,
    failures retried with jittered exponential backoff), reports, holds them."""
    got = common.raise_nofile()

    async def main():
        sem = asyncio.Semaphore(concurrency)
        socks, failures, last_error = [], 0, [""]

        async def one(i):
            nonlocal failures
            backoff = 0.05
            # Jitter the start over the first second, as restarting workers would.
            await asyncio.sleep(random.random() * 1.0)
            while True:
                if deadline - time.monotonic() <= 0:
                    return False
                async with sem:
                    # What is left once a handshake slot is free, not before.
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    try:
                        socks.append(await asyncio.wait_for(
                            RawIdleWorker(url, key, i).open(60), min(60, max(left, 0.1))))
                        return True
                    except Exception as e:  # noqa: BLE001
                        failures += 1
                        last_error[0] = repr(e)[:200]
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)
            return False

        t0, c0 = time.monotonic(), common.self_cpu()
        # Retries go on (jittered backoff up to 5 s) until the deadline.
        deadline = t0 + deadline_s
        await asyncio.gather(*(one(i) for i in ids))
        wall = time.monotonic() - t0
        out.put({"connected": len(socks), "failures": failures, "last_error": last_error[0],
                 "seconds": wall, "nofile": got, "cpu_s": common.self_cpu() - c0, "wall_s": wall})
        while not stop.is_set():
            await asyncio.sleep(0.2)
        out.put({"done": True})
        os._exit(0)  # the server sees the connections drop

    asyncio.run(main())


# --------------------------------------------------------------- the server


class HangarServer:
    def __init__(self, binary, database_url=None):
        self.tmp = tempfile.mkdtemp(prefix="hangar-bench-")
        self.port = common.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = [
            f"listen: 127.0.0.1:{self.port}",
            f"data_dir: {self.tmp}",
            'cli_config_path: ""',  # do not write the CLI's config file
            "providers_from_env: false",
            "rate_limit: {requests_per_second: 0, burst: 0, team_requests_per_second: 0, team_burst: 0}",
            # A run needs a model to be created; the workers complete at
            # once, so it is never called (as in benches/dispatch.rs).
            "providers:",
            "  fake: {kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key: bench,"
            " default_model: bench-model}",
        ]
        if database_url:
            cfg.append(f"database_url: {json.dumps(database_url)}")
            # A schema of its own: a fresh database every time.
            cfg.append(f"database_schema: bench_{os.getpid()}_{int(time.time())}")
        self.schema = cfg[-1].split()[-1] if database_url else None
        self.database_url = database_url
        cfg_path = os.path.join(self.tmp, "server.yaml")
        with open(cfg_path, "w") as f:
            f.write("\n".join(cfg) + "\n")
        self.stdout = open(os.path.join(self.tmp, "server.out"), "w+")
        self.stderr = open(os.path.join(self.tmp, "server.log"), "w")

        def limits():
            common.raise_nofile()

        self.proc = subprocess.Popen(
            [binary, "server", "--config", cfg_path, "--log-format", "json"],
            stdout=self.stdout, stderr=self.stderr, preexec_fn=limits,
            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")),
        )
        self.admin_key = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hangar server exited with {self.proc.returncode}: {self.log_tail()}")
            self.stdout.seek(0)
            text = self.stdout.read()
            if "listening on" in text:
                for line in text.splitlines():
                    word = line.strip()
                    if word and " " not in word and word.startswith("hk_"):
                        self.admin_key = word
                break
            time.sleep(0.05)
        if not self.admin_key:
            raise RuntimeError(f"no admin key in the first start's output: {text!r} {self.log_tail()}")

    def log_tail(self):
        try:
            with open(os.path.join(self.tmp, "server.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def rss(self):
        return common.rss_bytes(self.proc.pid)

    def cpu(self):
        return common.cpu_seconds([self.proc.pid])

    def threads(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/task"))
        except OSError:
            return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.schema and self.database_url:
            drop_schema(self.database_url, self.schema)
        shutil.rmtree(self.tmp, ignore_errors=True)


def drop_schema(url, schema):
    psql = shutil.which("psql")
    if psql:
        subprocess.run([psql, url, "-qc", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                       capture_output=True)


# ------------------------------------------------------------------- phases


async def workers_listed(url, key, prefix):
    h = Http(url, key)
    try:
        body = await h.json("GET", "/api/v1/workers")
    finally:
        h.close()
    return sum(1 for w in body["workers"] if w["worker_id"].startswith(prefix))


def wait_listed(url, key, prefix, count, timeout=120):
    common.wait_until(lambda: asyncio.run(workers_listed(url, key, prefix)) >= count,
                      timeout, interval=0.1, what=f"{count} workers `{prefix}*` listed")


def latency_phase(url, admin, team, workers, samples):
    """Unloaded: one run at a time, W workers in this process."""

    async def main():
        received, arrived = {}, asyncio.Event()
        ids = [f"lat-{i}" for i in range(workers)]
        socks = [await open_worker(url, team, i) for i in ids]
        tasks = [asyncio.create_task(serve_worker(ws, i, received, arrived))
                 for ws, i in zip(socks, ids)]
        while await workers_listed(url, team, "lat-") < workers:
            await asyncio.sleep(0.05)
        h = Http(url, admin)
        await h.connect()
        warm = max(10, samples // 10)
        lat, create = [], []
        for i in range(samples + warm):
            t0 = time.monotonic()
            body = await h.json("POST", "/api/v1/agent/runs", {"prompt": "bench"})
            t1 = time.monotonic()
            rid = body["run_id"]
            while rid not in received:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), 30)
                except asyncio.TimeoutError:
                    raise TimeoutError(f"run {rid} was not assigned within 30 s") from None
            if i >= warm:
                lat.append(received[rid][0] - t0)
                create.append(t1 - t0)
        h.close()
        for ws in socks:
            await ws.close()
        for t in tasks:
            t.cancel()
        return lat, create

    return asyncio.run(main())


async def count_live(url, key):
    h = Http(url, key)
    try:
        q = "&".join(f"state={s}" for s in NON_TERMINAL)
        body = await h.json("GET", f"/api/v1/agent/runs?limit=1&{q}")
        return len(body["runs"])
    finally:
        h.close()


def all_runs(url, key):
    """{run_id: [states]} of every run, paging through the API."""

    async def main():
        h = Http(url, key)
        out, cursor = {}, None
        try:
            while True:
                path = "/api/v1/agent/runs?limit=500&sort_by=created_at&sort_order=asc"
                if cursor:
                    path += "&cursor=" + urllib.parse.quote(cursor)
                body = await h.json("GET", path)
                for r in body["runs"]:
                    out.setdefault(r["run_id"], []).append(r["state"])
                info = body.get("page_info") or {}
                if not info.get("has_next_page"):
                    return out
                cursor = info["next_cursor"]
        finally:
            h.close()

    return asyncio.run(main())


def check(url, key, sent, received, exclude=()):
    """Every created run is SUCCEEDED, listed once, assigned once."""
    runs = all_runs(url, key)
    runs = {k: v for k, v in runs.items() if k not in exclude}
    succeeded = sum(1 for rid in sent if runs.get(rid) == ["SUCCEEDED"])
    missing = sum(1 for rid in sent if rid not in runs)
    listed_twice = sum(1 for v in runs.values() if len(v) > 1)
    other = {}
    for rid in sent:
        for s in runs.get(rid, []):
            if s != "SUCCEEDED":
                other[s] = other.get(s, 0) + 1
    unknown = sum(1 for rid in runs if rid not in sent)
    never = sum(1 for rid in sent if rid not in received)
    twice = sum(1 for rid in sent if len(received.get(rid, [])) > 1)
    ok = (succeeded == len(sent) and not missing and not listed_twice and not other
          and not unknown and not never and not twice)
    line = (f"check: {len(sent)} created, {succeeded} SUCCEEDED exactly once; missing {missing},"
            f" other states {other or 0}, listed twice {listed_twice}, not created by the clients {unknown},"
            f" never assigned {never}, assigned twice {twice} → {'OK' if ok else 'FAILED'}")
    return ok, line


def load_phase(srv, team, args, n, rate=0.0, duration=0.0, prefix="tp"):
    """N runs (or `rate` runs/s for `duration` s) from C clients to W workers."""
    ctx = mp.get_context("spawn")
    ready, out, stop, start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    created = ctx.Value("q", 0)
    wprocs = []
    wp = max(1, min(args.worker_procs, args.w))
    for k in range(wp):
        ids = [f"{prefix}-{i}" for i in range(args.w) if i % wp == k]
        p = ctx.Process(target=worker_proc, args=(srv.url, team, ids, ready, stop, out))
        p.start()
        wprocs.append(p)
    for _ in wprocs:
        ready.get(timeout=120)
    wait_listed(srv.url, team, f"{prefix}-", args.w)
    cp = max(1, min(args.procs, args.c))
    if rate:
        per_conn = int(rate * duration / args.c) + 1
        rate_per_conn = rate / args.c
    else:
        per_conn = n // args.c
        rate_per_conn = 0.0
    n = per_conn * args.c
    cprocs = []
    for k in range(cp):
        conns = len([i for i in range(args.c) if i % cp == k])
        p = ctx.Process(target=client_proc,
                        args=(srv.url, srv.admin_key, conns, per_conn, rate_per_conn, start, out, created))
        p.start()
        cprocs.append(p)
    time.sleep(2)  # clients connected
    perf = None
    if getattr(args, "perf", None) and not rate:
        perf = subprocess.Popen(
            ["perf", "record", "-F", "999", "-p", str(srv.proc.pid), "-o", args.perf, "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    cpu0, t0 = srv.cpu(), time.monotonic()
    start.set()
    rss_log = []
    next_report = t0 + 30
    # Until every client is done, then until the API lists nothing live.
    clients = []
    while len(clients) < len(cprocs):
        try:
            clients.append(out.get(timeout=0.2))
        except Exception:  # noqa: BLE001  (queue.Empty)
            pass
        if duration and time.monotonic() >= next_report:
            el = time.monotonic() - t0
            rss_log.append((el, srv.rss()))
            log(f"  t={el:5.0f} s  server RSS {common.mib(srv.rss()):7.1f} MiB  created {created.value}"
                f" ({created.value / el:.0f}/s)  load {common.loadavg():.2f}")
            next_report += 30
    t_created = max(c["t_end"] for c in clients)
    while asyncio.run(count_live(srv.url, srv.admin_key)) > 0:
        time.sleep(0.005)
        if time.monotonic() - t0 > 1200:
            raise TimeoutError("runs still live after 1200 s")
    elapsed = time.monotonic() - t0
    cpu = srv.cpu() - cpu0
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
    stop.set()
    workers = [out.get(timeout=60) for _ in wprocs]
    for p in wprocs + cprocs:
        p.join(timeout=30)
    sent, received = {}, {}
    for c in clients:
        sent.update(c["sent"])
    for w in workers:
        for rid, ts in w["received"].items():
            received.setdefault(rid, []).extend(ts)
    errors = sum(c["errors"] for c in clients)
    lat = [received[rid][0] - t for rid, t in sent.items() if rid in received]
    loadgen = [{"role": "client", "cpu_s": c["cpu_s"], "wall_s": c["t_end"] - t0} for c in clients]
    loadgen += [{"role": "workers", "cpu_s": w["cpu_s"], "wall_s": w["wall_s"]} for w in workers]
    return {
        "created": len(sent), "errors": errors, "elapsed_s": elapsed,
        "create_s": t_created - t0, "throughput": len(sent) / elapsed,
        "dispatch_loaded": common.summary_ms(lat), "server_cpu_s": cpu,
        "loadgen": loadgen, "sent": sent, "received": received, "rss_log": rss_log,
    }


def idle_workers_phase(srv, team, m, procs, concurrency, deadline_s):
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    rss0 = srv.rss()
    ps = []
    t0 = time.monotonic()
    for k in range(procs):
        ids = [f"idle-{i}" for i in range(m) if i % procs == k]
        p = ctx.Process(target=idle_proc, args=(srv.url, team, ids, concurrency, deadline_s, out, stop))
        p.start()
        ps.append(p)
    reports = [out.get(timeout=deadline_s + 600) for _ in ps]
    # From the first handshake of any process to the last one's hello.
    seconds = max(r["seconds"] for r in reports)
    connected = sum(r["connected"] for r in reports)
    failures = sum(r["failures"] for r in reports)
    # Let the server settle (hellos handled, registry written).
    listed = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            listed = asyncio.run(workers_listed(srv.url, team, "idle-"))
        except Exception as e:  # noqa: BLE001
            log(f"  GET /workers failed: {e!r:.200}")
        if listed >= connected:
            break
        time.sleep(1)
    listed_after = time.monotonic() - t0
    time.sleep(5)
    rss = srv.rss()
    threads = srv.threads()
    stop.set()
    for p in ps:
        p.join(timeout=60)
    return {"m": m, "connected": connected, "listed": listed, "connect_s": seconds,
            "listed_s": listed_after, "failures": failures,
            "last_error": next((r["last_error"] for r in reports if r["last_error"]), ""),
            "rss_before": rss0, "rss": rss, "threads": threads,
            "nofile": min(r["nofile"] for r in reports),
            "loadgen": [{"role": "idle workers", "cpu_s": r["cpu_s"], "wall_s": r["wall_s"]}
                        for r in reports]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "/var/tmp/hangar-target"), "release", "hangar"))
    ap.add_argument("--n", type=int, default=20000, help="runs in the throughput phase")
    ap.add_argument("--w", type=int, default=8, help="protocol-level workers")
    ap.add_argument("--c", type=int, default=8, help="concurrent HTTP clients")
    ap.add_argument("--m", type=int, default=10000, help="idle workers to connect (0: skip)")
    ap.add_argument("--procs", type=int, default=2, help="processes the C clients are spread over")
    ap.add_argument("--worker-procs", type=int, default=2, help="processes the W workers are spread over")
    ap.add_argument("--idle-procs", type=int, default=4, help="processes the M idle workers are spread over")
    ap.add_argument("--idle-concurrency", type=int, default=64, help="handshakes in flight per idle process")
    ap.add_argument("--idle-deadline", type=float, default=300,
                    help="seconds the M idle workers may take to connect, retries included")
    ap.add_argument("--latency-samples", type=int, default=1000)
    ap.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temporary directory)")
    ap.add_argument("--duration", type=float, default=0, help="sustained phase length in s (0: skip)")
    ap.add_argument("--rate", type=float, default=1000, help="runs/s of the sustained phase")
    ap.add_argument("--perf", metavar="FILE",
                    help="record the server with `perf record` during the throughput phase, and"
                         " print its hottest symbols")
    ap.add_argument("--only", choices=["idle"],
                    help="run one phase: `idle` connects the M idle workers only (RSS per"
                         " connection and connect time), skipping latency and throughput")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import websockets

    db = "PostgreSQL" if args.database_url else "SQLite"
    version = subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout.strip()
    log(f"{version} ({args.bin}), {db}; websockets {websockets.__version__}, Python {sys.version.split()[0]}")
    srv = HangarServer(args.bin, args.database_url)
    result = {"peer": "hangar", "db": db, "n": args.n, "w": args.w, "c": args.c, "m": args.m,
              "procs": args.procs, "versions": f"{version} ({db})"}
    try:
        team = sync_json(srv.url, srv.admin_key, "POST", "/api/v1/api-keys",
                         {"name": "bench-workers", "team": True})["key"]
        time.sleep(3)
        result["idle_rss"] = srv.rss()
        log(f"idle RSS: {common.mib(result['idle_rss']):.1f} MiB (server process, {srv.threads()} threads)")

        if args.only != "idle":
            lat, create = latency_phase(srv.url, srv.admin_key, team, args.w, args.latency_samples)
            result["dispatch"] = common.summary_ms(lat)
            result["create"] = common.summary_ms(create)
            log(common.fmt_summary("create run (POST → response), unloaded", result["create"]))
            log(common.fmt_summary("dispatch latency, unloaded (POST → assignment)", result["dispatch"]))

            exclude = set(all_runs(srv.url, srv.admin_key))
            log(f"throughput phase: {args.n} runs, W={args.w} workers in {args.worker_procs} processes,"
                f" C={args.c} clients in {args.procs} processes (load {common.loadavg():.2f})")
            result["load"] = common.loadavg()
            tp = load_phase(srv, team, args, args.n)
            result["throughput"] = tp["throughput"]
            result["elapsed_s"] = tp["elapsed_s"]
            result["dispatch_loaded"] = tp["dispatch_loaded"]
            log(f"throughput: {tp['created']} runs in {tp['elapsed_s']:.2f} s = {tp['throughput']:.0f} runs/s"
                f" (created → SUCCEEDED through the API; creating alone took {tp['create_s']:.2f} s ="
                f" {tp['created'] / tp['create_s']:.0f}/s; {tp['errors']} create errors)")
            ok, line = check(srv.url, srv.admin_key, tp["sent"], tp["received"], exclude)
            result["check_ok"] = ok
            log(line)
            log(common.fmt_summary("dispatch latency under the throughput load", tp["dispatch_loaded"]))
            line, saturated = common.load_report(tp["loadgen"])
            result["loadgen"] = tp["loadgen"]
            result["loadgen_saturated"] = saturated
            result["server_cpu_s"] = tp["server_cpu_s"]
            log(f"CPU during the phase: server {tp['server_cpu_s']:.1f} s over {tp['elapsed_s']:.1f} s wall"
                f" ({tp['server_cpu_s'] / tp['created'] * 1e3:.2f} ms per run);"
                f" load generator per process: {line}"
                + ("  ← a load generator process saturates a core" if saturated else ""))
            if args.perf and os.path.exists(args.perf):
                report = subprocess.run(
                    ["perf", "report", "-i", args.perf, "--stdio", "--no-children", "--sort", "dso,symbol",
                     "--percent-limit", "1.5"], capture_output=True, text=True).stdout
                hot = [ln for ln in report.splitlines() if ln.strip() and not ln.startswith("#")]
                threads = subprocess.run(
                    ["perf", "report", "-i", args.perf, "--stdio", "--no-children", "--sort", "comm"],
                    capture_output=True, text=True).stdout
                split = ", ".join(" ".join(ln.split()) for ln in threads.splitlines()
                                  if ln.strip() and not ln.startswith("#"))
                log(f"server CPU by thread (perf): {split}")
                log(f"server CPU profile of the throughput phase (perf, {args.perf}), hottest symbols:")
                for ln in hot[:25]:
                    log("  " + re.sub(r"\s+-\s+-\s*$", "", re.sub(r" {3,}", "  ", ln.strip())))
            time.sleep(2)
            result["idle_rss_after"] = srv.rss()
            log(f"idle RSS after the load: {common.mib(result['idle_rss_after']):.1f} MiB")

            if args.duration:
                log(f"sustained phase: {args.rate:.0f} runs/s for {args.duration:.0f} s")
                exclude = set(all_runs(srv.url, srv.admin_key))
                su = load_phase(srv, team, args, 0, rate=args.rate, duration=args.duration, prefix="su")
                ok, line = check(srv.url, srv.admin_key, su["sent"], su["received"], exclude)
                result["sustained"] = {"rate": args.rate, "duration": args.duration,
                                       "achieved": su["created"] / su["create_s"],
                                       "throughput": su["throughput"], "check_ok": ok,
                                       "rss_log": su["rss_log"], "dispatch_loaded": su["dispatch_loaded"]}
                log(f"sustained: {su['created']} runs created at {su['created'] / su['create_s']:.0f}/s,"
                    f" all ended after {su['elapsed_s']:.1f} s; {su['errors']} create errors")
                log(line)
                log(common.fmt_summary("dispatch latency, sustained", su["dispatch_loaded"]))
                rss = [r for _, r in su["rss_log"]]
                if rss:
                    log(f"server RSS every 30 s: {', '.join(f'{common.mib(r):.0f}' for r in rss)} MiB")

        if args.m:
            log(f"idle workers: connecting {args.m} ({args.idle_procs} processes,"
                f" {args.idle_concurrency} handshakes in flight each, jittered retries)")
            iw = idle_workers_phase(srv, team, args.m, args.idle_procs, args.idle_concurrency,
                                    args.idle_deadline)
            result["idle_workers"] = iw
            result["rss_m"] = iw["rss"]
            per = (iw["rss"] - iw["rss_before"]) / max(1, iw["connected"])
            log(f"idle workers: {iw['connected']} of {args.m} connected in {iw['connect_s']:.1f} s"
                f" ({iw['failures']} failed attempts retried), {iw['listed']} listed by /workers after"
                f" {iw['listed_s']:.1f} s; server RSS {common.mib(iw['rss']):.1f} MiB"
                f" (was {common.mib(iw['rss_before']):.1f}, {per / 1024:.1f} KiB per connection,"
                f" {iw['threads']} threads); RLIMIT_NOFILE {iw['nofile']}")
            line, saturated = common.load_report(iw["loadgen"])
            log(f"  load generator while connecting, per process: {line}"
                + ("  ← saturates a core: the connect time is partly the generator's" if saturated else ""))
            if iw["connected"] < args.m:
                log(f"  could NOT open {args.m} within {args.idle_deadline:.0f} s: the largest count"
                    f" reached is {iw['connected']} (last error: {iw['last_error']})")
    finally:
        try:
            summarize_log(srv)
        except Exception:  # noqa: BLE001
            pass
        srv.stop()
    if args.json:
        common.write_json(args.json, result)


def summarize_log(srv):
    """The server's warnings and errors over the whole run, by message."""
    counts = {}
    with open(os.path.join(srv.tmp, "server.log")) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("level") in ("WARN", "ERROR"):
                fields = e.get("fields", {})
                msg = fields.get("message", "")
                err = fields.get("error", "")
                k = (e["level"], msg[:90], err[:90])
                counts[k] = counts.get(k, 0) + 1
    if counts:
        log("server warnings and errors over the run (count, level, message, error):")
        for (lvl, msg, err), n in sorted(counts.items(), key=lambda kv: -kv[1])[:12]:
            log(f"  {n:6}  {lvl:5}  {msg}" + (f"  [{err}]" if err else ""))


if __name__ == "__main__":
    main()
