//! The control loop: watches Services and EndpointSlices and keeps listeners, endpoint
//! sets and LoadBalancer addresses in line with them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{AddressRange, Ipv4Cidr, ProxyConfig};
use crate::endpoints::{
    affinity_timeout, endpoints_for_port, slices_of, Backend, Protocol, ServicePortKey,
    SERVICE_NAME_LABEL,
};
use crate::forward::{bind_tcp, serve_tcp, serve_udp};
use crate::loadbalancer::{status_ips, LbAllocator, LbRequest, ServiceRef};
use crate::route::LocalRoute;
use crate::ProxyError;

/// Services with this label belong to another proxy (upstream kube-proxy skips them too).
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// How often the loop reconciles without a change (retries failed binds and status writes).
const RESYNC: Duration = Duration::from_secs(1);
/// How long events are gathered before one reconcile.
const COALESCE: Duration = Duration::from_millis(10);

/// Where a listener is: an address and a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ListenKey {
    addr: SocketAddr,
    protocol: Protocol,
}

/// A running listener and what it forwards for.
struct Listener {
    port: ServicePortKey,
    task: JoinHandle<()>,
}

/// Tasks aborted when the proxy stops.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What the Services and EndpointSlices ask for right now.
#[derive(Debug, Default)]
struct Desired {
    backends: BTreeMap<ServicePortKey, (Vec<SocketAddr>, Option<Duration>)>,
    listeners: HashMap<ListenKey, ServicePortKey>,
}

/// Computes the desired backends and listeners. ClusterIPs outside `cidr` are not listened
/// on (they are not routed to this host); LoadBalancer addresses come from `lb`.
fn desired(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    cidr: &Ipv4Cidr,
    lb: &BTreeMap<ServiceRef, Ipv4Addr>,
) -> Desired {
    let mut out = Desired::default();
    for service in services {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let other_proxy = service
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL));
        if spec.type_.as_deref() == Some("ExternalName") || other_proxy {
            continue;
        }
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| cidr.contains(*ip));
        let lb_ip = lb.get(&(namespace.clone(), name.clone())).copied();
        if cluster_ip.is_none() && lb_ip.is_none() {
            continue;
        }
        let own_slices = slices_of(service, slices);
        let affinity = affinity_timeout(service);
        for port in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let key = ServicePortKey {
                namespace: namespace.clone(),
                name: name.clone(),
                port_name: port.name.clone().unwrap_or_default(),
                protocol,
            };
            let endpoints = endpoints_for_port(port, &own_slices);
            // Without endpoints nothing listens, so the kernel refuses connections (RST)
            // and UDP datagrams (ICMP port unreachable), as upstream's REJECT rules do.
            let listen = !endpoints.is_empty();
            out.backends.insert(key.clone(), (endpoints, affinity));
            if !listen {
                continue;
            }
            for ip in cluster_ip.into_iter().chain(lb_ip) {
                out.listeners.insert(
                    ListenKey {
                        addr: SocketAddr::new(IpAddr::V4(ip), number),
                        protocol,
                    },
                    key.clone(),
                );
            }
        }
    }
    out
}

/// The proxy's live state.
struct ProxyState {
    client: Client,
    cidr: Ipv4Cidr,
    udp_idle_timeout: Duration,
    lb: LbAllocator,
    backends: HashMap<ServicePortKey, Arc<Backend>>,
    listeners: HashMap<ListenKey, Listener>,
    bind_failures: HashSet<ListenKey>,
}

impl Drop for ProxyState {
    /// Closes every listener when the proxy stops.
    fn drop(&mut self) {
        for listener in self.listeners.values() {
            listener.task.abort();
        }
    }
}

