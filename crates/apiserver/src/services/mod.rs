//! Service cluster IPs, as upstream's service REST storage and `ipallocator`: a Service of
//! type ClusterIP, NodePort or LoadBalancer gets an address of the service CIDR on create
//! (or keeps the one it asks for, if free and in range), gives it back when it is deleted or
//! becomes an ExternalName Service, and keeps it otherwise. The allocations live in the store
//! ([`allocator`]), a repair pass reconciles them with the Services, and [`kubernetes`]
//! keeps the `default/kubernetes` Service pointing at the API server.

pub mod allocator;
mod kubernetes;
pub mod range;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use nodeless_api::error::FieldError;
use nodeless_api::registry::{self, ResourceKind};
use serde_json::{json, Value};
use tokio::sync::watch;

pub use allocator::{AllocationError, IpAllocator, ServiceRef};
pub use kubernetes::MANAGED_BY as MANAGED_BY_APISERVER;
pub use range::ServiceCidr;

use crate::storage::Storage;
use crate::{objects, ApiError};

/// How old an address with no Service must be before repair releases it: a create in flight
/// on another API server has taken its address but not yet stored its Service.
pub const REPAIR_GRACE: Duration = Duration::from_secs(60);
/// How often the `kubernetes` Service is reconciled (repair runs every sixth round).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// What a write took from the range, given back with [`ServiceIps::undo`] if the write fails.
#[derive(Debug, Default)]
#[must_use]
pub struct Claimed {
    owner: Option<ServiceRef>,
    ips: Vec<Ipv4Addr>,
}

/// The service IP hooks of the write path.
#[derive(Clone)]
pub struct ServiceIps {
    allocator: IpAllocator,
}

fn is_service(kind: &ResourceKind) -> bool {
    kind.group.is_empty() && kind.kind == "Service"
}

