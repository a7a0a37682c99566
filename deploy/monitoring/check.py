#!/usr/bin/env python3
"""Checks the shipped Grafana dashboards and Prometheus alert rules against
Hangar's metric catalog (and, optionally, against real scrapes).

    deploy/monitoring/check.py --catalog CATALOG.txt [--scrape FILE ...]
    deploy/monitoring/check.py --catalog-rs crates/hangar-telemetry/src/catalog.rs
    deploy/monitoring/check.py --self-test

Python 3.9+, standard library only (PyYAML, when importable, is used to
cross-check the small YAML reader below, never needed).

CATALOG.txt holds one metric name per line, as in
crates/hangar-telemetry/src/catalog.rs (the one source of truth); an optional
second column is the kind (counter, gauge, histogram), and `#` starts a
comment. `--catalog-rs` reads the names and kinds from catalog.rs itself.

What it checks:

- Every metric in every PromQL expression of the dashboards
  (grafana/*.json: panel targets' `expr`, query variables such as
  `label_values(hangar_server_queue_depth, host)`) and of the alert rules
  (prometheus/*alerts.yml: every rule's `expr`) is in the catalog.
  Histogram series (`_bucket`, `_sum`, `_count`) count as their histogram.
  `up` and `target_info` are allowed without being in the catalog. Unknown
  PromQL functions are errors too.
- With `--scrape FILE ...` (Prometheus text exposition, e.g. the output of
  `curl :9464/metrics`): every such metric is present in at least one of the
  files (a `# TYPE` line counts; `up` is synthetic and exempt; a missing
  `target_info` is a warning).
- The gauges read from the shared database (hangar_server_runs,
  hangar_server_queue_depth, hangar_server_queue_oldest_age_seconds) are the
  same on every server replica: they must not be summed directly.
- Dashboard structure: every panel (rows aside) has a title, the
  `${datasource}` datasource, a grid position and at least one target with
  an `expr`; refIds are unique in a panel and panel ids in the dashboard; the
  dashboard has a Prometheus `datasource` variable.
- Alert rules: every alert has an expr, a severity label (critical, warning
  or info) and summary, description and runbook annotations; alert names
  are unique.
- The Helm chart's copy deploy/helm/hangar-worker/files/hangar-alerts.yml
  (shipped as a PrometheusRule with metrics.prometheusRule.enabled) is
  byte-identical to prometheus/hangar-alerts.yml: edit the latter and copy
  it over.

Prints one line on success (`N expressions, M metrics, all ...`) and exits 0;
lists every problem (file, panel title or alert name, metric) and exits 1
otherwise; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DASHBOARD_DIR = HERE / "grafana"
RULES_DIR = HERE / "prometheus"
ALERTS = RULES_DIR / "hangar-alerts.yml"
# Copies that must stay byte-identical to a file here: copy -> original.
COPIES = {REPO / "deploy/helm/hangar-worker/files/hangar-alerts.yml": ALERTS}

# Series that are not Hangar's own: Prometheus' per-target `up` and the
# OpenTelemetry resource attributes (service_name, service_version, ...).
ALLOWED = {"up", "target_info"}
# Not in any scrape (Prometheus adds it).
SYNTHETIC = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Gauges read from the shared database: every replica reports the same value.
DB_GAUGES = ("hangar_server_runs", "hangar_server_queue_depth", "hangar_server_queue_oldest_age_seconds")
SEVERITIES = {"critical", "warning", "info"}
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook")

# ---------------------------------------------------------------- PromQL

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
# Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "le"} | LABEL_LIST_KEYWORDS
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "exp", "first_over_time", "floor",
    "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile",
    "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta",
    "increase", "info", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10",
    "log2", "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh",
    "time", "timestamp", "ts_of_first_over_time", "ts_of_last_over_time", "ts_of_max_over_time",
    "ts_of_min_over_time", "vector", "year",
    # `@ start()` / `@ end()`
    "start", "end",
}
IDENT_START = re.compile(r"[A-Za-z_:]")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:[a-zA-Z]+\d*)*")
GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$[A-Za-z0-9_]+|\[\[[A-Za-z0-9_:.]+\]\]")


class PromQLError(ValueError):
    pass


def _skip_string(s: str, i: int) -> tuple[int, str]:
    """From an opening quote at i: (index after the closing quote, content)."""
    q = s[i]
    j = i + 1
    out = []
    while j < len(s):
        c = s[j]
        if c == "\\" and q != "`" and j + 1 < len(s):
            out.append(s[j + 1])
            j += 2
            continue
        if c == q:
            return j + 1, "".join(out)
        out.append(c)
        j += 1
    raise PromQLError(f"unterminated string starting at offset {i}")


def _skip_group(s: str, i: int, open_: str, close: str) -> int:
    """From an opening bracket at i: the index after its matching close."""
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c in "\"'`":
            j, _ = _skip_string(s, j)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise PromQLError(f"unbalanced {open_!r} at offset {i}")


def _selector_names(body: str, warnings: list[str]) -> list[str]:
    """Metric names given inside `{...}`: `__name__="x"` or a bare quoted name."""
    names = []
    i = 0
    while i < len(body):
        c = body[i]
        if c in " \t\r\n,":
            i += 1
            continue
        label = None
        if c in "\"'`":
            i, label = _skip_string(body, i)
        else:
            m = IDENT.match(body, i)
            if not m:
                raise PromQLError(f"bad label matcher in {{{body}}}")
            label = m.group(0)
            i = m.end()
        while i < len(body) and body[i] in " \t\r\n":
            i += 1
        m = re.compile(r"=~|!~|!=|=").match(body, i)
        if not m:  # a bare "metric.name" (PromQL 3 quoted metric names)
            names.append(label)
            continue
        op = m.group(0)
        i = m.end()
        while i < len(body) and body[i] in " \t\r\n":
            i += 1
        if i >= len(body) or body[i] not in "\"'`":
            raise PromQLError(f"label matcher without a quoted value in {{{body}}}")
        i, value = _skip_string(body, i)
        if label == "__name__":
            if op == "=":
                names.append(value)
            else:
                warnings.append(f"__name__{op}{value!r} cannot be checked against the catalog")
    return names


def promql_metrics(expr: str, warnings: list[str] | None = None) -> list[str]:
    """Metric names an expression selects, in order of appearance (with
    duplicates). Grafana variables (`$__rate_interval`, `${host}`) are
    ignored; unknown functions raise PromQLError."""
    warnings = [] if warnings is None else warnings
    s = expr
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in "\"'`":
            i, _ = _skip_string(s, i)
        elif c == "#":  # comment to the end of the line
            j = s.find("\n", i)
            i = n if j < 0 else j + 1
        elif c == "{":
            j = _skip_group(s, i, "{", "}")
            out.extend(_selector_names(s[i + 1:j - 1], warnings))
            i = j
        elif c == "[" and s.startswith("[[", i) and GRAFANA_VAR.match(s, i):
            i = GRAFANA_VAR.match(s, i).end()
        elif c == "[":  # range or subquery: durations only
            i = _skip_group(s, i, "[", "]")
        elif c == "$":
            m = GRAFANA_VAR.match(s, i)
            if not m:
                raise PromQLError(f"stray `$` at offset {i}")
            i = m.end()
        elif c.isdigit() or (c == "." and i + 1 < n and s[i + 1].isdigit()):
            i = NUMBER.match(s, i).end()
        elif IDENT_START.match(c):
            m = IDENT.match(s, i)
            word = m.group(0)
            i = m.end()
            j = i
            while j < n and s[j] in " \t\r\n":
                j += 1
            follows_paren = j < n and s[j] == "("
            low = word.lower()
            if low in LABEL_LIST_KEYWORDS:
                if follows_paren:
                    i = _skip_group(s, j, "(", ")")
            elif low in KEYWORDS or low in AGGREGATIONS:
                pass
            elif follows_paren:
                if word not in FUNCTIONS:
                    raise PromQLError(f"unknown function {word}()")
            else:
                out.append(word)
        else:
            i += 1
    return out


def variable_query_exprs(query: str) -> list[str]:
    """PromQL inside a Grafana Prometheus variable query."""
    q = query.strip()
    m = re.fullmatch(r"label_values\((.*)\)", q, re.S)
    if m:
        inner = m.group(1)
        # label_values(LABEL) has no metric; label_values(SELECTOR, LABEL)
        depth, cut = 0, -1
        for k, ch in enumerate(inner):
            if ch in "({[":
                depth += 1
            elif ch in ")}]":
                depth -= 1
            elif ch == "," and depth == 0:
                cut = k
        return [inner[:cut]] if cut >= 0 else []
    m = re.fullmatch(r"query_result\((.*)\)", q, re.S)
    if m:
        return [m.group(1)]
    if re.fullmatch(r"(label_names|metrics)\(.*\)", q, re.S):
        return []
    return [q] if q else []


def summed_db_gauges(expr: str) -> list[str]:
    """Database-read gauges wrapped directly in `sum`."""
    names = "|".join(DB_GAUGES)
    found = []
    prefix = re.finditer(r"\bsum\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(\s*(" + names + r")\b(?![\w:])", expr)
    found += [m.group(1) for m in prefix]
    return found


# ---------------------------------------------------------------- YAML


class YAMLError(ValueError):
    pass


def _strip_comment(text: str) -> str:
    """Drops a ` # comment` outside quotes."""
    quote = None
    for k, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (k == 0 or text[k - 1] in " \t"):
            return text[:k].rstrip()
    return text.rstrip()


def _scalar(text: str, lineno: int):
    t = text.strip()
    if t.startswith('"'):
        if not t.endswith('"') or len(t) < 2:
            raise YAMLError(f"line {lineno}: unterminated double-quoted string")
        try:
            return json.loads(t)
        except ValueError:
            return t[1:-1]
    if t.startswith("'"):
        if not t.endswith("'") or len(t) < 2:
            raise YAMLError(f"line {lineno}: unterminated single-quoted string")
        return t[1:-1].replace("''", "'")
    if t in ("", "~", "null"):
        return None
    return t


KEY = re.compile(r"""^(?P<key>"[^"]*"|'[^']*'|[^\s#'"][^:#]*?)\s*:(?:\s+|$)(?P<rest>.*)$""")


class MiniYAML:
    """The block-style YAML subset of Prometheus rule files: mappings,
    sequences, plain and quoted scalars (also folded over several lines) and
    `|` / `>` block scalars. Flow collections are kept as their text."""

    def __init__(self, text: str):
        self.lines = text.split("\n")

    @staticmethod
    def _indent(line: str) -> int:
        return len(line) - len(line.lstrip(" "))

    def _significant(self, i: int) -> int:
        while i < len(self.lines):
            s = self.lines[i].strip()
            if s and not s.startswith("#") and s != "---":
                return i
            i += 1
        return i

    def parse(self):
        i = self._significant(0)
        if i >= len(self.lines):
            return None
        value, i = self._node(i, self._indent(self.lines[i]))
        i = self._significant(i)
        if i < len(self.lines):
            raise YAMLError(f"line {i + 1}: unexpected content {self.lines[i].strip()!r}")
        return value

    def _node(self, i: int, indent: int):
        line = self.lines[i]
        body = line.strip()
        if body == "-" or body.startswith("- "):
            return self._sequence(i, indent)
        if KEY.match(body):
            return self._mapping(i, indent)
        return self._plain(i, indent - 1, body)

    def _sequence(self, i: int, indent: int):
        items = []
        while True:
            i = self._significant(i)
            if i >= len(self.lines):
                break
            line = self.lines[i]
            ind, body = self._indent(line), line.strip()
            if ind != indent or not (body == "-" or body.startswith("- ")):
                if ind > indent:
                    raise YAMLError(f"line {i + 1}: bad indentation")
                break
            content = body[1:].lstrip(" ")
            if not content or content.startswith("#"):
                j = self._significant(i + 1)
                if j < len(self.lines) and self._indent(self.lines[j]) > indent:
                    value, i = self._node(j, self._indent(self.lines[j]))
                else:
                    value, i = None, i + 1
            else:
                # `- key: v` starts a mapping at the column of `key`.
                col = indent + (len(body) - len(content))
                self.lines[i] = " " * col + content
                value, i = self._node(i, col)
            items.append(value)
        return items, i

    def _mapping(self, i: int, indent: int):
        out: dict = {}
        while True:
            i = self._significant(i)
            if i >= len(self.lines):
                break
            line = self.lines[i]
            ind, body = self._indent(line), line.strip()
            if ind != indent:
                if ind > indent:
                    raise YAMLError(f"line {i + 1}: bad indentation")
                break
            m = KEY.match(body)
            if not m:
                break
            key = _scalar(m.group("key"), i + 1)
            if key in out:
                raise YAMLError(f"line {i + 1}: duplicate key {key!r}")
            rest = m.group("rest")
            if rest.startswith(("|", ">")):
                out[key], i = self._block(i, indent, _strip_comment(rest))
                continue
            rest = _strip_comment(rest)
            if rest:
                out[key], i = self._plain(i, indent, rest)
                continue
            j = self._significant(i + 1)
            if j < len(self.lines):
                nxt = self.lines[j]
                nind, nbody = self._indent(nxt), nxt.strip()
                if nind > indent or (nind == indent and (nbody == "-" or nbody.startswith("- "))):
                    out[key], i = self._node(j, nind)
                    continue
            out[key], i = None, i + 1
        return out, i

    def _plain(self, i: int, indent: int, first: str):
        """A scalar on this line, folded with more-indented continuation lines."""
        parts = [first]
        j = i + 1
        while j < len(self.lines):
            line = self.lines[j]
            if not line.strip():
                break
            if self._indent(line) <= indent or line.strip().startswith("#"):
                break
            parts.append(_strip_comment(line.strip()))
            j += 1
        text = " ".join(parts)
        if text.startswith(("[", "{")):
            return text, j
        return _scalar(text, i + 1), j

    def _block(self, i: int, indent: int, header: str):
        m = re.fullmatch(r"([|>])([+-]?)(\d?)|([|>])(\d)([+-])", header)
        if not m:
            raise YAMLError(f"line {i + 1}: bad block scalar header {header!r}")
        style = m.group(1) or m.group(4)
        chomp = m.group(2) if m.group(1) else m.group(6)
        raw: list[str] = []
        j = i + 1
        block_indent = None
        while j < len(self.lines):
            line = self.lines[j]
            if line.strip():
                ind = self._indent(line)
                if ind <= indent:
                    break
                if block_indent is None:
                    block_indent = ind
                if ind < block_indent:
                    raise YAMLError(f"line {j + 1}: block scalar less indented than its first line")
                raw.append(line[block_indent:])
            else:
                raw.append("")
            j += 1
        # Trailing blank lines belong to chomping, not to the content.
        trailing = 0
        while raw and raw[-1] == "":
            raw.pop()
            trailing += 1
        if style == "|":
            text = "\n".join(raw)
        else:  # folded: single breaks between text lines become spaces
            text, prev = "", None
            for line in raw:
                if line == "":
                    text += "\n"
                    prev = "blank"
                elif line.startswith((" ", "\t")):
                    text += ("\n" if prev in ("text", "more") else "") + line
                    prev = "more"
                else:
                    text += {"text": " ", "more": "\n"}.get(prev, "") + line
                    prev = "text"
        if chomp == "-":
            pass
        elif chomp == "+":
            text += "\n" * (1 + trailing) if raw else "\n" * trailing
        elif raw:
            text += "\n"
        return text, j


def load_yaml(text: str):
    return MiniYAML(text).parse()


# ---------------------------------------------------------------- inputs


def read_catalog_txt(path: Path) -> dict[str, str | None]:
    cat: dict[str, str | None] = {}
    for k, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        name = fields[0]
        if not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", name) or len(fields) > 2:
            raise SystemExit(f"{path}:{k}: expected `NAME [KIND]`, got {line!r}")
        kind = fields[1].lower() if len(fields) > 1 else None
        if kind not in (None, "counter", "gauge", "histogram"):
            raise SystemExit(f"{path}:{k}: unknown kind {kind!r}")
        cat[name] = kind
    if not cat:
        raise SystemExit(f"{path}: no metric names")
    return cat


def read_catalog_rs(path: Path) -> dict[str, str | None]:
    text = path.read_text()
    found = re.findall(r'^\s*[A-Z0-9_]+:\s*"([a-z0-9_]+)",\s*(Counter|Gauge|Histogram)\s*,', text, re.M)
    if not found:
        raise SystemExit(f"{path}: no catalog entries (`ID: \"name\", Kind, ...`)")
    return {name: kind.lower() for name, kind in found}


def read_scrape(path: Path) -> set[str]:
    """Series and metric names present in a text exposition."""
    present: set[str] = set()
    types: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line)
            if m:
                types[m.group(1)] = m.group(2)
                present.add(m.group(1))
            continue
        m = IDENT.match(line)
        if m:
            present.add(m.group(0))
    for name, kind in types.items():
        if kind in ("histogram", "summary", "gaugehistogram"):
            present.update(name + s for s in HISTOGRAM_SUFFIXES)
        if kind == "counter" and not name.endswith("_total"):  # OpenMetrics
            present.add(name + "_total")
    for name in list(present):
        for s in HISTOGRAM_SUFFIXES:
            if name.endswith(s) and types.get(name[: -len(s)]) is None:
                present.add(name[: -len(s)])
    return present


