//! kube-rs watchers that keep the [`ClusterView`] current.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::view::{self, ClusterView, ObjectKey, SharedView, SERVICE_NAME_LABEL};

/// How one kind of object updates the view.
struct Apply<K> {
    kind: &'static str,
    upsert: fn(&mut ClusterView, &K),
    remove: fn(&mut ClusterView, &ObjectKey),
    replace: fn(&mut ClusterView, &[K]),
    key: fn(&K) -> Option<ObjectKey>,
}

/// Starts the watchers of Services, EndpointSlices and (when `pods`) Pods; each sends on its
/// channel once its first list is in the view.
pub(crate) fn spawn_watchers(
    client: Client,
    view: SharedView,
    pods: bool,
) -> (Vec<JoinHandle<()>>, Vec<oneshot::Receiver<()>>) {
    let mut tasks = Vec::new();
    let mut synced = Vec::new();
    let (tx, rx) = oneshot::channel();
    tasks.push(tokio::spawn(run(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        view.clone(),
        Apply {
            kind: "Service",
            upsert: ClusterView::upsert_service,
            remove: ClusterView::remove_service,
            replace: ClusterView::replace_services,
            key: view::service_key,
        },
        tx,
    )));
    synced.push(rx);
    let (tx, rx) = oneshot::channel();
    tasks.push(tokio::spawn(run(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
        view.clone(),
        Apply {
            kind: "EndpointSlice",
            upsert: ClusterView::upsert_slice,
            remove: ClusterView::remove_slice,
            replace: ClusterView::replace_slices,
            key: view::slice_key,
        },
        tx,
    )));
    synced.push(rx);
    if pods {
        let (tx, rx) = oneshot::channel();
        tasks.push(tokio::spawn(run(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            view,
            Apply {
                kind: "Pod",
                upsert: ClusterView::upsert_pod,
                remove: ClusterView::remove_pod,
                replace: ClusterView::replace_pods,
                key: view::pod_key,
            },
            tx,
        )));
        synced.push(rx);
    }
    (tasks, synced)
}

/// Applies one watcher's events to the view, forever (errors are retried with backoff).
async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    view: SharedView,
    apply: Apply<K>,
    synced: oneshot::Sender<()>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut synced = Some(synced);
    let mut relist: Vec<K> = Vec::new();
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                warn!(kind = apply.kind, %error, "DNS watch failed; retrying");
                continue;
            }
        };
        let Ok(mut view) = view.write() else {
            warn!("DNS view lock poisoned; watcher stops");
            return;
        };
        match event {
            watcher::Event::Apply(object) => (apply.upsert)(&mut view, &object),
            watcher::Event::Delete(object) => {
                if let Some(key) = (apply.key)(&object) {
                    (apply.remove)(&mut view, &key);
                }
            }
            watcher::Event::Init => relist.clear(),
            watcher::Event::InitApply(object) => relist.push(object),
            watcher::Event::InitDone => {
                (apply.replace)(&mut view, &relist);
                debug!(kind = apply.kind, count = relist.len(), "DNS view relisted");
                relist = Vec::new();
                if let Some(synced) = synced.take() {
                    let _ = synced.send(());
                }
            }
        }
    }
}
