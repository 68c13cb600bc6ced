//! The service CIDR: which addresses it offers and in what order they are handed out.
//!
//! As upstream's `ipallocator`, the network and broadcast addresses are never offered, the
//! first address is kept for the `kubernetes` Service, and dynamic allocation prefers the
//! upper part of the range so that the lower band stays free for addresses users ask for.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The widest service CIDR upstream accepts for IPv4 (`/12`, 2^20 addresses).
pub const MIN_PREFIX_LEN: u8 = 12;
/// The narrowest one that still has a usable address besides the reserved first one.
pub const MAX_PREFIX_LEN: u8 = 30;

/// An IPv4 range that service cluster IPs are allocated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    network: u32,
    prefix_len: u8,
}

/// Why a `--service-cidr` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidServiceCidr(String);

impl fmt::Display for InvalidServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidServiceCidr {}

impl FromStr for ServiceCidr {
    type Err = InvalidServiceCidr;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| InvalidServiceCidr(format!("invalid service CIDR {text:?}: {why}"));
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| bad("expected an IPv4 CIDR such as 10.96.0.0/12"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| bad("only IPv4 service CIDRs are supported"))?;
        let prefix_len: u8 = len.parse().map_err(|_| bad("bad prefix length"))?;
        if prefix_len < MIN_PREFIX_LEN {
            return Err(bad(
                "the range is too large; the prefix length must be >= 12",
            ));
        }
        if prefix_len > MAX_PREFIX_LEN {
            return Err(bad(
                "the range is too small; the prefix length must be <= 30",
            ));
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(Self {
            network: u32::from(addr) & mask,
            prefix_len,
        })
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix_len)
    }
}

impl Default for ServiceCidr {
    /// Upstream's default, `10.96.0.0/12`.
    fn default() -> Self {
        Self {
            network: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
            prefix_len: 12,
        }
    }
}

impl ServiceCidr {
    /// How many addresses the CIDR spans, network and broadcast included.
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix_len)
    }

    /// The address at `offset` from the network address.
    pub fn ip_at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network.wrapping_add(offset))
    }

    /// The offset of `ip` if it is an address services may have (inside the range, neither
    /// the network nor the broadcast address).
    pub fn usable_offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(ip).wrapping_sub(self.network);
        (u32::from(ip) >= self.network && offset >= 1 && offset < self.size() - 1).then_some(offset)
    }

    /// The address of the `kubernetes` Service: the first one after the network address.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        self.ip_at(1)
    }

    /// Where the upper band that dynamic allocation prefers begins (upstream's
    /// `calculateRangeOffset`: size/16 clamped to 16..=256, none for ranges under 16).
    pub fn dynamic_band_start(&self) -> u32 {
        let size = self.size();
        if size < 16 {
            return 1;
        }
        (size / 16).clamp(16, 256)
    }

    /// Every address dynamic allocation may hand out, in the order it tries them: the upper
    /// band from `upper_start`, wrapping inside the band, then the lower band from
    /// `lower_start`. The reserved first address is never among them.
    pub fn dynamic_order(&self, upper_start: u32, lower_start: u32) -> impl Iterator<Item = u32> {
        let band = self.dynamic_band_start().max(2);
        let last = self.size() - 2;
        let upper = rotated(band, last, upper_start);
        let lower = rotated(2, (band - 1).min(last), lower_start);
        upper.chain(lower)
    }

    /// The bounds (inclusive) of the upper band dynamic allocation tries first.
    pub fn upper_band(&self) -> (u32, u32) {
        (self.dynamic_band_start().max(2), self.size() - 2)
    }
}

/// `first..=last` starting at `start` (taken modulo the span) and wrapping around; empty when
/// `first > last`.
fn rotated(first: u32, last: u32, start: u32) -> impl Iterator<Item = u32> {
    let span = if last >= first { last - first + 1 } else { 0 };
    let begin = if span == 0 { 0 } else { start % span };
    (0..span).map(move |i| first + (begin + i) % span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> ServiceCidr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_masks_the_network() {
        let c = cidr("10.96.7.9/12");
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert_eq!(c.size(), 1 << 20);
        assert_eq!(ServiceCidr::default(), cidr("10.96.0.0/12"));
    }

    #[test]
    fn refuses_ipv6_too_large_and_too_small_ranges() {
        assert!("fd00::/108".parse::<ServiceCidr>().is_err());
        assert!("10.0.0.0/8".parse::<ServiceCidr>().is_err());
        assert!("10.0.0.0/31".parse::<ServiceCidr>().is_err());
        assert!("10.0.0.0".parse::<ServiceCidr>().is_err());
        assert!("10.0.0.0/x".parse::<ServiceCidr>().is_err());
    }

    #[test]
    fn network_and_broadcast_are_not_usable() {
        let c = cidr("10.96.0.0/29");
        assert_eq!(c.usable_offset("10.96.0.0".parse().unwrap()), None);
        assert_eq!(c.usable_offset("10.96.0.1".parse().unwrap()), Some(1));
        assert_eq!(c.usable_offset("10.96.0.6".parse().unwrap()), Some(6));
        assert_eq!(c.usable_offset("10.96.0.7".parse().unwrap()), None);
        assert_eq!(c.usable_offset("10.96.0.8".parse().unwrap()), None);
        assert_eq!(c.usable_offset("10.95.255.255".parse().unwrap()), None);
        let wide = ServiceCidr::default();
        assert_eq!(
            wide.usable_offset("10.111.255.254".parse().unwrap()),
            Some((1 << 20) - 2)
        );
        assert_eq!(wide.usable_offset("10.111.255.255".parse().unwrap()), None);
        assert_eq!(wide.usable_offset("10.112.0.0".parse().unwrap()), None);
    }

    #[test]
    fn the_first_address_is_the_kubernetes_service() {
        assert_eq!(
            ServiceCidr::default().kubernetes_ip(),
            Ipv4Addr::new(10, 96, 0, 1)
        );
    }

    #[test]
    fn dynamic_order_covers_every_usable_address_but_the_reserved_one_once() {
        for text in [
            "10.96.0.0/30",
            "10.96.0.0/29",
            "10.96.0.0/28",
            "10.96.0.0/24",
            "10.96.0.0/20",
        ] {
            let c = cidr(text);
            for (upper, lower) in [(0, 0), (3, 7), (u32::MAX, 12345)] {
                let mut order: Vec<u32> = c.dynamic_order(upper, lower).collect();
                let first = order.first().copied();
                order.sort_unstable();
                let expected: Vec<u32> = (2..c.size() - 1).collect();
                assert_eq!(order, expected, "{text}");
                // The upper band comes first (when the range has one).
                let (band_start, band_end) = c.upper_band();
                if band_start <= band_end {
                    assert!(first.unwrap() >= band_start, "{text}");
                }
            }
        }
    }

    #[test]
    fn the_lower_band_is_kept_for_requested_addresses() {
        assert_eq!(cidr("10.96.0.0/12").dynamic_band_start(), 256);
        assert_eq!(cidr("10.96.0.0/24").dynamic_band_start(), 16);
        assert_eq!(cidr("10.96.0.0/29").dynamic_band_start(), 1);
        assert_eq!(cidr("10.96.0.0/29").upper_band(), (2, 6));
    }
}
