//! The Deployment controller, after upstream's `pkg/controller/deployment`: a Deployment owns
//! ReplicaSets, one per pod template (named `<deployment>-<pod-template-hash>`), and moves
//! replicas from the old ones to the new one.
//!
//! - RollingUpdate within `maxSurge` (rounded up) and `maxUnavailable` (rounded down), or
//!   Recreate (old pods gone before new ones start).
//! - `deployment.kubernetes.io/revision` (and `revision-history` when an old template comes
//!   back, as `kubectl rollout undo` does), `desired-replicas` and `max-replicas` annotations.
//! - Proportional scaling of every active ReplicaSet when the Deployment is scaled mid-rollout.
//! - `spec.paused`, `revisionHistoryLimit` clean-up, `progressDeadlineSeconds` with the
//!   Progressing and Available conditions, and the status counts `kubectl rollout status` reads.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{applier, Action, Config};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{record, recorder};
use crate::pods::{self, claim, controller_of, controller_owner_ref, Claim};
use crate::{ControllerError, RETRY_AFTER};

/// The label that ties a ReplicaSet and its pods to one pod template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision of a Deployment and of its ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The earlier revisions a ReplicaSet had (when a rollback brought its template back).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus surge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The longest `revision-history` annotation kept (upstream's default flag).
const MAX_REVISION_HISTORY_CHARS: usize = 2000;
/// The annotations a Deployment does not pass on to its ReplicaSets.
const ANNOTATIONS_NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Condition types and reasons.
const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const REPLICA_FAILURE: &str = "ReplicaFailure";
const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
const RS_UPDATED: &str = "ReplicaSetUpdated";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";
const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

struct Context {
    client: Client,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    recorder: Recorder,
}

/// Runs the Deployment controller until its watches end.
pub async fn run(client: Client) {
    let (deployments, deployment_writer) = reflector::store::<Deployment>();
    let (replica_sets, rs_writer) = reflector::store::<ReplicaSet>();
    let context = Arc::new(Context {
        client: client.clone(),
        deployments: deployments.clone(),
        replica_sets,
        recorder: recorder(&client, "deployment-controller"),
    });
    let deployment_triggers = watcher(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(crate::watch::strip_managed_fields)
    .default_backoff()
    .reflect(deployment_writer)
    .touched_objects()
    .map_ok(|d: Deployment| ObjectRef::from_obj(&d));
    let rs_ctx = context.clone();
    let rs_triggers = watcher(Api::<ReplicaSet>::all(client), watcher::Config::default())
        .modify(crate::watch::strip_managed_fields)
        .default_backoff()
        .reflect(rs_writer)
        .map_ok(move |event| {
            let refs = match &event {
                Event::Apply(rs) | Event::Delete(rs) => owners_of(rs, &rs_ctx.deployments),
                _ => Vec::new(),
            };
            stream::iter(refs.into_iter().map(Ok))
        })
        .try_flatten();
    let queue = stream::select(deployment_triggers.boxed(), rs_triggers.boxed());
    applier(
        |d, ctx| Box::pin(reconcile(d, ctx)),
        error_policy,
        context,
        deployments,
        queue,
        Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "deployment reconcile");
        }
    })
    .await;
}

/// The Deployments a ReplicaSet event concerns: its controller, or for an orphan every
/// Deployment in its namespace that selects it.
fn owners_of(rs: &ReplicaSet, deployments: &Store<Deployment>) -> Vec<ObjectRef<Deployment>> {
    let namespace = rs.namespace().unwrap_or_default();
    if let Some(reference) = controller_of(&rs.metadata) {
        if reference.kind == "Deployment" && reference.api_version == "apps/v1" {
            return vec![ObjectRef::new(&reference.name).within(&namespace)];
        }
        return Vec::new();
    }
    deployments
        .state()
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|d| pods::label_selector_matches(selector_of(d), rs.labels()))
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

fn error_policy(d: Arc<Deployment>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::info!(deployment = %d.name_any(), %error, "deployment sync failed");
    Action::requeue(RETRY_AFTER)
}

fn selector_of(d: &Deployment) -> Option<&LabelSelector> {
    d.spec.as_ref().map(|s| &s.selector)
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

fn template_of(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

/// FNV-1a, 32 bits.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// Upstream's `rand.SafeEncodeString`: every byte becomes one of 27 consonants and digits, so
/// hashes never spell words.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The `pod-template-hash` of a template, as upstream's `ComputeHash`: FNV-1a over the
/// template (here its canonical JSON, where upstream prints the Go struct), then the
/// collision count as 8 little-endian bytes, in decimal, safe-encoded.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(count) = collision_count {
        let mut buffer = [0u8; 8];
        buffer[..4].copy_from_slice(&(count as u32).to_le_bytes());
        bytes.extend_from_slice(&buffer);
    }
    safe_encode(&fnv1a32(&bytes).to_string())
}

