//! The Endpoints controller, after upstream's `pkg/controller/endpoint`: for every Service
//! with a selector, the core/v1 Endpoints of the same name with the selected pods' addresses
//! (ready ones in `addresses`, the others in `notReadyAddresses`) grouped into subsets by
//! their resolved ports (upstream's `RepackSubsets`), and the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation.
//!
//! Services without a selector are left alone (their Endpoints are the user's); a deleted
//! Service's Endpoints are deleted. Terminating pods are left out unless the Service publishes
//! not-ready addresses. At most [`MAX_ADDRESSES`] addresses are kept, with the
//! `endpoints.kubernetes.io/over-capacity: truncated` annotation when more were selected.
//!
//! [`desired_endpoints`] is the pure reconcile; [`run`] drives it from watches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};

use crate::pods::{is_not_found, is_pod_ready, object_key};
use crate::service_pods::{
    find_port, is_headless, last_change_time, pod_ipv4, pod_reference, publishes_not_ready,
    reconcile_services, resource_version_number, selected_pods, service_ports, service_selector,
    should_pod_be_in_endpoints, should_set_hostname, WriteTracker, HEADLESS_LABEL,
    LAST_CHANGE_TRIGGER_TIME,
};
use crate::{ControllerError, RETRY_AFTER};

/// The most addresses one Endpoints object holds (upstream's `maxCapacity`).
pub const MAX_ADDRESSES: usize = 1000;
/// The annotation set when addresses were left out for capacity.
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// A port of a subset in a comparable form: name, port, protocol, appProtocol.
type PortKey = (String, i32, String, Option<String>);
/// An address in a comparable form (upstream sorts by IP, then pod uid).
type AddressKey = (String, String);

fn address_key(address: &EndpointAddress) -> AddressKey {
    (
        address.ip.clone(),
        address
            .target_ref
            .as_ref()
            .and_then(|t| t.uid.clone())
            .unwrap_or_default(),
    )
}

/// The subsets of a Service's Endpoints (upstream's `syncService` loop and `RepackSubsets`):
/// one address per selected pod and resolved port, grouped so that ports reaching the same
/// addresses share a subset. Addresses, ports and subsets come out in a stable order.
pub fn desired_subsets(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let tolerate_unready = publishes_not_ready(service);
    let headless_without_ports = service_ports(service).is_empty() && is_headless(service);
    // port (None for a headless service without ports) → (ready, not ready) addresses.
    type Addresses = (
        BTreeMap<AddressKey, EndpointAddress>,
        BTreeMap<AddressKey, EndpointAddress>,
    );
    let mut by_port: BTreeMap<Option<PortKey>, Addresses> = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let spec = pod.spec.as_ref();
        let address = EndpointAddress {
            ip,
            hostname: should_set_hostname(pod, service)
                .then(|| spec.and_then(|s| s.hostname.clone()))
                .flatten(),
            node_name: spec
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_reference(pod)),
        };
        let ready = tolerate_unready || is_pod_ready(pod);
        let ports: Vec<Option<PortKey>> = if headless_without_ports {
            vec![None]
        } else {
            service_ports(service)
                .iter()
                .filter_map(|sp| {
                    let port = find_port(pod, sp)?;
                    Some(Some((
                        sp.name.clone().unwrap_or_default(),
                        port,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        sp.app_protocol.clone(),
                    )))
                })
                .collect()
        };
        for port in ports {
            let entry = by_port.entry(port).or_default();
            let set = if ready { &mut entry.0 } else { &mut entry.1 };
            set.insert(address_key(&address), address.clone());
        }
    }

    // Ports that reach the same addresses share a subset.
    type Members = (BTreeSet<AddressKey>, BTreeSet<AddressKey>);
    let mut subsets: BTreeMap<Members, (Vec<EndpointPort>, Addresses)> = BTreeMap::new();
    for (port, (ready, not_ready)) in by_port {
        let members = (
            ready.keys().cloned().collect(),
            not_ready.keys().cloned().collect(),
        );
        let subset = subsets
            .entry(members)
            .or_insert_with(|| (Vec::new(), (ready, not_ready)));
        if let Some((name, port, protocol, app_protocol)) = port {
            subset.0.push(EndpointPort {
                name: Some(name).filter(|n| !n.is_empty()),
                port,
                protocol: Some(protocol),
                app_protocol,
            });
        }
    }
    let mut out: Vec<EndpointSubset> = subsets
        .into_values()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: Some(ready.into_values().collect::<Vec<_>>()).filter(|a| !a.is_empty()),
            not_ready_addresses: Some(not_ready.into_values().collect::<Vec<_>>())
                .filter(|a| !a.is_empty()),
            ports: Some(ports).filter(|p| !p.is_empty()),
        })
        .collect();
    out.sort_by_key(|s| {
        let first = s
            .addresses
            .iter()
            .chain(s.not_ready_addresses.iter())
            .flatten()
            .next()
            .map(address_key);
        let port = s
            .ports
            .iter()
            .flatten()
            .next()
            .map(|p| (p.name.clone(), p.port));
        (port, first)
    });
    out
}

