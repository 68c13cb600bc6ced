//! The supervised containerd against the real one: start, CRI, the pause image as a pod
//! sandbox on the CNI bridge, stop, restart after a crash, a second start on the same root.
//!
//! Each test has its own root, bridge and subnet. The tests need root and containerd, runc and
//! the CNI plugins; they print why and pass when those are missing.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nodeless_containerd::cni::NetworkOptions;
use nodeless_containerd::cri::{api, ImageServiceClient, RuntimeServiceClient};
use nodeless_containerd::pause;
use nodeless_containerd::supervisor::{preflight, Containerd, ContainerdOptions, RegistryMirror};
use nodeless_containerd::ContainerdError;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A test's own root, bridge and /28 subnet (unique per process and test).
struct TestNode {
    dir: tempfile::TempDir,
    opts: ContainerdOptions,
}

impl TestNode {
    fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        assert!(n < 16, "at most 16 subnets per test process");
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .unwrap();
        let mut opts = ContainerdOptions::new(dir.path());
        opts.network = NetworkOptions {
            bridge: format!("nlt{pid}x{n}"),
            subnet: format!("10.{}.{}.{}/28", 128 + (pid >> 8) % 64, pid % 256, n * 16),
            network_name: "nodeless-test".to_string(),
        };
        Self { dir, opts }
    }

    fn subnet_contains(&self, ip: Ipv4Addr) -> bool {
        nodeless_containerd::cni::Subnet::parse(&self.opts.network.subnet)
            .unwrap()
            .contains(ip)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.opts.network.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        // Snapshot mounts may be left under the root when a test fails half-way.
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".to_string());
    }
    if let Err(error) = preflight(&ContainerdOptions::new("/nonexistent")) {
        return Some(error.to_string());
    }
    None
}