def catalog_name(series: str, catalog: dict[str, str | None]) -> str | None:
    """The catalog metric a series name belongs to (`x_bucket` -> `x`)."""
    if series in catalog:
        return series
    for s in HISTOGRAM_SUFFIXES:
        base = series[: -len(s)] if series.endswith(s) else None
        if base and base in catalog and catalog[base] in (None, "histogram"):
            return base
    return None


# ---------------------------------------------------------------- checks


class Report:
    def __init__(self):
        self.problems: list[str] = []
        self.warnings: list[str] = []
        # (where, expr)
        self.exprs: list[tuple[str, str]] = []

    def bad(self, msg: str) -> None:
        self.problems.append(msg)


def ds_ref_ok(ds) -> bool:
    if isinstance(ds, dict):
        return ds.get("uid") in ("${datasource}", "$datasource") and ds.get("type", "prometheus") == "prometheus"
    return ds in ("${datasource}", "$datasource")


def check_dashboard(path: Path, rep: Report) -> None:
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    try:
        dash = json.loads(path.read_text())
    except ValueError as e:
        rep.bad(f"{rel}: not JSON: {e}")
        return
    if not isinstance(dash, dict) or not isinstance(dash.get("panels"), list):
        rep.bad(f"{rel}: no `panels` list")
        return
    for key in ("title", "uid", "schemaVersion"):
        if not dash.get(key):
            rep.bad(f"{rel}: no `{key}`")
    variables = (dash.get("templating") or {}).get("list") or []
    if not any(v.get("type") == "datasource" and v.get("name") == "datasource" and v.get("query") == "prometheus"
               for v in variables):
        rep.bad(f"{rel}: no `datasource` template variable of type datasource (query prometheus)")
    for v in variables:
        if v.get("type") != "query":
            continue
        where = f"{rel}: variable ${v.get('name')}"
        if not ds_ref_ok(v.get("datasource")):
            rep.bad(f"{where}: datasource must be ${{datasource}}, not {v.get('datasource')!r}")
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        for e in variable_query_exprs(q):
            rep.exprs.append((where, e))

    ids: dict = {}

    def walk(panels: list, parent: str = "") -> None:
        for p in panels:
            if not isinstance(p, dict):
                rep.bad(f"{rel}: a panel is not an object")
                continue
            title = p.get("title")
            where = f"{rel}: panel {title!r} (id {p.get('id')})"
            pid = p.get("id")
            if not isinstance(pid, int):
                rep.bad(f"{where}: no integer id")
            elif pid in ids:
                rep.bad(f"{where}: id {pid} also used by panel {ids[pid]!r}")
            else:
                ids[pid] = title
            if not isinstance(title, str) or not title.strip():
                rep.bad(f"{where}: no title")
            gp = p.get("gridPos") or {}
            if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")):
                rep.bad(f"{where}: no gridPos h/w/x/y")
            elif gp["x"] + gp["w"] > 24:
                rep.bad(f"{where}: gridPos wider than the 24 columns")
            if p.get("type") == "row":
                walk(p.get("panels") or [], title or "")
                continue
            if "datasource" not in p:
                rep.bad(f"{where}: no datasource")
            elif not ds_ref_ok(p["datasource"]):
                rep.bad(f"{where}: datasource must be the ${{datasource}} variable, not {p['datasource']!r}")
            targets = p.get("targets")
            if not isinstance(targets, list) or not targets:
                rep.bad(f"{where}: no targets")
                continue
            refs = set()
            for t in targets:
                expr = t.get("expr") if isinstance(t, dict) else None
                if not isinstance(expr, str) or not expr.strip():
                    rep.bad(f"{where}: target {t.get('refId') if isinstance(t, dict) else t!r} has no expr")
                    continue
                ref = t.get("refId")
                if not ref or ref in refs:
                    rep.bad(f"{where}: missing or repeated refId {ref!r}")
                refs.add(ref)
                if "datasource" in t and not ds_ref_ok(t["datasource"]):
                    rep.bad(f"{where}: target {ref} datasource must be ${{datasource}}")
                rep.exprs.append((where, expr))

    walk(dash["panels"])


