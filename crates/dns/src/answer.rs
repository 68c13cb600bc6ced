//! The name → answer logic of the cluster zone, over a [`ClusterView`] (no I/O).
//!
//! Follows the Kubernetes DNS specification (schema 1.1.0) and CoreDNS's kubernetes plugin:
//! service, endpoint, SRV and (insecure or verified) pod records, PTR records for cluster IPs
//! and endpoint addresses, `dns-version` TXT, an SOA at the zone apex.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

use crate::view::{dashed_address, ClusterView, ServiceKind};
use crate::DnsError;

/// The DNS schema version this server implements (CoreDNS answers the same).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// Which `<a-b-c-d>.<ns>.pod.<zone>` records exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodRecords {
    /// Any well-formed address in any namespace resolves to itself (CoreDNS `pods insecure`).
    #[default]
    Insecure,
    /// Only addresses of pods in that namespace resolve (CoreDNS `pods verified`).
    Verified,
    /// No pod records.
    Disabled,
}

/// The cluster zone: its origin, TTL and SOA.
#[derive(Clone, Debug)]
pub struct ClusterZone {
    origin: Name,
    ttl: u32,
    pods: PodRecords,
    soa: Record,
}

/// What the cluster zone says about a question.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Records to answer with, and records for the additional section.
    Answer {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section (addresses of SRV targets).
        additionals: Vec<Record>,
    },
    /// The name is an alias (ExternalName service): the CNAME, and its target to chase upstream.
    Alias {
        /// The CNAME record.
        cname: Box<Record>,
        /// The alias target.
        target: Name,
    },
    /// The name exists but has no records of that type (NOERROR, SOA in authority).
    NoData,
    /// The name does not exist (NXDOMAIN, SOA in authority).
    NxDomain,
    /// Not a name this server is authoritative for: forward it.
    NotOurs,
}

