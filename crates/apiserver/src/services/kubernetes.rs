//! The `default/kubernetes` Service and its Endpoints and EndpointSlice, which point at the
//! API servers (upstream's master endpoints reconciler). The Service has no selector, so the
//! endpoints controllers leave it alone; the EndpointSlice is also labelled as managed by the
//! API server.

use std::net::{IpAddr, SocketAddr};

use nodeless_api::registry::{self, ResourceKind};
use serde_json::{json, Value};

use super::{ServiceIps, ServiceRef};
use crate::storage::Storage;
use crate::{objects, ApiError};

/// The `endpointslice.kubernetes.io/managed-by` value of the slices the API server writes.
pub const MANAGED_BY: &str = "kube-apiserver";
const NAMESPACE: &str = "default";
const NAME: &str = "kubernetes";

fn kind(plural: &str) -> Result<&'static ResourceKind, ApiError> {
    let (group, version) = if plural == "endpointslices" {
        ("discovery.k8s.io", "v1")
    } else {
        ("", "v1")
    };
    registry::by_plural(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("no {plural} kind")))
}

fn new_meta(labels: Value) -> Value {
    json!({
        "name": NAME,
        "namespace": NAMESPACE,
        "uid": uuid::Uuid::new_v4().to_string(),
        "creationTimestamp": objects::now_rfc3339(),
        "labels": labels,
    })
}

/// Creates or updates the Service, Endpoints and EndpointSlice for `advertise`. A server that
/// is not `authoritative` (its periodic rounds) leaves them alone when another server on
/// another port wrote them, so that servers on different ports do not take turns rewriting
/// them; it still recreates what is missing and adds its address beside the others'.
pub(super) async fn reconcile(
    storage: &Storage,
    ips: &ServiceIps,
    advertise: SocketAddr,
    authoritative: bool,
) -> Result<(), ApiError> {
    if !authoritative {
        if let Some(existing) = storage
            .get(kind("services")?, Some(NAMESPACE), NAME)
            .await?
        {
            let target = existing.pointer("/spec/ports/0/targetPort");
            if target.and_then(Value::as_u64) != Some(u64::from(advertise.port())) {
                return Ok(());
            }
        }
    }
    reconcile_service(storage, ips, advertise.port()).await?;
    let addresses = reconcile_endpoints(storage, advertise).await?;
    reconcile_slice(storage, &addresses, advertise.port()).await
}

fn service_ports(port: u16) -> Value {
    json!([{"name": "https", "protocol": "TCP", "port": 443, "targetPort": port}])
}

async fn reconcile_service(storage: &Storage, ips: &ServiceIps, port: u16) -> Result<(), ApiError> {
    let kind = kind("services")?;
    let ip = ips.allocator().cidr().kubernetes_ip();
    let owner = ServiceRef::new(NAMESPACE, NAME);
    for _ in 0..4 {
        if let Some(mut existing) = storage.get(kind, Some(NAMESPACE), NAME).await? {
            if objects::at(&existing, &["spec", "ports"]) == Some(&service_ports(port)) {
                return Ok(());
            }
            objects::set_at(&mut existing, &["spec", "ports"], service_ports(port));
            let revision = objects::resource_version(&existing)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            match storage.update(kind, &existing, revision).await {
                Err(e) if e.code == 409 => continue,
                other => return other.map(|_| ()),
            }
        }
        match ips.allocator().allocate(ip, &owner).await {
            Ok(()) | Err(super::AllocationError::Allocated) => {}
            Err(e) => return Err(ApiError::internal(e.to_string())),
        }
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": new_meta(json!({"component": "apiserver", "provider": "kubernetes"})),
            "spec": {
                "clusterIP": ip.to_string(),
                "clusterIPs": [ip.to_string()],
                "internalTrafficPolicy": "Cluster",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "ports": service_ports(port),
                "sessionAffinity": "None",
                "type": "ClusterIP",
            },
            "status": {"loadBalancer": {}},
        });
        match storage.create(kind, &service).await {
            Err(e) if e.code == 409 => continue,
            other => {
                if other.is_ok() {
                    tracing::info!(%ip, "created the kubernetes Service");
                }
                return other.map(|_| ());
            }
        }
    }
    Err(ApiError::internal("the kubernetes Service kept changing"))
}

