//! The Services the agent keeps in memory for the service environment variables (the
//! kubelet's service lister): one watch per agent instead of two LISTs per container start.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

/// How long a container start waits for the first list before it reads the API itself.
const READY_WAIT: Duration = Duration::from_secs(2);

/// A watched copy of every Service. Cheap to clone.
#[derive(Clone)]
pub struct ServiceCache {
    store: Store<Service>,
}

impl ServiceCache {
    /// A cache and the future that keeps it current (run it for as long as the agent runs).
    pub fn start(client: kube::Client) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let (store, writer) = reflector::store::<Service>();
        let watch = reflector::reflector(
            writer,
            watcher::watcher(Api::<Service>::all(client), watcher::Config::default())
                .modify(|service: &mut Service| service.metadata.managed_fields = None),
        )
        .default_backoff()
        .for_each(|event| {
            if let Err(error) = event {
                tracing::debug!(%error, "service watch");
            }
            std::future::ready(())
        });
        (Self { store }, watch)
    }

    /// The Services of `namespace`, or `None` while the first list is not complete (the
    /// caller then reads the API).
    pub(crate) async fn services(&self, namespace: &str) -> Option<Vec<Service>> {
        tokio::time::timeout(READY_WAIT, self.store.wait_until_ready())
            .await
            .ok()?
            .ok()?;
        Some(
            self.store
                .state()
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
                .map(|s| s.as_ref().clone())
                .collect(),
        )
    }
}
