//! The `Runtime` trait: what the agent asks of whatever runs its pods. It follows the shape of
//! CRI (`runtime.v1`): a pod is a sandbox (`RunPodSandbox`, which also gives the pod its IP
//! through CNI), containers are created and started in it (`CreateContainer` +
//! `StartContainer`), their state is read back (`ContainerStatus`) or awaited, and the sandbox
//! is stopped and removed (`StopPodSandbox`, `RemovePodSandbox`). Restart policy, back-off and
//! the pod's status are the agent's business, not the runtime's, as in the kubelet.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod};

/// Errors a runtime reports.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No pod IP is left in the node's pod CIDR.
    #[error("no pod IP left in {0}")]
    NoAddress(String),
    /// The sandbox or container is not known to the runtime.
    #[error("not found: {0}")]
    NotFound(String),
    /// The image could not be pulled (the registry's message); the pod shows `ErrImagePull`.
    #[error("{0}")]
    ImagePull(String),
    /// The image is not present and the pull policy is `Never`; the pod shows
    /// `ErrImageNeverPull`.
    #[error("{0}")]
    ImageNeverPull(String),
    /// The container's configuration cannot be run as it is (e.g. `runAsNonRoot` with an
    /// image that runs as root); the pod shows `CreateContainerConfigError`.
    #[error("{0}")]
    CreateConfig(String),
    /// The runtime does not offer this (e.g. `exec` on the simulated runtime).
    #[error("not supported by this runtime: {0}")]
    Unsupported(String),
    /// Anything else the runtime could not do.
    #[error("{0}")]
    Failed(String),
}

/// A mount of a host directory or file into a container (volumes, `/etc/hosts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The path on the host (already prepared by the agent).
    pub host_path: PathBuf,
    /// Where it appears in the container.
    pub container_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Credentials for one registry, from an image pull secret (`kubernetes.io/dockerconfigjson`).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry host as written in the secret (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What the agent resolved for one container before it starts: its environment (all
/// `valueFrom`, `envFrom` and `$(VAR)` references resolved), its mounts, where its log goes,
/// and the credentials to pull its image with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInputs {
    /// The container's `command` (the image's entrypoint when empty), `$(VAR)` expanded.
    pub command: Vec<String>,
    /// The container's `args` (the image's cmd when both are empty), `$(VAR)` expanded.
    pub args: Vec<String>,
    /// The environment, in order.
    pub env: Vec<(String, String)>,
    /// The mounts, in order.
    pub mounts: Vec<Mount>,
    /// The container's log file (CRI log format), one per attempt.
    pub log_path: PathBuf,
    /// Credentials from the pod's image pull secrets.
    pub pull_auth: Vec<RegistryAuth>,
}

/// What a stream into a container asks for (`exec`, `attach`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRequest {
    /// The command of an `exec` (empty for `attach`).
    pub command: Vec<String>,
    /// A terminal is allocated.
    pub tty: bool,
    /// Standard input is streamed.
    pub stdin: bool,
    /// Standard output is streamed.
    pub stdout: bool,
    /// Standard error is streamed (never with a terminal).
    pub stderr: bool,
}

/// A pod's sandbox as the runtime created it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// The runtime's id of the sandbox.
    pub id: String,
    /// The pod's IP.
    pub ip: IpAddr,
}

/// A started container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartedContainer {
    /// The runtime's id, as it appears in `containerID` (`<runtime>://<id>`).
    pub id: String,
    /// The resolved image reference, as it appears in `imageID`.
    pub image_id: String,
    /// When the container started.
    pub started_at: SystemTime,
    /// How long pulling the image took; `None` when it was already present.
    pub pulled_in: Option<Duration>,
}

/// A pod's sandbox and containers found from an earlier run of the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adopted {
    /// The running sandbox.
    pub sandbox: Sandbox,
    /// The newest attempt of each container, by container name.
    pub containers: Vec<AdoptedContainer>,
}

/// One container found in an adopted sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptedContainer {
    /// The container's name in the pod.
    pub name: String,
    /// Its attempt (the restart count when it started).
    pub attempt: u32,
    /// As in [`StartedContainer`].
    pub started: StartedContainer,
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerExit {
    /// The process's exit code.
    pub exit_code: i32,
    /// The runtime's reason (`Completed`, `Error`, `OOMKilled`…).
    pub reason: String,
    /// When it finished.
    pub finished_at: SystemTime,
}

/// What a command run to completion in a container (`ExecSync`) gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit code.
    pub exit_code: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