/// Whether two templates are equal once the `pod-template-hash` label is set aside
/// (upstream's `EqualIgnoreHash`).
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    fn strip(t: &PodTemplateSpec) -> PodTemplateSpec {
        let mut t = t.clone();
        let meta = t.metadata.get_or_insert_with(ObjectMeta::default);
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(POD_TEMPLATE_HASH);
            if labels.is_empty() {
                meta.labels = None;
            }
        }
        if meta.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
            meta.annotations = None;
        }
        t
    }
    strip(a) == strip(b)
}

/// An int-or-percent of `total`, percentages rounded up or down (upstream's
/// `GetScaledValueFromIntOrPercent`); a malformed value counts as 0.
pub fn scaled_value(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let Some(percent) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let scaled = percent * i64::from(total);
            let value = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(value).unwrap_or(i32::MAX)
        }
    }
}

/// `(maxSurge, maxUnavailable)` resolved against the desired replicas; both 0 becomes an
/// unavailability of 1 (upstream's `ResolveFenceposts`). Defaults are 25% each.
pub fn resolve_fenceposts(d: &Deployment) -> (i32, i32) {
    let desired = replicas_of(d);
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let default = IntOrString::String("25%".into());
    let surge = rolling
        .and_then(|r| r.max_surge.as_ref())
        .unwrap_or(&default);
    let unavailable = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&default);
    let surge = scaled_value(Some(surge), desired, true);
    let unavailable = scaled_value(Some(unavailable), desired, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// The surge allowed above the desired replicas (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) {
        0
    } else {
        resolve_fenceposts(d).0
    }
}

/// The replicas that may be unavailable (0 for Recreate, at most the desired replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let desired = replicas_of(d);
    if is_recreate(d) || desired == 0 {
        0
    } else {
        resolve_fenceposts(d).1.min(desired)
    }
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Oldest first, names breaking ties (upstream's `ReplicaSetsByCreationTimestamp`).
fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

/// The replicas the new ReplicaSet should have now (upstream's `NewRSNewReplicas`).
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_replicas: i32) -> i32 {
    let desired = replicas_of(d);
    if is_recreate(d) {
        return desired;
    }
    if new_replicas == desired {
        return new_replicas;
    }
    let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let max_total = desired + max_surge(d);
    if current >= max_total {
        return new_replicas;
    }
    let scale_up = max_total - current;
    new_replicas + scale_up.min(desired - new_replicas)
}

/// The share of `to_add` replicas a ReplicaSet gets when a Deployment is scaled mid-rollout
/// (upstream's `GetProportion` with `getReplicaSetFraction`).
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    let replicas = rs_replicas(rs);
    if replicas == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas_of(d) == 0 {
        -replicas
    } else {
        let max_now = replicas_of(d) + max_surge(d);
        let before = rs
            .annotations()
            .get(MAX_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|v| *v > 0)
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if before == 0 {
            0
        } else {
            let size = f64::from(replicas) * f64::from(max_now) / f64::from(before);
            size.round() as i32 - replicas
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn get_condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Some(Time(Timestamp::now()));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: now.clone(),
        last_transition_time: now,
    }
}

/// Upstream's `SetDeploymentCondition`: no change when status and reason are the same; the
/// transition time is kept while the status is.
fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &condition.type_);
    status.conditions.get_or_insert_default().push(condition);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// Status counts summed over the ReplicaSets, with the Available condition (upstream's
