//! The meter: follows pod status as the agent writes it and keeps one usage record per
//! sandbox interval.
//!
//! The sandbox's lifetime is the `PodReadyToStartContainers` condition: True from the
//! sandbox's start (its lastTransitionTime), False once it is torn down (the agent stops the
//! sandbox of a finished pod and writes the condition False at once); a deleted pod's
//! sandbox ends when the deletion is seen (the agent deletes the pod right after tearing it
//! down). Records are created once per `(uid, start)`, so seeing a transition twice counts it
//! once. A heartbeat refreshes `lastSeen` of the open records of pods seen running; after a
//! restart, open records of pods that no longer exist are closed at their `lastSeen`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use nodeless_serverless::Size;
use time::OffsetDateTime;

use crate::ledger::Ledger;
use crate::record::{UsageRecord, Workload};
use crate::{time_format, MeteringError};

/// How often `lastSeen` of running pods' records is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// The condition that tells whether a pod's sandbox is up.
pub const SANDBOX_CONDITION: &str = "PodReadyToStartContainers";

/// A pod's sandbox, as its status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    /// Up since this time.
    Up(OffsetDateTime),
    /// Down since this time (`None`: unknown, taken as now).
    Down(Option<OffsetDateTime>),
    /// The status does not say (not yet started by an agent).
    Unknown,
}

/// A controller reference: apiVersion, kind, name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    /// The owner's apiVersion.
    pub api_version: String,
    /// The owner's kind.
    pub kind: String,
    /// The owner's name.
    pub name: String,
}

impl From<OwnerRef> for Workload {
    fn from(owner: OwnerRef) -> Self {
        Workload {
            api_version: owner.api_version,
            kind: owner.kind,
            name: owner.name,
        }
    }
}

/// What the meter needs of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The uid.
    pub uid: String,
    /// The provisioned size (`None`: no readable annotation; the pod is not metered).
    pub size: Option<Size>,
    /// The sandbox's state.
    pub sandbox: Sandbox,
    /// The pod's controller reference.
    pub controller: Option<OwnerRef>,
    /// The node the pod is bound to (empty if none).
    pub node: String,
}

impl PodView {
    /// Reads a pod object.
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let size = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(nodeless_serverless::ANNOTATION))
            .and_then(|text| Size::parse(text).ok());
        let condition = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == SANDBOX_CONDITION));
        let sandbox = match condition {
            None => Sandbox::Unknown,
            Some(c) => {
                let since = c.last_transition_time.as_ref().and_then(|t| {
                    OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond()).ok()
                });
                match (c.status.as_str(), since) {
                    ("True", Some(since)) => Sandbox::Up(since),
                    ("True", None) => Sandbox::Unknown,
                    _ => Sandbox::Down(since),
                }
            }
        };
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| OwnerRef {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
            });
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            size,
            sandbox,
            controller,
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
        }
    }
}

/// Looks up the controller of an owner (a ReplicaSet's Deployment, a Job's CronJob).
#[async_trait::async_trait]
pub trait OwnerLookup: Send + Sync {
    /// The controller of `owner` in `namespace`, if it has one (and can be read).
    async fn controller_of(&self, namespace: &str, owner: &OwnerRef) -> Option<OwnerRef>;
}

/// Resolves what a pod counts for: a ReplicaSet's pod for its Deployment, a Job's for its
/// CronJob (when they have one), any other controller for itself, a bare pod for the pod.
pub async fn resolve_workload(pod: &PodView, lookup: &dyn OwnerLookup) -> Workload {
    let Some(owner) = pod.controller.clone() else {
        return Workload::bare_pod(&pod.name);
    };
    let climbs = matches!(
        (owner.api_version.as_str(), owner.kind.as_str()),
        ("apps/v1", "ReplicaSet") | ("batch/v1", "Job")
    );
    if climbs {
        if let Some(parent) = lookup.controller_of(&pod.namespace, &owner).await {
            let expected = if owner.kind == "ReplicaSet" {
                "Deployment"
            } else {
                "CronJob"
            };
            if parent.kind == expected {
                return parent.into();
            }
        }
    }
    owner.into()
}

