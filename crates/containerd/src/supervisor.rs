//! Launches and supervises a containerd of the agent's own, the k3s way: its config, root,
//! state and socket all live under one folder, so it never touches a system containerd.
//!
//! [`Containerd::start`] writes `config.toml` (CRI with runc, the CNI network, registry mirrors
//! and the project's pause image), stops a containerd left by an earlier run of the same root
//! (its shims survive, so running containers are adopted), starts containerd in its own process
//! group with its log in `containerd.log`, waits until CRI answers, and imports the pause image.
//! A task then restarts containerd with back-off if it dies; [`Containerd::stop`] ends it.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cgroups::BackgroundCgroup;
use crate::cri::{self, api, RuntimeServiceClient};
use crate::{cni, pause, ContainerdError};

/// How long containerd may take to answer CRI after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The first and the longest pause before restarting a containerd that died.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A containerd that ran this long before dying is restarted after the shortest back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How many lines of containerd's log an error quotes.
const LOG_TAIL_LINES: usize = 15;
/// The longest path of a unix socket (`sun_path` holds 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Plugins that the agent does not use: not loading them makes containerd start faster.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
];

/// How the agent's containerd is set up.
#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// The folder of everything: `config.toml`, `root/`, `state/`, `containerd.sock`,
    /// `containerd.log`, `containerd.pid`, `cni/net.d`, `cni/ipam`, `certs.d`.
    pub root: PathBuf,
    /// Registry mirrors, tried in order before the registry itself.
    pub registry_mirrors: Vec<RegistryMirror>,
    /// CA bundles that verify registries' and mirrors' TLS certificates (beyond the system's).
    pub registry_cas: Vec<RegistryCa>,
    /// Where the CNI plugins are (Debian: `/usr/lib/cni`).
    pub cni_bin_dir: PathBuf,
    /// The node's pod network.
    pub network: cni::NetworkOptions,
    /// The CPU cgroup, at idle priority, in which the shims of the [`BACKGROUND_HANDLER`]
    /// runtime start ([`crate::cgroups::BackgroundCgroup`]); `None`: they run as any other.
    pub background_cgroup: Option<String>,
}

/// The CRI runtime handler for sandboxes made ahead of need (the sandbox pool): runc as the
/// default handler, but its shims, and the runc they run, start in the background cgroup.
pub const BACKGROUND_HANDLER: &str = "background";

/// The default background cgroup.
pub const DEFAULT_BACKGROUND_CGROUP: &str = "/nodeless-background";

impl ContainerdOptions {
    /// Options with everything under `root`, Debian's CNI folder, no mirrors and the default
    /// network.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            registry_mirrors: Vec::new(),
            registry_cas: Vec::new(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            network: cni::NetworkOptions::default(),
            background_cgroup: Some(DEFAULT_BACKGROUND_CGROUP.to_string()),
        }
    }

    /// containerd's socket: `<root>/containerd.sock`.
    pub fn socket(&self) -> PathBuf {
        self.root.join("containerd.sock")
    }

    /// containerd's log: `<root>/containerd.log`.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("containerd.log")
    }

    fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    fn pid_file(&self) -> PathBuf {
        self.root.join("containerd.pid")
    }

    fn cni_conf_dir(&self) -> PathBuf {
        self.root.join("cni").join("net.d")
    }

    fn certs_dir(&self) -> PathBuf {
        self.root.join("certs.d")
    }
}

/// A registry mirror: pulls from `registry` (e.g. `docker.io`) try `url` first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryMirror {
    /// The registry's host as images name it (`docker.io`, `quay.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The mirror's URL, `http://…` or `https://…`.
    pub url: String,
}

impl RegistryMirror {
    /// Parses `REGISTRY=URL`, e.g. `docker.io=http://127.0.0.1:5000`.
    pub fn parse(text: &str) -> Result<Self, ContainerdError> {
        let invalid = |why: &str| {
            ContainerdError::Config(format!(
                "registry mirror {text:?}: {why} (expected REGISTRY=URL, e.g. docker.io=http://127.0.0.1:5000)"
            ))
        };
        let (registry, url) = text.split_once('=').ok_or_else(|| invalid("no '='"))?;
        let (registry, url) = (registry.trim(), url.trim());
        if !is_registry_host(registry) {
            return Err(invalid(
                "the registry must be a host name, optionally with :port",
            ));
        }
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| invalid("the URL must start with http:// or https://"))?
            .trim_end_matches('/');
        let url = url.trim_end_matches('/');
        if host.is_empty()
            || host.starts_with('/')
            || host
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
        {
            return Err(invalid("the URL has no usable host"));
        }
        Ok(Self {
            registry: registry.to_string(),
            url: url.to_string(),
        })
    }
}

