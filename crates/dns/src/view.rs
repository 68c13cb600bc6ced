//! The in-memory view of the cluster that DNS answers come from: Services, EndpointSlices and
//! (optionally) Pods, reduced to the few fields that DNS needs.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The view shared between the watchers (writers) and the query handler (readers).
pub type SharedView = Arc<RwLock<ClusterView>>;

/// A namespaced object's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// A key from a namespace and a name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What a Service name resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// A Service with virtual IPs (`spec.clusterIPs`); empty while none is allocated.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the name resolves to the ready endpoints.
    Headless,
    /// `type: ExternalName`: the name is an alias (CNAME) of this DNS name.
    ExternalName(String),
}

/// A named port, as SRV records publish it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    /// The port's name, lowercase.
    pub name: String,
    /// The protocol, lowercase (`tcp`, `udp`, `sctp`).
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// A Service, as DNS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    /// How the service's name resolves.
    pub kind: ServiceKind,
    /// The service's named ports.
    pub ports: Vec<NamedPort>,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The endpoint's addresses.
    pub addresses: Vec<IpAddr>,
    /// `hostname`, set for StatefulSet pods behind their governing service.
    pub hostname: Option<String>,
    /// `conditions.ready` (unset counts as ready, as upstream says).
    pub ready: bool,
}

/// An EndpointSlice, as DNS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceRecord {
    /// The Service the slice belongs to (label `kubernetes.io/service-name`).
    pub service: String,
    /// The slice's endpoints.
    pub endpoints: Vec<EndpointRecord>,
    /// The slice's named ports.
    pub ports: Vec<NamedPort>,
}

/// A ready endpoint address of a service, with the name it has under the service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadyEndpoint {
    /// The endpoint's hostname, or its address with dashes when it has none.
    pub hostname: String,
    /// The address.
    pub address: IpAddr,
}

/// Services, EndpointSlices and Pod IPs of the cluster, indexed for DNS. Maps are nested by
/// namespace so that the lookups of a query allocate nothing.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// namespace → name → service.
    services: HashMap<String, HashMap<String, ServiceRecord>>,
    /// namespace → slice name → slice.
    slices: HashMap<String, HashMap<String, SliceRecord>>,
    /// namespace → service → names of its slices.
    slices_by_service: HashMap<String, HashMap<String, BTreeSet<String>>>,
    pods: HashMap<ObjectKey, Vec<IpAddr>>,
    pod_ips: HashMap<(String, IpAddr), usize>,
}

