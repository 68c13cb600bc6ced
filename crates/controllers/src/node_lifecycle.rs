//! The node lifecycle controller, after upstream's `pkg/controller/nodelifecycle`, with the
//! taint-based eviction of `pkg/controller/tainteviction` and the node-related passes of
//! `pkg/controller/podgc`.
//!
//! - **Health**: a node is heard from when its Lease in `kube-node-lease` is renewed or its
//!   Ready condition's `lastHeartbeatTime` changes, on this controller's own clock (as upstream:
//!   no trust in the agents' clocks). A node not heard from within the grace period
//!   (`--node-monitor-grace-period`, 40 s) gets its Ready, MemoryPressure, DiskPressure and
//!   PIDPressure conditions set to `Unknown` (`NodeStatusUnknown`, "Kubelet stopped posting
//!   node status."), and its pods' Ready condition set to False (upstream's `MarkPodsNotReady`)
//!   so that Services drop them.
//! - **Taints**: the conditions become taints, as upstream's `doNoScheduleTaintingPass` and
//!   `processTaintBaseEviction`: `node.kubernetes.io/unreachable` (Ready Unknown) or
//!   `node.kubernetes.io/not-ready` (Ready False) with NoSchedule and NoExecute, the pressure
//!   taints, `node.kubernetes.io/unschedulable` for a cordoned node. They go when the node
//!   reports Ready again. When every node of every zone is down, the NoExecute taints are held
//!   back (upstream's "master disruption" mode): evicting would only empty the cluster.
//! - **Eviction**: a pod that does not tolerate a NoExecute taint of its node is evicted at
//!   once; one that tolerates them for `tolerationSeconds` is evicted when the first of them
//!   runs out (counted from the taint's `timeAdded`). Eviction adds the `DisruptionTarget`
//!   condition (`DeletionByTaintManager`) and deletes the pod.
//! - **Pod GC**: the agent of an unreachable node cannot finish a deletion, so a terminating
//!   pod on a node tainted unreachable is marked Failed and force-deleted once its grace period
//!   is over (upstream does this only for the `out-of-service` taint; a serverless node's pods
//!   have nowhere else to be stopped). Pods bound to a Node that no longer exists (still gone
//!   after a quarantine) get `DisruptionTarget` (`DeletionByPodGC`), are marked Failed and
//!   force-deleted. Their controllers then create replacements, which the scheduler places on
//!   a Ready node without an untolerated NoSchedule taint.
//!
//! Not modelled: upstream's eviction rate limits (`--node-eviction-rate`), which this
//! controller replaces by evicting as soon as a pod is due.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::json;

use crate::events;
pub use crate::pods::toleration_tolerates;
use crate::ControllerError;

/// The namespace of the nodes' Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint of a node whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a cordoned node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint of a node under memory pressure.
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// The taint of a node under disk pressure.
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// The taint of a node under PID pressure.
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// The taint of a node whose network is not set up.
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The node conditions set to Unknown when a node goes silent (upstream's list).
const MONITORED_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// Which condition status makes which NoSchedule taint (upstream's
/// `nodeConditionToTaintKeyStatusMap`).
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    ("MemoryPressure", "True", TAINT_MEMORY_PRESSURE),
    ("DiskPressure", "True", TAINT_DISK_PRESSURE),
    ("PIDPressure", "True", TAINT_PID_PRESSURE),
    ("NetworkUnavailable", "True", TAINT_NETWORK_UNAVAILABLE),
];
/// The zone labels, newest first.
const ZONE_LABELS: [&str; 2] = [
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
];
/// Zones of at most this many nodes stop tainting in a partial disruption (upstream's
/// `--large-cluster-size-threshold`).
const LARGE_ZONE_THRESHOLD: usize = 50;
/// The fraction of not-ready nodes that makes a partial disruption (upstream's
/// `--unhealthy-zone-threshold`).
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;

/// How the node lifecycle controller judges nodes; the binary sets it from its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    /// How long a node may go without renewing its Lease or posting its status before it is
    /// marked Unknown (`--node-monitor-grace-period`, upstream's default 40 s).
    pub node_monitor_grace_period: Duration,
    /// The same for a node that never posted a Ready condition (upstream's 1 min).
    pub node_startup_grace_period: Duration,
    /// How often nodes and pods are checked (upstream's `--node-monitor-period`, 5 s).
    pub node_monitor_period: Duration,
    /// How long a Node must stay missing before the pods bound to it are collected
    /// (upstream's pod GC quarantine, 40 s).
    pub orphan_pod_quarantine: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            node_monitor_period: Duration::from_secs(5),
            orphan_pod_quarantine: Duration::from_secs(40),
        }
    }
}

