//! The official Oz Python SDK (`oz-agent-sdk`) drives a Hangar server unchanged.

use crate::suite::common::{cluster_with, test_python};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::Value;
use std::time::Duration;

const SCRIPT: &str = r#"
import json, os, time
from oz_agent_sdk import OzAPI, NotFoundError, BadRequestError

c = OzAPI(api_key=os.environ["KEY"], base_url=os.environ["BASE"])
out = {}
created = [c.agent.run(prompt=f"queued {i}", title=f"queued {i}", config={"worker_host": "nobody", "name": "batch"}) for i in range(3)]
out["created_states"] = [r.state for r in created]
done = c.agent.run(prompt="finish", config={"worker_host": "sdkw"})
# Page through everything two at a time with the SDK's cursor pager.
out["paged_ids"] = [r.run_id for r in c.agent.runs.list(limit=2, sort_by="created_at", sort_order="asc")]
out["created_ids"] = [r.run_id for r in created] + [done.run_id]
out["by_name"] = sorted(r.run_id for r in c.agent.runs.list(name="batch"))
out["queued"] = sorted(r.run_id for r in c.agent.runs.list(state=["QUEUED"], name="batch"))
got = c.agent.runs.retrieve(created[0].run_id)
out["retrieved"] = {"title": got.title, "state": got.state, "prompt": got.prompt}
c.agent.runs.cancel(created[1].run_id)
out["cancelled"] = [r.run_id for r in c.agent.runs.list(state=["CANCELLED"])]
for _ in range(300):
    r = c.agent.runs.retrieve(done.run_id)
    if r.state in ("SUCCEEDED", "FAILED", "ERROR", "CANCELLED"):
        break
    time.sleep(0.1)
out["done_state"] = r.state
try:
    c.agent.runs.retrieve("no-such-run")
except NotFoundError as e:
    out["not_found"] = e.status_code
try:
    c.agent.runs.list(limit=0)
except BadRequestError as e:
    out["bad_limit"] = e.status_code
out["models_default"] = c.agent.list_models().default_model_id if hasattr(c.agent, "list_models") else None
out["environments"] = len(c.agent.list_environments().environments)
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_creates_lists_pages_gets_and_cancels_runs() {
    let python = test_python();
    let llm = FakeLlm::start(vec![Turn::text("done")]).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("sdkw", &[]).await.unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .env("KEY", &cluster.api_key)
            .env("BASE", format!("{}/api/v1", cluster.url))
            .output(),
    )
    .await
    .expect("SDK script timed out")
    .unwrap_or_else(|e| panic!("cannot run {python}: {e}; run scripts/test to create it"));
    assert!(
        out.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["created_states"],
        serde_json::json!(["QUEUED", "QUEUED", "QUEUED"])
    );
    assert_eq!(
        r["paged_ids"], r["created_ids"],
        "cursor paging returns every run once, in order"
    );
    let mut batch: Vec<Value> = r["created_ids"].as_array().unwrap()[..3].to_vec();
    batch.sort_by_key(|v| v.as_str().unwrap().to_owned());
    assert_eq!(r["by_name"], Value::Array(batch));
    assert_eq!(r["retrieved"]["title"], "queued 0");
    assert_eq!(r["retrieved"]["state"], "QUEUED");
    assert_eq!(r["cancelled"], serde_json::json!([r["created_ids"][1]]));
    assert_eq!(
        r["queued"].as_array().unwrap().len(),
        3,
        "before the cancel"
    );
    assert_eq!(r["done_state"], "SUCCEEDED");
    assert_eq!(r["not_found"], 404);
    assert_eq!(r["bad_limit"], 400);
    assert_eq!(r["environments"], 0);
}

/// Every optional field the SDK can send on run creation, every listing
/// filter, and the schedule calls: values round-trip, unsupported values are
/// a clear 4xx.
const FIELDS_SCRIPT: &str = r#"
import base64, datetime, json, os
from oz_agent_sdk import OzAPI, NotFoundError, BadRequestError, PermissionDeniedError

c = OzAPI(api_key=os.environ["KEY"], base_url=os.environ["BASE"])
out = {}
def err(fn):
    try:
        fn()
    except (BadRequestError, PermissionDeniedError, NotFoundError) as e:
        return {"status": e.status_code, "detail": (e.body or {}).get("detail", "")}
    return None
def ids(page):
    return sorted(r.run_id for r in page)

env = c.post("/environments", body={"name": "sdk-env"}, cast_to=object)
before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
parent = c.agent.run(prompt="parent task", title="parent", config={"worker_host": "nobody", "name": "fam"},
                     metadata={"team": "core", "ticket_id": "T-1"})
