//! The scheduler (`default-scheduler`): binds each pending pod, through `pods/binding`, to a
//! Ready virtual node with room for the pod's provisioned size, or leaves it Pending with a
//! `PodScheduled=False` (`Unschedulable`) condition and a `FailedScheduling` event, retried
//! whenever nodes or pods change.
//!
//! A pod's size is its `nodeless.io/capacity-provisioned` annotation (`0.5vCPU 1GiB`) when it
//! has one, else the sum of its containers' limits (requests where there is no limit; the
//! largest init container if that is more, plus the pod's overhead). Nodes offer their
//! `allocatable` cpu, memory and pods minus what the pods already on them take.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, Node, Pod, Taint};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::ControllerError;

/// The scheduler's name, the default of `spec.schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// The annotation with a pod's provisioned size, written by the serverless admission.
pub const CAPACITY_ANNOTATION: &str = "nodeless.io/capacity-provisioned";
/// How many bindings and status writes are in flight at once.
const CONCURRENCY: usize = 32;
/// How many events are written at once.
const EVENT_CONCURRENCY: usize = 4;
/// How many events may wait to be written before new ones are dropped.
const EVENT_QUEUE: usize = 1000;
/// How long a binding is assumed to hold before the pod watch confirms it.
const ASSUME_FOR: Duration = Duration::from_secs(30);
/// How often unschedulable pods are retried even when nothing changed.
const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(30);
/// The least time between the end of a pass and the start of the next, so that a burst of
/// changes piles up into one pass; a change after a quiet spell is handled at once.
const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// How long a pass waits for more changes: what is left of the batch window since the
/// previous pass ended (nothing after a quiet spell, so a lone pod is bound at once).
fn batch_wait(previous_pass_ended: Instant, now: Instant) -> Duration {
    BATCH_WINDOW.saturating_sub(now.saturating_duration_since(previous_pass_ended))
}

/// CPU and memory a pod takes or a node offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
}

impl Resources {
    fn add(&mut self, other: Resources) {
        self.cpu_millis += other.cpu_millis;
        self.memory_bytes += other.memory_bytes;
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }
}

/// A quantity (`500m`, `1.5`, `2Gi`, `1e3`) as a number of base units.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * multiplier)
}

fn cpu_millis(text: &str) -> Option<i64> {
    parse_quantity(text).map(|v| (v * 1000.0).ceil() as i64)
}

fn memory_bytes(text: &str) -> Option<i64> {
    parse_quantity(text).map(|v| v.ceil() as i64)
}

/// The provisioned size from `nodeless.io/capacity-provisioned` (`0.5vCPU 1GiB`).
pub fn parse_provisioned(text: &str) -> Option<Resources> {
    let mut size = Resources::default();
    let (mut cpu, mut memory) = (false, false);
    for part in text.split_whitespace() {
        if let Some(n) = part.strip_suffix("vCPU") {
            size.cpu_millis = cpu_millis(n)?;
            cpu = true;
        } else if let Some(n) = part.strip_suffix("B") {
            size.memory_bytes = memory_bytes(n)?;
            memory = true;
        } else {
            return None;
        }
    }
    (cpu && memory).then_some(size)
}

fn container_size(container: &k8s_openapi::api::core::v1::Container) -> Resources {
    let resources = container.resources.as_ref();
    let pick = |name: &str| -> Option<String> {
        let limits = resources.and_then(|r| r.limits.as_ref());
        let requests = resources.and_then(|r| r.requests.as_ref());
        limits
            .and_then(|l| l.get(name))
            .or_else(|| requests.and_then(|r| r.get(name)))
            .map(|q| q.0.clone())
    };
    Resources {
        cpu_millis: pick("cpu").and_then(|q| cpu_millis(&q)).unwrap_or(0),
        memory_bytes: pick("memory").and_then(|q| memory_bytes(&q)).unwrap_or(0),
    }
}