/// `calculateStatus`).
fn calculate_status(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| rs_status_replicas(rs)).sum()),
        updated_replicas: Some(new.map_or(0, rs_status_replicas)),
        ready_replicas: Some(all.iter().map(|rs| rs_ready(rs)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: current.terminating_replicas,
    };
    if available >= replicas_of(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "True",
                MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    status
}

/// Whether every replica is updated and available for the current generation.
fn deployment_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let want = replicas_of(d);
    status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether the rollout moved since the last status (upstream's `DeploymentProgressing`).
fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// Seconds until the progress deadline passes (negative once it has), if one is running.
fn seconds_to_deadline(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> Option<i64> {
    let deadline = progress_deadline(d)?;
    let condition = get_condition(status, PROGRESSING)?;
    let reason = condition.reason.as_deref();
    if reason == Some(NEW_RS_AVAILABLE) || reason == Some(TIMED_OUT) {
        return None;
    }
    let from = condition.last_update_time.as_ref()?.0;
    Some(from.as_second() + i64::from(deadline) - now.as_second())
}

/// Status without the timestamps, which churn.
fn comparable(status: &DeploymentStatus) -> serde_json::Value {
    let mut s = status.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_update_time = None;
        c.last_transition_time = None;
    }
    let fields = [
        &mut s.replicas,
        &mut s.updated_replicas,
        &mut s.ready_replicas,
        &mut s.available_replicas,
        &mut s.unavailable_replicas,
    ];
    for f in fields {
        if *f == Some(0) {
            *f = None;
        }
    }
    serde_json::to_value(&s).unwrap_or_default()
}

/// One sync of one Deployment: its ReplicaSets (kept up to date as they are changed) and the
/// status being built.
struct Sync<'a> {
    ctx: &'a Context,
    d: Deployment,
    rs_api: Api<ReplicaSet>,
    /// The status as the API server has it.
    stored_status: DeploymentStatus,
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = d.namespace().unwrap_or_default();
    let mut sync = Sync {
        ctx: &ctx,
        rs_api: Api::namespaced(ctx.client.clone(), &namespace),
        stored_status: d.status.clone().unwrap_or_default(),
        d: (*d).clone(),
    };
    let action = sync.run().await;
    // Whatever happened, conditions and counts reached so far are written.
    let written = sync.write_status().await;
    let action = action?;
    written?;
    Ok(action)
}

impl Sync<'_> {
    async fn run(&mut self) -> Result<Action, ControllerError> {
        let selector = selector_of(&self.d).cloned().unwrap_or_default();
        if selector
            .match_labels
            .as_ref()
            .is_none_or(BTreeMap::is_empty)
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(Vec::is_empty)
        {
            tracing::warn!(deployment = %self.d.name_any(), "selecting every pod is not allowed");
            self.status_mut().observed_generation = self.d.metadata.generation;
            return Ok(Action::await_change());
        }
        let Some(replica_sets) = self.claim_replica_sets().await? else {
            return Ok(Action::requeue(RETRY_AFTER));
        };
        if self.d.metadata.deletion_timestamp.is_some() {
            let (new, old) = self.split(replica_sets);
            self.sync_status(new.as_ref(), &old);
            return Ok(Action::await_change());
        }
        self.check_paused_conditions();
        let (new, old) = self.split(replica_sets);
        if is_paused(&self.d) || self.is_scaling_event(new.as_ref(), &old) {
            return self.scale_only(new, old).await;
        }
        if is_recreate(&self.d) {
            self.rollout_recreate(new, old).await
        } else {
            self.rollout_rolling(new, old).await
        }
    }

    fn status_mut(&mut self) -> &mut DeploymentStatus {
        self.d.status.get_or_insert_default()
    }

    async fn write_status(&mut self) -> Result<(), ControllerError> {
        let status = self.d.status.clone().unwrap_or_default();
        if comparable(&status) == comparable(&self.stored_status)
            && status.conditions == self.stored_status.conditions
        {
            return Ok(());
        }
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            for field in [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
                "unavailableReplicas",
            ] {
                map.entry(field).or_insert(json!(0));
            }
        }
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        match api
            .patch_status(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": value })),
            )
            .await
        {
            Ok(_) => {
                self.stored_status = status;
                Ok(())
            }
            Err(e) if pods::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Adopts matching orphan ReplicaSets, releases owned ones that stopped matching, and
    /// returns the owned ones (`None` when the Deployment changed under the cache).
    async fn claim_replica_sets(&mut self) -> Result<Option<Vec<ReplicaSet>>, ControllerError> {
        let namespace = self.d.namespace().unwrap_or_default();
        let uid = self.d.uid().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let owner = controller_owner_ref(&self.d);
        let mut owned = Vec::new();
        let mut checked = false;
        let candidates = self
            .ctx
            .replica_sets
            .state_filter(|rs| rs.metadata.namespace.as_deref() == Some(namespace.as_str()));
        for rs in candidates {
            let matches = pods::label_selector_matches(selector_of(&self.d), rs.labels());
            match claim(&uid, deleting, matches, &rs.metadata) {
                Claim::Owned => owned.push((*rs).clone()),
                Claim::Adopt => {
                    if !checked {
                        let api: Api<Deployment> =
                            Api::namespaced(self.ctx.client.clone(), &namespace);
                        let fresh = api.get(&self.d.name_any()).await?;
                        if fresh.uid() != self.d.uid()
                            || fresh.metadata.deletion_timestamp.is_some()
                        {
                            // Our cached Deployment is gone or going: no partial claims.
                            return Ok(None);
                        }
                        checked = true;
                    }
                    match pods::adopt(&self.rs_api, &rs.metadata, &owner).await {
                        Ok(adopted) => owned.push(adopted),
                        Err(e) if pods::is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Claim::Release => pods::release(&self.rs_api, &rs.metadata, &uid).await?,
                Claim::Ignore => {}
            }
        }
        Ok(Some(owned))
    }

    /// The ReplicaSet whose template is the Deployment's (the oldest, if several) and the rest.
    fn split(&self, mut replica_sets: Vec<ReplicaSet>) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        replica_sets.sort_by(by_creation);
        let template = template_of(&self.d);
        let position = replica_sets.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignoring_hash(t, &template))
        });
        let new = position.map(|i| replica_sets.remove(i));
        (new, replica_sets)
    }

    fn check_paused_conditions(&mut self) {
        if progress_deadline(&self.d).is_none() {
            return;
        }
        let paused = is_paused(&self.d);
        let reason = self
            .d
            .status
            .as_ref()
            .and_then(|s| get_condition(s, PROGRESSING))
            .and_then(|c| c.reason.clone());
        let condition = if paused && reason.as_deref() != Some(PAUSED) {
            new_condition(
                PROGRESSING,
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
            )
        } else if !paused && reason.as_deref() == Some(PAUSED) {
            new_condition(
                PROGRESSING,
                "Unknown",
                RESUMED,
                "Deployment is resumed".into(),
            )
        } else {
            return;
        };
        set_condition(self.status_mut(), condition);
    }

    /// Whether an active ReplicaSet was last scaled for another `spec.replicas` (upstream's
    /// `isScalingEvent`).
    fn is_scaling_event(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        let desired = replicas_of(&self.d).to_string();
        new.into_iter()
            .chain(old.iter())
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| {
                rs.annotations()
                    .get(DESIRED_REPLICAS)
                    .is_some_and(|v| *v != desired)
            })
    }

    /// Brings the new ReplicaSet's revision, annotations and minReadySeconds up to date, or
    /// creates it (upstream's `getNewReplicaSet`).
    async fn sync_new_rs(
        &mut self,
        new: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, ControllerError> {
        let max_old = old.iter().map(revision_of).max().unwrap_or(0);
        let new_revision = (max_old + 1).to_string();
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if let Some(mut rs) = new {
            let mut annotations = rs.annotations().clone();
            let changed = set_new_rs_annotations(&self.d, &mut annotations, &new_revision, true);
            let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if changed || rs_min_ready.unwrap_or(0) != min_ready.unwrap_or(0) {
                let patch = json!({
                    "metadata": {"annotations": annotations},
                    "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
                });
                rs = self
                    .rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?;
            }
            let revision = rs.annotations().get(REVISION).cloned().unwrap_or_default();
            self.set_deployment_revision(&revision).await?;
            if progress_deadline(&self.d).is_some()
                && self
                    .d
                    .status
                    .as_ref()
                    .and_then(|s| get_condition(s, PROGRESSING))
                    .is_none()
            {
                let message = format!("Found new replica set \"{}\"", rs.name_any());
                set_condition(
                    self.status_mut(),
                    new_condition(PROGRESSING, "True", FOUND_NEW_RS, message),
                );
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = template_of(&self.d);
        let hash = compute_hash(&template, collision_count);
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = selector_of(&self.d).cloned().unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{}", self.d.name_any(), hash);
        let all_old: Vec<&ReplicaSet> = old.iter().collect();
        let replicas = new_rs_new_replicas(&self.d, &all_old, 0);
        let mut annotations = BTreeMap::new();
        set_new_rs_annotations(&self.d, &mut annotations, &new_revision, false);
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![controller_owner_ref(&self.d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: min_ready,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let created = match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => created,
            Err(e) if pods::is_conflict(&e) => {
                let existing = self.rs_api.get(&name).await?;
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignoring_hash(t, &template_of(&self.d)));
                let ours =
                    controller_of(&existing.metadata).map(|r| &r.uid) == self.d.uid().as_ref();
                if same && ours {
                    // Our cache was behind: it is the new ReplicaSet.
                    return Box::pin(self.sync_new_rs(Some(existing), old, false)).await;
                }
                let status = self.status_mut();
                status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                tracing::info!(deployment = %self.d.name_any(), "pod-template-hash collision");
                return Err(e.into());
            }
            Err(e) => {
                if progress_deadline(&self.d).is_some() {
                    let message = format!("Failed to create new replica set \"{name}\": {e}");
                    set_condition(
                        self.status_mut(),
                        new_condition(PROGRESSING, "False", "ReplicaSetCreateError", message),
                    );
                }
                return Err(e.into());
            }
        };
        tracing::info!(deployment = %self.d.name_any(), replica_set = %name, replicas, "created new replica set");
        if replicas > 0 {
            let note = format!("Scaled up replica set {name} from 0 to {replicas}");
            record(
                &self.ctx.recorder,
                &self.d,
                false,
                "ScalingReplicaSet",
                note,
            )
            .await;
        }
        self.set_deployment_revision(&new_revision).await?;
        if progress_deadline(&self.d).is_some() {
            let message = format!("Created new replica set \"{name}\"");
            set_condition(
                self.status_mut(),
                new_condition(PROGRESSING, "True", NEW_RS_CREATED, message),
            );
        }
        Ok(Some(created))
    }

    async fn set_deployment_revision(&mut self, revision: &str) -> Result<(), ControllerError> {
        if revision.is_empty()
            || self.d.annotations().get(REVISION).map(String::as_str) == Some(revision)
        {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        api.patch(
            &self.d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
        self.d
            .annotations_mut()
            .insert(REVISION.into(), revision.into());
        Ok(())
    }

    /// Scales a ReplicaSet (and refreshes its desired/max replicas annotations).
    async fn scale(&self, rs: &mut ReplicaSet, size: i32) -> Result<bool, ControllerError> {
        let desired = replicas_of(&self.d).to_string();
        let max = (replicas_of(&self.d) + max_surge(&self.d)).to_string();
        let annotations = rs.annotations();
        let annotations_stale = annotations.get(DESIRED_REPLICAS) != Some(&desired)
            || annotations.get(MAX_REPLICAS) != Some(&max);
        let size_changed = rs_replicas(rs) != size;
        if !size_changed && !annotations_stale {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
            "spec": {"replicas": size},
        });
        let from = rs_replicas(rs);
        *rs = self
            .rs_api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        if size_changed {
            let direction = if size > from { "up" } else { "down" };
            let note = format!(
                "Scaled {direction} replica set {} from {from} to {size}",
                rs.name_any()
            );
            tracing::info!(deployment = %self.d.name_any(), "{note}");
            record(
                &self.ctx.recorder,
                &self.d,
                false,
                "ScalingReplicaSet",
                note,
            )
            .await;
        }
        Ok(size_changed)
    }

    /// Scaling without a rollout: a paused Deployment, or `spec.replicas` changed (upstream's
    /// `sync` and `scale`), with proportional scaling of every active ReplicaSet.
    async fn scale_only(
        &mut self,
        new: Option<ReplicaSet>,
        mut old: Vec<ReplicaSet>,
    ) -> Result<Action, ControllerError> {
        let mut new = self.sync_new_rs(new, &old, false).await?;
        self.proportional_scale(new.as_mut(), &mut old).await?;
        if is_paused(&self.d) {
            self.cleanup(&old).await?;
        }
        self.sync_status(new.as_ref(), &old);
        Ok(Action::requeue(Duration::from_secs(300)))
    }

    async fn proportional_scale(
        &mut self,
        mut new: Option<&mut ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> Result<(), ControllerError> {
        let desired = replicas_of(&self.d);
        // One active (or the latest) ReplicaSet simply takes the Deployment's size.
        let active = new.iter().filter(|rs| rs_replicas(rs) > 0).count()
            + old.iter().filter(|rs| rs_replicas(rs) > 0).count();
        if active <= 1 {
            let target: Option<&mut ReplicaSet> = if active == 0 {
                match new {
                    Some(rs) => Some(rs),
                    None => old.iter_mut().max_by(|a, b| by_creation(a, b)),
                }
            } else if new.as_ref().is_some_and(|rs| rs_replicas(rs) > 0) {
                new
            } else {
                old.iter_mut().find(|rs| rs_replicas(rs) > 0)
            };
            if let Some(rs) = target {
                if rs_replicas(rs) != desired {
                    self.scale(rs, desired).await?;
                }
            }
            return Ok(());
        }
        // A saturated new ReplicaSet: the old ones go to zero.
        if let Some(rs) = new.as_deref() {
            let saturated = rs.annotations().get(DESIRED_REPLICAS) == Some(&desired.to_string())
                && rs_replicas(rs) == desired
                && rs_available(rs) == desired;
            if saturated {
                for rs in old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
                    self.scale(rs, 0).await?;
                }
                return Ok(());
            }
        }
        if is_recreate(&self.d) {
            return Ok(());
        }
        let mut all: Vec<&mut ReplicaSet> = new
            .take()
            .into_iter()
            .chain(old.iter_mut())
            .filter(|rs| rs_replicas(rs) > 0)
            .collect();
        let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
        let allowed = if desired > 0 {
            desired + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - current;
        if to_add > 0 {
            // Larger first, newer first among equals.
            all.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| by_creation(b, a))
            });
        } else {
            // Larger first, older first among equals.
            all.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| by_creation(a, b))
            });
        }
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for rs in &all {
            let share = if to_add != 0 {
                proportion(rs, &self.d, to_add, added)
            } else {
                0
            };
            added += share;
            sizes.push(rs_replicas(rs) + share);
        }
        if let Some(first) = sizes.first_mut() {
            if to_add != 0 {
                *first = (*first + to_add - added).max(0);
            }
        }
        for (rs, size) in all.into_iter().zip(sizes) {
            self.scale(rs, size).await?;
        }
        Ok(())
    }

    async fn rollout_rolling(
        &mut self,
        new: Option<ReplicaSet>,
        mut old: Vec<ReplicaSet>,
    ) -> Result<Action, ControllerError> {
        let mut new = self.sync_new_rs(new, &old, true).await?;
        let Some(new_rs) = new.as_mut() else {
            return Ok(Action::requeue(RETRY_AFTER));
        };
        // Scale the new ReplicaSet up (or down to the desired size).
        let desired = replicas_of(&self.d);
        let new_replicas = rs_replicas(new_rs);
        if new_replicas != desired {
            let target = if new_replicas > desired {
                desired
            } else {
                let all: Vec<&ReplicaSet> = old.iter().chain(std::iter::once(&*new_rs)).collect();
                new_rs_new_replicas(&self.d, &all, new_replicas)
            };
            if self.scale(new_rs, target).await? {
                return Ok(self.sync_rollout_status(new.as_ref(), &old));
            }
        }
        if self.scale_down_old(new_rs, &mut old).await? {
            return Ok(self.sync_rollout_status(new.as_ref(), &old));
        }
        let status = calculate_status(&self.d, &all_of(new.as_ref(), &old), new.as_ref());
        if deployment_complete(&self.d, &status) {
            self.cleanup(&old).await?;
        }
        Ok(self.sync_rollout_status(new.as_ref(), &old))
    }

    /// Upstream's `reconcileOldReplicaSets`: first unhealthy old replicas, then healthy ones
    /// as far as `maxUnavailable` allows.
    async fn scale_down_old(
        &self,
        new: &ReplicaSet,
        old: &mut [ReplicaSet],
    ) -> Result<bool, ControllerError> {
        let old_count: i32 = old.iter().map(rs_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = old_count + rs_replicas(new);
        let min_available = replicas_of(&self.d) - max_unavailable(&self.d);
        let new_unavailable = rs_replicas(new) - rs_available(new);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        old.sort_by(by_creation);
        // Unhealthy replicas first: they do not count towards availability.
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let unavailable = rs_replicas(rs) - rs_available(rs);
            if rs_replicas(rs) == 0 || unavailable <= 0 {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(unavailable);
            let size = rs_replicas(rs) - down;
            self.scale(rs, size).await?;
            cleaned += down;
        }
        // Then available ones, keeping minAvailable.
        let available: i32 = old.iter().map(rs_available).sum::<i32>() + rs_available(new);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                if rs_replicas(rs) == 0 {
                    continue;
                }
                let down = rs_replicas(rs).min(total - scaled);
                let size = rs_replicas(rs) - down;
                self.scale(rs, size).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(
        &mut self,
        new: Option<ReplicaSet>,
        mut old: Vec<ReplicaSet>,
    ) -> Result<Action, ControllerError> {
        let mut new = self.sync_new_rs(new, &old, false).await?;
        let mut scaled = false;
        for rs in old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
            scaled |= self.scale(rs, 0).await?;
        }
        if scaled {
            return Ok(self.sync_rollout_status(new.as_ref(), &old));
        }
        if self.old_pods_running(&old).await? {
            self.sync_rollout_status(new.as_ref(), &old);
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        if new.is_none() {
            new = self.sync_new_rs(None, &old, true).await?;
        }
        if let Some(rs) = new.as_mut() {
            let desired = replicas_of(&self.d);
            if rs_replicas(rs) != desired {
                self.scale(rs, desired).await?;
            }
        }
        let status = calculate_status(&self.d, &all_of(new.as_ref(), &old), new.as_ref());
        if deployment_complete(&self.d, &status) {
            self.cleanup(&old).await?;
        }
        Ok(self.sync_rollout_status(new.as_ref(), &old))
    }

    /// Whether pods of the old ReplicaSets still run (Recreate waits for them to go).
    async fn old_pods_running(&self, old: &[ReplicaSet]) -> Result<bool, ControllerError> {
        if old.iter().any(|rs| rs_status_replicas(rs) > 0) {
            return Ok(true);
        }
        let old_uids: Vec<String> = old.iter().filter_map(|rs| rs.uid()).collect();
        if old_uids.is_empty() {
            return Ok(false);
        }
        let pods: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        let list = pods.list(&ListParams::default()).await?;
        Ok(list.items.iter().any(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Failed") | Some("Succeeded"))
                && controller_of(&pod.metadata).is_some_and(|r| old_uids.contains(&r.uid))
        }))
    }

    /// Deletes the oldest old ReplicaSets beyond `revisionHistoryLimit` (upstream's
    /// `cleanupDeployment`).
    async fn cleanup(&self, old: &[ReplicaSet]) -> Result<(), ControllerError> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| {
                rs.metadata.deletion_timestamp.is_none()
                    && rs_replicas(rs) == 0
                    && rs_status_replicas(rs) == 0
                    && rs.metadata.generation.unwrap_or(0)
                        <= rs
                            .status
                            .as_ref()
                            .and_then(|s| s.observed_generation)
                            .unwrap_or(0)
            })
            .collect();
        let surplus = cleanable
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        if surplus == 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            revision_of(a)
                .cmp(&revision_of(b))
                .then_with(|| by_creation(a, b))
        });
        for rs in cleanable.into_iter().take(surplus) {
            tracing::info!(deployment = %self.d.name_any(), replica_set = %rs.name_any(), "deleting old replica set");
            match self
                .rs_api
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if pods::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Counts and the Available condition only (upstream's `syncDeploymentStatus`).
    fn sync_status(&mut self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) {
        let status = calculate_status(&self.d, &all_of(new, old), new);
        self.d.status = Some(status);
    }

    /// Counts and both conditions (upstream's `syncRolloutStatus`); returns when to look again.
    fn sync_rollout_status(&mut self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Action {
        let mut status = calculate_status(&self.d, &all_of(new, old), new);
        let current = get_condition(&status, PROGRESSING).cloned();
        if progress_deadline(&self.d).is_none() {
            remove_condition(&mut status, PROGRESSING);
        } else {
            let complete = status.replicas == status.updated_replicas
                && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
            let name = new.map(|rs| rs.name_any()).unwrap_or_default();
            if !complete {
                if deployment_complete(&self.d, &status) {
                    let message = format!("ReplicaSet \"{name}\" has successfully progressed.");
                    set_condition(
                        &mut status,
                        new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message),
                    );
                } else if deployment_progressing(&self.d, &status) {
                    let message = format!("ReplicaSet \"{name}\" is progressing.");
                    let mut condition = new_condition(PROGRESSING, "True", RS_UPDATED, message);
                    if let Some(current) = &current {
                        if current.status == "True" {
                            condition.last_transition_time = current.last_transition_time.clone();
                        }
                    }
                    remove_condition(&mut status, PROGRESSING);
                    status.conditions.get_or_insert_default().push(condition);
                } else if seconds_to_deadline(&self.d, &status, Timestamp::now())
                    .is_some_and(|s| s < 0)
                {
                    let message = format!("ReplicaSet \"{name}\" has timed out progressing.");
                    set_condition(
                        &mut status,
                        new_condition(PROGRESSING, "False", TIMED_OUT, message),
                    );
                }
            }
        }
        let failure = new.into_iter().chain(old.iter()).find_map(|rs| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == REPLICA_FAILURE)
                .cloned()
        });
        match failure {
            Some(c) => set_condition(
                &mut status,
                new_condition(
                    REPLICA_FAILURE,
                    &c.status,
                    c.reason.as_deref().unwrap_or_default(),
                    c.message.unwrap_or_default(),
                ),
            ),
            None => remove_condition(&mut status, REPLICA_FAILURE),
        }
        let wait = seconds_to_deadline(&self.d, &status, Timestamp::now());
        self.d.status = Some(status);
        match wait {
            // Look again when the deadline passes (upstream's `requeueStuckDeployment`).
            Some(seconds) => Action::requeue(Duration::from_secs(
                u64::try_from(seconds.max(0)).unwrap_or(0) + 1,
            )),
            None => Action::requeue(Duration::from_secs(300)),
        }
    }
}