/// Keeps at most `max` addresses, ready ones first; returns whether any were dropped.
fn truncate_addresses(subsets: &mut Vec<EndpointSubset>, max: usize) -> bool {
    let total: usize = subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    if total <= max {
        return false;
    }
    let mut room = max;
    for subset in subsets.iter_mut() {
        if let Some(addresses) = subset.addresses.as_mut() {
            addresses.truncate(room);
            room -= addresses.len();
        }
    }
    for subset in subsets.iter_mut() {
        if let Some(addresses) = subset.not_ready_addresses.as_mut() {
            addresses.truncate(room);
            room -= addresses.len();
        }
    }
    for subset in subsets.iter_mut() {
        subset.addresses = subset.addresses.take().filter(|a| !a.is_empty());
        subset.not_ready_addresses = subset.not_ready_addresses.take().filter(|a| !a.is_empty());
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    true
}

/// The labels of a Service's Endpoints: the Service's, plus the headless marker.
pub fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.labels().clone();
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The Endpoints to write for a Service, or `None` when `existing` already is what it should
/// be (subsets, labels and the capacity annotation; upstream's comparison before update).
/// The result keeps `existing`'s other annotations and resourceVersion.
pub fn desired_endpoints(
    service: &Service,
    pods: &[Arc<Pod>],
    existing: Option<&Endpoints>,
    trigger_time: Option<Timestamp>,
) -> Option<Endpoints> {
    let mut subsets = desired_subsets(service, pods);
    let truncated = truncate_addresses(&mut subsets, MAX_ADDRESSES);
    let labels = endpoints_labels(service);
    if let Some(current) = existing {
        let current_subsets = current.subsets.clone().unwrap_or_default();
        let current_labels = current.metadata.labels.clone().unwrap_or_default();
        let current_truncated = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OVER_CAPACITY))
            .is_some_and(|v| v == "truncated");
        if current_subsets == subsets && current_labels == labels && current_truncated == truncated
        {
            return None;
        }
    }
    let mut annotations = existing
        .and_then(|e| e.metadata.annotations.clone())
        .unwrap_or_default();
    match trigger_time {
        Some(time) => annotations.insert(LAST_CHANGE_TRIGGER_TIME.into(), time.to_string()),
        None => annotations.remove(LAST_CHANGE_TRIGGER_TIME),
    };
    if truncated {
        annotations.insert(OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY);
    }
    Some(Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            resource_version: existing.and_then(|e| e.metadata.resource_version.clone()),
            ..existing.map(|e| e.metadata.clone()).unwrap_or_default()
        },
        subsets: Some(subsets),
    })
}

struct Context {
    client: Client,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    tracker: WriteTracker,
}