def alert_rules(doc) -> list[dict]:
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise YAMLError("no `groups` list")
    rules = []
    for g in doc["groups"]:
        if not isinstance(g, dict) or not g.get("name") or not isinstance(g.get("rules"), list):
            raise YAMLError("a group without a name or a rules list")
        for r in g["rules"]:
            if not isinstance(r, dict):
                raise YAMLError(f"group {g['name']}: a rule is not a mapping")
            rules.append(dict(r, _group=g["name"]))
    return rules


def check_rules(path: Path, rep: Report) -> int:
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    text = path.read_text()
    try:
        rules = alert_rules(load_yaml(text))
    except YAMLError as e:
        rep.bad(f"{rel}: {e}")
        return 0
    try:  # Cross-check the small reader with PyYAML when it is there.
        import yaml  # type: ignore
    except ImportError:
        pass
    else:
        theirs = alert_rules(yaml.safe_load(text))
        key = lambda r: (r.get("alert") or r.get("record"), str(r.get("expr")),  # noqa: E731
                         {k: str(v) for k, v in (r.get("labels") or {}).items()},
                         {k: str(v) for k, v in (r.get("annotations") or {}).items()})
        if [key(r) for r in rules] != [key(r) for r in theirs]:
            rep.bad(f"{rel}: check.py's YAML reader and PyYAML disagree on the rules; simplify the YAML")
    seen = set()
    for r in rules:
        name = r.get("alert") or r.get("record")
        where = f"{rel}: {'alert' if 'alert' in r else 'rule'} {name}"
        if not name:
            rep.bad(f"{rel}: group {r['_group']}: a rule with neither alert nor record")
            continue
        expr = r.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            rep.bad(f"{where}: no expr")
        else:
            rep.exprs.append((where, expr))
        if "alert" not in r:
            continue
        if name in seen:
            rep.bad(f"{where}: alert name used twice")
        seen.add(name)
        sev = (r.get("labels") or {}).get("severity")
        if sev not in SEVERITIES:
            rep.bad(f"{where}: severity label {sev!r} is not one of {sorted(SEVERITIES)}")
        ann = r.get("annotations") or {}
        for a in REQUIRED_ANNOTATIONS:
            if not isinstance(ann.get(a), str) or not ann[a].strip():
                rep.bad(f"{where}: no {a} annotation")
        if "runbook" in ann and "monitoring" not in str(ann["runbook"]).lower():
            rep.bad(f"{where}: the runbook annotation should point at the README's Monitoring section")
    return len(rules)


