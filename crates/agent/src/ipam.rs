//! Pod IP addresses: a node's pod CIDR and an allocator that never hands out one address twice.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Mutex;

use crate::AgentError;

/// An IPv4 range such as `10.244.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodCidr {
    base: u32,
    prefix: u8,
}

impl PodCidr {
    /// The default range, `10.244.0.0/16` (room for a thousand pods and more).
    pub const DEFAULT: PodCidr = PodCidr {
        base: u32::from_be_bytes([10, 244, 0, 0]),
        prefix: 16,
    };

    /// A range from its network address and prefix length (at most 30, so that it has room
    /// for a gateway and at least one pod).
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, AgentError> {
        if prefix > 30 {
            return Err(AgentError::Config(format!(
                "pod CIDR {network}/{prefix}: the prefix must be at most 30"
            )));
        }
        let base = u32::from(network);
        let mask = Self::mask(prefix);
        if base & !mask != 0 {
            return Err(AgentError::Config(format!(
                "pod CIDR {network}/{prefix}: host bits are set"
            )));
        }
        Ok(Self { base, prefix })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    /// The gateway address (the first host, as CNI's host-local plugin reserves it).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// How many addresses pods can get (all but network, gateway and broadcast).
    pub fn pod_addresses(&self) -> u32 {
        let size = 1u64 << (32 - self.prefix as u32);
        (size - 3).min(u32::MAX as u64) as u32
    }

    /// Whether `ip` is one of the pod addresses of the range.
    pub fn contains_pod_address(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip.wrapping_sub(self.base + 2) < self.pod_addresses()
    }
}

impl fmt::Display for PodCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl FromStr for PodCidr {
    type Err = AgentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || AgentError::Config(format!("invalid pod CIDR {s:?}"));
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        PodCidr::new(addr, prefix)
    }
}

/// Hands out the addresses of a [`PodCidr`], each to one pod at a time.
#[derive(Debug)]
pub struct PodIpAllocator {
    cidr: PodCidr,
    state: Mutex<AllocatorState>,
}

#[derive(Debug, Default)]
struct AllocatorState {
    used: HashSet<u32>,
    /// Offset (from the first pod address) where the next search starts, so that a
    /// released address is not reused at once.
    next: u32,
}

impl PodIpAllocator {
    /// An allocator with every address of `cidr` free.
    pub fn new(cidr: PodCidr) -> Self {
        Self {
            cidr,
            state: Mutex::new(AllocatorState::default()),
        }
    }

    /// The range this allocator hands out.
    pub fn cidr(&self) -> PodCidr {
        self.cidr
    }

    /// A free address, or `None` when all are taken.
    pub fn allocate(&self) -> Option<Ipv4Addr> {
        let mut state = self.lock();
        let count = self.cidr.pod_addresses();
        if state.used.len() as u64 >= count as u64 {
            return None;
        }
        let first = self.cidr.base + 2;
        for step in 0..count {
            let offset = (state.next + step) % count;
            let ip = first + offset;
            if state.used.insert(ip) {
                state.next = (offset + 1) % count;
                return Some(Ipv4Addr::from(ip));
            }
        }
        None
    }

    /// Takes a given address (a pod's former IP, kept across agent restarts); false when it is
    /// outside the range or already taken.
    pub fn reserve(&self, ip: Ipv4Addr) -> bool {
        if !self.cidr.contains_pod_address(ip) {
            return false;
        }
        self.lock().used.insert(u32::from(ip))
    }

    /// Gives an address back.
    pub fn release(&self, ip: Ipv4Addr) {
        self.lock().used.remove(&u32::from(ip));
    }

    /// How many addresses are taken.
    pub fn in_use(&self) -> usize {
        self.lock().used.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AllocatorState> {
        // The state stays consistent even if a holder panicked: every change is one insert
        // or remove.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates_ranges() {
        let c: PodCidr = "10.244.0.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/24");
        assert_eq!(c.pod_addresses(), 253);
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 0, 1));
        assert!("10.244.0.1/24".parse::<PodCidr>().is_err());
        assert!("10.244.0.0/31".parse::<PodCidr>().is_err());
        assert!("10.244.0.0".parse::<PodCidr>().is_err());
        assert_eq!(PodCidr::DEFAULT.to_string(), "10.244.0.0/16");
    }

    #[test]
    fn allocates_every_address_once_then_none() {
        let a = PodIpAllocator::new("10.0.0.0/29".parse().unwrap());
        let mut seen = HashSet::new();
        while let Some(ip) = a.allocate() {
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(seen.len(), 5);
        assert!(!seen.contains(&Ipv4Addr::new(10, 0, 0, 0)));
        assert!(!seen.contains(&Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!seen.contains(&Ipv4Addr::new(10, 0, 0, 7)));
        a.release(Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 0, 0, 4)));
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn released_addresses_are_not_reused_at_once() {
        let a = PodIpAllocator::new("10.0.0.0/24".parse().unwrap());
        let first = a.allocate().unwrap();
        a.release(first);
        assert_ne!(a.allocate().unwrap(), first);
    }

    #[test]
    fn reserve_refuses_taken_and_foreign_addresses() {
        let a = PodIpAllocator::new("10.0.0.0/24".parse().unwrap());
        assert!(a.reserve(Ipv4Addr::new(10, 0, 0, 9)));
        assert!(!a.reserve(Ipv4Addr::new(10, 0, 0, 9)));
        assert!(!a.reserve(Ipv4Addr::new(10, 0, 1, 9)));
        assert!(!a.reserve(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(a.in_use(), 1);
    }
}
