//! End-to-end: a cluster on a real etcd (Debian's etcd-server on loopback) while etcd is
//! killed and restarted, then frozen (SIGSTOP) for 8 s and for 20 s (past the HTTP/2
//! keepalive, so the server drops its connection) and thawed, under load: concurrent ConfigMap
//! writers and a Deployment being scaled up and down, through kube-rs.
//!
//! Afterwards: every acknowledged create exists with its data; every failure was a Status
//! that came back before the client's timeout: 503 at once while etcd is down, 504 after the
//! server's 5 s etcd timeout while it is frozen; the same `nodeless` process serves
//! again; a watch opened before the outages saw every acknowledged ConfigMap exactly once
//! (and nothing twice); the Deployment settles with exactly its replicas, one pod per name,
//! and consistent ReplicaSet/Deployment status, and never had more active pods than the
//! largest scale asked for. A second test freezes etcd in the middle of a scale-up from 1 to
//! 120 and checks that no pod create is doubled.

mod common;

#[path = "../../store/tests/support/etcd_server.rs"]
mod etcd_server;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const NAMESPACE: &str = "outage";
const LABEL: &str = "load=outage";
const REPLICAS: i32 = 20;
const WRITERS: usize = 4;
/// Longer than anything the server may take to answer (its etcd request timeout is 5 s, a
/// request makes a few etcd calls): a request still open after this is a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Generous: catches hangs, does not measure speed.
const SETTLE: Duration = Duration::from_secs(180);

/// What one create (or scale) attempt came to.
#[derive(Clone, Debug)]
struct Attempt {
    name: String,
    /// When it started, from the start of the load.
    started: Duration,
    took: Duration,
    /// `None` when acknowledged (2xx); the status code (0: not a Status) and message if not.
    failure: Option<(u16, String)>,
}

/// What the watch saw.
#[derive(Default)]
struct Seen {
    /// ADDED events per ConfigMap name.
    added: BTreeMap<String, usize>,
    /// The `data.n` of each ADDED object.
    data: BTreeMap<String, String>,
    /// Any other event type (there are no updates or deletes of these ConfigMaps).
    other: Vec<String>,
    /// How often the watch request ended and was reopened at the last resourceVersion.
    reopened: usize,
    /// `410 Gone` answers (each followed by a relist).
    gone: usize,
    /// Names first seen in a relist after a 410 rather than in an event.
    relisted: BTreeSet<String>,
}

fn config_map(name: &str, writer: usize, n: usize) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "labels": { "load": "outage" } },
        "data": { "writer": writer.to_string(), "n": n.to_string() },
    }))
    .unwrap()
}

fn failure_of(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, format!("{} {}", status.reason, status.message)),
        other => (0, other.to_string()),
    }
}

