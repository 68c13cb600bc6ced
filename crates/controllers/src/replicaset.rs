//! The ReplicaSet and ReplicationController controller, after upstream's
//! `pkg/controller/replicaset`: one reconciler, generic over [`ReplicaOwner`], that keeps
//! `spec.replicas` active pods matching the selector.
//!
//! - Orphans that match are adopted, owned pods that no longer match are released.
//! - Missing pods are created from the template in slow-start batches (1, 2, 4, …); surplus
//!   pods are deleted in upstream's order of preference ([`deletion_order`]).
//! - [`Expectations`] keep a burst of events from creating or deleting twice: once pods are
//!   asked for, the controller does not create or delete again until its pod watch has shown
//!   them (or they failed, or five minutes passed).
//! - Status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (ready for
//!   `minReadySeconds`), observedGeneration and the `ReplicaFailure` condition.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde::de::DeserializeOwned;
use k8s_openapi::serde::Serialize;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{applier, Action, Config};
use kube::runtime::events::Recorder;

use crate::events::{record, recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use serde_json::{json, Value};

use crate::informer::{Change, Informers};
use crate::pods::{
    self, claim, controller_of, controller_owner_ref, is_pod_active, is_pod_available,
    is_pod_ready, object_key, pod_ready_since, slow_start_batch, Claim, Expectations,
};
use crate::{ControllerError, RETRY_AFTER};

/// The most pods one sync creates or deletes (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// The annotation that orders pods for deletion (lower cost goes first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The most SuccessfulCreate/SuccessfulDelete events one sync records (upstream's event
/// correlator aggregates similar events after 10).
pub const EVENTS_PER_SYNC: usize = 10;
/// The condition type set when pods cannot be created or deleted.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// A kind whose controller keeps a number of pod replicas: ReplicaSet and
/// ReplicationController.
pub trait ReplicaOwner:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// `spec.replicas` (1 when unset).
    fn replicas(&self) -> i32;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// `spec.template`.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// Whether the selector selects these labels.
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool;
    /// The status as it is now, in its JSON form (`replicas`, `readyReplicas`, …).
    fn status_json(&self) -> Value;
    /// The controller's name in the Events it records (upstream's component name).
    fn controller_name() -> &'static str;
}

impl ReplicaOwner for ReplicaSet {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        pods::label_selector_matches(self.spec.as_ref().map(|s| &s.selector), labels)
    }
    fn status_json(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
    fn controller_name() -> &'static str {
        "replicaset-controller"
    }
}

impl ReplicaOwner for ReplicationController {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        // The API server defaults an empty RC selector to the template's labels.
        let selector = self.spec.as_ref().and_then(|s| s.selector.as_ref());
        let template_labels = self
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref());
        match selector.filter(|s| !s.is_empty()).or(template_labels) {
            Some(selector) if !selector.is_empty() => pods::map_selector_matches(selector, labels),
            _ => false,
        }
    }
    fn status_json(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
    fn controller_name() -> &'static str {
        "replication-controller"
    }
}

/// Runs the ReplicaSet controller until its watches end.
pub async fn run_replicasets(client: Client, informers: &Informers) {
    run::<ReplicaSet>(client, informers).await;
}

/// Runs the ReplicationController controller until its watches end.
pub async fn run_replication_controllers(client: Client, informers: &Informers) {
    run::<ReplicationController>(client, informers).await;
}

struct Context<K: 'static + ReplicaOwner> {
    client: Client,
    owners: Store<K>,
    pods: Store<Pod>,
    expectations: Expectations,
    recorder: Recorder,
    /// Owners (by key) a create of which failed in a way that may have applied it (a 504,
    /// a broken connection): their next scale-up counts their pods in a live list, since the
    /// cache may not show such a pod yet, and a second create would be one pod too many.
    uncertain: Mutex<HashSet<String>>,
}

impl<K: ReplicaOwner> Context<K> {
    fn mark_uncertain(&self, key: &str) {
        if let Ok(mut uncertain) = self.uncertain.lock() {
            uncertain.insert(key.to_string());
        }
    }

