//! The API surface: discovery, authentication, the kubeconfig, objects and
//! their metadata, validation, selectors and paging.

use crate::common::*;

#[tokio::test]
async fn discovery_reports_v1_33_and_the_served_resources() {
    let (_fake, client) = scripted(50).await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    assert!(version.git_version.starts_with("v1.33."), "{version:?}");

    let core = client.list_core_api_resources("v1").await.unwrap();
    let pod = core.resources.iter().find(|r| r.name == "pods").unwrap();
    assert!(pod.namespaced);
    assert_eq!(pod.kind, "Pod");
    for verb in ["create", "get", "list", "watch", "delete"] {
        assert!(pod.verbs.iter().any(|v| v == verb), "{verb}");
    }
    for name in ["pods/log", "secrets", "events"] {
        assert!(core.resources.iter().any(|r| r.name == name), "{name}");
    }
    let groups = client.list_api_groups().await.unwrap();
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["batch", "authorization.k8s.io"]);
    let batch = client.list_api_group_resources("batch/v1").await.unwrap();
    let jobs = batch.resources.iter().find(|r| r.name == "jobs").unwrap();
    assert_eq!((jobs.kind.as_str(), jobs.namespaced), ("Job", true));
    let authz = client
        .list_api_group_resources("authorization.k8s.io/v1")
        .await
        .unwrap();
    let ssar = &authz.resources[0];
    assert_eq!(ssar.name, "selfsubjectaccessreviews");
    assert!(!ssar.namespaced);

    for discovery in [
        kube::Discovery::new(client.clone()).run().await.unwrap(),
        kube::Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let gvk = kube::api::GroupVersionKind::gvk("batch", "v1", "Job");
        let (resource, caps) = discovery.resolve_gvk(&gvk).unwrap();
        assert_eq!(resource.plural, "jobs");
        assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
        assert!(discovery.has_group(""));
    }
}

#[tokio::test]
async fn requests_without_the_bearer_token_are_refused_with_401() {
    let (fake, _client) = scripted(50).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/namespaces/default/pods", fake.url());
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let wrong = http.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http
        .get(&url)
        .bearer_auth(fake.token())
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let list: Value = right.json().await.unwrap();
    assert_eq!(list["kind"], "PodList");
    let version = http
        .get(format!("{}/version", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(version.status(), 200, "/version is public");
    fake.require_token(false);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    let wrong = http.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401, "a wrong token is still refused");
}

#[tokio::test]
async fn the_kubeconfig_file_points_a_client_at_the_fake() {
    let (fake, _client) = scripted(50).await;
    let dir = tempfile::tempdir().unwrap();
    let path = fake.kubeconfig(dir.path());
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, NAMESPACE);
    assert_eq!(config.cluster_url.to_string(), format!("{}/", fake.url()));
    let client = kube::Client::try_from(config).unwrap();
    let list = secrets(&client).list(&ListParams::default()).await.unwrap();
    assert!(list.items.is_empty());
}

