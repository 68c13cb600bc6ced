//! Benchmark (not a test): seconds from `kubectl create` to `Running` for pods whose image is
//! cached, on `nodeless up --runtime containerd`, next to a bare `ctr run -d` of the same
//! image on a containerd of its own, in the same run. Prints median, p99 and their ratio for
//! two series: back to back (each start overlapping what the previous one left running,
//! the sandbox pool's refill among it) and spaced (each start on a machine at rest).
//!
//! `cargo bench -p nodeless --bench pod_start_bench` (as root; `NODELESS_BENCH_PODS`
//! sets how many pods per series, default 30; `NODELESS_BENCH_PAUSE_MS` the pause before
//! each sample of the spaced series, default 500; `NODELESS_BENCH_SANDBOX_POOL` is passed to `nodeless up`
//! as `--sandbox-pool`; `NODELESS_BENCH_RUST_LOG` is its `RUST_LOG`, default `info`, the
//! log going to /tmp/pod_start_bench.log; `NODELESS_BENCH_VERBOSE=1` prints every sample with
//! its wall-clock start, to set beside that log and containerd's, which it copies to
//! /tmp/pod_start_bench.containerd.log). Besides create -> Running it prints the part
//! until the pod is bound to the node (scheduling) and the part after (the agent), and the
//! CPU time the machine, nodeless and containerd used per sample.
//!
//! The kubectl is the one the e2e tests run (the newest of Google Cloud SDK's versioned
//! binaries, `kubectl.1.33`), with its default flags; `NODELESS_BENCH_KUBECTL` names another.
//! `kubectl` on this machine's PATH is the SDK's version dispatcher, a separate Go program
//! that spends 50-100 ms choosing and then execs the same binary: not kubectl's own time,
//! and not ours (`NODELESS_BENCH_KUBECTL=kubectl` measures it).

#[path = "../tests/common/registry.rs"]
#[allow(dead_code)]
mod registry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kube::runtime::wait::{conditions, Condition};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::Notify;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    (percentile(&samples, 50.0), percentile(&samples, 99.0))
}

fn pod_manifest(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": "busybox",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}
            }]
        }
    })
    .to_string()
}

/// The kubectl to time: `NODELESS_BENCH_KUBECTL`, else the e2e tests' newest, else `kubectl`.
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("NODELESS_BENCH_KUBECTL") {
        return PathBuf::from(path);
    }
    ["1.33", "1.32"]
        .iter()
        .map(|v| PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}")))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// The `nodeless` to run: `CARGO_BIN_EXE_nodeless` from the environment (a copy of a
/// build, which another build cannot replace during the run), else the one built with the
/// bench.
fn nodeless_binary() -> PathBuf {
    std::env::var_os("CARGO_BIN_EXE_nodeless")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nodeless")))
}

/// The two series of samples, each run bare and ours: back to back (each start overlapping
/// what the previous one left running, such as the sandbox pool's refill), and spaced by
/// `NODELESS_BENCH_PAUSE_MS` (default 500: each start on a machine at rest).
fn series() -> [(&'static str, Duration); 2] {
    let ms = std::env::var("NODELESS_BENCH_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    [
        ("back to back", Duration::ZERO),
        ("spaced", Duration::from_millis(ms)),
    ]
}

/// CPU seconds the whole machine has been busy (all but idle and iowait), from /proc/stat.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / clock_ticks_per_second()
}

/// CPU seconds (user and system) process `pid` has used.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or_default();
    let fields: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    fields.iter().sum::<f64>() / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU used while the samples ran, per sample (milliseconds).
#[derive(Clone, Copy, Debug, Default)]
struct CpuPerSample {
    machine: f64,
    nodeless: f64,
    containerd: f64,
}

async fn client_for(kubeconfig: &Path) -> Client {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&text).expect("yaml"),
        &Default::default(),
    )
    .await
    .expect("config");
    Client::try_from(config).expect("client")
}

/// One pod's start: seconds from `kubectl create` until the pod is bound to the node, and
/// until the API shows it Running.
#[derive(Clone, Copy, Debug)]
struct PodStart {
    /// kubectl exited (the pod is created).
    created: f64,
    bound: f64,
    running: f64,
}

type BoundAndRunning = (Option<Instant>, Option<Instant>);

/// When each pod of the namespace was first seen bound and Running, from one watch kept
/// for the whole run (a watch per pod would add a list and a watch request to the server's
/// work in every sample).
#[derive(Clone, Default)]
struct PodTimes {
    /// By pod name: when it was first seen bound, and Running.
    seen: Arc<Mutex<HashMap<String, BoundAndRunning>>>,
    changed: Arc<Notify>,
}

impl PodTimes {
    /// Watches the pods of `api` until the returned task is aborted.
    fn watch(api: Api<Pod>) -> (Self, tokio::task::JoinHandle<()>) {
        let times = Self::default();
        let recorder = times.clone();
        let task = tokio::spawn(async move {
            let pods = watcher(api, watcher::Config::default()).applied_objects();
            futures::pin_mut!(pods);
            while let Some(next) = pods.next().await {
                let Ok(pod) = next else { continue };
                recorder.record(&pod, Instant::now());
            }
        });
        (times, task)
    }

