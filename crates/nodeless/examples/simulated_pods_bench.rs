//! Benchmark (not a test): 1000 pods on the simulated runtime.
//!
//! `cargo build -p nodeless --release --examples && target/release/examples/simulated_pods_bench [COUNT]`
//!
//! Starts `nodeless up --runtime simulated` (the binary next to this example's directory, or
//! `$NODELESS_BIN`) on a fresh data dir, creates COUNT pods (default 1000) through kube-rs,
//! and prints the time until all are Running, the time until all are deleted, and the
//! server's peak RSS.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::json;

fn nodeless_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NODELESS_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("nodeless"))
        .unwrap_or_else(|| PathBuf::from("nodeless"))
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How many pods are bound to a node, and how many are Running.
async fn progress(pods: &Api<Pod>) -> (usize, usize) {
    match pods.list(&ListParams::default()).await {
        Ok(list) => {
            let bound = list
                .items
                .iter()
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_some()
                })
                .count();
            let running = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (bound, running)
        }
        Err(_) => (0, 0),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir()?;
    let log = std::fs::File::create(dir.path().join("nodeless.log"))?;
    let mut child = Command::new(nodeless_binary())
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--runtime", "simulated"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        if Instant::now() > deadline {
            return Err("nodeless did not write its kubeconfig".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&text)?,
        &Default::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    while nodes
        .list(&ListParams::default())
        .await
        .map(|l| l.items.is_empty())
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let revision = |list: kube::core::ObjectList<Pod>| {
        list.metadata
            .resource_version
            .and_then(|rv| rv.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let first_revision = revision(pods.list(&ListParams::default()).await?);
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": format!("bench-{i}")},
                    "spec": {"containers": [{"name": "app", "image": "busybox",
                        "resources": {"limits": {"cpu": "250m", "memory": "256Mi"}}}]},
                }))
                .expect("a valid pod");
                if let Err(e) = pods.create(&PostParams::default(), &pod).await {
                    eprintln!("creating bench-{i}: {e}");
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let created = started.elapsed();
    let mut all_bound = None;
    loop {
        let (bound, n) = progress(&pods).await;
        if bound >= count && all_bound.is_none() {
            all_bound = Some(started.elapsed());
        }
        if n >= count {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            eprintln!("only {n}/{count} pods Running after 10 minutes");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_running = started.elapsed();
    let writes = revision(pods.list(&ListParams::default()).await?) - first_revision;

    let deleting = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        if deleting.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_deleted = deleting.elapsed();
    let rss = peak_rss_kib(child.id()).unwrap_or(0);
    println!("pods:              {count}");
    println!("created in:        {:.2} s", created.as_secs_f64());
    if let Some(bound) = all_bound {
        println!("all bound after:   {:.2} s", bound.as_secs_f64());
    }
    println!(
        "all Running after: {:.2} s ({:.0} pods/s)",
        all_running.as_secs_f64(),
        count as f64 / all_running.as_secs_f64()
    );
    println!("store writes until then: {writes}");
    println!("all deleted after: {:.2} s", all_deleted.as_secs_f64());
    println!("server peak RSS:   {} MiB", rss / 1024);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    Ok(())
}