/// The addresses of the Endpoints: this server's, plus those other servers on the same port
/// wrote. Returns them as stored.
async fn reconcile_endpoints(
    storage: &Storage,
    advertise: SocketAddr,
) -> Result<Vec<String>, ApiError> {
    let kind = kind("endpoints")?;
    let mine = advertise.ip().to_string();
    let ports = json!([{"name": "https", "port": advertise.port(), "protocol": "TCP"}]);
    for _ in 0..4 {
        let existing = storage.get(kind, Some(NAMESPACE), NAME).await?;
        let mut addresses: Vec<String> = Vec::new();
        if let Some(old) = &existing {
            let subsets = old.get("subsets").and_then(Value::as_array);
            for subset in subsets.into_iter().flatten() {
                if subset.get("ports") != Some(&ports) {
                    continue;
                }
                let listed = subset.get("addresses").and_then(Value::as_array);
                for address in listed.into_iter().flatten() {
                    if let Some(ip) = address.get("ip").and_then(Value::as_str) {
                        if !addresses.iter().any(|a| a == ip) {
                            addresses.push(ip.to_string());
                        }
                    }
                }
            }
        }
        if !addresses.contains(&mine) {
            addresses.push(mine.clone());
        }
        addresses.sort();
        let subsets = json!([{
            "addresses": addresses.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "ports": ports,
        }]);
        let result = match existing {
            Some(old) if old.get("subsets") == Some(&subsets) => return Ok(addresses),
            Some(mut old) => {
                let revision = objects::resource_version(&old)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                objects::set_at(&mut old, &["subsets"], subsets);
                storage.update(kind, &old, revision).await
            }
            None => {
                let endpoints = json!({
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": new_meta(json!({"endpointslice.kubernetes.io/skip-mirror": "true"})),
                    "subsets": subsets,
                });
                storage.create(kind, &endpoints).await
            }
        };
        match result {
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(addresses),
        }
    }
    Err(ApiError::internal("the kubernetes Endpoints kept changing"))
}

async fn reconcile_slice(
    storage: &Storage,
    addresses: &[String],
    port: u16,
) -> Result<(), ApiError> {
    let kind = kind("endpointslices")?;
    let ipv6 = addresses
        .first()
        .and_then(|a| a.parse::<IpAddr>().ok())
        .is_some_and(|a| a.is_ipv6());
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    let ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    let address_type = if ipv6 { "IPv6" } else { "IPv4" };
    let labels = json!({
        "kubernetes.io/service-name": NAME,
        "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
    });
    for _ in 0..4 {
        let existing = storage.get(kind, Some(NAMESPACE), NAME).await?;
        let result = match existing {
            Some(old)
                if old.get("endpoints") == Some(&json!(endpoints))
                    && old.get("ports") == Some(&ports)
                    && objects::at(&old, &["metadata", "labels"]) == Some(&labels) =>
            {
                return Ok(())
            }
            Some(mut old) => {
                let revision = objects::resource_version(&old)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                let generation = objects::at(&old, &["metadata", "generation"])
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                objects::set_at(&mut old, &["endpoints"], json!(endpoints));
                objects::set_at(&mut old, &["ports"], ports.clone());
                objects::set_at(&mut old, &["addressType"], json!(address_type));
                objects::set_at(&mut old, &["metadata", "labels"], labels.clone());
                objects::set_at(&mut old, &["metadata", "generation"], json!(generation + 1));
                storage.update(kind, &old, revision).await
            }
            None => {
                let mut meta = new_meta(labels.clone());
                objects::set_at(&mut meta, &["generation"], json!(1));
                let slice = json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": meta,
                    "addressType": address_type,
                    "endpoints": endpoints,
                    "ports": ports,
                });
                storage.create(kind, &slice).await
            }
        };
        match result {
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
    Err(ApiError::internal(
        "the kubernetes EndpointSlice kept changing",
    ))
}
