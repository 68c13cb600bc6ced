//! The cluster's service network on one machine, for `nodeless up` with real pods: the
//! service CIDR routed to the host (AnyIP), the service proxy (ClusterIPs and LoadBalancer
//! addresses), and the cluster DNS on the `kube-dns` Service's address, which the pods'
//! resolv.conf names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};

/// The label that tells the service proxy to leave a Service alone (upstream's convention
/// for Services served by another proxy): the DNS server answers on its address itself.
const SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";

/// The cluster DNS address: the tenth address of the service CIDR, as upstream's kube-dns.
pub fn dns_address(cidr: &nodeless_apiserver::services::ServiceCidr) -> Ipv4Addr {
    cidr.ip_at(10)
}

/// What runs while the cluster runs; dropping it stops the proxy and DNS and removes the route.
pub struct ClusterNetwork {
    _route: nodeless_proxy::route::LocalRoute,
    proxy: tokio::task::JoinHandle<()>,
    dns: tokio::task::JoinHandle<()>,
    dns_service: tokio::task::JoinHandle<()>,
}

impl Drop for ClusterNetwork {
    fn drop(&mut self) {
        self.proxy.abort();
        self.dns.abort();
        self.dns_service.abort();
    }
}

/// The `kube-dns` Service in `kube-system` (no selector: the DNS runs inside nodeless),
/// created if missing.
async fn ensure_dns_service(client: &kube::Client, ip: Ipv4Addr) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    if api.get_opt("kube-dns").await?.is_some() {
        return Ok(());
    }
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/name": "nodeless-dns",
                SERVICE_PROXY_NAME: "nodeless-dns"
            }
        },
        "spec": {
            "clusterIP": ip.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}
            ]
        }
    }))?;
    match api.create(&PostParams::default(), &service).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(error) => Err(error).context("creating the kube-dns Service"),
    }
}

/// Routes the service CIDR to the host and starts the proxy, the DNS server (forwarding to
/// `dns_upstreams`, or the host's resolvers when that is `None` or empty) and (once the API
/// answers) the `kube-dns` Service; returns at once, before the API server serves.
pub fn start(
    client: kube::Client,
    service_cidr: &nodeless_apiserver::services::ServiceCidr,
    load_balancer_range: &str,
    dns_upstreams: Option<Vec<SocketAddr>>,
) -> anyhow::Result<ClusterNetwork> {
    let cidr: nodeless_proxy::Ipv4Cidr = service_cidr
        .to_string()
        .parse()
        .map_err(|e| anyhow::anyhow!("--service-cidr: {e}"))?;
    let route = nodeless_proxy::route::LocalRoute::install(cidr)
        .context("routing the service CIDR to this machine")?;
    let dns_ip = dns_address(service_cidr);
    let service_client = client.clone();
    let dns_service = tokio::spawn(async move {
        for attempt in 0u32.. {
            match ensure_dns_service(&service_client, dns_ip).await {
                Ok(()) => return,
                Err(error) if attempt >= 30 => {
                    tracing::warn!(%error, "giving up on the kube-dns Service");
                    return;
                }
                Err(error) => tracing::debug!(%error, "the kube-dns Service; retrying"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let proxy_config = nodeless_proxy::ProxyConfig {
        service_cidr: service_cidr.to_string(),
        load_balancer_range: load_balancer_range.to_string(),
        manage_local_route: false,
        ..Default::default()
    };
    let proxy_client = client.clone();
    let proxy = tokio::spawn(async move {
        if let Err(error) = nodeless_proxy::run(proxy_config, proxy_client).await {
            tracing::error!(%error, "the service proxy stopped");
        }
    });
    let mut dns_config =
        nodeless_dns::DnsConfig::new(vec![SocketAddr::new(IpAddr::V4(dns_ip), 53)]);
    dns_config.cluster_domain = "cluster.local".to_string();
    if let Some(upstreams) = dns_upstreams.filter(|u| !u.is_empty()) {
        dns_config.upstream = upstreams;
    }
    let dns = tokio::spawn(async move {
        if let Err(error) = nodeless_dns::serve(dns_config, client).await {
            tracing::error!(%error, "the cluster DNS stopped");
        }
    });
    tracing::info!(%dns_ip, "cluster DNS and service proxy started");
    Ok(ClusterNetwork {
        _route: route,
        proxy,
        dns,
        dns_service,
    })
}

/// Starts the route controller of an agent with real pods: one route per other Node to its
/// pod CIDR via its InternalIP, in this network namespace (see `nodeless_agent::routes`).
/// Aborting the task stops it; the routes stay until the next start brings them up to date.
pub fn start_pod_routes(
    client: kube::Client,
    config: &nodeless_agent::AgentConfig,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let pod_cidr: nodeless_agent::routes::Ipv4Net = config
        .pod_cidr
        .to_string()
        .parse()
        .map_err(|e| anyhow::anyhow!("the pod CIDR: {e}"))?;
    if config.node_ip.is_loopback() {
        tracing::info!(
            node_ip = %config.node_ip,
            "this node advertises a loopback address: agents on other machines cannot route \
             to its pods (give --node-ip this machine's address on the agents' network)"
        );
    }
    let routes = nodeless_agent::routes::RouteConfig {
        node_name: config.node_name.clone(),
        pod_cidr,
        node_ip: config.node_ip,
        record: config.state_dir.join("pod-routes.json"),
    };
    Ok(tokio::spawn(nodeless_agent::routes::run(client, routes)))
}

/// Checks a joining agent's `--service-cidr` against the cluster's: the `kubernetes` Service
/// has the range's first address (as the server allocates it), so a range that does not hold
/// it is not the server's, and pods would be told a DNS address nobody serves. Passes when
/// that Service cannot be read (the proxy will follow the API anyway).
pub async fn check_service_cidr(
    client: &kube::Client,
    service_cidr: &nodeless_apiserver::services::ServiceCidr,
) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let cluster_ip = match api.get_opt("kubernetes").await {
        Ok(service) => service
            .and_then(|s| s.spec)
            .and_then(|s| s.cluster_ip)
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok()),
        Err(error) => {
            tracing::warn!(%error, "reading the kubernetes Service to check --service-cidr");
            None
        }
    };
    match cluster_ip {
        Some(ip) if ip != service_cidr.ip_at(1) => anyhow::bail!(
            "--service-cidr {service_cidr} is not the cluster's: the kubernetes Service has \
             {ip} (give the server's --service-cidr)"
        ),
        _ => Ok(()),
    }
}
