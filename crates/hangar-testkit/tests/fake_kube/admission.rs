//! What is refused: RBAC access reviews, admission policies, pods the node
//! cannot run and containers whose secrets are missing.

use crate::common::*;

#[tokio::test]
async fn self_subject_access_reviews_answer_from_the_deny_list_which_rbac_enforces() {
    let (fake, client) = scripted(50).await;
    fake.deny("create", "jobs");
    fake.deny("get", "pods/log");
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = |verb: &str, group: &str, resource: &str, sub: Option<&str>| {
        let body: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {
                "namespace": NAMESPACE, "verb": verb, "group": group, "resource": resource, "subresource": sub,
            }},
        }))
        .unwrap();
        let reviews = reviews.clone();
        async move {
            reviews
                .create(&PostParams::default(), &body)
                .await
                .unwrap()
                .status
                .unwrap()
                .allowed
        }
    };
    assert!(!review("create", "batch", "jobs", None).await);
    assert!(review("delete", "batch", "jobs", None).await);
    assert!(review("watch", "", "pods", None).await);
    assert!(!review("get", "", "pods", Some("log")).await);
    let refused = jobs(&client)
        .create(&PostParams::default(), &simple_job("denied"))
        .await
        .unwrap_err();
    let status = api_status(refused);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert!(
        status
            .message
            .contains("cannot create resource \"jobs\" in API group \"batch\""),
        "{}",
        status.message
    );
    fake.allow_all();
    assert!(review("create", "batch", "jobs", None).await);
}

#[tokio::test]
async fn admission_rejection_refuses_jobs_with_403_and_the_policy_message() {
    let (fake, client) = scripted(50).await;
    fake.reject_jobs("containers must not run as root (policy require-non-root)");
    let refused = jobs(&client)
        .create(&PostParams::default(), &simple_job("blocked"))
        .await
        .unwrap_err();
    let status = api_status(refused);
    assert_eq!(status.code, 403);
    assert!(
        status.message.contains(
            "denied the request: containers must not run as root (policy require-non-root)"
        ),
        "{}",
        status.message
    );
    assert!(fake.objects("Job").is_empty());
    fake.admit_all();
    jobs(&client)
        .create(&PostParams::default(), &simple_job("blocked"))
        .await
        .unwrap();
}

#[tokio::test]
async fn rejected_pods_leave_failed_create_events_on_the_job() {
    let (fake, client) = scripted(50).await;
    fake.reject_pods("violates PodSecurity \"restricted:latest\": runAsNonRoot != true");
    jobs(&client)
        .create(&PostParams::default(), &simple_job("psa"))
        .await
        .unwrap();
    let (kind, _, message) = wait_event(&client, "psa", "FailedCreate").await;
    assert_eq!(kind, "Warning");
    assert!(
        message.starts_with("Error creating: pods \"psa-"),
        "{message}"
    );
    assert!(message.contains("violates PodSecurity"), "{message}");
    assert!(job_pods(&fake, "psa").is_empty());
}

#[tokio::test]
async fn a_missing_env_from_secret_is_create_container_config_error_until_it_exists() {
    let (fake, client) = scripted(50).await;
    let spec = json!({"containers": [{
        "name": "task", "image": "busybox", "command": ["true"],
        "envFrom": [{"secretRef": {"name": "late-env"}}],
    }]});
    jobs(&client)
        .create(&PostParams::default(), &job("late", spec))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "late", |p| {
        container_state(p, "task")["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await;
    assert_eq!(
        container_state(&pod, "task")["waiting"]["message"],
        "secret \"late-env\" not found"
    );
    secrets(&client)
        .create(&PostParams::default(), &secret("late-env", json!({})))
        .await
        .unwrap();
    wait_job_condition(&fake, "late", "Complete").await;
}

#[tokio::test]
async fn pods_requesting_more_than_the_node_are_unschedulable() {
    let (fake, client) = scripted(50).await;
    let spec = json!({"containers": [{
        "name": "task", "image": "busybox",
        "resources": {"requests": {"memory": "64Gi"}},
    }]});
    jobs(&client)
        .create(&PostParams::default(), &job("huge", spec))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "huge", |p| !condition(p, "PodScheduled").is_null()).await;
    let scheduled = condition(&pod, "PodScheduled");
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert!(
        scheduled["message"]
            .as_str()
            .unwrap()
            .contains("Insufficient memory")
    );
}