/// Looks owners up through the API.
pub struct KubeOwnerLookup {
    client: kube::Client,
}

impl KubeOwnerLookup {
    /// A lookup with this client.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

fn controller_ref(
    refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
) -> Option<OwnerRef> {
    refs.into_iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerRef {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
        })
}

#[async_trait::async_trait]
impl OwnerLookup for KubeOwnerLookup {
    async fn controller_of(&self, namespace: &str, owner: &OwnerRef) -> Option<OwnerRef> {
        let result = match owner.kind.as_str() {
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                .get_opt(&owner.name)
                .await
                .map(|rs| rs.and_then(|rs| controller_ref(rs.metadata.owner_references.as_ref()))),
            "Job" => Api::<Job>::namespaced(self.client.clone(), namespace)
                .get_opt(&owner.name)
                .await
                .map(|job| {
                    job.and_then(|job| controller_ref(job.metadata.owner_references.as_ref()))
                }),
            _ => Ok(None),
        };
        match result {
            Ok(parent) => parent,
            Err(error) => {
                tracing::debug!(%error, owner = %owner.name, "looking up a pod owner's controller");
                None
            }
        }
    }
}

/// The meter's view of the records it may still change: the open ones.
pub struct Meter {
    ledger: Ledger,
    /// Open records by key.
    open: HashMap<String, UsageRecord>,
    /// Keys of open records whose pod was seen running since the last (re)list.
    confirmed: HashSet<String>,
    /// Per pod uid, the start of the last interval handled (created or found), so that
    /// repeated observations of a running pod cost no store access.
    handled: HashMap<String, OffsetDateTime>,
    /// Pod uids seen in the current (re)list.
    listed: HashSet<String>,
}

impl Meter {
    /// Loads the open records (after a restart: the intervals that were running).
    pub async fn recover(ledger: Ledger) -> Result<Self, MeteringError> {
        let open = ledger
            .list(None)
            .await?
            .into_iter()
            .filter(UsageRecord::is_open)
            .map(|record| (record.key(), record))
            .collect();
        Ok(Self {
            ledger,
            open,
            confirmed: HashSet::new(),
            handled: HashMap::new(),
            listed: HashSet::new(),
        })
    }

    /// The open records the meter holds.
    pub fn open_records(&self) -> impl Iterator<Item = &UsageRecord> {
        self.open.values()
    }

    /// Applies one observation of a pod.
    pub async fn observe(
        &mut self,
        pod: &PodView,
        lookup: &dyn OwnerLookup,
        now: OffsetDateTime,
    ) -> Result<(), MeteringError> {
        self.listed.insert(pod.uid.clone());
        match pod.sandbox {
            Sandbox::Unknown => Ok(()),
            Sandbox::Down(since) => self.close_pod(&pod.uid, since.unwrap_or(now), false).await,
            Sandbox::Up(since) => {
                // An earlier interval still open: its end was missed; it ended by `since`.
                let earlier: Vec<String> = self
                    .open
                    .iter()
                    .filter(|(_, r)| r.uid == pod.uid && r.start < since)
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in earlier {
                    let end = self
                        .open
                        .get(&key)
                        .map_or(since, |r| r.last_seen.min(since));
                    self.close_key(&key, end).await?;
                }
                let key = crate::record::record_key(&pod.namespace, &pod.uid, since);
                if self.open.contains_key(&key) {
                    self.confirmed.insert(key);
                    return Ok(());
                }
                if self.handled.get(&pod.uid) == Some(&since) {
                    return Ok(());
                }
                let Some(size) = pod.size else {
                    tracing::debug!(pod = %pod.name, namespace = %pod.namespace, "no provisioned size; not metered");
                    return Ok(());
                };
                let workload = resolve_workload(pod, lookup).await;
                let mut record = UsageRecord::open(
                    &pod.namespace,
                    &pod.name,
                    &pod.uid,
                    workload,
                    size,
                    since,
                    now,
                );
                record.node = pod.node.clone();
                let stored = match self.ledger.create(&record).await? {
                    Some(created) => {
                        tracing::debug!(key = %key, "sandbox interval opened");
                        Some(created)
                    }
                    // Seen before (another server, or an earlier run): keep what is stored.
                    None => self.ledger.get(&key).await?.map(|(r, _)| r),
                };
                self.handled.insert(pod.uid.clone(), since);
                if let Some(stored) = stored.filter(UsageRecord::is_open) {
                    self.open.insert(key.clone(), stored);
                    self.confirmed.insert(key);
                }
                Ok(())
            }
        }
    }

