//! End-to-end: the node lifecycle controller on the simulated runtime, with a short
//! `--node-monitor-grace-period`. A second Node without an agent ("ghost") is kept alive by
//! the test (its Lease renewed, its Ready heartbeat posted, its pods reported running, as a
//! kubelet would); when the test stops, the node goes Unknown and is tainted unreachable, its
//! pods are marked not Ready, evicted, force-deleted and replaced on the real node; when it
//! comes back its taints go. A StatefulSet's pods come back under their names (the old ones
//! force-deleted). A Node deleted with pods bound to it has them collected and replaced.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Cluster};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{Timestamp, Unit};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(90);
/// Short, yet longer than the built-in agent's 10 s between Lease renewals.
const GRACE: &str = "15s";

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      terminationGracePeriodSeconds: 8\n      tolerations:\n      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 3}}\n      containers:\n      - name: app\n        image: busybox:1.36\n        resources:\n          limits: {{cpu: 250m, memory: 64Mi}}\n"
    )
}

fn now_micro() -> String {
    Timestamp::now()
        .round(Unit::Microsecond)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn now_seconds() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A Node with no agent: the test plays its kubelet while `alive` is set.
struct FakeNode {
    name: String,
    alive: Arc<AtomicBool>,
}

impl FakeNode {
    async fn register(client: &kube::Client, name: &str) -> Self {
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let lease: Lease = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
        }))
        .unwrap();
        leases.create(&PostParams::default(), &lease).await.unwrap();
        let fake = Self {
            name: name.to_string(),
            alive: Arc::new(AtomicBool::new(true)),
        };
        fake.post_status(client).await;
        let (client, name, alive) = (client.clone(), fake.name.clone(), fake.alive.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                if alive.load(Ordering::SeqCst) {
                    Self::heartbeat(&client, &name).await;
                }
            }
        });
        fake
    }

    /// Renews the Lease, posts a Ready status and reports the node's pods running.
    async fn heartbeat(client: &kube::Client, name: &str) {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let renew = json!({"spec": {"renewTime": now_micro()}});
        let _ = leases
            .patch(name, &PatchParams::default(), &Patch::Merge(&renew))
            .await;
        let fake = Self {
            name: name.to_string(),
            alive: Arc::new(AtomicBool::new(true)),
        };
        fake.post_status(client).await;
        let pods: Api<Pod> = Api::all(client.clone());
        let Ok(list) = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await
        else {
            return;
        };
        for pod in list.items {
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if pod.metadata.deletion_timestamp.is_some() || phase.as_deref() == Some("Running") {
                continue;
            }
            let now = now_seconds();
            let status = json!({"status": {
                "phase": "Running",
                "podIP": "10.250.0.9",
                "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
            }});
            let api: Api<Pod> =
                Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap());
            let _ = api
                .patch_status(
                    pod.metadata.name.as_deref().unwrap(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await;
        }
    }

    async fn post_status(&self, client: &kube::Client) {
        let nodes: Api<Node> = Api::all(client.clone());
        let now = now_seconds();
        let condition = |kind: &str, status: &str, reason: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": reason,
                   "lastHeartbeatTime": now, "lastTransitionTime": "2024-01-01T00:00:00Z"})
        };
        let status = json!({"status": {
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                condition("Ready", "True", "KubeletReady"),
            ],
        }});
        nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    fn stop(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.alive.store(true, Ordering::SeqCst);
    }
}

/// The name of the node of the built-in agent.
fn real_node(c: &Cluster) -> String {
    let nodes = c.get_json(&["nodes"]);
    let node = items(&nodes).into_iter().next().expect("the agent's node");
    node["metadata"]["name"].as_str().unwrap().to_string()
}