/// Runs the Endpoints controller until its watches end.
pub async fn run(client: Client, informers: &crate::informer::Informers) {
    let (services, service_writer) = reflector::store::<Service>();
    let pods = informers.pods.store();
    let (endpoints, endpoints_writer) = reflector::store::<Endpoints>();
    let context = Arc::new(Context {
        client: client.clone(),
        pods: pods.clone(),
        endpoints: endpoints.clone(),
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
            let ctx = service_ctx.clone();
            let service = service.clone();
            tokio::spawn(async move { delete_endpoints_of(&ctx, &service).await });
        }
        event
    })
    .touched_objects()
    .map_ok(|service: Service| ObjectRef::from_obj(&service));

    let endpoints_triggers = watcher(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(crate::watch::strip_managed_fields)
    .default_backoff()
    .reflect(endpoints_writer)
    .map_ok(|event| {
        let services: Vec<ObjectRef<Service>> = match &event {
            Event::Apply(e) | Event::Delete(e) => {
                vec![ObjectRef::new(&e.name_any()).within(&e.namespace().unwrap_or_default())]
            }
            _ => Vec::new(),
        };
        stream::iter(services.into_iter().map(Ok))
    })
    .try_flatten();

    reconcile_services(
        "endpoints",
        services,
        &informers.pods,
        context,
        vec![service_triggers.boxed(), endpoints_triggers.boxed()],
        reconcile,
    )
    .await;
}