/// Runs `request` under the client timeout; a timeout is recorded as code 0 "hang".
async fn timed<T>(
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> (Duration, Result<T, (u16, String)>) {
    let start = Instant::now();
    let result = match tokio::time::timeout(CLIENT_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(failure_of(error)),
        Err(_) => Err((0, format!("hang: no answer within {CLIENT_TIMEOUT:?}"))),
    };
    (start.elapsed(), result)
}

/// Creates ConfigMaps `w{writer}-{n}` until `stop`, recording every attempt.
async fn writer(
    api: Api<ConfigMap>,
    writer: usize,
    load_start: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("w{writer}-{n}");
        let started = load_start.elapsed();
        let (took, result) =
            timed(api.create(&PostParams::default(), &config_map(&name, writer, n))).await;
        attempts.push(Attempt {
            name,
            started,
            took,
            failure: result.err(),
        });
        n += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    attempts
}

/// Scales the Deployment between 12 and 28 replicas until `stop`.
async fn scaler(api: Api<Deployment>, load_start: Instant, stop: Arc<AtomicBool>) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut up = true;
    while !stop.load(Ordering::SeqCst) {
        let replicas = if up { 28 } else { 12 };
        up = !up;
        let started = load_start.elapsed();
        let patch = json!({ "spec": { "replicas": replicas } });
        let (took, result) =
            timed(api.patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))).await;
        attempts.push(Attempt {
            name: format!("scale to {replicas}"),
            started,
            took,
            failure: result.err(),
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    attempts
}

/// Watches the load's ConfigMaps from `resource_version` as a reflector does: reopens at the
/// last resourceVersion when a request ends, relists after a `410 Gone`.
async fn watch_config_maps(
    api: Api<ConfigMap>,
    mut resource_version: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let params = WatchParams::default().labels(LABEL).timeout(290);
    while !stop.load(Ordering::SeqCst) {
        let stream = match api.watch(&params, &resource_version).await {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("watch: cannot open at {resource_version}: {error}");
                if matches!(&error, kube::Error::Api(s) if s.code == 410) {
                    resource_version = relist(&api, &seen).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                seen.lock().unwrap().reopened += 1;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::SeqCst) { return; }
                    continue;
                }
            };
            match next {
                None => break,
                Some(Err(error)) => {
                    eprintln!("watch: stream error: {error}");
                    break;
                }
                Some(Ok(WatchEvent::Added(cm))) => {
                    let name = cm.metadata.name.clone().unwrap_or_default();
                    let n = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("n").cloned())
                        .unwrap_or_default();
                    let mut seen = seen.lock().unwrap();
                    *seen.added.entry(name.clone()).or_default() += 1;
                    seen.data.insert(name, n);
                    resource_version = cm.metadata.resource_version.unwrap_or_default();
                }
                Some(Ok(WatchEvent::Modified(cm))) | Some(Ok(WatchEvent::Deleted(cm))) => {
                    seen.lock()
                        .unwrap()
                        .other
                        .push(format!("{:?}", cm.metadata.name));
                    resource_version = cm.metadata.resource_version.unwrap_or_default();
                }
                Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                    resource_version = bookmark.metadata.resource_version;
                }
                Some(Ok(WatchEvent::Error(status))) => {
                    eprintln!("watch: error event {status:?}");
                    if status.code == 410 {
                        seen.lock().unwrap().gone += 1;
                        resource_version = relist(&api, &seen).await;
                    }
                    break;
                }
            }
        }
        seen.lock().unwrap().reopened += 1;
    }
}

/// What a watch on the Deployment's pods saw.
#[derive(Default)]
struct PodsSeen {
    /// Active (not terminating) pods now, by name.
    active: BTreeSet<String>,
    /// The most active pods at any time.
    most_active: usize,
    /// Pods ever added.
    created: usize,
    /// ADDED for a name that was already there.
    repeated: Vec<String>,
    /// Whether the watch had to give up (a 410): then the counts are incomplete.
    incomplete: bool,
}

/// Watches the pods of `app=web` from `resource_version`, counting the active ones.
async fn watch_pods(
    api: Api<Pod>,
    mut resource_version: String,
    seen: Arc<Mutex<PodsSeen>>,
    stop: Arc<AtomicBool>,
) {
    let params = WatchParams::default().labels("app=web").timeout(290);
    while !stop.load(Ordering::SeqCst) {
        let Ok(stream) = api.watch(&params, &resource_version).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::SeqCst) { return; }
                    continue;
                }
            };
            let mut seen = seen.lock().unwrap();
            match next {
                None | Some(Err(_)) => break,
                Some(Ok(WatchEvent::Added(pod))) => {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    seen.created += 1;
                    if pod.metadata.deletion_timestamp.is_none()
                        && !seen.active.insert(name.clone())
                    {
                        seen.repeated.push(name);
                    }
                    resource_version = pod.metadata.resource_version.unwrap_or_default();
                }
                Some(Ok(WatchEvent::Modified(pod))) => {
                    if pod.metadata.deletion_timestamp.is_some() {
                        seen.active
                            .remove(pod.metadata.name.as_deref().unwrap_or_default());
                    }
                    resource_version = pod.metadata.resource_version.unwrap_or_default();
                }
                Some(Ok(WatchEvent::Deleted(pod))) => {
                    seen.active
                        .remove(pod.metadata.name.as_deref().unwrap_or_default());
                    resource_version = pod.metadata.resource_version.unwrap_or_default();
                }
                Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                    resource_version = bookmark.metadata.resource_version;
                }
                Some(Ok(WatchEvent::Error(status))) => {
                    if status.code == 410 {
                        seen.incomplete = true;
                        return;
                    }
                    break;
                }
            }
            seen.most_active = seen.most_active.max(seen.active.len());
        }
    }
}