/// What a pod takes on its node.
pub fn pod_size(pod: &Pod) -> Resources {
    if let Some(size) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CAPACITY_ANNOTATION))
        .and_then(|a| parse_provisioned(a))
    {
        return size;
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(container_size(c));
    }
    for c in spec.init_containers.iter().flatten() {
        total = total.max(container_size(c));
    }
    if let Some(overhead) = spec.overhead.as_ref() {
        total.add(Resources {
            cpu_millis: overhead
                .get("cpu")
                .and_then(|q| cpu_millis(&q.0))
                .unwrap_or(0),
            memory_bytes: overhead
                .get("memory")
                .and_then(|q| memory_bytes(&q.0))
                .unwrap_or(0),
        });
    }
    total
}

/// What a node offers.
#[derive(Clone, Debug)]
struct NodeRoom {
    name: String,
    allocatable: Resources,
    max_pods: i64,
    used: Resources,
    pods: i64,
}

impl NodeRoom {
    fn from_node(node: &Node) -> Self {
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let get = |name: &str| allocatable.and_then(|a| a.get(name)).map(|q| q.0.clone());
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            allocatable: Resources {
                cpu_millis: get("cpu").and_then(|q| cpu_millis(&q)).unwrap_or(0),
                memory_bytes: get("memory").and_then(|q| memory_bytes(&q)).unwrap_or(0),
            },
            max_pods: get("pods")
                .and_then(|q| parse_quantity(&q))
                .map(|v| v as i64)
                .unwrap_or(110),
            used: Resources::default(),
            pods: 0,
        }
    }

    /// Why `size` does not fit, if it does not.
    fn misfits(&self, size: Resources) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.pods + 1 > self.max_pods {
            reasons.push("Too many pods".to_string());
        }
        if size.cpu_millis > 0
            && self.used.cpu_millis + size.cpu_millis > self.allocatable.cpu_millis
        {
            reasons.push("Insufficient cpu".to_string());
        }
        if size.memory_bytes > 0
            && self.used.memory_bytes + size.memory_bytes > self.allocatable.memory_bytes
        {
            reasons.push("Insufficient memory".to_string());
        }
        reasons
    }

    /// The share of the node left free after `size`, higher is better (upstream's
    /// LeastAllocated).
    fn score(&self, size: Resources) -> f64 {
        let free = |alloc: i64, used: i64| {
            if alloc <= 0 {
                0.0
            } else {
                (alloc - used) as f64 / alloc as f64
            }
        };
        free(
            self.allocatable.cpu_millis,
            self.used.cpu_millis + size.cpu_millis,
        ) + free(
            self.allocatable.memory_bytes,
            self.used.memory_bytes + size.memory_bytes,
        )
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn tolerates(pod: &Pod, taint: &Taint) -> bool {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    tolerations
        .into_iter()
        .flatten()
        .any(|t| crate::pods::toleration_tolerates(t, taint))
}

/// Why a node cannot take a pod regardless of its size: not Ready, unschedulable, a taint,
/// the pod's node selector.
fn node_refuses(node: &Node, pod: &Pod) -> Option<String> {
    if !is_ready(node) {
        return Some("node(s) had untolerated taint {node.kubernetes.io/not-ready: }".into());
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        return Some("node(s) were unschedulable".into());
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    for taint in taints.into_iter().flatten() {
        if matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerates(pod, taint) {
            return Some(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            ));
        }
    }
    let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
    let labels = node.metadata.labels.as_ref();
    for (k, v) in selector.into_iter().flatten() {
        if labels.and_then(|l| l.get(k)) != Some(v) {
            return Some("node(s) didn't match Pod's node affinity/selector".into());
        }
    }
    None
}

/// The `FailedScheduling` message, as upstream words it.
pub fn unschedulable_message(total_nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    if total_nodes == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!("0/{total_nodes} nodes are available: {}.", parts.join(", "))
}

/// What one pass decided for a pod.
#[derive(Debug, PartialEq)]
enum Decision {
    Bind(String),
    Unschedulable(String),
}

fn wants_scheduling(pod: &Pod) -> bool {
    let spec = match pod.spec.as_ref() {
        Some(s) => s,
        None => return false,
    };
    let unbound = spec.node_name.as_deref().is_none_or(str::is_empty);
    let ours = spec
        .scheduler_name
        .as_deref()
        .is_none_or(|s| s.is_empty() || s == SCHEDULER_NAME);
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    unbound
        && ours
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, "Succeeded" | "Failed")
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Decides where each pending pod goes, given every node and pod and the bindings in flight
/// (`assumed`: pod uid → node and size). Pods are taken oldest first.
fn plan(
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    assumed: &HashMap<String, (String, Resources)>,
) -> Vec<(Arc<Pod>, Decision)> {
    let mut rooms: Vec<(Arc<Node>, NodeRoom)> = nodes
        .iter()
        .map(|n| (n.clone(), NodeRoom::from_node(n)))
        .collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, (_, room)) in rooms.iter().enumerate() {
        index.insert(room.name.clone(), i);
    }
    let mut pending = Vec::new();
    for pod in pods {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let node = bound.or_else(|| assumed.get(&uid).map(|(n, _)| n.clone()));
        match node {
            Some(node) if !is_finished(pod) => {
                if let Some(&i) = index.get(&node) {
                    rooms[i].1.used.add(pod_size(pod));
                    rooms[i].1.pods += 1;
                }
            }
            Some(_) => {}
            None if wants_scheduling(pod) => pending.push(pod.clone()),
            None => {}
        }
    }
    pending.sort_by(|a, b| {
        let key = |p: &Pod| {
            (
                p.metadata.creation_timestamp.clone().map(|t| t.0),
                p.metadata.namespace.clone(),
                p.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut decisions = Vec::new();
    for pod in pending {
        let size = pod_size(&pod);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(usize, f64)> = None;
        for (i, (node, room)) in rooms.iter().enumerate() {
            if let Some(reason) = node_refuses(node, &pod) {
                *reasons.entry(reason).or_default() += 1;
                continue;
            }
            let misfits = room.misfits(size);
            if misfits.is_empty() {
                let score = room.score(size);
                if best.is_none_or(|(_, s)| score > s) {
                    best = Some((i, score));
                }
            } else {
                for r in misfits {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
        match best {
            Some((i, _)) => {
                let room = &mut rooms[i].1;
                room.used.add(size);
                room.pods += 1;
                decisions.push((pod, Decision::Bind(room.name.clone())));
            }
            None => {
                let message = unschedulable_message(rooms.len(), &reasons);
                decisions.push((pod, Decision::Unschedulable(message)));
            }
        }
    }
    decisions
}

/// Whether the pod already says it is unschedulable for this reason.
fn already_reported(pod: &Pod, message: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(message)
            })
        })
}

fn now_rfc3339() -> String {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    match serde_json::to_value(now) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), ControllerError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let _: Value = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}

async fn report_unschedulable(
    client: &Client,
    events: &mpsc::Sender<Value>,
    pod: &Pod,
    message: &str,
) -> Result<(), ControllerError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = now_rfc3339();
    let mut conditions: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
    conditions.push(json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": now,
    }));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let body = json!({"status": {"conditions": conditions}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    record(
        events,
        pod_event(pod, "Warning", "FailedScheduling", message),
    );
    tracing::info!(pod = %format!("{namespace}/{name}"), %message, "pod unschedulable");
    Ok(())
}

/// A core/v1 Event about a pod, from the scheduler.
fn pod_event(pod: &Pod, kind: &str, reason: &str, message: &str) -> Value {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = now_rfc3339();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": namespace,
            "name": name,
            "uid": pod.metadata.uid,
            "resourceVersion": pod.metadata.resource_version,
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": SCHEDULER_NAME},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": SCHEDULER_NAME,
        "reportingInstance": SCHEDULER_NAME,
    })
}