def check_copies(rep: Report) -> None:
    for copy, original in COPIES.items():
        if not copy.exists():
            rep.bad(f"{copy.relative_to(REPO)} is missing: copy {original.relative_to(REPO)} there")
        elif copy.read_bytes() != original.read_bytes():
            rep.bad(f"{copy.relative_to(REPO)} differs from {original.relative_to(REPO)}: "
                    f"cp {original.relative_to(REPO)} {copy.relative_to(REPO)}")


def run(catalog: dict[str, str | None], scrapes: list[Path], dashboards: list[Path], rules: list[Path]) -> int:
    rep = Report()
    for d in dashboards:
        check_dashboard(d, rep)
    n_rules = sum(check_rules(r, rep) for r in rules)
    check_copies(rep)
    present: set[str] = set()
    for s in scrapes:
        names = read_scrape(s)
        if not names:
            rep.bad(f"{s}: no metrics in this scrape (an error page?)")
        present |= names

    used: set[str] = set()
    for where, expr in rep.exprs:
        warns: list[str] = []
        try:
            names = promql_metrics(expr, warns)
        except PromQLError as e:
            rep.bad(f"{where}: cannot read the expression ({e}): {expr.strip()}")
            continue
        rep.warnings += [f"{where}: {w}" for w in warns]
        if not names:
            rep.bad(f"{where}: the expression selects no metric: {expr.strip()}")
        for g in summed_db_gauges(expr):
            rep.bad(f"{where}: {g} is read from the shared database (the same on every replica): "
                    f"aggregate it with max, not sum")
        for name in dict.fromkeys(names):
            if name in ALLOWED:
                used.add(name)
                if scrapes and name not in SYNTHETIC and name not in present:
                    rep.warnings.append(f"{where}: {name} is in none of the scrapes")
                continue
            base = catalog_name(name, catalog)
            if base is None:
                rep.bad(f"{where}: unknown metric {name} (not in the catalog)")
                continue
            used.add(base)
            if scrapes and name not in present and base not in present:
                rep.bad(f"{where}: metric {name} is in the catalog but in none of the scrapes "
                        f"({', '.join(str(s) for s in scrapes)})")

    for w in dict.fromkeys(rep.warnings):
        print(f"warning: {w}", file=sys.stderr)
    if rep.problems:
        problems = list(dict.fromkeys(rep.problems))
        for p in problems:
            print(f"FAIL {p}")
        print(f"{len(problems)} problem(s) in {len(rep.exprs)} expressions")
        return 1
    files = f"{len(dashboards)} dashboard(s), {n_rules} rules"
    print(f"{len(rep.exprs)} expressions ({files}), {len(used)} metrics, "
          f"all {'in the catalog and exported' if scrapes else 'in the catalog'}")
    return 0