impl RegistryMirror {
    /// The mirror's `host[:port]`.
    fn host(&self) -> &str {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest)
    }
}

/// Checks that a registry host (`docker.io`, `127.0.0.1:5000`) is a plain host name, as the
/// folder name of its `hosts.toml` must be.
fn is_registry_host(host: &str) -> bool {
    !host.is_empty()
        && host != "."
        && host != ".."
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
}

/// A CA bundle (PEM) that verifies the TLS certificate of the registry or mirror at `host`:
/// used for mirrors on that host and for pulls of images named after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCa {
    /// `host[:port]`, as a mirror URL or an image reference names it.
    pub host: String,
    /// The PEM file, an absolute path.
    pub ca_file: PathBuf,
}

impl RegistryCa {
    /// Parses `HOST=FILE`, e.g. `127.0.0.1:5443=/etc/ssl/registry-ca.pem`, and checks that the
    /// file holds a PEM certificate.
    pub fn parse(text: &str) -> Result<Self, ContainerdError> {
        let invalid = |why: String| {
            ContainerdError::Config(format!(
                "registry CA {text:?}: {why} (expected HOST=FILE, e.g. 127.0.0.1:5443=/etc/ssl/registry-ca.pem)"
            ))
        };
        let (host, file) = text
            .split_once('=')
            .ok_or_else(|| invalid("no '='".into()))?;
        let (host, file) = (host.trim(), file.trim());
        if !is_registry_host(host) {
            return Err(invalid(
                "the host must be a host name, optionally with :port".into(),
            ));
        }
        let ca_file = std::fs::canonicalize(file)
            .map_err(|error| invalid(format!("cannot open {file}: {error}")))?;
        let pem = std::fs::read_to_string(&ca_file)
            .map_err(|error| invalid(format!("cannot read {file}: {error}")))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(format!("{file} holds no PEM certificate")));
        }
        Ok(Self {
            host: host.to_string(),
            ca_file,
        })
    }
}

