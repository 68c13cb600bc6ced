//! The EndpointSlice controller, after upstream's `pkg/controller/endpointslice` and the
//! reconciler of `staging/src/k8s.io/endpointslice`.
//!
//! For every Service with a selector it keeps IPv4 EndpointSlices, owned by the Service and
//! labelled `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`, with one
//! endpoint per selected pod that has an IP. Pods whose named target ports resolve to different
//! numbers go into different slices; a slice holds at most [`MAX_ENDPOINTS_PER_SLICE`]
//! endpoints. A Service without pods keeps one empty placeholder slice, as upstream. Slices
//! without the managed-by label are never touched.
//!
//! [`plan_slices`] is the pure reconcile (Service + pods + existing slices → what to create,
//! update and delete); [`run`] drives it from watches of Services, pods and managed slices.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};

use crate::pods::{controller_owner_ref, is_not_found, is_pod_ready, object_key};
use crate::service_pods::{
    find_port, is_headless, last_change_time, pod_ipv4, pod_reference, publishes_not_ready,
    reconcile_services, resource_version_number, selected_pods, service_ports, service_selector,
    should_pod_be_in_endpoints, should_set_hostname, WriteTracker, HEADLESS_LABEL,
    LAST_CHANGE_TRIGGER_TIME,
};
use crate::{ControllerError, RETRY_AFTER};

/// The label that names a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that names the controller managing a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The most endpoints in one slice (upstream's default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The only address type this controller writes.
pub const ADDRESS_TYPE: &str = "IPv4";

/// What one reconcile of a Service writes.
#[derive(Debug, Default, PartialEq)]
pub struct SlicePlan {
    /// New slices (named by `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Changed slices, with the resourceVersion they were read at.
    pub update: Vec<EndpointSlice>,
    /// Slices to delete.
    pub delete: Vec<EndpointSlice>,
}

impl SlicePlan {
    /// Whether the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The identity of an endpoint inside a Service's slices (upstream's endpoint hash):
/// addresses and the pod it stands for.
type EndpointKey = (Vec<String>, Option<String>, Option<String>);

fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    let target = endpoint.target_ref.as_ref();
    (
        endpoint.addresses.clone(),
        target.and_then(|t| t.namespace.clone()),
        target.and_then(|t| t.name.clone()),
    )
}

/// A canonical form of a slice's ports: slices are grouped by it.
fn ports_key(ports: &[EndpointPort]) -> Vec<(String, String, i32, String)> {
    let mut key: Vec<_> = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.port.unwrap_or_default(),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    key.sort();
    key
}