impl ProxyState {
    async fn reconcile(&mut self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) {
        let mut requests: Vec<(Arc<Service>, LbRequest)> = services
            .iter()
            .filter_map(|s| LbRequest::of(s).map(|r| (s.clone(), r)))
            .collect();
        // Oldest first, so that on contention the older Service keeps its address.
        requests.sort_by(|(a, ra), (b, rb)| {
            let age = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
            age(a)
                .cmp(&age(b))
                .then_with(|| ra.service.cmp(&rb.service))
        });
        let plain: Vec<LbRequest> = requests.iter().map(|(_, r)| r.clone()).collect();
        let assigned = self.lb.reconcile(&plain).clone();
        self.write_lb_status(services, &assigned).await;

        let want = desired(services, slices, &self.cidr, &assigned);
        self.backends
            .retain(|key, _| want.backends.contains_key(key));
        for (key, (endpoints, affinity)) in want.backends {
            match self.backends.get(&key) {
                Some(backend) => {
                    if backend.endpoints() != endpoints {
                        debug!(namespace = %key.namespace, service = %key.name, port = %key.port_name, ?endpoints, "endpoints changed");
                    }
                    backend.update(endpoints, affinity);
                }
                None => {
                    self.backends
                        .insert(key, Arc::new(Backend::new(endpoints, affinity)));
                }
            }
        }

        let stale: Vec<ListenKey> = self
            .listeners
            .iter()
            .filter(|(key, listener)| want.listeners.get(key) != Some(&listener.port))
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            if let Some(listener) = self.listeners.remove(&key) {
                listener.task.abort();
                let _ = listener.task.await;
                info!(addr = %key.addr, protocol = ?key.protocol, "listener closed");
            }
        }
        self.bind_failures
            .retain(|key| want.listeners.contains_key(key));
        for (key, port) in want.listeners {
            if self.listeners.contains_key(&key) {
                continue;
            }
            let Some(backend) = self.backends.get(&port).cloned() else {
                continue;
            };
            match self.start_listener(key, backend).await {
                Ok(task) => {
                    info!(addr = %key.addr, protocol = ?key.protocol, namespace = %port.namespace, service = %port.name, "listening");
                    self.bind_failures.remove(&key);
                    self.listeners.insert(key, Listener { port, task });
                }
                Err(error) => {
                    if self.bind_failures.insert(key) {
                        warn!(addr = %key.addr, protocol = ?key.protocol, %error, "cannot listen on service address; retrying");
                    }
                }
            }
        }
    }

    async fn start_listener(
        &self,
        key: ListenKey,
        backend: Arc<Backend>,
    ) -> std::io::Result<JoinHandle<()>> {
        Ok(match key.protocol {
            Protocol::Tcp => {
                let listener = bind_tcp(key.addr)?;
                tokio::spawn(serve_tcp(listener, backend))
            }
            Protocol::Udp => {
                let socket = tokio::net::UdpSocket::bind(key.addr).await?;
                tokio::spawn(serve_udp(socket, backend, self.udp_idle_timeout))
            }
        })
    }

    /// Writes each LoadBalancer Service's address into its status, and clears addresses of
    /// ours from Services that are no longer LoadBalancers of this proxy.
    async fn write_lb_status(
        &self,
        services: &[Arc<Service>],
        assigned: &BTreeMap<ServiceRef, Ipv4Addr>,
    ) {
        for service in services {
            let namespace = service.metadata.namespace.clone().unwrap_or_default();
            let name = service.metadata.name.clone().unwrap_or_default();
            let current = status_ips(service);
            let patch = match assigned.get(&(namespace.clone(), name.clone())) {
                Some(ip) if current != vec![*ip] => json!({"status": {"loadBalancer": {
                    "ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]
                }}}),
                Some(_) => continue,
                None => {
                    let ours = current.iter().any(|ip| self.lb.in_range(*ip));
                    let foreign = service
                        .spec
                        .as_ref()
                        .is_some_and(|s| s.load_balancer_class.is_some());
                    let is_lb = service
                        .spec
                        .as_ref()
                        .is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer"));
                    if !ours || foreign || (is_lb && service.metadata.deletion_timestamp.is_none())
                    {
                        continue;
                    }
                    json!({"status": {"loadBalancer": {"ingress": null}}})
                }
            };
            let api: Api<Service> = Api::namespaced(self.client.clone(), &namespace);
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    info!(%namespace, service = %name, status = %patch, "LoadBalancer status written")
                }
                Err(error) => {
                    warn!(%namespace, service = %name, %error, "LoadBalancer status write failed; retrying")
                }
            }
        }
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    notify: Arc<Notify>,
    kind: &'static str,
) -> JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        let mut events =
            reflector::reflector(writer, watcher(api, config).default_backoff()).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => notify.notify_one(),
                Err(error) => warn!(kind, %error, "proxy watch failed; retrying"),
            }
        }
    })
}