/// Deletes the Endpoints of a deleted Service (upstream deletes them when the Service is gone).
async fn delete_endpoints_of(ctx: &Context, service: &Service) {
    let key = object_key(&service.metadata);
    ctx.tracker.forget(&key);
    let api: Api<Endpoints> =
        Api::namespaced(ctx.client.clone(), &service.namespace().unwrap_or_default());
    match api
        .delete(&service.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => tracing::debug!(service = %key, "deleted endpoints of deleted service"),
        Err(e) if is_not_found(&e) => {}
        Err(e) => tracing::info!(service = %key, error = %e, "deleting endpoints failed"),
    }
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if ctx.pods.wait_until_ready().await.is_err() || ctx.endpoints.wait_until_ready().await.is_err()
    {
        return Ok(Action::requeue(RETRY_AFTER));
    }
    if service_selector(&service).is_none() {
        return Ok(Action::await_change());
    }
    let key = object_key(&service.metadata);
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let existing = ctx.endpoints.get(&ObjectRef::new(&name).within(&namespace));
    let cached: HashMap<String, Option<u64>> = existing
        .iter()
        .map(|e| {
            (
                name.clone(),
                resource_version_number(e.metadata.resource_version.as_deref()),
            )
        })
        .collect();
    if !ctx.tracker.cache_is_current(&key, &cached) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let pods = selected_pods(&service, &ctx.pods);
    let trigger = last_change_time(&service, &pods);
    let Some(wanted) = desired_endpoints(&service, &pods, existing.as_deref(), trigger) else {
        return Ok(Action::await_change());
    };
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    let written = match existing {
        Some(_) => api.replace(&name, &PostParams::default(), &wanted).await?,
        None => api.create(&PostParams::default(), &wanted).await?,
    };
    tracing::debug!(service = %key, "endpoints sync");
    ctx.tracker
        .written(&key, &name, written.metadata.resource_version.as_deref());
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn service(extra_spec: Value) -> Service {
        let mut spec = json!({
            "selector": {"app": "web"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": 9100, "targetPort": 9100, "protocol": "TCP"}
            ]
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

    fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        addresses.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_addresses_share_a_subset_by_ports() {
        let svc = service(json!({}));
        let pods = vec![
            pod("b", "10.0.0.2", false, 8080),
            pod("a", "10.0.0.1", true, 8080),
        ];
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.2"]);
        let ports: Vec<_> = subsets[0]
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.port))
            .collect();
        assert_eq!(ports, vec![(Some("http"), 8080), (Some("metrics"), 9100)]);
        let a = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        assert_eq!(a.target_ref.as_ref().unwrap().uid.as_deref(), Some("uid-a"));
    }

    #[test]
    fn different_resolved_ports_split_subsets() {
        let svc = service(json!({}));
        let pods = vec![
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", true, 9090),
        ];
        let subsets = desired_subsets(&svc, &pods);
        // http:8080 → a, http:9090 → b, metrics:9100 → a and b.
        assert_eq!(subsets.len(), 3);
        let shape: Vec<_> = subsets
            .iter()
            .map(|s| (s.ports.as_ref().unwrap()[0].port, ips(&s.addresses)))
            .collect();
        assert!(shape.contains(&(8080, vec!["10.0.0.1"])));
        assert!(shape.contains(&(9090, vec!["10.0.0.2"])));
        assert!(shape.contains(&(9100, vec!["10.0.0.1", "10.0.0.2"])));
    }

    #[test]
    fn terminating_pods_are_left_out_unless_not_ready_is_published() {
        let mut p = (*pod("a", "10.0.0.1", true, 8080)).clone();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::UNIX_EPOCH,
        ));
        let p = Arc::new(p);
        assert!(desired_subsets(&service(json!({})), std::slice::from_ref(&p)).is_empty());
        let published = desired_subsets(&service(json!({"publishNotReadyAddresses": true})), &[p]);
        assert_eq!(ips(&published[0].addresses), vec!["10.0.0.1"]);
    }

    #[test]
    fn headless_service_without_ports_lists_addresses_with_hostnames() {
        let svc = service(json!({"clusterIP": "None", "ports": []}));
        let mut p = (*pod("web-0", "10.0.0.1", true, 8080)).clone();
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("web-0".into());
        spec.subdomain = Some("web".into());
        let subsets = desired_subsets(&svc, &[Arc::new(p)]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        assert_eq!(
            subsets[0].addresses.as_ref().unwrap()[0]
                .hostname
                .as_deref(),
            Some("web-0")
        );
        assert_eq!(endpoints_labels(&svc)[HEADLESS_LABEL], "");
    }

    #[test]
    fn no_write_when_nothing_changed_and_annotation_when_written() {
        let svc = service(json!({}));
        let pods = vec![pod("a", "10.0.0.1", true, 8080)];
        let first = desired_endpoints(&svc, &pods, None, Some(Timestamp::UNIX_EPOCH)).unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("web"));
        assert_eq!(first.metadata.labels.as_ref().unwrap()["team"], "a");
        assert_eq!(
            first.metadata.annotations.as_ref().unwrap()[LAST_CHANGE_TRIGGER_TIME],
            "1970-01-01T00:00:00Z"
        );
        assert!(desired_endpoints(&svc, &pods, Some(&first), None).is_none());
        let not_ready = vec![pod("a", "10.0.0.1", false, 8080)];
        let second = desired_endpoints(&svc, &not_ready, Some(&first), None).unwrap();
        let subset = &second.subsets.as_ref().unwrap()[0];
        assert!(subset.addresses.is_none());
        assert_eq!(ips(&subset.not_ready_addresses), vec!["10.0.0.1"]);
    }

    #[test]
    fn over_capacity_is_truncated_and_annotated() {
        let svc = service(json!({}));
        let pods: Vec<_> = (0..1005)
            .map(|i| {
                pod(
                    &format!("p{i:04}"),
                    &format!("10.0.{}.{}", i / 250, i % 250),
                    true,
                    8080,
                )
            })
            .collect();
        let e = desired_endpoints(&svc, &pods, None, None).unwrap();
        let total: usize = e
            .subsets
            .iter()
            .flatten()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!(total, MAX_ADDRESSES);
        assert_eq!(
            e.metadata.annotations.as_ref().unwrap()[OVER_CAPACITY],
            "truncated"
        );
    }
}