/// Hands an event to the event writer; drops it when the writer is far behind (as
/// upstream's event broadcaster does), so that events never slow scheduling down.
fn record(events: &mpsc::Sender<Value>, event: Value) {
    if events.try_send(event).is_err() {
        tracing::debug!("event queue full; event dropped");
    }
}

/// Writes the recorded events, a few at a time.
async fn write_events(client: Client, events: mpsc::Receiver<Value>) {
    receiver_stream(events)
        .for_each_concurrent(EVENT_CONCURRENCY, |event| {
            let client = client.clone();
            async move {
                let namespace = event["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let typed: Event = match serde_json::from_value(event) {
                    Ok(e) => e,
                    Err(error) => {
                        tracing::warn!(%error, "event");
                        return;
                    }
                };
                let api: Api<Event> = Api::namespaced(client, &namespace);
                if let Err(error) = api.create(&PostParams::default(), &typed).await {
                    tracing::debug!(%error, "writing an event");
                }
            }
        })
        .await;
}

fn receiver_stream<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Runs the scheduler until its watches end.
pub async fn run(client: Client, informers: &crate::informer::Informers) {
    let changed = Arc::new(Notify::new());
    let pods = informers.pods.store();
    let (nodes, node_writer) = reflector::store::<Node>();
    let pod_watch = {
        let changed = changed.clone();
        informers.pods.subscribe().for_each(move |_| {
            changed.notify_one();
            std::future::ready(())
        })
    };
    let node_watch = {
        let changed = changed.clone();
        let api: Api<Node> = Api::all(client.clone());
        reflector::reflector(
            node_writer,
            watcher::watcher(api, watcher::Config::default())
                .modify(crate::watch::strip_managed_fields),
        )
        .default_backoff()
        .for_each(move |_| {
            changed.notify_one();
            std::future::ready(())
        })
    };
    let (events, queued_events) = mpsc::channel(EVENT_QUEUE);
    tokio::select! {
        _ = pod_watch => tracing::warn!("scheduler pod watch ended"),
        _ = node_watch => tracing::warn!("scheduler node watch ended"),
        _ = write_events(client.clone(), queued_events) => {}
        _ = schedule_loop(client, pods, nodes, changed, events) => {}
    }
}

