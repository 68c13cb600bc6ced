//! Pieces the EndpointSlice and Endpoints controllers share, after upstream's
//! `staging/src/k8s.io/endpointslice/util`: which pods a Service selects, which of them belong
//! in its endpoints, how a service port resolves to a pod's port, the pod events that matter
//! to a Service, and a tracker that tells when the controller's cache shows its own writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use futures::{stream, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{applier, Action, Config};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::informer::{Change, SharedInformer};
use crate::pods::{is_pod_ready, map_selector_matches};

/// The annotation with the time of the last change that an Endpoints or EndpointSlice write
/// reflects (upstream's `v1.EndpointsLastChangeTriggerTime`).
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The label that marks the objects of a headless Service (upstream's `v1.IsHeadlessService`).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The selector of a Service, when this controller manages its endpoints: Services without a
/// selector (or with an empty one, which the API drops) and ExternalName Services get none.
pub fn service_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether the Service is headless (`clusterIP: None`).
pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Whether `publishNotReadyAddresses` is set.
pub fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The Service's ports.
pub fn service_ports(service: &Service) -> &[ServicePort] {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// The pods of the store that the Service selects (same namespace, selector matches).
pub fn selected_pods(service: &Service, pods: &Store<Pod>) -> Vec<Arc<Pod>> {
    let Some(selector) = service_selector(service) else {
        return Vec::new();
    };
    let namespace = service.namespace().unwrap_or_default();
    let mut selected = pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(namespace.as_str())
            && map_selector_matches(selector, p.labels())
    });
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    selected
}

/// The pod's IPv4 address: `status.podIPs` first, then `status.podIP`.
pub fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .find(|ip| ip.parse::<Ipv4Addr>().is_ok())
        .map(str::to_owned)
}

/// Whether a pod belongs in a Service's endpoints (upstream's `ShouldPodBeInEndpoints`): not
/// Succeeded or Failed, with an IP, and not terminating unless `include_terminating`.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return false;
    }
    if pod_ipv4(pod).is_none() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The pod port a service port reaches (upstream's `podutil.FindPort`): a numeric
/// `targetPort` as it is (the port itself when unset), a named one looked up among the pod's
/// container ports (and those of restartable init containers) with the same protocol.
pub fn find_port(pod: &Pod, service_port: &ServicePort) -> Option<i32> {
    match &service_port.target_port {
        None => Some(service_port.port),
        Some(IntOrString::Int(port)) => Some(*port),
        Some(IntOrString::String(name)) => {
            let protocol = service_port.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// Whether the pod's endpoint carries its hostname (upstream's `ShouldSetHostname`): the pod
/// has `spec.hostname` and its `spec.subdomain` names this Service in its namespace.
pub fn should_set_hostname(pod: &Pod, service: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.subdomain.is_some()
        && spec.subdomain == service.metadata.name
        && pod.metadata.namespace == service.metadata.namespace
}

/// The reference to a pod that endpoints carry (`kind: Pod`, namespace, name, uid).
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The time of the last change to the Service or its pods that a write reflects: the latest of
/// the Service's creation and each pod's creation, Ready transition and deletion.
pub fn last_change_time(service: &Service, pods: &[Arc<Pod>]) -> Option<Timestamp> {
    let pod_times = pods.iter().flat_map(|pod| {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_transition_time.as_ref());
        [
            pod.metadata.creation_timestamp.as_ref(),
            ready,
            pod.metadata.deletion_timestamp.as_ref(),
        ]
    });
    std::iter::once(service.metadata.creation_timestamp.as_ref())
        .chain(pod_times)
        .flatten()
        .map(|t| t.0)
        .max()
}

/// What of a pod the endpoints depend on; a pod event that leaves it alone triggers nothing
/// (upstream's `podEndpointsChanged` and label comparison).
fn endpoint_projection(pod: &Pod) -> Value {
    let spec = pod.spec.as_ref();
    let ports: Vec<Value> = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| json!([p.name, p.container_port, p.protocol]))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "labels": pod.metadata.labels,
        "deleting": pod.metadata.deletion_timestamp.is_some(),
        "phase": pod.status.as_ref().and_then(|s| s.phase.clone()),
        "ip": pod_ipv4(pod),
        "ready": is_pod_ready(pod),
        "node": spec.and_then(|s| s.node_name.clone()),
        "hostname": spec.and_then(|s| s.hostname.clone()),
        "subdomain": spec.and_then(|s| s.subdomain.clone()),
        "ports": ports,
    })
}

