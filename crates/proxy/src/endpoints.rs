//! Which endpoints a service port forwards to, and how one is picked for a connection.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

/// A transport protocol the proxy forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP: one upstream connection per accepted connection.
    Tcp,
    /// UDP: one upstream socket per client address.
    Udp,
}

impl Protocol {
    /// The protocol of a Service or EndpointSlice port (`TCP` when unset); `None` for
    /// protocols the proxy does not forward (SCTP).
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            _ => None,
        }
    }
}

/// One port of one Service: what a listener forwards for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortKey {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (empty for a Service's single unnamed port).
    pub port_name: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

/// The endpoint conditions as kube-proxy reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conditions {
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// The endpoints of one service port, from the EndpointSlices of its Service: the ready
/// ones, or when none is ready the serving-and-terminating ones (upstream's terminating
/// endpoint fallback). Addresses are IPv4 only, deduplicated, sorted.
pub fn endpoints_for_port(
    service_port: &ServicePort,
    slices: &[&EndpointSlice],
) -> Vec<SocketAddr> {
    let Some(protocol) = Protocol::parse(service_port.protocol.as_deref()) else {
        return Vec::new();
    };
    let wanted_name = service_port.name.as_deref().unwrap_or("");
    let mut ready = Vec::new();
    let mut fallback = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        // Port resolution: the slice port with the service port's name and protocol.
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == wanted_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        if port == 0 {
            continue;
        }
        for endpoint in &slice.endpoints {
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let c = endpoint.conditions.as_ref();
            let ready_flag = c.and_then(|c| c.ready).unwrap_or(true);
            let conditions = Conditions {
                ready: ready_flag,
                serving: c.and_then(|c| c.serving).unwrap_or(ready_flag),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
            };
            let addr = SocketAddr::new(IpAddr::V4(ip), port);
            if conditions.ready && !conditions.terminating {
                ready.push(addr);
            } else if conditions.serving && conditions.terminating {
                fallback.push(addr);
            }
        }
    }
    let mut chosen = if ready.is_empty() { fallback } else { ready };
    chosen.sort();
    chosen.dedup();
    chosen
}

/// The `ClientIP` affinity timeout of a Service, `None` without affinity.
pub fn affinity_timeout(service: &Service) -> Option<Duration> {
    let spec = service.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let seconds = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0);
    Some(seconds.map_or(DEFAULT_AFFINITY_TIMEOUT, Duration::from_secs))
}

/// The EndpointSlices of a Service (by the service-name label), from all slices.
pub fn slices_of<'a>(
    service: &Service,
    slices: &'a [impl AsRef<EndpointSlice>],
) -> Vec<&'a EndpointSlice> {
    let name = service.metadata.name.as_deref().unwrap_or("");
    let namespace = service.metadata.namespace.as_deref().unwrap_or("");
    slices
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| {
            s.metadata.namespace.as_deref().unwrap_or("") == namespace
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == Some(name)
        })
        .collect()
}

#[derive(Debug, Default)]
struct BackendState {
    endpoints: Vec<SocketAddr>,
    next: usize,
    affinity: Option<Duration>,
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

/// The live endpoint set of one service port, shared by its listeners: round robin, with
/// `ClientIP` session affinity when the Service asks for it.
#[derive(Debug, Default)]
pub struct Backend {
    state: Mutex<BackendState>,
}

impl Backend {
    /// A backend with these endpoints and affinity.
    pub fn new(endpoints: Vec<SocketAddr>, affinity: Option<Duration>) -> Self {
        let backend = Self::default();
        backend.update(endpoints, affinity);
        backend
    }

    /// Replaces the endpoints (and the affinity setting); clients stuck to an endpoint
    /// that is gone are picked anew.
    pub fn update(&self, endpoints: Vec<SocketAddr>, affinity: Option<Duration>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if affinity.is_none() {
            state.sticky.clear();
        } else {
            state
                .sticky
                .retain(|_, (endpoint, _)| endpoints.contains(endpoint));
        }
        state.affinity = affinity;
        state.endpoints = endpoints;
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.endpoints.clone()
    }

