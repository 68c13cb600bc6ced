//! The garbage collector, after upstream's `pkg/controller/garbagecollector`.
//!
//! - Background cascading deletion: an object whose owners (its `ownerReferences`) are all
//!   gone is deleted; one that keeps at least one owner only loses its dangling references.
//! - `orphan` finalizer (propagationPolicy Orphan): the owner's dependents lose their
//!   references to it, then the finalizer goes and the API server removes the owner.
//! - `foregroundDeletion` finalizer (propagationPolicy Foreground): the owner's dependents are
//!   deleted (those with dependents of their own in the foreground too); once no dependent
//!   with `blockOwnerDeletion: true` is left, the finalizer goes.
//!
//! A graph of every object's owner references is fed by metadata-only watches of every
//! listable and watchable kind (rediscovered periodically; pods come from the shared
//! informer). Decisions start from the graph, but an owner the graph does not know is looked
//! up live by apiVersion/kind/name before it counts as absent (once: absent uids are
//! remembered, as upstream's `absentOwnerCache`), and an object is re-read before anything is
//! done to it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    Preconditions, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use crate::informer::Informers;
use crate::{ControllerError, RETRY_AFTER};

/// The finalizer that asks for the owner's dependents to be orphaned.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that asks for the owner's dependents to be deleted before the owner.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// How often the set of served kinds is rediscovered.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// How often every object with owners or a pending deletion is looked at again.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// How many objects the collector works on at once.
const GC_WORKERS: usize = 16;
/// How long the orphan and foreground flows wait for a resource's first listing.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// One object as the graph knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The kind (resource) it was listed as.
    pub resource: ApiResource,
    /// Its namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Its `metadata.ownerReferences`.
    pub owners: Vec<OwnerReference>,
    /// Its `metadata.finalizers`.
    pub finalizers: Vec<String>,
    /// Whether it has a `deletionTimestamp`.
    pub deleting: bool,
}

impl Node {
    /// The node of an object read as `resource`; `None` when the object has no uid or name.
    pub fn from_object(resource: &ApiResource, obj: &DynamicObject) -> Option<Self> {
        Self::from_meta(resource, &obj.metadata)
    }

    /// The node of an object of `resource` with this metadata; `None` without a name or uid.
    pub fn from_meta(resource: &ApiResource, meta: &ObjectMeta) -> Option<Self> {
        Some(Self {
            resource: resource.clone(),
            namespace: meta.namespace.clone().filter(|n| !n.is_empty()),
            name: meta.name.clone()?,
            uid: meta.uid.clone().filter(|u| !u.is_empty())?,
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        })
    }

    fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    /// Whether it is being deleted in the foreground (waits for its blocking dependents).
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND_FINALIZER)
    }

    /// Whether its reference to `owner_uid` has `blockOwnerDeletion: true`.
    pub fn blocks(&self, owner_uid: &str) -> bool {
        self.owners
            .iter()
            .any(|r| r.uid == owner_uid && r.block_owner_deletion == Some(true))
    }
}

/// The key of a watched resource: `group/version/plural`.
fn resource_key(resource: &ApiResource) -> String {
    format!(
        "{}/{}/{}",
        resource.group, resource.version, resource.plural
    )
}

/// Every known object by uid, with the reverse index from an owner's uid to its dependents.
#[derive(Default, Debug)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, BTreeSet<String>>,
    /// Each watched resource, with when its watch started.
    watched: HashMap<String, Instant>,
    synced: HashSet<String>,
}

