//! The `Runtime` trait: what the agent asks of whatever runs its pods. It follows the shape of
//! CRI (`runtime.v1`): a pod is a sandbox (`RunPodSandbox`, which also gives the pod its IP
//! through CNI), containers are created and started in it (`CreateContainer` +
//! `StartContainer`), their state is read back (`ContainerStatus`) or awaited, and the sandbox
//! is stopped and removed (`StopPodSandbox`, `RemovePodSandbox`). Restart policy, back-off and
//! the pod's status are the agent's business, not the runtime's, as in the kubelet.

use std::net::IpAddr;
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
    /// Anything else the runtime could not do.
    #[error("{0}")]
    Failed(String),
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
    ) -> Result<StartedContainer, RuntimeError>;

    /// The current state of a container.
    async fn container_state(&self, container_id: &str) -> Result<ContainerState, RuntimeError>;

    /// Waits until a container ends and says how (CRI runtimes implement this with container
    /// events or by polling `ContainerStatus`).
    async fn wait_container(&self, container_id: &str) -> Result<ContainerExit, RuntimeError>;

    /// Stops every container of the sandbox, giving them `grace` to exit.
    async fn stop_sandbox(&self, sandbox: &Sandbox, grace: Duration) -> Result<(), RuntimeError>;

    /// Removes the sandbox and everything it holds (its IP returns to the pool).
    async fn remove_sandbox(&self, sandbox: &Sandbox) -> Result<(), RuntimeError>;
}