    /// The pod is gone: its sandbox ended (at `now`, when the deletion is seen).
    pub async fn pod_deleted(
        &mut self,
        uid: &str,
        now: OffsetDateTime,
    ) -> Result<(), MeteringError> {
        self.handled.remove(uid);
        self.listed.remove(uid);
        self.close_pod(uid, now, false).await
    }

    /// A (re)list begins: the pods it lists are collected until [`Meter::list_done`].
    pub fn list_started(&mut self) {
        self.listed.clear();
        self.confirmed.clear();
    }

    /// A (re)list is complete: open records of pods it did not list are closed at their
    /// `lastSeen` (the pod vanished while nobody was looking).
    pub async fn list_done(&mut self) -> Result<(), MeteringError> {
        let vanished: Vec<String> = self
            .open
            .values()
            .filter(|r| !self.listed.contains(&r.uid))
            .map(|r| r.uid.clone())
            .collect();
        for uid in vanished {
            tracing::info!(pod_uid = %uid, "closing the usage of a pod that is gone at its last sighting");
            self.close_pod(&uid, OffsetDateTime::UNIX_EPOCH, true)
                .await?;
        }
        self.handled.retain(|uid, _| self.listed.contains(uid));
        Ok(())
    }

    /// Refreshes `lastSeen` of the open records of pods seen running.
    pub async fn heartbeat(&mut self, now: OffsetDateTime) -> Result<(), MeteringError> {
        let keys: Vec<String> = self.confirmed.iter().cloned().collect();
        for key in keys {
            let stored = self
                .ledger
                .modify(&key, |r| {
                    if r.is_open() && r.last_seen < now {
                        r.last_seen = now;
                        true
                    } else {
                        false
                    }
                })
                .await?;
            self.remember(&key, stored);
        }
        Ok(())
    }

    /// This process stops: refreshes `lastSeen` of running pods' records and closes those of
    /// the pods on `stopping_node` at `now` (the built-in agent of `nodeless up` stops its
    /// sandboxes with the process; pods of other agents keep running and stay open).
    pub async fn shut_down(
        &mut self,
        stopping_node: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), MeteringError> {
        self.heartbeat(now).await?;
        match stopping_node {
            Some(node) => self.close_node(node, now).await,
            None => Ok(()),
        }
    }

