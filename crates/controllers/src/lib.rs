//! The cluster's controllers. Each is an ordinary kube-rs client of the API server, in a
//! module of its own, so that they run the same in one process (`nodeless up`) or beside a
//! remote API server.

pub mod cronjob;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
mod events;
pub mod gc;
pub mod informer;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod node_lifecycle;
pub mod pods;
pub mod replicaset;
pub mod resource_quota;
pub mod root_ca_publisher;
pub mod scheduler;
pub mod service_account;
pub mod service_pods;
pub mod statefulset;
pub mod volumes;
pub mod watch;

use std::time::Duration;

/// Errors of the controllers.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("namespace {0} still has content")]
    NamespaceNotEmpty(String),
}

/// How long a controller waits before retrying a failed reconcile.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Runs every controller and the scheduler in this process, with no leader election; returns
/// only if one of them stops.
pub async fn run_controllers(
    client: kube::Client,
    node_lifecycle: node_lifecycle::NodeLifecycleConfig,
) {
    let informers = informer::Informers::default();
    tokio::select! {
        _ = informers.run(client.clone()) => {}
        _ = node_lifecycle::run(client.clone(), node_lifecycle, &informers) => {}
        _ = namespace::run(client.clone()) => {}
        _ = scheduler::run(client.clone(), &informers) => {}
        _ = gc::run(client.clone(), &informers) => {}
        _ = replicaset::run_replicasets(client.clone(), &informers) => {}
        _ = deployment::run(client.clone()) => {}
        _ = replicaset::run_replication_controllers(client.clone(), &informers) => {}
        _ = job::run(client.clone(), &informers) => {}
        _ = cronjob::run(client.clone()) => {}
        _ = statefulset::run(client.clone(), &informers) => {}
        _ = volumes::run(client.clone()) => {}
        _ = endpointslice::run(client.clone(), &informers) => {}
        _ = endpoints::run(client.clone(), &informers) => {}
        _ = resource_quota::run(client.clone(), &informers) => {}
        _ = service_account::run(client.clone()) => {}
        _ = root_ca_publisher::run(client.clone()) => {}
    }
}

/// Runs every controller and the scheduler while this server holds the Lease
/// `kube-system/nodeless-controllers`, until `shutdown` completes (then releases the Lease).
///
/// A lone server acquires the Lease at once; of several servers on one store, one runs the
/// controllers and another takes over when it stops renewing (see [`leader`]). `more_work`
/// makes the other cluster-wide loops of the server process (built elsewhere: the CSR
/// signer, the meter…) that must run once per cluster too, under the same Lease.
pub async fn run_all<W, F>(
    client: kube::Client,
    node_lifecycle: node_lifecycle::NodeLifecycleConfig,
    mut more_work: W,
    shutdown: impl std::future::Future<Output = ()> + Send,
) where
    W: FnMut() -> F,
    F: std::future::Future<Output = ()>,
{
    let work_client = client.clone();
    leader::run_when_leader(
        client,
        leader::LeaderElection::for_controllers(),
        move || {
            let controllers = run_controllers(work_client.clone(), node_lifecycle.clone());
            let more = more_work();
            async move {
                tokio::join!(controllers, more);
            }
        },
        shutdown,
    )
    .await
}