impl Graph {
    /// The node with this uid.
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The known dependents of the object with this uid.
    pub fn dependents_of(&self, uid: &str) -> Vec<Node> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .filter(|d| d.owners.iter().any(|r| r.uid == uid))
            .cloned()
            .collect()
    }

    /// Adds or replaces a node; returns the uids worth looking at again because of it.
    pub fn upsert(&mut self, node: Node) -> Vec<String> {
        let mut revisit = Vec::new();
        let old = self.nodes.get(&node.uid).cloned();
        match &old {
            Some(old) if *old == node => return revisit,
            Some(old) => {
                if old.owners != node.owners {
                    revisit.push(node.uid.clone());
                    revisit.extend(old.owners.iter().map(|r| r.uid.clone()));
                    revisit.extend(node.owners.iter().map(|r| r.uid.clone()));
                }
                if old.deleting != node.deleting || old.finalizers != node.finalizers {
                    revisit.push(node.uid.clone());
                    revisit.extend(self.dependent_uids(&node.uid));
                }
                self.unlink(old.clone());
            }
            None => {
                revisit.push(node.uid.clone());
                revisit.extend(node.owners.iter().map(|r| r.uid.clone()));
            }
        }
        for owner in &node.owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(node.uid.clone());
        }
        self.nodes.insert(node.uid.clone(), node);
        revisit
    }

    /// Removes the node with this uid if it was listed as `resource`; returns the uids worth
    /// looking at again: its owners and its dependents.
    pub fn remove(&mut self, resource: &str, uid: &str) -> Vec<String> {
        let Some(node) = self.nodes.get(uid) else {
            return Vec::new();
        };
        if resource_key(&node.resource) != resource {
            return Vec::new();
        }
        let node = node.clone();
        self.nodes.remove(uid);
        let mut revisit: Vec<String> = node.owners.iter().map(|r| r.uid.clone()).collect();
        revisit.extend(self.dependent_uids(uid));
        self.unlink(node);
        revisit
    }

    /// Replaces every node of `resource` with a fresh listing and marks it synced; returns the
    /// uids worth looking at again.
    pub fn replace_resource(&mut self, resource: &str, nodes: Vec<Node>) -> Vec<String> {
        let listed: HashSet<String> = nodes.iter().map(|n| n.uid.clone()).collect();
        let stale: Vec<String> = self
            .nodes
            .values()
            .filter(|n| resource_key(&n.resource) == resource && !listed.contains(&n.uid))
            .map(|n| n.uid.clone())
            .collect();
        let mut revisit = Vec::new();
        for uid in stale {
            revisit.extend(self.remove(resource, &uid));
        }
        for node in nodes {
            revisit.extend(self.upsert(node));
        }
        self.synced.insert(resource.to_string());
        revisit
    }

    /// Sets the resources being watched (new ones start their sync wait `now`); forgets the
    /// nodes of the others.
    pub fn set_watched(&mut self, watched: HashSet<String>, now: Instant) {
        let gone: Vec<String> = self
            .nodes
            .values()
            .filter(|n| !watched.contains(&resource_key(&n.resource)))
            .map(|n| n.uid.clone())
            .collect();
        for uid in gone {
            if let Some(node) = self.nodes.remove(&uid) {
                self.unlink(node);
            }
        }
        self.synced.retain(|r| watched.contains(r));
        self.watched.retain(|r, _| watched.contains(r));
        for resource in watched {
            self.watched.entry(resource).or_insert(now);
        }
    }

    /// Whether every watched resource has been listed once: only then is the absence of a
    /// dependent from the graph meaningful. As upstream, a resource that has not listed
    /// within [`SYNC_TIMEOUT`] of its watch starting stops holding everything up.
    pub fn all_synced(&self, now: Instant) -> bool {
        let mut waiting = self.watched.iter().filter(|(r, started)| {
            !self.synced.contains(*r) && now.saturating_duration_since(**started) < SYNC_TIMEOUT
        });
        !self.watched.is_empty() && waiting.next().is_none()
    }

    /// The uids of every node that may need work: with owners, or being deleted.
    fn candidates(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| !n.owners.is_empty() || n.deleting)
            .map(|n| n.uid.clone())
            .collect()
    }

    fn dependent_uids(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn unlink(&mut self, node: Node) {
        for owner in &node.owners {
            if let Some(deps) = self.dependents.get_mut(&owner.uid) {
                deps.remove(&node.uid);
                if deps.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
        }
    }
}

/// What an owner reference points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not waiting for this dependent to go.
    Solid,
    /// No object with the reference's uid exists.
    Dangling,
    /// The owner is being deleted in the foreground and the reference blocks it.
    Waiting,
}

/// What to do with an object that has owner references.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Nothing.
    Keep,
    /// Remove the references to these owner uids (it keeps other, solid owners).
    RemoveOwnerReferences(Vec<String>),
    /// Delete it with this propagation policy.
    Delete(PropagationPolicy),
}

