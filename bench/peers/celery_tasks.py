"""The Celery app of the peers benchmark: one no-op task.

The broker and result backend come from BENCH_BROKER / BENCH_BACKEND. The
task receives the submit timestamp and returns (body start - submit), its
dispatch latency, which the worker stores in the Redis result backend: a
stored result is the completion signal.
"""

import os
import time

from celery import Celery

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_BACKEND") or None,
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(submitted_at):
    return time.time() - submitted_at