#[tokio::test]
async fn secrets_are_created_read_listed_and_deleted() {
    let (fake, client) = scripted(50).await;
    let api = secrets(&client);
    let created = api
        .create(&PostParams::default(), &secret("run-1", json!({"a": "b"})))
        .await
        .unwrap();
    let data = created.data.clone().unwrap();
    assert_eq!(data["token"].0, b"s3cret");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let got = api.get("run-1").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    let raw = fake.requests();
    assert!(
        raw.iter()
            .any(|r| r.method == "GET" && r.path == "/api/v1/namespaces/default/secrets")
    );

    let again = api
        .create(&PostParams::default(), &secret("run-1", json!({})))
        .await
        .unwrap_err();
    let status = api_status(again);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(status.message, "secrets \"run-1\" already exists");

    let deleted = api.delete("run-1", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right(), "a plain delete answers a Status");
    let gone = api.get("run-1").await.unwrap_err();
    let status = api_status(gone);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "secrets \"run-1\" not found");
    assert_eq!(
        api_code(
            &api.delete("run-1", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
}

#[tokio::test]
async fn objects_get_uids_timestamps_resource_versions_and_generated_names() {
    let (_fake, client) = scripted(50).await;
    let api = secrets(&client);
    let mut generated = Secret {
        metadata: ObjectMeta {
            generate_name: Some("run-".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    let a = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    generated.metadata.generate_name = Some("run-".into());
    let b = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    for s in [&a, &b] {
        let name = s.metadata.name.as_deref().unwrap();
        assert!(name.starts_with("run-") && name.len() == 9, "{name}");
        assert!(s.metadata.uid.is_some());
        assert!(s.metadata.creation_timestamp.is_some());
    }
    assert_ne!(a.metadata.name, b.metadata.name);
    assert_ne!(a.metadata.uid, b.metadata.uid);
    let rv = |s: &Secret| -> u64 {
        s.metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(rv(&b) > rv(&a), "one global counter");
    let patched = api
        .patch(
            a.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert!(rv(&patched) > rv(&b));
    assert_eq!(patched.metadata.labels.unwrap()["x"], "y");
    let mut stale = a.clone();
    stale.metadata.labels = Some([("z".to_owned(), "1".to_owned())].into());
    let conflict = api
        .replace(
            a.metadata.name.as_deref().unwrap(),
            &PostParams::default(),
            &stale,
        )
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&conflict),
        409,
        "a stale resourceVersion conflicts"
    );
}

#[tokio::test]
async fn invalid_objects_are_refused_with_422_and_field_causes() {
    let (_fake, client) = scripted(50).await;
    let nameless = secrets(&client)
        .create(&PostParams::default(), &Secret::default())
        .await
        .unwrap_err();
    let status = api_status(nameless);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("metadata.name: Required value: name or generateName is required"),
        "{}",
        status.message
    );

    let no_containers = jobs(&client)
        .create(
            &PostParams::default(),
            &job("empty", json!({"containers": []})),
        )
        .await
        .unwrap_err();
    let status = api_status(no_containers);
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "Job.batch \"empty\" is invalid: spec.template.spec.containers: Required value"
    );
    let causes = status.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.template.spec.containers");
    assert_eq!(causes[0].reason, "FieldValueRequired");

    let mut always = simple_job("always");
    always
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("Always".into());
    let status = api_status(
        jobs(&client)
            .create(&PostParams::default(), &always)
            .await
            .unwrap_err(),
    );
    assert!(
        status.message.contains("Unsupported value: \"Always\""),
        "{}",
        status.message
    );

    let image_volume = job(
        "imagevol",
        json!({
            "containers": [{"name": "task", "image": "busybox", "volumeMounts": [{"name": "agent", "mountPath": "/agent"}]}],
            "volumes": [{"name": "agent", "image": {"reference": "hangar:1"}}],
        }),
    );
    let status = api_status(
        jobs(&client)
            .create(&PostParams::default(), &image_volume)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("image volumes are not supported"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let (_fake, client) = scripted(50).await;
    let api = secrets(&client);
    for (name, labels) in [
        ("s1", json!({"app": "hangar", "run": "1"})),
        ("s2", json!({"app": "hangar", "run": "2"})),
        ("s3", json!({"app": "other"})),
        ("s4", json!({})),
    ] {
        api.create(&PostParams::default(), &secret(name, labels))
            .await
            .unwrap();
    }
    let names = |lp: ListParams| {
        let api = api.clone();
        async move {
            api.list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|s| s.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(ListParams::default().labels("app=hangar")).await,
        ["s1", "s2"]
    );
    assert_eq!(
        names(ListParams::default().labels("app!=hangar")).await,
        ["s3", "s4"]
    );
    assert_eq!(
        names(ListParams::default().labels("run")).await,
        ["s1", "s2"]
    );
    assert_eq!(
        names(ListParams::default().labels("app=hangar,run=2")).await,
        ["s2"]
    );
    assert_eq!(names(ListParams::default().labels("!app")).await, ["s4"]);
    assert_eq!(
        names(ListParams::default().labels("app in (other,x)")).await,
        ["s3"]
    );
    assert_eq!(
        names(ListParams::default().fields("metadata.name=s3")).await,
        ["s3"]
    );
    let bad = api
        .list(&ListParams::default().fields("data.token=x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&bad), 400);
}

#[tokio::test]
async fn lists_page_with_limit_and_continue() {
    let (_fake, client) = scripted(50).await;
    let api = secrets(&client);
    for i in 0..5 {
        api.create(&PostParams::default(), &secret(&format!("s{i}"), json!({})))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().unwrap();
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = second
        .items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["s2", "s3"]);
}
