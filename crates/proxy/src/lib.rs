//! nodeless's service proxy: a userspace kube-proxy.
//!
//! The host accepts traffic for the whole service CIDR through one AnyIP route
//! (`local <service-cidr> dev lo table local`); pods reach it through their default route.
//! For every port of every Service the proxy binds exactly `ClusterIP:port` (TCP listener or
//! UDP socket, as the Service says) and forwards to the ready endpoints of the Service's
//! EndpointSlices: round robin, `ClientIP` session affinity, terminating-serving fallback.
//! Services of type LoadBalancer get an address from a configured range, recorded only in
//! their `status.loadBalancer.ingress`, and are served on it the same way.

pub mod config;
pub mod endpoints;
pub mod forward;
pub mod loadbalancer;
mod proxy;
pub mod route;

pub use config::{AddressRange, Ipv4Cidr, ProxyConfig, DEFAULT_LOAD_BALANCER_RANGE};
pub use proxy::run;

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A CIDR or address range in the configuration is malformed.
    #[error("invalid address range {0:?}")]
    InvalidRange(String),
    /// The AnyIP route could not be installed.
    #[error("service CIDR route: {0}")]
    Route(String),
    /// A watch ended before its first list (the client went away).
    #[error("the Service or EndpointSlice watch ended before it synced")]
    WatchEnded,
}