# ---------------------------------------------------------------- self-test


def self_test() -> int:
    failures = []

    def eq(got, want, what):
        if got != want:
            failures.append(f"{what}: got {got!r}, want {want!r}")

    m = lambda e: set(promql_metrics(e))  # noqa: E731
    eq(m('sum by (reason) (rate(hangar_worker_task_failures_total{phase="backend"}[5m]))'),
       {"hangar_worker_task_failures_total"}, "by clause and matcher")
    eq(m('sum(rate(x_total{a="}b{", c=~"d(e)f"}[5m])) without (le, instance)'), {"x_total"}, "braces in strings")
    eq(m("histogram_quantile(0.99, sum by (le, route) (rate(h_seconds_bucket[$__rate_interval])))"),
       {"h_seconds_bucket"}, "grafana interval, le")
    eq(m('a / on (job, instance) group_left (worker_id) max by (job, instance, worker_id) (b_info)'),
       {"a", "b_info"}, "on / group_left label lists")
    eq(m("a * ignoring(x) group_right b"), {"a", "b"}, "group_right without a list")
    eq(m("rate(a[5m] offset 1h) > bool 0.5 and b unless c or up"), {"a", "b", "c", "up"}, "keywords, offset")
    eq(m("sum(a[1h:5m]) + 1e3 - 0x1F * 2.5e-3 + Inf + NaN"), {"a"}, "subquery and numbers")
    eq(m('{__name__="a_total", job="x"} + count(b) BY (c)'), {"a_total", "b"}, "__name__ and upper-case BY")
    eq(m('max by (host) (q{host=~"$host"}) > ${threshold}'), {"q"}, "grafana variables")
    eq(m("job:rate5m:sum # a comment with metric_like words\n + d"), {"job:rate5m:sum", "d"}, "colons, comments")
    eq(m('label_replace(a, "dst", "$1", "src", "(.*)") @ start()'), {"a"}, "strings with $, @ start()")
    eq(m("count_values(\"v\", topk(3, a)) and quantile(0.9, b)"), {"a", "b"}, "aggregation parameters")
    try:
        promql_metrics("ratee(a[5m])")
        failures.append("unknown function accepted")
    except PromQLError:
        pass
    eq(variable_query_exprs("label_values(hangar_server_queue_depth{a=\"b,c\"}, host)"),
       ['hangar_server_queue_depth{a="b,c"}'], "label_values selector")
    eq(variable_query_exprs("label_values(host)"), [], "label_values without a selector")
    eq(summed_db_gauges("sum(hangar_server_runs) + sum by (host) (hangar_server_queue_depth)"),
       ["hangar_server_runs", "hangar_server_queue_depth"], "summed database gauges")
    eq(summed_db_gauges("sum(max by (host) (hangar_server_queue_depth)) + sum(hangar_server_runs_created_total)"),
       [], "max inside sum; a different metric with the same prefix")

    cat = {"h_seconds": "histogram", "g": "gauge", "c_total": "counter", "u": None}
    eq(catalog_name("h_seconds_bucket", cat), "h_seconds", "histogram suffix")
    eq(catalog_name("g_sum", cat), None, "suffix on a gauge")
    eq(catalog_name("u_count", cat), "u", "suffix with an unknown kind")
    eq(catalog_name("c_total", cat), "c_total", "plain name")

    doc = load_yaml(
        "groups:\n"
        "  - name: g  # comment\n"
        "    rules:\n"
        "      - alert: A\n"
        "        expr: sum(rate(x_total[5m]))\n"
        "          > 0\n"
        "        for: 5m\n"
        "        labels:\n"
        "          severity: 'warning'\n"
        "        annotations:\n"
        "          summary: \"a: {{ $labels.job }}\"\n"
        "          description: >-\n"
        "            one\n"
        "            two\n"
        "\n"
        "            three\n"
        "      - alert: B\n"
        "        expr: |\n"
        "          a\n"
        "            / b\n"
        "        labels: {}\n"
        "rule_files:\n"
        "- x.yml\n")
    eq(doc["groups"][0]["name"], "g", "yaml comment")
    r = doc["groups"][0]["rules"]
    eq(r[0]["expr"], "sum(rate(x_total[5m])) > 0", "yaml plain continuation")
    eq(r[0]["labels"], {"severity": "warning"}, "yaml single quotes")
    eq(r[0]["annotations"]["summary"], "a: {{ $labels.job }}", "yaml double quotes")
    eq(r[0]["annotations"]["description"], "one two\nthree", "yaml folded block")
    eq(r[1]["expr"], "a\n  / b\n", "yaml literal block")
    eq(r[1]["labels"], "{}", "yaml flow collection kept as text")
    eq(doc["rule_files"], ["x.yml"], "yaml sequence at the key's indent")

    for f in failures:
        print(f"FAIL {f}")
    print(f"self-test: {'ok' if not failures else f'{len(failures)} failure(s)'}")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--catalog", type=Path, help="metric names, one a line (optional second column: kind)")
    src.add_argument("--catalog-rs", type=Path, help="read the catalog from crates/hangar-telemetry/src/catalog.rs")
    ap.add_argument("--scrape", type=Path, nargs="+", action="extend", default=[],
                    help="Prometheus text exposition files; every metric used must be in one of them")
    ap.add_argument("--dashboard", type=Path, action="append",
                    help=f"dashboard JSON (default: {DASHBOARD_DIR.relative_to(REPO)}/*.json)")
    ap.add_argument("--rules", type=Path, action="append",
                    help=f"rule file (default: {RULES_DIR.relative_to(REPO)}/*alerts.yml)")
    ap.add_argument("--self-test", action="store_true", help="run the tokenizer and YAML reader unit checks")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if not (args.catalog or args.catalog_rs):
        ap.error("--catalog (or --catalog-rs) is required")
    for p in [args.catalog or args.catalog_rs] + args.scrape + (args.dashboard or []) + (args.rules or []):
        if not p.is_file():
            ap.error(f"{p}: no such file")
    catalog = read_catalog_txt(args.catalog) if args.catalog else read_catalog_rs(args.catalog_rs)
    dashboards = [p.resolve() for p in args.dashboard] if args.dashboard else sorted(DASHBOARD_DIR.glob("*.json"))
    rules = [p.resolve() for p in args.rules] if args.rules else sorted(
        p for p in RULES_DIR.glob("*alerts.yml") if not p.name.endswith(".test.yml"))
    if not dashboards or not rules:
        ap.error("no dashboards or no rule files found")
    return run(catalog, args.scrape, dashboards, rules)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