async fn schedule_loop(
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    changed: Arc<Notify>,
    events: mpsc::Sender<Value>,
) {
    if pods.wait_until_ready().await.is_err() || nodes.wait_until_ready().await.is_err() {
        return;
    }
    let mut assumed: HashMap<String, (String, Resources, Instant)> = HashMap::new();
    loop {
        let previous_pass_ended = Instant::now();
        let _ = tokio::time::timeout(RETRY_UNSCHEDULABLE, changed.notified()).await;
        let wait = batch_wait(previous_pass_ended, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let all_pods = pods.state();
        let all_nodes = nodes.state();
        // Forget bindings the watch has confirmed, or that are too old.
        let bound: HashMap<String, bool> = all_pods
            .iter()
            .map(|p| {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let is_bound = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| !n.is_empty());
                (uid, is_bound)
            })
            .collect();
        assumed
            .retain(|uid, (_, _, at)| bound.get(uid) == Some(&false) && at.elapsed() < ASSUME_FOR);
        let view: HashMap<String, (String, Resources)> = assumed
            .iter()
            .map(|(uid, (node, size, _))| (uid.clone(), (node.clone(), *size)))
            .collect();
        let decisions = plan(&all_nodes, &all_pods, &view);
        let mut work = Vec::new();
        for (pod, decision) in decisions {
            match &decision {
                Decision::Bind(node) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    assumed.insert(uid, (node.clone(), pod_size(&pod), Instant::now()));
                }
                Decision::Unschedulable(message) if already_reported(&pod, message) => continue,
                Decision::Unschedulable(_) => {}
            }
            work.push((pod, decision));
        }
        if work.is_empty() {
            continue;
        }
        let failed: Vec<String> = stream::iter(work)
            .map(|(pod, decision)| {
                let client = client.clone();
                let events = events.clone();
                async move {
                    let result = match &decision {
                        Decision::Bind(node) => {
                            let bound = bind(&client, &pod, node).await;
                            if bound.is_ok() {
                                let message = format!(
                                    "Successfully assigned {}/{} to {node}",
                                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                                    pod.metadata.name.as_deref().unwrap_or_default()
                                );
                                record(&events, pod_event(&pod, "Normal", "Scheduled", &message));
                            }
                            bound
                        }
                        Decision::Unschedulable(message) => {
                            report_unschedulable(&client, &events, &pod, message).await
                        }
                    };
                    match result {
                        Ok(()) => None,
                        Err(error) => {
                            tracing::debug!(pod = ?pod.metadata.name, %error, "scheduling");
                            pod.metadata.uid.clone()
                        }
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(|uid| async move { uid })
            .collect()
            .await;
        if !failed.is_empty() {
            for uid in &failed {
                assumed.remove(uid);
            }
            // Try again soon.
            changed.notify_one();
            tokio::time::sleep(crate::RETRY_AFTER).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_after_a_quiet_spell_is_scheduled_at_once_and_a_burst_waits_out_the_window() {
        let ended = Instant::now();
        assert_eq!(
            batch_wait(ended, ended + Duration::from_millis(50)),
            Duration::ZERO
        );
        assert_eq!(batch_wait(ended, ended + BATCH_WINDOW), Duration::ZERO);
        assert_eq!(
            batch_wait(ended, ended + Duration::from_millis(4)),
            BATCH_WINDOW - Duration::from_millis(4)
        );
        assert_eq!(batch_wait(ended, ended), BATCH_WINDOW);
    }

    fn node(name: &str, cpu: &str, memory: &str, pods: &str, ready: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"disk": "ssd"}},
                "status": {
                    "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                },
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: &str, cpu: &str, memory: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "spec": {
                    "nodeName": node,
                    "containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": cpu, "memory": memory}}}],
                },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn quantities_and_provisioned_sizes_parse() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(memory_bytes("1Gi"), Some(1 << 30));
        assert_eq!(memory_bytes("1e3"), Some(1000));
        assert_eq!(memory_bytes("128974848"), Some(128974848));
        assert_eq!(parse_quantity("1x"), None);
        assert_eq!(
            parse_provisioned("0.5vCPU 1GiB"),
            Some(Resources {
                cpu_millis: 500,
                memory_bytes: 1 << 30
            })
        );
        assert_eq!(parse_provisioned("2vCPU"), None);
        assert_eq!(parse_provisioned("fast"), None);
    }

    #[test]
    fn pod_size_sums_limits_then_requests_and_prefers_the_annotation() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "image": "x", "resources": {"limits": {"cpu": "3"}}}],
                "containers": [
                    {"name": "a", "image": "x", "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "100m"}}},
                    {"name": "b", "image": "x", "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
                ],
            },
        }))
        .unwrap();
        assert_eq!(
            pod_size(&p),
            Resources {
                cpu_millis: 3000,
                memory_bytes: (1 << 30) + (512 << 20)
            }
        );
        let mut annotated = p.clone();
        annotated.metadata.annotations = Some(
            [(
                CAPACITY_ANNOTATION.to_string(),
                "0.25vCPU 512MiB".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            pod_size(&annotated),
            Resources {
                cpu_millis: 250,
                memory_bytes: 512 << 20
            }
        );
    }

    #[test]
    fn pending_pods_go_where_there_is_room() {
        let nodes = [node("n1", "2", "4Gi", "110", true)];
        let pods = [
            pod("running", "n1", "1500m", "1Gi"),
            pod("fits", "", "500m", "1Gi"),
            pod("too-big", "", "1", "1Gi"),
        ];
        let d = plan(&nodes, &pods, &HashMap::new());
        assert_eq!(d.len(), 2);
        let by_name: HashMap<_, _> = d
            .iter()
            .map(|(p, d)| (p.metadata.name.clone().unwrap(), d))
            .collect();
        assert_eq!(by_name["fits"], &Decision::Bind("n1".into()));
        assert_eq!(
            by_name["too-big"],
            &Decision::Unschedulable("0/1 nodes are available: 1 Insufficient cpu.".into())
        );
    }

    #[test]
    fn assumed_bindings_and_pod_counts_take_room() {
        let nodes = [node("n1", "4", "4Gi", "2", true)];
        let pods = [
            pod("a", "", "1", "1Gi"),
            pod("b", "", "1", "1Gi"),
            pod("c", "", "1", "1Gi"),
        ];
        let mut assumed = HashMap::new();
        assumed.insert(
            "uid-a".to_string(),
            (
                "n1".to_string(),
                Resources {
                    cpu_millis: 1000,
                    memory_bytes: 1 << 30,
                },
            ),
        );
        let d = plan(&nodes, &pods, &assumed);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].1, Decision::Bind("n1".into()));
        assert_eq!(
            d[1].1,
            Decision::Unschedulable("0/1 nodes are available: 1 Too many pods.".into())
        );
    }

    #[test]
    fn unready_nodes_and_selectors_are_reasons() {
        let nodes = [
            node("n1", "4", "4Gi", "110", false),
            node("n2", "1", "1Gi", "110", true),
        ];
        let mut p = (*pod("p", "", "2", "2Gi")).clone();
        let d = plan(&nodes, &[Arc::new(p.clone())], &HashMap::new());
        assert_eq!(
            d[0].1,
            Decision::Unschedulable("0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.".into())
        );
        p.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "hdd".to_string())].into());
        let small = [node("n3", "8", "8Gi", "110", true)];
        let d = plan(&small, &[Arc::new(p)], &HashMap::new());
        assert_eq!(
            d[0].1,
            Decision::Unschedulable(
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
                    .into()
            )
        );
        assert_eq!(
            unschedulable_message(0, &BTreeMap::new()),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn finished_pods_free_their_room_and_other_schedulers_are_left_alone() {
        let nodes = [node("n1", "1", "1Gi", "110", true)];
        let mut done = (*pod("done", "n1", "1", "1Gi")).clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        let mut other = (*pod("other", "", "100m", "1Mi")).clone();
        other.spec.as_mut().unwrap().scheduler_name = Some("custom".into());
        let d = plan(
            &nodes,
            &[Arc::new(done), Arc::new(other), pod("new", "", "1", "1Gi")],
            &HashMap::new(),
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1, Decision::Bind("n1".into()));
    }

    #[test]
    fn events_name_the_pod_and_the_scheduler() {
        let p = pod("web", "", "1", "1Gi");
        let e = pod_event(
            &p,
            "Normal",
            "Scheduled",
            "Successfully assigned default/web to n1",
        );
        assert!(e["metadata"]["name"].as_str().unwrap().starts_with("web."));
        assert_eq!(e["involvedObject"]["uid"], "uid-web");
        assert_eq!(e["source"]["component"], SCHEDULER_NAME);
        assert_eq!(e["count"], 1);
        let typed: Event = serde_json::from_value(e).unwrap();
        assert_eq!(typed.reason.as_deref(), Some("Scheduled"));
    }

    #[test]
    fn untolerated_no_schedule_taints_keep_pods_off_a_node() {
        let mut tainted = (*node("tainted", "8", "8Gi", "110", true)).clone();
        tainted.spec = Some(
            serde_json::from_value(json!({"taints": [
                {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
                {"key": "soft", "effect": "PreferNoSchedule"},
            ]}))
            .unwrap(),
        );
        let tainted = Arc::new(tainted);
        let nodes = [tainted.clone(), node("small", "1", "1Gi", "110", true)];
        let p = pod("p", "", "500m", "512Mi");
        let d = plan(&nodes, std::slice::from_ref(&p), &HashMap::new());
        assert_eq!(d[0].1, Decision::Bind("small".into()));
        let d = plan(
            std::slice::from_ref(&tainted),
            std::slice::from_ref(&p),
            &HashMap::new(),
        );
        assert_eq!(
            d[0].1,
            Decision::Unschedulable("0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }.".into())
        );
        // A pod tolerating it may go there (PreferNoSchedule never refuses).
        let mut tolerant = (*p).clone();
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![serde_json::from_value(
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}),
        )
        .unwrap()]);
        let d = plan(&[tainted], &[Arc::new(tolerant)], &HashMap::new());
        assert_eq!(d[0].1, Decision::Bind("tainted".into()));
    }

    #[test]
    fn tolerations_match_taints() {
        let taint: Taint =
            serde_json::from_value(json!({"key": "k", "value": "v", "effect": "NoSchedule"}))
                .unwrap();
        let with = |t: Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": [t]}}),
            )
            .unwrap()
        };
        assert!(tolerates(&with(json!({"key": "k", "value": "v"})), &taint));
        assert!(tolerates(
            &with(json!({"key": "k", "operator": "Exists"})),
            &taint
        ));
        assert!(tolerates(&with(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(&with(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(
            &with(json!({"key": "k", "value": "v", "effect": "NoExecute"})),
            &taint
        ));
    }
}
