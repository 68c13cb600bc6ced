//! The virtual Node: registration, its status (Ready with a heartbeat), and its Lease in
//! `kube-node-lease`, renewed as the kubelet renews it.

use std::time::SystemTime;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use crate::config::AgentConfig;
use crate::status::{format_micro_time, format_time};
use crate::AgentError;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The kubelet version the Node reports.
pub const KUBELET_VERSION: &str = "v1.33.0";

/// The Node's labels: the well-known ones, and virtual-kubelet's `type` and role.
pub fn node_labels(config: &AgentConfig) -> Value {
    let arch = go_arch();
    json!({
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": config.node_name,
        "kubernetes.io/role": "agent",
        "node.kubernetes.io/instance-type": "nodeless",
        "type": "virtual-kubelet",
    })
}

/// The architecture as Go (and so Kubernetes) names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A CPU quantity from millicores (`2`, `1500m`).
pub fn cpu_quantity(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// A memory quantity from bytes, in `Ki` as the kubelet reports it when it divides evenly.
pub fn memory_quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

/// The Node's `status.nodeInfo`.
fn node_info(runtime_version: &str) -> Value {
    let machine_id = read_trimmed("/etc/machine-id");
    let system_uuid = {
        let uuid = read_trimmed("/sys/class/dmi/id/product_uuid");
        if uuid.is_empty() {
            machine_id.clone()
        } else {
            uuid
        }
    };
    json!({
        "machineID": machine_id,
        "systemUUID": system_uuid,
        "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
        "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
        "osImage": os_image(),
        "containerRuntimeVersion": runtime_version,
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": go_arch(),
    })
}

/// The Node's status, with its conditions last changed at `since` and heard from `now`.
pub fn node_status(config: &AgentConfig, runtime_version: &str, since: &str, now: &str) -> Value {
    let resources = json!({
        "cpu": cpu_quantity(config.cpu_millis),
        "memory": memory_quantity(config.memory_bytes),
        "pods": config.max_pods.to_string(),
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": status,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
            "reason": reason,
            "message": message,
        })
    };
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.node_ip.to_string()},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": node_info(runtime_version),
    })
}

/// Creates the Node (or updates its labels if it exists) and writes its status; returns
/// the Node's uid.
pub(crate) async fn register(
    client: &Client,
    config: &AgentConfig,
    runtime_version: &str,
    since: &str,
) -> Result<String, AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let cidr = config.pod_cidr.to_string();
    let wanted: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.node_name,
            "labels": node_labels(config),
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "nodeless.io/runtime": runtime_version,
            },
        },
        "spec": { "podCIDR": cidr, "podCIDRs": [cidr] },
    }))?;
    match nodes.create(&PostParams::default(), &wanted).await {
        Ok(_) => tracing::info!(node = %config.node_name, "node registered"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = json!({"metadata": {"labels": node_labels(config)}});
            nodes
                .patch(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            tracing::info!(node = %config.node_name, "node already registered");
        }
        Err(e) => return Err(e.into()),
    }
    let node = write_status(client, config, runtime_version, since).await?;
    Ok(node.metadata.uid.unwrap_or_default())
}

/// Writes the Node's status (the heartbeat).
pub(crate) async fn write_status(
    client: &Client,
    config: &AgentConfig,
    runtime_version: &str,
    since: &str,
) -> Result<Node, AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = format_time(SystemTime::now());
    let body = json!({ "status": node_status(config, runtime_version, since, &now) });
    Ok(nodes
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await?)
}

