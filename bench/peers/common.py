"""Helpers shared by the Celery and the Hangar side of the peers benchmark.

Percentiles, process-tree RSS and CPU read from /proc, the load generator's
own CPU, free ports and file-descriptor limits. Standard library only.
"""

import json
import os
import resource
import socket
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def pct(samples, p):
    """The p-quantile (0..1) of samples, nearest rank on the sorted list."""
    if not samples:
        return float("nan")
    s = sorted(samples)
    i = round((len(s) - 1) * p)
    return s[min(i, len(s) - 1)]


def summary_ms(samples_s):
    """{n, p50, p90, p99, max} in milliseconds from samples in seconds."""
    return {
        "n": len(samples_s),
        "p50": pct(samples_s, 0.5) * 1000,
        "p90": pct(samples_s, 0.9) * 1000,
        "p99": pct(samples_s, 0.99) * 1000,
        "max": (max(samples_s) * 1000) if samples_s else float("nan"),
    }


def fmt_summary(what, s):
    return (
        f"{what:<46} n={s['n']:<6} p50={s['p50']:8.3f} ms  p90={s['p90']:8.3f} ms"
        f"  p99={s['p99']:8.3f} ms  max={s['max']:8.3f} ms"
    )


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # Fields after the command name, which may hold spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()


def children(pid):
    """Every descendant of pid (recursive), from /proc."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent_of[int(entry)] = int(_stat(entry)[1])
            except (OSError, ValueError, IndexError):
                pass
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out.extend(kids)
        frontier.extend(kids)
    return out


def tree(pids):
    """pids and all their descendants, without duplicates."""
    seen = []
    for p in pids:
        for q in [p] + children(p):
            if q not in seen:
                seen.append(q)
    return seen


def rss_bytes(pid):
    """VmRSS of one process in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pss_bytes(pid):
    """Pss of one process in bytes (shared pages split between sharers)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pids):
    """(sum of RSS, sum of PSS, process count) over pids and their descendants."""
    procs = tree(pids)
    return sum(rss_bytes(p) for p in procs), sum(pss_bytes(p) for p in procs), len(procs)


def cpu_seconds(pids):
    """User + system CPU seconds of pids and their live descendants."""
    total = 0.0
    for p in tree(pids):
        try:
            f = _stat(p)
            total += (int(f[11]) + int(f[12])) / CLK_TCK
        except (OSError, ValueError, IndexError):
            pass
    return total


def self_cpu():
    """This process's user + system CPU seconds (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def mib(b):
    return b / (1024 * 1024)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(want=1 << 17):
    """Raises RLIMIT_NOFILE as far as allowed; answers the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (want, hard):
        try:
            new_hard = max(hard, target)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, new_hard))
            return target
        except (ValueError, OSError):
            continue
    return soft


def wait_until(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def load_report(procs):
    """procs: [{"role", "cpu_s", "wall_s"}]; answers a line and whether one saturates a core."""
    parts, saturated = [], False
    for p in procs:
        util = p["cpu_s"] / p["wall_s"] if p["wall_s"] > 0 else 0.0
        saturated |= util >= 0.9
        parts.append(f"{p['role']} {util * 100:.0f}%")
    return ", ".join(parts), saturated


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def log(*args):
    print(*args, file=sys.stdout, flush=True)


def loadavg():
    """The 1-minute load average: the other work on the machine."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])