    fn take_uncertain(&self, key: &str) -> bool {
        self.uncertain
            .lock()
            .map(|mut uncertain| uncertain.remove(key))
            .unwrap_or(false)
    }
}

/// What a pod event says to the expectations, applied once the pod store shows it.
enum Observation {
    Created(String),
    Deleted(String, String),
}

/// Runs the controller of `K`: a reflector of `K`, the shared pods (whose changes also feed
/// the expectations), and kube-rs's applier over both.
pub async fn run<K: ReplicaOwner>(client: Client, informers: &Informers) {
    let (owners, owner_writer) = reflector::store::<K>();
    let context = Arc::new(Context {
        client: client.clone(),
        owners: owners.clone(),
        pods: informers.pods.store(),
        expectations: Expectations::default(),
        recorder: recorder(&client, K::controller_name()),
        uncertain: Mutex::new(HashSet::new()),
    });

    let owner_ctx = context.clone();
    let owner_triggers = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .modify(crate::watch::strip_managed_fields)
        .default_backoff()
        .reflect(owner_writer)
        .map_ok(move |event| {
            if let Event::Delete(owner) = &event {
                let key = object_key(owner.meta());
                owner_ctx.expectations.forget(&key);
                owner_ctx.take_uncertain(&key);
            }
            event
        })
        .touched_objects()
        .map_ok(|owner: K| ObjectRef::from_obj(&owner));

    let pod_ctx = context.clone();
    let mut deferred: Vec<Observation> = Vec::new();
    // The shared store changes before its changes are fed, so a reconcile that finds its
    // expectations met also finds the pods that met them.
    let pod_triggers = informers
        .pods
        .subscribe()
        .map(Ok::<_, watcher::Error>)
        .map_ok(move |change| {
            let observations = observe::<K>(&change);
            let event = change.event;
            match &event {
                Event::Init | Event::InitApply(_) => deferred.extend(observations),
                Event::InitDone => {
                    for o in deferred.drain(..) {
                        apply_observation(&pod_ctx.expectations, o);
                    }
                    let store = &pod_ctx.pods;
                    pod_ctx.expectations.retain_deletions(|key| {
                        key.split_once('/').is_some_and(|(ns, name)| {
                            store.get(&ObjectRef::new(name).within(ns)).is_some()
                        })
                    });
                }
                _ => {
                    for o in observations {
                        apply_observation(&pod_ctx.expectations, o);
                    }
                }
            }
            stream::iter(
                triggers_of_pod_event(&event, &pod_ctx.owners)
                    .into_iter()
                    .map(Ok),
            )
        })
        .try_flatten();

    let queue = stream::select(owner_triggers.boxed(), pod_triggers.boxed());
    applier(
        |owner, ctx| Box::pin(reconcile(owner, ctx)),
        error_policy,
        context,
        owners,
        queue,
        Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(kind = %K::kind(&()), error = %e, "replica reconcile");
        }
    })
    .await;
}

/// The owner of kind `K` that controls this pod, by `namespace/name`.
fn controlling_owner<K: ReplicaOwner>(pod: &Pod) -> Option<String> {
    let reference = controller_of(&pod.metadata)?;
    (reference.kind == K::kind(&()) && reference.api_version == K::api_version(&())).then(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            reference.name
        )
    })
}

fn observe<K: ReplicaOwner>(change: &Change<Pod>) -> Vec<Observation> {
    let (pod, deleted) = match &change.event {
        Event::Apply(pod) | Event::InitApply(pod) => (pod, false),
        Event::Delete(pod) => (pod, true),
        Event::Init | Event::InitDone => return Vec::new(),
    };
    let Some(owner) = controlling_owner::<K>(pod) else {
        return Vec::new();
    };
    let pod_key = object_key(&pod.metadata);
    if deleted || pod.metadata.deletion_timestamp.is_some() {
        return vec![Observation::Deleted(owner, pod_key)];
    }
    let known = change.previous.is_some();
    if known {
        Vec::new()
    } else {
        vec![Observation::Created(owner)]
    }
}

