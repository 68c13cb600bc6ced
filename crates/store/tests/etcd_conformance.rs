//! The store conformance suite against the etcd backend, on a real etcd started on loopback
//! ports (Debian's `etcd-server`; `ETCD_BIN` overrides the binary), plus etcd outages.
//!
//! One etcd serves every conformance test of this binary. Each test uses its own random key
//! prefix, and the tests take a lock in turn because some of them assert on global revisions
//! (etcd's revision counter and compaction are shared by all prefixes).

#[path = "support/etcd_server.rs"]
mod etcd_server;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use etcd_server::EtcdServer;
use futures::StreamExt;
use nodeless_store::{EtcdOptions, EtcdStore, Store, StoreError, WatchEvent, WatchOptions};

static SHARED_ETCD: OnceLock<EtcdServer> = OnceLock::new();
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A key prefix no other test uses.
fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "/test-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Connects, retrying while a freshly started etcd is not ready yet.
async fn connect(endpoint: String, prefix: String, timeout: Duration) -> EtcdStore {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let options = EtcdOptions {
            endpoints: vec![endpoint.clone()],
            prefix: prefix.clone(),
            tls: None,
            request_timeout: timeout,
        };
        match EtcdStore::connect(options).await {
            Ok(store) => return store,
            Err(error) if Instant::now() < deadline => {
                eprintln!("etcd not ready yet: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot connect to etcd: {error}"),
        }
    }
}

nodeless_store::store_conformance_suite!(|| async {
    let server = SHARED_ETCD.get_or_init(EtcdServer::start);
    let turn = ONE_AT_A_TIME.lock().await;
    let store = connect(server.endpoint(), unique_prefix(), Duration::from_secs(5)).await;
    (store, turn)
});

/// Keys live under the configured prefix, and another prefix does not see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_under_the_prefix() {
    let server = SHARED_ETCD.get_or_init(EtcdServer::start);
    let _turn = ONE_AT_A_TIME.lock().await;
    let prefix = unique_prefix();
    let store = connect(
        server.endpoint(),
        format!("{prefix}/a"),
        Duration::from_secs(5),
    )
    .await;
    let raw = connect(server.endpoint(), String::new(), Duration::from_secs(5)).await;
    let other = connect(
        server.endpoint(),
        format!("{prefix}/b"),
        Duration::from_secs(5),
    )
    .await;
    let kv = store.create("/x", b"v".to_vec()).await.unwrap();
    assert_eq!(kv.key, "/x");
    let seen = raw
        .get(&format!("{prefix}/a/x"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.value, b"v");
    assert_eq!(seen.mod_revision, kv.mod_revision);
    assert_eq!(other.get("/x", None).await.unwrap(), None);
    let all = other
        .range(nodeless_store::RangeRequest::default())
        .await
        .unwrap();
    assert!(all.kvs.is_empty());
    assert_eq!(
        EtcdOptions::new(vec!["http://127.0.0.1:2379".into()]).prefix,
        "/registry/"
    );
}

/// Requests against a frozen etcd time out (`Timeout`), against a dead one they fail fast
/// (`Unavailable`, or `Timeout` while the channel reconnects); once etcd is back
/// they succeed again, and a watch opened before the outage resumes with every event exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_fails_fast_then_recovers_and_watch_resumes() {
    let server = EtcdServer::start();
    let timeout = Duration::from_millis(800);
    let store = connect(server.endpoint(), "/registry/".into(), timeout).await;
    let base = store.current_revision().await.unwrap();
    let mut watch = store
        .watch("/o/", base, WatchOptions::default())
        .await
        .unwrap();
    let mut acknowledged = BTreeSet::new();
    for i in 0..5 {
        let kv = store
            .create(&format!("/o/before-{i}"), vec![])
            .await
            .unwrap();
        acknowledged.insert(kv.mod_revision);
    }
    let mut delivered = Vec::new();
    while delivered.len() < 5 {
        match watch.next().await.unwrap().unwrap() {
            WatchEvent::Progress { .. } => {}
            event => delivered.push(event),
        }
    }

    // Frozen: the request times out.
    server.pause();
    let start = Instant::now();
    let error = store.get("/o/before-0", None).await.unwrap_err();
    assert!(matches!(error, StoreError::Timeout(_)), "{error:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // A write while frozen is not acknowledged (it may still be applied after the thaw).
    let error = store.create("/o/frozen", vec![]).await.unwrap_err();
    assert!(matches!(error, StoreError::Timeout(_)), "{error:?}");
    server.resume();
    for i in 0..3 {
        let key = format!("/o/thawed-{i}");
        let kv = create_retrying(&store, &key).await;
        acknowledged.insert(kv.mod_revision);
    }

    // Dead: requests fail fast too.
    server.kill();
    let start = Instant::now();
    let error = store.current_revision().await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // Back on the same data directory: the same store works again without reconnecting.
    server.restart();
    for i in 0..5 {
        let key = format!("/o/after-{i}");
        let kv = create_retrying(&store, &key).await;
        acknowledged.insert(kv.mod_revision);
    }
    let last = *acknowledged.last().unwrap();
    while delivered.last().map(WatchEvent::revision) < Some(last) {
        let item = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("the watch did not resume")
            .unwrap();
        match item.unwrap() {
            WatchEvent::Progress { .. } => {}
            event => delivered.push(event),
        }
    }
    // Exactly etcd's history of the prefix: every acknowledged write, in order, no repeats.
    let revisions: Vec<_> = delivered.iter().map(WatchEvent::revision).collect();
    assert!(
        revisions.windows(2).all(|pair| pair[0] < pair[1]),
        "{revisions:?}"
    );
    for revision in &acknowledged {
        assert!(
            revisions.contains(revision),
            "event {revision} lost: {revisions:?}"
        );
    }
    let mut replay = store
        .watch("/o/", base, WatchOptions::default())
        .await
        .unwrap();
    let mut history = Vec::new();
    while history.len() < delivered.len() {
        history.push(replay.next().await.unwrap().unwrap());
    }
    assert_eq!(history, delivered);
}

/// Creates a key, retrying while etcd is still coming back. A create that timed out may
/// still have been applied; then the retry finds the key, and its version is the one written.
async fn create_retrying(store: &EtcdStore, key: &str) -> nodeless_store::KeyValue {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.create(key, Vec::new()).await {
            Ok(kv) => return kv,
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                eprintln!("retrying: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(StoreError::AlreadyExists { .. }) => {
                return store.get(key, None).await.unwrap().unwrap();
            }
            Err(error) => panic!("create failed: {error:?}"),
        }
    }
}