/// Upstream's decision for an object (not being deleted) whose owner references were
/// classified as `owners` (uid, state); `has_dependents` tells whether anything refers to it.
pub fn verdict(
    owners: &[(String, OwnerState)],
    has_dependents: bool,
    finalizers: &[String],
) -> Verdict {
    if owners.is_empty() {
        return Verdict::Keep;
    }
    let solid = owners.iter().any(|(_, s)| *s == OwnerState::Solid);
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
    if solid {
        let unwanted: Vec<String> = owners
            .iter()
            .filter(|(_, s)| *s != OwnerState::Solid)
            .map(|(uid, _)| uid.clone())
            .collect();
        return if unwanted.is_empty() {
            Verdict::Keep
        } else {
            Verdict::RemoveOwnerReferences(unwanted)
        };
    }
    if waiting && has_dependents {
        return Verdict::Delete(PropagationPolicy::Foreground);
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    Verdict::Delete(if has(ORPHAN_FINALIZER) {
        PropagationPolicy::Orphan
    } else if has(FOREGROUND_FINALIZER) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    })
}

/// Whether a piece of work is finished or should be tried again later.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Retry,
}

/// Runs the garbage collector until it is dropped. Pods come from the shared informer;
/// every other kind from a metadata-only watch of its own.
pub async fn run(client: Client, informers: &Informers) {
    let (revisit_tx, revisit_rx) = unbounded_channel();
    let mut collector = Collector {
        client,
        informers: informers.clone(),
        graph: Arc::default(),
        discovery: None,
        watchers: HashMap::new(),
        revisit_tx,
        absent_owners: Mutex::default(),
    };
    collector.run(revisit_rx).await;
}

struct Collector {
    client: Client,
    informers: Informers,
    graph: Arc<Mutex<Graph>>,
    discovery: Option<Discovery>,
    watchers: HashMap<String, JoinHandle<()>>,
    revisit_tx: UnboundedSender<String>,
    /// Owners verified absent by a live lookup (upstream's `absentOwnerCache`): the thousand
    /// pods of a deleted ReplicaSet look their owner up once, not a thousand times.
    absent_owners: Mutex<AbsentOwners>,
}

/// The uids of the last [`ABSENT_OWNERS`] owners found absent. A uid is never reused, so
/// one that was absent stays absent.
#[derive(Default)]
struct AbsentOwners {
    uids: HashSet<String>,
    order: VecDeque<String>,
}

/// How many absent owners are remembered.
const ABSENT_OWNERS: usize = 1024;

impl AbsentOwners {
    fn contains(&self, uid: &str) -> bool {
        self.uids.contains(uid)
    }

