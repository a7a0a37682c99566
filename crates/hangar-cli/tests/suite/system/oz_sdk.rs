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