macro_rules! require_root {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn start(node: &TestNode) -> Containerd {
    let started = Instant::now();
    let containerd = Containerd::start(node.opts.clone()).await.unwrap();
    eprintln!(
        "Containerd::start took {:?} ({})",
        started.elapsed(),
        containerd.version()
    );
    containerd
}

fn sandbox_config(node: &TestNode, name: &str) -> api::PodSandboxConfig {
    let log_directory: PathBuf = node.dir.path().join("pods").join(name);
    std::fs::create_dir_all(&log_directory).unwrap();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_directory.display().to_string(),
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run_sandbox(
    runtime: &mut RuntimeServiceClient<tonic::transport::Channel>,
    config: api::PodSandboxConfig,
) -> String {
    runtime
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id
}

async fn sandbox_status(
    runtime: &mut RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> api::PodSandboxStatusResponse {
    runtime
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The network namespace path of a sandbox, from containerd's verbose status.
fn netns_path(status: &api::PodSandboxStatusResponse) -> String {
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    let namespaces = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .unwrap();
    namespaces
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .unwrap()
        .to_string()
}

fn sandbox_ip(status: &api::PodSandboxStatusResponse) -> Ipv4Addr {
    status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.parse().unwrap())
        .unwrap()
}

fn sandbox_ready(status: &api::PodSandboxStatusResponse) -> bool {
    status.status.as_ref().unwrap().state == api::PodSandboxState::SandboxReady as i32
}

fn ping(ip: Ipv4Addr) -> bool {
    std::process::Command::new("ping")
        .args(["-c1", "-W1", &ip.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn starts_answers_cri_and_has_the_pause_image_then_stops() {
    require_root!();
    let node = TestNode::new();
    let containerd = start(&node).await;
    assert!(
        containerd.version().starts_with("containerd://1."),
        "{}",
        containerd.version()
    );
    assert_eq!(containerd.socket(), node.dir.path().join("containerd.sock"));
    assert!(node.dir.path().join("config.toml").exists());
    assert!(node.dir.path().join("containerd.log").exists());
    let pid = containerd.pid().unwrap();
    assert_eq!(
        std::fs::read_to_string(node.dir.path().join("containerd.pid"))
            .unwrap()
            .trim(),
        pid.to_string()
    );

    let channel = containerd.channel().await.unwrap();
    let images = ImageServiceClient::new(channel.clone())
        .list_images(api::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    let pause_image = images
        .iter()
        .find(|image| image.repo_tags.iter().any(|tag| tag == pause::IMAGE))
        .unwrap_or_else(|| panic!("{} not in {images:?}", pause::IMAGE));
    assert_eq!(pause_image.id, pause::image_id());

    containerd.stop().await.unwrap();
    assert!(
        !process_exists(pid),
        "containerd {pid} still exists after stop"
    );
    assert!(!node.dir.path().join("containerd.pid").exists());
}

#[tokio::test]
async fn preflight_names_the_cni_package_when_the_plugins_are_missing() {
    require_root!();
    let node = TestNode::new();
    let mut opts = node.opts.clone();
    let empty = node.dir.path().join("no-plugins");
    std::fs::create_dir_all(&empty).unwrap();
    opts.cni_bin_dir = empty;
    let error = Containerd::start(opts).await.unwrap_err();
    match &error {
        ContainerdError::Missing { package, what } => {
            assert_eq!(package, "containernetworking-plugins");
            assert!(what.contains("bridge"), "{what}");
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("apt-get install containernetworking-plugins"),
        "{error}"
    );
}

#[tokio::test]
async fn a_pod_sandbox_runs_the_pause_image_on_the_bridge_and_is_cleaned_up() {
    require_root!();
    let node = TestNode::new();
    let containerd = start(&node).await;
    let mut runtime = RuntimeServiceClient::new(containerd.channel().await.unwrap());

    let started = Instant::now();
    let id = run_sandbox(&mut runtime, sandbox_config(&node, "sandbox-a")).await;
    eprintln!("RunPodSandbox took {:?}", started.elapsed());
    let status = sandbox_status(&mut runtime, &id).await;
    assert!(sandbox_ready(&status), "{status:?}");
    let ip = sandbox_ip(&status);
    assert!(
        node.subnet_contains(ip),
        "{ip} not in {}",
        node.opts.network.subnet
    );
    assert!(ping(ip), "the host cannot ping the sandbox at {ip}");
    let netns = netns_path(&status);
    assert!(Path::new(&netns).exists(), "{netns}");

    // The streaming server listens on a real port (configured as "0").
    let url = runtime
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: id.clone(),
            port: vec![80],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!url.starts_with("http://127.0.0.1:0/"), "{url}");

    runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(
        !Path::new(&netns).exists(),
        "{netns} is left after StopPodSandbox"
    );
    assert!(!ping(ip), "{ip} still answers after StopPodSandbox");
    runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    let left = runtime
        .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(left.is_empty(), "{left:?}");
    containerd.stop().await.unwrap();
}

/// Waits until `containerd` has a pid other than `old` and CRI answers again.
async fn wait_restarted(
    containerd: &Containerd,
    old: u32,
) -> RuntimeServiceClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "containerd was not restarted");
        if let Some(pid) = containerd.pid().filter(|&pid| pid != old) {
            if let Ok(channel) = containerd.channel().await {
                let mut runtime = RuntimeServiceClient::new(channel);
                if runtime
                    .version(api::VersionRequest::default())
                    .await
                    .is_ok()
                {
                    assert!(process_exists(pid));
                    return runtime;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_killed_containerd_is_restarted_and_keeps_its_sandboxes() {
    require_root!();
    let node = TestNode::new();
    let containerd = start(&node).await;
    let mut runtime = RuntimeServiceClient::new(containerd.channel().await.unwrap());
    let id = run_sandbox(&mut runtime, sandbox_config(&node, "survivor")).await;
    let ip = sandbox_ip(&sandbox_status(&mut runtime, &id).await);

    let old = containerd.pid().unwrap();
    // SAFETY: kill(2) on the pid of the containerd this test started.
    assert_eq!(unsafe { libc::kill(old as i32, libc::SIGKILL) }, 0);
    let mut runtime = wait_restarted(&containerd, old).await;
    assert!(
        !process_exists(old)
            || std::fs::read_to_string(format!("/proc/{old}/stat"))
                .unwrap()
                .contains(") Z")
    );
    let status = sandbox_status(&mut runtime, &id).await;
    assert!(
        sandbox_ready(&status),
        "the sandbox is not adopted: {status:?}"
    );
    assert!(
        ping(ip),
        "the sandbox at {ip} does not answer after the restart"
    );

    runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    let pid = containerd.pid().unwrap();
    containerd.stop().await.unwrap();
    assert!(!process_exists(pid));
}

#[tokio::test]
async fn a_second_start_on_the_same_root_replaces_the_first_containerd() {
    require_root!();
    let node = TestNode::new();
    let first = start(&node).await;
    let mut runtime = RuntimeServiceClient::new(first.channel().await.unwrap());
    let id = run_sandbox(&mut runtime, sandbox_config(&node, "kept")).await;
    let first_pid = first.pid().unwrap();

    // As after a crash of the agent: the earlier containerd still runs.
    let second = start(&node).await;
    let second_pid = second.pid().unwrap();
    assert_ne!(first_pid, second_pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.pid().is_some() {
        assert!(
            Instant::now() < deadline,
            "the first supervisor still supervises"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !process_exists(first_pid),
        "the first containerd {first_pid} still runs"
    );

    let mut runtime = RuntimeServiceClient::new(second.channel().await.unwrap());
    let status = sandbox_status(&mut runtime, &id).await;
    assert!(
        sandbox_ready(&status),
        "the sandbox is not adopted: {status:?}"
    );
    runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    first.stop().await.unwrap();
    assert_eq!(
        second.pid(),
        Some(second_pid),
        "stopping the superseded handle leaves the new one"
    );
    second.stop().await.unwrap();
    assert!(!process_exists(second_pid));
}

/// A free TCP port on loopback (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Debian `docker-registry` on loopback holding `library/mirrortest:v1`, killed on drop.
struct LocalRegistry {
    child: std::process::Child,
    port: u16,
}

impl LocalRegistry {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let registry = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let script = format!(
            "set -e; cd {dir}; umoci init --layout oci; umoci new --image oci:v1; \
             umoci unpack --image oci:v1 bundle >/dev/null; echo mirrored > bundle/rootfs/hello; \
             umoci repack --image oci:v1 bundle; \
             skopeo copy --quiet oci:oci:v1 docker://127.0.0.1:{port}/library/mirrortest:v1 --dest-tls-verify=false",
            dir = dir.display()
        );
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        registry
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn images_are_pulled_through_the_registry_mirrors_in_order() {
    require_root!();
    if ["docker-registry", "umoci", "skopeo"].iter().any(|tool| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(std::process::Stdio::null())
            .status()
            .map_or(true, |status| !status.success())
    }) {
        eprintln!("skipping: docker-registry, umoci or skopeo is not installed");
        return;
    }
    let mut node = TestNode::new();
    let registry = LocalRegistry::start(node.dir.path());
    node.opts.registry_mirrors = vec![
        // A mirror that does not answer comes first: containerd goes on to the next one.
        RegistryMirror::parse(&format!("docker.io=http://127.0.0.1:{}", free_port())).unwrap(),
        RegistryMirror::parse(&format!("docker.io=http://127.0.0.1:{}", registry.port)).unwrap(),
    ];
    let containerd = start(&node).await;
    let mut images = ImageServiceClient::new(containerd.channel().await.unwrap());
    // The image exists only in the local registry: pulling it proves the mirror is used.
    let pulled = images
        .pull_image(api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: "docker.io/library/mirrortest:v1".to_string(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
    containerd.stop().await.unwrap();
}

#[tokio::test]
async fn a_start_after_kill_9_takes_over_the_root_and_adopts_the_sandboxes() {
    require_root!();
    let node = TestNode::new();
    let first = start(&node).await;
    let mut runtime = RuntimeServiceClient::new(first.channel().await.unwrap());
    let id = run_sandbox(&mut runtime, sandbox_config(&node, "adopted")).await;
    let ip = sandbox_ip(&sandbox_status(&mut runtime, &id).await);
    let killed = first.pid().unwrap();
    // SAFETY: kill(2) on the pid of the containerd this test started.
    assert_eq!(unsafe { libc::kill(killed as i32, libc::SIGKILL) }, 0);

    // A new start while the first supervisor waits to restart: the new one owns the root.
    let second = start(&node).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        first.pid(),
        None,
        "the first supervisor restarted a containerd"
    );
    let mut runtime = RuntimeServiceClient::new(second.channel().await.unwrap());
    let status = sandbox_status(&mut runtime, &id).await;
    assert!(
        sandbox_ready(&status),
        "the sandbox is not adopted: {status:?}"
    );
    assert!(ping(ip));
    runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    first.stop().await.unwrap();
    let pid = second.pid().unwrap();
    second.stop().await.unwrap();
    assert!(!process_exists(pid));
}