    fn record(&self, pod: &Pod, now: Instant) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
        let running = conditions::is_pod_running().matches_object(Some(pod));
        if let Ok(mut seen) = self.seen.lock() {
            let entry = seen.entry(name).or_default();
            if bound && entry.0.is_none() {
                entry.0 = Some(now);
            }
            if running && entry.1.is_none() {
                entry.1 = Some(now);
            }
        }
        self.changed.notify_waiters();
    }

    /// When pod `name` was seen bound and Running, once it was.
    async fn running(&self, name: &str) -> (Instant, Instant) {
        loop {
            let changed = self.changed.notified();
            let times = self
                .seen
                .lock()
                .ok()
                .and_then(|seen| seen.get(name).copied());
            if let Some((Some(bound), Some(running))) = times {
                return (bound, running);
            }
            changed.await;
        }
    }
}

/// Creates a pod with kubectl and returns when it was bound and when the API showed it
/// Running.
async fn time_pod(times: &PodTimes, kubeconfig: &Path, dir: &Path, name: &str) -> PodStart {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, pod_manifest(name)).expect("manifest");
    let start = Instant::now();
    let wall_start = std::time::SystemTime::now();
    let status = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["create", "-f"])
        .arg(&file)
        .stdout(Stdio::null())
        .status()
        .expect("kubectl");
    assert!(status.success(), "kubectl create {name}");
    let created = start.elapsed().as_secs_f64();
    let (bound_at, running_at) = tokio::time::timeout(Duration::from_secs(60), times.running(name))
        .await
        .expect("pod running in time");
    let sample = PodStart {
        created,
        bound: bound_at.duration_since(start).as_secs_f64(),
        running: running_at.duration_since(start).as_secs_f64(),
    };
    if std::env::var_os("NODELESS_BENCH_VERBOSE").is_some() {
        let since_epoch = wall_start
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        println!(
            "{name}: kubectl started at {since_epoch:.4} (unix), exited +{:.4} s, bound +{:.4} s, Running +{:.4} s",
            sample.created, sample.bound, sample.running
        );
    }
    sample
}

