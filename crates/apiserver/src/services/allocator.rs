//! The store-backed service IP allocator: one `networking.k8s.io/v1` IPAddress object per
//! allocated address, under `/registry/networking.k8s.io/ipaddresses/<ip>` (upstream's newer
//! allocator). Taking an address is a create of its key, which the store makes atomic, so
//! several API servers on one store never hand out the same address; giving one back is a
//! delete guarded by the key's revision and by the owner recorded in `spec.parentRef`.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use nodeless_store::{RangeRequest, Store, StoreError};
use rand::Rng;
use serde_json::{json, Value};

use super::range::ServiceCidr;
use crate::objects;

/// The store prefix of the IPAddress objects.
pub const IP_ADDRESS_PREFIX: &str = "/registry/networking.k8s.io/ipaddresses/";
/// The label upstream puts on the IPAddress objects its allocator manages.
const MANAGED_BY: &str = "ipallocator.k8s.io";
/// How many random addresses are tried before the allocator looks at the whole range.
const RANDOM_ATTEMPTS: usize = 4;

/// Why an address could not be taken (the messages are upstream's).
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    /// No address is left.
    #[error("range is full")]
    Full,
    /// The address asked for is outside the service CIDR (or its network or broadcast address).
    #[error("provided IP is not in the valid range. The range of valid IPs is {0}")]
    NotInRange(ServiceCidr),
    /// Another Service has the address asked for.
    #[error("provided IP is already allocated")]
    Allocated,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The Service an address belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceRef {
    /// The Service `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The owner an IPAddress object records, if it names a Service.
    pub fn of_ip_address(obj: &Value) -> Option<Self> {
        let parent = obj.get("spec")?.get("parentRef")?;
        if parent.get("resource").and_then(Value::as_str) != Some("services") {
            return None;
        }
        Some(Self::new(
            parent.get("namespace").and_then(Value::as_str)?,
            parent.get("name").and_then(Value::as_str)?,
        ))
    }
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Allocates service cluster IPs from one CIDR, keeping the allocations in the store.
#[derive(Clone)]
pub struct IpAllocator {
    store: Arc<dyn Store>,
    cidr: ServiceCidr,
}

impl IpAllocator {
    /// An allocator over `cidr` that keeps its state in `store`.
    pub fn new(store: Arc<dyn Store>, cidr: ServiceCidr) -> Self {
        Self { store, cidr }
    }

    /// The range addresses come from.
    pub fn cidr(&self) -> ServiceCidr {
        self.cidr
    }

    /// The store key of an address.
    pub fn key(ip: Ipv4Addr) -> String {
        format!("{IP_ADDRESS_PREFIX}{ip}")
    }

    /// The IPAddress object recording that `ip` belongs to `owner`.
    pub fn ip_address_object(ip: Ipv4Addr, owner: &ServiceRef) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IPAddress",
            "metadata": {
                "name": ip.to_string(),
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": objects::now_rfc3339(),
                "labels": {
                    "ipaddress.kubernetes.io/ip-family": "IPv4",
                    "ipaddress.kubernetes.io/managed-by": MANAGED_BY,
                },
            },
            "spec": {
                "parentRef": {
                    "group": "",
                    "resource": "services",
                    "namespace": owner.namespace,
                    "name": owner.name,
                },
            },
        })
    }

    /// Checks that `ip` may be given to a Service at all.
    pub fn check_in_range(&self, ip: Ipv4Addr) -> Result<u32, AllocationError> {
        self.cidr
            .usable_offset(ip)
            .ok_or(AllocationError::NotInRange(self.cidr))
    }

    /// Takes `ip` for `owner`.
    pub async fn allocate(&self, ip: Ipv4Addr, owner: &ServiceRef) -> Result<(), AllocationError> {
        self.check_in_range(ip)?;
        self.try_create(ip, owner)
            .await?
            .then_some(())
            .ok_or(AllocationError::Allocated)
    }

    /// Takes a free address for `owner`: a random one of the upper band if one is free at
    /// the first tries, else the first free one in [`ServiceCidr::dynamic_order`] from a
    /// random start.
    pub async fn allocate_next(&self, owner: &ServiceRef) -> Result<Ipv4Addr, AllocationError> {
        let (band_start, band_end) = self.cidr.upper_band();
        if band_start <= band_end {
            for _ in 0..RANDOM_ATTEMPTS {
                let offset = rand::thread_rng().gen_range(band_start..=band_end);
                let ip = self.cidr.ip_at(offset);
                if self.try_create(ip, owner).await? {
                    return Ok(ip);
                }
            }
        }
        // Crowded: look at what is taken and walk the free addresses.
        let taken = self.allocated_offsets().await?;
        let (upper, lower) = {
            let mut rng = rand::thread_rng();
            (rng.gen::<u32>(), rng.gen::<u32>())
        };
        for offset in self.cidr.dynamic_order(upper, lower) {
            if taken.contains(&offset) {
                continue;
            }
            let ip = self.cidr.ip_at(offset);
            if self.try_create(ip, owner).await? {
                return Ok(ip);
            }
        }
        Err(AllocationError::Full)
    }

    /// What [`allocate`](Self::allocate) would answer, without taking the address (dry run).
    pub async fn check_free(&self, ip: Ipv4Addr) -> Result<(), AllocationError> {
        self.check_in_range(ip)?;
        match self.store.get(&Self::key(ip), None).await? {
            Some(_) => Err(AllocationError::Allocated),
            None => Ok(()),
        }
    }

    /// An address [`allocate_next`](Self::allocate_next) could hand out now, without taking
    /// it (dry run).
    pub async fn peek_next(&self) -> Result<Ipv4Addr, AllocationError> {
        let taken = self.allocated_offsets().await?;
        let (upper, lower) = {
            let mut rng = rand::thread_rng();
            (rng.gen::<u32>(), rng.gen::<u32>())
        };
        self.cidr
            .dynamic_order(upper, lower)
            .find(|o| !taken.contains(o))
            .map(|o| self.cidr.ip_at(o))
            .ok_or(AllocationError::Full)
    }

    /// Gives `ip` back if it still belongs to `owner`; returns whether it was released.
    pub async fn release(&self, ip: Ipv4Addr, owner: &ServiceRef) -> Result<bool, StoreError> {
        let key = Self::key(ip);
        for _ in 0..4 {
            let Some(kv) = self.store.get(&key, None).await? else {
                return Ok(false);
            };
            let current: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            if ServiceRef::of_ip_address(&current).as_ref() != Some(owner) {
                tracing::debug!(%ip, %owner, "not releasing an address another Service has");
                return Ok(false);
            }
            match self.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(_) => {
                    tracing::debug!(%ip, %owner, "released service IP");
                    return Ok(true);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Every IPAddress object, with its address and store revision.
    pub async fn list(&self) -> Result<Vec<(Ipv4Addr, Value, i64)>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self
                .store
                .range(RangeRequest {
                    prefix: IP_ADDRESS_PREFIX,
                    start_key: start.as_deref(),
                    limit: Some(1000),
                    revision: None,
                })
                .await?;
            for kv in &page.kvs {
                let Some(ip) = kv
                    .key
                    .strip_prefix(IP_ADDRESS_PREFIX)
                    .and_then(|s| s.parse::<Ipv4Addr>().ok())
                else {
                    continue;
                };
                let obj = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                out.push((ip, obj, kv.mod_revision));
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => start = Some(format!("{}\u{0}", last.key)),
                _ => return Ok(out),
            }
        }
    }

    /// The offsets of the allocated addresses that lie in the range.
    async fn allocated_offsets(&self) -> Result<HashSet<u32>, StoreError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter_map(|(ip, _, _)| self.cidr.usable_offset(ip))
            .collect())
    }

    /// Creates the IPAddress object; `false` if the address is taken.
    async fn try_create(&self, ip: Ipv4Addr, owner: &ServiceRef) -> Result<bool, StoreError> {
        let body = serde_json::to_vec(&Self::ip_address_object(ip, owner))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        match self.store.create(&Self::key(ip), body).await {
            Ok(_) => {
                tracing::debug!(%ip, %owner, "allocated service IP");
                Ok(true)
            }
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Points the IPAddress of `ip` at `owner` (repair), if it is still at `revision`.
    pub(super) async fn reassign(
        &self,
        ip: Ipv4Addr,
        owner: &ServiceRef,
        revision: i64,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec(&Self::ip_address_object(ip, owner))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.store.update(&Self::key(ip), body, revision).await?;
        Ok(())
    }

    /// Deletes the IPAddress of `ip` if it is still at `revision` (repair).
    pub(super) async fn remove(&self, ip: Ipv4Addr, revision: i64) -> Result<(), StoreError> {
        self.store.delete(&Self::key(ip), Some(revision)).await?;
        Ok(())
    }

    /// Creates the IPAddress of `ip` for `owner` unless it exists (repair).
    pub(super) async fn ensure(
        &self,
        ip: Ipv4Addr,
        owner: &ServiceRef,
    ) -> Result<bool, StoreError> {
        self.try_create(ip, owner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocator(cidr: &str) -> (IpAllocator, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = nodeless_store::sqlite::SqliteStore::open(dir.path().join("db")).unwrap();
        (
            IpAllocator::new(Arc::new(store), cidr.parse().unwrap()),
            dir,
        )
    }

    fn svc(name: &str) -> ServiceRef {
        ServiceRef::new("default", name)
    }

    #[tokio::test]
    async fn a_small_range_is_exhausted_then_released_addresses_come_back() {
        let (alloc, _dir) = allocator("10.96.0.0/29");
        let mut got = HashSet::new();
        for i in 0..5 {
            let ip = alloc.allocate_next(&svc(&format!("s{i}"))).await.unwrap();
            assert!(got.insert(ip), "{ip} handed out twice");
        }
        // .2 to .6: never the network, broadcast or the kubernetes address.
        let expected: HashSet<Ipv4Addr> = (2..=6).map(|o| Ipv4Addr::new(10, 96, 0, o)).collect();
        assert_eq!(got, expected);
        let full = alloc.allocate_next(&svc("more")).await.unwrap_err();
        assert_eq!(full.to_string(), "range is full");
        assert!(matches!(
            alloc.peek_next().await,
            Err(AllocationError::Full)
        ));
        // The reserved first address can still be asked for explicitly.
        alloc
            .allocate(Ipv4Addr::new(10, 96, 0, 1), &svc("kubernetes"))
            .await
            .unwrap();
        let ip4 = Ipv4Addr::new(10, 96, 0, 4);
        let list = alloc.list().await.unwrap();
        let owner = list
            .iter()
            .find(|(ip, _, _)| *ip == ip4)
            .and_then(|(_, obj, _)| ServiceRef::of_ip_address(obj))
            .unwrap();
        assert!(owner.name.starts_with('s'));
        // Only the owner releases it.
        assert!(!alloc.release(ip4, &svc("someone-else")).await.unwrap());
        assert!(alloc.release(ip4, &owner).await.unwrap());
        assert!(!alloc.release(ip4, &owner).await.unwrap());
        assert_eq!(alloc.peek_next().await.unwrap(), ip4);
        assert_eq!(alloc.allocate_next(&svc("again")).await.unwrap(), ip4);
    }

    #[tokio::test]
    async fn explicit_addresses_are_checked() {
        let (alloc, _dir) = allocator("10.96.0.0/12");
        let ip = Ipv4Addr::new(10, 100, 1, 2);
        alloc.check_free(ip).await.unwrap();
        alloc.allocate(ip, &svc("a")).await.unwrap();
        let err = alloc.allocate(ip, &svc("b")).await.unwrap_err();
        assert_eq!(err.to_string(), "provided IP is already allocated");
        assert!(matches!(
            alloc.check_free(ip).await,
            Err(AllocationError::Allocated)
        ));
        for outside in ["10.95.0.1", "10.112.0.1", "10.96.0.0", "10.111.255.255"] {
            let err = alloc
                .allocate(outside.parse().unwrap(), &svc("c"))
                .await
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
            );
        }
        // The range's last usable address is fine.
        alloc
            .allocate("10.111.255.254".parse().unwrap(), &svc("d"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_wide_range_hands_out_upper_band_addresses() {
        let (alloc, _dir) = allocator("10.96.0.0/12");
        for i in 0..20 {
            let ip = alloc.allocate_next(&svc(&format!("s{i}"))).await.unwrap();
            let offset = alloc.cidr().usable_offset(ip).unwrap();
            assert!(offset >= 256, "{ip} is in the static band");
        }
        assert_eq!(alloc.list().await.unwrap().len(), 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_allocations_never_share_an_address() {
        // Two allocators over one store, as two API servers on one etcd.
        let (first, _dir) = allocator("10.96.0.0/28");
        let second = IpAllocator::new(first.store.clone(), first.cidr());
        let mut tasks = Vec::new();
        for i in 0..16 {
            let alloc = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.push(tokio::spawn(async move {
                alloc.allocate_next(&svc(&format!("s{i}"))).await
            }));
        }
        let mut got = Vec::new();
        let mut full = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(ip) => got.push(ip),
                Err(AllocationError::Full) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        // A /28 has 14 usable addresses, one of them reserved: 13 to share among 16.
        assert_eq!(got.len(), 13);
        assert_eq!(full, 3);
        let distinct: HashSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), got.len());
    }
}