png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
child = c.agent.run(
    prompt="child task", title="child", mode="normal", team=True, interactive=False,
    parent_run_id=parent.run_id, conversation_id=parent.run_id,
    metadata={"ticket_id": "T-2", "automation_id": "auto-1"},
    attachments=[{"file_name": "shot.png", "mime_type": "image/png", "data": png}],
    config={
        "worker_host": "nobody", "name": "fam", "base_prompt": "be brief", "idle_timeout_minutes": 5,
        "environment_id": env["id"], "computer_use_enabled": False,
        "skills": ["acme/tools:skills/lint/SKILL.md"], "runner_id": "runner-1",
        "credential_strategy": "CREATOR", "session_sharing": {"public_access": "VIEWER"},
        "inference_providers": {"aws": {"disabled": True, "region": "eu-west-1"}}, "memory_stores": [],
        "harness": {"type": "oz", "model_id": "m", "reasoning_level": "low"},
        "harness_auth_secrets": {"claude_auth_secret_name": "CLAUDE", "codex_auth_secret_name": "CODEX"},
    })
grandchild = c.agent.run(prompt="third task", config={"worker_host": "nobody"},
                         parent_run_id=child.run_id, metadata={"ticket_id": "T-3"})
out["ids"] = {"parent": parent.run_id, "child": child.run_id, "grandchild": grandchild.run_id, "env": env["id"]}
got = c.agent.runs.retrieve(child.run_id)
out["child"] = got.to_dict(mode="json")
out["grandchild_metadata"] = c.agent.runs.retrieve(grandchild.run_id).metadata
model = got.agent_config.api_model_id
uid = got.creator.uid
after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
L = c.agent.runs.list
out["filters"] = {
    "name": ids(L(name="fam")),
    "model_id": ids(L(model_id=model, name="fam")),
    "creator": ids(L(creator=uid, name="fam")),
    "executor": ids(L(executor=uid, name="fam")),
    "source": ids(L(source="API", name="fam")),
    "execution_location": ids(L(execution_location="REMOTE", name="fam")),
    "local": ids(L(execution_location="LOCAL")),
    "environment_id": ids(L(environment_id=env["id"])),
    "skill": ids(L(skill="acme/tools:skills/lint/SKILL.md")),
    "skill_spec": ids(L(skill_spec="acme/tools:skills/lint/SKILL.md")),
    "q": ids(L(q="CHILD TASK")),
    "state": ids(L(state=["QUEUED", "INPROGRESS"])),
    "created_window": ids(L(created_after=before, created_before=after)),
    "created_before_start": ids(L(created_before=before)),
    "updated_after": ids(L(updated_after=before)),
    "schedule_id": ids(L(schedule_id="no-such-schedule")),
    "ancestor": ids(L(ancestor_run_id=parent.run_id)),
    "ancestor_child": ids(L(ancestor_run_id=child.run_id)),
    "metadata_t2": ids(L(metadata={"ticket_id": "T-2"})),
    "metadata_core": ids(L(metadata={"team": "core"})),
    "metadata_and": ids(L(metadata={"team": "core", "ticket_id": "T-3"})),
    "automation_id": ids(L(automation_id="auto-1")),
    "factory_uid": ids(L(factory_uid="factory-1")),
    "paged_desc": [r.run_id for r in L(sort_by="created_at", sort_order="desc", limit=1)],
}
out["errors"] = {
    "plan_mode": err(lambda: c.agent.run(prompt="p", mode="plan")),
    "bad_metadata": err(lambda: c.agent.run(prompt="p", metadata={"bad key": "v"})),
    "on_behalf_of": err(lambda: c.agent.run(prompt="p", on_behalf_of="someone@example.com")),
    "unknown_field": err(lambda: c.agent.run(prompt="p", extra_body={"bogus_field": 1})),
    "unknown_config_field": err(lambda: c.agent.run(prompt="p", config={"bogus_knob": True})),
    "wrong_type": err(lambda: c.agent.run(prompt="p", config={"idle_timeout_minutes": "soon"})),
    "memory_stores": err(lambda: c.agent.run(prompt="p", config={"memory_stores": [{"uid": "m", "access": "read_only", "instructions": "i"}]})),
    "foreign_parent": err(lambda: c.agent.run(prompt="p", parent_run_id="no-such-run")),
    "ancestor_missing": err(lambda: list(L(ancestor_run_id="no-such-run"))),
    "artifact_type": err(lambda: list(L(artifact_type="PLAN"))),
    "identity": err(lambda: c.agent.run(prompt="p", agent_identity_uid="agent-1")),
    "personal": err(lambda: c.agent.run(prompt="p", team=False)),
}
c.agent.runs.cancel(child.run_id)
out["cancelled_state"] = c.agent.runs.retrieve(child.run_id).state