impl ClusterZone {
    /// The zone for a cluster domain such as `cluster.local`.
    pub fn new(cluster_domain: &str, ttl: u32, pods: PodRecords) -> Result<Self, DnsError> {
        let origin = Name::from_ascii(cluster_domain)
            .map_err(|e| DnsError::InvalidDomain(cluster_domain.to_string(), e.to_string()))?
            .to_lowercase();
        let mut origin = origin;
        origin.set_fqdn(true);
        let child = |label: &str| {
            origin
                .prepend_label(label)
                .map_err(|e| DnsError::InvalidDomain(cluster_domain.to_string(), e.to_string()))
        };
        let mname = child("dns")?
            .prepend_label("ns")
            .map_err(|e| DnsError::InvalidDomain(cluster_domain.to_string(), e.to_string()))?;
        let rname = child("hostmaster")?;
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        // CoreDNS's values: refresh 2h, retry 30m, expire 1d, negative TTL = the record TTL.
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            RData::SOA(SOA::new(mname, rname, serial, 7200, 1800, 86400, ttl)),
        );
        Ok(ClusterZone {
            origin,
            ttl,
            pods,
            soa,
        })
    }

    /// The zone's origin (`cluster.local.`).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The zone's SOA record (for the authority section of negative answers).
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Whether a (lowercase) name is in the cluster zone.
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    /// Answers a question from the view. `name` must be lowercase.
    pub fn resolve(&self, view: &ClusterView, name: &Name, rtype: RecordType) -> Outcome {
        if rtype == RecordType::PTR && !self.contains(name) {
            return self.reverse(view, name);
        }
        if !self.contains(name) {
            return Outcome::NotOurs;
        }
        let depth = usize::from(name.num_labels() - self.origin.num_labels());
        // Labels under the zone, nearest the zone first: `svc`, `<ns>`, `<service>`, ...
        let labels: Vec<String> = name
            .iter()
            .take(depth)
            .map(|label| String::from_utf8_lossy(label).into_owned())
            .rev()
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        match labels.as_slice() {
            [] => match rtype {
                RecordType::SOA => self.answer(vec![self.soa.clone()]),
                _ => Outcome::NoData,
            },
            ["dns-version"] => match rtype {
                RecordType::TXT => self.answer(vec![Record::from_rdata(
                    name.clone(),
                    self.ttl,
                    RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                )]),
                _ => Outcome::NoData,
            },
            ["svc"] | ["pod"] => Outcome::NoData,
            ["svc", namespace] => {
                if view.has_services_in(namespace) {
                    Outcome::NoData
                } else {
                    Outcome::NxDomain
                }
            }
            ["svc", namespace, service] => self.service(view, name, rtype, namespace, service),
            ["svc", namespace, service, endpoint] => {
                self.endpoint(view, name, rtype, namespace, service, endpoint)
            }
            ["svc", namespace, service, proto, port] => {
                match (proto.strip_prefix('_'), port.strip_prefix('_')) {
                    (Some(proto), Some(port)) => {
                        self.srv(view, name, rtype, namespace, service, proto, port)
                    }
                    _ => Outcome::NxDomain,
                }
            }
            ["pod", _namespace] => Outcome::NoData,
            ["pod", namespace, address] => self.pod(view, name, rtype, namespace, address),
            _ => Outcome::NxDomain,
        }
    }

    fn answer(&self, answers: Vec<Record>) -> Outcome {
        Outcome::Answer {
            answers,
            additionals: Vec::new(),
        }
    }

    /// Address records of `name` for the addresses of the queried family; NoData when the
    /// name has addresses of the other family only.
    fn addresses(&self, name: &Name, rtype: RecordType, addresses: &[IpAddr]) -> Outcome {
        let records = address_records(name, self.ttl, rtype, addresses);
        if records.is_empty() {
            Outcome::NoData
        } else {
            self.answer(records)
        }
    }

    fn service(
        &self,
        view: &ClusterView,
        name: &Name,
        rtype: RecordType,
        namespace: &str,
        service: &str,
    ) -> Outcome {
        let Some(record) = view.service(namespace, service) else {
            return Outcome::NxDomain;
        };
        match &record.kind {
            ServiceKind::ExternalName(target) => self.alias(name, target),
            ServiceKind::ClusterIp(ips) => self.addresses(name, rtype, ips),
            ServiceKind::Headless => {
                let mut addresses: Vec<IpAddr> = view
                    .ready_endpoints(namespace, service)
                    .into_iter()
                    .map(|e| e.address)
                    .collect();
                addresses.sort();
                addresses.dedup();
                if addresses.is_empty() {
                    // The specification: a headless service without ready endpoints is NXDOMAIN.
                    return Outcome::NxDomain;
                }
                self.addresses(name, rtype, &addresses)
            }
        }
    }

    fn alias(&self, name: &Name, target: &str) -> Outcome {
        let Ok(mut target) = Name::from_ascii(target) else {
            return Outcome::NxDomain;
        };
        target.set_fqdn(true);
        Outcome::Alias {
            cname: Box::new(Record::from_rdata(
                name.clone(),
                self.ttl,
                RData::CNAME(CNAME(target.clone())),
            )),
            target,
        }
    }

    fn endpoint(
        &self,
        view: &ClusterView,
        name: &Name,
        rtype: RecordType,
        namespace: &str,
        service: &str,
        endpoint: &str,
    ) -> Outcome {
        match view.service(namespace, service) {
            None
            | Some(crate::view::ServiceRecord {
                kind: ServiceKind::ExternalName(_),
                ..
            }) => return Outcome::NxDomain,
            Some(_) => {}
        }
        let addresses: Vec<IpAddr> = view
            .ready_endpoints(namespace, service)
            .into_iter()
            .filter(|e| e.hostname == endpoint)
            .map(|e| e.address)
            .collect();
        if addresses.is_empty() {
            return Outcome::NxDomain;
        }
        self.addresses(name, rtype, &addresses)
    }

    #[allow(clippy::too_many_arguments)]
    fn srv(
        &self,
        view: &ClusterView,
        name: &Name,
        rtype: RecordType,
        namespace: &str,
        service: &str,
        proto: &str,
        port: &str,
    ) -> Outcome {
        let Some(record) = view.service(namespace, service) else {
            return Outcome::NxDomain;
        };
        let service_name = match self.service_name(namespace, service) {
            Some(name) => name,
            None => return Outcome::NxDomain,
        };
        // (target name, port, target addresses)
        let mut targets: Vec<(Name, u16, Vec<IpAddr>)> = Vec::new();
        match &record.kind {
            ServiceKind::ExternalName(_) => return Outcome::NxDomain,
            ServiceKind::ClusterIp(ips) => {
                for p in record
                    .ports
                    .iter()
                    .filter(|p| p.name == port && p.protocol == proto)
                {
                    targets.push((service_name.clone(), p.port, ips.clone()));
                }
            }
            ServiceKind::Headless => {
                let ports = view.endpoint_ports(namespace, service);
                let endpoints = view.ready_endpoints(namespace, service);
                for p in ports
                    .iter()
                    .filter(|p| p.name == port && p.protocol == proto)
                {
                    for endpoint in &endpoints {
                        let Ok(target) = service_name.prepend_label(endpoint.hostname.as_str())
                        else {
                            continue;
                        };
                        match targets
                            .iter_mut()
                            .find(|(t, n, _)| *t == target && *n == p.port)
                        {
                            Some((_, _, addresses)) => addresses.push(endpoint.address),
                            None => targets.push((target, p.port, vec![endpoint.address])),
                        }
                    }
                }
            }
        }
        if targets.is_empty() {
            return Outcome::NxDomain;
        }
        match rtype {
            RecordType::SRV => {
                let weight = u16::try_from((100 / targets.len()).max(1)).unwrap_or(1);
                let mut answers = Vec::new();
                let mut additionals = Vec::new();
                for (target, port, addresses) in &targets {
                    answers.push(Record::from_rdata(
                        name.clone(),
                        self.ttl,
                        RData::SRV(SRV::new(0, weight, *port, target.clone())),
                    ));
                    if !additionals.iter().any(|r: &Record| r.name == *target) {
                        for rtype in [RecordType::A, RecordType::AAAA] {
                            additionals.extend(address_records(target, self.ttl, rtype, addresses));
                        }
                    }
                }
                Outcome::Answer {
                    answers,
                    additionals,
                }
            }
            RecordType::A | RecordType::AAAA => {
                let mut addresses: Vec<IpAddr> =
                    targets.into_iter().flat_map(|(_, _, a)| a).collect();
                addresses.sort();
                addresses.dedup();
                self.addresses(name, rtype, &addresses)
            }
            _ => Outcome::NoData,
        }
    }

    fn pod(
        &self,
        view: &ClusterView,
        name: &Name,
        rtype: RecordType,
        namespace: &str,
        address: &str,
    ) -> Outcome {
        if self.pods == PodRecords::Disabled {
            return Outcome::NxDomain;
        }
        let Some(ip) = parse_dashed_address(address) else {
            return Outcome::NxDomain;
        };
        if self.pods == PodRecords::Verified && !view.pod_has_ip(namespace, ip) {
            return Outcome::NxDomain;
        }
        self.addresses(name, rtype, &[ip])
    }

    /// PTR records for cluster IPs and ready endpoint addresses; anything else is forwarded.
    fn reverse(&self, view: &ClusterView, name: &Name) -> Outcome {
        let Ok(net) = name.parse_arpa_name() else {
            return Outcome::NotOurs;
        };
        let ip = net.addr();
        if net.prefix_len() != net.max_prefix_len() {
            return Outcome::NotOurs;
        }
        let mut targets: Vec<Name> = Vec::new();
        for (namespace, name, service) in view.services() {
            if let ServiceKind::ClusterIp(ips) = &service.kind {
                if ips.contains(&ip) {
                    targets.extend(self.service_name(namespace, name));
                }
            }
        }
        for (namespace, _, slice) in view.slices() {
            for endpoint in slice.endpoints.iter().filter(|e| e.ready) {
                if endpoint.addresses.contains(&ip) {
                    let hostname = endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| dashed_address(&ip));
                    if let Some(service) = self.service_name(namespace, &slice.service) {
                        targets.extend(service.prepend_label(hostname.as_str()).ok());
                    }
                }
            }
        }
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Outcome::NotOurs;
        }
        self.answer(
            targets
                .into_iter()
                .map(|target| Record::from_rdata(name.clone(), self.ttl, RData::PTR(PTR(target))))
                .collect(),
        )
    }

    /// `<service>.<namespace>.svc.<zone>`.
    fn service_name(&self, namespace: &str, service: &str) -> Option<Name> {
        self.origin
            .prepend_label("svc")
            .and_then(|n| n.prepend_label(namespace))
            .and_then(|n| n.prepend_label(service))
            .ok()
    }
}

/// A or AAAA records (by `rtype`) for the addresses of that family.
fn address_records(name: &Name, ttl: u32, rtype: RecordType, addresses: &[IpAddr]) -> Vec<Record> {
    addresses
        .iter()
        .filter_map(|address| match (rtype, address) {
            (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(A(*v4))),
            (RecordType::AAAA, IpAddr::V6(v6)) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|rdata| Record::from_rdata(name.clone(), ttl, rdata))
        .collect()
}

/// `10-0-0-1` → 10.0.0.1; `fd00--1` → fd00::1 (CoreDNS's pod-record label format).
pub fn parse_dashed_address(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 && !label.contains("--") {
        label
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4)
    } else {
        label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    }
}

#[cfg(test)]
mod tests;