    /// Closes, at `now`, every open record of a pod on `node`: that node's sandboxes have
    /// stopped (its agent stops with this process).
    pub async fn close_node(
        &mut self,
        node: &str,
        now: OffsetDateTime,
    ) -> Result<(), MeteringError> {
        let keys: Vec<String> = self
            .open
            .iter()
            .filter(|(_, r)| r.node == node)
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            self.close_key(&key, now).await?;
        }
        Ok(())
    }

    /// Closes every open record of a pod at `end` (or, with `at_last_seen`, at each
    /// record's `lastSeen`).
    async fn close_pod(
        &mut self,
        uid: &str,
        end: OffsetDateTime,
        at_last_seen: bool,
    ) -> Result<(), MeteringError> {
        let keys: Vec<(String, OffsetDateTime)> = self
            .open
            .iter()
            .filter(|(_, r)| r.uid == uid)
            .map(|(key, r)| (key.clone(), if at_last_seen { r.last_seen } else { end }))
            .collect();
        for (key, end) in keys {
            self.close_key(&key, end).await?;
        }
        Ok(())
    }

    async fn close_key(&mut self, key: &str, end: OffsetDateTime) -> Result<(), MeteringError> {
        let stored = self
            .ledger
            .modify(key, |r| {
                if r.is_open() {
                    r.close(end);
                    true
                } else {
                    false
                }
            })
            .await?;
        tracing::debug!(key = %key, end = %time_format::format(end), "sandbox interval closed");
        self.remember(key, stored);
        Ok(())
    }

    /// Keeps the in-memory copy of a record in step with the store.
    fn remember(&mut self, key: &str, stored: Option<UsageRecord>) {
        match stored.filter(UsageRecord::is_open) {
            Some(record) => {
                self.open.insert(key.to_string(), record);
            }
            None => {
                self.open.remove(key);
                self.confirmed.remove(key);
            }
        }
    }
}

/// Closes, at `now`, the open records of the pods on `node`, read from `ledger`: for a
/// process whose built-in agent stops with it, when the meter itself ran elsewhere or has
/// already stopped (it runs under the controllers' Lease).
pub async fn close_node_records(
    ledger: Ledger,
    node: &str,
    now: OffsetDateTime,
) -> Result<(), MeteringError> {
    Meter::recover(ledger).await?.close_node(node, now).await
}

/// How the meter runs.
#[derive(Debug, Clone, Default)]
pub struct MeterOptions {
    /// The node whose sandboxes stop with this process (`nodeless up`'s built-in agent):
    /// its pods' open records are closed when the meter shuts down.
    pub stopping_node: Option<String>,
}

/// Runs the meter until `shutdown` completes: watches every pod through `client` and keeps
/// the records in `ledger`. On shutdown a last heartbeat makes `lastSeen` current and the
/// records of [`MeterOptions::stopping_node`] are closed.
pub async fn run(
    client: kube::Client,
    ledger: Ledger,
    options: MeterOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut meter = loop {
        match Meter::recover(ledger.clone()).await {
            Ok(meter) => break meter,
            Err(error) => {
                tracing::warn!(%error, "loading open usage records; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = &mut shutdown => return,
                }
            }
        }
    };
    let lookup = KubeOwnerLookup::new(client.clone());
    let mut pods = watcher(Api::<Pod>::all(client), watcher::Config::default()).boxed();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            event = pods.next() => match event {
                Some(Ok(event)) => apply(&mut meter, &lookup, event).await,
                Some(Err(error)) => {
                    tracing::debug!(%error, "pod watch (it retries)");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok(())
                }
                None => return,
            },
            _ = heartbeat.tick() => meter.heartbeat(OffsetDateTime::now_utc()).await,
            _ = &mut shutdown => {
                let now = OffsetDateTime::now_utc();
                if let Err(error) = meter.shut_down(options.stopping_node.as_deref(), now).await {
                    tracing::warn!(%error, "closing usage records at shutdown");
                }
                return;
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "metering");
        }
    }
}

async fn apply(
    meter: &mut Meter,
    lookup: &dyn OwnerLookup,
    event: watcher::Event<Pod>,
) -> Result<(), MeteringError> {
    let now = OffsetDateTime::now_utc();
    match event {
        watcher::Event::Init => {
            meter.list_started();
            Ok(())
        }
        watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
            meter.observe(&PodView::from_pod(&pod), lookup, now).await
        }
        watcher::Event::InitDone => meter.list_done().await,
        watcher::Event::Delete(pod) => {
            let view = PodView::from_pod(&pod);
            // The final status may carry the teardown already.
            meter.observe(&view, lookup, now).await?;
            meter.pod_deleted(&view.uid, now).await
        }
    }
}