/// The Services in `namespace` whose selector matches any of `label_sets`.
fn services_selecting(
    services: &Store<Service>,
    namespace: &str,
    label_sets: &[&BTreeMap<String, String>],
) -> Vec<ObjectRef<Service>> {
    services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .filter(|s| {
            service_selector(s)
                .is_some_and(|sel| label_sets.iter().any(|l| map_selector_matches(sel, l)))
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The Services to reconcile after a pod event, given the pod as the store knew it before:
/// those selecting its old or new labels, when anything the endpoints depend on changed.
fn services_of_pod_event(
    change: &Change<Pod>,
    services: &Store<Service>,
) -> Vec<ObjectRef<Service>> {
    let (pod, deleted) = match &change.event {
        Event::Apply(pod) | Event::InitApply(pod) => (pod, false),
        Event::Delete(pod) => (pod, true),
        Event::Init | Event::InitDone => return Vec::new(),
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let old = change.previous.as_ref();
    if !deleted {
        if let Some(old) = &old {
            if endpoint_projection(old) == endpoint_projection(pod) {
                return Vec::new();
            }
        }
    }
    let mut label_sets = vec![pod.labels()];
    if let Some(old) = &old {
        label_sets.push(old.labels());
    }
    services_selecting(services, &namespace, &label_sets)
}

/// A watch of every pod that feeds `writer` and yields the Services each event concerns;
/// after a re-list (when deletions may have been missed) it yields every Service.
/// Runs `reconcile` (named `what` in logs) for every Service that `triggers` name or whose
/// selected pods change, one at a time per Service (kube-runtime's applier), retrying failed
/// ones after [`crate::RETRY_AFTER`]; until the watches end. What the Service controllers
/// (endpoints, endpointslice) share.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile_services<C, F, Fut>(
    what: &'static str,
    services: Store<Service>,
    pods: &SharedInformer<Pod>,
    context: Arc<C>,
    triggers: Vec<BoxStream<'static, Result<ObjectRef<Service>, watcher::Error>>>,
    mut reconcile: F,
) where
    C: Send + Sync + 'static,
    F: FnMut(Arc<Service>, Arc<C>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, crate::ControllerError>> + Send + 'static,
{
    let mut queue = triggers;
    queue.push(pod_triggers(pods, services.clone()).boxed());
    applier(
        move |service, ctx| Box::pin(reconcile(service, ctx)),
        move |service: Arc<Service>, error: &crate::ControllerError, _ctx: Arc<C>| {
            tracing::info!(service = %crate::pods::object_key(&service.metadata), %error, "{what} sync failed");
            Action::requeue(crate::RETRY_AFTER)
        },
        context,
        services,
        stream::select_all(queue),
        Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "{what} reconcile");
        }
    })
    .await;
}

pub fn pod_triggers(
    pods: &SharedInformer<Pod>,
    services: Store<Service>,
) -> impl Stream<Item = Result<ObjectRef<Service>, watcher::Error>> + Send {
    pods.subscribe()
        .map(Ok::<_, watcher::Error>)
        .map_ok(move |change| {
            let mut triggers = services_of_pod_event(&change, &services);
            if matches!(change.event, Event::InitDone) {
                triggers = services
                    .state()
                    .iter()
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect();
            }
            stream::iter(triggers.into_iter().map(Ok))
        })
        .try_flatten()
}

/// What a controller wrote for one Service and has not seen in its cache yet (upstream's
/// `EndpointSliceTracker`): until the cache shows every write, a reconcile would act on a
/// stale view (and create twice), so it waits for the watch to catch up.
#[derive(Debug, Default)]
pub struct WriteTracker {
    by_service: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    written: HashMap<String, u64>,
    deleted: HashSet<String>,
}

impl WriteTracker {
    /// Records that object `name` of the Service `service_key` was written at
    /// `resource_version`.
    pub fn written(&self, service_key: &str, name: &str, resource_version: Option<&str>) {
        let Some(rv) = resource_version.and_then(|rv| rv.parse::<u64>().ok()) else {
            return;
        };
        let mut map = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        let pending = map.entry(service_key.to_owned()).or_default();
        pending.deleted.remove(name);
        pending.written.insert(name.to_owned(), rv);
    }

    /// Records that object `name` of the Service `service_key` was deleted.
    pub fn deleted(&self, service_key: &str, name: &str) {
        let mut map = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        let pending = map.entry(service_key.to_owned()).or_default();
        pending.written.remove(name);
        pending.deleted.insert(name.to_owned());
    }

    /// Whether the cache, given as `name → resourceVersion` of the Service's objects, shows
    /// every write recorded for it; once it does the records are dropped.
    pub fn cache_is_current(
        &self,
        service_key: &str,
        cached: &HashMap<String, Option<u64>>,
    ) -> bool {
        let mut map = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pending) = map.get(service_key) else {
            return true;
        };
        let writes_seen = pending.written.iter().all(|(name, rv)| {
            cached
                .get(name)
                .is_some_and(|cached_rv| cached_rv.is_none_or(|c| c >= *rv))
        });
        let deletions_seen = pending
            .deleted
            .iter()
            .all(|name| !cached.contains_key(name));
        if writes_seen && deletions_seen {
            map.remove(service_key);
            true
        } else {
            false
        }
    }

    /// Forgets a Service (it was deleted).
    pub fn forget(&self, service_key: &str) {
        let mut map = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(service_key);
    }
}

