#!/usr/bin/env python3
"""Validates the Helm charts in deploy/helm/ with Helm's own engine.

No `helm` binary can be installed from the registries this project reaches,
but PyPI's `helm-python-sdk` bundles Helm v4's Go SDK as a shared library
(`libhelm_c`): the same template engine and linter as `helm template` and
`helm lint`. `kubernetes-validate` checks every rendered object against the
Kubernetes OpenAPI schemas (strict: unknown fields are errors).

Setup, once, in a venv outside the repository:

    python3 -m venv /var/tmp/hangar-helm-venv
    /var/tmp/hangar-helm-venv/bin/pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.4
    /var/tmp/hangar-helm-venv/bin/python deploy/helm/check.py

What it checks, for both charts:
- `helm lint --strict` with the default values and with every case below;
- `helm template` of every case, each object validated against the
  Kubernetes schemas of the oldest and newest supported versions;
- the cases the charts must refuse, with the message they must give;
- the contract with the code: the worker's Role is exactly the verbs the
  Kubernetes backend uses and nothing cluster-wide; the config files hold
  only keys the Rust config structs know (read from the sources); secrets
  appear only in Secrets; args, env, ports, probes and security contexts.

It ends with `N passed, N failed`; the exit code is 0 only if all passed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

try:
    import helm_python as helm
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover
    sys.stderr.write(
        f"check.py needs helm-python-sdk, kubernetes-validate and PyYAML ({e}).\n"
        "  python3 -m venv /var/tmp/hangar-helm-venv\n"
        "  /var/tmp/hangar-helm-venv/bin/pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.4\n"
        "  /var/tmp/hangar-helm-venv/bin/python deploy/helm/check.py\n"
    )
    sys.exit(2)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORKER = HERE / "hangar-worker"
SERVER = HERE / "hangar-server"
# Oldest and newest Kubernetes versions the objects are validated against
# (native sidecars need 1.29).
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]

TOKEN = "hw_checkTOKENvalue0123456789"
DB_PASSWORD = "dbPASSWORDsecret42"
DB_URL = f"postgres://hangar:{DB_PASSWORD}@db.internal:5432/hangar"
MASTER_KEY = "0123456789abcdef" * 4
PROVIDER_KEY = "sk-checkPROVIDERkey0001"

# What the Kubernetes backend does, and nothing else (issue 12, PROTOCOL.md §3).
def _permissions_from_code() -> dict:
    """The worker's Role as the Kubernetes backend uses it: its PERMISSIONS
    table in crates/hangar-worker/src/backends/kubernetes.rs (one source of
    truth; the backend also reviews exactly these at start)."""
    src = (REPO / "crates/hangar-worker/src/backends/kubernetes.rs").read_text()
    table = src[src.index("pub const PERMISSIONS"):]
    table = table[: table.index("];")]
    rules: dict = {}
    for verb, group, resource, sub in re.findall(r'\("(\w+)", "([\w.]*)", "(\w+)", "(\w*)"\)', table):
        key = (group, f"{resource}/{sub}" if sub else resource)
        rules.setdefault(key, set()).add(verb)
    assert rules, "no PERMISSIONS found in kubernetes.rs"
    return rules


EXPECTED_WORKER_RULES = _permissions_from_code()
# Keys the backend will accept once it lands, though the parser in the
# sources may not know them yet (a warning, not a failure).
PENDING_KUBERNETES_KEYS: set = set()

passed = 0
failed = 0
warnings: list[str] = []
# (case, "server"|"worker", config text, extra flags): fed to the real binary
# at the end when one is built.
rendered_configs: list[tuple[str, str, str, list[str]]] = []


def ok(name: str) -> None:
    global passed
    passed += 1
    print(f"ok   {name}")


def bad(name: str, why: str) -> None:
    global failed
    failed += 1
    print(f"FAIL {name}: {why}")


def check(name: str, fn) -> None:
    try:
        fn()
    except AssertionError as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        bad(name, str(e) or f"assertion failed at line {where.lineno}: {where.line}")
    except helm.HelmError as e:
        bad(name, f"helm: {e}")
    except Exception as e:  # noqa: BLE001
        bad(name, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    else:
        ok(name)


# ---------------------------------------------------------------- helpers


def values_of(sets: list[str], files: list[Path] | None = None) -> dict:
    """Values as `helm -f FILE --set A=B` would build them (files, then sets)."""
    merged: dict = {}
    for f in files or []:
        deep_merge(merged, yaml.safe_load(f.read_text()) or {})
    for s in sets:
        if s.startswith("json:"):  # --set-json
            deep_merge(merged, helm.parse_set_json(s[5:]))
        else:  # --set
            deep_merge(merged, helm.parse_set_string(s))
    return merged


def deep_merge(dst: dict, src: dict) -> dict:
    """Merges like successive `--set` flags: maps key by key, lists index by
    index (`a[1].b=x` leaves `a[0]` alone; a null element is a hole)."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            deep_merge(dst[k], v)
        elif isinstance(v, list) and isinstance(dst.get(k), list):
            old = dst[k]
            for i, item in enumerate(v):
                if i >= len(old):
                    old.append(item)
                elif item is None:
                    continue
                elif isinstance(item, dict) and isinstance(old[i], dict):
                    deep_merge(old[i], item)
                else:
                    old[i] = item
        else:
            dst[k] = v
    return dst