impl NodeLifecycleConfig {
    /// The defaults with another grace period; the orphan quarantine follows it (their
    /// upstream defaults are both 40 s), and nodes are checked at least twice per period.
    pub fn with_grace_period(grace: Duration) -> Self {
        let defaults = Self::default();
        Self {
            node_monitor_grace_period: grace,
            node_startup_grace_period: defaults.node_startup_grace_period.max(grace),
            node_monitor_period: defaults
                .node_monitor_period
                .min(grace / 2)
                .max(Duration::from_millis(100)),
            orphan_pod_quarantine: grace,
        }
    }
}

/// What was last heard from one node.
#[derive(Clone, Debug)]
struct Probe {
    heartbeat: Option<Timestamp>,
    renew: Option<Timestamp>,
    heard_at: Instant,
}

/// When each node was last heard from, on this controller's clock (upstream's
/// `nodeHealthMap`).
#[derive(Debug, Default)]
pub struct HealthTracker {
    probes: HashMap<String, Probe>,
}

impl HealthTracker {
    /// Notes what the node and its Lease say at `now`, and answers whether the node has been
    /// silent for longer than its grace period (the startup one if it never posted Ready).
    pub fn is_silent(
        &mut self,
        node: &Node,
        lease: Option<&Lease>,
        now: Instant,
        config: &NodeLifecycleConfig,
    ) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let ready = condition(node, "Ready");
        let heartbeat = ready
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0);
        let renew = lease
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        let probe = self.probes.entry(name).or_insert(Probe {
            heartbeat,
            renew,
            heard_at: now,
        });
        if probe.heartbeat != heartbeat {
            probe.heartbeat = heartbeat;
            probe.heard_at = now;
        }
        if renew.is_some_and(|r| probe.renew.is_none_or(|seen| seen < r)) {
            probe.renew = renew;
            probe.heard_at = now;
        }
        let grace = if ready.is_some() {
            config.node_monitor_grace_period
        } else {
            config.node_startup_grace_period
        };
        now.saturating_duration_since(probe.heard_at) > grace
    }

    /// Forgets the nodes that are gone.
    pub fn retain(&mut self, names: &HashSet<String>) {
        self.probes.retain(|name, _| names.contains(name));
    }
}

/// A condition of the node's status.
fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
}

/// The status of the node's Ready condition, if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The node's conditions once it is known to be silent: the monitored ones Unknown (the ones
/// it never posted added), or `None` if they already are.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let created = node
        .metadata
        .creation_timestamp
        .clone()
        .unwrap_or(Time(now));
    let mut changed = false;
    for kind in MONITORED_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: kind.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: Some(created.clone()),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

/// Whether a taint is one this controller manages.
fn is_managed(taint: &Taint) -> bool {
    match taint.effect.as_str() {
        "NoSchedule" => {
            taint.key == TAINT_UNSCHEDULABLE
                || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == taint.key)
        }
        "NoExecute" => taint.key == TAINT_UNREACHABLE || taint.key == TAINT_NOT_READY,
        _ => false,
    }
}

/// The taints the node should carry: its own (other) taints, the NoSchedule taints of its
/// conditions and cordon, and (when `may_add_no_execute`, or when it already has it) the
/// NoExecute taint of a Ready condition that is False or Unknown. A taint already there keeps
/// its `timeAdded`; a new NoExecute taint is added at `now`.
pub fn desired_taints(node: &Node, may_add_no_execute: bool, now: Timestamp) -> Vec<Taint> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let existing = |key: &str, effect: &str| {
        current
            .iter()
            .find(|t| t.key == key && t.effect == effect)
            .cloned()
    };
    let mut taints: Vec<Taint> = current.iter().filter(|t| !is_managed(t)).cloned().collect();
    let mut no_schedule: Vec<&str> = CONDITION_TAINTS
        .iter()
        .filter(|(kind, status, _)| condition(node, kind).is_some_and(|c| c.status == *status))
        .map(|(_, _, key)| *key)
        .collect();
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        no_schedule.push(TAINT_UNSCHEDULABLE);
    }
    for key in no_schedule {
        taints.push(existing(key, "NoSchedule").unwrap_or(Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        }));
    }
    let no_execute = match ready_status(node) {
        Some("False") => Some(TAINT_NOT_READY),
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        _ => None,
    };
    if let Some(key) = no_execute {
        match existing(key, "NoExecute") {
            Some(taint) => taints.push(taint),
            None if may_add_no_execute => taints.push(Taint {
                key: key.into(),
                effect: "NoExecute".into(),
                time_added: Some(Time(now)),
                value: None,
            }),
            None => {}
        }
    }
    taints
}

