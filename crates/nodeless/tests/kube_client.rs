//! End-to-end: kube-rs, the Rust client our own controllers use, against the real binary:
//! typed list/get, watch (and its 410 after compaction), server-side apply, finalizers.

mod common;

use std::time::Duration;

use common::Cluster;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "labels": { "app": "demo" } },
        "data": { "v": value },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_list_get_create_and_conflict() {
    let c = Cluster::start();
    let client = c.kube_client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("one", "1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let fetched = cms.get("one").await.unwrap();
    assert_eq!(fetched.data.unwrap()["v"], "1");

    // A write with a stale resourceVersion is a 409 Conflict.
    let mut stale = created.clone();
    stale.data = Some([("v".to_string(), "2".to_string())].into());
    cms.replace("one", &PostParams::default(), &stale)
        .await
        .unwrap();
    stale.data = Some([("v".to_string(), "3".to_string())].into());
    let err = cms
        .replace("one", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("expected 409, got {other:?}"),
    }
    let err = cms
        .create(&PostParams::default(), &cm("one", "x"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => assert_eq!(
            (status.code, status.reason.as_str()),
            (409, "AlreadyExists")
        ),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    // Paged lists through the client.
    for i in 0..12 {
        cms.create(&PostParams::default(), &cm(&format!("page-{i:02}"), "p"))
            .await
            .unwrap();
    }
    let first = cms
        .list(&ListParams::default().labels("app=demo").limit(5))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 5);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = cms
        .list(
            &ListParams::default()
                .labels("app=demo")
                .limit(100)
                .continue_token(&token),
        )
        .await
        .unwrap();
    assert_eq!(first.items.len() + second.items.len(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_changes_and_old_versions_are_gone_after_compaction() {
    let c = Cluster::start_with(&["--compaction-interval-seconds", "1"]);
    let client = c.kube_client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("watched", "1"))
        .await
        .unwrap();
    let old_rv = first.metadata.resource_version.clone().unwrap();

    // kube-runtime's watcher: initial list, then live events.
    let stream =
        watcher(cms.clone(), watcher::Config::default().labels("app=demo")).applied_objects();
    let mut stream = Box::pin(stream);
    let seen = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some("watched"));
    cms.create(&PostParams::default(), &cm("second", "2"))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let obj = stream.try_next().await.unwrap().unwrap();
            if obj.metadata.name.as_deref() == Some("second") {
                return obj;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(next.data.unwrap()["v"], "2");

    // Once history is compacted, a watch from an old version is 410 Gone.
    for i in 0..5 {
        cms.patch(
            "watched",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "v": i.to_string() } })),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    cms.patch(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "v": "late" } })),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let outcome = cms.watch(&WatchParams::default(), &old_rv).await;
    let gone = match outcome {
        Err(kube::Error::Api(status)) => status.code == 410,
        Ok(events) => {
            let mut events = Box::pin(events);
            matches!(events.next().await, Some(Ok(WatchEvent::Error(e))) if e.code == 410)
        }
        Err(other) => panic!("unexpected {other:?}"),
    };
    assert!(gone, "a watch from a compacted revision must be 410 Gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_and_finalizers() {
    let c = Cluster::start();
    let client = c.kube_client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "applied", "finalizers": ["example.com/keep"] },
        "data": { "owner": "alpha" },
    });
    let applied = cms
        .patch(
            "applied",
            &PatchParams::apply("alpha"),
            &Patch::Apply(&config),
        )
        .await
        .unwrap();
    let managers: Vec<String> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["alpha"]);

    let rival = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "applied" }, "data": { "owner": "beta" } });
    let err = cms
        .patch(
            "applied",
            &PatchParams::apply("beta"),
            &Patch::Apply(&rival),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409);
            assert!(
                status.message.contains("conflict with \"alpha\""),
                "{}",
                status.message
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let forced = cms
        .patch(
            "applied",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(&rival),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["owner"], "beta");

    // The finalizer holds the object after delete until it is removed.
    cms.delete("applied", &DeleteParams::default())
        .await
        .unwrap();
    let held = cms.get("applied").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "applied",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .unwrap();
    let gone = cms.get_opt("applied").await.unwrap();
    assert!(
        gone.is_none(),
        "the object must be gone once its finalizers are"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_streaming_lists_and_cluster_wide_watches() {
    let c = Cluster::start();
    let client = c.kube_client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["team-a", "team-b"] {
        let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    for ns in ["team-a", "team-b"] {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        cms.create(&PostParams::default(), &cm("shared", ns))
            .await
            .unwrap();
    }
    // PartialObjectMetadataList across all namespaces.
    let all: Api<ConfigMap> = Api::all(client.clone());
    let meta = all
        .list_metadata(&ListParams::default().labels("app=demo"))
        .await
        .unwrap();
    let mut where_: Vec<String> = meta
        .items
        .iter()
        .filter_map(|m| m.metadata.namespace.clone())
        .collect();
    where_.sort();
    assert_eq!(where_, ["team-a", "team-b"]);

    // A streaming list (sendInitialEvents + the initial-events-end bookmark), then a live
    // event from another namespace on the same cluster-wide watch.
    let stream = watcher(
        all.clone(),
        watcher::Config::default()
            .labels("app=demo")
            .streaming_lists(),
    )
    .applied_objects();
    let mut stream = Box::pin(stream);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let obj = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(obj.metadata.namespace.unwrap());
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("late", "x"))
        .await
        .unwrap();
    let late = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let obj = stream.try_next().await.unwrap().unwrap();
            if obj.metadata.name.as_deref() == Some("late") {
                return obj;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(late.metadata.namespace.as_deref(), Some("default"));

    // Bookmarks arrive on a watch that allows them.
    let rv = all
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = Box::pin(
        all.watch(&WatchParams::default().timeout(20), &rv)
            .await
            .unwrap(),
    );
    let bookmark = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(Ok(WatchEvent::Bookmark(b))) = events.next().await {
                return b;
            }
        }
    })
    .await
    .expect("a bookmark within 15 s");
    assert!(
        bookmark.metadata.resource_version.parse::<u64>().unwrap() >= rv.parse::<u64>().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_preconditions_watch_timeouts_and_expired_continue_tokens() {
    let c = Cluster::start_with(&["--compaction-interval-seconds", "1"]);
    let client = c.kube_client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let mut generated = cm("", "g");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let made = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = made.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("gen-") && name.len() == "gen-".len() + 5,
        "{name}"
    );

    // Delete preconditions: a wrong uid is a 409 and the object stays.
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match cms.delete(&name, &wrong).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("expected a 409, got {other:?}"),
    }
    let right = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: made.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    cms.delete(&name, &right).await.unwrap();
    assert!(cms.get_opt(&name).await.unwrap().is_none());

    // A watch with timeoutSeconds ends by itself.
    let rv = cms
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let events = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), events.collect::<Vec<_>>()).await;
    assert!(ended.is_ok(), "the watch must end after its timeoutSeconds");

    // A continue token from before a compaction is 410 Gone.
    for i in 0..4 {
        cms.create(&PostParams::default(), &cm(&format!("chunk-{i}"), "c"))
            .await
            .unwrap();
    }
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("continue token");
    for i in 0..3 {
        cms.patch(
            "chunk-0",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "v": i.to_string() } })),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    cms.patch(
        "chunk-0",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "v": "late" } })),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    match cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 410, "{status:?}"),
        other => panic!("expected 410 Gone for an expired continue token, got {other:?}"),
    }
}
