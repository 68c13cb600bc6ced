//! Benchmark (not a test): HTTP through a Service's ClusterIP (the service proxy) against the
//! same traffic straight to the pod IP, in the same run, on `nodeless up --runtime containerd`
//! with a real busybox `httpd` pod; and the time from a pod becoming Ready to its first
//! successful request through its Service.
//!
//! Both targets are reached from the host (the service CIDR is routed to the host, where the
//! proxy listens; the pod bridge routes pod IPs). Every request opens a new connection
//! (busybox httpd closes after each answer): sequential requests give the latency (p50, p99)
//! and requests/s of one client, parallel ones the throughput. The two targets alternate in
//! rounds so that drift hits both alike.
//!
//! `cargo bench -p nodeless --bench service_bench` (as root; `NODELESS_BENCH_REQUESTS` sets
//! the sequential requests per target, default 3000; `NODELESS_BENCH_READY_ROUNDS` the
//! scale-ups timed, default 8).

#[path = "../tests/common/registry.rs"]
#[allow(dead_code)]
mod registry;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use kube::Client;

/// Parallel clients of the throughput run.
const PARALLEL: usize = 8;
/// How long each throughput run lasts.
const THROUGHPUT_RUN: Duration = Duration::from_secs(5);

const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports:
        - {name: http, containerPort: 8080}
        resources:
          limits: {cpu: "1", memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: late
spec:
  replicas: 0
  selector:
    matchLabels: {app: late}
  template:
    metadata:
      labels: {app: late}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports:
        - {name: http, containerPort: 8080}
        resources:
          limits: {cpu: 250m, memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: late
spec:
  selector: {app: late}
  ports:
  - {name: http, port: 80, targetPort: http}
"#;

/// The benchmarked `nodeless up`: stopped with SIGTERM (its sandboxes with it) when dropped,
/// also when the benchmark panics, so that no cluster outlives the run.
struct Server {
    child: std::process::Child,
    bridge: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(registry: &registry::Registry, dns_upstream: SocketAddr) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = std::process::id();
        // A network of this run's own: no cluster of another run loses its addresses to us.
        let bridge = format!("nlsb{}", pid % 100_000);
        let octet = 100 + pid % 100;
        let child = Command::new(env!("CARGO_BIN_EXE_nodeless"))
            .args(["up", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--runtime", "containerd"])
            .args(["--bridge-name", &bridge])
            .args(["--pod-cidr", &format!("10.{octet}.251.0/24")])
            .args(["--service-cidr", &format!("10.{}.251.0/24", 200 + pid % 50)])
            .args([
                "--load-balancer-range",
                &format!("127.{octet}.251.1-127.{octet}.251.254"),
            ])
            .args(["--dns-upstream", &dns_upstream.to_string()])
            .arg("--registry-mirror")
            .arg(format!("docker.io=http://{}", registry.host()))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create("/tmp/service_bench.log").expect("log"))
            .spawn()
            .expect("start nodeless");
        let server = Server { child, bridge, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.kubeconfig().exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Runs kubectl; panics with its output on failure.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).expect("kubectl stdin");
        }
        drop(pipe);
        let out = child.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
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

/// One `GET /` on a new connection; true on a 200 answer.
fn request(target: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut response = Vec::with_capacity(512);
    if stream.read_to_end(&mut response).is_err() {
        return false;
    }
    response.starts_with(b"HTTP/1.") && response.get(9..12) == Some(b"200")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Sequential results of one target: latencies (ms), failures, the time spent.
#[derive(Default)]
struct Sequential {
    latencies_ms: Vec<f64>,
    failures: usize,
    elapsed: Duration,
}

impl Sequential {
    fn report(&mut self, what: &str) -> (f64, f64, f64) {
        self.latencies_ms.sort_by(|a, b| a.total_cmp(b));
        let per_second = self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64();
        let (p50, p99) = (
            percentile(&self.latencies_ms, 50.0),
            percentile(&self.latencies_ms, 99.0),
        );
        println!(
            "{what:<12} sequential: {per_second:>7.0} req/s, p50 {p50:.3} ms, p99 {p99:.3} ms, \
             {} ok, {} failed",
            self.latencies_ms.len(),
            self.failures
        );
        (per_second, p50, p99)
    }
}

/// `requests` sequential requests to each target, alternating in rounds of 100.
fn sequential(targets: [SocketAddr; 2], requests: usize) -> [Sequential; 2] {
    let mut results = [Sequential::default(), Sequential::default()];
    let mut done = 0;
    while done < requests {
        let round = 100.min(requests - done);
        for (target, result) in targets.iter().zip(results.iter_mut()) {
            let started = Instant::now();
            for _ in 0..round {
                let one = Instant::now();
                if request(*target) {
                    result
                        .latencies_ms
                        .push(one.elapsed().as_secs_f64() * 1000.0);
                } else {
                    result.failures += 1;
                }
            }
            result.elapsed += started.elapsed();
        }
        done += round;
    }
    results
}

/// Requests/s of [`PARALLEL`] clients sending to `target` for [`THROUGHPUT_RUN`].
fn throughput(target: SocketAddr) -> (f64, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (ok, failed) = (ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while started.elapsed() < THROUGHPUT_RUN {
                    if request(target) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    )
}

/// Whether a pod's Ready condition is True.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Scales `late` from 0 to 1 and returns (seconds from the scale command to the pod's Ready
/// as the watch sees it, seconds from Ready to the first 200 through the Service).
async fn time_scale_up(server: &Server, pods: &Api<Pod>, target: SocketAddr) -> (f64, f64) {
    let ready_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let watch = {
        let (pods, ready_at) = (pods.clone(), ready_at.clone());
        tokio::spawn(async move {
            let config = watcher::Config::default().labels("app=late");
            let mut events = std::pin::pin!(watcher(pods, config));
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event {
                    if is_ready(&pod) {
                        *ready_at.lock().expect("lock") = Some(Instant::now());
                        return;
                    }
                }
            }
        })
    };
    let answered = Arc::new(AtomicBool::new(false));
    let poller = {
        let answered = answered.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if request(target) {
                    answered.store(true, Ordering::SeqCst);
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        })
    };
    let scaled = Instant::now();
    server.kubectl(&["scale", "deployment/late", "--replicas=1"], None);
    let first_answer = tokio::task::spawn_blocking(move || poller.join().ok().flatten())
        .await
        .expect("join")
        .expect("an answer through the Service within 60 s");
    let _ = tokio::time::timeout(Duration::from_secs(10), watch).await;
    let ready = ready_at
        .lock()
        .expect("lock")
        .expect("the pod was seen Ready");
    let to_ready = ready.duration_since(scaled).as_secs_f64();
    let after_ready = if first_answer >= ready {
        first_answer.duration_since(ready).as_secs_f64()
    } else {
        -ready.duration_since(first_answer).as_secs_f64()
    };
    // Back to no pod, and no endpoint: the Service refuses again.
    server.kubectl(&["scale", "deployment/late", "--replicas=0"], None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let none = pods
            .list(&kube::api::ListParams::default().labels("app=late"))
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false);
        if none && !request(target) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (to_ready, after_ready)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let requests = env_usize("NODELESS_BENCH_REQUESTS", 3000);
    let rounds = env_usize("NODELESS_BENCH_READY_ROUNDS", 8);
    // Names outside the cluster go nowhere off this machine.
    let silent_upstream = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let registry = registry::Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let server = Server::start(&registry, silent_upstream.local_addr().expect("addr"));
    let client = client_for(&server.kubeconfig()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // The node registers before anything can be created in the default namespace.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
            .list(&Default::default())
            .await;
        if nodes.is_ok_and(|n| !n.items.is_empty()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kubectl(&["apply", "-f", "-"], Some(MANIFESTS));
    server.kubectl(
        &["rollout", "status", "deployment/web", "--timeout=120s"],
        None,
    );
    let pod_ip = server.kubectl(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ],
        None,
    );
    let cluster_ip = |name: &str| {
        server.kubectl(
            &["get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"],
            None,
        )
    };
    let direct: SocketAddr = format!("{pod_ip}:8080").parse().expect("pod address");
    let service: SocketAddr = format!("{}:80", cluster_ip("web"))
        .parse()
        .expect("service address");
    let late: SocketAddr = format!("{}:80", cluster_ip("late"))
        .parse()
        .expect("service address");
    // Warm up: the proxy has the endpoint, both paths answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(request(service) && request(direct)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("server: one busybox httpd pod at {direct}, Service web at {service}");

    let [mut to_pod, mut through] =
        tokio::task::spawn_blocking(move || sequential([direct, service], requests))
            .await
            .expect("join");
    let (pod_rate, pod_p50, pod_p99) = to_pod.report("pod IP");
    let (svc_rate, svc_p50, svc_p99) = through.report("ClusterIP");
    println!(
        "ratio ClusterIP / pod IP (sequential): req/s {:.2}, p50 {:.2}, p99 {:.2}",
        svc_rate / pod_rate,
        svc_p50 / pod_p50,
        svc_p99 / pod_p99
    );
    let (pod_parallel, pod_failed) = tokio::task::spawn_blocking(move || throughput(direct))
        .await
        .expect("join");
    let (svc_parallel, svc_failed) = tokio::task::spawn_blocking(move || throughput(service))
        .await
        .expect("join");
    println!(
        "{PARALLEL} parallel clients: pod IP {pod_parallel:.0} req/s ({pod_failed} failed), \
         ClusterIP {svc_parallel:.0} req/s ({svc_failed} failed), ratio {:.2}",
        svc_parallel / pod_parallel
    );

    let mut to_ready = Vec::new();
    let mut after_ready = Vec::new();
    for _ in 0..rounds {
        let (ready, answered) = time_scale_up(&server, &pods, late).await;
        to_ready.push(ready);
        after_ready.push(answered * 1000.0);
    }
    to_ready.sort_by(|a, b| a.total_cmp(b));
    let mut sorted_after = after_ready.clone();
    sorted_after.sort_by(|a, b| a.total_cmp(b));
    println!(
        "scale 0 -> 1, {rounds} rounds: scale to Ready median {:.3} s; Ready to first answer \
         through the Service: median {:.0} ms, max {:.0} ms (each: {:?})",
        percentile(&to_ready, 50.0),
        percentile(&sorted_after, 50.0),
        sorted_after.last().copied().unwrap_or(f64::NAN),
        after_ready.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
    drop(server);
    drop(silent_upstream);
}