fn apply_observation(expectations: &Expectations, observation: Observation) {
    match observation {
        Observation::Created(owner) => expectations.creation_observed(&owner),
        Observation::Deleted(owner, pod) => expectations.deletion_observed(&owner, &pod),
    }
}

/// The owners to reconcile after a pod event: its controller, or for an orphan every owner in
/// its namespace whose selector matches it.
fn triggers_of_pod_event<K: ReplicaOwner>(
    event: &Event<Arc<Pod>>,
    owners: &Store<K>,
) -> Vec<ObjectRef<K>> {
    let pod = match event {
        Event::Apply(pod) | Event::Delete(pod) => pod,
        _ => return Vec::new(),
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(reference) = controller_of(&pod.metadata) {
        if reference.kind == K::kind(&()) && reference.api_version == K::api_version(&()) {
            return vec![ObjectRef::new(&reference.name).within(&namespace)];
        }
        return Vec::new();
    }
    let labels = pod.labels();
    owners
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(namespace.as_str()) && o.selects(labels))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

fn error_policy<K: ReplicaOwner>(
    owner: Arc<K>,
    error: &ControllerError,
    _ctx: Arc<Context<K>>,
) -> Action {
    tracing::info!(kind = %K::kind(&()), name = %owner.name_any(), %error, "replica sync failed");
    Action::requeue(RETRY_AFTER)
}

async fn reconcile<K: ReplicaOwner>(
    owner: Arc<K>,
    ctx: Arc<Context<K>>,
) -> Result<Action, ControllerError> {
    if ctx.pods.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(RETRY_AFTER));
    }
    let key = object_key(owner.meta());
    let namespace = owner.namespace().unwrap_or_default();
    let uid = owner.uid().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner_ref = controller_owner_ref(owner.as_ref());

    // Claim: keep ours, adopt matching orphans, release ours that no longer match.
    let mut claimed: Vec<Arc<Pod>> = Vec::new();
    let mut adoption_checked = false;
    let candidates = ctx.pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(namespace.as_str()) && is_pod_active(p)
    });
    for pod in candidates {
        match claim(&uid, deleting, owner.selects(pod.labels()), &pod.metadata) {
            Claim::Owned => claimed.push(pod),
            Claim::Adopt => {
                if !adoption_checked {
                    if !can_adopt(&ctx.client, owner.as_ref()).await? {
                        // The cached owner is gone or going (upstream's claim fails the
                        // sync): look again once the cache has caught up.
                        return Ok(Action::requeue(RETRY_AFTER));
                    }
                    adoption_checked = true;
                }
                match pods::adopt(&pod_api, &pod.metadata, &owner_ref).await {
                    Ok(adopted) => {
                        tracing::info!(pod = %pod.name_any(), owner = %key, "adopted pod");
                        claimed.push(Arc::new(adopted));
                    }
                    Err(e) if pods::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Claim::Release => {
                pods::release(&pod_api, &pod.metadata, &uid).await?;
                tracing::info!(pod = %pod.name_any(), owner = %key, "released pod");
            }
            Claim::Ignore => {}
        }
    }

    let mut manage_error = None;
    if !deleting && ctx.expectations.satisfied(&key) {
        if let Err(e) = manage_replicas(owner.as_ref(), &key, &claimed, &pod_api, &ctx).await {
            manage_error = Some(e);
        }
    }

    let now = Timestamp::now();
    let min_ready = owner.min_ready_seconds();
    let status = compute_status(owner.as_ref(), &claimed, manage_error.as_ref(), now);
    if status != owner.status_json() {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({ "status": status });
        match api
            .patch_status(
                &owner.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if pods::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = manage_error {
        return Err(e.into());
    }
    // Nothing but time makes a ready pod available: look again when the first one will be.
    let next_available = claimed
        .iter()
        .filter(|p| !is_pod_available(p, min_ready, now))
        .filter_map(|p| pod_ready_since(p).flatten())
        .map(|since| since.as_second() + i64::from(min_ready) + 1 - now.as_second())
        .min();
    if let Some(seconds) = next_available {
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(seconds.max(1)).unwrap_or(1),
        )));
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Re-reads the owner from the API server (not the cache) before adopting: it must still be
/// the same object and not being deleted (upstream's `RecheckDeletionTimestamp`).
async fn can_adopt<K: ReplicaOwner>(client: &Client, owner: &K) -> Result<bool, ControllerError> {
    let api: Api<K> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    match api.get(&owner.name_any()).await {
        Ok(fresh) => Ok(fresh.uid() == owner.uid() && fresh.meta().deletion_timestamp.is_none()),
        Err(e) if pods::is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How many active pods `owner` controls, by a live list of its namespace (not the cache).
async fn live_pod_count<K: ReplicaOwner>(
    pod_api: &Api<Pod>,
    owner: &K,
) -> Result<usize, kube::Error> {
    let uid = owner.uid().unwrap_or_default();
    let pods = pod_api.list(&Default::default()).await?;
    Ok(pods
        .items
        .iter()
        .filter(|p| is_pod_active(p))
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .count())
}

async fn manage_replicas<K: ReplicaOwner>(
    owner: &K,
    key: &str,
    pods_now: &[Arc<Pod>],
    pod_api: &Api<Pod>,
    ctx: &Context<K>,
) -> Result<(), kube::Error> {
    let want = usize::try_from(owner.replicas()).unwrap_or(0);
    let mut have = pods_now.len();
    if have < want && ctx.take_uncertain(key) {
        match live_pod_count(pod_api, owner).await {
            Ok(live) => have = have.max(live),
            Err(e) => {
                ctx.mark_uncertain(key);
                return Err(e);
            }
        }
    }
    if have < want {
        let Some(template) = owner.template() else {
            return Ok(());
        };
        let missing = (want - have).min(BURST_REPLICAS);
        ctx.expectations.expect_creations(key, missing);
        let pod = pods::pod_from_template(
            template,
            &owner.namespace().unwrap_or_default(),
            &format!("{}-", owner.name_any()),
            controller_owner_ref(owner),
        );
        let params = PostParams::default();
        let recorded = AtomicUsize::new(0);
        let (created, error) = slow_start_batch(missing, 1, || async {
            match pod_api.create(&params, &pod).await {
                Ok(created) => {
                    // Like upstream's event aggregation, a burst records a few events only.
                    if recorded.fetch_add(1, AtomicOrdering::Relaxed) < EVENTS_PER_SYNC {
                        let note = format!("Created pod: {}", created.name_any());
                        record(&ctx.recorder, owner, false, "SuccessfulCreate", note).await;
                    }
                    Ok(())
                }
                Err(e) => {
                    if pods::may_have_been_applied(&e) {
                        ctx.mark_uncertain(key);
                    }
                    let note = format!("Error creating: {e}");
                    record(&ctx.recorder, owner, true, "FailedCreate", note).await;
                    Err(e)
                }
            }
        })
        .await;
        if created < missing {
            ctx.expectations.lower_creations(key, missing - created);
        }
        tracing::info!(owner = %key, created, wanted = missing, "created pods");
        if let Some(e) = error {
            return Err(e);
        }
    } else if have > want {
        let surplus = (have - want).min(BURST_REPLICAS);
        let victims = deletion_order(pods_now, Timestamp::now());
        let victims: Vec<&Pod> = victims.into_iter().take(surplus).collect();
        ctx.expectations
            .expect_deletions(key, victims.iter().map(|p| object_key(&p.metadata)));
        let recorded = &AtomicUsize::new(0);
        let results = futures::future::join_all(victims.iter().map(|pod| async move {
            let name = pod.name_any();
            match pod_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    if recorded.fetch_add(1, AtomicOrdering::Relaxed) < EVENTS_PER_SYNC {
                        let note = format!("Deleted pod: {name}");
                        record(&ctx.recorder, owner, false, "SuccessfulDelete", note).await;
                    }
                    Ok(())
                }
                Err(e) => {
                    ctx.expectations
                        .deletion_observed(key, &object_key(&pod.metadata));
                    if pods::is_not_found(&e) {
                        Ok(())
                    } else {
                        let note = format!("Error deleting: {e}");
                        record(&ctx.recorder, owner, true, "FailedDelete", note).await;
                        Err(e)
                    }
                }
            }
        }))
        .await;
        tracing::info!(owner = %key, deleted = victims.len(), "deleted surplus pods");
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
    }
    Ok(())
}

/// The status the owner should report for its claimed pods, in the JSON form of
/// `ReplicaSetStatus` / `ReplicationControllerStatus`.
fn compute_status<K: ReplicaOwner>(
    owner: &K,
    claimed: &[Arc<Pod>],
    manage_error: Option<&kube::Error>,
    now: Timestamp,
) -> Value {
    let template_labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = claimed
        .iter()
        .filter(|p| pods::map_selector_matches(&template_labels, p.labels()))
        .count();
    let ready = claimed.iter().filter(|p| is_pod_ready(p)).count();
    let available = claimed
        .iter()
        .filter(|p| is_pod_available(p, owner.min_ready_seconds(), now))
        .count();
    let current = owner.status_json();
    let mut conditions: Vec<Value> = current
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_failure = conditions
        .iter()
        .any(|c| c.get("type").and_then(Value::as_str) == Some(REPLICA_FAILURE));
    match manage_error {
        Some(e) if !has_failure => {
            let reason = if owner.replicas() as usize > claimed.len() {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            conditions.push(json!({
                "type": REPLICA_FAILURE,
                "status": "True",
                "lastTransitionTime": Time(now),
                "reason": reason,
                "message": e.to_string(),
            }));
        }
        None if has_failure => {
            conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some(REPLICA_FAILURE))
        }
        _ => {}
    }
    let mut status = serde_json::Map::new();
    status.insert("replicas".into(), json!(claimed.len()));
    let counts = [
        ("fullyLabeledReplicas", fully_labeled),
        ("readyReplicas", ready),
        ("availableReplicas", available),
    ];
    for (field, count) in counts {
        if count > 0 {
            status.insert(field.into(), json!(count));
        }
    }
    if let Some(generation) = owner.meta().generation {
        status.insert("observedGeneration".into(), json!(generation));
    }
    if !conditions.is_empty() {
        status.insert("conditions".into(), Value::Array(conditions));
    }
    let mut status = Value::Object(status);
    // Fields the new status drops are cleared explicitly (merge patch).
    if let (Some(current), Some(new)) = (current.as_object(), status.as_object_mut()) {
        for field in current.keys() {
            if !new.contains_key(field) && field != "conditions" {
                new.insert(field.clone(), json!(0));
            }
        }
        if current.contains_key("conditions") && !new.contains_key("conditions") {
            new.insert("conditions".into(), Value::Null);
        }
    }
    status
}

/// The pods in the order upstream prefers to delete them (`ActivePodsWithRanks`): unscheduled
/// before scheduled; Pending, then Unknown, then Running; not ready before ready; lower
/// `pod-deletion-cost` first; more pods of the set on the same node first; ready more
/// recently first; more restarts first; newer first.
pub fn deletion_order(pods: &[Arc<Pod>], _now: Timestamp) -> Vec<&Pod> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for pod in pods {
        *on_node.entry(node_of(pod)).or_default() += 1;
    }
    let mut ordered: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    ordered.sort_by(|a, b| compare_for_deletion(a, b, &on_node));
    ordered
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.annotations()
        .get(POD_DELETION_COST)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().map(|c| c.restart_count).max())
        .unwrap_or(0)
}

