//! API benchmark (not a test): the real binary on loopback, driven by kube-rs.
//! Prints creates/s (sequential and 16 concurrent clients), gets/s, the latency of a
//! 1000-object list, and the latency from a write to its watch event.
//!
//! Runs on SQLite and, when an etcd binary is installed, on etcd in the same run, and prints
//! the ratios etcd/SQLite.
//!
//! Run: `cargo bench -p nodeless --bench api_bench`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::Client;
use serde_json::json;

#[path = "../../store/tests/support/etcd_server.rs"]
mod etcd_server;

/// The figures of one run.
struct Figures {
    /// Seconds until a 1000-replica Deployment is fully available, and until its pods are gone.
    deploy_available_s: f64,
    deploy_deleted_s: f64,
    /// Seconds until a Job of 500 completions (parallelism 50) completes.
    job_s: f64,
    /// The server's peak resident memory, MiB.
    peak_rss_mib: f64,
    creates_seq: f64,
    creates_par: f64,
    gets: f64,
    list_p50_ms: f64,
    watch_p50_ms: f64,
    watch_p99_ms: f64,
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name, "labels": { "bench": "yes" } },
        "data": { "payload": "x".repeat(512) },
    }))
    .expect("configmap")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let sqlite = run(&[]).await;
    print("sqlite", &sqlite);
    if etcd_server::etcd_binary().is_some() {
        let etcd = etcd_server::EtcdServer::start();
        let endpoint = etcd.endpoint();
        let on_etcd = run(&["--store", "etcd", "--etcd-endpoints", &endpoint]).await;
        print("etcd", &on_etcd);
        println!("etcd/sqlite ratios (rates: >1 means etcd is faster; latencies: >1 means etcd is slower)");
        println!(
            "  creates/s sequential        {:>10.2}",
            on_etcd.creates_seq / sqlite.creates_seq
        );
        println!(
            "  creates/s 16 concurrent     {:>10.2}",
            on_etcd.creates_par / sqlite.creates_par
        );
        println!(
            "  gets/s sequential           {:>10.2}",
            on_etcd.gets / sqlite.gets
        );
        println!(
            "  list of 1000 p50            {:>10.2}",
            on_etcd.list_p50_ms / sqlite.list_p50_ms
        );
        println!(
            "  create -> watch p50         {:>10.2}",
            on_etcd.watch_p50_ms / sqlite.watch_p50_ms
        );
        println!(
            "  deployment of 1000 available {:>9.2}",
            on_etcd.deploy_available_s / sqlite.deploy_available_s
        );
    } else {
        println!("(no etcd binary: install etcd-server for the etcd figures)");
    }
}

fn print(store: &str, f: &Figures) {
    println!("nodeless API on {store} (kube-rs client, loopback HTTPS, 512-byte configmaps)");
    println!("  creates/s sequential        {:>10.0}", f.creates_seq);
    println!("  creates/s 16 concurrent     {:>10.0}", f.creates_par);
    println!("  gets/s sequential           {:>10.0}", f.gets);
    println!("  list of 1000 objects p50    {:>10.2} ms", f.list_p50_ms);
    println!(
        "  create -> watch event       p50 {:>7.2} ms  p99 {:>7.2} ms",
        f.watch_p50_ms, f.watch_p99_ms
    );
    println!(
        "  deployment of 1000 available {:>9.1} s  ({:.0} pods/s), deleted in {:.1} s",
        f.deploy_available_s,
        1000.0 / f.deploy_available_s,
        f.deploy_deleted_s
    );
    println!("  job of 500 (parallelism 50)  {:>9.1} s", f.job_s);
    println!("  server peak RSS             {:>10.0} MiB", f.peak_rss_mib);
}

/// Peak resident memory of a process (VmHWM), MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Polls `done` every 100 ms until it holds (10 minutes at most); returns the seconds taken.
async fn time_until<F, Fut>(mut done: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "gave up after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed().as_secs_f64()
}

