//! Issue 11 on the direct backend, with real git: input that reaches a host
//! command is refused before git runs (S9).

use super::common::*;
use hangar_protocol::worker::{
    EnvironmentSpec, FailureReason, RepoSpec, TaskFailed, WorkerToServer,
};

fn with_repo(url: String, git_ref: Option<&str>) -> EnvironmentSpec {
    EnvironmentSpec {
        id: "env-sec".into(),
        name: "sec".into(),
        repos: vec![RepoSpec {
            url,
            git_ref: git_ref.map(Into::into),
            token_env: None,
            path: Some("app".into()),
        }],
        ..Default::default()
    }
}

async fn outcome(conn: &mut FakeConn) -> WorkerToServer {
    conn.recv_end().await
}

fn failed(m: WorkerToServer) -> TaskFailed {
    match m {
        WorkerToServer::TaskFailed(f) => f,
        other => panic!("expected task_failed, got {other:?}"),
    }
}

#[tokio::test]
async fn s9_direct_ref_and_url_options_are_refused_before_git_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = hangar_testkit::git::one_commit_repo(tmp.path(), "hello\n");
    // What `git checkout --pathspec-from-file=FILE` would print back.
    let host_file = tmp.path().join("host-file");
    std::fs::write(&host_file, "host-file-content-7f3a\n").unwrap();
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| c.allow_local_repositories = true);
    let mut conn = server.accept().await;
    conn.hello().await;

    let injected_ref = format!("--pathspec-from-file={}", host_file.display());
    let mut a = w.assignment("run-ref", "exec-ref", &[]);
    a.environment = Some(with_repo(
        format!("file://{}", repo.display()),
        Some(&injected_ref),
    ));
    conn.assign(a);
    let f = failed(outcome(&mut conn).await);
    assert_eq!(f.failure_reason, Some(FailureReason::WorkspaceSetup));
    assert!(f.message.contains("starts with `-`"), "{}", f.message);
    assert!(
        !f.message.contains("host-file-content-7f3a"),
        "{}",
        f.message
    );
    // Refused before the clone: nothing was checked out.
    assert!(!w.workspace_root.join("exec-ref").join("app").exists());
    assert!(
        !w.out_file("exec-ref", "env").exists(),
        "the agent never ran"
    );

    for url in ["--upload-pack=/bin/true", "-oProxyCommand=x:y"] {
        let exec = format!("exec-url{}", url.len());
        let mut a = w.assignment("run-url", &exec, &[]);
        a.environment = Some(with_repo(url.to_owned(), None));
        conn.assign(a);
        let f = failed(outcome(&mut conn).await);
        assert_eq!(f.failure_reason, Some(FailureReason::WorkspaceSetup));
        assert!(
            f.message.contains("starts with `-`"),
            "{url}: {}",
            f.message
        );
        assert!(!f.message.contains("`git"), "git never ran: {}", f.message);
    }
}

#[tokio::test]
async fn s9_direct_local_repositories_are_refused_unless_the_worker_allows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = hangar_testkit::git::one_commit_repo(tmp.path(), "hello\n");
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    for (exec, url) in [
        ("exec-file", format!("file://{}", repo.display())),
        ("exec-path", repo.display().to_string()),
    ] {
        let mut a = w.assignment("run-local", exec, &[]);
        a.environment = Some(with_repo(url.clone(), None));
        conn.assign(a);
        let f = failed(outcome(&mut conn).await);
        assert_eq!(f.failure_reason, Some(FailureReason::WorkspaceSetup));
        assert!(
            f.message.contains("allow_local_repositories"),
            "{url}: {}",
            f.message
        );
        assert!(!w.out_file(exec, "env").exists(), "the agent never ran");
    }
    drop(w);

    // Allowed in the worker's configuration: the same clone works.
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| c.allow_local_repositories = true);
    let mut conn = server.accept().await;
    conn.hello().await;
    let mut a = w.assignment("run-local-ok", "exec-local-ok", &[]);
    a.environment = Some(with_repo(
        format!("file://{}", repo.display()),
        Some("main"),
    ));
    conn.assign(a);
    let done = outcome(&mut conn).await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
}
