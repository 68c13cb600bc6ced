//! The conformance suite every [`Store`] backend must pass.
//!
//! Each property is a public async function taking the store under test; the
//! [`store_conformance_suite!`](crate::store_conformance_suite) macro expands to one
//! `#[tokio::test]` per property:
//!
//! ```ignore
//! nodeless_store::store_conformance_suite!(|| async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = nodeless_store::SqliteStore::open(dir.path().join("db")).unwrap();
//!     (store, dir) // the second value is kept alive until the test ends
//! });
//! ```
//!
//! The factory returns the store and a guard (a temporary directory, a test server; `()` if
//! none) that lives as long as the test. Every test gets a fresh, empty store and only relies
//! on revisions relative to the store's current revision, so etcd (which starts at revision 1)
//! passes too. The crate using the macro needs `tokio` (with `macros` and `rt-multi-thread`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{KeyValue, RangeRequest, Store, StoreError, WatchEvent, WatchOptions, WatchStream};

/// Expands to one `#[tokio::test]` per conformance property, each calling `$factory().await`
/// to get `(store, guard)`; see the [module documentation](crate::conformance).
#[macro_export]
macro_rules! store_conformance_suite {
    ($factory:expr) => {
        $crate::store_conformance_suite!(@tests $factory;
            revisions_strictly_increase,
            create_is_create_if_absent,
            update_is_guarded_by_mod_revision,
            delete_is_guarded_by_mod_revision,
            recreated_key_gets_new_create_revision,
            get_at_old_revision,
            read_at_future_revision_fails,
            range_by_prefix_excludes_siblings,
            range_pages_with_limit_and_start_key,
            range_at_revision,
            watch_replays_history_then_live_events,
            watch_delivers_only_its_prefix,
            compaction_keeps_state_and_fails_old_reads,
            watch_from_compacted_revision_fails,
            concurrent_writers_never_lose_updates,
            progress_events_are_bookmarks,
            slow_watcher_errors_rather_than_missing_events,
        );
    };
    (@tests $factory:expr; $($property:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $property() {
                let (store, guard) = ($factory)().await;
                $crate::conformance::$property(::std::sync::Arc::new(store)).await;
                drop(guard);
            }
        )*
    };
}

