//! Watches: events in order, expired resource versions, bookmarks, timeouts.

use crate::common::*;

#[tokio::test]
async fn a_watch_sees_added_modified_and_deleted() {
    let (_fake, client) = scripted(50).await;
    let api = secrets(&client);
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=hangar"), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(
        &PostParams::default(),
        &secret("w1", json!({"app": "hangar"})),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &secret("other", json!({"app": "x"})),
    )
    .await
    .unwrap();
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
    )
    .await
    .unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = next_event(&mut stream).await.unwrap();
        let (kind, s) = match event {
            WatchEvent::Added(s) => ("ADDED", s),
            WatchEvent::Modified(s) => ("MODIFIED", s),
            WatchEvent::Deleted(s) => ("DELETED", s),
            other => panic!("unexpected {other:?}"),
        };
        seen.push((kind, s.metadata.name.unwrap()));
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "w1".to_owned()),
            ("MODIFIED", "w1".to_owned()),
            ("DELETED", "w1".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_watch_from_an_expired_resource_version_gets_410_and_relists() {
    let (fake, client) = scripted(50).await;
    let api = secrets(&client);
    api.create(&PostParams::default(), &secret("before", json!({})))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut open = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    fake.expire_watches();
    // The open watch ends with an ERROR event carrying a 410 Status.
    match tokio::time::timeout(WAIT, open.try_next()).await.unwrap() {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        Ok(Some(WatchEvent::Error(s))) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // Watching again from the old resourceVersion is refused the same way.
    let mut again = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, again.try_next()).await.unwrap() {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        Ok(Some(WatchEvent::Error(s))) => assert_eq!(s.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // The client re-lists and watches from the new resourceVersion.
    let relisted = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(relisted.items.len(), 1);
    let new_rv = relisted.metadata.resource_version.unwrap();
    assert!(new_rv.parse::<u64>().unwrap() > rv.parse::<u64>().unwrap());
    let mut fresh = api
        .watch(&WatchParams::default(), &new_rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &secret("after", json!({})))
        .await
        .unwrap();
    match next_event(&mut fresh).await {
        Some(WatchEvent::Added(s)) => assert_eq!(s.metadata.name.as_deref(), Some("after")),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_send_bookmarks_when_allowed() {
    let (fake, client) = scripted(50).await;
    fake.set_bookmark_interval(Duration::from_millis(50));
    let api = secrets(&client);
    api.create(&PostParams::default(), &secret("b", json!({})))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
    let raw = fake.requests();
    let watch = raw
        .iter()
        .rev()
        .find(|r| r.param("watch").is_some())
        .unwrap();
    assert_eq!(watch.param("allowWatchBookmarks").as_deref(), Some("true"));
    assert_eq!(watch.param("resourceVersion").as_deref(), Some(rv.as_str()));
}

#[tokio::test]
async fn close_watches_ends_every_open_stream() {
    let (fake, client) = scripted(50).await;
    let mut a = secrets(&client)
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut b = pods(&client)
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(fake.open_watches(), 2);
    fake.close_watches();
    assert!(next_event(&mut a).await.is_none());
    assert!(next_event(&mut b).await.is_none());
}

#[tokio::test]
async fn watch_timeout_seconds_ends_the_stream() {
    let (_fake, client) = scripted(50).await;
    let mut stream = secrets(&client)
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    assert!(next_event(&mut stream).await.is_none());
}
