//! What only SQLite can show: data on disk survives reopening the file, and
//! group commit (its one writer shares commits) loses nothing acknowledged
//! when the process dies in the middle of a batch.

use hangar_protocol::RunId;
use hangar_store::{RunStore, SqliteStore, Store, TeamStore};

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hangar.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.create_team("t-1", "one").await.unwrap();
    store.create_team("t-2", "two").await.unwrap();
    Store::close(&store).await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.team_count().await.unwrap(), 2);
}

/// Where the child of the crash test writes (its database file).
const CHILD_DB: &str = "HANGAR_GROUP_COMMIT_CHILD_DB";

/// Group commit under a crash: a child process writes runs from 32 tasks at
/// once (so that writes queue up and share commits) and prints each run id
/// once `create_run` has returned; it is killed with SIGKILL in the middle of
/// that. Every run it acknowledged is in the file when it is reopened.
#[tokio::test]
async fn group_commit_crash_during_a_batch_loses_nothing_acknowledged() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hangar.db");
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "suite::sqlite::group_commit_crash_child_writes_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DB, &path)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let mut batched = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    // Kill it once it has acknowledged enough writes and shared commits.
    while acked.len() < 3_000 || !batched {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("the child acknowledges writes")
            .unwrap()
            .expect("the child runs until killed");
        record(&line, &mut acked, &mut batched);
    }
    child.start_kill().unwrap();
    // What it printed before it died is still in the pipe.
    while let Some(line) = lines.next_line().await.unwrap() {
        record(&line, &mut acked, &mut batched);
    }
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "the child was killed: {status:?}");

    let store = SqliteStore::open(&path).await.unwrap();
    let mut lost = Vec::new();
    for id in &acked {
        if store.run_any_team(&RunId(id.clone())).await.is_err() {
            lost.push(id.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged runs are lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// A line of the child: `ack <run id>` or `counts <writes> <commits>`.
fn record(line: &str, acked: &mut Vec<String>, batched: &mut bool) {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("ack"), Some(id), None) => acked.push(id.to_owned()),
        (Some("counts"), Some(writes), Some(commits)) => {
            let writes: u64 = writes.parse().unwrap();
            let commits: u64 = commits.parse().unwrap();
            *batched |= commits < writes;
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of group_commit_crash_during_a_batch_loses_nothing_acknowledged, which runs it"]
async fn group_commit_crash_child_writes_until_killed() {
    use std::io::Write;
    let path = std::env::var_os(CHILD_DB).expect("run by the crash test");
    let store = std::sync::Arc::new(SqliteStore::open(path.as_ref()).await.unwrap());
    let team = store.create_team("t-crash", "crash").await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let store = store.clone();
        writers.spawn(async move {
            loop {
                let run = store.create_run(new_run(team.id)).await.unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ack {}", run.id).unwrap();
                out.flush().unwrap();
            }
        });
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let counts = store.write_counts();
        let mut out = std::io::stdout().lock();
        writeln!(out, "counts {} {}", counts.writes, counts.commits).unwrap();
        out.flush().unwrap();
    }
}

fn new_run(team_id: i64) -> hangar_store::NewRun {
    use hangar_protocol::{AgentConfig, RunExecutionLocation, RunSourceType, Timestamp};
    hangar_store::NewRun {
        id: RunId::generate(),
        team_id,
        creator_user_id: None,
        title: "crash".into(),
        prompt: "write".into(),
        source: RunSourceType::Api,
        execution_location: RunExecutionLocation::Remote,
        config: AgentConfig::default(),
        created_at: Timestamp::now().unix_millis(),
    }
}