/// The state of one container as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// The container runs.
    Running,
    /// The container ended.
    Exited(ContainerExit),
}

/// Runs pods. Implementations: [`crate::SimulatedRuntime`] now, containerd over CRI later.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's name and version, for the Node's `containerRuntimeVersion`
    /// (`simulated://0.1.0`, `containerd://1.6.20`).
    fn version(&self) -> String;

    /// Creates the pod's sandbox (its network namespace and IP). A pod whose former IP is in
    /// `pod.status.podIP` keeps it when the runtime can (an agent restart adopts its pods).
    async fn create_sandbox(&self, pod: &Pod) -> Result<Sandbox, RuntimeError>;

    /// Pulls the image if needed, creates and starts one container of the pod in its sandbox.
    /// `attempt` is the container's restart count.
    async fn start_container(
        &self,
        sandbox: &Sandbox,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        inputs: &ContainerInputs,
    ) -> Result<StartedContainer, RuntimeError>;

    /// The current state of a container.
    async fn container_state(&self, container_id: &str) -> Result<ContainerState, RuntimeError>;

    /// Waits until a container ends and says how (CRI runtimes implement this with container
    /// events or by polling `ContainerStatus`).
    async fn wait_container(&self, container_id: &str) -> Result<ContainerExit, RuntimeError>;

    /// Stops one container: SIGTERM, then SIGKILL once `grace` is over (CRI
    /// `StopContainer`). A container that is already gone is not an error.
    async fn stop_container(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let _ = (container_id, grace);
        Err(RuntimeError::Unsupported("stop container".into()))
    }

    /// Runs a command in a running container until it ends or `timeout` is over (zero: no
    /// limit), and returns its exit code and output (CRI `ExecSync`). Lifecycle hooks use it.
    async fn exec_sync(
        &self,
        container_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let _ = (container_id, command, timeout);
        Err(RuntimeError::Unsupported("exec".into()))
    }

    /// Whether containers are real processes (that lifecycle hooks can reach); the simulated
    /// runtime's are timers, and the agent skips their hooks.
    fn runs_processes(&self) -> bool {
        true
    }

    /// Stops every container of the sandbox, giving them `grace` to exit.
    async fn stop_sandbox(&self, sandbox: &Sandbox, grace: Duration) -> Result<(), RuntimeError>;

    /// Removes the sandbox and everything it holds (its IP returns to the pool).
    async fn remove_sandbox(&self, sandbox: &Sandbox) -> Result<(), RuntimeError>;

    /// Finds the sandbox and containers an earlier run of the agent left for this pod
    /// (the agent restarted while they ran), so that they are adopted rather than duplicated.
    async fn adopt(&self, pod: &Pod) -> Result<Option<Adopted>, RuntimeError> {
        let _ = pod;
        Ok(None)
    }

    /// Removes the sandboxes the runtime keeps warm for pods to come (none by default) and
    /// stops making more; called when the agent stops for good.
    async fn drain_pool(&self) {}

    /// Every sandbox the runtime holds, with the uid of its pod (to remove those of pods
    /// deleted while the agent was down). Sandboxes kept warm for pods to come are not
    /// listed: they are no pod's.
    async fn list_sandboxes(&self) -> Result<Vec<(Sandbox, String)>, RuntimeError> {
        Ok(Vec::new())
    }

    /// Prepares an `exec` into a running container and returns the URL of the runtime's
    /// streaming server that serves it (CRI `Exec`), which speaks the Kubernetes
    /// remote-command protocols over SPDY and WebSocket.
    async fn exec(
        &self,
        container_id: &str,
        request: &StreamRequest,
    ) -> Result<String, RuntimeError> {
        let _ = (container_id, request);
        Err(RuntimeError::Unsupported("exec".into()))
    }

    /// Prepares an `attach` to a running container's process; returns the streaming URL
    /// (CRI `Attach`).
    async fn attach(
        &self,
        container_id: &str,
        request: &StreamRequest,
    ) -> Result<String, RuntimeError> {
        let _ = (container_id, request);
        Err(RuntimeError::Unsupported("attach".into()))
    }

    /// Prepares a port forward into the sandbox's network namespace; returns the streaming
    /// URL (CRI `PortForward`).
    async fn port_forward(&self, sandbox: &Sandbox, ports: &[u16]) -> Result<String, RuntimeError> {
        let _ = (sandbox, ports);
        Err(RuntimeError::Unsupported("port-forward".into()))
    }
}