/// Checks that containerd, ctr, the runc shim, runc and the CNI plugins bridge, host-local,
/// and loopback are installed; the error names the Debian package to install.
pub fn preflight(opts: &ContainerdOptions) -> Result<(), ContainerdError> {
    for (program, package) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("runc", "runc"),
    ] {
        if find_on_path(program).is_none() {
            return Err(ContainerdError::Missing {
                what: format!("`{program}` (on PATH)"),
                package: package.to_string(),
            });
        }
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        let path = opts.cni_bin_dir.join(plugin);
        if !is_executable(&path) {
            return Err(ContainerdError::Missing {
                what: format!("the CNI plugin {plugin} ({})", path.display()),
                package: "containernetworking-plugins".to_string(),
            });
        }
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// The agent's containerd, running and supervised.
///
/// Dropping it without [`Containerd::stop`] sends containerd SIGTERM and ends the supervision.
pub struct Containerd {
    socket: PathBuf,
    version: String,
    snapshotter: &'static str,
    pid: Arc<AtomicU32>,
    stop: Option<oneshot::Sender<()>>,
    supervision: Option<JoinHandle<Result<(), ContainerdError>>>,
    /// The background shims' cgroup, removed at the stop once no shim is left in it.
    background: Option<BackgroundCgroup>,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("socket", &self.socket)
            .field("version", &self.version)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Containerd {
    /// Sets containerd up under `opts.root` and starts it (see the module documentation);
    /// returns once CRI answers, the network is ready and the pause image is imported.
    pub async fn start(opts: ContainerdOptions) -> Result<Containerd, ContainerdError> {
        let started = Instant::now();
        preflight(&opts)?;
        let root = &opts.root;
        for dir in [root.clone(), root.join("root"), root.join("state")] {
            std::fs::create_dir_all(&dir).map_err(|error| {
                ContainerdError::io(format!("creating {}", dir.display()), error)
            })?;
        }
        let socket = opts.socket();
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ContainerdError::Config(format!(
                "the socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter root",
                socket.display()
            )));
        }
        cni::write_config(&opts.cni_conf_dir(), &opts.network)?;
        write_registry_hosts(
            &opts.certs_dir(),
            &opts.registry_mirrors,
            &opts.registry_cas,
        )?;
        let snapshotter = if overlayfs_works(root) {
            "overlayfs"
        } else {
            "native"
        };
        if snapshotter == "native" {
            tracing::warn!(root = %root.display(), "overlayfs does not work here; using the native snapshotter (slower, more disk)");
        }
        // The background handler's shims go to the idle cgroup when it can be made (a machine
        // without the CPU controller runs them as any other).
        let shim_cgroup = opts.background_cgroup.as_deref().and_then(|path| {
            let cgroup = BackgroundCgroup::new(path);
            match cgroup.create() {
                Ok(()) => Some(cgroup.path()),
                Err(error) => {
                    tracing::warn!(%error, cgroup = %path, "no idle CPU cgroup for background shims");
                    None
                }
            }
        });
        let config = config_toml(&opts, snapshotter, shim_cgroup.as_deref());
        std::fs::write(opts.config_file(), config).map_err(|error| {
            ContainerdError::io(format!("writing {}", opts.config_file().display()), error)
        })?;

        stop_previous(&opts).await?;
        let child = spawn(&opts)?;
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        let mut child = Some(child);
        let spawned = Instant::now();
        let version = match wait_ready(&opts, &mut child).await {
            Ok(version) => version,
            Err(error) => {
                if let Some(child) = child {
                    let _ = terminate(child, &opts).await;
                }
                return Err(error);
            }
        };
        let Some(child) = child else {
            return Err(ContainerdError::Start(
                "containerd exited while starting".to_string(),
            ));
        };
        let ready = Instant::now();
        if let Err(error) = pause::import(&socket, &pause::oci_archive(), snapshotter).await {
            let _ = terminate(child, &opts).await;
            return Err(error);
        }
        tracing::info!(
            %version,
            snapshotter,
            socket = %socket.display(),
            setup_ms = spawned.duration_since(started).as_millis() as u64,
            ready_ms = ready.duration_since(spawned).as_millis() as u64,
            import_ms = ready.elapsed().as_millis() as u64,
            "containerd started"
        );
        let (stop_tx, stop_rx) = oneshot::channel();
        let background = shim_cgroup.as_deref().map(BackgroundCgroup::new);
        let supervision = tokio::spawn(supervise(opts, child, Arc::clone(&pid), stop_rx));
        Ok(Containerd {
            socket,
            version,
            snapshotter,
            pid,
            stop: Some(stop_tx),
            supervision: Some(supervision),
            background,
        })
    }

    /// containerd's socket (gRPC: containerd's API and CRI).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A channel connected to containerd's socket (for [`cri::RuntimeServiceClient`] and
    /// [`cri::ImageServiceClient`]).
    pub async fn channel(&self) -> Result<tonic::transport::Channel, ContainerdError> {
        cri::connect(&self.socket).await
    }

    /// The runtime's name and version from CRI, e.g. `containerd://1.6.20~ds1`.
    pub fn version(&self) -> String {
        self.version.clone()
    }

    /// The snapshotter in use: `overlayfs`, or `native` where overlayfs does not work.
    pub fn snapshotter(&self) -> &str {
        self.snapshotter
    }

    /// The process ID of the running containerd (changes when it is restarted), or `None`
    /// while it is down.
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Stops containerd: SIGTERM, then SIGKILL after 10 s; returns once it has exited (and is
    /// reaped). Its shims, and so the running containers, are left alone.
    pub async fn stop(mut self) -> Result<(), ContainerdError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let stopped = match self.supervision.take() {
            Some(supervision) => supervision.await.map_err(|error| {
                ContainerdError::Start(format!("the supervisor task failed: {error}"))
            })?,
            None => Ok(()),
        };
        // The shims of removed sandboxes exit on their own, soon after; the cgroup is shared
        // with other nodeless clusters of the machine, whose shims keep it.
        if let Some(background) = self.background.take() {
            for _ in 0..20 {
                if background.remove().is_err() || !background.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        stopped
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The task may be gone with its runtime: signal containerd here as well.
            if let Some(pid) = self.pid() {
                send_signal(pid, libc::SIGTERM);
            }
            let _ = stop.send(());
        }
    }
}

/// Restarts containerd with back-off whenever it dies, until told to stop.
async fn supervise(
    opts: ContainerdOptions,
    child: Child,
    pid: Arc<AtomicU32>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), ContainerdError> {
    let mut child = child;
    let mut last_pid = child.id().unwrap_or(0);
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut running_since = Instant::now();
    loop {
        tokio::select! {
            _ = &mut stop => {
                pid.store(0, Ordering::SeqCst);
                let stopped = terminate(child, &opts).await;
                if !superseded(&opts, last_pid) {
                    let _ = std::fs::remove_file(opts.pid_file());
                }
                return stopped;
            }
            status = child.wait() => {
                pid.store(0, Ordering::SeqCst);
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if superseded(&opts, last_pid) {
                    tracing::warn!(root = %opts.root.display(), "containerd exited and another one runs for the same root; no longer supervising");
                    return Ok(());
                }
                if running_since.elapsed() >= HEALTHY_RUN {
                    backoff = RESTART_BACKOFF_MIN;
                }
                tracing::error!(
                    %status,
                    restart_in_ms = backoff.as_millis() as u64,
                    log = %tail(&opts.log_file(), 5).join(" | "),
                    "containerd exited unexpectedly"
                );
            }
        }
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
            if superseded(&opts, last_pid) {
                tracing::warn!(root = %opts.root.display(), "another start took over this root; no longer supervising");
                return Ok(());
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            match spawn(&opts) {
                Ok(new_child) => {
                    last_pid = new_child.id().unwrap_or(0);
                    pid.store(last_pid, Ordering::SeqCst);
                    tracing::info!(pid = new_child.id(), "containerd restarted");
                    child = new_child;
                    running_since = Instant::now();
                    break;
                }
                Err(error) => tracing::error!(%error, "restarting containerd failed"),
            }
        }
    }
}

/// Starts containerd with its log appended to `containerd.log`, in a process group of its own
/// (a terminal's Ctrl-C reaches the agent, which stops containerd itself); writes the pid file.
fn spawn(opts: &ContainerdOptions) -> Result<Child, ContainerdError> {
    let log_path = opts.log_file();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|error| ContainerdError::io(format!("opening {}", log_path.display()), error))?;
    let log_err = log
        .try_clone()
        .map_err(|error| ContainerdError::io(format!("opening {}", log_path.display()), error))?;
    // A socket left by a containerd that was killed would make the readiness check connect to
    // nothing; containerd replaces it anyway.
    let _ = std::fs::remove_file(opts.socket());
    let child = Command::new("containerd")
        .arg("--config")
        .arg(opts.config_file())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .spawn()
        .map_err(|error| ContainerdError::io("starting containerd", error))?;
    let pid = child.id().unwrap_or(0);
    std::fs::write(opts.pid_file(), format!("{pid}\n")).map_err(|error| {
        ContainerdError::io(format!("writing {}", opts.pid_file().display()), error)
    })?;
    tracing::debug!(pid, config = %opts.config_file().display(), "containerd spawned");
    Ok(child)
}