/// Whether two taint lists are the same, in any order.
fn same_taints(a: &[Taint], b: &[Taint]) -> bool {
    a.len() == b.len() && a.iter().all(|t| b.contains(t))
}

/// When a pod on a node with these taints must be evicted: `None` when it tolerates their
/// NoExecute ones forever (or there are none), `now` when it does not tolerate one, else the
/// earliest `timeAdded + tolerationSeconds` of the tolerations it uses (a taint without
/// `timeAdded` counts from `seen`, when this controller first saw the pod under it).
pub fn eviction_time(
    pod: &Pod,
    taints: &[Taint],
    seen: Timestamp,
    now: Timestamp,
) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut due: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let used: Vec<&Toleration> = tolerations
            .iter()
            .filter(|t| toleration_tolerates(t, taint))
            .collect();
        if used.is_empty() {
            return Some(now);
        }
        // Upstream's getMinTolerationTime: any toleration without seconds tolerates forever,
        // otherwise the shortest wins.
        if used.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let seconds = used
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let start = taint.time_added.as_ref().map(|t| t.0).unwrap_or(seen);
        let at = start
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MAX);
        due = Some(due.map_or(at, |d| d.min(at)));
    }
    due
}

/// The pod's conditions with Ready set to False, or `None` if it is not True (or missing).
pub fn not_ready_conditions(pod: &Pod, now: Timestamp) -> Option<Vec<PodCondition>> {
    let mut conditions = pod.status.as_ref()?.conditions.clone()?;
    let ready = conditions.iter_mut().find(|c| c.type_ == "Ready")?;
    if ready.status == "False" {
        return None;
    }
    ready.status = "False".into();
    ready.last_transition_time = Some(Time(now));
    Some(conditions)
}

/// The pod's conditions with `kind` set True for `reason` (`DisruptionTarget`), or `None` if it
/// already says so.
fn with_condition(
    pod: &Pod,
    kind: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Option<Vec<PodCondition>> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let wanted = PodCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(now)),
        ..PodCondition::default()
    };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) if c.status == "True" && c.reason.as_deref() == Some(reason) => return None,
        Some(c) => *c = wanted,
        None => conditions.push(wanted),
    }
    Some(conditions)
}

/// Whether a pod has finished (Succeeded or Failed).
fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The node a pod is bound to.
fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// A zone's health (upstream's `ZoneState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Few nodes are down.
    Normal,
    /// More than two nodes and at least 55 % are down.
    PartialDisruption,
    /// Every node is down.
    FullDisruption,
}

/// The state of a zone with `ready` Ready nodes and `not_ready` others (upstream's
/// `ComputeZoneState`).
pub fn zone_state(ready: usize, not_ready: usize) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2
        && not_ready as f64 / (ready + not_ready) as f64 >= UNHEALTHY_ZONE_THRESHOLD
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// A node's zone label (empty when it has none).
fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    ZONE_LABELS
        .iter()
        .find_map(|k| labels.and_then(|l| l.get(*k)).cloned())
        .unwrap_or_default()
}