S = c.agent.schedules
s = S.create(name="nightly", cron_schedule="0 3 * * *", prompt="nightly task", enabled=True, team=True,
             agent_config={"name": "sched", "worker_host": "nobody", "runner_id": "runner-2"},
             metadata={"automation_id": "auto-9"}, mode="normal")
out["sched_created"] = s.to_dict(mode="json")
out["sched_listed"] = [x.id for x in S.list().schedules]
out["sched_got"] = S.retrieve(s.id).to_dict(mode="json")
u = S.update(s.id, name="weekly", cron_schedule="30 4 * * 1", enabled=False, prompt="weekly task")
out["sched_replaced"] = u.to_dict(mode="json")
out["sched_resumed"] = S.resume(s.id).to_dict(mode="json")
out["sched_paused"] = S.pause(s.id).to_dict(mode="json")
out["sched_errors"] = {
    "agent_uid": err(lambda: S.create(name="x", cron_schedule="0 * * * *", prompt="p", agent_uid="a-1")),
    "plan_mode": err(lambda: S.update(s.id, name="x", cron_schedule="0 * * * *", enabled=True, prompt="p", mode="plan")),
    "bad_cron": err(lambda: S.create(name="x", cron_schedule="61 * * * *", prompt="p")),
}
out["sched_deleted"] = S.delete(s.id).success
out["sched_gone"] = err(lambda: S.retrieve(s.id))
envs = c.agent.list_environments().environments
out["environments"] = [{"uid": e.uid, "name": e.config.name, "setup_failed": e.setup_failed} for e in envs]
models = c.get("/agent/models", cast_to=object)
out["models"] = {"default": models["default_model_id"], "ids": [m["id"] for m in models["models"]]}
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_sends_every_optional_field_filter_and_schedule_call() {
    let python = test_python();
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&python)
            .arg("-c")
            .arg(FIELDS_SCRIPT)
            .env("KEY", &cluster.api_key)
            .env("BASE", format!("{}/api/v1", cluster.url))
            .output(),
    )
    .await
    .expect("SDK script timed out")
    .unwrap_or_else(|e| panic!("cannot run {python}: {e}; run scripts/test to create it"));
    assert!(
        out.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = |k: &str| r["ids"][k].as_str().unwrap().to_owned();
    let (parent, child, grandchild) = (id("parent"), id("child"), id("grandchild"));
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        serde_json::json!(v)
    };
    let family = sorted(vec![&parent, &child]);
    let all = sorted(vec![&parent, &child, &grandchild]);

    // The run keeps what it was created with.
    let c = &r["child"];
    assert_eq!(c["title"], "child");
    assert_eq!(c["parent_run_id"], parent.as_str());
    assert_eq!(c["conversation_id"], parent.as_str());
    assert_eq!(c["mode"], "normal");
    assert_eq!(
        c["metadata"],
        serde_json::json!({"team": "core", "ticket_id": "T-2", "automation_id": "auto-1"}),
        "request keys override the parent's"
    );
    assert_eq!(c["executor"], c["creator"]);
    assert_eq!(c["is_run_type_cancellable"], true);
    let cfg = &c["agent_config"];
    assert_eq!(cfg["base_prompt"], "be brief");
    assert_eq!(cfg["idle_timeout_minutes"], 5);
    assert_eq!(cfg["environment_id"], id("env").as_str());
    assert_eq!(cfg["computer_use_enabled"], false);
    assert_eq!(
        cfg["skills"],
        serde_json::json!(["acme/tools:skills/lint/SKILL.md"])
    );
    assert_eq!(cfg["skill_spec"], "acme/tools:skills/lint/SKILL.md");
    assert_eq!(cfg["runner_id"], "runner-1");
    assert_eq!(cfg["credential_strategy"], "CREATOR");
    assert_eq!(cfg["session_sharing"]["public_access"], "VIEWER");
    assert_eq!(cfg["inference_providers"]["aws"]["region"], "eu-west-1");
    assert_eq!(cfg["harness"]["reasoning_level"], "low");
    assert_eq!(
        cfg["harness_auth_secrets"]["codex_auth_secret_name"],
        "CODEX"
    );
    assert!(
        cfg.get("_hangar").is_none(),
        "internal fields stay internal: {cfg}"
    );
    assert_eq!(
        r["grandchild_metadata"],
        serde_json::json!({"team": "core", "ticket_id": "T-3", "automation_id": "auto-1"})
    );

    // Every listing filter the SDK offers.
    let f = &r["filters"];
    for k in [
        "name",
        "model_id",
        "creator",
        "executor",
        "source",
        "execution_location",
    ] {
        assert_eq!(f[k], family, "filter {k}");
    }
    assert_eq!(f["local"], serde_json::json!([]));
    assert_eq!(f["environment_id"], serde_json::json!([child]));
    assert_eq!(f["skill"], serde_json::json!([child]));
    assert_eq!(f["skill_spec"], serde_json::json!([child]));
    assert_eq!(f["q"], serde_json::json!([child]));
    assert_eq!(f["state"], all);
    assert_eq!(f["created_window"], all);
    assert_eq!(f["created_before_start"], serde_json::json!([]));
    assert_eq!(f["updated_after"], all);
    assert_eq!(f["schedule_id"], serde_json::json!([]));
    assert_eq!(f["ancestor"], sorted(vec![&child, &grandchild]));
    assert_eq!(f["ancestor_child"], serde_json::json!([grandchild]));
    assert_eq!(f["metadata_t2"], serde_json::json!([child]));
    assert_eq!(f["metadata_core"], all);
    assert_eq!(f["metadata_and"], serde_json::json!([grandchild]));
    assert_eq!(f["automation_id"], sorted(vec![&child, &grandchild]));
    assert_eq!(f["factory_uid"], serde_json::json!([]));
    assert_eq!(
        f["paged_desc"],
        serde_json::json!([grandchild, child, parent]),
        "the SDK pages one by one, newest first"
    );

    // Values Hangar cannot honour are refused, naming the field.
    let e = &r["errors"];
    let refused = |k: &str, status: u64, needle: &str| {
        assert_eq!(e[k]["status"], status, "{k}: {}", e[k]);
        let detail = e[k]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{k}: `{detail}` lacks `{needle}`");
    };
    refused("plan_mode", 400, "mode");
    refused("bad_metadata", 400, "bad key");
    refused("on_behalf_of", 403, "on_behalf_of");
    refused("unknown_field", 400, "bogus_field");
    refused("unknown_config_field", 400, "bogus_knob");
    refused(
        "wrong_type",
        400,
        "body field \"config.idle_timeout_minutes\"",
    );
    refused("memory_stores", 400, "memory_stores");
    refused("foreign_parent", 400, "parent_run_id");
    refused("ancestor_missing", 400, "ancestor_run_id");
    refused("artifact_type", 400, "artifact_type");
    refused("identity", 400, "agent_identity_uid");
    refused("personal", 400, "team");
    assert_eq!(r["cancelled_state"], "CANCELLED");

    // Schedules: create, list, get, full replace, pause, resume, delete.
    let s = &r["sched_created"];
    let sid = s["id"].as_str().unwrap();
    assert_eq!(s["name"], "nightly");
    assert_eq!(s["enabled"], true);
    assert_eq!(
        s["metadata"],
        serde_json::json!({"automation_id": "auto-9"})
    );
    assert_eq!(s["mode"], "normal");
    assert_eq!(s["agent_config"]["runner_id"], "runner-2");
    assert!(s["agent_config"].get("_hangar").is_none());
    assert!(s["history"]["next_run"].is_string());
    assert_eq!(r["sched_listed"], serde_json::json!([sid]));
    assert_eq!(r["sched_got"], *s);
    let u = &r["sched_replaced"];
    assert_eq!(u["name"], "weekly");
    assert_eq!(u["cron_schedule"], "30 4 * * 1");
    assert_eq!(u["prompt"], "weekly task");
    assert_eq!(u["enabled"], false);
    for cleared in ["metadata", "mode", "agent_config"] {
        assert!(
            u.get(cleared).is_none(),
            "PUT replaces: {cleared} is gone: {u}"
        );
    }
    assert!(u["history"]["next_run"].is_null());
    assert_eq!(r["sched_resumed"]["enabled"], true);
    assert!(r["sched_resumed"]["history"]["next_run"].is_string());
    assert_eq!(r["sched_paused"]["enabled"], false);
    let se = &r["sched_errors"];
    assert_eq!(se["agent_uid"]["status"], 400);
    assert!(
        se["agent_uid"]["detail"]
            .as_str()
            .unwrap()
            .contains("agent_uid")
    );
    assert_eq!(se["plan_mode"]["status"], 400);
    assert_eq!(se["bad_cron"]["status"], 400);
    assert_eq!(r["sched_deleted"], true);
    assert_eq!(r["sched_gone"]["status"], 404);

    assert_eq!(
        r["environments"],
        serde_json::json!([{"uid": id("env"), "name": "sdk-env", "setup_failed": false}])
    );
    let default = r["models"]["default"].as_str().unwrap();
    assert!(!default.is_empty());
    assert!(
        r["models"]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == default),
        "{}",
        r["models"]
    );
}