/// The endpoint ports of a pod: every service port whose target resolves on it.
pub fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service_ports(service)
        .iter()
        .filter_map(|sp| {
            let port = find_port(pod, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// The endpoint of a pod (upstream's `podToEndpoint`): `serving` is the Ready condition,
/// `ready` is serving and not terminating (or always, with `publishNotReadyAddresses`).
pub fn pod_to_endpoint(pod: &Pod, service: &Service, ip: String) -> Endpoint {
    let serving = is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publishes_not_ready(service) || (serving && !terminating);
    let spec = pod.spec.as_ref();
    Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: should_set_hostname(pod, service)
            .then(|| spec.and_then(|s| s.hostname.clone()))
            .flatten(),
        node_name: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(pod_reference(pod)),
        ..Endpoint::default()
    }
}

/// The labels of the Service's slices: the Service's own, the headless marker, and the two
/// reserved labels.
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .labels()
        .iter()
        .filter(|(k, _)| {
            k.as_str() != SERVICE_NAME_LABEL
                && k.as_str() != MANAGED_BY_LABEL
                && k.as_str() != HEADLESS_LABEL
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(SERVICE_NAME_LABEL.into(), service.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

/// The slice name prefix (`<service>-`, or the bare name when that would be too long).
fn slice_prefix(service: &Service) -> String {
    let name = service.name_any();
    if name.len() + 1 > 253 - 5 {
        name
    } else {
        format!("{name}-")
    }
}

fn new_slice(service: &Service, ports: &[EndpointPort]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(slice_prefix(service)),
            namespace: service.namespace(),
            labels: Some(slice_labels(service)),
            owner_references: Some(vec![controller_owner_ref(service)]),
            ..ObjectMeta::default()
        },
        address_type: ADDRESS_TYPE.into(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    slice.metadata.owner_references.iter().flatten().any(|r| {
        r.controller == Some(true)
            && r.kind == "Service"
            && Some(&r.uid) == service.metadata.uid.as_ref()
    })
}

fn is_placeholder(slice: &EndpointSlice, service: &Service) -> bool {
    slice.endpoints.is_empty()
        && slice.ports.as_deref().unwrap_or_default().is_empty()
        && slice.address_type == ADDRESS_TYPE
        && owned_by(slice, service)
        && slice.metadata.labels.as_ref() == Some(&slice_labels(service))
}

/// The pure reconcile of one Service (upstream's `reconciler.reconcile` for IPv4): from the
/// selected pods and the Service's existing managed slices, the slices to create, update and
/// delete so that every wanted endpoint is in exactly one slice with its resolved ports.
///
/// Existing slices keep their endpoints where they can (no churn); new endpoints fill slices
/// that change anyway, then the fullest unchanged slice they fit in, then new slices.
/// `trigger_time` is stamped on every slice written.
pub fn plan_slices(
    service: &Service,
    pods: &[Arc<Pod>],
    existing: &[Arc<EndpointSlice>],
    max_per_slice: usize,
    trigger_time: Option<Timestamp>,
) -> SlicePlan {
    let max_per_slice = max_per_slice.max(1);
    let mut plan = SlicePlan::default();

    // Desired endpoints, grouped by their resolved ports.
    type Group = (Vec<EndpointPort>, Vec<(EndpointKey, Endpoint)>);
    let mut desired: BTreeMap<Vec<(String, String, i32, String)>, Group> = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let ports = endpoint_ports(service, pod);
        let endpoint = pod_to_endpoint(pod, service, ip);
        let group = desired
            .entry(ports_key(&ports))
            .or_insert_with(|| (ports, Vec::new()));
        group.1.push((endpoint_key(&endpoint), endpoint));
    }

    // Existing slices: those not ours or of another address type go; the rest by ports.
    let mut existing_by_ports: BTreeMap<_, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if slice.address_type != ADDRESS_TYPE || !owned_by(slice, service) {
            plan.delete.push(slice.as_ref().clone());
            continue;
        }
        existing_by_ports
            .entry(ports_key(slice.ports.as_deref().unwrap_or_default()))
            .or_default()
            .push(slice.as_ref());
    }
    for (key, slices) in &existing_by_ports {
        if !desired.contains_key(key) {
            plan.delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }

    let labels = slice_labels(service);
    for (key, (ports, endpoints)) in desired {
        let mut wanted: HashMap<EndpointKey, Endpoint> = HashMap::new();
        let mut order: Vec<EndpointKey> = Vec::new();
        for (k, e) in endpoints {
            if wanted.insert(k.clone(), e).is_none() {
                order.push(k);
            }
        }
        let mut to_update: Vec<EndpointSlice> = Vec::new();
        let mut unchanged: Vec<EndpointSlice> = Vec::new();
        for slice in existing_by_ports.get(&key).into_iter().flatten() {
            let mut kept = Vec::new();
            let mut changed = false;
            for endpoint in &slice.endpoints {
                match wanted.remove(&endpoint_key(endpoint)) {
                    Some(want) => {
                        changed |= &want != endpoint;
                        kept.push(want);
                    }
                    None => changed = true,
                }
            }
            let labels_changed = slice.metadata.labels.as_ref() != Some(&labels);
            if changed && kept.is_empty() {
                plan.delete.push((*slice).clone());
            } else if changed || labels_changed {
                let mut updated = (*slice).clone();
                updated.endpoints = kept;
                updated.metadata.labels = Some(labels.clone());
                to_update.push(updated);
            } else {
                unchanged.push((*slice).clone());
            }
        }
        let mut remaining: std::collections::VecDeque<Endpoint> =
            order.iter().filter_map(|k| wanted.remove(k)).collect();

        // Fill the slices that change anyway.
        for slice in &mut to_update {
            while slice.endpoints.len() < max_per_slice {
                match remaining.pop_front() {
                    Some(e) => slice.endpoints.push(e),
                    None => break,
                }
            }
        }
        // Then the fullest unchanged slice the rest fits in, then new slices.
        let mut created: Vec<EndpointSlice> = Vec::new();
        while !remaining.is_empty() {
            let fits = (remaining.len() < max_per_slice)
                .then(|| {
                    unchanged
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.endpoints.len() + remaining.len() <= max_per_slice)
                        .max_by_key(|(_, s)| s.endpoints.len())
                        .map(|(i, _)| i)
                })
                .flatten();
            let mut slice = match fits {
                Some(i) => unchanged.remove(i),
                None => new_slice(service, &ports),
            };
            while slice.endpoints.len() < max_per_slice {
                match remaining.pop_front() {
                    Some(e) => slice.endpoints.push(e),
                    None => break,
                }
            }
            if slice.metadata.name.is_some() {
                to_update.push(slice);
            } else {
                created.push(slice);
            }
        }
        plan.update.extend(to_update);
        plan.create.extend(created);
    }

    // A Service without endpoints keeps one placeholder slice.
    let kept = existing.len() - plan.delete.len() + plan.create.len();
    if kept == 0 {
        match plan.delete.iter().position(|s| is_placeholder(s, service)) {
            Some(i) if plan.delete.len() == 1 => {
                plan.delete.remove(i);
            }
            _ => plan.create.push(new_slice(service, &[])),
        }
    }

    // A slice to delete becomes a slice to create, by an update (upstream's `finalize`):
    // one write instead of two, and the slice keeps its name.
    let mut index = 0;
    while index < plan.delete.len() && !plan.create.is_empty() {
        let old = &plan.delete[index];
        if old.address_type == ADDRESS_TYPE && owned_by(old, service) {
            let old = plan.delete.remove(index);
            let mut reused = plan.create.remove(0);
            reused.metadata.generate_name = None;
            reused.metadata.name = old.metadata.name;
            reused.metadata.resource_version = old.metadata.resource_version;
            plan.update.push(reused);
        } else {
            index += 1;
        }
    }

    if let Some(time) = trigger_time {
        for slice in plan.create.iter_mut().chain(plan.update.iter_mut()) {
            slice
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(LAST_CHANGE_TRIGGER_TIME.into(), time.to_string());
        }
    }
    plan
}

struct Context {
    client: Client,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    tracker: WriteTracker,
}

/// The Service a managed slice belongs to, by its `kubernetes.io/service-name` label.
fn service_of_slice(slice: &EndpointSlice) -> Option<ObjectRef<Service>> {
    let name = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some(ObjectRef::new(name).within(&slice.namespace().unwrap_or_default()))
}

/// Runs the EndpointSlice controller until its watches end.
pub async fn run(client: Client, informers: &crate::informer::Informers) {
    let (services, service_writer) = reflector::store::<Service>();
    let pods = informers.pods.store();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let context = Arc::new(Context {
        client: client.clone(),
        pods: pods.clone(),
        slices: slices.clone(),
        tracker: WriteTracker::default(),
    });

    let service_ctx = context.clone();
    let service_triggers = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(crate::watch::strip_managed_fields)
    .default_backoff()
    .reflect(service_writer)
    .map_ok(move |event| {
        if let Event::Delete(service) = &event {
            service_ctx.tracker.forget(&object_key(&service.metadata));
        }
        event
    })
    .touched_objects()
    .map_ok(|service: Service| ObjectRef::from_obj(&service));

    let managed = format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}");
    let slice_triggers = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&managed),
    )
    .modify(crate::watch::strip_managed_fields)
    .default_backoff()
    .reflect(slice_writer)
    .map_ok(|event| {
        let slices: Vec<_> = match &event {
            Event::Apply(s) | Event::Delete(s) => service_of_slice(s).into_iter().collect(),
            _ => Vec::new(),
        };
        stream::iter(slices.into_iter().map(Ok))
    })
    .try_flatten();

    reconcile_services(
        "endpointslice",
        services,
        &informers.pods,
        context,
        vec![service_triggers.boxed(), slice_triggers.boxed()],
        reconcile,
    )
    .await;
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if ctx.pods.wait_until_ready().await.is_err() || ctx.slices.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(RETRY_AFTER));
    }
    let key = object_key(&service.metadata);
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let existing = ctx.slices.state_filter(|s| {
        s.metadata.namespace.as_deref() == Some(namespace.as_str())
            && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
    });
    let cached: HashMap<String, Option<u64>> = existing
        .iter()
        .map(|s| {
            (
                s.name_any(),
                resource_version_number(s.metadata.resource_version.as_deref()),
            )
        })
        .collect();
    if !ctx.tracker.cache_is_current(&key, &cached) {
        // The watch has not shown our last writes yet; it will trigger us when it does.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let plan =
        if service_selector(&service).is_none() || service.metadata.deletion_timestamp.is_some() {
            SlicePlan {
                delete: existing.iter().map(|s| s.as_ref().clone()).collect(),
                ..SlicePlan::default()
            }
        } else {
            let pods = selected_pods(&service, &ctx.pods);
            let trigger = last_change_time(&service, &pods);
            plan_slices(&service, &pods, &existing, MAX_ENDPOINTS_PER_SLICE, trigger)
        };
    if plan.is_empty() {
        return Ok(Action::await_change());
    }
    tracing::debug!(
        service = %key,
        create = plan.create.len(),
        update = plan.update.len(),
        delete = plan.delete.len(),
        "endpointslice sync"
    );
    for slice in &plan.delete {
        let slice_name = slice.name_any();
        match api.delete(&slice_name, &DeleteParams::default()).await {
            Ok(_) => ctx.tracker.deleted(&key, &slice_name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for slice in &plan.update {
        let written = api
            .replace(&slice.name_any(), &PostParams::default(), slice)
            .await?;
        ctx.tracker.written(
            &key,
            &written.name_any(),
            written.metadata.resource_version.as_deref(),
        );
    }
    for slice in &plan.create {
        let written = api.create(&PostParams::default(), slice).await?;
        ctx.tracker.written(
            &key,
            &written.name_any(),
            written.metadata.resource_version.as_deref(),
        );
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn service(extra_spec: Value) -> Service {
        let mut spec = json!({
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
        });
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            s.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": spec
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                    "labels": {"app": "web"}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c",
                    "ports": [{"name": "http", "containerPort": http_port}]}]},
                "status": {"phase": "Running", "podIP": ip, "conditions": [
                    {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    /// The plan's creations, as the API server would store them (named, with a version).
    fn stored(plan: &SlicePlan) -> Vec<Arc<EndpointSlice>> {
        let mut out = Vec::new();
        for (i, s) in plan.create.iter().chain(plan.update.iter()).enumerate() {
            let mut s = s.clone();
            if s.metadata.name.is_none() {
                s.metadata.name = Some(format!("web-{i}"));
            }
            s.metadata.resource_version = Some("1".into());
            out.push(Arc::new(s));
        }
        out
    }

    #[test]
    fn one_slice_with_resolved_ports_labels_and_owner() {
        let svc = service(json!({}));
        let pods = vec![
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", false, 8080),
        ];
        let plan = plan_slices(&svc, &pods, &[], 100, None);
        assert_eq!(plan.create.len(), 1);
        let slice = &plan.create[0];
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(labels["team"], "a");
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Service", "svc-uid", Some(true))
        );
        let ports = slice.ports.as_ref().unwrap();
        assert_eq!(ports[0].port, Some(8080));
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(slice.endpoints.len(), 2);
        let a = &slice.endpoints[0];
        assert_eq!(a.addresses, vec!["10.0.0.1"]);
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        let b = slice.endpoints[1].conditions.as_ref().unwrap();
        assert_eq!(
            (b.ready, b.serving, b.terminating),
            (Some(false), Some(false), Some(false))
        );
    }

    #[test]
    fn different_port_numbers_go_to_different_slices() {
        let svc = service(json!({}));
        let pods = vec![
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", true, 9090),
        ];
        let plan = plan_slices(&svc, &pods, &[], 100, None);
        assert_eq!(plan.create.len(), 2);
        let mut ports: Vec<_> = plan
            .create
            .iter()
            .map(|s| (s.ports.as_ref().unwrap()[0].port, s.endpoints.len()))
            .collect();
        ports.sort();
        assert_eq!(ports, vec![(Some(8080), 1), (Some(9090), 1)]);
    }

    #[test]
    fn nothing_to_write_when_nothing_changed() {
        let svc = service(json!({}));
        let pods = vec![pod("a", "10.0.0.1", true, 8080)];
        let first = plan_slices(&svc, &pods, &[], 100, None);
        let existing = stored(&first);
        assert!(plan_slices(&svc, &pods, &existing, 100, None).is_empty());
    }

    #[test]
    fn readiness_change_updates_the_slice_in_place() {
        let svc = service(json!({}));
        let existing = stored(&plan_slices(
            &svc,
            &[pod("a", "10.0.0.1", true, 8080)],
            &[],
            100,
            None,
        ));
        let plan = plan_slices(
            &svc,
            &[pod("a", "10.0.0.1", false, 8080)],
            &existing,
            100,
            None,
        );
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].metadata.name.as_deref(), Some("web-0"));
        let c = plan.update[0].endpoints[0].conditions.as_ref().unwrap();
        assert_eq!(c.ready, Some(false));
    }

    #[test]
    fn terminating_pods_are_serving_but_not_ready() {
        let svc = service(json!({}));
        let mut p = (*pod("a", "10.0.0.1", true, 8080)).clone();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::UNIX_EPOCH,
        ));
        let plan = plan_slices(&svc, &[Arc::new(p)], &[], 100, None);
        let c = plan.create[0].endpoints[0].conditions.as_ref().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn publish_not_ready_makes_every_endpoint_ready() {
        let svc = service(json!({"publishNotReadyAddresses": true}));
        let plan = plan_slices(&svc, &[pod("a", "10.0.0.1", false, 8080)], &[], 100, None);
        let c = plan.create[0].endpoints[0].conditions.as_ref().unwrap();
        assert_eq!((c.ready, c.serving), (Some(true), Some(false)));
    }

    #[test]
    fn at_most_max_endpoints_per_slice() {
        let svc = service(json!({}));
        let pods: Vec<_> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.0.{}.{}", i / 200, i % 200),
                    true,
                    8080,
                )
            })
            .collect();
        let plan = plan_slices(&svc, &pods, &[], 100, None);
        let mut sizes: Vec<_> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, vec![50, 100, 100]);
    }

    #[test]
    fn new_endpoints_fill_an_unchanged_slice_that_has_room() {
        let svc = service(json!({}));
        let existing = stored(&plan_slices(
            &svc,
            &[pod("a", "10.0.0.1", true, 8080)],
            &[],
            100,
            None,
        ));
        let pods = vec![
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", true, 8080),
        ];
        let plan = plan_slices(&svc, &pods, &existing, 100, None);
        assert!(plan.create.is_empty());
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].endpoints.len(), 2);
    }

    #[test]
    fn empty_service_keeps_one_placeholder() {
        let svc = service(json!({}));
        let plan = plan_slices(&svc, &[], &[], 100, None);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty());
        assert!(plan.create[0].ports.as_ref().unwrap().is_empty());
        let existing = stored(&plan);
        assert!(plan_slices(&svc, &[], &existing, 100, None).is_empty());
        // Pods arrive: the placeholder becomes a real slice, under its name.
        let pods = vec![pod("a", "10.0.0.1", true, 8080)];
        let plan = plan_slices(&svc, &pods, &existing, 100, None);
        assert_eq!((plan.create.len(), plan.delete.len()), (0, 0));
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].metadata.name, existing[0].metadata.name);
        assert_eq!(plan.update[0].endpoints.len(), 1);
        assert_eq!(plan.update[0].ports.as_ref().unwrap()[0].port, Some(8080));
        // All pods gone: the slice becomes the placeholder again.
        let existing = stored(&plan);
        let plan = plan_slices(&svc, &[], &existing, 100, None);
        assert_eq!((plan.create.len(), plan.delete.len()), (0, 0));
        assert!(plan.update[0].endpoints.is_empty());
        assert!(plan.update[0].ports.as_ref().unwrap().is_empty());
    }

    #[test]
    fn slices_of_another_owner_are_deleted() {
        let svc = service(json!({}));
        let mut stale = (*stored(&plan_slices(
            &svc,
            &[pod("a", "10.0.0.1", true, 8080)],
            &[],
            100,
            None,
        ))[0])
            .clone();
        stale.metadata.owner_references.as_mut().unwrap()[0].uid = "old-uid".into();
        let plan = plan_slices(
            &svc,
            &[pod("a", "10.0.0.1", true, 8080)],
            &[Arc::new(stale)],
            100,
            None,
        );
        assert_eq!((plan.create.len(), plan.delete.len()), (1, 1));
    }

    #[test]
    fn headless_statefulset_pods_get_hostnames() {
        let svc = service(json!({"clusterIP": "None"}));
        let mut p = (*pod("web-0", "10.0.0.1", true, 8080)).clone();
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("web-0".into());
        spec.subdomain = Some("web".into());
        let plan = plan_slices(&svc, &[Arc::new(p)], &[], 100, None);
        assert_eq!(
            plan.create[0].endpoints[0].hostname.as_deref(),
            Some("web-0")
        );
        assert_eq!(
            plan.create[0].metadata.labels.as_ref().unwrap()[HEADLESS_LABEL],
            ""
        );
    }

    #[test]
    fn trigger_time_is_stamped_on_written_slices() {
        let svc = service(json!({}));
        let plan = plan_slices(
            &svc,
            &[pod("a", "10.0.0.1", true, 8080)],
            &[],
            100,
            Some(Timestamp::UNIX_EPOCH),
        );
        let annotations = plan.create[0].metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[LAST_CHANGE_TRIGGER_TIME],
            "1970-01-01T00:00:00Z"
        );
    }
}
