"""Prints the peers benchmark's table from the JSON the two sides wrote.

usage: report.py CELERY.json HANGAR.json [HANGAR-PG.json]
"""

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def num(v, fmt):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return format(v, fmt)


def main():
    celery = load(sys.argv[1])
    hangars = [h for h in (load(p) for p in sys.argv[2:]) if h]
    if not celery or not hangars:
        print("report: missing results; see the output above")
        return 1
    m = hangars[0].get("m", 0)

    def g(d, *path):
        for k in path:
            if d is None:
                return None
            d = d.get(k) if isinstance(d, dict) else None
        return d

    rows = [
        # (label, getter, format, ratio wanted?, target text, target check(ratio, value))
        ("throughput, created → completed (per s)", lambda d: g(d, "throughput"), ".0f", True,
         "≥ 2× Celery", lambda r, v: r is not None and r >= 2.0),
        ("dispatch p50, unloaded (ms)", lambda d: g(d, "dispatch", "p50"), ".3f", True,
         "≤ 0.5× Celery (≤ 0.7 ms)", lambda r, v: r is not None and r <= 0.5),
        ("dispatch p99, unloaded (ms)", lambda d: g(d, "dispatch", "p99"), ".3f", True,
         "≤ 3 ms", lambda r, v: v is not None and v <= 3.0),
        ("dispatch p50 under the throughput load (ms)", lambda d: g(d, "dispatch_loaded", "p50"), ".1f",
         True, "", None),
        ("dispatch p99 under the throughput load (ms)", lambda d: g(d, "dispatch_loaded", "p99"), ".1f",
         True, "", None),
        ("idle RSS (MiB)", lambda d: common.mib(d["idle_rss"]) if d.get("idle_rss") else None, ".1f",
         True, "server ≤ 24 MiB", lambda r, v: v is not None and v <= 24),
        (f"RSS with {m:,} idle workers connected (MiB)",
         lambda d: common.mib(d["rss_m"]) if d.get("rss_m") else None, ".1f", False,
         "≤ 512 MiB", lambda r, v: v is not None and v <= 512),
        (f"seconds to connect {m:,} workers", lambda d: g(d, "idle_workers", "connect_s"), ".1f", False,
         "< 30 s", lambda r, v: v is not None and v < 30),
    ]
    head = ["figure", celery["versions"]]
    for h in hangars:
        head += [h["versions"].split(" (")[0].replace("hangar ", "Hangar ") + f" ({h['db']})",
                 f"ratio {h['db']}/Celery"]
    head += ["target", "met"]
    table = []
    for label, get, fmt, want_ratio, target, ok in rows:
        cv = get(celery)
        line = [label, num(cv, fmt)]
        mets = []
        for h in hangars:
            hv = get(h)
            ratio = hv / cv if (want_ratio and hv is not None and cv) else None
            rfmt = ".2f" if ratio is None or ratio >= 0.1 else ".3f"
            line += [num(hv, fmt), (num(ratio, rfmt) + "×") if ratio is not None else "—"]
            if ok is not None and target:
                # A figure measured on one store only (the idle workers) is
                # not a miss on the other.
                verdict = "not measured" if hv is None else ("yes" if ok(ratio, hv) else "NO")
                mets.append(verdict + (f" ({h['db']})" if len(hangars) > 1 else ""))
        line += [target, ", ".join(mets)]
        table.append(line)
    checks = ["no-loss check (every run SUCCEEDED once)", "results stored: "
              f"{celery.get('completed_ok', '—')}/{celery.get('n')}"]
    for h in hangars:
        checks += ["OK" if h.get("check_ok") else "FAILED", ""]
    checks += ["", ""]
    table.append(checks)
    widths = [max(len(str(r[i])) for r in [head] + table) for i in range(len(head))]

    def fmt_row(r):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"

    n, w, c = celery.get("n"), celery.get("w"), celery.get("c")
    print()
    print(f"Peers benchmark: N={n} tasks/runs, W={w} workers, C={c} concurrent clients, M={m:,} idle workers")
    print(fmt_row(head))
    print("|" + "|".join("-" * (x + 2) for x in widths) + "|")
    for r in table:
        print(fmt_row(r))
    print()
    print("Ratios are Hangar / Celery (throughput: higher is better; latency and memory: lower is better).")
    print("Celery's idle RSS sums redis-server and the worker's process tree (main + W prefork children;"
          f" PSS {common.mib(celery.get('idle_pss', 0)):.1f} MiB, shared pages counted once); Hangar's is"
          " the one server process. Celery has no counterpart of M connected workers.")
    print("1-minute load average when each throughput phase started (other work on the machine): "
          + ", ".join(f"{p['versions']} {p.get('load', float('nan')):.2f}" for p in [celery] + hangars))
    sat = [p for p in [celery] + hangars if p.get("loadgen_saturated")]
    for p in [celery] + hangars:
        parts = ", ".join(f"{x['role']} {x['cpu_s'] / x['wall_s'] * 100:.0f}%" for x in p.get("loadgen", [])
                          if x.get("wall_s"))
        name = p["versions"]
        print(f"Load generator CPU per process ({name}): {parts}")
    print("The machine has 2 cores: the Python load generator (clients and workers, in several processes),"
          " the server and the workers share them, for both peers alike.")
    if sat:
        print("WARNING: a load generator process saturated a core in: "
              + ", ".join(p["versions"] for p in sat) + "; its figures may be limited by the generator.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