    /// Whether `endpoint` is one of the current endpoints.
    pub fn has_endpoint(&self, endpoint: SocketAddr) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.endpoints.contains(&endpoint)
    }

    /// The endpoint for a new connection (or UDP session) from `client` at `now`, `None`
    /// when there is none.
    pub fn pick(&self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        self.pick_excluding(client, now, &[])
    }

    /// Like [`pick`](Self::pick), skipping endpoints a connection attempt just failed on.
    pub fn pick_excluding(
        &self,
        client: IpAddr,
        now: Instant,
        failed: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(timeout) = state.affinity {
            if let Some((endpoint, last_used)) = state.sticky.get(&client).copied() {
                if now.saturating_duration_since(last_used) < timeout
                    && !failed.contains(&endpoint)
                    && state.endpoints.contains(&endpoint)
                {
                    state.sticky.insert(client, (endpoint, now));
                    return Some(endpoint);
                }
            }
        }
        let count = state.endpoints.len();
        let mut chosen = None;
        for _ in 0..count {
            let index = state.next % count;
            state.next = (index + 1) % count;
            let endpoint = state.endpoints[index];
            if !failed.contains(&endpoint) {
                chosen = Some(endpoint);
                break;
            }
        }
        let endpoint = chosen?;
        if let Some(timeout) = state.affinity {
            state
                .sticky
                .retain(|_, (_, used)| now.saturating_duration_since(*used) < timeout);
            state.sticky.insert(client, (endpoint, now));
        }
        Some(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn endpoint(
        ip: &str,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            ..Default::default()
        }
    }

    fn slice(ports: &[(Option<&str>, &str, i32)], endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta::default(),
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|(name, proto, port)| EndpointPort {
                        name: name.map(str::to_string),
                        protocol: Some(proto.to_string()),
                        port: Some(*port),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn service_port(name: Option<&str>, protocol: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.map(str::to_string),
            protocol: protocol.map(str::to_string),
            port: 80,
            ..Default::default()
        }
    }

    #[test]
    fn ports_resolve_by_name_and_protocol() {
        let s = slice(
            &[
                (Some("http"), "TCP", 8080),
                (Some("dns"), "UDP", 5353),
                (Some("dns"), "TCP", 5354),
            ],
            vec![endpoint("10.0.0.1", Some(true), None, None)],
        );
        let slices = [&s];
        assert_eq!(
            endpoints_for_port(&service_port(Some("http"), None), &slices),
            vec![addr("10.0.0.1:8080")]
        );
        assert_eq!(
            endpoints_for_port(&service_port(Some("dns"), Some("UDP")), &slices),
            vec![addr("10.0.0.1:5353")]
        );
        assert_eq!(
            endpoints_for_port(&service_port(Some("dns"), Some("TCP")), &slices),
            vec![addr("10.0.0.1:5354")]
        );
        assert!(endpoints_for_port(&service_port(Some("other"), None), &slices).is_empty());
        assert!(endpoints_for_port(&service_port(None, None), &slices).is_empty());
        assert!(endpoints_for_port(&service_port(Some("http"), Some("SCTP")), &slices).is_empty());
        let unnamed = slice(
            &[(None, "TCP", 9000)],
            vec![endpoint("10.0.0.2", None, None, None)],
        );
        assert_eq!(
            endpoints_for_port(&service_port(None, None), &[&unnamed]),
            vec![addr("10.0.0.2:9000")]
        );
    }

    #[test]
    fn ready_endpoints_win_and_terminating_serving_is_the_fallback() {
        let s = slice(
            &[(None, "TCP", 80)],
            vec![
                endpoint("10.0.0.3", Some(true), Some(true), Some(false)),
                endpoint("10.0.0.1", None, None, None),
                endpoint("10.0.0.2", Some(false), Some(false), None),
                endpoint("10.0.0.4", Some(false), Some(true), Some(true)),
            ],
        );
        let dup = slice(
            &[(None, "TCP", 80)],
            vec![endpoint("10.0.0.1", Some(true), None, None)],
        );
        assert_eq!(
            endpoints_for_port(&service_port(None, None), &[&s, &dup]),
            vec![addr("10.0.0.1:80"), addr("10.0.0.3:80")]
        );
        let terminating = slice(
            &[(None, "TCP", 80)],
            vec![
                endpoint("10.0.0.4", Some(false), Some(true), Some(true)),
                endpoint("10.0.0.5", Some(false), Some(false), Some(true)),
            ],
        );
        assert_eq!(
            endpoints_for_port(&service_port(None, None), &[&terminating]),
            vec![addr("10.0.0.4:80")]
        );
        let mut v6 = slice(
            &[(None, "TCP", 80)],
            vec![endpoint("fd00::1", None, None, None)],
        );
        v6.address_type = "IPv6".into();
        assert!(endpoints_for_port(&service_port(None, None), &[&v6]).is_empty());
    }

    #[test]
    fn round_robin_cycles_and_follows_updates() {
        let backend = Backend::new(vec![addr("10.0.0.1:80"), addr("10.0.0.2:80")], None);
        let now = Instant::now();
        let client: IpAddr = "10.1.0.1".parse().unwrap();
        let picks: Vec<_> = (0..4).map(|_| backend.pick(client, now).unwrap()).collect();
        assert_eq!(
            picks,
            vec![
                addr("10.0.0.1:80"),
                addr("10.0.0.2:80"),
                addr("10.0.0.1:80"),
                addr("10.0.0.2:80")
            ]
        );
        backend.update(vec![addr("10.0.0.2:80")], None);
        assert_eq!(backend.pick(client, now), Some(addr("10.0.0.2:80")));
        assert_eq!(
            backend.pick_excluding(client, now, &[addr("10.0.0.2:80")]),
            None
        );
        backend.update(Vec::new(), None);
        assert_eq!(backend.pick(client, now), None);
    }

    #[test]
    fn client_ip_affinity_sticks_until_timeout_or_removal() {
        let eps = vec![
            addr("10.0.0.1:80"),
            addr("10.0.0.2:80"),
            addr("10.0.0.3:80"),
        ];
        let backend = Backend::new(eps.clone(), Some(Duration::from_secs(10)));
        let a: IpAddr = "10.1.0.1".parse().unwrap();
        let b: IpAddr = "10.1.0.2".parse().unwrap();
        let t0 = Instant::now();
        let first = backend.pick(a, t0).unwrap();
        for i in 0..5 {
            assert_eq!(backend.pick(a, t0 + Duration::from_secs(i)), Some(first));
        }
        assert_ne!(backend.pick(b, t0), Some(first));
        // Used at t0+4; 10 s later the stickiness is gone and round robin moves on.
        let later = backend.pick(a, t0 + Duration::from_secs(15)).unwrap();
        assert_ne!(later, first);
        // The sticky endpoint disappears: the client is moved.
        let remaining: Vec<_> = eps.iter().copied().filter(|e| *e != later).collect();
        backend.update(remaining.clone(), Some(Duration::from_secs(10)));
        let moved = backend.pick(a, t0 + Duration::from_secs(16)).unwrap();
        assert!(remaining.contains(&moved));
        assert_eq!(backend.pick(a, t0 + Duration::from_secs(17)), Some(moved));
    }

    #[test]
    fn affinity_timeout_reads_the_service() {
        let mut svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a"},
            "spec": {"sessionAffinity": "ClientIP"}
        }))
        .unwrap();
        assert_eq!(affinity_timeout(&svc), Some(DEFAULT_AFFINITY_TIMEOUT));
        svc = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a"},
            "spec": {"sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}
        }))
        .unwrap();
        assert_eq!(affinity_timeout(&svc), Some(Duration::from_secs(5)));
        svc = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a"}, "spec": {"sessionAffinity": "None"}
        }))
        .unwrap();
        assert_eq!(affinity_timeout(&svc), None);
    }
}
