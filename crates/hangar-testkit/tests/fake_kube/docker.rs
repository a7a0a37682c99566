//! The Docker kubelet: pods run as real containers.

use crate::common::*;

fn docker_image() -> String {
    hangar_testkit::images::base_image().unwrap()
}

async fn docker_fake() -> (FakeKube, kube::Client, String) {
    let image = tokio::task::spawn_blocking(docker_image).await.unwrap();
    let fake = FakeKube::start(Kubelet::Docker).await;
    let client = fake.client().await;
    (fake, client, image)
}

#[tokio::test]
async fn docker_init_container_copies_into_an_empty_dir_that_the_task_reads() {
    let (fake, client, image) = docker_fake().await;
    let spec = json!({
        "initContainers": [{
            "name": "copy-agent", "image": image,
            "command": ["sh", "-c", "echo copied-by-init > /agent/file"],
            "volumeMounts": [{"name": "agent", "mountPath": "/agent"}],
        }],
        "containers": [{
            "name": "task", "image": image,
            "command": ["cat"], "args": ["/agent/file"],
            "workingDir": "/agent",
            "volumeMounts": [{"name": "agent", "mountPath": "/agent", "readOnly": true}],
            "resources": {"limits": {"memory": "128Mi"}},
        }],
        "volumes": [{"name": "agent", "emptyDir": {}}],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("docker-copy", spec))
        .await
        .unwrap();
    let job = wait_job_condition(&fake, "docker-copy", "Complete").await;
    assert_eq!(job["status"]["succeeded"], 1);
    let pod = &job_pods(&fake, "docker-copy")[0];
    let name = pod["metadata"]["name"].as_str().unwrap();
    let log = pods(&client)
        .logs(
            name,
            &LogParams {
                container: Some("task".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(log, "copied-by-init\n");
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap();
    assert!(id.starts_with("docker://"), "{id}");
}

#[tokio::test]
async fn docker_env_and_env_from_resolve_secrets() {
    let (fake, client, image) = docker_fake().await;
    let env: Secret = serde_json::from_value(json!({
        "metadata": {"name": "run-env"},
        "stringData": {"HANGAR_TOKEN": "tok-123", "OTHER": "x"},
    }))
    .unwrap();
    secrets(&client)
        .create(&PostParams::default(), &env)
        .await
        .unwrap();
    let spec = json!({"containers": [{
        "name": "task", "image": image,
        "command": ["sh", "-c", "echo $HANGAR_TOKEN $PLAIN $PICKED $(PLAIN)-x"],
        "envFrom": [{"secretRef": {"name": "run-env"}}],
        "env": [
            {"name": "PLAIN", "value": "plain"},
            {"name": "PICKED", "valueFrom": {"secretKeyRef": {"name": "run-env", "key": "OTHER"}}},
        ],
    }]});
    jobs(&client)
        .create(&PostParams::default(), &job("docker-env", spec))
        .await
        .unwrap();
    wait_job_condition(&fake, "docker-env", "Complete").await;
    let name = job_pods(&fake, "docker-env")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = pods(&client)
        .logs(&name, &LogParams::default())
        .await
        .unwrap();
    assert_eq!(log, "tok-123 plain x plain-x\n");
}

#[tokio::test]
async fn docker_failures_exit_codes_and_missing_images_show_in_the_status() {
    let (fake, client, image) = docker_fake().await;
    let failing = json!({"containers": [{"name": "task", "image": image, "command": ["sh", "-c", "echo bye >&2; exit 7"]}]});
    jobs(&client)
        .create(&PostParams::default(), &job("docker-exit", failing))
        .await
        .unwrap();
    let missing = json!({"containers": [{"name": "task", "image": "hangar-test/not-built:1"}]});
    jobs(&client)
        .create(&PostParams::default(), &job("docker-missing", missing))
        .await
        .unwrap();
    wait_job_condition(&fake, "docker-exit", "Failed").await;
    let pod = &job_pods(&fake, "docker-exit")[0];
    let t = &container_state(pod, "task")["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(7), Some("Error"))
    );
    assert_eq!(
        fake.logs(NAMESPACE, pod["metadata"]["name"].as_str().unwrap(), "task"),
        "bye\n"
    );
    let pod = wait_pod(&fake, "docker-missing", |p| {
        container_state(p, "task")["waiting"]["reason"] == "ErrImagePull"
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Pending");
}

#[tokio::test]
async fn docker_pods_get_sigterm_then_sigkill_after_the_grace_period() {
    let (fake, client, image) = docker_fake().await;
    let spec = json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {"name": "task", "image": image, "command": ["sh", "-c", "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done"]},
            {"name": "stubborn", "image": image, "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]},
        ],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("docker-grace", spec))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "docker-grace", |p| p["status"]["phase"] == "Running").await;
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let rv = pod["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut stream = pods(&client)
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={name}")),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    pods(&client)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let mut last = None;
    loop {
        match next_event(&mut stream).await.unwrap() {
            WatchEvent::Modified(p) => last = Some(serde_json::to_value(p).unwrap()),
            WatchEvent::Deleted(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let last = last.unwrap();
    assert_eq!(
        container_state(&last, "task")["terminated"]["exitCode"],
        0,
        "it handled SIGTERM"
    );
    assert_eq!(
        container_state(&last, "stubborn")["terminated"]["exitCode"],
        137,
        "SIGKILL after the grace"
    );
}

#[tokio::test]
async fn dropping_the_fake_removes_its_docker_containers() {
    let (fake, client, image) = docker_fake().await;
    let spec =
        json!({"containers": [{"name": "task", "image": image, "command": ["sleep", "600"]}]});
    jobs(&client)
        .create(&PostParams::default(), &job("docker-drop", spec))
        .await
        .unwrap();
    wait_pod(&fake, "docker-drop", |p| p["status"]["phase"] == "Running").await;
    let filter = format!("label=dev.hangar.fakekube={}", fake.server_id());
    let listed = |filter: &str| {
        let out = std::process::Command::new("docker")
            .args(["ps", "--all", "--quiet", "--filter", filter])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count()
    };
    assert_eq!(listed(&filter), 1);
    let names = std::process::Command::new("docker")
        .args(["ps", "--all", "--format", "{{.Names}}", "--filter", &filter])
        .output()
        .unwrap();
    let name = String::from_utf8_lossy(&names.stdout).trim().to_owned();
    assert!(
        name.starts_with(&format!(
            "hangar-fakekube-{}-docker-drop-",
            fake.server_id()
        )),
        "{name}"
    );
    assert!(name.ends_with("-task"), "{name}");
    drop(fake);
    assert_eq!(listed(&filter), 0);
}
