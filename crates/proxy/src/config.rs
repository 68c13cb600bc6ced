//! Proxy configuration and the address ranges it is given.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use crate::ProxyError;

/// How the service proxy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The service CIDR (`--service-cidr`): the proxy listens only on ClusterIPs inside it.
    pub service_cidr: String,
    /// Where LoadBalancer addresses come from: a CIDR (`127.0.0.0/8`) or an inclusive
    /// `first-last` range (`127.1.0.1-127.1.255.254`).
    pub load_balancer_range: String,
    /// How long a UDP client's upstream socket lives without traffic.
    pub udp_idle_timeout: Duration,
    /// Whether the proxy installs (and removes on shutdown) the AnyIP route
    /// `local <service-cidr> dev lo table local` that makes every ClusterIP a host address.
    pub manage_local_route: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            service_cidr: "10.96.0.0/12".into(),
            load_balancer_range: DEFAULT_LOAD_BALANCER_RANGE.into(),
            udp_idle_timeout: Duration::from_secs(30),
            manage_local_route: true,
        }
    }
}

/// The default LoadBalancer range: loopback addresses from 127.1.0.1 upward (127.0.x.x is
/// left to the host's own services such as 127.0.0.1 and 127.0.0.53).
pub const DEFAULT_LOAD_BALANCER_RANGE: &str = "127.1.0.1-127.255.255.254";

/// An IPv4 network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// The last address of the network.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ProxyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ProxyError::InvalidRange(text.to_string());
        let (addr, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mut cidr = Self {
            network: addr,
            prefix,
        };
        cidr.network = Ipv4Addr::from(u32::from(addr) & cidr.mask());
        Ok(cidr)
    }
}

/// An inclusive range of IPv4 addresses that LoadBalancer addresses are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    /// The first address handed out.
    pub first: Ipv4Addr,
    /// The last address handed out.
    pub last: Ipv4Addr,
}

impl AddressRange {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }

    /// The addresses of the range, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl FromStr for AddressRange {
    type Err = ProxyError;

    /// `first-last`, or a CIDR without its network and broadcast addresses (for /31 and /32
    /// every address).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ProxyError::InvalidRange(text.to_string());
        if let Some((first, last)) = text.trim().split_once('-') {
            let first: Ipv4Addr = first.trim().parse().map_err(|_| bad())?;
            let last: Ipv4Addr = last.trim().parse().map_err(|_| bad())?;
            if first > last {
                return Err(bad());
            }
            return Ok(Self { first, last });
        }
        let cidr: Ipv4Cidr = text.parse()?;
        let (first, last) = (u32::from(cidr.network), u32::from(cidr.last()));
        if cidr.prefix >= 31 {
            return Ok(Self {
                first: first.into(),
                last: last.into(),
            });
        }
        Ok(Self {
            first: (first + 1).into(),
            last: (last - 1).into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_contains() {
        let c: Ipv4Cidr = "10.96.7.9/12".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert!(c.contains("10.111.255.255".parse().unwrap()));
        assert!(!c.contains("10.112.0.0".parse().unwrap()));
        assert_eq!(c.last(), "10.111.255.255".parse::<Ipv4Addr>().unwrap());
        assert!("10.0.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn ranges_from_dash_and_cidr() {
        let r: AddressRange = DEFAULT_LOAD_BALANCER_RANGE.parse().unwrap();
        assert_eq!(r.iter().next(), Some("127.1.0.1".parse().unwrap()));
        assert!(!r.contains("127.0.0.1".parse().unwrap()));
        let r: AddressRange = "192.168.5.0/30".parse().unwrap();
        let all: Vec<Ipv4Addr> = r.iter().collect();
        assert_eq!(
            all,
            vec![
                "192.168.5.1".parse::<Ipv4Addr>().unwrap(),
                "192.168.5.2".parse().unwrap()
            ]
        );
        let r: AddressRange = "127.9.9.9/32".parse().unwrap();
        assert_eq!(r.iter().count(), 1);
        assert!("127.0.0.9-127.0.0.1".parse::<AddressRange>().is_err());
        assert!("nonsense".parse::<AddressRange>().is_err());
    }
}