/// Waits until containerd answers CRI `Version` and its `Status` says the runtime and the
/// network are ready; returns the version. `child` becomes `None` if containerd exited.
async fn wait_ready(
    opts: &ContainerdOptions,
    child: &mut Option<Child>,
) -> Result<String, ContainerdError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let socket = opts.socket();
    let mut last_problem = String::from("no answer yet");
    loop {
        if let Some(running) = child.as_mut() {
            if let Ok(Some(status)) = running.try_wait() {
                *child = None;
                return Err(ContainerdError::Start(format!(
                    "containerd exited while starting ({status}); the end of {}:\n{}",
                    opts.log_file().display(),
                    tail(&opts.log_file(), LOG_TAIL_LINES).join("\n")
                )));
            }
        }
        if socket.exists() {
            match ready(&socket).await {
                Ok(version) => return Ok(version),
                Err(problem) => last_problem = problem,
            }
        }
        if Instant::now() >= deadline {
            return Err(ContainerdError::Start(format!(
                "containerd did not get ready within {} s ({last_problem}); the end of {}:\n{}",
                READY_TIMEOUT.as_secs(),
                opts.log_file().display(),
                tail(&opts.log_file(), LOG_TAIL_LINES).join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The CRI version if CRI answers and its runtime and network are ready.
async fn ready(socket: &Path) -> Result<String, String> {
    let channel = cri::connect(socket).await.map_err(|e| e.to_string())?;
    let version = cri::runtime_version(channel.clone())
        .await
        .map_err(|e| e.to_string())?;
    let status = RuntimeServiceClient::new(channel)
        .status(api::StatusRequest { verbose: false })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    let not_ready: Vec<String> = ["RuntimeReady", "NetworkReady"]
        .iter()
        .filter(|wanted| !conditions.iter().any(|c| c.r#type == **wanted && c.status))
        .map(|wanted| {
            let why = conditions
                .iter()
                .find(|c| c.r#type == *wanted)
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_default();
            format!("{wanted} false {why}")
        })
        .collect();
    if not_ready.is_empty() {
        Ok(version)
    } else {
        Err(not_ready.join("; "))
    }
}

/// SIGTERM, up to [`STOP_TIMEOUT`], then SIGKILL; always reaps the child.
async fn terminate(mut child: Child, opts: &ContainerdOptions) -> Result<(), ContainerdError> {
    let Some(pid) = child.id() else {
        return Ok(()); // already reaped
    };
    send_signal(pid, libc::SIGTERM);
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(ContainerdError::io("waiting for containerd to exit", error)),
        Err(_) => {
            tracing::warn!(pid, log = %opts.log_file().display(), "containerd ignored SIGTERM for 10 s; killing it");
            let _ = child.start_kill();
            child
                .wait()
                .await
                .map(|_| ())
                .map_err(|error| ContainerdError::io("waiting for containerd to exit", error))
        }
    }
}

fn send_signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with a positive pid only sends a signal.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// The pid in the pid file if that process is a containerd started with this root's config.
fn previous_containerd(opts: &ContainerdOptions) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(opts.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_containerd_of(opts, pid).then_some(pid)
}

/// Whether `pid` is a live containerd started with this root's config.
fn is_containerd_of(opts: &ContainerdOptions, pid: u32) -> bool {
    containerd_config_of(pid)
        .is_some_and(|config| config == opts.config_file().as_os_str().as_bytes())
}

/// The `--config` argument of process `pid` if it is a live (not zombie) containerd.
fn containerd_config_of(pid: u32) -> Option<Vec<u8>> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim() != "containerd" {
        return None;
    }
    // A zombie (exited, not yet reaped by its parent) has an empty cmdline: nothing to stop.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|&b| b == 0);
    args.by_ref().find(|arg| *arg == b"--config")?;
    args.next().map(<[u8]>::to_vec)
}

/// Whether another start has taken over the root: the pid file no longer names `own_pid`
/// (every start claims the pid file before it stops an earlier containerd).
fn superseded(opts: &ContainerdOptions, own_pid: u32) -> bool {
    std::fs::read_to_string(opts.pid_file())
        .map(|text| text.trim() != own_pid.to_string())
        .unwrap_or(true)
}

/// Stops a containerd left running by an earlier run of the same root (SIGTERM, SIGKILL after
/// 10 s). Only containerd itself: its shims keep the containers running.
async fn stop_previous(opts: &ContainerdOptions) -> Result<(), ContainerdError> {
    let previous = previous_containerd(opts);
    // Claim the root first: a supervisor of the earlier containerd (in this process or another)
    // sees that the pid file no longer names its containerd and does not restart it.
    std::fs::write(opts.pid_file(), "0\n").map_err(|error| {
        ContainerdError::io(format!("writing {}", opts.pid_file().display()), error)
    })?;
    let Some(pid) = previous else {
        return Ok(());
    };
    tracing::info!(pid, root = %opts.root.display(), "stopping the containerd of an earlier run");
    send_signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while is_containerd_of(opts, pid) {
        if Instant::now() >= deadline {
            tracing::warn!(
                pid,
                "the earlier containerd ignored SIGTERM for 10 s; killing it"
            );
            send_signal(pid, libc::SIGKILL);
            let kill_deadline = Instant::now() + Duration::from_secs(5);
            while is_containerd_of(opts, pid) {
                if Instant::now() >= kill_deadline {
                    return Err(ContainerdError::Start(format!(
                        "the containerd of an earlier run (pid {pid}) does not exit"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Whether an overlay mount works on the file system of `root` (it does not on some overlay or
/// network file systems, nor without the privilege to mount).
fn overlayfs_works(root: &Path) -> bool {
    let check = root.join(".overlay-check");
    let _ = std::fs::remove_dir_all(&check);
    let dirs = ["lower", "upper", "work", "merged"].map(|name| check.join(name));
    if dirs.iter().any(|dir| std::fs::create_dir_all(dir).is_err()) {
        return false;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dirs[0].display(),
        dirs[1].display(),
        dirs[2].display()
    );
    let (Ok(target), Ok(options)) = (
        CString::new(dirs[3].as_os_str().as_bytes()),
        CString::new(options),
    ) else {
        return false;
    };
    // SAFETY: all arguments are NUL-terminated strings that outlive the calls.
    let mounted = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            options.as_ptr().cast(),
        ) == 0
    };
    if mounted {
        // SAFETY: as above.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir_all(&check);
    mounted
}

/// A TOML basic string (JSON's escapes are valid TOML).
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

fn toml_path(path: &Path) -> String {
    toml_string(&path.to_string_lossy())
}

/// containerd's `config.toml` (version 2).
fn config_toml(opts: &ContainerdOptions, snapshotter: &str, shim_cgroup: Option<&str>) -> String {
    let root = &opts.root;
    let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|p| toml_string(p)).collect();
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    let shim_cgroup = shim_cgroup
        .map(|path| format!("  ShimCgroup = {}\n", toml_string(path)))
        .unwrap_or_default();
    format!(
        r#"# Written by nodeless at every start: edits are lost.
version = 2
root = {root_dir}
state = {state_dir}
disabled_plugins = [{disabled}]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[{cri}]
  sandbox_image = {sandbox_image}
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = {snapshotter}
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.containerd.runtimes.{background}]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.{background}.options]
  SystemdCgroup = false
{shim_cgroup}
[{cri}.cni]
  bin_dir = {cni_bin}
  conf_dir = {cni_conf}
  max_conf_num = 1

[{cri}.registry]
  config_path = {certs}
"#,
        root_dir = toml_path(&root.join("root")),
        state_dir = toml_path(&root.join("state")),
        disabled = disabled.join(", "),
        socket = toml_path(&opts.socket()),
        ttrpc = toml_path(&root.join("containerd.sock.ttrpc")),
        opt = toml_path(&root.join("opt")),
        sandbox_image = toml_string(pause::IMAGE),
        snapshotter = toml_string(snapshotter),
        cni_bin = toml_path(&opts.cni_bin_dir),
        cni_conf = toml_path(&opts.cni_conf_dir()),
        certs = toml_path(&opts.certs_dir()),
        background = BACKGROUND_HANDLER,
    )
}

/// The `hosts.toml` of one registry: its mirrors in order (pull and resolve), then the
/// registry itself as containerd's fallback.
fn hosts_toml(registry: &str, mirrors: &[&RegistryMirror], cas: &[RegistryCa]) -> String {
    let ca_of = |host: &str| cas.iter().find(|ca| ca.host == host);
    let mut text = String::from("# Written by nodeless at every start: edits are lost.\n");
    // Pulls straight from the registry (after the mirrors) verify it with its CA.
    if let Some(ca) = ca_of(registry) {
        text.push_str(&format!(
            "server = {}\nca = {}\n",
            toml_string(&format!("https://{registry}")),
            toml_path(&ca.ca_file)
        ));
    }
    for mirror in mirrors {
        text.push_str(&format!(
            "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
            toml_string(&mirror.url)
        ));
        if let Some(ca) = ca_of(mirror.host()) {
            text.push_str(&format!("  ca = {}\n", toml_path(&ca.ca_file)));
        }
    }
    // containerd ignores a hosts.toml without `[host]` tables (and then pulls from a
    // loopback registry over plain HTTP): the registry itself is listed as its own host.
    if let (true, Some(ca)) = (mirrors.is_empty(), ca_of(registry)) {
        text.push_str(&format!(
            "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {}\n",
            toml_string(&format!("https://{registry}")),
            toml_path(&ca.ca_file)
        ));
    }
    text
}

/// Writes `<certs_dir>/<registry>/hosts.toml` for every mirrored registry and every host
/// with a CA, replacing what an earlier start wrote.
fn write_registry_hosts(
    certs_dir: &Path,
    mirrors: &[RegistryMirror],
    cas: &[RegistryCa],
) -> Result<(), ContainerdError> {
    let _ = std::fs::remove_dir_all(certs_dir);
    std::fs::create_dir_all(certs_dir)
        .map_err(|error| ContainerdError::io(format!("creating {}", certs_dir.display()), error))?;
    let mut registries: Vec<&str> = mirrors
        .iter()
        .map(|m| m.registry.as_str())
        .chain(cas.iter().map(|ca| ca.host.as_str()))
        .collect();
    registries.sort_unstable();
    registries.dedup();
    for registry in registries {
        let of_registry: Vec<&RegistryMirror> =
            mirrors.iter().filter(|m| m.registry == registry).collect();
        let dir = certs_dir.join(registry);
        std::fs::create_dir_all(&dir)
            .map_err(|error| ContainerdError::io(format!("creating {}", dir.display()), error))?;
        let path = dir.join("hosts.toml");
        std::fs::write(&path, hosts_toml(registry, &of_registry, cas))
            .map_err(|error| ContainerdError::io(format!("writing {}", path.display()), error))?;
    }
    Ok(())
}

/// The last `lines` lines of a log file (empty if it cannot be read).
fn tail(path: &Path, lines: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(16 * 1024)));
    let mut text = String::new();
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_ok() {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| line.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse() {
        let mirror = RegistryMirror::parse("docker.io=http://127.0.0.1:5000/").unwrap();
        assert_eq!(mirror.registry, "docker.io");
        assert_eq!(mirror.url, "http://127.0.0.1:5000");
        let mirror = RegistryMirror::parse("127.0.0.1:5001=https://mirror.example.com").unwrap();
        assert_eq!(mirror.registry, "127.0.0.1:5001");
        for (bad, why) in [
            ("docker.io", "no '='"),
            ("=http://x", "host name"),
            ("docker.io/library=http://x", "host name"),
            ("docker.io=ftp://x", "http:// or https://"),
            ("docker.io=127.0.0.1:5000", "http:// or https://"),
            ("docker.io=http://", "no usable host"),
        ] {
            let error = RegistryMirror::parse(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(error.contains("REGISTRY=URL"), "{error}");
        }
    }

    #[test]
    fn hosts_files_list_the_mirrors_of_each_registry_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mirrors = [
            RegistryMirror::parse("docker.io=http://127.0.0.1:5000").unwrap(),
            RegistryMirror::parse("quay.io=https://quay-mirror.example").unwrap(),
            RegistryMirror::parse("docker.io=https://second.example").unwrap(),
        ];
        std::fs::create_dir_all(dir.path().join("stale.io")).unwrap();
        write_registry_hosts(dir.path(), &mirrors, &[]).unwrap();
        let docker = std::fs::read_to_string(dir.path().join("docker.io/hosts.toml")).unwrap();
        let first = docker.find(r#"[host."http://127.0.0.1:5000"]"#).unwrap();
        let second = docker.find(r#"[host."https://second.example"]"#).unwrap();
        assert!(first < second, "{docker}");
        assert_eq!(
            docker
                .matches(r#"capabilities = ["pull", "resolve"]"#)
                .count(),
            2
        );
        let quay = std::fs::read_to_string(dir.path().join("quay.io/hosts.toml")).unwrap();
        assert!(quay.contains(r#"[host."https://quay-mirror.example"]"#));
        assert!(!quay.contains("127.0.0.1"));
        assert!(
            !dir.path().join("stale.io").exists(),
            "an earlier start's files are replaced"
        );
    }

    fn ca_file(dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        path
    }

    #[test]
    fn registry_cas_parse_and_check_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let pem = ca_file(dir.path());
        let ca = RegistryCa::parse(&format!("127.0.0.1:5443={}", pem.display())).unwrap();
        assert_eq!(ca.host, "127.0.0.1:5443");
        assert!(ca.ca_file.is_absolute());
        let not_pem = dir.path().join("key.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        for (bad, why) in [
            ("127.0.0.1:5443".to_string(), "no '='".to_string()),
            (format!("a/b={}", pem.display()), "host name".to_string()),
            (
                "h=/does/not/exist".to_string(),
                "cannot open /does/not/exist".to_string(),
            ),
            (
                format!("h={}", not_pem.display()),
                "holds no PEM certificate".to_string(),
            ),
        ] {
            let error = RegistryCa::parse(&bad).unwrap_err().to_string();
            assert!(error.contains(&why), "{bad}: {error}");
            assert!(error.contains("HOST=FILE"), "{error}");
        }
    }

    #[test]
    fn hosts_files_name_the_ca_of_tls_mirrors_and_registries() {
        let dir = tempfile::tempdir().unwrap();
        let pem = ca_file(dir.path());
        let ca = RegistryCa::parse(&format!("127.0.0.1:5443={}", pem.display())).unwrap();
        let mirrors = [
            RegistryMirror::parse("docker.io=https://127.0.0.1:5443").unwrap(),
            RegistryMirror::parse("docker.io=https://other.example").unwrap(),
        ];
        let certs = dir.path().join("certs.d");
        write_registry_hosts(&certs, &mirrors, std::slice::from_ref(&ca)).unwrap();
        let docker = std::fs::read_to_string(certs.join("docker.io/hosts.toml")).unwrap();
        let ca_line = format!("  ca = {}\n", toml_path(&ca.ca_file));
        assert_eq!(docker.matches(&ca_line).count(), 1, "{docker}");
        let mirror = docker.find(r#"[host."https://127.0.0.1:5443"]"#).unwrap();
        let other = docker.find(r#"[host."https://other.example"]"#).unwrap();
        let ca_at = docker.find(&ca_line).unwrap();
        assert!(
            mirror < ca_at && ca_at < other,
            "the CA is the first mirror's: {docker}"
        );
        assert!(
            !docker.contains("server ="),
            "docker.io keeps its default server"
        );
        // Images named after the TLS registry itself.
        let direct = std::fs::read_to_string(certs.join("127.0.0.1:5443/hosts.toml")).unwrap();
        assert!(
            direct.contains(r#"server = "https://127.0.0.1:5443""#),
            "{direct}"
        );
        assert!(
            direct.contains(r#"[host."https://127.0.0.1:5443"]"#),
            "{direct}"
        );
        assert!(
            direct.contains(&format!("\nca = {}\n", toml_path(&ca.ca_file))),
            "{direct}"
        );
    }

    #[test]
    fn the_config_keeps_everything_under_the_root() {
        let mut opts = ContainerdOptions::new("/data/ctr");
        opts.cni_bin_dir = PathBuf::from("/usr/lib/cni");
        let config = config_toml(&opts, "overlayfs", Some("/nodeless-background"));
        for expected in [
            "version = 2\n",
            "root = \"/data/ctr/root\"",
            "state = \"/data/ctr/state\"",
            "address = \"/data/ctr/containerd.sock\"",
            &format!("sandbox_image = \"{}\"", pause::IMAGE),
            "restrict_oom_score_adj = true",
            "snapshotter = \"overlayfs\"",
            "runtime_type = \"io.containerd.runc.v2\"",
            "SystemdCgroup = false",
            "bin_dir = \"/usr/lib/cni\"",
            "conf_dir = \"/data/ctr/cni/net.d\"",
            "config_path = \"/data/ctr/certs.d\"",
            "stream_server_address = \"127.0.0.1\"",
            "\"io.containerd.snapshotter.v1.devmapper\"",
        ] {
            assert!(config.contains(expected), "{expected} missing in\n{config}");
        }
        assert!(!config.contains("/var/lib/containerd") && !config.contains("/run/containerd"));
        let background = r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.background.options]
  SystemdCgroup = false
  ShimCgroup = "/nodeless-background"
"#;
        assert!(config.contains(background), "{config}");
        let without = config_toml(&opts, "overlayfs", None);
        assert!(without.contains("runtimes.background.options]"));
        assert!(!without.contains("ShimCgroup"), "{without}");
    }

    #[test]
    fn preflight_names_the_package_of_a_missing_cni_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ContainerdOptions::new(dir.path());
        opts.cni_bin_dir = dir.path().to_path_buf();
        match preflight(&opts) {
            Err(ContainerdError::Missing { package, what }) => {
                // Without containerd installed the first missing thing is containerd itself.
                assert!(
                    package == "containernetworking-plugins"
                        || package == "containerd"
                        || package == "runc",
                    "{package}: {what}"
                );
            }
            other => panic!("expected Missing, got {other:?}"),
        }
    }

    #[test]
    fn a_root_is_superseded_once_the_pid_file_names_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ContainerdOptions::new(dir.path());
        assert!(superseded(&opts, 4242), "no pid file");
        std::fs::write(opts.pid_file(), "4242\n").unwrap();
        assert!(!superseded(&opts, 4242));
        assert!(superseded(&opts, 4243));
        std::fs::write(opts.pid_file(), "0\n").unwrap();
        assert!(superseded(&opts, 4242), "a start claimed the root");
        // Our own test process is not a containerd of this root.
        std::fs::write(opts.pid_file(), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(previous_containerd(&opts), None);
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&path, 2), vec!["c", "d"]);
        assert_eq!(tail(&path, 10).len(), 4);
        assert!(tail(&dir.path().join("absent"), 3).is_empty());
    }
}