    /// Remembers `uid`, forgetting the oldest one beyond [`ABSENT_OWNERS`].
    fn insert(&mut self, uid: &str) {
        if !self.uids.insert(uid.to_string()) {
            return;
        }
        self.order.push_back(uid.to_string());
        if self.order.len() > ABSENT_OWNERS {
            if let Some(oldest) = self.order.pop_front() {
                self.uids.remove(&oldest);
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        for watcher in self.watchers.values() {
            watcher.abort();
        }
    }
}

fn lock<T>(graph: &Mutex<T>) -> MutexGuard<'_, T> {
    graph
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Collector {
    async fn run(&mut self, mut revisit_rx: UnboundedReceiver<String>) {
        let mut discovery_tick = tokio::time::interval(DISCOVERY_INTERVAL);
        let mut resync_tick = tokio::time::interval(RESYNC_INTERVAL);
        let mut queue: VecDeque<String> = VecDeque::new();
        let mut queued: HashSet<String> = HashSet::new();
        loop {
            let mut incoming = Vec::new();
            tokio::select! {
                _ = discovery_tick.tick() => {
                    self.refresh_discovery().await;
                    if self.discovery.is_none() {
                        // Nothing is watched yet: try again soon.
                        discovery_tick.reset_after(RETRY_AFTER);
                    }
                }
                _ = resync_tick.tick() => incoming = lock(&self.graph).candidates(),
                Some(uid) = revisit_rx.recv() => incoming.push(uid),
            }
            while let Ok(uid) = revisit_rx.try_recv() {
                incoming.push(uid);
            }
            for uid in incoming {
                if queued.insert(uid.clone()) {
                    queue.push_back(uid);
                }
            }
            self.drain(&mut queue, &mut queued, &mut revisit_rx).await;
        }
    }

    /// Processes the queue until it is empty, [`GC_WORKERS`] objects at a time (as upstream's
    /// workers do: deleting a thousand dependents one request at a time takes seconds). An
    /// object is never processed twice at once: one that comes back while it is in flight is
    /// processed again after.
    async fn drain(
        &self,
        queue: &mut VecDeque<String>,
        queued: &mut HashSet<String>,
        revisit_rx: &mut UnboundedReceiver<String>,
    ) {
        let mut in_flight = FuturesUnordered::new();
        let mut active: HashSet<String> = HashSet::new();
        let mut again: HashSet<String> = HashSet::new();
        loop {
            while in_flight.len() < GC_WORKERS {
                let Some(uid) = queue.pop_front() else { break };
                queued.remove(&uid);
                if !active.insert(uid.clone()) {
                    again.insert(uid);
                    continue;
                }
                in_flight.push(async move {
                    let mut more = Vec::new();
                    let outcome = self.process(&uid, &mut more).await;
                    (uid, outcome, more)
                });
            }
            let Some((uid, outcome, mut more)) = in_flight.next().await else {
                return;
            };
            active.remove(&uid);
            match outcome {
                Ok(Outcome::Done) => {}
                Ok(Outcome::Retry) => self.retry_later(uid.clone()),
                Err(error) => {
                    tracing::debug!(%uid, %error, "garbage collection failed; retrying");
                    self.retry_later(uid.clone());
                }
            }
            if again.remove(&uid) {
                more.push(uid);
            }
            while let Ok(uid) = revisit_rx.try_recv() {
                more.push(uid);
            }
            for uid in more {
                if active.contains(&uid) {
                    again.insert(uid);
                } else if queued.insert(uid.clone()) {
                    queue.push_back(uid);
                }
            }
        }
    }

    fn retry_later(&self, uid: String) {
        let tx = self.revisit_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETRY_AFTER).await;
            let _ = tx.send(uid);
        });
    }

    /// Rediscovers the served kinds and watches every listable and watchable one.
    async fn refresh_discovery(&mut self) {
        let discovery = match Discovery::new(self.client.clone()).run().await {
            Ok(d) => d,
            Err(error) => {
                tracing::warn!(%error, "garbage collector discovery failed");
                return;
            }
        };
        let mut wanted: HashMap<String, ApiResource> = HashMap::new();
        for group in discovery.groups() {
            for (resource, caps) in group.recommended_resources() {
                if caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::WATCH) {
                    wanted.insert(resource_key(&resource), resource);
                }
            }
        }
        self.watchers.retain(|key, handle| {
            let keep = wanted.contains_key(key) && !handle.is_finished();
            if !keep {
                handle.abort();
            }
            keep
        });
        lock(&self.graph).set_watched(wanted.keys().cloned().collect(), Instant::now());
        for (key, resource) in wanted {
            if self.watchers.contains_key(&key) {
                continue;
            }
            let (graph, revisit) = (self.graph.clone(), self.revisit_tx.clone());
            let task = if is_pods(&resource) {
                let changes = self
                    .informers
                    .pods
                    .subscribe()
                    .map(|change| Ok(change.event));
                tokio::spawn(feed_graph(
                    resource,
                    changes,
                    |pod: &Arc<Pod>| pod.meta(),
                    graph,
                    revisit,
                ))
            } else {
                let api: Api<PartialObjectMeta<DynamicObject>> =
                    Api::all_with(self.client.clone(), &resource);
                let events = watcher(api, watcher::Config::default()).default_backoff();
                tokio::spawn(feed_graph(
                    resource,
                    events,
                    |obj| &obj.metadata,
                    graph,
                    revisit,
                ))
            };
            self.watchers.insert(key, task);
        }
        self.discovery = Some(discovery);
    }

    fn api(&self, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    /// Reads an object afresh; `None` when it is gone or has been replaced by another uid.
    async fn latest(&self, node: &Node) -> Result<Option<Node>, ControllerError> {
        let api = self.api(&node.resource, node.namespace.as_deref());
        let latest = api.get_opt(&node.name).await?;
        Ok(latest
            .and_then(|obj| Node::from_object(&node.resource, &obj))
            .filter(|n| n.uid == node.uid))
    }

    async fn process(&self, uid: &str, more: &mut Vec<String>) -> Result<Outcome, ControllerError> {
        let Some(node) = lock(&self.graph).get(uid).cloned() else {
            return Ok(Outcome::Done);
        };
        if node.deleting {
            let mut outcome = Outcome::Done;
            if node.has_finalizer(ORPHAN_FINALIZER)
                && self.orphan_dependents(&node).await? == Outcome::Retry
            {
                outcome = Outcome::Retry;
            }
            if node.has_finalizer(FOREGROUND_FINALIZER)
                && self.finish_foreground(&node, more).await? == Outcome::Retry
            {
                outcome = Outcome::Retry;
            }
            return Ok(outcome);
        }
        if node.owners.is_empty() {
            return Ok(Outcome::Done);
        }
        let mut node = node;
        // Decide from the graph first; act only on a fresh copy.
        for attempt in 0..2 {
            let Some(owners) = self.classify(&node).await? else {
                return Ok(Outcome::Done);
            };
            let has_dependents = !lock(&self.graph).dependents_of(&node.uid).is_empty();
            let decision = verdict(&owners, has_dependents, &node.finalizers);
            if decision == Verdict::Keep {
                return Ok(Outcome::Done);
            }
            if attempt == 0 {
                match self.latest(&node).await? {
                    None => return Ok(Outcome::Done),
                    Some(latest) if latest.deleting => return Ok(Outcome::Done),
                    Some(latest) if latest.owners != node.owners => {
                        node = latest;
                        continue;
                    }
                    Some(_) => {}
                }
            }
            return match decision {
                Verdict::Keep => Ok(Outcome::Done),
                Verdict::RemoveOwnerReferences(uids) => {
                    tracing::info!(object = %node.name, owners = ?uids, "removing dangling owner references");
                    self.remove_owner_references(&node, &uids).await
                }
                Verdict::Delete(policy) => {
                    let waited_on = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
                    if waited_on && self.has_dependent_deleting_dependents(&node.uid) {
                        // A possible cycle of foreground deletions: as upstream, stop this
                        // object from blocking its owners before it waits for its dependents.
                        tracing::info!(object = %node.name, "unblocking owner references to break a possible cycle");
                        if self.unblock_owner_references(&node).await? == Outcome::Retry {
                            return Ok(Outcome::Retry);
                        }
                    }
                    tracing::info!(kind = %node.resource.kind, namespace = ?node.namespace, object = %node.name, ?policy, "deleting an object whose owners are gone");
                    self.delete(&node, policy).await
                }
            };
        }
        Ok(Outcome::Retry)
    }

    /// The state of each owner of `node`; `None` when one cannot be told (its kind is not
    /// served, or a cluster-scoped object names a namespaced owner), which leaves it alone.
    async fn classify(
        &self,
        node: &Node,
    ) -> Result<Option<Vec<(String, OwnerState)>>, ControllerError> {
        let mut states = Vec::with_capacity(node.owners.len());
        for reference in &node.owners {
            let Some(owner) = self.find_owner(node, reference).await? else {
                return Ok(None);
            };
            let state = match owner {
                None => OwnerState::Dangling,
                Some(owner)
                    if reference.block_owner_deletion == Some(true)
                        && owner.deleting_dependents() =>
                {
                    OwnerState::Waiting
                }
                Some(_) => OwnerState::Solid,
            };
            states.push((reference.uid.clone(), state));
        }
        Ok(Some(states))
    }

    /// The owner a reference points at: `Some(None)` when it is verifiably absent, `None`
    /// when that cannot be told.
    async fn find_owner(
        &self,
        dependent: &Node,
        reference: &OwnerReference,
    ) -> Result<Option<Option<Node>>, ControllerError> {
        if let Some(owner) = lock(&self.graph).get(&reference.uid) {
            let same_scope = owner.namespace.is_none() || owner.namespace == dependent.namespace;
            if owner.name == reference.name && owner.resource.kind == reference.kind && same_scope {
                return Ok(Some(Some(owner.clone())));
            }
        }
        if lock(&self.absent_owners).contains(&reference.uid) {
            return Ok(Some(None));
        }
        let gvk = GroupVersionKind::from(reference.clone());
        let Some((resource, caps)) = self.discovery.as_ref().and_then(|d| d.resolve_gvk(&gvk))
        else {
            tracing::debug!(dependent = %dependent.name, api_version = %reference.api_version, kind = %reference.kind, "owner kind is not served; leaving the dependent alone");
            return Ok(None);
        };
        let namespace = match (caps.scope, dependent.namespace.as_deref()) {
            (Scope::Cluster, _) => None,
            (Scope::Namespaced, Some(ns)) => Some(ns),
            (Scope::Namespaced, None) => {
                tracing::warn!(dependent = %dependent.name, owner = %reference.name, "a cluster-scoped object cannot have a namespaced owner");
                return Ok(None);
            }
        };
        let found = self
            .api(&resource, namespace)
            .get_opt(&reference.name)
            .await?;
        let owner = found
            .and_then(|obj| Node::from_object(&resource, &obj))
            .filter(|owner| owner.uid == reference.uid);
        if owner.is_none() {
            lock(&self.absent_owners).insert(&reference.uid);
        }
        Ok(Some(owner))
    }

    async fn delete(
        &self,
        node: &Node,
        policy: PropagationPolicy,
    ) -> Result<Outcome, ControllerError> {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(node.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let api = self.api(&node.resource, node.namespace.as_deref());
        match api.delete(&node.name, &params).await {
            Ok(_) => Ok(Outcome::Done),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Outcome::Done),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Outcome::Retry),
            Err(e) => Err(e.into()),
        }
    }

    /// Patches an object's metadata, guarded by its resourceVersion.
    async fn patch_metadata(
        &self,
        node: &Node,
        change: impl FnOnce(&mut DynamicObject) -> Option<serde_json::Value>,
    ) -> Result<Outcome, ControllerError> {
        let api = self.api(&node.resource, node.namespace.as_deref());
        let Some(mut latest) = api.get_opt(&node.name).await? else {
            return Ok(Outcome::Done);
        };
        if latest.metadata.uid.as_deref() != Some(node.uid.as_str()) {
            return Ok(Outcome::Done);
        }
        let resource_version = latest.resource_version();
        let Some(mut metadata) = change(&mut latest) else {
            return Ok(Outcome::Done);
        };
        if let Some(meta) = metadata.as_object_mut() {
            meta.insert("resourceVersion".into(), json!(resource_version));
        }
        let patch = json!({ "metadata": metadata });
        match api
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Outcome::Done),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Outcome::Done),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Outcome::Retry),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_owner_references(
        &self,
        node: &Node,
        owner_uids: &[String],
    ) -> Result<Outcome, ControllerError> {
        self.patch_metadata(node, |obj| {
            let refs = obj.metadata.owner_references.clone().unwrap_or_default();
            let kept: Vec<&OwnerReference> = refs
                .iter()
                .filter(|r| !owner_uids.contains(&r.uid))
                .collect();
            if kept.len() == refs.len() {
                return None;
            }
            let value = if kept.is_empty() {
                json!(null)
            } else {
                json!(kept)
            };
            Some(json!({ "ownerReferences": value }))
        })
        .await
    }

    fn has_dependent_deleting_dependents(&self, uid: &str) -> bool {
        lock(&self.graph)
            .dependents_of(uid)
            .iter()
            .any(Node::deleting_dependents)
    }

    /// Sets `blockOwnerDeletion: false` on every reference of `node` that blocks its owner.
    async fn unblock_owner_references(&self, node: &Node) -> Result<Outcome, ControllerError> {
        self.patch_metadata(node, |obj| {
            let mut refs = obj.metadata.owner_references.clone().unwrap_or_default();
            let mut changed = false;
            for reference in refs
                .iter_mut()
                .filter(|r| r.block_owner_deletion == Some(true))
            {
                reference.block_owner_deletion = Some(false);
                changed = true;
            }
            changed.then(|| json!({ "ownerReferences": refs }))
        })
        .await
    }

    async fn remove_finalizer(
        &self,
        node: &Node,
        finalizer: &str,
    ) -> Result<Outcome, ControllerError> {
        self.patch_metadata(node, |obj| {
            let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
            if !finalizers.iter().any(|f| f == finalizer) {
                return None;
            }
            let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
            Some(json!({ "finalizers": kept }))
        })
        .await
    }

    /// The `orphan` finalizer: every dependent loses its references to `owner`, then the
    /// finalizer goes.
    async fn orphan_dependents(&self, owner: &Node) -> Result<Outcome, ControllerError> {
        let dependents = {
            let graph = lock(&self.graph);
            if !graph.all_synced(Instant::now()) {
                return Ok(Outcome::Retry);
            }
            graph.dependents_of(&owner.uid)
        };
        for dependent in &dependents {
            if self
                .remove_owner_references(dependent, std::slice::from_ref(&owner.uid))
                .await?
                == Outcome::Retry
            {
                return Ok(Outcome::Retry);
            }
        }
        tracing::info!(kind = %owner.resource.kind, object = %owner.name, orphaned = dependents.len(), "dependents orphaned");
        self.remove_finalizer(owner, ORPHAN_FINALIZER).await
    }

    /// The `foregroundDeletion` finalizer: the dependents are deleted; the finalizer goes once
    /// none that blocks the owner's deletion is left.
    async fn finish_foreground(
        &self,
        owner: &Node,
        more: &mut Vec<String>,
    ) -> Result<Outcome, ControllerError> {
        let dependents = {
            let graph = lock(&self.graph);
            if !graph.all_synced(Instant::now()) {
                return Ok(Outcome::Retry);
            }
            graph.dependents_of(&owner.uid)
        };
        if !dependents.iter().any(|d| d.blocks(&owner.uid)) {
            tracing::info!(kind = %owner.resource.kind, object = %owner.name, "no blocking dependents left");
            return self.remove_finalizer(owner, FOREGROUND_FINALIZER).await;
        }
        more.extend(
            dependents
                .iter()
                .filter(|d| !d.deleting)
                .map(|d| d.uid.clone()),
        );
        Ok(Outcome::Done)
    }
}