fn all_of<'a>(new: Option<&'a ReplicaSet>, old: &'a [ReplicaSet]) -> Vec<&'a ReplicaSet> {
    old.iter().chain(new).collect()
}

/// Upstream's `SetNewReplicaSetAnnotations`: the Deployment's annotations (minus its own),
/// the revision (remembering the one it replaces in `revision-history`), and for a new
/// ReplicaSet the desired/max replicas. Returns whether anything changed.
fn set_new_rs_annotations(
    d: &Deployment,
    annotations: &mut BTreeMap<String, String>,
    new_revision: &str,
    exists: bool,
) -> bool {
    let mut changed = false;
    for (key, value) in d.annotations() {
        if ANNOTATIONS_NOT_COPIED.contains(&key.as_str()) || annotations.get(key) == Some(value) {
            continue;
        }
        annotations.insert(key.clone(), value.clone());
        changed = true;
    }
    let old_revision = annotations.get(REVISION).cloned();
    let old_number: i64 = match old_revision.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return changed,
    };
    let new_number: i64 = new_revision.parse().unwrap_or(0);
    if old_number < new_number {
        annotations.insert(REVISION.into(), new_revision.into());
        changed = true;
        if let Some(old_revision) = old_revision {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            if history.is_empty() {
                annotations.insert(REVISION_HISTORY.into(), old_revision);
            } else {
                let mut revisions: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old_revision.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < revisions.len() {
                    total -= revisions[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    revisions = revisions.split_off(start);
                    revisions.push(&old_revision);
                    let joined = revisions.join(",");
                    annotations.insert(REVISION_HISTORY.into(), joined);
                }
            }
        }
    }
    if !exists {
        let desired = replicas_of(d);
        annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
        annotations.insert(MAX_REPLICAS.into(), (desired + max_surge(d)).to_string());
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
            }
        }))
        .unwrap()
    }

    fn rs(name: &str, replicas: i32, max_replicas: Option<i32>, created: i64) -> ReplicaSet {
        let mut rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": Time(Timestamp::from_second(created).unwrap())},
            "spec": {"replicas": replicas, "selector": {}}
        }))
        .unwrap();
        if let Some(max) = max_replicas {
            rs.annotations_mut()
                .insert(MAX_REPLICAS.into(), max.to_string());
        }
        rs
    }

    #[test]
    fn fnv_and_safe_encoding_match_known_values() {
        // FNV-1a test vectors.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
        // Upstream's alphabet: '0' is byte 48, 48 % 27 = 21 -> '4'.
        assert_eq!(safe_encode("0"), "4");
        assert_eq!(safe_encode("1234"), "5678");
    }

    #[test]
    fn hash_changes_with_template_and_collision_count() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(0));
        let template = template_of(&d);
        let h = compute_hash(&template, None);
        assert!(h.len() >= 6 && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_eq!(h, compute_hash(&template, None));
        assert_ne!(h, compute_hash(&template, Some(1)));
        let mut other = template.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("nginx".into());
        assert_ne!(h, compute_hash(&other, None));
        let mut labelled = template.clone();
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), h);
        assert!(equal_ignoring_hash(&labelled, &template));
        assert!(!equal_ignoring_hash(&other, &template));
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        let d = deployment(10, pct("25%"), pct("25%"));
        assert_eq!(resolve_fenceposts(&d), (3, 2));
        let d = deployment(3, pct("10%"), pct("10%"));
        assert_eq!(resolve_fenceposts(&d), (1, 0));
        let d = deployment(3, IntOrString::Int(0), IntOrString::Int(0));
        assert_eq!(resolve_fenceposts(&d), (0, 1));
        let d = deployment(2, IntOrString::Int(0), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 2);
        assert_eq!(scaled_value(Some(&pct("bad")), 10, true), 0);
    }

    #[test]
    fn new_rs_grows_within_the_surge() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(0));
        let old = rs("old", 3, None, 1);
        assert_eq!(new_rs_new_replicas(&d, &[&old], 0), 1);
        let old2 = rs("old", 2, None, 1);
        let new = rs("new", 1, None, 2);
        assert_eq!(new_rs_new_replicas(&d, &[&old2, &new], 1), 2);
        let old4 = rs("old", 3, None, 1);
        assert_eq!(new_rs_new_replicas(&d, &[&old4, &new], 1), 1);
    }

    #[test]
    fn proportions_follow_the_max_replicas_annotation() {
        // Scaling 10 -> 15 (surge 3 -> 18 max) with RSs of 6 and 5 annotated max 13.
        let mut d = deployment(15, IntOrString::String("25%".into()), IntOrString::Int(0));
        d.status = Some(DeploymentStatus {
            replicas: Some(11),
            ..Default::default()
        });
        let a = rs("a", 6, Some(13), 1);
        let b = rs("b", 5, Some(13), 2);
        let max_now = 15 + 4; // 25% of 15 rounded up is 4.
        assert_eq!(max_surge(&d), 4);
        let to_add = max_now - 11;
        let pa = proportion(&a, &d, to_add, 0);
        assert_eq!(pa, (6.0_f64 * 19.0 / 13.0).round() as i32 - 6);
        let pb = proportion(&b, &d, to_add, pa);
        assert_eq!(
            pb,
            ((5.0_f64 * 19.0 / 13.0).round() as i32 - 5).min(to_add - pa)
        );
        // Scaling to zero takes everything away.
        let zero = deployment(0, IntOrString::Int(1), IntOrString::Int(0));
        assert_eq!(proportion(&a, &zero, -11, 0), -6);
    }

    #[test]
    fn annotations_record_revision_history() {
        let mut d = deployment(3, IntOrString::Int(1), IntOrString::Int(0));
        d.annotations_mut().insert("team".into(), "a".into());
        d.annotations_mut().insert(REVISION.into(), "2".into());
        let mut fresh = BTreeMap::new();
        assert!(set_new_rs_annotations(&d, &mut fresh, "1", false));
        assert_eq!(fresh.get(REVISION).map(String::as_str), Some("1"));
        assert_eq!(fresh.get("team").map(String::as_str), Some("a"));
        assert_eq!(fresh.get(DESIRED_REPLICAS).map(String::as_str), Some("3"));
        assert_eq!(fresh.get(MAX_REPLICAS).map(String::as_str), Some("4"));
        assert!(!fresh.contains_key(REVISION_HISTORY));
        // The template of revision 1 comes back as revision 3, then 5.
        assert!(set_new_rs_annotations(&d, &mut fresh, "3", true));
        assert_eq!(fresh.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(fresh.get(REVISION_HISTORY).map(String::as_str), Some("1"));
        assert!(set_new_rs_annotations(&d, &mut fresh, "5", true));
        assert_eq!(fresh.get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
        // Nothing to do the second time.
        assert!(!set_new_rs_annotations(&d, &mut fresh, "5", true));
    }

    #[test]
    fn conditions_keep_transition_time_and_skip_same_reason() {
        let mut status = DeploymentStatus::default();
        let mut first = new_condition(PROGRESSING, "True", NEW_RS_CREATED, "a".into());
        first.last_transition_time = Some(Time(Timestamp::from_second(10).unwrap()));
        set_condition(&mut status, first);
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "True", NEW_RS_CREATED, "b".into()),
        );
        assert_eq!(
            get_condition(&status, PROGRESSING)
                .unwrap()
                .message
                .as_deref(),
            Some("a")
        );
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "True", RS_UPDATED, "c".into()),
        );
        let c = get_condition(&status, PROGRESSING).unwrap();
        assert_eq!(c.reason.as_deref(), Some(RS_UPDATED));
        assert_eq!(c.last_transition_time.as_ref().unwrap().0.as_second(), 10);
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn status_sums_replica_sets_and_sets_availability() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(0));
        let mut old = rs("old", 1, None, 1);
        old.status = serde_json::from_value(
            json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}),
        )
        .unwrap();
        let mut new = rs("new", 3, None, 2);
        new.status = serde_json::from_value(
            json!({"replicas": 3, "readyReplicas": 2, "availableReplicas": 2}),
        )
        .unwrap();
        let status = calculate_status(&d, &[&old, &new], Some(&new));
        assert_eq!(status.replicas, Some(4));
        assert_eq!(status.updated_replicas, Some(3));
        assert_eq!(status.ready_replicas, Some(3));
        assert_eq!(status.available_replicas, Some(3));
        assert_eq!(status.unavailable_replicas, Some(1));
        assert_eq!(get_condition(&status, AVAILABLE).unwrap().status, "True");
        assert!(!deployment_complete(&d, &status));
        let status = calculate_status(&d, &[&old], None);
        assert_eq!(
            get_condition(&status, AVAILABLE).unwrap().reason.as_deref(),
            Some(MIN_UNAVAILABLE)
        );
    }
}