fn pods_of(c: &Cluster, app: &str) -> Vec<Value> {
    items(&c.get_json(&["pods", "-l", &format!("app={app}")]))
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn taints(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap(),
                        t["effect"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Cordons the real node, runs a Deployment whose pods all land on `fake`, then uncordons.
fn deploy_onto(c: &Cluster, real: &str, fake: &str, app: &str, replicas: usize) -> Vec<String> {
    run_onto(
        c,
        real,
        fake,
        app,
        replicas,
        &deployment(app, replicas as u32),
    )
}

/// Cordons the real node, applies `manifest` whose `app` pods all land on `fake`, then
/// uncordons; returns the pods' names.
fn run_onto(
    c: &Cluster,
    real: &str,
    fake: &str,
    app: &str,
    replicas: usize,
    manifest: &str,
) -> Vec<String> {
    c.ok(&["cordon", real]);
    c.ok_stdin(&["apply", "-f", "-"], manifest);
    let names = eventually(c, LONG, "pods bound to the fake node", || {
        let pods = pods_of(c, app);
        (pods.len() == replicas && pods.iter().all(|p| node_of(p) == fake)).then(|| {
            pods.iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    });
    c.ok(&["uncordon", real]);
    names
}

fn wait_available_on(c: &Cluster, app: &str, node: &str, replicas: usize) {
    eventually(c, LONG, &format!("{app} available on {node}"), || {
        let d = c.get_json(&["deploy", app]);
        let pods = pods_of(c, app);
        let available = d["status"]["availableReplicas"].as_u64() == Some(replicas as u64);
        (available && pods.len() == replicas && pods.iter().all(|p| node_of(p) == node))
            .then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_tainted_and_its_pods_replaced() {
    let c = Cluster::start_with(&["--node-monitor-grace-period", GRACE]);
    let client = c.kube_client().await;
    let real = real_node(&c);
    let ghost = FakeNode::register(&client, "ghost").await;
    let old = deploy_onto(&c, &real, "ghost", "web", 3);
    wait_available_on(&c, "web", "ghost", 3);
    // Alive for longer than the grace period: nothing happens.
    std::thread::sleep(Duration::from_secs(17));
    let node = c.get_json(&["node", "ghost"]);
    assert_eq!(condition(&node, "Ready").unwrap()["status"], "True");
    assert!(taints(&node).is_empty(), "{:?}", taints(&node));

    ghost.stop();
    let node = eventually(&c, LONG, "the ghost node Unknown and tainted", || {
        let node = c.get_json(&["node", "ghost"]);
        let t = taints(&node);
        (condition(&node, "Ready")?["status"] == "Unknown"
            && t.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()))
        .then_some(node)
    });
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    assert_eq!(
        condition(&node, "MemoryPressure").unwrap()["status"],
        "Unknown"
    );
    assert!(taints(&node).contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()));
    assert!(node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["effect"] == "NoExecute" && t["timeAdded"].is_string()));
    // The old pods: not Ready, marked for disruption and deleted (terminating while their
    // grace period runs, as nobody on the node can finish them).
    let evicted = eventually(&c, LONG, "an old pod evicted", || {
        let pods = pods_of(&c, "web");
        pods.into_iter().find(|p| {
            old.contains(&p["metadata"]["name"].as_str().unwrap().to_string())
                && p["metadata"]["deletionTimestamp"].is_string()
        })
    });
    assert_eq!(
        condition(&evicted, "Ready").unwrap()["status"],
        "False",
        "{evicted}"
    );
    let target = condition(&evicted, "DisruptionTarget").expect("DisruptionTarget");
    assert_eq!(target["status"], "True");
    assert_eq!(target["reason"], "DeletionByTaintManager");
    // Not before its tolerationSeconds (3 s, times in whole seconds) ran out.
    let added: Timestamp = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["effect"] == "NoExecute")
        .and_then(|t| t["timeAdded"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    let marked: Timestamp = target["lastTransitionTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        marked >= added + k8s_openapi::jiff::SignedDuration::from_secs(2),
        "evicted at {marked}, tainted at {added}"
    );
    // Replacements run on the real node, and the old pods are force-deleted.
    wait_available_on(&c, "web", &real, 3);
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=TaintManagerEviction",
    ]);
    assert!(events.contains("Marking for deletion Pod"), "{events}");

    // The node comes back: its taints go once it posts Ready again.
    ghost.resume();
    eventually(&c, LONG, "the ghost node untainted", || {
        let node = c.get_json(&["node", "ghost"]);
        (condition(&node, "Ready")?["status"] == "True" && taints(&node).is_empty()).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_deleted_node_are_collected_and_replaced() {
    let c = Cluster::start_with(&["--node-monitor-grace-period", GRACE]);
    let client = c.kube_client().await;
    let real = real_node(&c);
    let gone = FakeNode::register(&client, "gone").await;
    let old = deploy_onto(&c, &real, "gone", "api", 2);
    wait_available_on(&c, "api", "gone", 2);
    gone.stop();
    c.ok(&["delete", "node", "gone"]);
    wait_available_on(&c, "api", &real, 2);
    let names: Vec<String> = pods_of(&c, "api")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().all(|n| !old.contains(n)), "{names:?} {old:?}");
    let log = c.log();
    assert!(log.contains("pod force-deleted"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_of_an_unreachable_node_come_back_under_their_names() {
    // The pods carry no tolerations of their own: the cluster's default lets them go at once.
    let c = Cluster::start_with(&[
        "--node-monitor-grace-period",
        GRACE,
        "--default-unreachable-toleration-seconds",
        "0",
    ]);
    let client = c.kube_client().await;
    let real = real_node(&c);
    let lost = FakeNode::register(&client, "lost").await;
    let manifest = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  replicas: 2\n  selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      labels: {app: db}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: app\n        image: busybox:1.36\n        resources:\n          limits: {cpu: 250m, memory: 64Mi}\n";
    run_onto(&c, &real, "lost", "db", 2, manifest);
    let old_uids: Vec<String> = pods_of(&c, "db")
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    let tolerations = &pods_of(&c, "db")[0]["spec"]["tolerations"];
    let default_of = |key: &str| {
        tolerations
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key && t["effect"] == "NoExecute")
            .map(|t| t["tolerationSeconds"].clone())
    };
    assert_eq!(default_of("node.kubernetes.io/unreachable"), Some(json!(0)));
    assert_eq!(default_of("node.kubernetes.io/not-ready"), Some(json!(300)));
    lost.stop();
    // A StatefulSet replaces a pod only once the old one is gone: the force deletion of
    // terminating pods on the unreachable node is what lets db-0 and db-1 come back.
    eventually(&c, LONG, "db-0 and db-1 ready on the real node", || {
        let sts = c.get_json(&["statefulset", "db"]);
        let pods = pods_of(&c, "db");
        let fresh = pods.iter().all(|p| {
            node_of(p) == real
                && !old_uids.contains(&p["metadata"]["uid"].as_str().unwrap().to_string())
        });
        (sts["status"]["readyReplicas"].as_u64() == Some(2) && pods.len() == 2 && fresh)
            .then_some(())
    });
    let mut names: Vec<String> = pods_of(&c, "db")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1"]);
}
