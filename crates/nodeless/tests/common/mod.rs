//! A cluster for end-to-end tests: the real `nodeless` binary on a free loopback port, in
//! its own data dir, driven by the real kubectl.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
pub mod registry;

/// Polls `check` every 250 ms until it returns `Some`, or panics (with the server's log)
/// after `limit`. Deadlines are generous: they catch hangs, they do not measure speed.
pub fn eventually<T>(
    c: &Cluster,
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; log:\n{}", c.log());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The kubectl versions the tests run against (both ends of the supported range).
pub fn kubectl_versions() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for v in ["1.27", "1.33"] {
        let p = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}"));
        if p.exists() {
            out.push(p);
        }
    }
    if out.is_empty() {
        out.push(PathBuf::from("kubectl"));
    }
    out
}

/// A running `nodeless up`.
pub struct Cluster {
    child: Child,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    /// The pod network of a containerd cluster (its bridge is deleted on drop).
    pub network: Option<TestNetwork>,
}

/// A pod network of its own for one containerd cluster of a test process: a bridge name and
/// a /24 that no other cluster on the machine uses at the same time.
pub struct TestNetwork {
    pub bridge: String,
    pub subnet: String,
    /// The service CIDR (routed to the host while the cluster runs).
    pub service_cidr: String,
    /// The LoadBalancer addresses.
    pub load_balancer_range: String,
}

impl TestNetwork {
    /// The next network of this process.
    pub fn next() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        Self {
            bridge: format!("nlt{}x{}", pid % 100_000, n % 1000),
            subnet: format!("10.{}.{}.0/24", 100 + pid % 100, n % 250),
            service_cidr: format!("10.{}.{}.0/24", 200 + pid % 50, n % 250),
            load_balancer_range: format!(
                "127.{a}.{b}.1-127.{a}.{b}.254",
                a = 100 + pid % 100,
                b = n % 250
            ),
        }
    }

    /// The flags of `nodeless up` for it.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--bridge-name".into(),
            self.bridge.clone(),
            "--pod-cidr".into(),
            self.subnet.clone(),
            "--service-cidr".into(),
            self.service_cidr.clone(),
            "--load-balancer-range".into(),
            self.load_balancer_range.clone(),
        ]
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

impl Cluster {
    /// Starts a cluster with the newest kubectl.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a cluster with extra flags for `nodeless up`.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, extra)
    }

    /// Starts a cluster with real pods (`--runtime containerd`) on a pod network of its own,
    /// pulling `docker.io` images through `mirror` (e.g. the test registry's host).
    pub fn start_containerd(mirror: Option<&str>, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_containerd_in(dir, TestNetwork::next(), mirror, extra)
    }

    /// Starts (or restarts) a containerd cluster on an existing data dir and network.
    pub fn start_containerd_in(
        dir: tempfile::TempDir,
        network: TestNetwork,
        mirror: Option<&str>,
        extra: &[&str],
    ) -> Self {
        let mut args: Vec<String> = vec!["--runtime".into(), "containerd".into()];
        args.extend(network.flags());
        if let Some(host) = mirror {
            args.push("--registry-mirror".into());
            args.push(format!("docker.io=http://{host}"));
        }
        if !extra.contains(&"--sandbox-pool") {
            // Tests count sandboxes and IPs: no warm pool unless a test asks for one
            // (`NODELESS_TEST_SANDBOX_POOL=2` runs the tests with the default pool).
            args.push("--sandbox-pool".into());
            args.push(std::env::var("NODELESS_TEST_SANDBOX_POOL").unwrap_or_else(|_| "0".into()));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cluster = Self::start_in(dir, &refs);
        cluster.network = Some(network);
        cluster
    }

    /// Starts (or restarts) a cluster on an existing data dir.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::launch("up", dir, extra)
    }

    /// Starts `nodeless server` (API server and controllers, no agent) on an existing data
    /// dir: the cluster's state without anything acting on its pods.
    pub fn start_server_in(dir: tempfile::TempDir) -> Self {
        Self::launch("server", dir, &[])
    }

    fn launch(subcommand: &str, dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let kubeconfig = dir.path().join("kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        let log = std::fs::File::create(dir.path().join("nodeless.log")).expect("log file");
        let runtime: &[&str] = if subcommand != "up" || extra.contains(&"--runtime") {
            &[]
        } else {
            &["--runtime", "simulated"]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_nodeless"))
            .args([subcommand, "--data-dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(runtime)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nodeless");
        let kubectl = std::env::var_os("NODELESS_TEST_KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| kubectl_versions().pop().expect("a kubectl"));
        let cluster = Self {
            child,
            dir,
            kubeconfig,
            kubectl,
            network: None,
        };
        cluster.wait_ready();
        cluster
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.kubeconfig.exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nodeless did not become ready; log:\n{}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nodeless.log")).unwrap_or_default()
    }

    /// The last `lines` lines of the server's log, for failure messages that must stay readable.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs kubectl (the default version) against the cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubectl, args, None)
    }

    /// Runs a given kubectl binary, optionally feeding stdin.
    pub fn kubectl_with(&self, kubectl: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.env("HOME", self.dir.path()).env_remove("KUBECONFIG");
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout, panicking with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl with a manifest on stdin (`-f -`).
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_with(&self.kubectl, args, Some(stdin));
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubectl get -o json` of something, parsed.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&full)).expect("kubectl printed JSON")
    }

    /// `kubectl get --raw PATH`, parsed.
    pub fn raw(&self, path: &str) -> Value {
        serde_json::from_str(&self.ok(&["get", "--raw", path])).expect("JSON")
    }

    /// A kube-rs client with the admin credentials.
    pub async fn kube_client(&self) -> kube::Client {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).expect("parse kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `ctr` against this cluster's containerd (namespace `k8s.io`) and returns stdout.
    pub fn ctr(&self, args: &[&str]) -> String {
        ctr_in(self.dir.path(), args)
    }

    /// SIGKILLs the server (its containerd and containers live on) and returns the data dir
    /// and the pod network, for a restart on both with [`Cluster::start_containerd_in`].
    pub fn kill_keeping_network(mut self) -> (tempfile::TempDir, Option<TestNetwork>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let network = self.network.take();
        let dir = tempfile::tempdir().expect("tempdir");
        (std::mem::replace(&mut self.dir, dir), network)
    }

    /// Stops the server with SIGTERM and returns the data dir and the pod network, for a
    /// restart on both with [`Cluster::start_containerd_in`].
    pub fn stop_keeping_network(mut self) -> (tempfile::TempDir, Option<TestNetwork>) {
        self.terminate();
        let network = self.network.take();
        let dir = tempfile::tempdir().expect("tempdir");
        (std::mem::replace(&mut self.dir, dir), network)
    }

    /// Stops the server with SIGTERM and returns the data dir, for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Sends SIGTERM and waits for the process to exit (SIGKILL after 20 s).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Runs `ctr` against the containerd of the cluster whose data dir is `data_dir` (namespace
/// `k8s.io`), also while that cluster's server is down, and returns stdout.
pub fn ctr_in(data_dir: &Path, args: &[&str]) -> String {
    let socket = data_dir.join("containerd/containerd.sock");
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .expect("run ctr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
