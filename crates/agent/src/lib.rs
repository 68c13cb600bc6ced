//! The agent: a kube-rs client of the API server that registers one virtual Node, keeps its
//! Lease and Ready heartbeat fresh, and runs the pods bound to it through a [`Runtime`].
//!
//! [`run`] uses the [`SimulatedRuntime`] (pods without containers, for tests and benchmarks);
//! [`run_with_runtime`] takes any runtime (containerd over CRI, later).

pub mod config;
mod events;
pub mod inputs;
pub mod ipam;
pub mod logs;
pub mod node;
mod pods;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod simulated;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use config::{AgentConfig, SimulatedConfig};
pub use ipam::{PodCidr, PodIpAllocator};
pub use runtime::Runtime;
pub use simulated::SimulatedRuntime;

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be built.
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// A route between the nodes' pod CIDRs could not be read or changed.
    #[error("pod routes: {0}")]
    Route(String),
}

/// How long the agent waits before retrying its registration.
const REGISTER_RETRY: Duration = Duration::from_secs(1);

/// Runs the agent with the simulated runtime until the future is dropped.
pub async fn run(client: kube::Client, config: AgentConfig) -> Result<(), AgentError> {
    let addresses = Arc::new(PodIpAllocator::new(config.pod_cidr));
    let runtime = Arc::new(SimulatedRuntime::new(config.simulated.clone(), addresses));
    run_with_runtime(client, config, runtime).await
}

/// Runs the agent with a given runtime until the future is dropped: registers the Node, then
/// keeps its status and Lease fresh and runs its pods.
pub async fn run_with_runtime(
    client: kube::Client,
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
) -> Result<(), AgentError> {
    if config.node_name.is_empty() {
        return Err(AgentError::Config("the node name is empty".into()));
    }
    let version = runtime.version();
    let since = status::format_time(SystemTime::now());
    let node_uid = loop {
        match node::register(&client, &config, &version, &since).await {
            Ok(uid) => break uid,
            Err(error) => {
                tracing::warn!(%error, node = %config.node_name, "registering the node; retrying");
                tokio::time::sleep(REGISTER_RETRY).await;
            }
        }
    };
    let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = pods::write_statuses(client.clone(), status_rx, config.status_write_concurrency);
    let (services, service_watch) = inputs::ServiceCache::start(client.clone());
    let shared = Arc::new(pods::Shared {
        services,
        client: client.clone(),
        runtime,
        config: config.clone(),
        status: status_tx,
        events: events::PodEvents::start(client.clone(), &config.node_name),
    });
    let heartbeat = keep_node_fresh(client, config, version, since, node_uid);
    tokio::select! {
        _ = pods::run_pods(shared) => tracing::warn!("the pod watch ended"),
        _ = writer => tracing::warn!("the status writer ended"),
        _ = heartbeat => {}
        _ = service_watch => tracing::warn!("the service watch ended"),
    }
    Ok(())
}

/// Renews the Lease and writes the Node's status at their intervals; registers the Node again
/// if it was deleted.
async fn keep_node_fresh(
    client: kube::Client,
    config: AgentConfig,
    version: String,
    mut since: String,
    mut node_uid: String,
) {
    let mut lease_tick = tokio::time::interval(config.lease_renew_interval);
    let mut status_tick = tokio::time::interval(config.node_status_interval);
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status_tick.tick().await;
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                if let Err(error) = node::renew_lease(&client, &config, &node_uid).await {
                    tracing::warn!(%error, "renewing the node lease");
                } else if node::ready_is_stale(&client, &config).await {
                    // Marked Unknown while unheard of: Ready again now, with a new transition.
                    since = status::format_time(std::time::SystemTime::now());
                    tracing::info!("the node is not Ready in the API; writing its status now");
                    if let Err(error) = node::write_status(&client, &config, &version, &since).await {
                        tracing::warn!(%error, "writing the node status");
                    }
                }
            }
            _ = status_tick.tick() => {
                match node::write_status(&client, &config, &version, &since).await {
                    Ok(_) => {}
                    Err(AgentError::Kube(kube::Error::Api(e))) if e.code == 404 => {
                        match node::register(&client, &config, &version, &since).await {
                            Ok(uid) => node_uid = uid,
                            Err(error) => tracing::warn!(%error, "registering the node again"),
                        }
                    }
                    Err(error) => tracing::warn!(%error, "writing the node status"),
                }
            }
        }
    }
}