/// `Less` for timestamps where a missing time counts as the newest (upstream's `afterOrZero`).
fn newer_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

fn compare_for_deletion(a: &Pod, b: &Pod, on_node: &HashMap<&str, usize>) -> Ordering {
    let (node_a, node_b) = (node_of(a), node_of(b));
    if node_a != node_b && (node_a.is_empty() || node_b.is_empty()) {
        return if node_a.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    phase_ordinal(a)
        .cmp(&phase_ordinal(b))
        .then_with(|| is_pod_ready(a).cmp(&is_pod_ready(b)))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        .then_with(|| {
            let rank = |p: &Pod| on_node.get(node_of(p)).copied().unwrap_or(0);
            rank(b).cmp(&rank(a))
        })
        .then_with(|| {
            if is_pod_ready(a) && is_pod_ready(b) {
                newer_first(pod_ready_since(a).flatten(), pod_ready_since(b).flatten())
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            newer_first(
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, node: &str, phase: &str, ready: bool, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(Timestamp::from_second(created).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn names(order: Vec<&Pod>) -> Vec<String> {
        order.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn deletion_prefers_unscheduled_pending_unready_newer() {
        let pods = vec![
            pod("running-old", "n1", "Running", true, 100),
            pod("running-new", "n2", "Running", true, 200),
            pod("unready", "n3", "Running", false, 50),
            pod("pending", "n4", "Pending", false, 10),
            pod("unscheduled", "", "Pending", false, 5),
        ];
        assert_eq!(
            names(deletion_order(&pods, Timestamp::now())),
            [
                "unscheduled",
                "pending",
                "unready",
                "running-new",
                "running-old"
            ]
        );
    }

    #[test]
    fn deletion_prefers_doubled_up_nodes_and_low_cost() {
        let mut cheap = (*pod("cheap", "n3", "Running", true, 100)).clone();
        cheap
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(POD_DELETION_COST.into(), "-5".into());
        let pods = vec![
            pod("alone", "n1", "Running", true, 300),
            pod("double-a", "n2", "Running", true, 100),
            pod("double-b", "n2", "Running", true, 100),
            Arc::new(cheap),
        ];
        let order = names(deletion_order(&pods, Timestamp::now()));
        assert_eq!(order[0], "cheap");
        assert!(order[1].starts_with("double"));
        assert!(order[2].starts_with("double"));
        assert_eq!(order[3], "alone");
    }

    fn replica_set(replicas: i32, generation: i64) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "generation": generation,
                         "uid": "u1"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "tier": "front"}}}
            },
            "status": {"replicas": 4, "readyReplicas": 4}
        }))
        .unwrap()
    }

    #[test]
    fn status_counts_labels_readiness_and_failures() {
        let rs = replica_set(3, 7);
        let mut full = (*pod("a", "n1", "Running", true, 1)).clone();
        full.metadata.labels = Some(
            [("app", "web"), ("tier", "front")]
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        );
        let claimed = vec![Arc::new(full), pod("b", "n1", "Running", false, 2)];
        let status = compute_status(&rs, &claimed, None, Timestamp::now());
        assert_eq!(
            status,
            json!({"replicas": 2, "fullyLabeledReplicas": 1, "readyReplicas": 1,
                   "availableReplicas": 1, "observedGeneration": 7})
        );
        let error = kube::Error::Api(
            kube::core::Status::failure("quota", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let failed = compute_status(&rs, &claimed, Some(&error), Timestamp::now());
        let condition = &failed["conditions"][0];
        assert_eq!(condition["type"], REPLICA_FAILURE);
        assert_eq!(condition["reason"], "FailedCreate");
        // A status that loses its counts clears them.
        let empty = compute_status(&rs, &[], None, Timestamp::now());
        assert_eq!(empty["readyReplicas"], 0);
        assert_eq!(empty["replicas"], 0);
    }

    #[test]
    fn rc_selector_defaults_to_template_labels() {
        let rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "rc"},
            "spec": {"template": {"metadata": {"labels": {"app": "x"}}}}
        }))
        .unwrap();
        let labels: BTreeMap<String, String> = [("app".to_owned(), "x".to_owned())].into();
        assert!(rc.selects(&labels));
        assert!(!rc.selects(&BTreeMap::new()));
        assert_eq!(rc.replicas(), 1);
    }
}