fn spec_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("spec")
        .and_then(|s| s.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn owner_of(obj: &Value) -> ServiceRef {
    ServiceRef::new(
        objects::namespace(obj).unwrap_or_default(),
        objects::name(obj).unwrap_or_default(),
    )
}

/// Whether a Service of this type has a cluster IP.
fn has_cluster_ip(service_type: &str) -> bool {
    matches!(service_type, "ClusterIP" | "NodePort" | "LoadBalancer" | "")
}

/// The allocated IPv4 addresses a stored Service holds.
fn service_ips(obj: &Value) -> Vec<Ipv4Addr> {
    if !has_cluster_ip(spec_str(obj, "type")) {
        return Vec::new();
    }
    let mut ips: Vec<Ipv4Addr> = obj
        .get("spec")
        .and_then(|s| s.get("clusterIPs"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if let Ok(ip) = spec_str(obj, "clusterIP").parse::<Ipv4Addr>() {
        if !ips.contains(&ip) {
            ips.insert(0, ip);
        }
    }
    ips
}

fn set_cluster_ip(obj: &mut Value, ip: &str) {
    objects::set_at(obj, &["spec", "clusterIP"], json!(ip));
    objects::set_at(obj, &["spec", "clusterIPs"], json!([ip]));
}

impl ServiceIps {
    /// The hooks over an allocator.
    pub fn new(allocator: IpAllocator) -> Self {
        Self { allocator }
    }

    /// The allocator behind the hooks.
    pub fn allocator(&self) -> &IpAllocator {
        &self.allocator
    }

    /// On create of a Service: fills in `clusterIP`/`clusterIPs`, taking an address unless
    /// the Service is headless or an ExternalName (`dry_run` checks without taking).
    pub async fn on_create(
        &self,
        kind: &ResourceKind,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<Claimed, ApiError> {
        if !is_service(kind) || obj.get("spec").is_none() {
            return Ok(Claimed::default());
        }
        self.assign(kind, obj, dry_run).await
    }

    /// On update of a Service: keeps the old address when the new version leaves it out,
    /// drops it when the Service becomes an ExternalName, and takes one when an ExternalName
    /// Service gets a type that needs one. Addresses the old version held and the new one
    /// does not are released by [`after_update`](Self::after_update).
    pub async fn on_update(
        &self,
        kind: &ResourceKind,
        old: &Value,
        new: &mut Value,
        dry_run: bool,
    ) -> Result<Claimed, ApiError> {
        if !is_service(kind) || new.get("spec").is_none() {
            return Ok(Claimed::default());
        }
        let old_type = spec_str(old, "type").to_string();
        let new_type = spec_str(new, "type").to_string();
        let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
        if new_type == "ExternalName" {
            if old_type != "ExternalName" {
                // Upstream's dropTypeDependentFields: what the client sent back unchanged goes.
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                        if spec.get(field).is_some() && spec.get(field) == old_spec.get(field) {
                            spec.remove(field);
                        }
                    }
                }
            }
            return self.assign(kind, new, dry_run).await;
        }
        let old_ip = spec_str(old, "clusterIP").to_string();
        let new_ip = spec_str(new, "clusterIP").to_string();
        let new_ips_empty = new
            .get("spec")
            .and_then(|s| s.get("clusterIPs"))
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if has_cluster_ip(&old_type) && !old_ip.is_empty() {
            if new_ip.is_empty() && new_ips_empty {
                // Upstream's patchAllocatedValues: an update that leaves the address out keeps it.
                for field in ["clusterIP", "clusterIPs"] {
                    if let Some(v) = old_spec.get(field) {
                        objects::set_at(new, &["spec", field], v.clone());
                    }
                }
                return Ok(Claimed::default());
            }
            if new_ip.is_empty() || new_ip == old_ip {
                if new_ip.is_empty() {
                    objects::set_at(new, &["spec", "clusterIP"], json!(old_ip));
                }
                return Ok(Claimed::default());
            }
        }
        self.assign(kind, new, dry_run).await
    }

    /// Gives back what a failed write took.
    pub async fn undo(&self, claimed: Claimed) {
        let Some(owner) = claimed.owner else {
            return;
        };
        for ip in claimed.ips {
            if let Err(error) = self.allocator.release(ip, &owner).await {
                tracing::warn!(%ip, %owner, %error, "cannot release a service IP; repair will");
            }
        }
    }

    /// After an update was stored: releases the addresses `old` held and `stored` does not.
    pub async fn after_update(&self, kind: &ResourceKind, old: &Value, stored: &Value) {
        if !is_service(kind) {
            return;
        }
        let kept = service_ips(stored);
        let gone: Vec<Ipv4Addr> = service_ips(old)
            .into_iter()
            .filter(|ip| !kept.contains(ip))
            .collect();
        self.undo(Claimed {
            owner: Some(owner_of(old)),
            ips: gone,
        })
        .await;
    }

    /// After a Service was removed from the store: releases its addresses.
    pub async fn after_delete(&self, kind: &ResourceKind, deleted: &Value) {
        if !is_service(kind) {
            return;
        }
        self.undo(Claimed {
            owner: Some(owner_of(deleted)),
            ips: service_ips(deleted),
        })
        .await;
    }

    /// Checks the Service's address fields and takes what they ask for.
    async fn assign(
        &self,
        kind: &ResourceKind,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<Claimed, ApiError> {
        let name = objects::name(obj).unwrap_or_default().to_string();
        let invalid = |e: FieldError| ApiError::invalid(kind, &name, &[e]);
        let service_type = spec_str(obj, "type").to_string();
        let mut cluster_ip = spec_str(obj, "clusterIP").to_string();
        let cluster_ips: Vec<Value> = obj
            .get("spec")
            .and_then(|s| s.get("clusterIPs"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let first = cluster_ips.first().and_then(Value::as_str).unwrap_or("");
        if cluster_ip.is_empty() {
            cluster_ip = first.to_string();
        } else if !first.is_empty() && first != cluster_ip {
            return Err(invalid(FieldError::invalid(
                "spec.clusterIPs[0]",
                json!(first),
                "must match `clusterIP` when both are specified",
            )));
        }
        if service_type == "ExternalName" {
            if !cluster_ip.is_empty() {
                return Err(invalid(FieldError::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                )));
            }
            return Ok(Claimed::default());
        }
        if !has_cluster_ip(&service_type) {
            return Ok(Claimed::default());
        }
        let headless = cluster_ip == "None";
        if let Some(error) = self.check_single_stack(obj, headless) {
            return Err(invalid(error));
        }
        if cluster_ips.len() > 1 {
            return Err(invalid(FieldError::invalid(
                "spec.clusterIPs",
                json!(cluster_ips),
                "this cluster is not configured for dual-stack services",
            )));
        }
        if headless {
            set_cluster_ip(obj, "None");
            return Ok(Claimed::default());
        }
        let owner = owner_of(obj);
        let ip = if cluster_ip.is_empty() {
            let next = if dry_run {
                self.allocator.peek_next().await
            } else {
                self.allocator.allocate_next(&owner).await
            };
            next.map_err(|e| match e {
                AllocationError::Store(e) => ApiError::from(e),
                e => ApiError::internal(format!("failed to allocate a serviceIP: {e}")),
            })?
        } else {
            let refuse = |e: AllocationError| match e {
                AllocationError::Store(e) => ApiError::from(e),
                e => invalid(FieldError::invalid(
                    "spec.clusterIPs",
                    json!([cluster_ip]),
                    format!("failed to allocate IP {cluster_ip}: {e}"),
                )),
            };
            let ip = match cluster_ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => ip,
                _ => {
                    return Err(refuse(AllocationError::NotInRange(self.allocator.cidr())));
                }
            };
            let result = if dry_run {
                self.allocator.check_free(ip).await
            } else {
                self.allocator.allocate(ip, &owner).await
            };
            result.map_err(refuse)?;
            ip
        };
        set_cluster_ip(obj, &ip.to_string());
        if dry_run {
            return Ok(Claimed::default());
        }
        Ok(Claimed {
            owner: Some(owner),
            ips: vec![ip],
        })
    }

    /// Refuses what a single-stack IPv4 cluster cannot give.
    fn check_single_stack(&self, obj: &Value, headless: bool) -> Option<FieldError> {
        let families = obj
            .get("spec")
            .and_then(|s| s.get("ipFamilies"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, family) in families.iter().enumerate() {
            if family != "IPv4" {
                return Some(FieldError::invalid(
                    format!("spec.ipFamilies[{i}]"),
                    family.clone(),
                    "not configured on this cluster",
                ));
            }
        }
        if spec_str(obj, "ipFamilyPolicy") == "RequireDualStack" && !headless {
            return Some(FieldError::invalid(
                "spec.ipFamilyPolicy",
                json!("RequireDualStack"),
                "this cluster is not configured for dual-stack services",
            ));
        }
        None
    }

    /// Reconciles the allocations with the Services: releases addresses whose Service is gone
    /// (or holds another address) once they are older than `grace`, records addresses that
    /// Services hold but the store lacks, and points an address at the Service that holds it.
    pub async fn repair(
        &self,
        storage: &Storage,
        grace: Duration,
    ) -> Result<RepairReport, ApiError> {
        let mut report = RepairReport::default();
        let Some(kind) = registry::by_plural("", "v1", "services") else {
            return Ok(report);
        };
        let cidr = self.allocator.cidr();
        let mut held: HashMap<Ipv4Addr, ServiceRef> = HashMap::new();
        let mut start: Option<String> = None;
        loop {
            let page = storage
                .list_page(kind, None, start.as_deref(), Some(500), None)
                .await?;
            for service in &page.items {
                let owner = owner_of(service);
                for ip in service_ips(service) {
                    if cidr.usable_offset(ip).is_none() {
                        tracing::warn!(%ip, service = %owner, %cidr, "the cluster IP of a Service is not in the service CIDR; recreate the Service");
                        continue;
                    }
                    if let Some(other) = held.insert(ip, owner.clone()) {
                        tracing::warn!(%ip, service = %owner, other = %other, "two Services hold one cluster IP");
                    }
                }
            }
            match page.next_key {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        let now = time::OffsetDateTime::now_utc();
        for (ip, obj, revision) in self.allocator.list().await? {
            let recorded = ServiceRef::of_ip_address(&obj);
            match held.remove(&ip) {
                Some(owner) if recorded.as_ref() == Some(&owner) => {}
                Some(owner) => match self.allocator.reassign(ip, &owner, revision).await {
                    Ok(()) => report.reassigned += 1,
                    Err(error) => tracing::warn!(%ip, %error, "repair: cannot reassign"),
                },
                None => {
                    let created = objects::meta_str(&obj, "creationTimestamp").and_then(|t| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    });
                    let old_enough = created.is_none_or(|t| now - t >= grace);
                    if !old_enough {
                        continue;
                    }
                    match self.allocator.remove(ip, revision).await {
                        Ok(()) => {
                            tracing::info!(%ip, "repair: released the cluster IP of a Service that is gone");
                            report.released += 1;
                        }
                        Err(error) => tracing::debug!(%ip, %error, "repair: not released"),
                    }
                }
            }
        }
        for (ip, owner) in held {
            match self.allocator.ensure(ip, &owner).await {
                Ok(true) => {
                    tracing::info!(%ip, service = %owner, "repair: recorded a cluster IP the store lacked");
                    report.recorded += 1;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%ip, %error, "repair: cannot record"),
            }
        }
        Ok(report)
    }
}

/// What a [`ServiceIps::repair`] pass changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairReport {
    /// Addresses released because no Service holds them.
    pub released: usize,
    /// Addresses recorded because a Service holds them and the store lacked them.
    pub recorded: usize,
    /// Addresses whose recorded owner was corrected.
    pub reassigned: usize,
}

/// At API server start: repairs the allocations, creates or updates the `kubernetes`
/// Service and its endpoints for `advertise`, and keeps doing both in the background until
/// `shutdown`.
pub async fn start(
    storage: &Storage,
    cidr: ServiceCidr,
    advertise: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> ServiceIps {
    let ips = ServiceIps::new(IpAllocator::new(storage.store().clone(), cidr));
    match ips.repair(storage, REPAIR_GRACE).await {
        Ok(report) => tracing::debug!(?report, "service IP repair"),
        Err(error) => tracing::warn!(error = %error.message, "service IP repair failed"),
    }
    if let Err(error) = kubernetes::reconcile(storage, &ips, advertise, true).await {
        tracing::warn!(error = %error.message, "cannot reconcile the kubernetes Service");
    }
    tokio::spawn(background(
        storage.clone(),
        ips.clone(),
        advertise,
        shutdown,
    ));
    ips
}

async fn background(
    storage: Storage,
    ips: ServiceIps,
    advertise: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        round += 1;
        if let Err(error) = kubernetes::reconcile(&storage, &ips, advertise, false).await {
            tracing::warn!(error = %error.message, "cannot reconcile the kubernetes Service");
        }
        if round.is_multiple_of(6) {
            if let Err(error) = ips.repair(&storage, REPAIR_GRACE).await {
                tracing::warn!(error = %error.message, "service IP repair failed");
            }
        }
    }
}

/// The address other components reach this API server at: the listen address, or for an
/// unspecified one the address of the interface the default route uses (no packet is sent).
pub fn advertise_address(listen: SocketAddr) -> SocketAddr {
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr());
    match probe {
        Ok(local) if !local.ip().is_unspecified() => SocketAddr::new(local.ip(), listen.port()),
        _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn setup(cidr: &str) -> (ServiceIps, Storage, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn nodeless_store::Store> =
            Arc::new(nodeless_store::sqlite::SqliteStore::open(dir.path().join("db")).unwrap());
        let ips = ServiceIps::new(IpAllocator::new(store.clone(), cidr.parse().unwrap()));
        (ips, Storage::new(store), dir)
    }

    fn services() -> &'static ResourceKind {
        registry::by_plural("", "v1", "services").unwrap()
    }

    fn service(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    fn cluster_ip(obj: &Value) -> &str {
        spec_str(obj, "clusterIP")
    }

    #[tokio::test]
    async fn create_allocates_honours_and_refuses() {
        let (ips, _storage, _dir) = setup("10.96.0.0/12");
        let kind = services();
        let mut a = service("a", json!({"type": "ClusterIP"}));
        let claimed = ips.on_create(kind, &mut a, false).await.unwrap();
        assert_eq!(claimed.ips.len(), 1);
        let ip = cluster_ip(&a).to_string();
        assert_eq!(a["spec"]["clusterIPs"], json!([ip]));

        let mut b = service("b", json!({"type": "ClusterIP", "clusterIP": "10.96.5.5"}));
        let _ = ips.on_create(kind, &mut b, false).await.unwrap();
        assert_eq!(b["spec"]["clusterIPs"], json!(["10.96.5.5"]));

        let mut dup = service("c", json!({"type": "ClusterIP", "clusterIP": "10.96.5.5"}));
        let err = ips.on_create(kind, &mut dup, false).await.unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("spec.clusterIPs: Invalid value: [\"10.96.5.5\"]: failed to allocate IP 10.96.5.5: provided IP is already allocated"), "{}", err.message);

        let mut outside = service("d", json!({"type": "ClusterIP", "clusterIP": "10.0.0.5"}));
        let err = ips.on_create(kind, &mut outside, false).await.unwrap_err();
        assert!(
            err.message.ends_with(
                "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
            ),
            "{}",
            err.message
        );

        let mut headless = service("h", json!({"type": "ClusterIP", "clusterIP": "None"}));
        let claimed = ips.on_create(kind, &mut headless, false).await.unwrap();
        assert!(claimed.ips.is_empty());
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));

        let mut external = service(
            "e",
            json!({"type": "ExternalName", "externalName": "x.example"}),
        );
        let _ = ips.on_create(kind, &mut external, false).await.unwrap();
        assert!(external["spec"].get("clusterIP").is_none());

        let mut v6 = service("f", json!({"type": "ClusterIP", "ipFamilies": ["IPv6"]}));
        let err = ips.on_create(kind, &mut v6, false).await.unwrap_err();
        assert!(
            err.message.contains("spec.ipFamilies[0]"),
            "{}",
            err.message
        );

        // A dry run takes nothing.
        let mut dry = service("g", json!({"type": "ClusterIP", "clusterIP": "10.96.7.7"}));
        let claimed = ips.on_create(kind, &mut dry, true).await.unwrap();
        assert!(claimed.ips.is_empty());
        ips.allocator()
            .check_free("10.96.7.7".parse().unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_range_is_an_internal_error_as_upstream() {
        let (ips, _storage, _dir) = setup("10.96.0.0/30");
        let kind = services();
        let mut a = service("a", json!({"type": "ClusterIP"}));
        let _ = ips.on_create(kind, &mut a, false).await.unwrap();
        assert_eq!(cluster_ip(&a), "10.96.0.2");
        let mut b = service("b", json!({"type": "LoadBalancer"}));
        let err = ips.on_create(kind, &mut b, false).await.unwrap_err();
        assert_eq!(err.code, 500);
        assert!(
            err.message
                .ends_with("failed to allocate a serviceIP: range is full"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn updates_keep_drop_and_take_addresses() {
        let (ips, _storage, _dir) = setup("10.96.0.0/24");
        let kind = services();
        let mut old = service("a", json!({"type": "ClusterIP"}));
        let _ = ips.on_create(kind, &mut old, false).await.unwrap();
        let ip = cluster_ip(&old).to_string();

        // A replace without the address keeps it.
        let mut new = service("a", json!({"type": "ClusterIP"}));
        let claimed = ips.on_update(kind, &old, &mut new, false).await.unwrap();
        assert!(claimed.ips.is_empty());
        assert_eq!(cluster_ip(&new), ip);

        // Becoming an ExternalName drops the address; it is released once stored.
        let mut external = old.clone();
        objects::set_at(&mut external, &["spec", "type"], json!("ExternalName"));
        objects::set_at(&mut external, &["spec", "externalName"], json!("x.example"));
        let _ = ips
            .on_update(kind, &old, &mut external, false)
            .await
            .unwrap();
        assert!(external["spec"].get("clusterIP").is_none());
        ips.after_update(kind, &old, &external).await;
        ips.allocator()
            .check_free(ip.parse().unwrap())
            .await
            .unwrap();

        // And back: a new address is taken.
        let mut back = external.clone();
        objects::set_at(&mut back, &["spec", "type"], json!("ClusterIP"));
        let claimed = ips
            .on_update(kind, &external, &mut back, false)
            .await
            .unwrap();
        assert_eq!(claimed.ips.len(), 1);
        ips.after_delete(kind, &back).await;
        ips.allocator()
            .check_free(cluster_ip(&back).parse().unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn repair_releases_leaks_and_records_missing_addresses() {
        let (ips, storage, _dir) = setup("10.96.0.0/24");
        let kind = services();
        // A Service whose address the store lacks.
        let held = service(
            "held",
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": [{"port": 80}]}),
        );
        storage.create(kind, &held).await.unwrap();
        // An address whose Service is gone.
        ips.allocator()
            .allocate(
                "10.96.0.30".parse().unwrap(),
                &ServiceRef::new("default", "gone"),
            )
            .await
            .unwrap();
        // A young leak survives a repair with a grace period.
        let report = ips
            .repair(&storage, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(
            report,
            RepairReport {
                released: 0,
                recorded: 1,
                reassigned: 0
            }
        );
        let report = ips.repair(&storage, Duration::ZERO).await.unwrap();
        assert_eq!(
            report,
            RepairReport {
                released: 1,
                recorded: 0,
                reassigned: 0
            }
        );
        ips.allocator()
            .check_free("10.96.0.30".parse().unwrap())
            .await
            .unwrap();
        let err = ips
            .allocator()
            .allocate(
                "10.96.0.20".parse().unwrap(),
                &ServiceRef::new("default", "other"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AllocationError::Allocated));
    }

    #[tokio::test]
    async fn the_kubernetes_service_points_at_the_api_server() {
        let (ips, storage, _dir) = setup("10.96.0.0/12");
        let advertise: SocketAddr = "192.0.2.10:6443".parse().unwrap();
        kubernetes::reconcile(&storage, &ips, advertise, true)
            .await
            .unwrap();
        // A second round changes nothing.
        kubernetes::reconcile(&storage, &ips, advertise, true)
            .await
            .unwrap();
        let svc = storage
            .get(services(), Some("default"), "kubernetes")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cluster_ip(&svc), "10.96.0.1");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], json!(6443));
        assert_eq!(
            svc["metadata"]["resourceVersion"].as_str().map(|_| ()),
            Some(())
        );
        let ep_kind = registry::by_plural("", "v1", "endpoints").unwrap();
        let ep = storage
            .get(ep_kind, Some("default"), "kubernetes")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ep["subsets"][0]["addresses"], json!([{"ip": "192.0.2.10"}]));
        let slice_kind = registry::by_plural("discovery.k8s.io", "v1", "endpointslices").unwrap();
        let slice = storage
            .get(slice_kind, Some("default"), "kubernetes")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            json!(MANAGED_BY_APISERVER)
        );
        assert_eq!(slice["endpoints"][0]["addresses"], json!(["192.0.2.10"]));
        assert!(matches!(
            ips.allocator()
                .check_free("10.96.0.1".parse().unwrap())
                .await,
            Err(AllocationError::Allocated)
        ));

        // A periodic round of a server on another port leaves them alone; a start rewrites.
        let other: SocketAddr = "192.0.2.11:7443".parse().unwrap();
        kubernetes::reconcile(&storage, &ips, other, false)
            .await
            .unwrap();
        let svc = storage
            .get(services(), Some("default"), "kubernetes")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], json!(6443));
        kubernetes::reconcile(&storage, &ips, other, true)
            .await
            .unwrap();
        let svc = storage
            .get(services(), Some("default"), "kubernetes")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], json!(7443));
        let ep = storage
            .get(ep_kind, Some("default"), "kubernetes")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ep["subsets"][0]["addresses"], json!([{"ip": "192.0.2.11"}]));
        // A second server on the same port adds its address.
        let same_port: SocketAddr = "192.0.2.12:7443".parse().unwrap();
        kubernetes::reconcile(&storage, &ips, same_port, false)
            .await
            .unwrap();
        let ep = storage
            .get(ep_kind, Some("default"), "kubernetes")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            ep["subsets"][0]["addresses"],
            json!([{"ip": "192.0.2.11"}, {"ip": "192.0.2.12"}])
        );
        let slice = storage
            .get(slice_kind, Some("default"), "kubernetes")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(slice["endpoints"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_specified_listen_address_is_advertised_as_is() {
        let listen: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        assert_eq!(advertise_address(listen), listen);
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        let advertised = advertise_address(any);
        assert_eq!(advertised.port(), 7000);
        assert!(!advertised.ip().is_unspecified());
    }
}
