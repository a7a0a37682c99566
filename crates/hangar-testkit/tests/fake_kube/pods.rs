//! Jobs and their pods: status as the job controller and kubelet write it,
//! init containers, native sidecars, and logs.

use crate::common::*;

#[tokio::test]
async fn a_job_runs_to_completion_with_realistic_pod_and_job_status() {
    let (fake, client) = scripted(100).await;
    let created = jobs(&client)
        .create(&PostParams::default(), &simple_job("run-ok"))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );
    let job = wait_job_condition(&fake, "run-ok", "Complete").await;
    assert!(has_condition(&job, "SuccessCriteriaMet"));
    assert_eq!(condition(&job, "Complete")["reason"], "CompletionsReached");
    assert_eq!(job["status"]["succeeded"], 1);
    assert!(job["status"]["active"].is_null());
    assert!(job["status"]["startTime"].is_string());
    assert!(job["status"]["completionTime"].is_string());
    // The typed client reads the same.
    let typed = jobs(&client).get("run-ok").await.unwrap();
    assert_eq!(typed.status.unwrap().succeeded, Some(1));

    let all = pods(&client)
        .list(&ListParams::default().labels("job-name=run-ok"))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1);
    let pod = &all.items[0];
    let name = pod.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("run-ok-") && name.len() == "run-ok-".len() + 5,
        "{name}"
    );
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["app"], "hangar");
    assert_eq!(labels["controller-uid"], uid);
    assert_eq!(labels["batch.kubernetes.io/job-name"], "run-ok");
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Job", uid.as_str())
    );
    assert_eq!(owner.controller, Some(true));
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let terminated = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodCompleted"))
    );

    let pod_events: Vec<String> = events_of(&client, &name)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            pod_events.iter().any(|r| r == reason),
            "{reason} in {pod_events:?}"
        );
    }
    let job_events: Vec<String> = events_of(&client, "run-ok")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        job_events.contains(&"SuccessfulCreate".to_owned()),
        "{job_events:?}"
    );
    assert!(
        job_events.contains(&"Completed".to_owned()),
        "{job_events:?}"
    );
}

#[tokio::test]
async fn pods_go_pending_then_through_init_containers_then_running_then_succeeded() {
    let (_fake, client) = scripted(300).await;
    let api = pods(&client);
    let mut stream = api
        .watch(&WatchParams::default().labels("job-name=phases"), "0")
        .await
        .unwrap()
        .boxed();
    let spec = json!({
        "initContainers": [
            {"name": "copy-agent", "image": "hangar:1", "command": ["cp", "-r", "/agent", "/shared"]},
            {"name": "setup", "image": "busybox", "command": ["true"]},
        ],
        "containers": [{"name": "task", "image": "busybox", "command": ["true"]}],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("phases", spec))
        .await
        .unwrap();
    let mut steps: Vec<String> = Vec::new();
    loop {
        let event = next_event(&mut stream).await.unwrap();
        let pod = match event {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
            other => panic!("unexpected {other:?}"),
        };
        let status = pod.status.unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        let running_init: Vec<String> = status
            .init_container_statuses
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
            .map(|s| s.name)
            .collect();
        let step = match running_init.first() {
            Some(init) => format!("{phase}/{init}"),
            None => phase.clone(),
        };
        if steps.last() != Some(&step) {
            steps.push(step);
        }
        if phase == "Succeeded" {
            break;
        }
    }
    assert_eq!(
        steps,
        [
            "Pending",
            "Pending/copy-agent",
            "Pending",
            "Pending/setup",
            "Pending",
            "Running",
            "Succeeded"
        ]
    );
}

#[tokio::test]
async fn native_sidecars_start_with_the_pod_and_stop_without_failing_it() {
    let (fake, client) = scripted(200).await;
    let spec = json!({
        "initContainers": [
            {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"},
            {"name": "setup", "image": "busybox", "command": ["true"]},
        ],
        "containers": [{"name": "task", "image": "busybox", "command": ["true"]}],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("sidecar", spec))
        .await
        .unwrap();
    // While setup runs, the sidecar already runs.
    let pod = wait_pod(&fake, "sidecar", |p| {
        !container_state(p, "setup")["running"].is_null()
    })
    .await;
    assert!(
        !container_state(&pod, "proxy")["running"].is_null(),
        "{pod:#?}"
    );
    wait_job_condition(&fake, "sidecar", "Complete").await;
    let pod = &job_pods(&fake, "sidecar")[0];
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let proxy = &container_state(pod, "proxy")["terminated"];
    assert_eq!(proxy["exitCode"], 143, "stopped by SIGTERM: {pod:#?}");
    let name = pod["metadata"]["name"].as_str().unwrap();
    let killing = wait_event(&client, name, "Killing").await;
    assert_eq!(killing.2, "Stopping container proxy");
}

#[tokio::test]
async fn pod_logs_honour_container_tail_lines_and_limit_bytes() {
    let (fake, client) = scripted(50).await;
    let spec = json!({
        "containers": [
            {"name": "task", "image": "busybox", "command": ["echo", "hello"]},
            {"name": "helper", "image": "busybox", "args": ["serve"]},
        ],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("logs", spec))
        .await
        .unwrap();
    wait_job_condition(&fake, "logs", "Complete").await;
    let name = job_pods(&fake, "logs")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = pods(&client);
    let text = api
        .logs(
            &name,
            &LogParams {
                container: Some("task".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(text, "fake-kubelet: container task ran echo hello\n");
    let limited = api
        .logs(
            &name,
            &LogParams {
                container: Some("helper".into()),
                limit_bytes: Some(12),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(limited, "fake-kubelet");
    let tail = api
        .logs(
            &name,
            &LogParams {
                container: Some("task".into()),
                tail_lines: Some(1),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, text);
    let ambiguous = api.logs(&name, &LogParams::default()).await.unwrap_err();
    let status = api_status(ambiguous);
    assert_eq!(status.code, 400);
    assert!(
        status
            .message
            .contains("a container name must be specified"),
        "{}",
        status.message
    );
    let raw = fake.requests();
    let log_req = raw.iter().find(|r| r.path.ends_with("/log")).unwrap();
    assert_eq!(log_req.param("container").as_deref(), Some("task"));
}

#[tokio::test]
async fn pod_logs_follow_streams_until_the_container_ends() {
    let (fake, client) = scripted(400).await;
    jobs(&client)
        .create(&PostParams::default(), &simple_job("follow"))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "follow", |p| p["status"]["phase"] == "Running").await;
    let name = pod["metadata"]["name"].as_str().unwrap();
    let stream = pods(&client)
        .log_stream(
            name,
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let mut text = String::new();
    let mut stream = Box::pin(stream);
    let read = futures::AsyncReadExt::read_to_string(&mut stream, &mut text);
    tokio::time::timeout(WAIT, read).await.unwrap().unwrap();
    assert_eq!(text, "fake-kubelet: container task ran echo hi\n");
    let pod = fake.object("Pod", NAMESPACE, name).unwrap();
    assert!(
        !container_state(&pod, "task")["terminated"].is_null(),
        "the stream ended with the container"
    );
}