def render(chart: Path, values: dict, name: str, namespace: str) -> dict[str, list[dict]]:
    """`helm template` → {template path: [objects]} (NOTES.txt kept as text)."""
    out = helm.Chart.load(chart).render(values, name=name, namespace=namespace, is_install=True)
    docs: dict[str, list[dict]] = {}
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            docs[path] = [{"__notes__": text}]
            continue
        objs = [d for d in yaml.safe_load_all(text) if d]
        if objs:
            docs[path] = objs
    return docs


def objects(docs: dict[str, list[dict]]) -> list[dict]:
    return [o for objs in docs.values() for o in objs if "__notes__" not in o]


def one(docs, kind: str, suffix: str = "") -> dict:
    found = [o for o in objects(docs) if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind}*{suffix}, found {len(found)}"
    return found[0]


def kinds(docs) -> list[str]:
    return sorted(o["kind"] for o in objects(docs))


def validate_objects(docs) -> None:
    for o in objects(docs):
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            # No schemas for the Prometheus Operator's CRDs: their essentials.
            spec, kind = o["spec"], o["kind"]
            if kind in ("PodMonitor", "ServiceMonitor"):
                assert spec["selector"]["matchLabels"], f"{kind} without a selector"
                endpoints = spec["podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"]
                assert endpoints and all(e.get("port") for e in endpoints), f"{kind} endpoint without port"
            elif kind == "PrometheusRule":
                assert spec["groups"] and all(r.get("expr") for g in spec["groups"] for r in g["rules"]), \
                    "PrometheusRule without rules"
            else:
                raise AssertionError(f"unexpected {kind}")
            continue
        for v in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(o, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                raise AssertionError(f"{o['kind']}/{o['metadata']['name']} invalid for {v}: {path}: {e.message}")
        labels = o["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{o['kind']}/{o['metadata']['name']} lacks label {key}"


def validate_pod_spec(spec: dict, what: str) -> None:
    """A pod_template is a partial PodSpec (the worker fills the task's image):
    validate it as a Pod with placeholder images where none is given."""
    spec = json.loads(json.dumps(spec))
    spec.setdefault("containers", [])
    if not any(c.get("name") == "task" for c in spec["containers"]):
        spec["containers"].append({"name": "task"})
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        c.setdefault("image", "placeholder:latest")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod-template"}, "spec": spec}
    for v in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(pod, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise AssertionError(f"{what}: pod_template invalid for {v}: {path}: {e.message}")


def rust_fields(path: Path, struct: str) -> set[str]:
    """Field names of a serde struct in the Rust sources (with `rename`s)."""
    text = path.read_text()
    m = re.search(r"pub struct " + re.escape(struct) + r"\s*\{(.*?)\n\}", text, re.S)
    assert m, f"struct {struct} not found in {path}"
    body = m.group(1)
    fields = set(re.findall(r"^\s*pub\s+(?:r#)?(\w+)\s*:", body, re.M))
    fields |= set(re.findall(r'rename\s*=\s*"([^"]+)"', body))
    return fields


def container(deploy: dict, name: str) -> dict:
    cs = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(cs) == 1, f"no container {name}"
    return cs[0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def assert_hardened(deploy: dict, cname: str) -> None:
    pod = deploy["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc.get("runAsNonRoot") is True, "pod runAsNonRoot"
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccompProfile RuntimeDefault"
    sc = container(deploy, cname)["securityContext"]
    assert sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem"
    assert sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false"
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL"
    assert not sc.get("capabilities", {}).get("add"), "no capabilities added"
    assert not sc.get("privileged"), "not privileged"


def assert_no_secret_text(docs, secrets: list[str]) -> None:
    for o in objects(docs):
        if o["kind"] == "Secret":
            continue
        text = yaml.safe_dump(o)
        for s in secrets:
            assert s not in text, f"a secret value appears in {o['kind']}/{o['metadata']['name']}"


def expect_refusal(chart: Path, sets: list[str], needle: str) -> None:
    try:
        render(chart, values_of(sets), "rel", "ns")
    except helm.HelmError as e:
        assert needle in str(e), f"refused, but the message lacks `{needle}`: {e}"
        return
    raise AssertionError(f"rendered, but must be refused ({needle})")


def lint(chart: Path, values: dict | None, name: str) -> None:
    report = helm.lint(chart, values, strict=True)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [{"error": e} for e in report.get("errors", [])]
    assert not problems, f"helm lint --strict ({name}): {problems}"


# ---------------------------------------------------------------- worker

WORKER_BASE = ["workerId=build-box", "serverUrl=https://hangar.internal", f"credential.token={TOKEN}"]
FILE_RS = REPO / "crates/hangar-worker/src/config/file.rs"


def worker_case(name: str, sets: list[str], files: list[Path] | None = None, release="build-box", ns="hangar"):
    values = values_of(sets, files)
    docs = render(WORKER, values, release, ns)
    lint(WORKER, values, name)
    validate_objects(docs)
    return values, docs


def check_worker_common(values: dict, docs) -> dict:
    k = values.get("kubernetes", {})
    job_ns = k.get("namespace") or "hangar"
    assert not any(o["kind"].startswith("Cluster") for o in objects(docs)), "cluster-scoped RBAC"
    deploy = one(docs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1, "one replica: one release is one worker id"
    assert spec["strategy"]["type"] == "Recreate", "Recreate: never two pods with one worker id"
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60, "a grace period long enough to drain"
    assert_hardened(deploy, "worker")
    c = container(deploy, "worker")
    args = c["args"]
    wid = str(values["workerId"])
    for pair in (["--worker-id", wid], ["--backend", "kubernetes"],
                 ["--config-file", "/etc/hangar/worker.yaml"], ["--server-url", values["serverUrl"]]):
        i = args.index(pair[0])
        assert args[i + 1] == pair[1], f"{pair[0]} {args[i + 1]!r} != {pair[1]!r}"
    assert args[0] == "worker", "the image's entrypoint is hangar: args start with `worker`"
    assert not any("--api-key" in a for a in args), "the credential is never an argument"
    env = env_of(c)
    ref = env["HANGAR_API_KEY"]["valueFrom"]["secretKeyRef"]
    cred = values.get("credential", {})
    assert ref["name"] == (cred.get("existingSecret") or "build-box-hangar-worker-credential"), ref
    assert ref["key"] == cred.get("existingSecretKey", "token"), ref
    assert env["HANGAR_AGENT_IMAGE"]["value"] == (values.get("agentImage") or c["image"]), "HANGAR_AGENT_IMAGE"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/hangar"]["readOnly"] is True and "/tmp" in mounts, mounts
    if cred.get("existingSecret"):
        assert not [o for o in objects(docs) if o["kind"] == "Secret"], "no Secret with existingSecret"
    else:
        sec = one(docs, "Secret", "-credential")
        assert sec["data"]["token"] and TOKEN not in yaml.safe_dump(sec), "token stored base64"
    assert_no_secret_text(docs, [TOKEN])
    if values.get("rbac", {}).get("create", True):
        role = one(docs, "Role")
        got = {}
        for r in role["rules"]:
            for g in r["apiGroups"]:
                for res in r["resources"]:
                    got.setdefault((g, res), set()).update(r["verbs"])
        assert got == EXPECTED_WORKER_RULES, f"Role rules {got} != {EXPECTED_WORKER_RULES}"
        assert not any("*" in r["verbs"] or "*" in r["resources"] or r.get("resourceNames") is not None
                       for r in role["rules"]), "no wildcards"
        assert role["metadata"]["namespace"] == job_ns, "the Role lives in the task namespace"
        rb = one(docs, "RoleBinding")
        assert rb["metadata"]["namespace"] == job_ns
        assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                 "name": role["metadata"]["name"]}
        sa_name = pod["serviceAccountName"]
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": "hangar"}], rb["subjects"]
    else:
        assert "Role" not in kinds(docs) and "RoleBinding" not in kinds(docs)
    # The config file: only keys the worker's parser knows (deny_unknown_fields).
    cm = one(docs, "ConfigMap", "-config")
    cfg = yaml.safe_load(cm["data"]["worker.yaml"])
    rendered_configs.append((f"worker {wid} ({', '.join(sorted(cfg['backend']['kubernetes']))})", "worker",
                             cm["data"]["worker.yaml"],
                             [a for a in args[1:] if a != "/etc/hangar/worker.yaml" and a != "--config-file"]))
    top = rust_fields(FILE_RS, "FileConfig")
    kube_known = rust_fields(FILE_RS, "FileKubernetes")
    assert set(cfg) <= top, f"unknown top-level keys {set(cfg) - top}"
    assert list(cfg["backend"]) == ["kubernetes"], "exactly the kubernetes backend section"
    kcfg = cfg["backend"]["kubernetes"]
    unknown = set(kcfg) - kube_known
    pending = unknown & PENDING_KUBERNETES_KEYS
    if pending:
        warnings.append(f"worker config renders {sorted(pending)}, which {FILE_RS.relative_to(REPO)} "
                        "does not parse yet (the Kubernetes backend must add it)")
    assert not unknown - pending, f"unknown backend.kubernetes keys {unknown - pending}"
    assert cfg["worker_id"] == wid and kcfg["namespace"] == job_ns
    if "pod_template" in kcfg:
        validate_pod_spec(kcfg["pod_template"], "worker config")
    if "preflight_resources" in kcfg:
        validate_pod_spec({"containers": [{"name": "preflight", "resources": kcfg["preflight_resources"]}]},
                          "preflight_resources")
    # Metrics.
    if values.get("metrics", {}).get("enabled", True):
        port = values.get("metrics", {}).get("port", 9464)
        svc = one(docs, "Service", "-metrics")
        assert svc["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}]
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in c["ports"]
        assert env["OTEL_METRICS_EXPORTER"]["value"] == "prometheus"
        assert env["OTEL_EXPORTER_PROMETHEUS_PORT"]["value"] == str(port)
    else:
        assert env["OTEL_METRICS_EXPORTER"]["value"] == "none"
        assert "Service" not in kinds(docs)
    return cfg


def worker_checks() -> None:
    def defaults():
        values, docs = worker_case("worker defaults", WORKER_BASE)
        cfg = check_worker_common(values, docs)
        assert kinds(docs) == ["ConfigMap", "Deployment", "Role", "RoleBinding", "Secret", "Service",
                               "ServiceAccount"], kinds(docs)
        assert cfg == {
            "worker_id": "build-box", "cleanup": True, "max_concurrent_tasks": 4,
            "backend": {"kubernetes": {
                "namespace": "hangar", "image_pull_policy": "IfNotPresent",
                "active_deadline_seconds": 28800, "ttl_seconds_after_finished": 86400,
                "workspace_size_limit": "10Gi", "unschedulable_timeout": "30s"}},
        }, cfg
        c = container(one(docs, "Deployment"), "worker")
        assert c["image"] == "hangar:0.1.0", c["image"]
        assert c["args"] == ["worker", "--worker-id", "build-box", "--backend", "kubernetes", "--config-file",
                             "/etc/hangar/worker.yaml", "--server-url", "https://hangar.internal",
                             "--log-level", "info"], c["args"]
        notes = [o for o in docs.values() if "__notes__" in o[0]]
        assert notes and "build-box" in notes[0][0]["__notes__"]
    check("worker: defaults render, lint and validate; config, RBAC, args, env", defaults)

    def everything():
        values, docs = worker_case("worker everything", WORKER_BASE + [
            "kubernetes.namespace=hangar-tasks",
            "kubernetes.kubeconfig=/etc/kube/config",
            "kubernetes.defaultImage=ghcr.io/acme/dev:1.2",
            "kubernetes.imagePullPolicy=Always",
            "kubernetes.preflightImage=busybox:1.36",
            "kubernetes.preflightResources.requests.cpu=10m", "kubernetes.preflightResources.limits.memory=64Mi",
            "kubernetes.setupCommand=make deps && echo 'ready: yes' # \"quoted\"",
            "kubernetes.teardownCommand=./teardown.sh",
            "kubernetes.extraLabels.team=infra",
            "kubernetes.extraAnnotations.karpenter\\.sh/do-not-disrupt=true",
            "kubernetes.activeDeadlineSeconds=3600",
            "kubernetes.ttlSecondsAfterFinished=600",
            "kubernetes.workspaceSizeLimit=50Gi",
            "kubernetes.unschedulableTimeout=5m",
            "maxConcurrentTasks=0", "cleanup=false", "idleOnComplete=10m", "fenceAfter=3m",
            "logLevel=debug", "extraArgs={--env,FOO=bar}",
            "extraEnv[0].name=RUST_LOG", "extraEnv[0].value=hangar=debug",
            "imagePullSecrets[0].name=regcred", "nodeSelector.pool=system",
            "tolerations[0].key=dedicated", "tolerations[0].operator=Exists",
            "livenessProbe.httpGet.path=/metrics", "livenessProbe.httpGet.port=metrics",
            "podAnnotations.a=b", "podLabels.c=d", "deploymentAnnotations.e=f",
            "priorityClassName=high", "image.repository=registry.internal/hangar", "image.tag=0.2.0",
            "agentImage=registry.internal/hangar-agent-sidecar:0.2.0",
            "metrics.port=9500", "metrics.podMonitor.enabled=true",
            "metrics.podMonitor.additionalLabels.release=prom",
            "extraVolumes[0].name=kube", "extraVolumes[0].secret.secretName=kubeconfig",
            "extraVolumeMounts[0].name=kube", "extraVolumeMounts[0].mountPath=/etc/kube",
        ], files=[WORKER / "examples/gpu.yaml"], ns="hangar")
        cfg = check_worker_common(values, docs)
        k = cfg["backend"]["kubernetes"]
        assert k["setup_command"] == "make deps && echo 'ready: yes' # \"quoted\"", k["setup_command"]
        assert k["extra_annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
        assert k["active_deadline_seconds"] == 3600 and k["ttl_seconds_after_finished"] == 600
        assert k["unschedulable_timeout"] == "5m" and k["kubeconfig"] == "/etc/kube/config"
        assert cfg["max_concurrent_tasks"] == 0 and cfg["cleanup"] is False and cfg["idle_on_complete"] == "10m"
        assert k["pod_template"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
        c = container(one(docs, "Deployment"), "worker")
        assert c["image"] == "registry.internal/hangar:0.2.0"
        assert c["args"][-4:] == ["--fence-after", "3m", "--env", "FOO=bar"], c["args"]
        pm = one(docs, "PodMonitor")
        assert pm["metadata"]["labels"]["release"] == "prom"
        assert {"action": "replace", "targetLabel": "job", "replacement": "hangar-worker"} in \
            pm["spec"]["podMetricsEndpoints"][0]["relabelings"], "PodMonitor: job hangar-worker for the alerts"
        assert one(docs, "Role")["metadata"]["namespace"] == "hangar-tasks"
    check("worker: every value set, task namespace elsewhere, PodMonitor", everything)

    def minimal():
        values, docs = worker_case("worker minimal", [
            "workerId=ci-7", "serverUrl=http://hangar-server.hangar.svc:7420",
            "credential.existingSecret=fleet-token", "credential.existingSecretKey=HANGAR_API_KEY",
            "metrics.enabled=false", "rbac.create=false", "serviceAccount.create=false",
            "serviceAccount.name=hangar-worker", "kubernetes.activeDeadlineSeconds=null",
            "kubernetes.ttlSecondsAfterFinished=null", "kubernetes.workspaceSizeLimit=",
            "kubernetes.unschedulableTimeout=", "kubernetes.imagePullPolicy=", "tmpSizeLimit=",
        ])
        cfg = check_worker_common(values, docs)
        assert cfg["backend"]["kubernetes"] == {"namespace": "hangar"}, cfg
        assert kinds(docs) == ["ConfigMap", "Deployment"], kinds(docs)
    check("worker: existingSecret, no metrics, no RBAC, worker defaults left to the worker", minimal)

    def monitoring():
        values, docs = worker_case("worker monitoring", WORKER_BASE + [
            "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.additionalLabels.release=prom",
            "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.additionalLabels.release=prom",
        ])
        check_worker_common(values, docs)
        assert kinds(docs) == ["ConfigMap", "Deployment", "PrometheusRule", "Role", "RoleBinding", "Secret",
                               "Service", "ServiceAccount", "ServiceMonitor"], kinds(docs)
        svc = one(docs, "Service", "-metrics")
        sm = one(docs, "ServiceMonitor")
        assert sm["metadata"]["labels"]["release"] == "prom"
        sel = sm["spec"]["selector"]["matchLabels"]
        assert sel.items() <= svc["metadata"]["labels"].items(), "the ServiceMonitor selects the metrics Service"
        ep = sm["spec"]["endpoints"][0]
        assert ep["port"] == "metrics" and ep["path"] == "/metrics"
        assert {"action": "replace", "targetLabel": "job", "replacement": "hangar-worker"} in ep["relabelings"]
        # The rules are deploy/monitoring's, unchanged (check.py there keeps the chart's copy identical).
        shipped = REPO / "deploy/monitoring/prometheus/hangar-alerts.yml"
        assert (WORKER / "files/hangar-alerts.yml").read_bytes() == shipped.read_bytes(), \
            f"files/hangar-alerts.yml differs from {shipped.relative_to(REPO)}"
        pr = one(docs, "PrometheusRule")
        assert pr["metadata"]["labels"]["release"] == "prom"
        assert pr["spec"]["groups"] == yaml.safe_load(shipped.read_text())["groups"], "PrometheusRule != the rules"
    check("worker: ServiceMonitor and the alert rules as a PrometheusRule", monitoring)

    for example in sorted((WORKER / "examples").glob("*.yaml")):
        def ex(example=example):
            values, docs = worker_case(f"worker {example.name}", WORKER_BASE, files=[example])
            cfg = check_worker_common(values, docs)
            assert cfg["backend"]["kubernetes"]["pod_template"] == values["kubernetes"]["podTemplate"]
        check(f"worker: examples/{example.name} renders and its pod_template is a valid PodSpec", ex)

    refusals = [
        ([], "workerId is required"),
        (["workerId=build box", "serverUrl=https://h", "credential.token=hw_x"], "not a valid worker id"),
        (["workerId=a/b", "serverUrl=https://h", "credential.token=hw_x"], "not a valid worker id"),
        (["workerId=" + "x" * 129, "serverUrl=https://h", "credential.token=hw_x"], "not a valid worker id"),
        (["workerId=local:w", "serverUrl=https://h", "credential.token=hw_x"], "reserved for the server"),
        (["workerId=w"], "serverUrl is required"),
        (["workerId=w", "serverUrl=hangar.internal:7420", "credential.token=hw_x"], "must start with http"),
        (["workerId=w", "serverUrl=https://h"], "a worker credential is required"),
        (WORKER_BASE + ["kubernetes.imagePullPolicy=Sometimes"], "must be Always, IfNotPresent or Never"),
        (WORKER_BASE + ["logLevel=trace"], "must be debug, info, warn or error"),
        (WORKER_BASE + ["metrics.enabled=false", "metrics.podMonitor.enabled=true"], "needs metrics.enabled"),
        (WORKER_BASE + ["metrics.enabled=false", "metrics.serviceMonitor.enabled=true"], "needs metrics.enabled"),
        (WORKER_BASE + ["metrics.podMonitor.enabled=true", "metrics.serviceMonitor.enabled=true"], "not both"),
        (WORKER_BASE + ["serviceAccount.create=false"], "serviceAccount.name is required"),
    ]
    for sets, needle in refusals:
        check(f"worker: refuses {sets[-1] if sets else 'no values'!r}: {needle}",
              lambda sets=sets, needle=needle: expect_refusal(WORKER, sets, needle))


# ---------------------------------------------------------------- server

CONFIG_RS = REPO / "crates/hangar-server/src/config.rs"
PG = ["replicaCount=3", f"database.url={DB_URL}", f"masterKey.value={MASTER_KEY}"]


def server_case(name: str, sets: list[str], files: list[Path] | None = None, release="hangar", ns="hangar"):
    values = values_of(sets, files)
    docs = render(SERVER, values, release, ns)
    lint(SERVER, values, name)
    validate_objects(docs)
    return values, docs


def check_server_common(values: dict, docs) -> dict:
    deploy = one(docs, "Deployment")
    assert_hardened(deploy, "server")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False, "the server needs no API token"
    c = container(deploy, "server")
    port = values.get("httpPort", 7420)
    assert c["args"][:5] == ["server", "--config", "/etc/hangar/server.yaml", "--listen", f"0.0.0.0:{port}"], c["args"]
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in c["ports"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, c["livenessProbe"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, c["readinessProbe"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/hangar"]["readOnly"] is True and "/var/lib/hangar" in mounts and "/tmp" in mounts
    vols = {v["name"]: v for v in pod["volumes"]}
    has_db = bool(values.get("database", {}).get("url") or values.get("database", {}).get("existingSecret"))
    mk = values.get("masterKey", {})
    has_key = bool(mk.get("value") or mk.get("existingSecret"))
    env = env_of(c)
    if has_db:
        ref = env["HANGAR_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == (values["database"].get("existingSecret") or "hangar-hangar-server-database")
        assert deploy["spec"]["strategy"]["type"] == "RollingUpdate" or values.get("strategy")
        assert "emptyDir" in vols["data"], "PostgreSQL: data_dir is an emptyDir"
    else:
        assert "HANGAR_DATABASE_URL" not in env
        assert deploy["spec"]["replicas"] == 1
        assert deploy["spec"]["strategy"]["type"] == "Recreate" or values.get("strategy")
    sources = vols["etc"]["projected"]["sources"]
    secret_sources = [s["secret"] for s in sources if "secret" in s]
    cm = one(docs, "ConfigMap", "-config")
    cfg = yaml.safe_load(cm["data"]["server.yaml"])
    rendered_configs.append((f"server ({', '.join(sorted(cfg))})", "server", cm["data"]["server.yaml"], []))
    known = rust_fields(CONFIG_RS, "ServerConfig")
    assert set(cfg) <= known, f"unknown server config keys {set(cfg) - known}"
    assert "database_url" not in cfg, "database_url is never in the ConfigMap"
    assert cfg["listen"] == f"0.0.0.0:{port}" and cfg["data_dir"] == "/var/lib/hangar"
    assert cfg["cli_config_path"] == "", "no CLI credentials written inside the pod"
    if has_key:
        assert cfg["master_key_file"] == "/etc/hangar/master.key"
        assert secret_sources and secret_sources[0]["items"][0]["path"] == "master.key"
        assert secret_sources[0]["name"] == (mk.get("existingSecret") or "hangar-hangar-server-master-key")
    else:
        assert "master_key_file" not in cfg and not secret_sources
    assert re.match(r"^https?://", cfg["public_url"]), cfg["public_url"]
    assert_no_secret_text(docs, [DB_PASSWORD, MASTER_KEY, PROVIDER_KEY])
    return cfg


def server_checks() -> None:
    def defaults():
        values, docs = server_case("server defaults", [])
        cfg = check_server_common(values, docs)
        assert kinds(docs) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service",
                               "ServiceAccount"], kinds(docs)
        assert cfg == {
            "listen": "0.0.0.0:7420", "data_dir": "/var/lib/hangar",
            "public_url": "http://hangar-hangar-server.hangar.svc:7420", "cli_config_path": "",
            "providers_from_env": True, "heartbeat_interval": "30s", "read_timeout": "60s",
            "worker_lost_timeout": "2m", "max_body_bytes": 1048576, "schedule_catch_up": "one",
            "allow_local_repositories": False,
        }, cfg
        deploy = one(docs, "Deployment")
        assert deploy["spec"]["replicas"] == 1
        vols = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
        assert vols["data"]["persistentVolumeClaim"]["claimName"] == "hangar-hangar-server-data"
        assert container(deploy, "server")["image"] == "hangar:0.1.0"
        svc = one(docs, "Service")
        assert svc["spec"]["ports"] == [{"name": "http", "port": 7420, "targetPort": "http", "protocol": "TCP"}]
    check("server: defaults render, lint and validate (SQLite on a PVC, 1 replica)", defaults)

    def postgres():
        values, docs = server_case("server postgres", PG + [
            f"providerKeys.values.OPENAI_API_KEY={PROVIDER_KEY}", "providerKeys.existingSecret=more-keys",
            "ingress.enabled=true", "ingress.className=nginx", "ingress.hosts[0].host=hangar.example.com",
            "ingress.tls[0].secretName=hangar-tls",
            "ingress.tls[0].hosts[0]=hangar.example.com",
            "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-read-timeout=3600",
            "podDisruptionBudget.enabled=true",
            "config.default_model=openai/gpt-5",
            "config.providers.openai.kind=openai", "config.providers.openai.api_key_env=OPENAI_API_KEY",
            'json:config.llm_gateway.max_cost_usd_per_run=5.5', "config.llm_gateway.requests_per_second=5",
            "extraConfig.lease_expiry_policy=requeue",
            "topologySpreadConstraints[0].maxSkew=1",
            "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
            "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
            "topologySpreadConstraints[0].labelSelector.matchLabels.app\\.kubernetes\\.io/name=hangar-server",
        ])
        cfg = check_server_common(values, docs)
        assert cfg["public_url"] == "https://hangar.example.com", cfg["public_url"]
        assert cfg["providers"] == {"openai": {"kind": "openai", "api_key_env": "OPENAI_API_KEY"}}
        assert cfg["llm_gateway"] == {"max_cost_usd_per_run": 5.5, "requests_per_second": 5}
        assert cfg["lease_expiry_policy"] == "requeue" and cfg["default_model"] == "openai/gpt-5"
        assert "PersistentVolumeClaim" not in kinds(docs), "no PVC with PostgreSQL"
        deploy = one(docs, "Deployment")
        assert deploy["spec"]["replicas"] == 3
        c = container(deploy, "server")
        assert [e["secretRef"]["name"] for e in c["envFrom"]] == ["hangar-hangar-server-provider-keys", "more-keys"]
        secrets = {o["metadata"]["name"]: o for o in objects(docs) if o["kind"] == "Secret"}
        assert set(secrets) == {"hangar-hangar-server-database", "hangar-hangar-server-master-key",
                                "hangar-hangar-server-provider-keys"}, set(secrets)
        assert secrets["hangar-hangar-server-master-key"]["metadata"]["annotations"][
            "helm.sh/resource-policy"] == "keep", "the master key survives uninstall"
        ing = one(docs, "Ingress")
        assert ing["spec"]["rules"][0]["http"]["paths"] == [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "hangar-hangar-server", "port": {"name": "http"}}}}], ing["spec"]["rules"]
        assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    check("server: 3 replicas on PostgreSQL, Ingress with TLS, provider keys, PDB", postgres)

    def existing():
        values, docs = server_case("server existing secrets", [
            "replicaCount=2", "database.existingSecret=pg", "database.existingSecretKey=url",
            "masterKey.existingSecret=mk", "config.public_url=https://hangar.internal/",
            "strategy.type=RollingUpdate", "strategy.rollingUpdate.maxUnavailable=0",
            "httpPort=8080", "service.port=80", "serviceAccount.create=false",
        ], release="hangar-server", ns="tools")
        cfg = check_server_common(values, docs)
        assert cfg["public_url"] == "https://hangar.internal"
        assert not [o for o in objects(docs) if o["kind"] == "Secret"], "no chart Secrets"
        assert one(docs, "Deployment")["metadata"]["name"] == "hangar-server"
        assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"
    check("server: existing Secrets, custom ports and strategy", existing)

    def sqlite_variants():
        for sets in (["persistence.enabled=false"], ["persistence.existingClaim=hangar-data"],
                     [f"masterKey.value={MASTER_KEY}", "persistence.emptyDirSizeLimit="]):
            values, docs = server_case(f"server {sets}", sets)
            check_server_common(values, docs)
            vols = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
            if sets[0].startswith("persistence.enabled=false"):
                assert vols["data"]["emptyDir"]["sizeLimit"] == "10Gi"
                assert "PersistentVolumeClaim" not in kinds(docs)
            elif "existingClaim" in sets[0]:
                assert vols["data"]["persistentVolumeClaim"]["claimName"] == "hangar-data"
                assert "PersistentVolumeClaim" not in kinds(docs)
    check("server: SQLite with emptyDir, an existing claim, a given master key", sqlite_variants)

    def metrics():
        # With a bearer token Secret and a ServiceMonitor.
        values, docs = server_case("server metrics", [
            "metrics.enabled=true", "metrics.bearerTokenSecret=hangar-metrics",
            "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.additionalLabels.release=prom",
        ])
        cm = one(docs, "ConfigMap", "-config")
        cfg = yaml.safe_load(cm["data"]["server.yaml"])
        assert cfg["metrics"] == {"listen": "0.0.0.0:9465", "bearer_token_file": "/etc/hangar-metrics/token"}, cfg
        deploy = one(docs, "Deployment")
        c = container(deploy, "server")
        assert {"name": "metrics", "containerPort": 9465, "protocol": "TCP"} in c["ports"], c["ports"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/etc/hangar-metrics"]["name"] == "metrics-token" and mounts["/etc/hangar-metrics"]["readOnly"]
        vols = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
        assert vols["metrics-token"]["secret"]["secretName"] == "hangar-metrics"
        assert vols["metrics-token"]["secret"]["items"][0]["key"] == "token"
        assert vols["metrics-token"]["secret"]["items"][0]["path"] == "token"
        svc = one(docs, "Service", "-metrics")
        assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9465, "targetPort": "metrics", "protocol": "TCP"}]
        api = one(docs, "Service", "hangar-server")
        assert [p["name"] for p in api["spec"]["ports"]] == ["http"], "metrics are not on the API Service"
        sm = one(docs, "ServiceMonitor")
        sel = sm["spec"]["selector"]["matchLabels"]
        assert sel.items() <= svc["metadata"]["labels"].items(), "the ServiceMonitor selects the metrics Service"
        assert not sel.items() <= api["metadata"]["labels"].items(), "the ServiceMonitor must not select the API"
        ep = sm["spec"]["endpoints"][0]
        assert ep["port"] == "metrics" and ep["authorization"] == {
            "type": "Bearer", "credentials": {"name": "hangar-metrics", "key": "token"}}, ep
        assert {"action": "replace", "targetLabel": "job", "replacement": "hangar-server"} in ep["relabelings"]
        # Without a token, on another port.
        values2, docs2 = server_case("server metrics without token", [
            "metrics.enabled=true", "metrics.port=9000", "metrics.refreshInterval=15s"])
        cfg2 = yaml.safe_load(one(docs2, "ConfigMap", "-config")["data"]["server.yaml"])
        assert cfg2["metrics"] == {"listen": "0.0.0.0:9000", "refresh_interval": "15s"}, cfg2
        vols2 = {v["name"] for v in one(docs2, "Deployment")["spec"]["template"]["spec"]["volumes"]}
        assert "metrics-token" not in vols2
        # The contract with the code: the section's keys are the Rust struct's.
        body = re.search(r"pub struct ServerConfig\s*\{(.*?)\n\}", CONFIG_RS.read_text(), re.S).group(1)
        field = re.search(r"^\s*pub\s+metrics\s*:\s*(?:Option<)?([\w:]+)", body, re.M)
        assert field, (f"ServerConfig in {CONFIG_RS.relative_to(REPO)} has no `metrics` field yet: the chart "
                       "renders `metrics: {listen, bearer_token_file}` (the Rust side must add it)")
        struct = field.group(1).split("::")[-1]
        sources = [p for d in ("crates/hangar-server/src", "crates/hangar-telemetry/src")
                   for p in sorted((REPO / d).rglob("*.rs")) if f"pub struct {struct}" in p.read_text()]
        assert sources, f"struct {struct} (ServerConfig.metrics) not found"
        known = rust_fields(sources[0], struct)
        for c in (cfg, cfg2):
            assert set(c["metrics"]) <= known, f"unknown metrics keys {set(c['metrics']) - known}"
        check_server_common(values, docs)
        check_server_common(values2, docs2)
    check("server: metrics listener, bearer token Secret, ServiceMonitor", metrics)

    refusals = [
        (["replicaCount=2"], "needs PostgreSQL"),
        ([f"database.url={DB_URL}"], "the master key must be given"),
        (["masterKey.value=not-hex"], "64 hexadecimal characters"),
        (["database.url=mysql://x/y", f"masterKey.value={MASTER_KEY}"], "must be a PostgreSQL URL"),
        (["extraConfig.database_url=postgres://x/y"], "database_url is secret"),
        (["config.public_url=hangar.internal"], "must start with http:// or https://"),
        (["providerKeys.values.bad-name=x"], "is not an environment variable name"),
        (["metrics.enabled=true", "metrics.port=7420"], "must differ from httpPort"),
        (["metrics.serviceMonitor.enabled=true"], "needs metrics.enabled"),
        (["extraConfig.metrics.listen=0.0.0.0:1"], "set by the chart"),
    ]
    for sets, needle in refusals:
        check(f"server: refuses {sets[-1]!r}: {needle}",
              lambda sets=sets, needle=needle: expect_refusal(SERVER, sets, needle))


# ---------------------------------------------------------------- both


def common_checks() -> None:
    for chart in (WORKER, SERVER):
        def lint_defaults(chart=chart):
            lint(chart, None, f"{chart.name} defaults")
        check(f"{chart.name}: helm lint --strict with the chart's own values", lint_defaults)

        def commented(chart=chart):
            # Every value in values.yaml carries a comment: its key line, or
            # the key line of one of its parents, follows a comment line.
            lines = (chart / "values.yaml").read_text().splitlines()

            def indent_of(line: str) -> int:
                return len(line) - len(line.lstrip())

            def commented_at(i: int) -> bool:
                j = i - 1
                while j >= 0 and not lines[j].strip():
                    j -= 1
                return j >= 0 and lines[j].strip().startswith("#")

            missing = []
            for i, line in enumerate(lines):
                if not re.match(r"^\s*[A-Za-z0-9_.\-/]+:(\s|$)", line):
                    continue
                k, ind, ok_ = i, indent_of(line), False
                while True:
                    if commented_at(k):
                        ok_ = True
                        break
                    if ind == 0:
                        break
                    # the parent: the nearest key line above with a smaller indent
                    k -= 1
                    while k >= 0 and (not lines[k].strip() or lines[k].lstrip().startswith("#")
                                      or indent_of(lines[k]) >= ind):
                        k -= 1
                    if k < 0:
                        break
                    ind = indent_of(lines[k])
                if not ok_:
                    missing.append(f"line {i + 1}: {line.strip()}")
            assert not missing, f"uncommented values: {missing}"
        check(f"{chart.name}: every value in values.yaml is commented", commented)

        def readme(chart=chart):
            text = (chart / "README.md").read_text()
            assert "helm install" in text
            if chart is WORKER:
                assert ("helm install build-box deploy/helm/hangar-worker" in text
                        and "--set workerId=build-box" in text and "--set credential.token=hw_..." in text)
                for reason in ("unschedulable", "image_pull", "invalid_image", "init_container", "container_oom",
                               "evicted", "active_deadline", "volume_mount", "job_failed"):
                    assert f"`{reason}`" in text, f"README lacks troubleshooting for {reason}"
                for (group, res), verbs in EXPECTED_WORKER_RULES.items():
                    assert f"`{group + '/' if group else ''}{res}`" in text, f"README RBAC table lacks {res}"
                    for v in verbs:
                        assert f"`{v}`" in text, f"README RBAC table lacks {v}"
        check(f"{chart.name}: README has an install example (and the worker's RBAC and troubleshooting)", readme)


def hangar_binary() -> str | None:
    """The `hangar` binary to parse the rendered configs with: $HANGAR_BIN, or
    a build in the cargo target directory (.cargo/config.toml)."""
    for candidate in (os.environ.get("HANGAR_BIN"), "/var/tmp/hangar-target/release/hangar",
                      "/var/tmp/hangar-target/debug/hangar"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def binary_checks() -> None:
    """The real parsers (`--print-config`) accept every rendered config file."""
    binary = hangar_binary()
    if not binary:
        warnings.append("no hangar binary (set HANGAR_BIN or build one): rendered config files were "
                        "checked against the Rust struct fields only, not parsed by `--print-config`")
        return
    seen = set()
    for case, kind, text, flags in rendered_configs:
        if (kind, text, tuple(flags)) in seen:
            continue
        seen.add((kind, text, tuple(flags)))

        def run(case=case, kind=kind, text=text, flags=flags):
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                f.write(text)
                f.flush()
                if kind == "server":
                    cmd = [binary, "server", "--print-config", "--config", f.name]
                else:
                    cmd = [binary, "worker", "--print-config", "--config-file", f.name] + flags
                env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")}
                env["HANGAR_API_KEY"] = TOKEN
                env["RUST_LOG"] = "error"
                p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
            if p.returncode != 0 and kind == "worker" and "not supported yet in this build" in p.stderr:
                # The file was parsed (strictly), the worker id, credential and
                # server URL accepted; only the backend itself is missing.
                warnings.append("this hangar build has no Kubernetes backend yet: `hangar worker "
                                "--print-config` parsed the worker configs and stopped at the backend")
                return
            pending = [k for k in PENDING_KUBERNETES_KEYS if f"unknown field `{k}`" in p.stderr]
            if p.returncode != 0 and kind == "worker" and pending:
                warnings.append(f"this hangar build refuses {pending} in the worker config (pending key)")
                return
            assert p.returncode == 0, f"`{' '.join(cmd[1:4])} …` refused the rendered config: {p.stderr.strip()}"
        check(f"binary: `hangar {kind} --print-config` accepts the config of {case}", run)


def main() -> int:
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.version.__version__}, schemas {', '.join(KUBE_VERSIONS)}")
    common_checks()
    worker_checks()
    server_checks()
    binary_checks()
    for w in dict.fromkeys(warnings):
        print(f"WARN {w}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
