"""Celery + Redis side of the peers benchmark (see bench/peers/run).

Starts redis-server (Debian package, default settings, on a free port, its
files in a temporary directory) and a Celery worker (prefork, concurrency W,
Redis broker and Redis result backend), then measures:

1. idle RSS: redis-server + the worker's whole process tree (main process and
   its W prefork children), summed;
2. dispatch latency, unloaded: L tasks one after the other, each submitted
   only after the previous result came back; the task receives the submit
   timestamp and returns (body start - submit);
3. throughput: N tasks submitted by C client threads spread over P client
   processes; from the moment the clients are released until the result
   backend holds N results (polled with DBSIZE every 2 ms). The dispatch
   latency of every task under this load is printed too.

Writes the figures as JSON (--json) for bench/peers/report.py.
"""

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
from common import log  # noqa: E402


def client_proc(broker, threads, per_thread, start, out):
    """One client process: `threads` threads, each submitting per_thread tasks."""
    from celery import Celery

    # No result backend on the producer side: it does not wait on results
    # (nor subscribe to them); the worker stores them.
    app = Celery("bench", broker=broker)
    app.conf.update(task_serializer="json", accept_content=["json"])
    # Open the broker connection before the clock starts.
    with app.producer_or_acquire() as p:
        p.connection.ensure_connection()
    errors = []

    def submit():
        try:
            for _ in range(per_thread):
                app.send_task("bench.noop", args=(time.time(),))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=submit) for _ in range(threads)]
    start.wait()
    c0, t0 = common.self_cpu(), time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(
        {
            "role": "client",
            "cpu_s": common.self_cpu() - c0,
            "wall_s": time.monotonic() - t0,
            "errors": errors,
        }
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="tasks in the throughput phase")
    ap.add_argument("--w", type=int, default=8, help="prefork concurrency")
    ap.add_argument("--c", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--procs", type=int, default=2, help="client processes the C threads are spread over")
    ap.add_argument("--latency-samples", type=int, default=1000)
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import redis
    import celery

    tmp = tempfile.mkdtemp(prefix="hangar-bench-celery-")
    port = common.free_port()
    version = subprocess.run(
        [args.redis_server, "--version"], capture_output=True, text=True
    ).stdout.strip()
    log(f"redis-server: {version}")
    log(f"celery {celery.__version__}, redis-py {redis.__version__}, Python {sys.version.split()[0]}")
    # Default settings, as the Debian package ships them for a user (RDB
    # snapshots, no AOF): Redis holds the queue in memory.
    redis_proc = subprocess.Popen(
        [args.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
         "--daemonize", "no", "--logfile", os.path.join(tmp, "redis.log")],
        stdout=subprocess.DEVNULL,
    )
    broker = f"redis://127.0.0.1:{port}/0"
    backend = f"redis://127.0.0.1:{port}/1"
    r_broker = redis.Redis(port=port, db=0)
    r_backend = redis.Redis(port=port, db=1)
    common.wait_until(lambda: _ping(r_broker), 10, what="redis-server")

    env = dict(os.environ, BENCH_BROKER=broker, BENCH_BACKEND=backend, PYTHONPATH=HERE)
    celery_bin = os.path.join(os.path.dirname(sys.executable), "celery")
    worker_log = open(os.path.join(tmp, "worker.log"), "w")
    worker = subprocess.Popen(
        [celery_bin, "-A", "celery_tasks", "worker", "--pool", "prefork",
         "--concurrency", str(args.w), "--loglevel", "WARNING", "-n", "bench@%h"],
        cwd=HERE, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
    )
    result = {"peer": "celery", "n": args.n, "w": args.w, "c": args.c, "procs": args.procs,
              "versions": f"Celery {celery.__version__} + Redis {version.split()[2].split('=')[1]}"}
    try:
        os.environ["BENCH_BROKER"], os.environ["BENCH_BACKEND"] = broker, backend
        sys.path.insert(0, HERE)
        from celery_tasks import app

        def ready():
            try:
                return bool(app.control.ping(timeout=0.5))
            except Exception:  # noqa: BLE001
                return False

        common.wait_until(ready, 60, interval=0.2, what="the Celery worker")
        common.wait_until(
            lambda: len(common.tree([worker.pid])) >= args.w + 1, 30, what="prefork children"
        )
        time.sleep(3)
        rss, pss, nprocs = common.tree_rss([redis_proc.pid, worker.pid])
        result["idle_rss"] = rss
        result["idle_pss"] = pss
        log(f"idle RSS: {common.mib(rss):.1f} MiB (PSS {common.mib(pss):.1f} MiB) over {nprocs} processes:"
            f" redis-server {common.mib(common.rss_bytes(redis_proc.pid)):.1f} MiB + celery worker tree")

        # 2. Unloaded dispatch latency, one task at a time.
        warm = max(10, args.latency_samples // 10)
        lat = []
        for i in range(args.latency_samples + warm):
            res = app.send_task("bench.noop", args=(time.time(),))
            v = res.get(timeout=30)
            if i >= warm:
                lat.append(v)
        result["dispatch"] = common.summary_ms(lat)
        log(common.fmt_summary("dispatch latency, unloaded (submit → body)", result["dispatch"]))

        # 3. Throughput.
        r_backend.flushdb()
        per_thread = args.n // args.c
        n = per_thread * args.c
        result["n"] = n
        ctx = mp.get_context("spawn")
        start, out = ctx.Event(), ctx.Queue()
        base, extra = divmod(args.c, args.procs)
        procs = []
        for i in range(args.procs):
            threads = base + (1 if i < extra else 0)
            if threads:
                p = ctx.Process(target=client_proc, args=(broker, threads, per_thread, start, out))
                p.start()
                procs.append(p)
        time.sleep(2)  # clients connected
        server_pids = [redis_proc.pid, worker.pid]
        cpu0 = common.cpu_seconds(server_pids)
        redis_cpu0 = common.cpu_seconds([redis_proc.pid])
        result["load"] = common.loadavg()
        t0 = time.monotonic()
        start.set()
        while r_backend.dbsize() < n:
            time.sleep(0.002)
            if time.monotonic() - t0 > 600:
                raise TimeoutError("throughput phase took over 600 s")
        elapsed = time.monotonic() - t0
        cpu = common.cpu_seconds(server_pids) - cpu0
        redis_cpu = common.cpu_seconds([redis_proc.pid]) - redis_cpu0
        clients = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join()
        errors = [e for c in clients for e in c["errors"]]
        if errors:
            log(f"client errors: {errors[:3]}")
        result["throughput"] = n / elapsed
        result["elapsed_s"] = elapsed
        log(f"throughput: {n} tasks in {elapsed:.2f} s = {result['throughput']:.0f} tasks/s"
            f" (created → result stored in the backend), W={args.w}, C={args.c}")
        keys = r_backend.keys("celery-task-meta-*")
        import json

        loaded = []
        for i in range(0, len(keys), 1000):
            for raw in r_backend.mget(keys[i : i + 1000]):
                meta = json.loads(raw)
                if meta.get("status") == "SUCCESS":
                    loaded.append(meta["result"])
        result["completed_ok"] = len(loaded)
        log(f"check: {n} submitted, {len(keys)} results stored, {len(loaded)} SUCCESS")
        result["dispatch_loaded"] = common.summary_ms(loaded)
        log(common.fmt_summary("dispatch latency under the throughput load", result["dispatch_loaded"]))
        line, saturated = common.load_report(clients)
        result["loadgen"] = clients
        result["loadgen_saturated"] = saturated
        result["server_cpu_s"] = cpu
        log(f"CPU during the phase: celery worker tree + redis {cpu:.1f} s (redis alone {redis_cpu:.1f} s)"
            f" over {elapsed:.1f} s wall; load generator per process: {line}"
            + ("  ← a client process saturates a core" if saturated else ""))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        common.write_json(args.json, result)


def _ping(r):
    try:
        return r.ping()
    except Exception:  # noqa: BLE001
        return False


if __name__ == "__main__":
    main()
