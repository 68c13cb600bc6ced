//! LoadBalancer addresses: which Service gets which address of the configured range.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;

use crate::config::AddressRange;

/// A Service by namespace and name.
pub type ServiceRef = (String, String);

/// What one LoadBalancer Service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbRequest {
    /// The Service.
    pub service: ServiceRef,
    /// The addresses already in its `status.loadBalancer.ingress[].ip`.
    pub status_ips: Vec<Ipv4Addr>,
    /// Its `spec.loadBalancerIP`, if any.
    pub requested: Option<Ipv4Addr>,
}

impl LbRequest {
    /// The request of a Service that this proxy serves as a LoadBalancer: type
    /// `LoadBalancer`, no `loadBalancerClass` (another implementation's), not being deleted.
    pub fn of(service: &Service) -> Option<Self> {
        let spec = service.spec.as_ref()?;
        if spec.type_.as_deref() != Some("LoadBalancer")
            || spec.load_balancer_class.is_some()
            || service.metadata.deletion_timestamp.is_some()
        {
            return None;
        }
        Some(Self {
            service: (
                service.metadata.namespace.clone().unwrap_or_default(),
                service.metadata.name.clone().unwrap_or_default(),
            ),
            status_ips: status_ips(service),
            requested: spec
                .load_balancer_ip
                .as_deref()
                .and_then(|ip| ip.parse().ok()),
        })
    }
}

/// The IPv4 addresses of a Service's `status.loadBalancer.ingress`.
pub fn status_ips(service: &Service) -> Vec<Ipv4Addr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect()
}

/// Hands out LoadBalancer addresses. The Service's status is the only persistent record:
/// after a restart an address found in a status is kept.
#[derive(Debug)]
pub struct LbAllocator {
    range: AddressRange,
    assigned: BTreeMap<ServiceRef, Ipv4Addr>,
}

impl LbAllocator {
    /// An allocator over `range`.
    pub fn new(range: AddressRange) -> Self {
        Self {
            range,
            assigned: BTreeMap::new(),
        }
    }

    /// Whether an address belongs to the range.
    pub fn in_range(&self, ip: Ipv4Addr) -> bool {
        self.range.contains(ip)
    }

    /// Brings the assignments in line with the current LoadBalancer Services: Services
    /// that are gone release their address; a Service keeps the address it has (in memory
    /// or in its status); `spec.loadBalancerIP` is honoured when in range and free;
    /// otherwise the lowest free address is taken. A Service that cannot get an address
    /// (range exhausted, requested address taken or out of range) is left out.
    pub fn reconcile(&mut self, requests: &[LbRequest]) -> &BTreeMap<ServiceRef, Ipv4Addr> {
        let wanted: HashSet<&ServiceRef> = requests.iter().map(|r| &r.service).collect();
        self.assigned.retain(|service, _| wanted.contains(service));
        // A requested address that changed moves the Service (when the new one is free).
        for request in requests {
            if let (Some(requested), Some(current)) =
                (request.requested, self.assigned.get(&request.service))
            {
                if requested != *current {
                    self.assigned.remove(&request.service);
                }
            }
        }
        let mut used: HashSet<Ipv4Addr> = self.assigned.values().copied().collect();
        // First pass: addresses that Services already hold in their status.
        for request in requests {
            if self.assigned.contains_key(&request.service) {
                continue;
            }
            let held = request.status_ips.iter().copied().find(|ip| {
                self.range.contains(*ip)
                    && !used.contains(ip)
                    && request.requested.is_none_or(|r| r == *ip)
            });
            if let Some(ip) = held {
                used.insert(ip);
                self.assigned.insert(request.service.clone(), ip);
            }
        }
        // Second pass: new addresses.
        for request in requests {
            if self.assigned.contains_key(&request.service) {
                continue;
            }
            let ip = match request.requested {
                Some(ip) if self.range.contains(ip) && !used.contains(&ip) => Some(ip),
                Some(ip) => {
                    tracing::warn!(
                        namespace = %request.service.0,
                        service = %request.service.1,
                        %ip,
                        "spec.loadBalancerIP is out of range or taken; no address assigned"
                    );
                    None
                }
                None => self.range.iter().find(|ip| !used.contains(ip)),
            };
            match ip {
                Some(ip) => {
                    used.insert(ip);
                    self.assigned.insert(request.service.clone(), ip);
                }
                None if request.requested.is_none() => tracing::warn!(
                    namespace = %request.service.0,
                    service = %request.service.1,
                    "LoadBalancer range exhausted"
                ),
                None => {}
            }
        }
        &self.assigned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, status: &[&str], requested: Option<&str>) -> LbRequest {
        LbRequest {
            service: ("ns".into(), name.into()),
            status_ips: status.iter().map(|s| s.parse().unwrap()).collect(),
            requested: requested.map(|s| s.parse().unwrap()),
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn key(name: &str) -> ServiceRef {
        ("ns".into(), name.into())
    }

    #[test]
    fn assigns_lowest_free_keeps_status_and_releases() {
        let mut lb = LbAllocator::new("127.1.0.1-127.1.0.3".parse().unwrap());
        // "b" restarts with 127.1.0.1 in its status; "a" is new and must skip it.
        let got = lb
            .reconcile(&[request("a", &[], None), request("b", &["127.1.0.1"], None)])
            .clone();
        assert_eq!(got[&key("b")], ip("127.1.0.1"));
        assert_eq!(got[&key("a")], ip("127.1.0.2"));
        // Stable across reconciles; "c" gets the last one, "d" none.
        let reqs = [
            request("a", &[], None),
            request("b", &["127.1.0.1"], None),
            request("c", &[], None),
            request("d", &[], None),
        ];
        let got = lb.reconcile(&reqs).clone();
        assert_eq!(got[&key("a")], ip("127.1.0.2"));
        assert_eq!(got[&key("c")], ip("127.1.0.3"));
        assert!(!got.contains_key(&key("d")));
        // "a" goes: its address is free again and "d" gets it.
        let got = lb.reconcile(&reqs[1..]).clone();
        assert_eq!(got[&key("d")], ip("127.1.0.2"));
        assert!(!got.contains_key(&key("a")));
    }

    #[test]
    fn honours_load_balancer_ip_in_range_only() {
        let mut lb = LbAllocator::new("127.1.0.0/24".parse().unwrap());
        let got = lb
            .reconcile(&[
                request("a", &[], Some("127.1.0.77")),
                request("b", &[], Some("127.2.0.1")),
                request("c", &["127.9.9.9"], None),
            ])
            .clone();
        assert_eq!(got[&key("a")], ip("127.1.0.77"));
        assert!(!got.contains_key(&key("b")));
        // A status address outside the range is not kept.
        assert_eq!(got[&key("c")], ip("127.1.0.1"));
        // The same requested address for a second Service: refused.
        let got = lb
            .reconcile(&[
                request("a", &[], Some("127.1.0.77")),
                request("z", &[], Some("127.1.0.77")),
            ])
            .clone();
        assert_eq!(got.len(), 1);
        // Changing the request moves the Service.
        let got = lb
            .reconcile(&[request("a", &["127.1.0.77"], Some("127.1.0.78"))])
            .clone();
        assert_eq!(got[&key("a")], ip("127.1.0.78"));
    }
}
