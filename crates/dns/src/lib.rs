//! Cluster DNS for nodeless: the records of the Kubernetes DNS specification (services,
//! endpoints, SRV, pods, PTR), answered from an in-memory view that kube-rs watchers keep
//! current; every other name is forwarded to the host's resolvers.
//!
//! Pods' resolv.conf applies the search path (`search <ns>.svc.<domain> svc.<domain> <domain>`,
//! `options ndots:5`); the server answers fully qualified names only.
//!
//! Wiring: `tokio::spawn(nodeless_dns::serve(DnsConfig::new(vec![addr]), client))` with an
//! address the pods can reach (e.g. the pod bridge's gateway, port 53), and that address as
//! the `nameserver` of the pods' resolv.conf. `DnsServer::start` gives the bound addresses
//! first (port 0), `DnsServer::start_with_view` serves a view the caller fills (tests, bench).

pub mod answer;
pub mod cache;
pub mod client;
pub mod handler;
pub mod resolv_conf;
pub mod view;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use answer::{ClusterZone, Outcome, PodRecords};
pub use handler::{ClusterDnsHandler, Forwarder};
/// The DNS library this crate is built on, for tests and tools (fake upstreams, messages).
pub use hickory_server;
pub use view::{ClusterView, SharedView};

/// How long `DnsServer::start` waits for the first list of every watched kind (CoreDNS: 5 s).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a TCP client may stay idle on a connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// A domain name is not valid.
    #[error("invalid domain name {0:?}: {1}")]
    InvalidDomain(String, String),
    /// A DNS message could not be encoded or decoded.
    #[error("DNS protocol error: {0}")]
    Protocol(String),
    /// A server did not answer in time.
    #[error("{0} did not answer in time")]
    Timeout(SocketAddr),
    /// Talking to a server failed.
    #[error("exchange with {0} failed: {1}")]
    Upstream(SocketAddr, #[source] std::io::Error),
    /// An upstream resolver answered SERVFAIL.
    #[error("upstream {0} answered SERVFAIL")]
    UpstreamFailure(SocketAddr),
    /// No upstream resolver is configured.
    #[error("no upstream resolver configured")]
    NoUpstream,
    /// Too many forwarded questions are waiting for upstreams.
    #[error("too many questions waiting for upstream resolvers")]
    Overloaded,
    /// resolv.conf could not be read.
    #[error("cannot read {0}: {1}")]
    ResolvConf(PathBuf, #[source] std::io::Error),
    /// The server stopped with an error.
    #[error("DNS server failed: {0}")]
    Server(String),
}

/// The configuration of the cluster DNS server.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Addresses to answer on, UDP and TCP on each. Port 0 picks a free port (the same one for
    /// UDP and TCP); [`DnsServer::local_addrs`] tells which.
    pub listen: Vec<SocketAddr>,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Resolvers for names outside the cluster domain, tried in order.
    pub upstream: Vec<SocketAddr>,
    /// The TTL of cluster records (and of negative answers), in seconds.
    pub ttl: u32,
    /// How long to wait for each upstream resolver before trying the next / SERVFAIL.
    pub upstream_timeout: Duration,
    /// Which pod records exist.
    pub pod_records: PodRecords,
}

impl DnsConfig {
    /// The defaults (`cluster.local`, TTL 5 s like CoreDNS, insecure pod records) with the
    /// host's resolvers from /etc/resolv.conf as upstreams (none when it cannot be read).
    pub fn new(listen: Vec<SocketAddr>) -> Self {
        let upstream = match resolv_conf::read_nameservers(resolv_conf::HOST_RESOLV_CONF) {
            Ok(upstream) => upstream,
            Err(error) => {
                warn!(%error, "no upstream resolvers for cluster DNS");
                Vec::new()
            }
        };
        DnsConfig {
            listen,
            cluster_domain: "cluster.local".to_string(),
            upstream,
            ttl: 5,
            upstream_timeout: Duration::from_secs(2),
            pod_records: PodRecords::Insecure,
        }
    }
}

/// A running cluster DNS server.
pub struct DnsServer {
    server: hickory_server::Server<ClusterDnsHandler>,
    local_addrs: Vec<SocketAddr>,
    watchers: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Starts the watchers, waits (at most [`SYNC_TIMEOUT`]) for their first lists, then binds
    /// the listen addresses and answers.
    pub async fn start(config: DnsConfig, client: kube::Client) -> Result<Self, DnsError> {
        let view = ClusterView::shared();
        let pods = config.pod_records == PodRecords::Verified;
        let (watchers, synced) = watch::spawn_watchers(client, view.clone(), pods);
        let all_synced = futures::future::join_all(synced);
        if tokio::time::timeout(SYNC_TIMEOUT, all_synced)
            .await
            .is_err()
        {
            warn!("cluster DNS starts before its view is complete");
        }
        let mut server = Self::start_with_view(config, view).await?;
        server.watchers = watchers;
        Ok(server)
    }

    /// Binds the listen addresses and answers from `view`, which the caller keeps current.
    pub async fn start_with_view(config: DnsConfig, view: SharedView) -> Result<Self, DnsError> {
        let zone = ClusterZone::new(&config.cluster_domain, config.ttl, config.pod_records)?;
        let mut sockets = Vec::new();
        for address in &config.listen {
            sockets.push(bind(*address).await?);
        }
        let local_addrs: Vec<SocketAddr> = sockets.iter().map(|(addr, _, _)| *addr).collect();
        // Never forward to ourselves.
        let upstream = config
            .upstream
            .iter()
            .copied()
            .filter(|u| !local_addrs.contains(u))
            .collect();
        let handler = ClusterDnsHandler::new(
            view,
            zone,
            Forwarder::new(upstream, config.upstream_timeout),
        );
        let mut server = hickory_server::Server::new(handler);
        for (address, udp, tcp) in sockets {
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64);
            info!(%address, domain = %config.cluster_domain, "cluster DNS listening");
        }
        Ok(DnsServer {
            server,
            local_addrs,
            watchers: Vec::new(),
        })
    }

    /// The bound addresses (UDP and TCP), in the order of `DnsConfig::listen`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Answers until the listeners fail.
    pub async fn run(mut self) -> Result<(), DnsError> {
        self.server
            .block_until_done()
            .await
            .map_err(|e| DnsError::Server(e.to_string()))
    }

    /// Stops answering and the watchers.
    pub async fn shutdown(mut self) -> Result<(), DnsError> {
        for watcher in &self.watchers {
            watcher.abort();
        }
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|e| DnsError::Server(e.to_string()))
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

/// Runs the cluster DNS server until it fails: the function `nodeless up` calls.
pub async fn serve(config: DnsConfig, client: kube::Client) -> Result<(), DnsError> {
    DnsServer::start(config, client).await?.run().await
}

/// Binds UDP and TCP on the same address; with port 0, on the same free port.
async fn bind(address: SocketAddr) -> Result<(SocketAddr, UdpSocket, TcpListener), DnsError> {
    let mut attempts = 0;
    loop {
        let udp = UdpSocket::bind(address)
            .await
            .map_err(|e| DnsError::Bind(address, e))?;
        let bound = udp.local_addr().map_err(|e| DnsError::Bind(address, e))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((bound, udp, tcp)),
            Err(_) if address.port() == 0 && attempts < 10 => attempts += 1,
            Err(error) => return Err(DnsError::Bind(bound, error)),
        }
    }
}