/// Lists the load's ConfigMaps after a 410 (retrying while the server is unavailable) and
/// records the names the watch had not seen; returns the list's resourceVersion.
async fn relist(api: &Api<ConfigMap>, seen: &Mutex<Seen>) -> String {
    loop {
        match api.list(&ListParams::default().labels(LABEL)).await {
            Ok(list) => {
                let mut seen = seen.lock().unwrap();
                for cm in list.items {
                    let name = cm.metadata.name.unwrap_or_default();
                    if !seen.added.contains_key(&name) {
                        seen.relisted.insert(name.clone());
                        seen.added.insert(name.clone(), 1);
                        let n = cm.data.and_then(|d| d.get("n").cloned());
                        seen.data.insert(name, n.unwrap_or_default());
                    }
                }
                return list.metadata.resource_version.unwrap_or_default();
            }
            Err(error) => {
                eprintln!("relist: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// A kube-rs client with the admin credentials that does not retry 503/504 by itself
/// (kube-rs's default does, hiding the outcome of each request from the test).
async fn client_without_retries(c: &Cluster) -> kube::Client {
    let text = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

/// Creates one ConfigMap outside the load until it is acknowledged (the server is back).
async fn wait_writable(c: &Cluster, api: &Api<ConfigMap>, what: &str) -> Duration {
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        let mut probe = config_map(&format!("probe-{what}-{attempt}"), 99, attempt);
        probe.metadata.labels = None;
        let (_, result) = timed(api.create(&PostParams::default(), &probe)).await;
        match result {
            Ok(_) => return start.elapsed(),
            Err(failure) if start.elapsed() < SETTLE => {
                eprintln!("{what}: not writable yet: {failure:?}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(failure) => panic!(
                "{what}: the server did not recover within {SETTLE:?}: {failure:?}; log:\n{}",
                c.log_tail(100)
            ),
        }
        attempt += 1;
    }
}

/// Creates the test namespace and in it the Deployment `web` of busybox pods.
async fn create_namespace_and_deployment(client: &kube::Client, replicas: i32) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": NAMESPACE } })).unwrap(),
        )
        .await
        .unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "app", "image": "busybox" }] },
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_write_lost_and_no_duplicate_pods_across_etcd_outages() {
    let etcd = etcd_server::EtcdServer::start();
    let endpoint = etcd.endpoint();
    let c = Cluster::start_with(&["--store", "etcd", "--etcd-endpoints", endpoint.as_str()]);
    let server_pid = c.pid();
    let client = client_without_retries(&c).await;

    create_namespace_and_deployment(&client, REPLICAS).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    wait_settled(&c, &deployments, &replica_sets, &pods, REPLICAS).await;

    // The watch starts before the outages, at the list's resourceVersion.
    let listed = config_maps
        .list(&ListParams::default().labels(LABEL))
        .await
        .unwrap();
    assert!(listed.items.is_empty());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_config_maps(
        config_maps.clone(),
        listed.metadata.resource_version.unwrap(),
        seen.clone(),
        stop_watch.clone(),
    ));

    // And one on the Deployment's pods, to see that no scale ever has more active pods than
    // the largest scale asked for (a create repeated after a failure would show).
    let pod_list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let pods_seen = Arc::new(Mutex::new(PodsSeen::default()));
    let stop_pods = Arc::new(AtomicBool::new(false));
    for pod in &pod_list.items {
        if pod.metadata.deletion_timestamp.is_none() {
            let name = pod.metadata.name.clone().unwrap();
            pods_seen.lock().unwrap().active.insert(name);
        }
    }
    let pod_watcher = tokio::spawn(watch_pods(
        pods.clone(),
        pod_list.metadata.resource_version.unwrap(),
        pods_seen.clone(),
        stop_pods.clone(),
    ));

    // The load.
    let load_start = Instant::now();
    let stop_load = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            tokio::spawn(writer(
                config_maps.clone(),
                i,
                load_start,
                stop_load.clone(),
            ))
        })
        .collect();
    let scaling = tokio::spawn(scaler(deployments.clone(), load_start, stop_load.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Outage 1: etcd killed for 4 s, then started again on the same data dir.
    let killed_at = load_start.elapsed();
    tokio::task::block_in_place(|| etcd.kill());
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::task::block_in_place(|| etcd.restart());
    let restarted_at = load_start.elapsed();
    let recovery_after_kill = wait_writable(&c, &config_maps, "after-kill").await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Outage 2: etcd frozen for 8 s (longer than the server's 5 s etcd timeout), then thawed.
    let paused_at = load_start.elapsed();
    tokio::task::block_in_place(|| etcd.pause());
    tokio::time::sleep(Duration::from_secs(8)).await;
    etcd.resume();
    let resumed_at = load_start.elapsed();
    let recovery_after_pause = wait_writable(&c, &config_maps, "after-pause").await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Outage 3: etcd frozen for 20 s, past the HTTP/2 keepalive (a ping after 10 s without
    // traffic, 5 s for its answer): the server drops the connection and its watches, and
    // reconnects once etcd is back.
    let long_paused_at = load_start.elapsed();
    tokio::task::block_in_place(|| etcd.pause());
    tokio::time::sleep(Duration::from_secs(20)).await;
    etcd.resume();
    let long_resumed_at = load_start.elapsed();
    let recovery_after_long_pause = wait_writable(&c, &config_maps, "after-long-pause").await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    stop_load.store(true, Ordering::SeqCst);
    let mut creates = Vec::new();
    for w in writers {
        creates.extend(w.await.unwrap());
    }
    let scales = scaling.await.unwrap();
    eprintln!(
        "load: killed at {killed_at:?}, restarted at {restarted_at:?} (writable again {recovery_after_kill:?} later); \
         paused at {paused_at:?}, resumed at {resumed_at:?} (writable again {recovery_after_pause:?} later); \
         paused at {long_paused_at:?}, resumed at {long_resumed_at:?} (writable again {recovery_after_long_pause:?} later)"
    );

    // Every failure was a 503/504 Status, answered before the client's timeout.
    let report = |what: &str, attempts: &[Attempt], from: Duration, to: Duration| {
        let failed: Vec<&Attempt> = attempts
            .iter()
            .filter(|a| a.failure.is_some() && a.started < to && a.started + a.took >= from)
            .collect();
        let mut took: Vec<Duration> = failed.iter().map(|a| a.took).collect();
        took.sort();
        let codes: BTreeMap<u16, usize> = failed.iter().fold(BTreeMap::new(), |mut codes, a| {
            *codes.entry(a.failure.as_ref().unwrap().0).or_default() += 1;
            codes
        });
        eprintln!(
            "{what}: {} failed, codes {codes:?}, latency min {:?} median {:?} max {:?}",
            failed.len(),
            took.first(),
            took.get(took.len() / 2),
            took.last()
        );
        took
    };
    let all: Vec<Attempt> = creates.iter().chain(scales.iter()).cloned().collect();
    let acknowledged: Vec<&Attempt> = creates.iter().filter(|a| a.failure.is_none()).collect();
    eprintln!(
        "creates: {} attempted, {} acknowledged; scales: {} attempted, {} acknowledged",
        creates.len(),
        acknowledged.len(),
        scales.len(),
        scales.iter().filter(|a| a.failure.is_none()).count()
    );
    for attempt in all
        .iter()
        .filter(|a| a.failure.is_some() && a.started + a.took >= paused_at)
    {
        eprintln!("failed around a freeze: {attempt:?}");
    }
    let killed_latency = report("while killed", &all, killed_at, restarted_at);
    let paused_latency = report("while frozen", &all, paused_at, resumed_at);
    let long_paused_latency = report(
        "while frozen past the keepalive",
        &all,
        long_paused_at,
        long_resumed_at,
    );
    for attempt in &all {
        if let Some((code, message)) = &attempt.failure {
            assert!(
                matches!(code, 503 | 504),
                "{} at {:?} failed with {code} {message} (not a 503/504 Status); log:\n{}",
                attempt.name,
                attempt.started,
                c.log_tail(100)
            );
            let slack = Duration::from_secs(1);
            let outages = [
                (killed_at, restarted_at + recovery_after_kill + slack),
                (paused_at, resumed_at + recovery_after_pause + slack),
                (
                    long_paused_at,
                    long_resumed_at + recovery_after_long_pause + slack,
                ),
            ];
            assert!(
                outages
                    .iter()
                    .any(|(from, to)| attempt.started < *to
                        && attempt.started + attempt.took >= *from),
                "{} failed outside the outages: {attempt:?}",
                attempt.name
            );
        }
    }
    assert!(
        !killed_latency.is_empty() && !paused_latency.is_empty() && !long_paused_latency.is_empty(),
        "the load hit every outage"
    );
    // A dead etcd is noticed fast (refused connections): 503 ServiceUnavailable at once.
    for attempt in all.iter().filter(|a| {
        a.failure.is_some() && a.started >= killed_at && a.started + a.took < restarted_at
    }) {
        let (code, message) = attempt.failure.as_ref().unwrap();
        assert_eq!(*code, 503, "{attempt:?}");
        assert!(message.starts_with("ServiceUnavailable"), "{attempt:?}");
        assert!(
            attempt.took < Duration::from_secs(2),
            "not fast: {attempt:?}"
        );
    }
    assert!(killed_latency[killed_latency.len() / 2] < Duration::from_secs(1));
    // A frozen one after the server's etcd request timeout (5 s): 504 Timeout.
    let frozen: Vec<&Attempt> = all
        .iter()
        .filter(|a| {
            a.failure.is_some()
                && a.started + a.took >= paused_at
                && a.started + Duration::from_secs(6) < resumed_at
        })
        .collect();
    assert!(!frozen.is_empty(), "no request ran into the frozen etcd");
    for attempt in frozen {
        let (code, message) = attempt.failure.as_ref().unwrap();
        assert_eq!(*code, 504, "{attempt:?}");
        assert!(message.starts_with("Timeout"), "{attempt:?}");
        assert!(
            attempt.took >= Duration::from_millis(4500),
            "faster than the server's timeout: {attempt:?}"
        );
    }

    // The same server process serves again, and never panicked.
    assert_eq!(c.pid(), server_pid);
    assert!(
        std::path::Path::new(&format!("/proc/{server_pid}")).exists(),
        "nodeless exited"
    );
    let log = c.log();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert!(
        panics.is_empty(),
        "the server panicked:\n{}",
        panics.join("\n")
    );

    // Every acknowledged create exists with its data.
    let stored: BTreeMap<String, ConfigMap> = config_maps
        .list(&ListParams::default().labels(LABEL))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cm| (cm.metadata.name.clone().unwrap(), cm))
        .collect();
    for attempt in &acknowledged {
        let cm = stored
            .get(&attempt.name)
            .unwrap_or_else(|| panic!("acknowledged {} is lost: {attempt:?}", attempt.name));
        let n = attempt.name.rsplit('-').next().unwrap();
        assert_eq!(cm.data.as_ref().unwrap()["n"], n, "{}", attempt.name);
    }
    let unacknowledged_but_stored = stored
        .keys()
        .filter(|name| !acknowledged.iter().any(|a| &a.name == *name))
        .inspect(|name| {
            let attempt = creates.iter().find(|a| &a.name == *name);
            eprintln!("failed but applied: {attempt:?}");
        })
        .count();
    eprintln!(
        "stored: {} (of which {unacknowledged_but_stored} failed with 503/504 but were applied)",
        stored.len()
    );

    // The watch saw every acknowledged ConfigMap (and everything stored) exactly once.
    let deadline = Instant::now() + SETTLE;
    loop {
        let complete = {
            let seen = seen.lock().unwrap();
            stored.keys().all(|name| seen.added.contains_key(name))
        };
        if complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watch did not catch up; missing: {:?}",
            stored
                .keys()
                .filter(|n| !seen.lock().unwrap().added.contains_key(*n))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_watch.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    {
        let seen = seen.lock().unwrap();
        eprintln!(
            "watch: {} ConfigMaps seen, reopened {} times, {} x 410 Gone, {} names from relists",
            seen.added.len(),
            seen.reopened,
            seen.gone,
            seen.relisted.len()
        );
        let repeated: Vec<_> = seen.added.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "repeated ADDED events: {repeated:?}");
        assert!(seen.other.is_empty(), "unexpected events: {:?}", seen.other);
        let phantom: Vec<_> = seen
            .added
            .keys()
            .filter(|name| !stored.contains_key(*name))
            .collect();
        assert!(phantom.is_empty(), "seen but not stored: {phantom:?}");
        for (name, cm) in &stored {
            assert_eq!(
                Some(&cm.data.as_ref().unwrap()["n"]),
                seen.data.get(name),
                "{name}"
            );
        }
    }

    // The Deployment settles with exactly its replicas and no duplicate pods.
    let patch = json!({ "spec": { "replicas": REPLICAS } });
    deployments
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_settled(&c, &deployments, &replica_sets, &pods, REPLICAS).await;
    stop_pods.store(true, Ordering::SeqCst);
    pod_watcher.await.unwrap();
    let pods_seen = pods_seen.lock().unwrap();
    eprintln!(
        "pods: {} created during the test, at most {} active at once (scales between 12 and 28), {} active at the end{}",
        pods_seen.created,
        pods_seen.most_active,
        pods_seen.active.len(),
        if pods_seen.incomplete { " (the pod watch got a 410: counts incomplete)" } else { "" }
    );
    assert!(
        pods_seen.repeated.is_empty(),
        "pods added twice: {:?}",
        pods_seen.repeated
    );
    assert!(
        pods_seen.most_active <= 28,
        "{} active pods at once: more than the largest scale (a duplicate create)",
        pods_seen.most_active
    );
    assert_eq!(pods_seen.active.len(), REPLICAS as usize);
    drop(etcd);
}

/// Waits until the Deployment `web` and its ReplicaSets report `replicas` available pods and
/// exactly that many active pods exist, owned by its ReplicaSets, each name once; then checks
/// that this holds a few seconds later too (no late duplicates).
async fn wait_settled(
    c: &Cluster,
    deployments: &Api<Deployment>,
    replica_sets: &Api<ReplicaSet>,
    pods: &Api<Pod>,
    replicas: i32,
) {
    let deadline = Instant::now() + SETTLE;
    let mut stable_since: Option<Instant> = None;
    loop {
        let state = settled_state(deployments, replica_sets, pods, replicas).await;
        match state {
            Ok(()) => {
                let since = *stable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(3) {
                    return;
                }
            }
            Err(why) => {
                stable_since = None;
                assert!(
                    Instant::now() < deadline,
                    "the Deployment did not settle at {replicas}: {why}; log:\n{}",
                    c.log_tail(100)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn settled_state(
    deployments: &Api<Deployment>,
    replica_sets: &Api<ReplicaSet>,
    pods: &Api<Pod>,
    replicas: i32,
) -> Result<(), String> {
    let deployment = deployments.get("web").await.map_err(|e| e.to_string())?;
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation
        || deployment.spec.as_ref().and_then(|s| s.replicas) != Some(replicas)
        || status.replicas != Some(replicas)
        || status.updated_replicas != Some(replicas)
        || status.ready_replicas != Some(replicas)
        || status.available_replicas != Some(replicas)
        || status.unavailable_replicas.unwrap_or(0) != 0
    {
        return Err(format!("deployment status {status:?}"));
    }
    let uid = deployment.metadata.uid.clone().unwrap_or_default();
    let owned_sets: Vec<ReplicaSet> = replica_sets
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    // The template never changes: one ReplicaSet, with every replica.
    if owned_sets.len() != 1 {
        return Err(format!("{} ReplicaSets", owned_sets.len()));
    }
    let rs = &owned_sets[0];
    let rs_status = rs.status.clone().unwrap_or_default();
    if rs.spec.as_ref().and_then(|s| s.replicas) != Some(replicas)
        || rs_status.replicas != replicas
        || rs_status.ready_replicas != Some(replicas)
        || rs_status.available_replicas != Some(replicas)
        || rs_status.observed_generation < rs.metadata.generation
    {
        return Err(format!("replica set status {rs_status:?}"));
    }
    let rs_uid = rs.metadata.uid.clone().unwrap_or_default();
    let all_pods = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items;
    let mut names = BTreeSet::new();
    let mut owned = 0;
    for pod in &all_pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if !names.insert(name.clone()) {
            return Err(format!("pod {name} listed twice"));
        }
        let controlled_by_rs = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == rs_uid && o.controller == Some(true));
        if controlled_by_rs && pod.metadata.deletion_timestamp.is_none() {
            owned += 1;
        }
    }
    if owned != replicas {
        return Err(format!(
            "{owned} active pods owned by the ReplicaSet ({} pods in all)",
            all_pods.len()
        ));
    }
    Ok(())
}

/// A scale-up whose pod creates run into a frozen etcd: creates that timed out (504) but were
/// applied after the thaw must not leave the ReplicaSet with extra pods, even for a moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scale_up_through_a_frozen_etcd_creates_no_extra_pods() {
    const TARGET: i32 = 120;
    let etcd = etcd_server::EtcdServer::start();
    let endpoint = etcd.endpoint();
    let c = Cluster::start_with(&["--store", "etcd", "--etcd-endpoints", endpoint.as_str()]);
    let client = client_without_retries(&c).await;
    create_namespace_and_deployment(&client, 1).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    wait_settled(&c, &deployments, &replica_sets, &pods, 1).await;
    let pod_list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let pods_seen = Arc::new(Mutex::new(PodsSeen::default()));
    pods_seen.lock().unwrap().active = pod_list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let pod_watcher = tokio::spawn(watch_pods(
        pods.clone(),
        pod_list.metadata.resource_version.unwrap(),
        pods_seen.clone(),
        stop.clone(),
    ));

    let patch = json!({ "spec": { "replicas": TARGET } });
    deployments
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // The ReplicaSet controller creates pods in batches (1, 2, 4, ...): freeze etcd while
    // it is at it.
    eventually_async(&c, "the scale-up under way", || async {
        let created = pods_seen.lock().unwrap().created;
        created >= 17
    })
    .await;
    let created_before = pods_seen.lock().unwrap().created;
    tokio::task::block_in_place(|| etcd.pause());
    tokio::time::sleep(Duration::from_secs(8)).await;
    etcd.resume();
    wait_settled(&c, &deployments, &replica_sets, &pods, TARGET).await;
    let timeouts = c
        .log()
        .lines()
        .filter(|l| l.contains("did not answer"))
        .count();
    eprintln!("{created_before} pods created before the freeze; {timeouts} log lines of timeouts");
    stop.store(true, Ordering::SeqCst);
    pod_watcher.await.unwrap();
    let seen = pods_seen.lock().unwrap();
    eprintln!(
        "pods: {} created for a scale from 1 to {TARGET}, at most {} active at once{}",
        seen.created,
        seen.most_active,
        if seen.incomplete { " (incomplete)" } else { "" }
    );
    assert!(seen.repeated.is_empty(), "{:?}", seen.repeated);
    assert!(
        seen.most_active <= TARGET as usize,
        "{} active pods at once for {TARGET} replicas; log:\n{}",
        seen.most_active,
        c.log_tail(100)
    );
    drop(etcd);
}

/// Polls an async check every 100 ms for up to a minute.
async fn eventually_async<F, Fut>(c: &Cluster, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            c.log_tail(100)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