const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The next item of a watch stream, failing the test after a timeout or at the stream's end.
async fn next_item(watch: &mut WatchStream) -> Result<WatchEvent, StoreError> {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("the watch stream ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// The next change (skipping progress events) of a watch stream.
async fn next_change(watch: &mut WatchStream) -> WatchEvent {
    loop {
        match next_item(watch).await {
            Ok(WatchEvent::Progress { .. }) => continue,
            Ok(event) => return event,
            Err(error) => panic!("watch failed: {error}"),
        }
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// Every write gets a revision greater than every earlier write's, across keys.
pub async fn revisions_strictly_increase<S: Store>(store: Arc<S>) {
    let base = store.current_revision().await.unwrap();
    let a = store.create("/r/a", b"1".to_vec()).await.unwrap();
    assert!(a.mod_revision > base);
    assert_eq!(a.create_revision, a.mod_revision);
    let b = store.create("/r/b", b"1".to_vec()).await.unwrap();
    assert!(b.mod_revision > a.mod_revision);
    let a2 = store
        .update("/r/a", b"2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    assert!(a2.mod_revision > b.mod_revision);
    assert_eq!(a2.create_revision, a.create_revision);
    let (_, deleted_at) = store.delete("/r/b", None).await.unwrap();
    assert!(deleted_at > a2.mod_revision);
    assert_eq!(store.current_revision().await.unwrap(), deleted_at);
    // Failed writes do not consume revisions.
    assert!(store.create("/r/a", vec![]).await.is_err());
    assert_eq!(store.current_revision().await.unwrap(), deleted_at);
}

/// `create` fails with `AlreadyExists` for a live key and leaves it unchanged.
pub async fn create_is_create_if_absent<S: Store>(store: Arc<S>) {
    let created = store.create("/c/k", b"first".to_vec()).await.unwrap();
    assert_eq!(created.value, b"first");
    match store.create("/c/k", b"second".to_vec()).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, "/c/k"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get("/c/k", None).await.unwrap(), Some(created));
}

/// `update` needs the key's current mod revision; a conflict returns the current version.
pub async fn update_is_guarded_by_mod_revision<S: Store>(store: Arc<S>) {
    match store.update("/u/missing", vec![], 1).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "/u/missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let v1 = store.create("/u/k", b"1".to_vec()).await.unwrap();
    let v2 = store
        .update("/u/k", b"2".to_vec(), v1.mod_revision)
        .await
        .unwrap();
    assert_eq!(v2.value, b"2");
    match store.update("/u/k", b"3".to_vec(), v1.mod_revision).await {
        Err(StoreError::Conflict { current }) => assert_eq!(current, v2),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("/u/k", None).await.unwrap(), Some(v2));
}

/// `delete` with a guard needs the current mod revision; unguarded deletes any live key.
pub async fn delete_is_guarded_by_mod_revision<S: Store>(store: Arc<S>) {
    match store.delete("/d/missing", None).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "/d/missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let v1 = store.create("/d/k", b"1".to_vec()).await.unwrap();
    let v2 = store
        .update("/d/k", b"2".to_vec(), v1.mod_revision)
        .await
        .unwrap();
    match store.delete("/d/k", Some(v1.mod_revision)).await {
        Err(StoreError::Conflict { current }) => assert_eq!(current, v2),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let (deleted, revision) = store.delete("/d/k", Some(v2.mod_revision)).await.unwrap();
    assert_eq!(deleted, v2);
    assert!(revision > v2.mod_revision);
    assert_eq!(store.get("/d/k", None).await.unwrap(), None);
    assert!(matches!(
        store.delete("/d/k", None).await,
        Err(StoreError::NotFound { .. })
    ));
    let other = store.create("/d/other", vec![]).await.unwrap();
    let (deleted, _) = store.delete("/d/other", None).await.unwrap();
    assert_eq!(deleted, other);
}

/// A key deleted and created again starts a new life: new create revision, create-if-absent ok.
pub async fn recreated_key_gets_new_create_revision<S: Store>(store: Arc<S>) {
    let first = store.create("/re/k", b"1".to_vec()).await.unwrap();
    store.delete("/re/k", None).await.unwrap();
    let second = store.create("/re/k", b"2".to_vec()).await.unwrap();
    assert!(second.create_revision > first.create_revision);
    assert_eq!(second.create_revision, second.mod_revision);
    assert!(matches!(
        store.update("/re/k", vec![], first.mod_revision).await,
        Err(StoreError::Conflict { .. })
    ));
}

/// `get` at an old revision returns the version current at that revision.
pub async fn get_at_old_revision<S: Store>(store: Arc<S>) {
    let before = store.current_revision().await.unwrap();
    let v1 = store.create("/g/k", b"1".to_vec()).await.unwrap();
    let v2 = store
        .update("/g/k", b"2".to_vec(), v1.mod_revision)
        .await
        .unwrap();
    let (_, deleted_at) = store.delete("/g/k", None).await.unwrap();
    store.create("/g/other", vec![]).await.unwrap();
    assert_eq!(store.get("/g/k", Some(before)).await.unwrap(), None);
    assert_eq!(
        store.get("/g/k", Some(v1.mod_revision)).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(
        store.get("/g/k", Some(v2.mod_revision - 1)).await.unwrap(),
        Some(v1)
    );
    assert_eq!(
        store.get("/g/k", Some(v2.mod_revision)).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(
        store.get("/g/k", Some(deleted_at - 1)).await.unwrap(),
        Some(v2)
    );
    assert_eq!(store.get("/g/k", Some(deleted_at)).await.unwrap(), None);
    assert_eq!(store.get("/g/k", None).await.unwrap(), None);
}

/// Reading a revision that does not exist yet fails with `FutureRevision`.
pub async fn read_at_future_revision_fails<S: Store>(store: Arc<S>) {
    store.create("/f/k", vec![]).await.unwrap();
    let future = store.current_revision().await.unwrap() + 10;
    assert!(matches!(
        store.get("/f/k", Some(future)).await,
        Err(StoreError::FutureRevision { .. })
    ));
    let req = RangeRequest {
        prefix: "/f/",
        revision: Some(future),
        ..RangeRequest::default()
    };
    assert!(matches!(
        store.range(req).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

/// A prefix is a raw byte prefix: `/a/b/` matches `/a/b/x` but not `/a/bc` or `/a/b`.
pub async fn range_by_prefix_excludes_siblings<S: Store>(store: Arc<S>) {
    for key in [
        "/a/b", "/a/bc", "/a/bc/x", "/a/b/x", "/a/b/y", "/a/b/x/z", "/a/c",
    ] {
        store.create(key, key.as_bytes().to_vec()).await.unwrap();
    }
    store.delete("/a/b/y", None).await.unwrap();
    let result = store
        .range(RangeRequest {
            prefix: "/a/b/",
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&result.kvs), ["/a/b/x", "/a/b/x/z"]);
    assert_eq!(result.count, 2);
    assert!(!result.more);
    assert_eq!(result.revision, store.current_revision().await.unwrap());
    assert_eq!(result.kvs[0].value, b"/a/b/x");
    // Raw byte prefix, like etcd.
    let raw = store
        .range(RangeRequest {
            prefix: "/a/b",
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(
        keys(&raw.kvs),
        ["/a/b", "/a/b/x", "/a/b/x/z", "/a/bc", "/a/bc/x"]
    );
    let all = store.range(RangeRequest::default()).await.unwrap();
    assert_eq!(all.count, 6);
    let none = store
        .range(RangeRequest {
            prefix: "/nothing/",
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert!(none.kvs.is_empty() && !none.more && none.count == 0);
}

/// `limit` and `start_key` page through a prefix; `more` and `count` describe the rest.
pub async fn range_pages_with_limit_and_start_key<S: Store>(store: Arc<S>) {
    for i in 0..10 {
        store
            .create(&format!("/p/k{i:02}"), vec![i as u8])
            .await
            .unwrap();
    }
    store.create("/p2/outside", vec![]).await.unwrap();
    let first = store
        .range(RangeRequest {
            prefix: "/p/",
            limit: Some(4),
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&first.kvs), ["/p/k00", "/p/k01", "/p/k02", "/p/k03"]);
    assert!(first.more);
    assert_eq!(first.count, 10);
    // Writes after the first page must not show up in later pages read at its revision.
    store.create("/p/k045", vec![]).await.unwrap();
    store.delete("/p/k05", None).await.unwrap();
    let mut seen = keys(&first.kvs)
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let mut next = format!("{}\0", first.kvs[3].key);
    loop {
        let page = store
            .range(RangeRequest {
                prefix: "/p/",
                start_key: Some(&next),
                limit: Some(4),
                revision: Some(first.revision),
            })
            .await
            .unwrap();
        assert_eq!(page.revision, first.revision);
        assert_eq!(page.count as usize, 10 - seen.len());
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        next = format!("{}\0", page.kvs[page.kvs.len() - 1].key);
    }
    let expected: Vec<String> = (0..10).map(|i| format!("/p/k{i:02}")).collect();
    assert_eq!(seen, expected);
    // start_key is inclusive; a limit that covers everything reports no more.
    let tail = store
        .range(RangeRequest {
            prefix: "/p/",
            start_key: Some("/p/k08"),
            limit: Some(2),
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&tail.kvs), ["/p/k08", "/p/k09"]);
    assert!(!tail.more);
    assert_eq!(tail.count, 2);
}

/// `range` at an old revision shows the keys as they were then.
pub async fn range_at_revision<S: Store>(store: Arc<S>) {
    let a = store.create("/rr/a", b"1".to_vec()).await.unwrap();
    store.create("/rr/b", b"1".to_vec()).await.unwrap();
    let at = store.current_revision().await.unwrap();
    store
        .update("/rr/a", b"2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    store.delete("/rr/b", None).await.unwrap();
    store.create("/rr/c", b"1".to_vec()).await.unwrap();
    let old = store
        .range(RangeRequest {
            prefix: "/rr/",
            revision: Some(at),
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(old.revision, at);
    assert_eq!(keys(&old.kvs), ["/rr/a", "/rr/b"]);
    assert_eq!(old.kvs[0], a);
    let now = store
        .range(RangeRequest {
            prefix: "/rr/",
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&now.kvs), ["/rr/a", "/rr/c"]);
    assert_eq!(now.kvs[0].value, b"2");
}

/// A watch from a revision replays every later event in order, with previous values, then
/// continues with live events.
pub async fn watch_replays_history_then_live_events<S: Store>(store: Arc<S>) {
    let base = store.current_revision().await.unwrap();
    let a1 = store.create("/w/a", b"1".to_vec()).await.unwrap();
    let a2 = store
        .update("/w/a", b"2".to_vec(), a1.mod_revision)
        .await
        .unwrap();
    let b1 = store.create("/w/b", b"1".to_vec()).await.unwrap();
    let (_, a_deleted) = store.delete("/w/a", None).await.unwrap();

    let mut watch = store
        .watch("/w/", base, WatchOptions::default())
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: a1.clone(),
            prev: None
        }
    );
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: a2.clone(),
            prev: Some(a1.clone())
        }
    );
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: b1.clone(),
            prev: None
        }
    );
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Delete {
            prev: a2.clone(),
            revision: a_deleted
        }
    );
    let b2 = store
        .update("/w/b", b"2".to_vec(), b1.mod_revision)
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: b2.clone(),
            prev: Some(b1.clone())
        }
    );

    // From the middle of history.
    let mut from_middle = store
        .watch("/w/", a2.mod_revision, WatchOptions::default())
        .await
        .unwrap();
    let revisions = [
        next_change(&mut from_middle).await.revision(),
        next_change(&mut from_middle).await.revision(),
        next_change(&mut from_middle).await.revision(),
    ];
    assert_eq!(revisions, [b1.mod_revision, a_deleted, b2.mod_revision]);

    // From the current revision: only live events.
    let now = store.current_revision().await.unwrap();
    let mut live = store
        .watch("/w/", now, WatchOptions::default())
        .await
        .unwrap();
    let c = store.create("/w/c", vec![]).await.unwrap();
    assert_eq!(
        next_change(&mut live).await,
        WatchEvent::Put { kv: c, prev: None }
    );
}

/// A watch receives only events on keys with its prefix (a raw byte prefix).
pub async fn watch_delivers_only_its_prefix<S: Store>(store: Arc<S>) {
    let base = store.current_revision().await.unwrap();
    store.create("/x/in/1", vec![]).await.unwrap();
    store.create("/x/inside", vec![]).await.unwrap();
    store.create("/x/in", vec![]).await.unwrap();
    let mut watch = store
        .watch("/x/in/", base, WatchOptions::default())
        .await
        .unwrap();
    store.create("/x/other", vec![]).await.unwrap();
    store.create("/x/in/2", vec![]).await.unwrap();
    store.create("/y/in/3", vec![]).await.unwrap();
    store.delete("/x/inside", None).await.unwrap();
    store.delete("/x/in/1", None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = next_change(&mut watch).await;
        seen.push((event.key().unwrap_or_default().to_owned(), event.revision()));
    }
    assert_eq!(
        seen.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(),
        ["/x/in/1", "/x/in/2", "/x/in/1"]
    );
    assert!(seen.windows(2).all(|pair| pair[0].1 < pair[1].1));
    // Nothing else is pending.
    store.create("/x/in/last", vec![]).await.unwrap();
    assert_eq!(next_change(&mut watch).await.key(), Some("/x/in/last"));
}

/// After compaction the latest versions remain readable at and after the compacted revision;
/// reads below it fail with `Compacted`.
pub async fn compaction_keeps_state_and_fails_old_reads<S: Store>(store: Arc<S>) {
    let v1 = store.create("/cp/a", b"1".to_vec()).await.unwrap();
    let old = store.current_revision().await.unwrap();
    let v2 = store
        .update("/cp/a", b"2".to_vec(), v1.mod_revision)
        .await
        .unwrap();
    let b = store.create("/cp/b", b"1".to_vec()).await.unwrap();
    store.create("/cp/gone", b"1".to_vec()).await.unwrap();
    store.delete("/cp/gone", None).await.unwrap();
    let at = store.current_revision().await.unwrap();
    let v3 = store
        .update("/cp/a", b"3".to_vec(), v2.mod_revision)
        .await
        .unwrap();
    store.compact(at).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), at);

    let current = store.current_revision().await.unwrap();
    match store.get("/cp/a", Some(old)).await {
        Err(StoreError::Compacted {
            compact_revision,
            current_revision,
        }) => {
            assert_eq!(compact_revision, at);
            assert_eq!(current_revision, current);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(matches!(
        store
            .range(RangeRequest {
                prefix: "/cp/",
                revision: Some(at - 1),
                ..RangeRequest::default()
            })
            .await,
        Err(StoreError::Compacted { .. })
    ));
    let at_compaction = store
        .range(RangeRequest {
            prefix: "/cp/",
            revision: Some(at),
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(at_compaction.kvs, [v2, b.clone()]);
    assert_eq!(store.get("/cp/a", None).await.unwrap(), Some(v3.clone()));
    let now = store
        .range(RangeRequest {
            prefix: "/cp/",
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(now.kvs, [v3, b]);
    // Compacting the future or below the compacted revision fails and changes nothing.
    assert!(matches!(
        store.compact(current + 100).await,
        Err(StoreError::FutureRevision { .. })
    ));
    assert!(matches!(
        store.compact(old).await,
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(store.compacted_revision().await.unwrap(), at);
    // The store keeps working after compaction.
    let again = store.create("/cp/gone", b"again".to_vec()).await.unwrap();
    assert!(again.mod_revision > current);
}

/// A watch that starts below the compacted revision fails with `Compacted`; one that starts at
/// it replays every later event.
pub async fn watch_from_compacted_revision_fails<S: Store>(store: Arc<S>) {
    let base = store.current_revision().await.unwrap();
    let v1 = store.create("/wc/a", b"1".to_vec()).await.unwrap();
    let v2 = store
        .update("/wc/a", b"2".to_vec(), v1.mod_revision)
        .await
        .unwrap();
    let v3 = store
        .update("/wc/a", b"3".to_vec(), v2.mod_revision)
        .await
        .unwrap();
    store.compact(v2.mod_revision).await.unwrap();
    match store.watch("/wc/", base, WatchOptions::default()).await {
        Err(StoreError::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, v2.mod_revision),
        Err(other) => panic!("expected Compacted, got {other:?}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    let mut watch = store
        .watch("/wc/", v2.mod_revision, WatchOptions::default())
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: v3,
            prev: Some(v2)
        }
    );
}

/// 8 writers × 50 read-modify-write increments with retry on conflict lose no update.
pub async fn concurrent_writers_never_lose_updates<S: Store>(store: Arc<S>) {
    const WRITERS: usize = 8;
    const UPDATES: usize = 50;
    store.create("/cc/counter", b"0".to_vec()).await.unwrap();
    let base = store.current_revision().await.unwrap();
    let mut watch = store
        .watch("/cc/", base, WatchOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            let mut current = store.get("/cc/counter", None).await.unwrap().unwrap();
            for _ in 0..UPDATES {
                loop {
                    let count: u64 = String::from_utf8(current.value.clone())
                        .unwrap()
                        .parse()
                        .unwrap();
                    let next = (count + 1).to_string().into_bytes();
                    match store
                        .update("/cc/counter", next, current.mod_revision)
                        .await
                    {
                        Ok(written) => {
                            revisions.push(written.mod_revision);
                            current = written;
                            break;
                        }
                        Err(StoreError::Conflict { current: newer }) => current = newer,
                        Err(error) => panic!("update failed: {error}"),
                    }
                }
            }
            revisions
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        for revision in task.await.unwrap() {
            assert!(
                all.insert(revision),
                "revision {revision} acknowledged twice"
            );
        }
    }
    assert_eq!(all.len(), WRITERS * UPDATES);
    let final_kv = store.get("/cc/counter", None).await.unwrap().unwrap();
    assert_eq!(final_kv.value, (WRITERS * UPDATES).to_string().into_bytes());
    // The watch sees every increment once, in order, each replacing the previous one.
    let mut previous = base;
    for expected in 1..=WRITERS * UPDATES {
        match next_change(&mut watch).await {
            WatchEvent::Put { kv, prev } => {
                assert_eq!(kv.value, expected.to_string().into_bytes());
                assert_eq!(prev.map(|prev| prev.mod_revision), Some(previous));
                assert!(kv.mod_revision > previous);
                previous = kv.mod_revision;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// With `progress_notify`, progress events arrive while idle, even if only other prefixes
/// change, and every event at or below their revision has been delivered before them.
pub async fn progress_events_are_bookmarks<S: Store>(store: Arc<S>) {
    let base = store.current_revision().await.unwrap();
    let options = WatchOptions {
        progress_notify: Some(Duration::from_millis(100)),
    };
    let mut watch = store.watch("/pg/", base, options).await.unwrap();
    let inside = store.create("/pg/a", vec![]).await.unwrap();
    let outside = store.create("/other/a", vec![]).await.unwrap();
    let mut delivered_inside = false;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress event past the last write"
        );
        match next_item(&mut watch).await.unwrap() {
            WatchEvent::Progress { revision } => {
                if revision >= inside.mod_revision {
                    assert!(
                        delivered_inside,
                        "bookmark {revision} before the event it covers"
                    );
                }
                if revision >= outside.mod_revision {
                    break;
                }
            }
            event => {
                assert_eq!(event.revision(), inside.mod_revision);
                delivered_inside = true;
            }
        }
    }
    // After a bookmark, later events have greater revisions.
    let later = store.create("/pg/b", vec![]).await.unwrap();
    assert_eq!(next_change(&mut watch).await.revision(), later.mod_revision);
}

/// A watcher that does not read while many events happen either receives all of them, in
/// order, or an error after which the stream ends; it never silently misses events.
pub async fn slow_watcher_errors_rather_than_missing_events<S: Store>(store: Arc<S>) {
    const EVENTS: usize = 12_000;
    const WRITERS: usize = 48;
    let base = store.current_revision().await.unwrap();
    let mut watch = store
        .watch("/slow/", base, WatchOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in (writer..EVENTS).step_by(WRITERS) {
                store
                    .create(&format!("/slow/{i:05}"), vec![0; 64])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut expected = base + 1;
    let mut received = 0;
    loop {
        match next_item(&mut watch).await {
            Ok(WatchEvent::Progress { .. }) => continue,
            Ok(event) => {
                assert_eq!(event.revision(), expected, "a gap in the event stream");
                expected += 1;
                received += 1;
                if received == EVENTS {
                    break;
                }
            }
            Err(error) => {
                assert!(
                    tokio::time::timeout(EVENT_TIMEOUT, watch.next())
                        .await
                        .unwrap()
                        .is_none(),
                    "the stream must end after an error ({error})"
                );
                break;
            }
        }
    }
}