impl ClusterView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty view, ready to be shared.
    pub fn shared() -> SharedView {
        Arc::new(RwLock::new(Self::new()))
    }

    /// The service with this namespace and name.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceRecord> {
        self.services.get(namespace)?.get(name)
    }

    /// Every service: namespace, name, record.
    pub fn services(&self) -> impl Iterator<Item = (&str, &str, &ServiceRecord)> {
        self.services.iter().flat_map(|(namespace, services)| {
            services
                .iter()
                .map(move |(name, record)| (namespace.as_str(), name.as_str(), record))
        })
    }

    /// Whether any service lives in this namespace.
    pub fn has_services_in(&self, namespace: &str) -> bool {
        self.services.contains_key(namespace)
    }

    /// The EndpointSlices of a service.
    pub fn slices_of<'a>(
        &'a self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = &'a SliceRecord> + 'a {
        let slices = self.slices.get(namespace);
        let names = self
            .slices_by_service
            .get(namespace)
            .and_then(|services| services.get(service));
        names
            .into_iter()
            .flatten()
            .filter_map(move |name| slices?.get(name))
    }

    /// The ready endpoint addresses of a service, deduplicated across its slices, sorted.
    pub fn ready_endpoints(&self, namespace: &str, service: &str) -> Vec<ReadyEndpoint> {
        let mut ready = BTreeSet::new();
        for slice in self.slices_of(namespace, service) {
            for endpoint in slice.endpoints.iter().filter(|e| e.ready) {
                for address in &endpoint.addresses {
                    let hostname = endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| dashed_address(address));
                    ready.insert(ReadyEndpoint {
                        hostname,
                        address: *address,
                    });
                }
            }
        }
        ready.into_iter().collect()
    }

    /// The named ports of a service's endpoints (what headless SRV records publish).
    pub fn endpoint_ports(&self, namespace: &str, service: &str) -> Vec<NamedPort> {
        let mut ports: Vec<NamedPort> = Vec::new();
        for slice in self.slices_of(namespace, service) {
            for port in &slice.ports {
                if !ports.contains(port) {
                    ports.push(port.clone());
                }
            }
        }
        ports
    }

    /// Every EndpointSlice: namespace, slice name, record.
    pub fn slices(&self) -> impl Iterator<Item = (&str, &str, &SliceRecord)> {
        self.slices.iter().flat_map(|(namespace, slices)| {
            slices
                .iter()
                .map(move |(name, record)| (namespace.as_str(), name.as_str(), record))
        })
    }

    /// Whether a pod in this namespace has this IP.
    pub fn pod_has_ip(&self, namespace: &str, ip: IpAddr) -> bool {
        self.pod_ips.contains_key(&(namespace.to_string(), ip))
    }

    /// Adds or replaces a service.
    pub fn upsert_service(&mut self, service: &Service) {
        if let Some((key, record)) = service_record(service) {
            self.services
                .entry(key.namespace)
                .or_default()
                .insert(key.name, record);
        }
    }

    /// Removes a service.
    pub fn remove_service(&mut self, key: &ObjectKey) {
        if let Some(services) = self.services.get_mut(&key.namespace) {
            services.remove(&key.name);
            if services.is_empty() {
                self.services.remove(&key.namespace);
            }
        }
    }

    /// Replaces every service (after a relist).
    pub fn replace_services(&mut self, services: &[Service]) {
        self.services.clear();
        for service in services {
            self.upsert_service(service);
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_slice(&mut self, slice: &EndpointSlice) {
        let Some((key, record)) = slice_record(slice) else {
            return;
        };
        self.remove_slice(&key);
        if !record.service.is_empty() {
            self.slices_by_service
                .entry(key.namespace.clone())
                .or_default()
                .entry(record.service.clone())
                .or_default()
                .insert(key.name.clone());
        }
        self.slices
            .entry(key.namespace)
            .or_default()
            .insert(key.name, record);
    }

    /// Removes an EndpointSlice.
    pub fn remove_slice(&mut self, key: &ObjectKey) {
        let Some(slices) = self.slices.get_mut(&key.namespace) else {
            return;
        };
        let Some(old) = slices.remove(&key.name) else {
            return;
        };
        if slices.is_empty() {
            self.slices.remove(&key.namespace);
        }
        if let Some(services) = self.slices_by_service.get_mut(&key.namespace) {
            if let Some(names) = services.get_mut(&old.service) {
                names.remove(&key.name);
                if names.is_empty() {
                    services.remove(&old.service);
                }
            }
            if services.is_empty() {
                self.slices_by_service.remove(&key.namespace);
            }
        }
    }

    /// Replaces every EndpointSlice (after a relist).
    pub fn replace_slices(&mut self, slices: &[EndpointSlice]) {
        self.slices.clear();
        self.slices_by_service.clear();
        for slice in slices {
            self.upsert_slice(slice);
        }
    }

    /// Adds or replaces a pod's IPs.
    pub fn upsert_pod(&mut self, pod: &Pod) {
        let Some((key, ips)) = pod_ips(pod) else {
            return;
        };
        self.remove_pod(&key);
        for ip in &ips {
            *self
                .pod_ips
                .entry((key.namespace.clone(), *ip))
                .or_default() += 1;
        }
        self.pods.insert(key, ips);
    }

    /// Removes a pod.
    pub fn remove_pod(&mut self, key: &ObjectKey) {
        if let Some(ips) = self.pods.remove(key) {
            for ip in ips {
                let index = (key.namespace.clone(), ip);
                if let Some(count) = self.pod_ips.get_mut(&index) {
                    *count -= 1;
                    if *count == 0 {
                        self.pod_ips.remove(&index);
                    }
                }
            }
        }
    }

    /// Replaces every pod (after a relist).
    pub fn replace_pods(&mut self, pods: &[Pod]) {
        self.pods.clear();
        self.pod_ips.clear();
        for pod in pods {
            self.upsert_pod(pod);
        }
    }
}

/// An address with dashes for dots (IPv4) or colons (IPv6): the generated endpoint hostname
/// (as CoreDNS makes it) and the pod-record label.
pub fn dashed_address(address: &IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The namespace and name of an object's metadata, when both are set.
fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<ObjectKey> {
    Some(ObjectKey::new(meta.namespace.clone()?, meta.name.clone()?))
}

/// The key of a Service, for deletions.
pub fn service_key(service: &Service) -> Option<ObjectKey> {
    key_of(&service.metadata)
}

/// The key of an EndpointSlice, for deletions.
pub fn slice_key(slice: &EndpointSlice) -> Option<ObjectKey> {
    key_of(&slice.metadata)
}

/// The key of a Pod, for deletions.
pub fn pod_key(pod: &Pod) -> Option<ObjectKey> {
    key_of(&pod.metadata)
}

fn named_port(
    name: Option<&String>,
    protocol: Option<&String>,
    port: Option<i32>,
) -> Option<NamedPort> {
    let name = name.filter(|name| !name.is_empty())?;
    Some(NamedPort {
        name: name.to_ascii_lowercase(),
        protocol: protocol
            .map(|p| p.to_ascii_lowercase())
            .unwrap_or_else(|| "tcp".to_string()),
        port: u16::try_from(port?).ok()?,
    })
}

fn service_record(service: &Service) -> Option<(ObjectKey, ServiceRecord)> {
    let key = key_of(&service.metadata)?;
    let spec = service.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(spec.external_name.clone().unwrap_or_default())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let ips = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.clone(),
            _ => spec.cluster_ip.iter().cloned().collect(),
        };
        ServiceKind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| named_port(port.name.as_ref(), port.protocol.as_ref(), Some(port.port)))
        .collect();
    Some((key, ServiceRecord { kind, ports }))
}

fn slice_record(slice: &EndpointSlice) -> Option<(ObjectKey, SliceRecord)> {
    let key = key_of(&slice.metadata)?;
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        .cloned()
        .unwrap_or_default();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|endpoint| EndpointRecord {
            addresses: endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            hostname: endpoint
                .hostname
                .as_ref()
                .filter(|h| !h.is_empty())
                .map(|h| h.to_ascii_lowercase()),
            ready: endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true),
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|port| named_port(port.name.as_ref(), port.protocol.as_ref(), port.port))
        .collect();
    Some((
        key,
        SliceRecord {
            service,
            endpoints,
            ports,
        },
    ))
}

fn pod_ips(pod: &Pod) -> Option<(ObjectKey, Vec<IpAddr>)> {
    let key = key_of(&pod.metadata)?;
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_ref())
        .and_then(|ip| ip.parse().ok())
    {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Some((key, ips))
}