/// The workload figures: a 1000-replica Deployment (available, then deleted) and a
/// 500-completion Job with parallelism 50.
async fn workloads(client: &Client) -> (f64, f64, f64) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "bench" },
        "spec": {
            "replicas": 1000,
            "selector": { "matchLabels": { "app": "bench" } },
            "template": { "metadata": { "labels": { "app": "bench" } }, "spec": { "containers": [{ "name": "a", "image": "busybox" }] } },
        },
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create deployment");
    let available = time_until(|| async {
        deployments
            .get_status("bench")
            .await
            .ok()
            .and_then(|d| d.status)
            .and_then(|s| s.available_replicas)
            == Some(1000)
    })
    .await;
    deployments
        .delete("bench", &Default::default())
        .await
        .expect("delete");
    let deleted = time_until(|| async {
        pods.list_metadata(&ListParams::default().labels("app=bench").limit(1))
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false)
    })
    .await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "bench-job" },
        "spec": {
            "completions": 500, "parallelism": 50,
            "template": {
                "metadata": { "annotations": { "sim.nodeless.io/run-seconds": "0" } },
                "spec": { "restartPolicy": "Never", "containers": [{ "name": "a", "image": "busybox" }] },
            },
        },
    }))
    .expect("job");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create job");
    let job_s = time_until(|| async {
        jobs.get_status("bench-job")
            .await
            .ok()
            .and_then(|j| j.status)
            .and_then(|s| s.succeeded)
            == Some(500)
    })
    .await;
    (available, deleted, job_s)
}

async fn run(extra: &[&str]) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodeless"))
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--runtime", "simulated"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nodeless");
    let kubeconfig = dir.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&text).expect("yaml"),
        &Default::default(),
    )
    .await
    .expect("config");
    let client = Client::try_from(config).expect("client");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // Wait until it answers.
    while api.list(&ListParams::default().limit(1)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let n = 500;
    let start = Instant::now();
    for i in 0..n {
        api.create(&PostParams::default(), &cm(&format!("seq-{i}")))
            .await
            .expect("create");
    }
    let seq = n as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let per = 32;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    api.create(&PostParams::default(), &cm(&format!("par-{t}-{i}")))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let par = (16 * per) as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    for i in 0..n {
        api.get(&format!("seq-{i}")).await.expect("get");
    }
    let gets = n as f64 / start.elapsed().as_secs_f64();

    // Top up to 1000 objects and time the full list.
    for i in 0..(1000 - n - 16 * per) {
        api.create(&PostParams::default(), &cm(&format!("fill-{i}")))
            .await
            .expect("create");
    }
    let mut lists = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let list = api.list(&ListParams::default()).await.expect("list");
        lists.push(start.elapsed());
        assert!(list.items.len() >= 1000);
    }
    lists.sort();

    // Write-to-watch latency.
    let rv = api
        .list(&ListParams::default().limit(1))
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut stream = api
        .watch(&WatchParams::default().labels("watch=me"), &rv)
        .await
        .expect("watch")
        .boxed();
    let mut latencies = Vec::new();
    for i in 0..100 {
        let mut obj = cm(&format!("w-{i}"));
        obj.metadata.labels = Some([("watch".to_string(), "me".to_string())].into());
        let start = Instant::now();
        api.create(&PostParams::default(), &obj)
            .await
            .expect("create");
        loop {
            match stream.next().await {
                Some(Ok(WatchEvent::Added(o)))
                    if o.metadata.name.as_deref() == Some(&format!("w-{i}")) =>
                {
                    break
                }
                Some(Ok(_)) => continue,
                other => panic!("watch ended: {other:?}"),
            }
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();

    let (deploy_available_s, deploy_deleted_s, job_s) = workloads(&client).await;
    let peak = peak_rss_mib(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    Figures {
        deploy_available_s,
        deploy_deleted_s,
        job_s,
        peak_rss_mib: peak,
        creates_seq: seq,
        creates_par: par,
        gets,
        list_p50_ms: percentile(&lists, 0.5).as_secs_f64() * 1e3,
        watch_p50_ms: percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        watch_p99_ms: percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    }
}
