//! What a container needs before it starts, resolved by the agent from the API as the kubelet
//! does: its environment ([`env`]: `envFrom`, `env`, `$(VAR)` expansion, field and resource
//! references), its volumes on the host and their mounts ([`volumes`], written the kubelet's
//! atomic way by [`writer`]), its log file and its image pull credentials
//! ([`pull_secrets`]), all gathered in a [`ContainerInputs`].

mod env;
pub mod expand;
mod pull_secrets;
mod service_account_token;
mod service_cache;
mod service_links;
mod sources;
mod volumes;
pub mod writer;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::runtime::ContainerInputs;
use sources::Sources;

pub use service_cache::ServiceCache;
pub use volumes::LOCAL_CSI_DRIVER;

/// Errors resolving a container's inputs; the container waits with
/// `CreateContainerConfigError` and the message.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A referenced object or key is missing (`configmap "x" not found`).
    #[error("{0}")]
    Missing(String),
    /// The pod asks for something that cannot be given (a `subPath` with `..`, an
    /// unsupported volume type or field path).
    #[error("{0}")]
    Invalid(String),
    /// The API could not be read.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A file or folder could not be written.
    #[error("{0}")]
    Io(String),
}

/// Something worth a Warning event on the pod that does not stop the container (upstream's
/// `InvalidEnvironmentVariableNames`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputWarning {
    /// The event's reason.
    pub reason: &'static str,
    /// The event's message.
    pub message: String,
}

/// A container's resolved inputs and the warnings met on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreparedInputs {
    /// What the runtime needs.
    pub inputs: ContainerInputs,
    /// Warning events to record on the pod.
    pub warnings: Vec<InputWarning>,
}

/// One lock per pod: the containers of a pod prepare their shared volumes one at a time.
static POD_LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn pod_lock(pod_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = POD_LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(pod_uid.to_string()).or_default().clone()
}

/// Resolves the inputs of one attempt of a container; `pod_ip` is the sandbox's IP (for
/// `fieldRef: status.podIP`). Warnings (skipped `envFrom` keys) are logged; use
/// [`prepare_with_warnings`] to record them as events.
pub async fn prepare(
    client: &kube::Client,
    services: Option<&ServiceCache>,
    state_dir: &Path,
    pod: &Pod,
    pod_ip: IpAddr,
    container: &Container,
    attempt: u32,
) -> Result<ContainerInputs, InputError> {
    let prepared =
        prepare_with_warnings(client, services, state_dir, pod, pod_ip, container, attempt).await?;
    for warning in &prepared.warnings {
        tracing::warn!(
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            container = %container.name,
            reason = warning.reason,
            "{}",
            warning.message
        );
    }
    Ok(prepared.inputs)
}

/// [`prepare`], returning the warnings instead of logging them. Every volume of the pod is
/// set up (as the kubelet mounts all of a pod's volumes before its containers start), then
/// the environment is resolved, then the container's mounts and pull credentials.
pub async fn prepare_with_warnings(
    client: &kube::Client,
    services: Option<&ServiceCache>,
    state_dir: &Path,
    pod: &Pod,
    pod_ip: IpAddr,
    container: &Container,
    attempt: u32,
) -> Result<PreparedInputs, InputError> {
    let mut sources = Sources::new(client, pod);
    sources.use_service_cache(services.cloned());
    resolve(&mut sources, state_dir, pod, pod_ip, container, attempt).await
}

async fn resolve(
    sources: &mut Sources<'_>,
    state_dir: &Path,
    pod: &Pod,
    pod_ip: IpAddr,
    container: &Container,
    attempt: u32,
) -> Result<PreparedInputs, InputError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let host_volumes = {
        let lock = pod_lock(&uid);
        let _guard = lock.lock().await;
        volumes::materialise(sources, state_dir, pod, Some(pod_ip)).await?
    };
    let (environment, warnings) = env::resolve(sources, pod, pod_ip, container).await?;
    let env = environment.into_vars();
    let env_map: HashMap<String, String> = env.iter().cloned().collect();
    let mounts = volumes::container_mounts(container, &host_volumes, &env_map)?;
    let pull_auth = pull_secrets::resolve(sources, pod).await?;
    // `$(VAR)` in command and args expands against the container's environment, as upstream.
    let expand_all = |items: &Option<Vec<String>>| -> Vec<String> {
        items
            .iter()
            .flatten()
            .map(|item| expand::expand(item, |name| env_map.get(name).cloned()))
            .collect()
    };
    let command = expand_all(&container.command);
    let args = expand_all(&container.args);
    Ok(PreparedInputs {
        inputs: ContainerInputs {
            command,
            args,
            env,
            mounts,
            log_path: crate::logs::container_log_path(state_dir, pod, &container.name, attempt),
            pull_auth,
        },
        warnings,
    })
}

/// Re-projects the configMap, secret, downwardAPI and projected volumes of a running pod
/// (`pod` as the API has it now: labels and annotations feed downwardAPI files). Volumes not
/// set up yet are left alone; content that did not change is not rewritten. All volumes are
/// tried; the first error is returned.
pub async fn refresh(client: &kube::Client, state_dir: &Path, pod: &Pod) -> Result<(), InputError> {
    let mut sources = Sources::new(client, pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let lock = pod_lock(&uid);
    let _guard = lock.lock().await;
    volumes::refresh(&mut sources, state_dir, pod).await
}

/// Removes what the agent set up on the host for a pod: unmounts its memory-backed
/// volumes and deletes `state_dir/pods/<uid>`. Persistent volumes
/// (`state_dir/volumes/<handle>`) stay.
pub fn cleanup(state_dir: &Path, pod_uid: &str) -> Result<(), InputError> {
    let result = volumes::cleanup(state_dir, pod_uid);
    service_account_token::forget(pod_uid);
    POD_LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(pod_uid);
    result
}

/// Cleans up, as [`cleanup`] does, the host state of every pod under `state_dir/pods` whose
/// uid is not in `live`: pods deleted while the agent was down. Returns the uids cleaned;
/// a pod that cannot be cleaned is logged and skipped.
pub fn cleanup_except(state_dir: &Path, live: &HashSet<String>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("pods")) else {
        return Vec::new();
    };
    let mut cleaned = Vec::new();
    for entry in entries.flatten() {
        let Some(uid) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if live.contains(&uid) || !entry.path().is_dir() {
            continue;
        }
        match cleanup(state_dir, &uid) {
            Ok(()) => {
                tracing::info!(pod_uid = %uid, "removed the volumes of a deleted pod");
                cleaned.push(uid);
            }
            Err(error) => {
                tracing::warn!(%error, pod_uid = %uid, "removing the volumes of a deleted pod")
            }
        }
    }
    cleaned.sort();
    cleaned
}

#[cfg(test)]
mod tests;