/// Whether the Node in the API does not say Ready=True, as when the node lifecycle
/// controller marked it Unknown while this agent went unheard of. The kubelet compares with
/// the API in the same way, so that a node that is back is Ready again within a lease renewal
/// rather than at the next status report.
pub(crate) async fn ready_is_stale(client: &Client, config: &AgentConfig) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.get_opt(&config.node_name).await {
        Ok(Some(node)) => !is_ready(&node),
        // Gone (registered again at the status tick) or unreachable: nothing to do now.
        _ => false,
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// The Node's Lease as the kubelet keeps it.
pub fn lease(config: &AgentConfig, node_uid: &str, now: SystemTime) -> Value {
    let renew = format_micro_time(now);
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": config.node_name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": config.node_name,
                "uid": node_uid,
            }],
        },
        "spec": {
            "holderIdentity": config.node_name,
            "leaseDurationSeconds": config.lease_duration_seconds,
            "renewTime": renew,
        },
    })
}

/// Renews the Node's Lease, creating it when missing.
pub(crate) async fn renew_lease(
    client: &Client,
    config: &AgentConfig,
    node_uid: &str,
) -> Result<(), AgentError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let wanted = lease(config, node_uid, SystemTime::now());
    let patch = json!({ "spec": wanted["spec"] });
    match leases
        .patch(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(wanted)?;
            leases.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_the_kubelet_writes_them() {
        assert_eq!(cpu_quantity(2000), "2");
        assert_eq!(cpu_quantity(1500), "1500m");
        assert_eq!(memory_quantity(8 * 1024 * 1024 * 1024), "8388608Ki");
        assert_eq!(memory_quantity(1000), "1000");
    }

    #[test]
    fn status_is_ready_with_addresses_and_resources() {
        let config = AgentConfig {
            node_name: "n1".into(),
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            max_pods: 110,
            kubelet_port: 10250,
            ..AgentConfig::default()
        };
        let s = node_status(
            &config,
            "simulated://0.1.0",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:10Z",
        );
        assert_eq!(s["capacity"]["cpu"], "2");
        assert_eq!(s["allocatable"]["memory"], "1048576Ki");
        assert_eq!(s["capacity"]["pods"], "110");
        assert_eq!(s["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["lastHeartbeatTime"], "2024-01-01T00:00:10Z");
        assert_eq!(
            s["addresses"][0],
            json!({"type": "InternalIP", "address": "127.0.0.1"})
        );
        assert_eq!(
            s["addresses"][1],
            json!({"type": "Hostname", "address": "n1"})
        );
        assert_eq!(
            s["nodeInfo"]["containerRuntimeVersion"],
            "simulated://0.1.0"
        );
        assert_eq!(s["nodeInfo"]["operatingSystem"], "linux");
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": s})).unwrap();
        assert!(node.status.unwrap().node_info.is_some());
    }

    #[test]
    fn only_a_ready_true_condition_counts_as_ready() {
        let node = |status: &str| -> Node {
            serde_json::from_value(json!({
                "metadata": { "name": "vm" },
                "status": { "conditions": [
                    { "type": "MemoryPressure", "status": "False" },
                    { "type": "Ready", "status": status },
                ]},
            }))
            .unwrap()
        };
        assert!(is_ready(&node("True")));
        assert!(!is_ready(&node("Unknown")));
        assert!(!is_ready(&node("False")));
        assert!(!is_ready(&Node::default()));
    }

    #[test]
    fn lease_is_owned_by_the_node_and_renewed_in_micro_time() {
        let config = AgentConfig {
            node_name: "n1".into(),
            ..AgentConfig::default()
        };
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_704_164_645_123_456);
        let l = lease(&config, "uid-1", now);
        assert_eq!(l["spec"]["renewTime"], "2024-01-02T03:04:05.123456Z");
        assert_eq!(l["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(l["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        let typed: Lease = serde_json::from_value(l).unwrap();
        assert_eq!(typed.spec.unwrap().holder_identity.as_deref(), Some("n1"));
    }

    #[test]
    fn labels_name_the_host_and_the_virtual_kubelet() {
        let config = AgentConfig {
            node_name: "n1".into(),
            ..AgentConfig::default()
        };
        let l = node_labels(&config);
        assert_eq!(l["kubernetes.io/hostname"], "n1");
        assert_eq!(l["type"], "virtual-kubelet");
        assert_eq!(l["kubernetes.io/os"], "linux");
    }
}