/// Runs the service proxy until the future is dropped (or a fatal error): installs the
/// AnyIP route when configured, watches Services and EndpointSlices, and forwards
/// ClusterIP and LoadBalancer traffic to endpoints. Dropping the future closes every
/// listener and removes the route.
pub async fn run(config: ProxyConfig, client: Client) -> Result<(), ProxyError> {
    let cidr: Ipv4Cidr = config.service_cidr.parse()?;
    let range: AddressRange = config.load_balancer_range.parse()?;
    let _route = if config.manage_local_route {
        Some(LocalRoute::install(cidr)?)
    } else {
        None
    };
    let notify = Arc::new(Notify::new());
    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer): (Store<EndpointSlice>, _) = reflector::store();
    let _watches = Tasks(vec![
        spawn_watch(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            service_writer,
            notify.clone(),
            "Service",
        ),
        spawn_watch(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(SERVICE_NAME_LABEL),
            slice_writer,
            notify.clone(),
            "EndpointSlice",
        ),
    ]);
    services
        .wait_until_ready()
        .await
        .map_err(|_| ProxyError::WatchEnded)?;
    slices
        .wait_until_ready()
        .await
        .map_err(|_| ProxyError::WatchEnded)?;
    info!(service_cidr = %cidr, load_balancer_range = %config.load_balancer_range, "service proxy running");
    let mut state = ProxyState {
        client,
        cidr,
        udp_idle_timeout: config.udp_idle_timeout,
        lb: LbAllocator::new(range),
        backends: HashMap::new(),
        listeners: HashMap::new(),
        bind_failures: HashSet::new(),
    };
    loop {
        state.reconcile(&services.state(), &slices.state()).await;
        tokio::select! {
            _ = notify.notified() => tokio::time::sleep(COALESCE).await,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(value: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn listeners_for_cluster_ips_in_cidr_and_load_balancer_addresses() {
        let services = vec![
            service(json!({"metadata": {"namespace": "ns", "name": "web"},
                "spec": {"clusterIP": "10.96.0.10", "type": "LoadBalancer", "ports": [
                    {"name": "http", "port": 80},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "sctp", "port": 99, "protocol": "SCTP"},
                    {"name": "idle", "port": 81}]}})),
            service(json!({"metadata": {"namespace": "ns", "name": "web2",
                    "labels": {SERVICE_PROXY_NAME_LABEL: "other"}},
                "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "http", "port": 80}]}})),
            service(json!({"metadata": {"namespace": "ns", "name": "outside"},
                "spec": {"clusterIP": "10.200.0.1", "ports": [{"port": 80}]}})),
            service(json!({"metadata": {"namespace": "ns", "name": "headless"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})),
        ];
        let slices: Vec<Arc<EndpointSlice>> = vec![Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "ns", "name": "web-1",
                             "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "dns", "port": 5353, "protocol": "UDP"}],
                "endpoints": [{"addresses": ["10.1.0.5"]}]
            }))
            .unwrap(),
        )];
        let cidr: Ipv4Cidr = "10.96.0.0/12".parse().unwrap();
        let mut lb = BTreeMap::new();
        lb.insert(
            ("ns".to_string(), "web".to_string()),
            "127.1.0.1".parse().unwrap(),
        );
        let want = desired(&services, &slices, &cidr, &lb);
        let mut addrs: Vec<String> = want
            .listeners
            .keys()
            .map(|k| format!("{:?} {}", k.protocol, k.addr))
            .collect();
        addrs.sort();
        assert_eq!(
            addrs,
            vec![
                "Tcp 10.96.0.10:80",
                "Tcp 127.1.0.1:80",
                "Udp 10.96.0.10:53",
                "Udp 127.1.0.1:53"
            ]
        );
        let http = ServicePortKey {
            namespace: "ns".into(),
            name: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
        };
        assert_eq!(
            want.backends[&http].0,
            vec!["10.1.0.5:8080".parse::<SocketAddr>().unwrap()]
        );
        // "idle" has no endpoints: a backend, no listener.
        assert_eq!(want.backends.len(), 3);
    }
}