/// A resourceVersion as a number, for [`WriteTracker::cache_is_current`].
pub fn resource_version_number(resource_version: Option<&str>) -> Option<u64> {
    resource_version.and_then(|rv| rv.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn service(value: Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn named_target_port_is_looked_up_with_its_protocol() {
        let p = pod(json!({"spec": {"containers": [{"name": "c", "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "http", "containerPort": 8080}
        ]}]}}));
        let port = |v: Value| -> ServicePort { serde_json::from_value(v).unwrap() };
        assert_eq!(
            find_port(
                &p,
                &port(json!({"port": 80, "targetPort": "http", "protocol": "TCP"}))
            ),
            Some(8080)
        );
        assert_eq!(
            find_port(
                &p,
                &port(json!({"port": 53, "targetPort": "dns", "protocol": "TCP"}))
            ),
            None
        );
        assert_eq!(
            find_port(
                &p,
                &port(json!({"port": 53, "targetPort": "dns", "protocol": "UDP"}))
            ),
            Some(53)
        );
        assert_eq!(
            find_port(&p, &port(json!({"port": 80, "targetPort": 9000}))),
            Some(9000)
        );
        assert_eq!(find_port(&p, &port(json!({"port": 81}))), Some(81));
    }

    #[test]
    fn terminal_pods_and_pods_without_ip_are_left_out() {
        let running = pod(json!({"status": {"phase": "Running", "podIP": "10.0.0.1"}}));
        assert!(should_pod_be_in_endpoints(&running, false));
        let no_ip = pod(json!({"status": {"phase": "Pending"}}));
        assert!(!should_pod_be_in_endpoints(&no_ip, true));
        let done = pod(json!({"status": {"phase": "Succeeded", "podIP": "10.0.0.1"}}));
        assert!(!should_pod_be_in_endpoints(&done, true));
        let deleting = pod(
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}}),
        );
        assert!(should_pod_be_in_endpoints(&deleting, true));
        assert!(!should_pod_be_in_endpoints(&deleting, false));
    }

    #[test]
    fn hostname_only_for_pods_in_the_service_subdomain() {
        let svc = service(json!({"metadata": {"name": "web", "namespace": "ns"}}));
        let member = pod(json!({"metadata": {"namespace": "ns"},
            "spec": {"containers": [], "hostname": "web-0", "subdomain": "web"}}));
        assert!(should_set_hostname(&member, &svc));
        let other = pod(json!({"metadata": {"namespace": "ns"},
            "spec": {"containers": [], "hostname": "web-0", "subdomain": "db"}}));
        assert!(!should_set_hostname(&other, &svc));
    }

    #[test]
    fn selectorless_and_external_name_services_are_not_managed() {
        assert!(service_selector(&service(json!({"spec": {}}))).is_none());
        assert!(service_selector(&service(json!({"spec": {"selector": {}}}))).is_none());
        assert!(service_selector(&service(
            json!({"spec": {"type": "ExternalName", "selector": {"a": "b"}}})
        ))
        .is_none());
        assert!(service_selector(&service(json!({"spec": {"selector": {"a": "b"}}}))).is_some());
    }

    #[test]
    fn tracker_waits_for_the_cache_to_show_writes_and_deletions() {
        let tracker = WriteTracker::default();
        tracker.written("ns/web", "web-abc", Some("10"));
        tracker.deleted("ns/web", "web-old");
        let mut cached = HashMap::new();
        cached.insert("web-old".to_owned(), Some(5));
        assert!(!tracker.cache_is_current("ns/web", &cached));
        cached.remove("web-old");
        cached.insert("web-abc".to_owned(), Some(9));
        assert!(!tracker.cache_is_current("ns/web", &cached));
        cached.insert("web-abc".to_owned(), Some(10));
        assert!(tracker.cache_is_current("ns/web", &cached));
        assert!(tracker.cache_is_current("ns/other", &HashMap::new()));
    }

    #[test]
    fn only_endpoint_relevant_pod_changes_count() {
        let a = pod(
            json!({"metadata": {"labels": {"app": "x"}, "annotations": {"a": "1"}},
            "status": {"podIP": "10.0.0.1"}}),
        );
        let mut b = a.clone();
        b.metadata.annotations = None;
        assert_eq!(endpoint_projection(&a), endpoint_projection(&b));
        b.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "y".to_owned())]));
        assert_ne!(endpoint_projection(&a), endpoint_projection(&b));
    }
}