/// Per zone, whether nodes in it may get new NoExecute taints: not while every zone is down
/// (nothing could take the pods), nor in a partially disrupted small zone (upstream slows
/// eviction to zero there).
pub fn zones_allowing_eviction(nodes: &[Node]) -> HashMap<String, bool> {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for node in nodes {
        let entry = counts.entry(zone_of(node)).or_default();
        if ready_status(node) == Some("True") {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    let states: HashMap<String, (ZoneState, usize)> = counts
        .into_iter()
        .map(|(zone, (ready, not_ready))| (zone, (zone_state(ready, not_ready), ready + not_ready)))
        .collect();
    let all_down = !states.is_empty()
        && states
            .values()
            .all(|(s, _)| *s == ZoneState::FullDisruption);
    states
        .into_iter()
        .map(|(zone, (state, size))| {
            let held = state == ZoneState::PartialDisruption && size <= LARGE_ZONE_THRESHOLD;
            let allowed = !all_down && !held;
            (zone, allowed)
        })
        .collect()
}

/// Logs a failed write: a conflict (this controller's cache was behind) only at debug level,
/// as the next pass retries with fresh objects.
fn log_write_error(object: &str, error: &ControllerError, what: &str) {
    if matches!(error, ControllerError::Kube(kube::Error::Api(e)) if e.code == 409) {
        tracing::debug!(object, %error, "{what}: conflict, retried on the next pass");
    } else {
        tracing::warn!(object, %error, "{what}");
    }
}

/// The controller's state between passes.
struct Lifecycle {
    client: Client,
    config: NodeLifecycleConfig,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    health: HealthTracker,
    /// When each pod (by uid) was first seen under a NoExecute taint without `timeAdded`.
    under_taint_since: HashMap<String, Timestamp>,
    /// When each missing node (by name, with pods bound to it) was first seen missing.
    missing_since: HashMap<String, Instant>,
    node_events: Recorder,
    eviction_events: Recorder,
}

/// Runs the node lifecycle controller until its watches end.
pub async fn run(
    client: Client,
    config: NodeLifecycleConfig,
    informers: &crate::informer::Informers,
) {
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let pods = informers.pods.store();
    let node_watch = reflector::reflector(
        node_writer,
        watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .modify(crate::watch::strip_managed_fields),
    )
    .default_backoff()
    .for_each(|_| std::future::ready(()));
    let lease_watch = reflector::reflector(
        lease_writer,
        watcher::watcher(
            Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            watcher::Config::default(),
        )
        .modify(crate::watch::strip_managed_fields),
    )
    .default_backoff()
    .for_each(|_| std::future::ready(()));
    let lifecycle = Lifecycle {
        node_events: events::recorder(&client, "node-controller"),
        eviction_events: events::recorder(&client, "taint-eviction-controller"),
        client,
        config,
        nodes,
        leases,
        pods,
        health: HealthTracker::default(),
        under_taint_since: HashMap::new(),
        missing_since: HashMap::new(),
    };
    tokio::select! {
        _ = node_watch => tracing::warn!("node lifecycle node watch ended"),
        _ = lease_watch => tracing::warn!("node lifecycle lease watch ended"),
        _ = lifecycle.run() => {}
    }
}

impl Lifecycle {
    async fn run(mut self) {
        if self.nodes.wait_until_ready().await.is_err()
            || self.leases.wait_until_ready().await.is_err()
            || self.pods.wait_until_ready().await.is_err()
        {
            return;
        }
        let mut tick = tokio::time::interval(self.config.node_monitor_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.pass().await;
        }
    }

    /// One look at every node and the pods bound to them.
    async fn pass(&mut self) {
        let now = Instant::now();
        let mut nodes: Vec<Node> = self.nodes.state().iter().map(|n| (**n).clone()).collect();
        let names: HashSet<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        self.health.retain(&names);
        for node in &mut nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let lease = self
                .leases
                .get(&ObjectRef::new(&name).within(NODE_LEASE_NAMESPACE));
            if !self
                .health
                .is_silent(node, lease.as_deref(), now, &self.config)
            {
                continue;
            }
            let Some(conditions) = unknown_conditions(node, Timestamp::now()) else {
                continue;
            };
            let was_ready = ready_status(node) == Some("True");
            match self.write_conditions(node, &conditions).await {
                Ok(updated) => {
                    tracing::info!(node = %name, "node stopped posting status: conditions Unknown");
                    if was_ready {
                        events::record(
                            &self.node_events,
                            &updated,
                            false,
                            "NodeNotReady",
                            format!("Node {name} status is now: NodeNotReady"),
                        )
                        .await;
                    }
                    *node = updated;
                }
                Err(error) => log_write_error(&name, &error, "marking a node Unknown"),
            }
        }
        let zones = zones_allowing_eviction(&nodes);
        for node in &mut nodes {
            let allowed = zones.get(&zone_of(node)).copied().unwrap_or(true);
            let wanted = desired_taints(node, allowed, Timestamp::now());
            let current = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            if same_taints(&current, &wanted) {
                continue;
            }
            let name = node.metadata.name.clone().unwrap_or_default();
            match self.write_taints(node, &wanted).await {
                Ok(updated) => {
                    tracing::info!(node = %name, taints = ?wanted.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "node taints updated");
                    *node = updated;
                }
                Err(error) => log_write_error(&name, &error, "updating a node's taints"),
            }
        }
        let by_name: HashMap<String, &Node> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone().map(|name| (name, n)))
            .collect();
        self.pods_pass(&by_name, now).await;
    }

    /// Marks pods on silent nodes not Ready, evicts the ones whose tolerations ran out, and
    /// collects the ones no agent will finish.
    async fn pods_pass(&mut self, nodes: &HashMap<String, &Node>, now: Instant) {
        let pods = self.pods.state();
        let mut under_taint = HashSet::new();
        let mut orphans: HashMap<String, Vec<Pod>> = HashMap::new();
        for pod in pods.iter() {
            let Some(node_name) = node_of(pod) else {
                continue;
            };
            let Some(node) = nodes.get(node_name) else {
                orphans
                    .entry(node_name.to_string())
                    .or_default()
                    .push((**pod).clone());
                continue;
            };
            let taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let unreachable = taints
                .iter()
                .any(|t| t.key == TAINT_UNREACHABLE && t.effect == "NoExecute");
            if pod.metadata.deletion_timestamp.is_some() {
                let grace_over = pod
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .is_some_and(|t| t.0 <= Timestamp::now());
                if unreachable && grace_over {
                    self.force_delete(pod, None).await;
                }
                continue;
            }
            if is_terminal(pod) {
                continue;
            }
            let pod = if ready_status(node) != Some("True") {
                self.mark_not_ready(pod).await
            } else {
                (**pod).clone()
            };
            if !taints.iter().any(|t| t.effect == "NoExecute") {
                continue;
            }
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            under_taint.insert(uid.clone());
            let seen = *self
                .under_taint_since
                .entry(uid)
                .or_insert_with(Timestamp::now);
            let current = Timestamp::now();
            if eviction_time(&pod, &taints, seen, current).is_some_and(|at| at <= current) {
                self.evict(&pod).await;
            }
        }
        self.under_taint_since
            .retain(|uid, _| under_taint.contains(uid));
        self.missing_since
            .retain(|name, _| orphans.contains_key(name));
        for (node_name, pods) in orphans {
            let since = *self.missing_since.entry(node_name.clone()).or_insert(now);
            if now.saturating_duration_since(since) < self.config.orphan_pod_quarantine {
                continue;
            }
            // The watch may lag: ask the API server whether the node is really gone.
            match Api::<Node>::all(self.client.clone())
                .get_opt(&node_name)
                .await
            {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(error) => {
                    tracing::warn!(node = %node_name, %error, "checking a missing node");
                    continue;
                }
            }
            for pod in &pods {
                self.force_delete(
                    pod,
                    Some(("DeletionByPodGC", "PodGC: node no longer exists")),
                )
                .await;
            }
        }
    }

    async fn write_conditions(
        &self,
        node: &Node,
        conditions: &[NodeCondition],
    ) -> Result<Node, ControllerError> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "status": {"conditions": conditions},
        });
        Ok(Api::<Node>::all(self.client.clone())
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?)
    }

    async fn write_taints(&self, node: &Node, taints: &[Taint]) -> Result<Node, ControllerError> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": taints},
        });
        Ok(Api::<Node>::all(self.client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?)
    }

    fn pod_api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    async fn patch_pod_status(
        &self,
        pod: &Pod,
        status: serde_json::Value,
    ) -> Result<Pod, ControllerError> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "status": status,
        });
        Ok(self
            .pod_api(pod)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?)
    }

    /// Sets the pod's Ready condition False (upstream's `MarkPodsNotReady`); returns the pod
    /// as it is now.
    async fn mark_not_ready(&self, pod: &Pod) -> Pod {
        let Some(conditions) = not_ready_conditions(pod, Timestamp::now()) else {
            return pod.clone();
        };
        let key = crate::pods::object_key(&pod.metadata);
        match self
            .patch_pod_status(pod, json!({"conditions": conditions}))
            .await
        {
            Ok(updated) => {
                tracing::info!(pod = %key, "pod on a node that is not ready marked not Ready");
                events::record(
                    &self.node_events,
                    &updated,
                    true,
                    "NodeNotReady",
                    "Node is not ready".into(),
                )
                .await;
                updated
            }
            Err(error) => {
                log_write_error(&key, &error, "marking a pod not Ready");
                pod.clone()
            }
        }
    }

    fn preconditions(pod: &Pod) -> Option<Preconditions> {
        Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        })
    }

    /// Evicts a pod for a NoExecute taint it no longer tolerates.
    async fn evict(&self, pod: &Pod) {
        let key = crate::pods::object_key(&pod.metadata);
        events::record(
            &self.eviction_events,
            pod,
            false,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {key}"),
        )
        .await;
        if let Some(conditions) = with_condition(
            pod,
            "DisruptionTarget",
            "DeletionByTaintManager",
            "Taint manager: deleting due to NoExecute taint",
            Timestamp::now(),
        ) {
            if let Err(error) = self
                .patch_pod_status(pod, json!({"conditions": conditions}))
                .await
            {
                log_write_error(&key, &error, "marking a pod for eviction");
                return;
            }
        }
        let params = DeleteParams {
            preconditions: Self::preconditions(pod),
            ..DeleteParams::default()
        };
        match self
            .pod_api(pod)
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => tracing::info!(pod = %key, "pod evicted for a NoExecute taint"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => tracing::warn!(pod = %key, %error, "evicting a pod"),
        }
    }

    /// Marks a pod Failed (with a `DisruptionTarget` condition for `reason`) and deletes it
    /// without waiting for an agent (upstream's `markFailedAndDeletePodWithCondition`).
    async fn force_delete(&self, pod: &Pod, reason: Option<(&str, &str)>) {
        let key = crate::pods::object_key(&pod.metadata);
        if !is_terminal(pod) {
            let mut status = json!({"phase": "Failed"});
            if let Some((reason, message)) = reason {
                if let Some(conditions) =
                    with_condition(pod, "DisruptionTarget", reason, message, Timestamp::now())
                {
                    status["conditions"] = json!(conditions);
                }
            }
            if let Err(error) = self.patch_pod_status(pod, status).await {
                log_write_error(&key, &error, "marking a pod Failed");
                return;
            }
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Self::preconditions(pod),
            ..DeleteParams::default()
        };
        match self
            .pod_api(pod)
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %key, node = node_of(pod).unwrap_or_default(), "pod force-deleted: its node cannot finish it")
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => tracing::warn!(pod = %key, %error, "force-deleting a pod"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).unwrap()
    }

    fn ready_node(name: &str, status: &str, heartbeat: &str) -> Node {
        node(json!({
            "metadata": {"name": name, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat},
                {"type": "Ready", "status": status, "lastHeartbeatTime": heartbeat,
                 "lastTransitionTime": "2024-01-01T00:00:00Z", "reason": "KubeletReady"},
            ]},
        }))
    }

    fn lease(renew: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "namespace": NODE_LEASE_NAMESPACE},
            "spec": {"holderIdentity": "n1", "renewTime": renew},
        }))
        .unwrap()
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"nodeName": "n1", "containers": [], "tolerations": tolerations},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
            ]},
        }))
        .unwrap()
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn taint(key: &str, effect: &str, added: Option<&str>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: added.map(|t| Time(ts(t))),
            value: None,
        }
    }

    fn config() -> NodeLifecycleConfig {
        NodeLifecycleConfig::with_grace_period(Duration::from_secs(40))
    }

    #[test]
    fn a_node_is_silent_only_after_the_grace_period_without_lease_or_heartbeat() {
        let start = Instant::now();
        let mut health = HealthTracker::default();
        let n = ready_node("n1", "True", "2024-01-01T00:00:00Z");
        assert!(!health.is_silent(
            &n,
            Some(&lease("2024-01-01T00:00:00.000000Z")),
            start,
            &config()
        ));
        // The lease renewed at 30 s: the node is heard from then, not silent at 60 s.
        let renewed = lease("2024-01-01T00:00:30.000000Z");
        let at = |s: u64| start + Duration::from_secs(s);
        assert!(!health.is_silent(&n, Some(&renewed), at(30), &config()));
        assert!(!health.is_silent(&n, Some(&renewed), at(60), &config()));
        // No renewal since: silent once more than 40 s have passed on our clock.
        assert!(health.is_silent(&n, Some(&renewed), at(71), &config()));
        // A status heartbeat alone also counts.
        let posted = ready_node("n1", "True", "2024-01-01T00:01:20Z");
        assert!(!health.is_silent(&posted, Some(&renewed), at(80), &config()));
        assert!(health.is_silent(&posted, Some(&renewed), at(121), &config()));
        // An older renewTime (a stale watch event) is no news.
        let older = lease("2024-01-01T00:00:10.000000Z");
        assert!(health.is_silent(&posted, Some(&older), at(122), &config()));
    }

    #[test]
    fn a_node_that_never_posted_ready_gets_the_startup_grace_period() {
        let start = Instant::now();
        let mut health = HealthTracker::default();
        let n = node(json!({"metadata": {"name": "fresh"}}));
        assert!(!health.is_silent(&n, None, start, &config()));
        assert!(!health.is_silent(&n, None, start + Duration::from_secs(50), &config()));
        assert!(health.is_silent(&n, None, start + Duration::from_secs(61), &config()));
    }

    #[test]
    fn the_grace_period_sets_the_check_period_and_quarantine() {
        let c = NodeLifecycleConfig::with_grace_period(Duration::from_secs(5));
        assert_eq!(c.node_monitor_grace_period, Duration::from_secs(5));
        assert_eq!(c.node_monitor_period, Duration::from_millis(2500));
        assert_eq!(c.orphan_pod_quarantine, Duration::from_secs(5));
        assert_eq!(c.node_startup_grace_period, Duration::from_secs(60));
        assert_eq!(
            NodeLifecycleConfig::with_grace_period(Duration::from_secs(40)),
            NodeLifecycleConfig::default()
        );
    }

    #[test]
    fn silent_nodes_get_unknown_conditions_once() {
        let now = ts("2024-01-01T00:05:00Z");
        let n = ready_node("n1", "True", "2024-01-01T00:01:00Z");
        let conditions = unknown_conditions(&n, now).unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        // The heartbeat stays what the node last posted.
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time(ts("2024-01-01T00:01:00Z")))
        );
        let memory = conditions
            .iter()
            .find(|c| c.type_ == "MemoryPressure")
            .unwrap();
        assert_eq!(memory.status, "Unknown");
        let disk = conditions
            .iter()
            .find(|c| c.type_ == "DiskPressure")
            .unwrap();
        assert_eq!(disk.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(
            disk.last_heartbeat_time,
            Some(Time(ts("2024-01-01T00:00:00Z")))
        );
        assert_eq!(conditions.len(), 4);
        let mut marked = n.clone();
        marked.status.as_mut().unwrap().conditions = Some(conditions);
        assert_eq!(unknown_conditions(&marked, now), None);
    }

    #[test]
    fn taints_follow_the_ready_condition_and_keep_foreign_ones() {
        let now = ts("2024-01-01T00:05:00Z");
        let mut n = ready_node("n1", "Unknown", "2024-01-01T00:01:00Z");
        n.spec = Some(Default::default());
        n.spec.as_mut().unwrap().taints = Some(vec![taint("dedicated", "NoSchedule", None)]);
        let taints = desired_taints(&n, true, now);
        assert_eq!(
            taints,
            vec![
                taint("dedicated", "NoSchedule", None),
                taint(TAINT_UNREACHABLE, "NoSchedule", None),
                taint(TAINT_UNREACHABLE, "NoExecute", Some("2024-01-01T00:05:00Z")),
            ]
        );
        // Later passes keep the NoExecute taint's timeAdded.
        n.spec.as_mut().unwrap().taints = Some(taints.clone());
        assert!(same_taints(
            &desired_taints(&n, true, ts("2024-01-01T00:09:00Z")),
            &taints
        ));
        // Ready False swaps unreachable for not-ready.
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[1].status = "False".into();
        let not_ready = desired_taints(&n, true, now);
        assert!(not_ready.contains(&taint(
            TAINT_NOT_READY,
            "NoExecute",
            Some("2024-01-01T00:05:00Z")
        )));
        assert!(not_ready.contains(&taint(TAINT_NOT_READY, "NoSchedule", None)));
        assert!(!not_ready.iter().any(|t| t.key == TAINT_UNREACHABLE));
        // Back to Ready: only the foreign taint is left; a cordon adds unschedulable.
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[1].status = "True".into();
        assert_eq!(
            desired_taints(&n, true, now),
            vec![taint("dedicated", "NoSchedule", None)]
        );
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        assert_eq!(
            desired_taints(&n, true, now),
            vec![
                taint("dedicated", "NoSchedule", None),
                taint(TAINT_UNSCHEDULABLE, "NoSchedule", None)
            ]
        );
    }

    #[test]
    fn no_new_no_execute_taint_while_eviction_is_held() {
        let now = ts("2024-01-01T00:05:00Z");
        let mut n = ready_node("n1", "Unknown", "2024-01-01T00:01:00Z");
        assert_eq!(
            desired_taints(&n, false, now),
            vec![taint(TAINT_UNREACHABLE, "NoSchedule", None)]
        );
        // One already there stays.
        let existing = taint(TAINT_UNREACHABLE, "NoExecute", Some("2024-01-01T00:02:00Z"));
        n.spec = Some(Default::default());
        n.spec.as_mut().unwrap().taints = Some(vec![existing.clone()]);
        assert!(desired_taints(&n, false, now).contains(&existing));
    }

    #[test]
    fn zones_hold_eviction_when_everything_is_down() {
        let up = ready_node("a", "True", "2024-01-01T00:00:00Z");
        let down = ready_node("b", "Unknown", "2024-01-01T00:00:00Z");
        assert_eq!(
            zones_allowing_eviction(&[up.clone(), down.clone()]).get(""),
            Some(&true)
        );
        assert_eq!(
            zones_allowing_eviction(std::slice::from_ref(&down)).get(""),
            Some(&false)
        );
        // A zone entirely down while another is up: its pods can go elsewhere.
        let mut other = up.clone();
        other.metadata.labels =
            Some([("topology.kubernetes.io/zone".to_string(), "z2".to_string())].into());
        let zones = zones_allowing_eviction(&[down.clone(), other]);
        assert_eq!(zones.get(""), Some(&true));
        assert_eq!(zones.get("z2"), Some(&true));
        assert_eq!(zone_state(1, 3), ZoneState::PartialDisruption);
        assert_eq!(zone_state(2, 2), ZoneState::Normal);
        assert_eq!(zone_state(0, 1), ZoneState::FullDisruption);
        // A small zone mostly down stops tainting.
        let zones = zones_allowing_eviction(&[up, down.clone(), down.clone(), down]);
        assert_eq!(zones.get(""), Some(&false));
    }

    #[test]
    fn tolerations_decide_when_a_pod_is_evicted() {
        let now = ts("2024-01-01T00:05:00Z");
        let seen = ts("2024-01-01T00:04:00Z");
        let taints = [
            taint(TAINT_UNREACHABLE, "NoSchedule", None),
            taint(TAINT_UNREACHABLE, "NoExecute", Some("2024-01-01T00:03:00Z")),
        ];
        // No toleration: at once.
        assert_eq!(
            eviction_time(&pod(json!([])), &taints, seen, now),
            Some(now)
        );
        // The default toleration of 300 s: 300 s after the taint was added.
        let default = pod(
            json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(
            eviction_time(&default, &taints, seen, now),
            Some(ts("2024-01-01T00:08:00Z"))
        );
        // The shortest of the tolerations used wins; a taint without timeAdded counts from `seen`.
        let two = pod(json!([
            {"key": TAINT_UNREACHABLE, "operator": "Exists", "tolerationSeconds": 300},
            {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
        ]));
        let no_time = [taint(TAINT_UNREACHABLE, "NoExecute", None)];
        assert_eq!(
            eviction_time(&two, &no_time, seen, now),
            Some(ts("2024-01-01T00:05:00Z"))
        );
        // Tolerated without seconds: never; NoSchedule taints alone: never.
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, &taints, seen, now), None);
        assert_eq!(
            eviction_time(&pod(json!([])), &taints[..1], seen, now),
            None
        );
        // A toleration for another key does not help.
        let other =
            pod(json!([{"key": TAINT_NOT_READY, "operator": "Exists", "tolerationSeconds": 300}]));
        assert_eq!(eviction_time(&other, &taints, seen, now), Some(now));
        // Negative seconds mean at once.
        let negative =
            pod(json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "tolerationSeconds": -5}]));
        assert_eq!(
            eviction_time(&negative, &taints, seen, now),
            Some(ts("2024-01-01T00:03:00Z"))
        );
    }

    #[test]
    fn toleration_matching_follows_upstream() {
        let t = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let tol = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        assert!(toleration_tolerates(
            &tol(json!({"key": "k", "value": "v"})),
            &t
        ));
        assert!(toleration_tolerates(
            &tol(json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute"})),
            &t
        ));
        assert!(toleration_tolerates(
            &tol(json!({"operator": "Exists"})),
            &t
        ));
        assert!(!toleration_tolerates(
            &tol(json!({"key": "k", "value": "w"})),
            &t
        ));
        assert!(!toleration_tolerates(
            &tol(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})),
            &t
        ));
        assert!(!toleration_tolerates(&tol(json!({"value": "v"})), &t));
    }

    #[test]
    fn pods_are_marked_not_ready_and_for_disruption_once() {
        let now = ts("2024-01-01T00:05:00Z");
        let p = pod(json!([]));
        let conditions = not_ready_conditions(&p, now).unwrap();
        assert_eq!(conditions[0].status, "False");
        assert_eq!(conditions[0].last_transition_time, Some(Time(now)));
        assert_eq!(
            conditions[1].status, "True",
            "ContainersReady is the agent's to change"
        );
        let mut marked = p.clone();
        marked.status.as_mut().unwrap().conditions = Some(conditions);
        assert_eq!(not_ready_conditions(&marked, now), None);

        let target =
            with_condition(&p, "DisruptionTarget", "DeletionByTaintManager", "m", now).unwrap();
        assert_eq!(target.len(), 3);
        assert_eq!(target[2].reason.as_deref(), Some("DeletionByTaintManager"));
        marked.status.as_mut().unwrap().conditions = Some(target);
        assert_eq!(
            with_condition(
                &marked,
                "DisruptionTarget",
                "DeletionByTaintManager",
                "m",
                now
            ),
            None
        );
    }
}