/// The benchmarked `nodeless up`: stopped with SIGTERM (its sandboxes with it) when dropped,
/// also when the benchmark panics, so that no cluster outlives the run.
struct Server {
    child: std::process::Child,
    bridge: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Each series' samples (ours) and the CPU they used.
async fn nodeless_pods(
    n: usize,
    registry: &registry::Registry,
) -> Vec<(Vec<PodStart>, CpuPerSample)> {
    let dir = tempfile::tempdir().expect("tempdir");
    // A bridge of this run's own: a cluster of another run never loses its network to us.
    let bridge = format!("nlb{}", std::process::id() % 1_000_000);
    let child = Command::new(nodeless_binary())
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--runtime", "containerd"])
        .args(["--bridge-name", &bridge, "--pod-cidr", "10.99.0.0/24"])
        .arg("--registry-mirror")
        .arg(format!("docker.io=http://{}", registry.host()))
        .args(
            std::env::var("NODELESS_BENCH_SANDBOX_POOL")
                .ok()
                .map(|depth| vec!["--sandbox-pool".to_string(), depth])
                .unwrap_or_default(),
        )
        .env(
            "RUST_LOG",
            std::env::var("NODELESS_BENCH_RUST_LOG").unwrap_or_else(|_| "info".to_string()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create("/tmp/pod_start_bench.log").expect("log"))
        .spawn()
        .expect("start nodeless");
    let server = Server { child, bridge };
    let kubeconfig = dir.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = client_for(&kubeconfig).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (times, watch) = PodTimes::watch(api.clone());
    // The node registers, the image gets cached.
    let mut warm = None;
    for _ in 0..200 {
        if let Ok(nodes) = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
            .list(&Default::default())
            .await
        {
            if !nodes.items.is_empty() {
                warm = Some(time_pod(&times, &kubeconfig, dir.path(), "warm").await);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "first pod (pulls the image): {:.3} s",
        warm.expect("the node registered").running
    );
    let nodeless_pid = server.child.id();
    let containerd_pid = pid_in(&dir.path().join("containerd/containerd.pid"));
    let mut all = Vec::new();
    for (series, (_, pause)) in series().into_iter().enumerate() {
        let before = (
            machine_busy_seconds(),
            process_cpu_seconds(nodeless_pid),
            containerd_pid.map(process_cpu_seconds).unwrap_or_default(),
        );
        let mut samples = Vec::new();
        for i in 0..n {
            tokio::time::sleep(pause).await;
            let name = format!("bench-{series}-{i}");
            samples.push(time_pod(&times, &kubeconfig, dir.path(), &name).await);
        }
        let per_sample = |after: f64, before: f64| (after - before) * 1000.0 / n.max(1) as f64;
        let cpu = CpuPerSample {
            machine: per_sample(machine_busy_seconds(), before.0),
            nodeless: per_sample(process_cpu_seconds(nodeless_pid), before.1),
            containerd: per_sample(
                containerd_pid.map(process_cpu_seconds).unwrap_or_default(),
                before.2,
            ),
        };
        all.push((samples, cpu));
    }
    watch.abort();
    let _ = api
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await;
    for _ in 0..600 {
        match api.list(&Default::default()).await {
            Ok(list) if list.items.is_empty() => break,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    drop(server);
    if std::env::var_os("NODELESS_BENCH_VERBOSE").is_some() {
        let log = dir.path().join("containerd/containerd.log");
        let _ = std::fs::copy(log, "/tmp/pod_start_bench.containerd.log");
    }
    all
}

fn ctr(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "bench"])
        .args(args)
        .output()
        .expect("ctr")
}

/// Each series' samples (bare `ctr run -d`) and the CPU they used.
async fn bare_containers(n: usize) -> Vec<(Vec<f64>, CpuPerSample)> {
    use nodeless_containerd::supervisor::{Containerd, ContainerdOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = ContainerdOptions::new(dir.path().join("containerd"));
    options.network.bridge = "nlbench1".to_string();
    options.network.subnet = "10.99.1.0/24".to_string();
    let containerd = Containerd::start(options).await.expect("bare containerd");
    let socket: PathBuf = containerd.socket().to_path_buf();
    let archive = registry::busybox_archive();
    let import = ctr(
        &socket,
        &["images", "import", archive.to_str().expect("utf-8 path")],
    );
    assert!(
        import.status.success(),
        "ctr import: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    let image = "docker.io/library/busybox:latest";
    let containerd_pid = pid_in(&dir.path().join("containerd/containerd.pid"));
    let mut all = Vec::new();
    let mut ids = Vec::new();
    for (series, (_, pause)) in series().into_iter().enumerate() {
        let before = (
            machine_busy_seconds(),
            containerd_pid.map(process_cpu_seconds).unwrap_or_default(),
        );
        let mut samples = Vec::new();
        for i in 0..n {
            let id = format!("bare-{series}-{i}");
            std::thread::sleep(pause);
            let start = Instant::now();
            let out = ctr(&socket, &["run", "-d", image, &id, "sleep", "3600"]);
            samples.push(start.elapsed().as_secs_f64());
            assert!(
                out.status.success(),
                "ctr run: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ids.push(id);
        }
        let per_sample = |after: f64, before: f64| (after - before) * 1000.0 / n.max(1) as f64;
        let cpu = CpuPerSample {
            machine: per_sample(machine_busy_seconds(), before.0),
            nodeless: 0.0,
            containerd: per_sample(
                containerd_pid.map(process_cpu_seconds).unwrap_or_default(),
                before.1,
            ),
        };
        all.push((samples, cpu));
    }
    for id in &ids {
        ctr(&socket, &["tasks", "kill", "-s", "KILL", id]);
        for _ in 0..50 {
            if ctr(&socket, &["tasks", "rm", id]).status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        ctr(&socket, &["containers", "rm", id]);
    }
    let _ = containerd.stop().await;
    let _ = Command::new("ip")
        .args(["link", "delete", "nlbench1"])
        .stderr(Stdio::null())
        .status();
    all
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("NODELESS_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let registry = registry::Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let bare = bare_containers(n).await;
    let ours = nodeless_pods(n, &registry).await;
    println!(
        "pods: {n} per series, image cached, kubectl {}, nodeless {}",
        kubectl().display(),
        nodeless_binary().display()
    );
    for (((label, pause), (bare, bare_cpu)), (ours, ours_cpu)) in
        series().into_iter().zip(bare).zip(ours)
    {
        let (bare_p50, bare_p99) = summary(bare);
        let (created_p50, _) = summary(ours.iter().map(|s| s.created).collect());
        let (bound_p50, _) = summary(ours.iter().map(|s| s.bound).collect());
        let (agent_p50, agent_p99) = summary(ours.iter().map(|s| s.running - s.bound).collect());
        let (ours_p50, ours_p99) = summary(ours.iter().map(|s| s.running).collect());
        println!("{label} ({} ms before each sample):", pause.as_millis());
        println!("  bare `ctr run -d`:            median {bare_p50:.3} s, p99 {bare_p99:.3} s");
        println!("  nodeless create -> Running:   median {ours_p50:.3} s, p99 {ours_p99:.3} s");
        println!("    of which kubectl create:    median {created_p50:.3} s (until kubectl exits)");
        println!("    of which create -> bound:   median {bound_p50:.3} s");
        println!("    of which bound -> Running:  median {agent_p50:.3} s, p99 {agent_p99:.3} s");
        println!("  ratio (median, ours / bare):  {:.2}", ours_p50 / bare_p50);
        println!(
            "  CPU per sample (machine, busy): bare {:.0} ms (its containerd {:.0} ms), ours {:.0} ms (nodeless {:.0} ms, its containerd {:.0} ms; the rest: kubectl, shims, runc, CNI, this benchmark)",
            bare_cpu.machine, bare_cpu.containerd, ours_cpu.machine, ours_cpu.nodeless, ours_cpu.containerd
        );
    }
}