/// Whether a resource is the core pods (fed from the shared informer).
fn is_pods(resource: &ApiResource) -> bool {
    resource.group.is_empty() && resource.version == "v1" && resource.plural == "pods"
}

/// Feeds the graph from the events of one resource (`meta` picks an event object's
/// metadata), sending the uids to look at again.
async fn feed_graph<T>(
    resource: ApiResource,
    events: impl futures::Stream<Item = Result<Event<T>, watcher::Error>>,
    meta: impl Fn(&T) -> &ObjectMeta,
    graph: Arc<Mutex<Graph>>,
    revisit: UnboundedSender<String>,
) {
    let key = resource_key(&resource);
    let mut listed = Vec::new();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let uids = match event {
            Ok(Event::Init) => {
                listed.clear();
                continue;
            }
            Ok(Event::InitApply(obj)) => {
                listed.extend(Node::from_meta(&resource, meta(&obj)));
                continue;
            }
            Ok(Event::InitDone) => lock(&graph).replace_resource(&key, std::mem::take(&mut listed)),
            Ok(Event::Apply(obj)) => match Node::from_meta(&resource, meta(&obj)) {
                Some(node) => lock(&graph).upsert(node),
                None => continue,
            },
            Ok(Event::Delete(obj)) => match meta(&obj).uid.as_deref() {
                Some(uid) => lock(&graph).remove(&key, uid),
                None => continue,
            },
            Err(error) => {
                tracing::debug!(resource = %key, %error, "garbage collector watch failed");
                continue;
            }
        };
        for uid in uids {
            if revisit.send(uid).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_owners_are_remembered_up_to_the_limit() {
        let mut absent = AbsentOwners::default();
        for i in 0..=ABSENT_OWNERS {
            absent.insert(&format!("uid-{i}"));
        }
        absent.insert("uid-1");
        // The oldest went; the others, and the one inserted twice, stay.
        assert!(!absent.contains("uid-0"));
        assert!(absent.contains("uid-1"));
        assert!(absent.contains(&format!("uid-{ABSENT_OWNERS}")));
        assert_eq!(absent.order.len(), ABSENT_OWNERS);
        assert_eq!(absent.uids.len(), ABSENT_OWNERS);
    }

    fn configmaps() -> ApiResource {
        ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
        }
    }

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("owner-{uid}"),
            uid: uid.into(),
            block_owner_deletion: block.then_some(true),
            controller: None,
        }
    }

    fn node(uid: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            resource: configmaps(),
            namespace: Some("default".into()),
            name: format!("cm-{uid}"),
            uid: uid.into(),
            owners,
            finalizers: Vec::new(),
            deleting: false,
        }
    }

    fn states(s: &[(&str, OwnerState)]) -> Vec<(String, OwnerState)> {
        s.iter().map(|(u, st)| (u.to_string(), *st)).collect()
    }

    #[test]
    fn all_owners_gone_means_background_deletion() {
        let v = verdict(
            &states(&[("a", OwnerState::Dangling), ("b", OwnerState::Dangling)]),
            false,
            &[],
        );
        assert_eq!(v, Verdict::Delete(PropagationPolicy::Background));
    }

    #[test]
    fn a_remaining_owner_keeps_the_object_but_drops_the_dangling_reference() {
        let v = verdict(
            &states(&[("a", OwnerState::Solid), ("b", OwnerState::Dangling)]),
            false,
            &[],
        );
        assert_eq!(v, Verdict::RemoveOwnerReferences(vec!["b".into()]));
        let v = verdict(
            &states(&[("a", OwnerState::Solid), ("b", OwnerState::Waiting)]),
            true,
            &[],
        );
        assert_eq!(v, Verdict::RemoveOwnerReferences(vec!["b".into()]));
        assert_eq!(
            verdict(&states(&[("a", OwnerState::Solid)]), true, &[]),
            Verdict::Keep
        );
    }

    #[test]
    fn a_waiting_owner_deletes_dependents_with_dependents_in_the_foreground() {
        let v = verdict(&states(&[("a", OwnerState::Waiting)]), true, &[]);
        assert_eq!(v, Verdict::Delete(PropagationPolicy::Foreground));
        let v = verdict(&states(&[("a", OwnerState::Waiting)]), false, &[]);
        assert_eq!(v, Verdict::Delete(PropagationPolicy::Background));
    }

    #[test]
    fn the_objects_own_finalizers_choose_the_policy() {
        let v = verdict(
            &states(&[("a", OwnerState::Dangling)]),
            false,
            &[ORPHAN_FINALIZER.into()],
        );
        assert_eq!(v, Verdict::Delete(PropagationPolicy::Orphan));
        let v = verdict(
            &states(&[("a", OwnerState::Dangling)]),
            false,
            &[FOREGROUND_FINALIZER.into()],
        );
        assert_eq!(v, Verdict::Delete(PropagationPolicy::Foreground));
        assert_eq!(verdict(&[], false, &[]), Verdict::Keep);
    }

    #[test]
    fn graph_indexes_dependents_and_reports_what_to_revisit() {
        let mut graph = Graph::default();
        let revisit = graph.upsert(node("child", vec![owner_ref("parent", true)]));
        assert!(revisit.contains(&"child".to_string()) && revisit.contains(&"parent".to_string()));
        graph.upsert(node("parent", vec![]));
        assert_eq!(graph.dependents_of("parent").len(), 1);
        assert!(graph.dependents_of("parent")[0].blocks("parent"));
        // An unchanged object needs nothing.
        assert!(graph
            .upsert(node("child", vec![owner_ref("parent", true)]))
            .is_empty());
        // The owner going into foreground deletion revisits its dependents.
        let mut deleting = node("parent", vec![]);
        deleting.deleting = true;
        deleting.finalizers = vec![FOREGROUND_FINALIZER.into()];
        assert!(deleting.deleting_dependents());
        assert!(graph.upsert(deleting).contains(&"child".to_string()));
        // Losing the reference unlinks the dependent and revisits the owner.
        let revisit = graph.upsert(node("child", vec![]));
        assert!(revisit.contains(&"parent".to_string()));
        assert!(graph.dependents_of("parent").is_empty());
    }

    #[test]
    fn removal_and_relisting_forget_objects() {
        let mut graph = Graph::default();
        let key = resource_key(&configmaps());
        let start = Instant::now();
        graph.set_watched(HashSet::from([key.clone()]), start);
        assert!(!graph.all_synced(start));
        assert!(
            graph.all_synced(start + SYNC_TIMEOUT),
            "a resource that never lists stops blocking"
        );
        graph.upsert(node("parent", vec![]));
        graph.upsert(node("child", vec![owner_ref("parent", false)]));
        // A delete from another resource listing the same uid is ignored.
        assert!(graph.remove("events.k8s.io/v1/events", "parent").is_empty());
        assert_eq!(graph.remove(&key, "parent"), vec!["child".to_string()]);
        assert!(graph.get("parent").is_none());
        let revisit = graph.replace_resource(&key, vec![node("other", vec![])]);
        assert!(
            revisit.contains(&"parent".to_string()),
            "the dropped child revisits its owner"
        );
        assert!(graph.get("child").is_none() && graph.get("other").is_some());
        assert!(graph.all_synced(start));
        graph.set_watched(HashSet::new(), start);
        assert!(!graph.all_synced(start), "nothing watched yet");
        assert!(graph.get("other").is_none());
    }
}
