//! The StatefulSet controller, after upstream's `pkg/controller/statefulset`.
//!
//! - Pods have stable identities: `<set>-<ordinal>` for ordinals from `spec.ordinals.start`,
//!   with the `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index` labels,
//!   `spec.hostname` = the pod's name and `spec.subdomain` = `spec.serviceName`.
//! - OrderedReady (the default) creates pods one at a time in ordinal order, each only once its
//!   predecessors are Running and Ready (and available for `minReadySeconds`), and removes them
//!   from the highest ordinal down, one at a time. Parallel creates and deletes them all at once.
//! - Every template the set has had is kept as a ControllerRevision `<set>-<hash>` whose data is
//!   upstream's patch (`{"spec":{"template":{…,"$patch":"replace"}}}`, keys sorted) and whose
//!   hash is upstream's (FNV-32 of the data and the collision count, safely encoded). Pods carry
//!   their revision in the `controller-revision-hash` label. Unused revisions beyond
//!   `revisionHistoryLimit` are deleted.
//! - RollingUpdate replaces pods from the highest ordinal down to `partition`, one at a time or
//!   up to `maxUnavailable` at a time; OnDelete only gives recreated pods the new template.
//! - volumeClaimTemplates give each pod its PersistentVolumeClaims `<claim>-<set>-<ordinal>`
//!   (labelled with the selector's matchLabels), created before the pod and kept when the pod
//!   goes. `persistentVolumeClaimRetentionPolicy` is applied through owner references, so that
//!   the garbage collector removes a claim with its set (`whenDeleted: Delete`) or with its
//!   scaled-down pod (`whenScaled: Delete`).
//! - Pods that fail or succeed are deleted and recreated under the same name.
//! - Events as upstream's: `SuccessfulCreate` / `FailedCreate` for pods and claims,
//!   `SuccessfulDelete` / `FailedDelete` for pods.
//!
//! Claims are not waited for: with no volume provisioner yet they stay Pending, and pods are
//! created (and run on the agent) while their claims are unbound.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{applier, Action, Config};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::events::{record, recorder};
use crate::informer::{Change, Informers};
use crate::pods::{
    self, claim, controller_of, controller_owner_ref, is_pod_available, is_pod_ready, object_key,
    slow_start_batch, Claim, Expectations,
};
use crate::{ControllerError, RETRY_AFTER};

/// The label that carries a pod's name (upstream's `StatefulSetPodNameLabel`).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label that carries a pod's ordinal (upstream's `PodIndexLabel`).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label that carries the name of the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The controller's name in the Events it records.
pub const CONTROLLER_NAME: &str = "statefulset-controller";
/// The most pods a Parallel sync creates or deletes at once (upstream's `MaxBatchSize`).
pub const MAX_BATCH_SIZE: usize = 500;
/// Upstream's limit on the set-name prefix of a revision name.
const REVISION_PREFIX_LIMIT: usize = 223;
/// The alphabet of upstream's `rand.SafeEncodeString` (no vowels, no confusable digits).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

// ---------------------------------------------------------------------------------------------
// Identities

/// The name of the pod with `ordinal` in the set `set`: `<set>-<ordinal>`.
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The set name and ordinal a pod name encodes (upstream's `getParentNameAndOrdinal`, which
/// matches `(.*)-([0-9]+)$`); `None` when the name has no ordinal.
pub fn parent_and_ordinal(pod_name: &str) -> Option<(&str, i32)> {
    let (parent, ordinal) = pod_name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ordinal.parse().ok()?))
}

/// The name of the claim made from the template `claim` for the pod with `ordinal`:
/// `<claim>-<set>-<ordinal>`.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

fn wanted_replicas(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// Whether `ordinal` lies in `[start, start + replicas)`.
fn in_ordinal_range(set: &StatefulSet, ordinal: i32) -> bool {
    let start = start_ordinal(set);
    ordinal >= start && ordinal < start.saturating_add(wanted_replicas(set))
}

fn ordinal_of(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref().unwrap_or_default()).map(|(_, o)| o)
}

/// Whether the pod's name says it belongs to the set (upstream's `isMemberOf`).
fn is_member_of(set: &StatefulSet, pod: &Pod) -> bool {
    parent_and_ordinal(pod.metadata.name.as_deref().unwrap_or_default())
        .is_some_and(|(parent, _)| Some(parent) == set.metadata.name.as_deref())
}

fn selects(set: &StatefulSet, labels: &BTreeMap<String, String>) -> bool {
    pods::label_selector_matches(set.spec.as_ref().map(|s| &s.selector), labels)
}

fn allows_burst(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        == Some("Parallel")
}

fn is_on_delete(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete")
}

fn partition(set: &StatefulSet) -> Option<i32> {
    let strategy = set.spec.as_ref()?.update_strategy.as_ref()?;
    let rolling = strategy.rolling_update.as_ref()?;
    Some(rolling.partition.unwrap_or(0))
}

fn explicit_max_unavailable(set: &StatefulSet) -> Option<&IntOrString> {
    set.spec
        .as_ref()?
        .update_strategy
        .as_ref()?
        .rolling_update
        .as_ref()?
        .max_unavailable
        .as_ref()
}

/// `maxUnavailable` as a number of pods for `replicas` (upstream's
/// `getStatefulSetMaxUnavailable`): percentages round down, and the result is at least 1.
pub fn max_unavailable(value: Option<&IntOrString>, replicas: i32) -> i32 {
    let number = match value {
        None => 1,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => match s.strip_suffix('%').map(str::parse::<i64>) {
            Some(Ok(percent)) => {
                i32::try_from(percent.saturating_mul(i64::from(replicas)) / 100).unwrap_or(1)
            }
            _ => s.parse().unwrap_or(1),
        },
    };
    number.max(1)
}

// ---------------------------------------------------------------------------------------------
// Pod health

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_pod_ready(pod)
}

fn is_running_and_available(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    phase(pod) == "Running" && is_pod_available(pod, min_ready, now)
}

/// How long until a ready pod counts as available (at least 1 s; availability needs
/// `minReadySeconds` whole seconds past the Ready transition).
fn seconds_until_available(pod: &Pod, min_ready: i32, now: Timestamp) -> u64 {
    let since = pods::pod_ready_since(pod).flatten();
    let due = since.map_or(i64::from(min_ready), |t| {
        t.as_second() + i64::from(min_ready) + 1 - now.as_second()
    });
    u64::try_from(due.clamp(1, i64::from(min_ready.max(0)) + 1)).unwrap_or(1)
}

/// Upstream's `isUnavailable`; a pod not created yet is unavailable.
fn is_unavailable(pod: Option<&Pod>, min_ready: i32, now: Timestamp) -> bool {
    pod.is_none_or(|p| !is_running_and_available(p, min_ready, now) || is_terminating(p))
}

fn pod_revision(pod: &Pod) -> &str {
    pod.labels()
        .get(REVISION_LABEL)
        .map(String::as_str)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Revisions

/// A copy of `value` whose object keys are sorted at every level (as Go's `json.Marshal` of a
/// map writes them).
fn sorted_json(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted_json(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_json).collect()),
        other => other.clone(),
    }
}

/// The data of the set's revision (upstream's `getPatch`): the template, marked
/// `"$patch": "replace"`, under `spec.template`, with sorted keys. As in upstream's encoding,
/// the template's metadata carries `creationTimestamp: null`.
pub fn revision_data(set: &StatefulSet) -> Value {
    let template = set
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let mut template = match template {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let metadata = template.entry("metadata").or_insert_with(|| json!({}));
    if let Some(metadata) = metadata.as_object_mut() {
        metadata.entry("creationTimestamp").or_insert(Value::Null);
    }
    template.insert("$patch".into(), json!("replace"));
    sorted_json(&json!({ "spec": { "template": Value::Object(template) } }))
}

/// Upstream's `HashControllerRevision`: FNV-1 (32 bit) over the data's JSON and the collision
/// count in decimal, written with the safe alphabet.
pub fn revision_hash(data: &Value, collision_count: i32) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    bytes.extend_from_slice(collision_count.to_string().as_bytes());
    safe_encode(&fnv1_32(&bytes).to_string())
}

/// FNV-1, 32 bit (Go's `hash/fnv.New32`).
fn fnv1_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, byte| {
        hash.wrapping_mul(0x0100_0193) ^ u32::from(*byte)
    })
}

/// Upstream's `rand.SafeEncodeString`: every byte mapped into the safe alphabet.
fn safe_encode(text: &str) -> String {
    text.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The name of a revision of `set` with `hash` (upstream's `ControllerRevisionName`).
pub fn revision_name(set: &str, hash: &str) -> String {
    let prefix: String = set.chars().take(REVISION_PREFIX_LIMIT).collect();
    format!("{prefix}-{hash}")
}

/// A new revision of the set's current template with `number` (upstream's `newRevision`):
/// the template's labels, a controller reference to the set, the hashed name.
pub fn new_revision(set: &StatefulSet, number: i64, collision_count: i32) -> ControllerRevision {
    let data = revision_data(set);
    let hash = revision_hash(&data, collision_count);
    let labels = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&set.name_any(), &hash)),
            namespace: set.metadata.namespace.clone(),
            labels,
            owner_references: Some(vec![controller_owner_ref(set)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision: number,
    }
}

/// The template a revision holds, without the `$patch` marker.
fn template_of_revision(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision
        .data
        .as_ref()?
        .0
        .get("spec")?
        .get("template")?
        .clone();
    if let Some(map) = template.as_object_mut() {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// The set as it was at `revision` (upstream's `ApplyRevision`: its template replaced).
fn set_at_revision(set: &StatefulSet, revision: &ControllerRevision) -> StatefulSet {
    let mut at = set.clone();
    if let (Some(spec), Some(template)) = (at.spec.as_mut(), template_of_revision(revision)) {
        spec.template = template;
    }
    at
}

// ---------------------------------------------------------------------------------------------
// Pods and claims

/// The claims of the pod with `ordinal`, each with the name of the pod volume it backs
/// (upstream's `getPersistentVolumeClaims`): the template's metadata and spec, the
/// `<claim>-<set>-<ordinal>` name, and the selector's matchLabels added to its labels.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    let set_name = set.name_any();
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|template| {
            let volume = template.metadata.name.clone().unwrap_or_default();
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&volume, &set_name, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    finalizers: template.metadata.finalizers.clone(),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            (volume, claim)
        })
        .collect()
}

/// A new pod of `set` (at the revision named `revision`) with `ordinal` (upstream's
/// `newStatefulSetPod`): the template, the controller reference, the identity labels,
/// hostname and subdomain, the claim volumes and the revision label.
pub fn new_pod(set: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = pods::pod_from_template(&template, &namespace, "", controller_owner_ref(set));
    let name = pod_name(&set.name_any(), ordinal);
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_owned());
    let spec = pod.spec.get_or_insert_default();
    spec.hostname = Some(name);
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    // The claims' volumes replace template volumes of the same name (upstream's
    // `updateStorage`).
    let claims = claims_for(set, ordinal);
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(volume, claim)| Volume {
            name: volume.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.metadata.name.clone().unwrap_or_default(),
                read_only: None,
            }),
            ..Volume::default()
        })
        .collect();
    let claimed: HashSet<&String> = claims.iter().map(|(v, _)| v).collect();
    for volume in spec.volumes.take().into_iter().flatten() {
        if !claimed.contains(&volume.name) {
            volumes.push(volume);
        }
    }
    if !volumes.is_empty() {
        spec.volumes = Some(volumes);
    }
    pod
}

/// Whether the pod has the identity the set gives its ordinal (upstream's `identityMatches`).
fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    parent_and_ordinal(name).is_some_and(|(parent, ordinal)| {
        Some(parent) == set.metadata.name.as_deref()
            && name == pod_name(parent, ordinal)
            && pod.metadata.namespace == set.metadata.namespace
            && pod.labels().get(POD_NAME_LABEL).map(String::as_str) == Some(name)
    })
}

/// Whether every claim template has its volume in the pod (upstream's `storageMatches`).
fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some(ordinal) = ordinal_of(pod) else {
        return false;
    };
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    claims_for(set, ordinal).iter().all(|(volume, claim)| {
        volumes.into_iter().flatten().any(|v| {
            &v.name == volume
                && v.persistent_volume_claim.as_ref().map(|c| &c.claim_name)
                    == claim.metadata.name.as_ref()
        })
    })
}

/// What happens to a claim in one case of the retention policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// The claim stays.
    Retain,
    /// The claim goes (through the garbage collector).
    Delete,
}

/// `persistentVolumeClaimRetentionPolicy`: `(whenDeleted, whenScaled)`, Retain by default.
fn retention_policy(set: &StatefulSet) -> (Retention, Retention) {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let parse = |v: Option<&String>| match v.map(String::as_str) {
        Some("Delete") => Retention::Delete,
        _ => Retention::Retain,
    };
    (
        parse(policy.and_then(|p| p.when_deleted.as_ref())),
        parse(policy.and_then(|p| p.when_scaled.as_ref())),
    )
}

/// A plain (non-controller) owner reference, as upstream's `setOwnerRef` writes on claims.
fn plain_owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        ..OwnerReference::default()
    }
}

/// The owner references a claim should have under the retention policy (upstream's
/// `updateClaimOwnerRefForSetAndPod`): a reference to the set when the set's deletion deletes
/// it, to the pod when the pod is scaled down and the scale-down deletes it; other references
/// are kept. `pod` is `None` when the pod does not exist yet (its reference is then left as is).
pub fn claim_owner_refs(
    current: &[OwnerReference],
    policy: (Retention, Retention),
    set: &OwnerReference,
    pod: Option<&OwnerReference>,
    scaled_down: bool,
) -> Vec<OwnerReference> {
    let (when_deleted, when_scaled) = policy;
    let (want_set, want_pod) = match (when_scaled, when_deleted) {
        (Retention::Retain, Retention::Retain) => (false, false),
        (Retention::Retain, Retention::Delete) => (true, false),
        (Retention::Delete, Retention::Retain) => (false, scaled_down),
        (Retention::Delete, Retention::Delete) => (!scaled_down, scaled_down),
    };
    let mut refs: Vec<OwnerReference> = current.to_vec();
    let want = |refs: &mut Vec<OwnerReference>, owner: &OwnerReference, wanted: bool| {
        let has = refs.iter().any(|r| r.uid == owner.uid);
        if wanted && !has {
            refs.push(owner.clone());
        } else if !wanted && has {
            refs.retain(|r| r.uid != owner.uid);
        }
    };
    want(&mut refs, set, want_set);
    if let Some(pod) = pod {
        want(&mut refs, pod, want_pod);
    }
    refs
}

/// Whether a claim still belongs to an earlier pod of the same name (upstream's
/// `hasStaleOwnerRef`): the new pod must wait until that claim is gone.
fn has_stale_pod_ref(claim: &PersistentVolumeClaim, pod_name: &str, pod_uid: &str) -> bool {
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == "Pod" && r.name == pod_name && r.uid != pod_uid)
}

// ---------------------------------------------------------------------------------------------
// Status

/// Pod counts of a set's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    replicas: i32,
    ready: i32,
    available: i32,
    current: i32,
    updated: i32,
}

/// Upstream's `computeReplicaStatus` over the set's pods.
fn count_pods<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    min_ready: i32,
    current_revision: &str,
    update_revision: &str,
    now: Timestamp,
) -> Counts {
    let mut counts = Counts::default();
    for pod in pods {
        counts.replicas += 1;
        if is_running_and_ready(pod) {
            counts.ready += 1;
            if is_running_and_available(pod, min_ready, now) {
                counts.available += 1;
            }
        }
        if !is_terminating(pod) {
            if pod_revision(pod) == current_revision {
                counts.current += 1;
            }
            if pod_revision(pod) == update_revision {
                counts.updated += 1;
            }
        }
    }
    counts
}

/// The status to write: the counts, the revisions and, once a rolling update has every pod
/// updated and ready, the update revision as the current one (upstream's
/// `completeRollingUpdate`). Conditions are kept.
fn build_status(
    set: &StatefulSet,
    counts: Counts,
    current_revision: &str,
    update_revision: &str,
    collision_count: i32,
) -> StatefulSetStatus {
    let mut current = counts.current;
    let mut current_revision = current_revision.to_owned();
    if !is_on_delete(set) && counts.updated == counts.replicas && counts.ready == counts.replicas {
        current = counts.updated;
        current_revision = update_revision.to_owned();
    }
    StatefulSetStatus {
        replicas: counts.replicas,
        ready_replicas: Some(counts.ready),
        available_replicas: Some(counts.available),
        current_replicas: Some(current),
        updated_replicas: Some(counts.updated),
        current_revision: Some(current_revision),
        update_revision: Some(update_revision.to_owned()),
        observed_generation: set.metadata.generation,
        collision_count: Some(collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// The controller

struct Context {
    client: Client,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
    expectations: Expectations,
    recorder: Recorder,
}

/// What a pod event tells the expectations of its set.
enum Observation {
    Created(String),
    Deleted(String, String),
}

/// Runs the StatefulSet controller until its watches end: reflectors of sets,
/// ControllerRevisions and claims, the shared pods, and kube-rs's applier over their events.
pub async fn run(client: Client, informers: &Informers) {
    let (sets, set_writer) = reflector::store::<StatefulSet>();
    let (revisions, revision_writer) = reflector::store::<ControllerRevision>();
    let (claims, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let context = Arc::new(Context {
        client: client.clone(),
        sets: sets.clone(),
        pods: informers.pods.store(),
        revisions,
        claims,
        expectations: Expectations::default(),
        recorder: recorder(&client, CONTROLLER_NAME),
    });

    let set_ctx = context.clone();
    let set_triggers = watcher(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(crate::watch::strip_managed_fields)
    .default_backoff()
    .reflect(set_writer)
    .map_ok(move |event| {
        if let Event::Delete(set) = &event {
            set_ctx.expectations.forget(&object_key(&set.metadata));
        }
        event
    })
    .touched_objects()
    .map_ok(|set: StatefulSet| ObjectRef::from_obj(&set));

    let pod_ctx = context.clone();
    let mut deferred: Vec<Observation> = Vec::new();
    let pod_triggers = informers
        .pods
        .subscribe()
        .map(Ok::<_, watcher::Error>)
        .map_ok(move |change| {
            let observations = observe(&change);
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
            let triggers = match &event {
                Event::Apply(pod) | Event::Delete(pod) => sets_of_pod(pod, &pod_ctx.sets),
                _ => Vec::new(),
            };
            stream::iter(triggers.into_iter().map(Ok))
        })
        .try_flatten();

    let revision_triggers = watcher(
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(crate::watch::strip_managed_fields)
    .default_backoff()
    .reflect(revision_writer)
    .touched_objects()
    .map_ok(|revision: ControllerRevision| {
        let owner = controller_of(&revision.metadata)
            .filter(|r| r.kind == "StatefulSet")
            .map(|r| ObjectRef::new(&r.name).within(&revision.namespace().unwrap_or_default()));
        stream::iter(owner.into_iter().map(Ok))
    })
    .try_flatten();

    let claim_sets = sets.clone();
    let claim_triggers = watcher(
        Api::<PersistentVolumeClaim>::all(client),
        watcher::Config::default(),
    )
    .modify(crate::watch::strip_managed_fields)
    .default_backoff()
    .reflect(claim_writer)
    .touched_objects()
    .map_ok(move |claim: PersistentVolumeClaim| {
        stream::iter(sets_of_claim(&claim, &claim_sets).into_iter().map(Ok))
    })
    .try_flatten();

    let queue = stream::select_all([
        set_triggers.boxed(),
        pod_triggers.boxed(),
        revision_triggers.boxed(),
        claim_triggers.boxed(),
    ]);
    applier(
        |set, ctx| Box::pin(reconcile(set, ctx)),
        error_policy,
        context,
        sets,
        queue,
        Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "statefulset reconcile");
        }
    })
    .await;
}

fn controlling_set(pod: &Pod) -> Option<String> {
    let reference = controller_of(&pod.metadata)?;
    (reference.kind == "StatefulSet" && reference.api_version == "apps/v1").then(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            reference.name
        )
    })
}

fn observe(change: &Change<Pod>) -> Vec<Observation> {
    let (pod, deleted) = match &change.event {
        Event::Apply(pod) | Event::InitApply(pod) => (pod, false),
        Event::Delete(pod) => (pod, true),
        Event::Init | Event::InitDone => return Vec::new(),
    };
    let Some(owner) = controlling_set(pod) else {
        return Vec::new();
    };
    if deleted || is_terminating(pod) {
        return vec![Observation::Deleted(owner, object_key(&pod.metadata))];
    }
    if change.previous.is_some() {
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

/// The sets to sync after a pod event: its controller, or for an orphan every set in its
/// namespace that would adopt it.
fn sets_of_pod(pod: &Pod, sets: &Store<StatefulSet>) -> Vec<ObjectRef<StatefulSet>> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(reference) = controller_of(&pod.metadata) {
        if reference.kind == "StatefulSet" {
            return vec![ObjectRef::new(&reference.name).within(&namespace)];
        }
        return Vec::new();
    }
    sets.state()
        .iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace.as_str())
                && is_member_of(s, pod)
                && selects(s, pod.labels())
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The sets whose claim templates would name this claim (`<claim>-<set>-<ordinal>`).
fn sets_of_claim(
    claim: &PersistentVolumeClaim,
    sets: &Store<StatefulSet>,
) -> Vec<ObjectRef<StatefulSet>> {
    let name = claim.name_any();
    let namespace = claim.namespace();
    sets.state()
        .iter()
        .filter(|s| s.metadata.namespace == namespace)
        .filter(|s| {
            let set_name = s.name_any();
            s.spec
                .as_ref()
                .and_then(|spec| spec.volume_claim_templates.as_ref())
                .into_iter()
                .flatten()
                .any(|t| {
                    let prefix =
                        format!("{}-{set_name}-", t.metadata.name.as_deref().unwrap_or(""));
                    name.strip_prefix(&prefix)
                        .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
                })
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

fn error_policy(set: Arc<StatefulSet>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::info!(statefulset = %set.name_any(), %error, "statefulset sync failed");
    Action::requeue(RETRY_AFTER)
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ready = futures::future::join4(
        ctx.pods.wait_until_ready(),
        ctx.revisions.wait_until_ready(),
        ctx.claims.wait_until_ready(),
        ctx.sets.wait_until_ready(),
    )
    .await;
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() || ready.3.is_err() {
        return Ok(Action::requeue(RETRY_AFTER));
    }
    let sync = SetSync::new(set, &ctx);
    if !ctx.expectations.satisfied(&sync.key) {
        // Wait for the watch to show what the last sync did.
        return Ok(Action::requeue(RETRY_AFTER));
    }
    let pods = sync.claim_pods().await?;
    let revisions = sync.claim_revisions().await?;
    let resolved = sync.resolve_revisions(revisions).await?;
    let (status, outcome) = sync.update(&pods, &resolved).await;
    sync.write_status(status).await?;
    outcome?;
    sync.truncate_history(&pods, &resolved).await?;

    let min_ready = min_ready_seconds(&sync.set);
    let now = Timestamp::now();
    // Look again when the next ready pod becomes available.
    let next_available = pods
        .iter()
        .filter(|p| is_running_and_ready(p) && !is_running_and_available(p, min_ready, now))
        .map(|p| seconds_until_available(p, min_ready, now))
        .min();
    if let Some(seconds) = next_available {
        return Ok(Action::requeue(Duration::from_secs(seconds)));
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The revisions a sync works with.
struct Resolved {
    /// Every revision of the set, oldest first (including `update`).
    all: Vec<ControllerRevision>,
    /// The revision `status.currentRevision` names (or `update` when there is none).
    current: ControllerRevision,
    /// The revision of the set's template as it is now.
    update: ControllerRevision,
    /// The collision count after any hash collision this sync met.
    collision_count: i32,
}

/// One sync of one set.
struct SetSync<'a> {
    set: Arc<StatefulSet>,
    ctx: &'a Context,
    key: String,
    namespace: String,
    set_ref: OwnerReference,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    revisions: Api<ControllerRevision>,
    now: Timestamp,
}

impl<'a> SetSync<'a> {
    fn new(set: Arc<StatefulSet>, ctx: &'a Context) -> Self {
        let namespace = set.namespace().unwrap_or_default();
        let client = ctx.client.clone();
        Self {
            key: object_key(&set.metadata),
            set_ref: plain_owner_ref("apps/v1", "StatefulSet", &set.metadata),
            pods: Api::namespaced(client.clone(), &namespace),
            claims: Api::namespaced(client.clone(), &namespace),
            revisions: Api::namespaced(client, &namespace),
            namespace,
            set,
            ctx,
            now: Timestamp::now(),
        }
    }

    fn uid(&self) -> String {
        self.set.uid().unwrap_or_default()
    }

    fn deleting(&self) -> bool {
        self.set.metadata.deletion_timestamp.is_some()
    }

    /// The set's pods: its own, plus adopted orphans that match the selector and carry its
    /// name; its pods that no longer match are released.
    async fn claim_pods(&self) -> Result<Vec<Arc<Pod>>, ControllerError> {
        let uid = self.uid();
        let owner_ref = controller_owner_ref(self.set.as_ref());
        let mut claimed = Vec::new();
        let mut adoption_checked = false;
        let candidates = self
            .ctx
            .pods
            .state_filter(|p| p.metadata.namespace.as_deref() == Some(self.namespace.as_str()));
        for pod in candidates {
            let matches = selects(&self.set, pod.labels()) && is_member_of(&self.set, &pod);
            match claim(&uid, self.deleting(), matches, &pod.metadata) {
                Claim::Owned => claimed.push(pod),
                Claim::Adopt => {
                    if !adoption_checked {
                        if !pods::can_adopt(&self.ctx.client, self.set.as_ref()).await? {
                            break;
                        }
                        adoption_checked = true;
                    }
                    match pods::adopt(&self.pods, &pod.metadata, &owner_ref).await {
                        Ok(adopted) => {
                            tracing::info!(pod = %pod.name_any(), set = %self.key, "adopted pod");
                            claimed.push(Arc::new(adopted));
                        }
                        Err(e) if pods::is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Claim::Release => {
                    pods::release(&self.pods, &pod.metadata, &uid).await?;
                    tracing::info!(pod = %pod.name_any(), set = %self.key, "released pod");
                }
                Claim::Ignore => {}
            }
        }
        Ok(claimed)
    }

    /// The set's ControllerRevisions (adopting matching orphans, as upstream's
    /// `adoptOrphanRevisions`).
    async fn claim_revisions(&self) -> Result<Vec<ControllerRevision>, ControllerError> {
        let uid = self.uid();
        let owner_ref = controller_owner_ref(self.set.as_ref());
        let mut claimed = Vec::new();
        let candidates = self
            .ctx
            .revisions
            .state_filter(|r| r.metadata.namespace.as_deref() == Some(self.namespace.as_str()));
        let mut adoption_checked = false;
        for revision in candidates {
            let matches = selects(&self.set, revision.labels());
            match claim(&uid, self.deleting(), matches, &revision.metadata) {
                Claim::Owned => claimed.push(revision.as_ref().clone()),
                Claim::Adopt => {
                    if !adoption_checked {
                        if !pods::can_adopt(&self.ctx.client, self.set.as_ref()).await? {
                            break;
                        }
                        adoption_checked = true;
                    }
                    match pods::adopt(&self.revisions, &revision.metadata, &owner_ref).await {
                        Ok(adopted) => claimed.push(adopted),
                        Err(e) if pods::is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Claim::Release | Claim::Ignore => {}
            }
        }
        Ok(claimed)
    }

    /// The current and update revisions (upstream's `getStatefulSetRevisions`): the update
    /// revision is the latest revision when it holds the template, an older equal one brought
    /// forward (a rollback), or a new one (with the collision count raised on a hash clash).
    async fn resolve_revisions(
        &self,
        mut all: Vec<ControllerRevision>,
    ) -> Result<Resolved, ControllerError> {
        all.sort_by(|a, b| {
            a.revision
                .cmp(&b.revision)
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let status = self.set.status.as_ref();
        let mut collision_count = status.and_then(|s| s.collision_count).unwrap_or(0);
        let next = all.last().map_or(1, |r| r.revision + 1);
        let candidate = new_revision(&self.set, next, collision_count);
        let latest_name = all.last().and_then(|r| r.metadata.name.clone());
        let equal = all.iter().rev().find(|r| r.data == candidate.data).cloned();
        let update = match equal {
            Some(equal) if equal.metadata.name == latest_name => equal,
            Some(equal) => {
                let name = equal.name_any();
                let bumped = self
                    .revisions
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "revision": next })),
                    )
                    .await?;
                tracing::info!(set = %self.key, revision = %name, number = next, "rolled back to revision");
                if let Some(slot) = all
                    .iter_mut()
                    .find(|r| r.metadata.name == bumped.metadata.name)
                {
                    *slot = bumped.clone();
                }
                all.sort_by_key(|r| r.revision);
                bumped
            }
            None => {
                let created = loop {
                    let attempt = new_revision(&self.set, next, collision_count);
                    let name = attempt.name_any();
                    match self
                        .revisions
                        .create(&PostParams::default(), &attempt)
                        .await
                    {
                        Ok(created) => break created,
                        Err(e) if pods::is_conflict(&e) => {
                            let existing = self.revisions.get(&name).await?;
                            if existing.data == attempt.data {
                                break existing;
                            }
                            collision_count = collision_count.saturating_add(1);
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                tracing::info!(set = %self.key, revision = %created.name_any(), "created revision");
                all.push(created.clone());
                created
            }
        };
        let current_name = status.and_then(|s| s.current_revision.clone());
        let current = all
            .iter()
            .find(|r| r.metadata.name.is_some() && r.metadata.name == current_name)
            .cloned()
            .unwrap_or_else(|| update.clone());
        Ok(Resolved {
            all,
            current,
            update,
            collision_count,
        })
    }

    /// Upstream's `updateStatefulSet`: creates, repairs and deletes pods toward the set's
    /// state and returns the status to record with the outcome.
    async fn update(
        &self,
        pods: &[Arc<Pod>],
        revisions: &Resolved,
    ) -> (StatefulSetStatus, Result<(), ControllerError>) {
        let set = self.set.as_ref();
        let current_set = set_at_revision(set, &revisions.current);
        let update_set = set_at_revision(set, &revisions.update);
        let current_name = revisions.current.name_any();
        let update_name = revisions.update.name_any();
        let min_ready = min_ready_seconds(set);
        let start = start_ordinal(set);
        let count = usize::try_from(wanted_replicas(set)).unwrap_or(0);

        let mut slots: Vec<Option<Arc<Pod>>> = vec![None; count];
        let mut condemned: Vec<Arc<Pod>> = Vec::new();
        for pod in pods {
            let Some(ordinal) = ordinal_of(pod) else {
                continue;
            };
            if in_ordinal_range(set, ordinal) {
                if let Some(slot) = usize::try_from(ordinal - start)
                    .ok()
                    .and_then(|i| slots.get_mut(i))
                {
                    *slot = Some(pod.clone());
                }
            } else {
                condemned.push(pod.clone());
            }
        }
        condemned.sort_by_key(|p| Reverse(ordinal_of(p)));

        let status = |current_decrement: i32| {
            let mut counts = count_pods(
                slots
                    .iter()
                    .flatten()
                    .chain(condemned.iter())
                    .map(|p| p.as_ref()),
                min_ready,
                &current_name,
                &update_name,
                self.now,
            );
            counts.current -= current_decrement;
            build_status(
                set,
                counts,
                &current_name,
                &update_name,
                revisions.collision_count,
            )
        };

        // The first unavailable pod, in ordinal order, then among the condemned from the
        // lowest ordinal up. A missing pod counts (and matches no condemned pod).
        let first_unavailable: Option<Option<String>> = slots
            .iter()
            .map(|slot| slot.as_deref())
            .chain(condemned.iter().rev().map(|p| Some(p.as_ref())))
            .find(|pod| is_unavailable(*pod, min_ready, self.now))
            .map(|pod| pod.map(|p| p.name_any()));

        if self.deleting() {
            return (status(0), Ok(()));
        }
        let monotonic = !allows_burst(set);
        let choice = PodChoice {
            current_set: &current_set,
            update_set: &update_set,
            current_revision: &current_name,
            update_revision: &update_name,
        };

        // Live replicas: create the missing, replace the failed, repair identities.
        let exit = if monotonic {
            let mut exit = Ok(false);
            for (index, slot) in slots.iter().enumerate() {
                exit = self
                    .process_replica(index, slot.as_deref(), &choice, true)
                    .await;
                if !matches!(exit, Ok(false)) {
                    break;
                }
            }
            exit
        } else {
            let next = AtomicUsize::new(0);
            let (_, error) = slow_start_batch(slots.len(), 1, || {
                let index = next.fetch_add(1, AtomicOrdering::SeqCst);
                let slot = slots.get(index).and_then(|s| s.as_deref());
                let choice = &choice;
                async move {
                    self.process_replica(index, slot, choice, false)
                        .await
                        .map(|_| ())
                }
            })
            .await;
            error.map_or(Ok(false), Err)
        };
        match exit {
            Ok(false) => {}
            Ok(true) => return (status(0), Ok(())),
            Err(e) => return (status(0), Err(e.into())),
        }

        // Condemned pods: their claims first follow the scale-down policy, then they go.
        for pod in &condemned {
            if let Err(e) = self.fix_claims(pod).await {
                return (status(0), Err(e.into()));
            }
        }
        if monotonic {
            // One at a time, from the highest ordinal.
            if let Some(pod) = condemned.first() {
                if is_terminating(pod) {
                    return (status(0), Ok(()));
                }
                let blocking = first_unavailable.as_ref() != Some(&Some(pod.name_any()));
                if is_unavailable(Some(pod), min_ready, self.now) && blocking {
                    return (status(0), Ok(()));
                }
                tracing::info!(set = %self.key, pod = %pod.name_any(), "deleting pod for scale down");
                return (status(0), self.delete_pod(pod).await.map_err(Into::into));
            }
        } else {
            let victims: Vec<&Arc<Pod>> = condemned
                .iter()
                .filter(|p| !is_terminating(p))
                .take(MAX_BATCH_SIZE)
                .collect();
            let results =
                futures::future::join_all(victims.iter().map(|p| self.delete_pod(p))).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return (status(0), Err(e.into()));
            }
        }

        if is_on_delete(set) {
            return (status(0), Ok(()));
        }

        // Rolling update, from the highest ordinal down to the partition.
        let update_min = usize::try_from(partition(set).unwrap_or(0)).unwrap_or(0);
        let mut deleted = 0;
        let outcome = if let Some(max) = explicit_max_unavailable(set) {
            let max = max_unavailable(Some(max), wanted_replicas(set));
            let unavailable = slots
                .iter()
                .filter(|s| is_unavailable(s.as_deref(), min_ready, self.now))
                .count();
            let budget = usize::try_from(max)
                .unwrap_or(1)
                .saturating_sub(unavailable);
            let mut result = Ok(());
            for slot in slots.iter().skip(update_min).rev() {
                if deleted >= budget {
                    break;
                }
                let Some(pod) = slot else { continue };
                if pod_revision(pod) != update_name && !is_terminating(pod) {
                    tracing::info!(set = %self.key, pod = %pod.name_any(), "deleting pod for update");
                    if let Err(e) = self.delete_pod(pod).await {
                        result = Err(e.into());
                        break;
                    }
                    deleted += 1;
                }
            }
            result
        } else {
            let mut result = Ok(());
            for slot in slots.iter().skip(update_min).rev() {
                let pod = slot.as_deref();
                if let Some(pod) = pod {
                    if pod_revision(pod) != update_name && !is_terminating(pod) {
                        tracing::info!(set = %self.key, pod = %pod.name_any(), "deleting pod for update");
                        result = self.delete_pod(pod).await.map_err(Into::into);
                        deleted = 1;
                        break;
                    }
                }
                if is_unavailable(pod, min_ready, self.now) {
                    break;
                }
            }
            result
        };
        (status(i32::try_from(deleted).unwrap_or(0)), outcome)
    }

    /// Upstream's `processReplica` for the slot at `index` (`pod` is `None` when the pod does
    /// not exist). Returns whether the sync must stop here (in monotonic mode).
    async fn process_replica(
        &self,
        index: usize,
        pod: Option<&Pod>,
        choice: &PodChoice<'_>,
        monotonic: bool,
    ) -> Result<bool, kube::Error> {
        let ordinal = start_ordinal(&self.set) + i32::try_from(index).unwrap_or(i32::MAX);
        let Some(pod) = pod else {
            return self.create_replica(ordinal, choice, monotonic).await;
        };
        if matches!(phase(pod), "Failed" | "Succeeded") {
            if !is_terminating(pod) {
                tracing::info!(set = %self.key, pod = %pod.name_any(), phase = phase(pod), "deleting finished pod to recreate it");
                self.delete_pod(pod).await?;
            }
            // The pod is recreated once its deletion has been observed.
            return Ok(true);
        }
        if phase(pod) == "Pending" && self.create_missing_claims(ordinal, Some(pod)).await? {
            return Ok(true);
        }
        if monotonic
            && (is_terminating(pod)
                || !is_running_and_ready(pod)
                || !is_running_and_available(pod, min_ready_seconds(&self.set), self.now))
        {
            return Ok(true);
        }
        if !identity_matches(&self.set, pod) {
            let name = pod.name_any();
            let patch = json!({
                "metadata": {
                    "labels": {
                        POD_NAME_LABEL: name,
                        POD_INDEX_LABEL: ordinal.to_string(),
                    },
                    "uid": pod.metadata.uid,
                }
            });
            self.pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            tracing::info!(set = %self.key, pod = %name, "restored pod identity");
        }
        if !storage_matches(&self.set, pod)
            && self.create_missing_claims(ordinal, Some(pod)).await?
        {
            return Ok(true);
        }
        self.fix_claims(pod).await?;
        Ok(false)
    }

    /// Creates the missing pod with `ordinal` (and first its claims). Returns whether the sync
    /// must stop here.
    async fn create_replica(
        &self,
        ordinal: i32,
        choice: &PodChoice<'_>,
        monotonic: bool,
    ) -> Result<bool, kube::Error> {
        let name = pod_name(&self.set.name_any(), ordinal);
        if self.claim_is_stale(ordinal, &name) {
            tracing::debug!(set = %self.key, pod = %name, "waiting for a stale claim to go");
            return Ok(true);
        }
        if self.create_missing_claims(ordinal, None).await? {
            return Ok(true);
        }
        let pod = choice.pod(&self.set, ordinal);
        self.ctx.expectations.expect_more(&self.key, 1, []);
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                tracing::info!(set = %self.key, pod = %name, revision = %pod_revision(&pod), "created pod");
                self.event(
                    false,
                    "SuccessfulCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} successful",
                        self.set.name_any()
                    ),
                )
                .await;
                self.fix_claims(&created).await?;
            }
            Err(e) => {
                self.ctx.expectations.lower_creations(&self.key, 1);
                if pods::is_conflict(&e) {
                    // Our cache has not shown it yet: its event brings another sync.
                    return Ok(true);
                }
                self.event(
                    true,
                    "FailedCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} failed error: {e}",
                        self.set.name_any()
                    ),
                )
                .await;
                return Err(e);
            }
        }
        Ok(monotonic)
    }

    /// Whether a claim of the pod with `ordinal` still belongs to an earlier pod of that name
    /// (only with `whenScaled: Delete`, upstream's `PodClaimIsStale`).
    fn claim_is_stale(&self, ordinal: i32, pod_name: &str) -> bool {
        if retention_policy(&self.set).1 == Retention::Retain {
            return false;
        }
        claims_for(&self.set, ordinal).iter().any(|(_, claim)| {
            self.cached_claim(claim)
                .is_some_and(|c| has_stale_pod_ref(&c, pod_name, ""))
        })
    }

    fn cached_claim(&self, claim: &PersistentVolumeClaim) -> Option<Arc<PersistentVolumeClaim>> {
        self.ctx
            .claims
            .get(&ObjectRef::new(&claim.name_any()).within(&self.namespace))
    }

    /// Creates the claims of the pod with `ordinal` that do not exist (upstream's
    /// `createPersistentVolumeClaims`). Returns true when one is being deleted, so the pod must
    /// wait.
    async fn create_missing_claims(
        &self,
        ordinal: i32,
        pod: Option<&Pod>,
    ) -> Result<bool, kube::Error> {
        let policy = retention_policy(&self.set);
        let scaled_down = !in_ordinal_range(&self.set, ordinal);
        let pod_ref = pod.map(|p| plain_owner_ref("v1", "Pod", &p.metadata));
        let mut blocked = false;
        for (_, mut claim) in claims_for(&self.set, ordinal) {
            match self.cached_claim(&claim) {
                Some(existing) if is_claim_deleting(&existing) => {
                    tracing::info!(set = %self.key, claim = %claim.name_any(), "claim is being deleted");
                    blocked = true;
                }
                Some(_) => {}
                None => {
                    let refs =
                        claim_owner_refs(&[], policy, &self.set_ref, pod_ref.as_ref(), scaled_down);
                    claim.metadata.owner_references = (!refs.is_empty()).then_some(refs);
                    let set_name = self.set.name_any();
                    let claim_name = claim.name_any();
                    let pod_name = pod_name(&set_name, ordinal);
                    match self.claims.create(&PostParams::default(), &claim).await {
                        Ok(_) => {
                            tracing::info!(set = %self.key, claim = %claim_name, "created claim");
                            let note = format!("create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success");
                            self.event(false, "SuccessfulCreate", note).await;
                        }
                        Err(e) if pods::is_conflict(&e) => {}
                        Err(e) => {
                            let note = format!("create Claim {claim_name} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}");
                            self.event(true, "FailedCreate", note).await;
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(blocked)
    }

    /// Brings the owner references of the pod's claims in line with the retention policy
    /// (upstream's `UpdatePodClaimForRetentionPolicy`).
    async fn fix_claims(&self, pod: &Pod) -> Result<(), kube::Error> {
        let Some(ordinal) = ordinal_of(pod) else {
            return Ok(());
        };
        let policy = retention_policy(&self.set);
        let scaled_down = !in_ordinal_range(&self.set, ordinal);
        let pod_ref = plain_owner_ref("v1", "Pod", &pod.metadata);
        for (_, claim) in claims_for(&self.set, ordinal) {
            let Some(existing) = self.cached_claim(&claim) else {
                continue;
            };
            if is_claim_deleting(&existing) {
                continue;
            }
            let current = existing
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
            let wanted =
                claim_owner_refs(&current, policy, &self.set_ref, Some(&pod_ref), scaled_down);
            if wanted == current {
                continue;
            }
            let patch = json!({
                "metadata": {
                    "ownerReferences": wanted,
                    "resourceVersion": existing.metadata.resource_version,
                }
            });
            match self
                .claims
                .patch(
                    &existing.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(set = %self.key, claim = %existing.name_any(), "claim owners follow the retention policy");
                }
                // A newer claim (or none) is in the cache soon; its event brings another sync.
                Err(e) if pods::is_conflict(&e) || pods::is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes a pod (on its uid), expecting to see the deletion before the next sync acts.
    async fn delete_pod(&self, pod: &Pod) -> Result<(), kube::Error> {
        let pod_key = object_key(&pod.metadata);
        self.ctx
            .expectations
            .expect_more(&self.key, 0, [pod_key.clone()]);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.name_any();
        let set_name = self.set.name_any();
        match self.pods.delete(&name, &params).await {
            Ok(_) => {
                let note = format!("delete Pod {name} in StatefulSet {set_name} successful");
                self.event(false, "SuccessfulDelete", note).await;
                Ok(())
            }
            Err(e) => {
                self.ctx.expectations.deletion_observed(&self.key, &pod_key);
                if pods::is_not_found(&e) || pods::is_conflict(&e) {
                    Ok(())
                } else {
                    let note =
                        format!("delete Pod {name} in StatefulSet {set_name} failed error: {e}");
                    self.event(true, "FailedDelete", note).await;
                    Err(e)
                }
            }
        }
    }

    /// Records an Event about the set (as upstream's `recordPodEvent` / `recordClaimEvent`).
    async fn event(&self, warning: bool, reason: &str, note: String) {
        record(&self.ctx.recorder, self.set.as_ref(), warning, reason, note).await;
    }

    /// Writes the status when it differs from the recorded one.
    async fn write_status(&self, status: StatefulSetStatus) -> Result<(), ControllerError> {
        if self.set.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let patch = json!({ "status": status });
        match api
            .patch_status(
                &self.set.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if pods::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the oldest revisions that no pod uses and that are neither current nor update,
    /// beyond `revisionHistoryLimit` (upstream's `truncateHistory`).
    async fn truncate_history(
        &self,
        pods: &[Arc<Pod>],
        revisions: &Resolved,
    ) -> Result<(), ControllerError> {
        let mut live: HashSet<String> = pods.iter().map(|p| pod_revision(p).to_owned()).collect();
        live.insert(revisions.current.name_any());
        live.insert(revisions.update.name_any());
        let history: Vec<&ControllerRevision> = revisions
            .all
            .iter()
            .filter(|r| !live.contains(&r.name_any()))
            .collect();
        let limit = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        let excess = history
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for revision in history.into_iter().take(excess) {
            match self
                .revisions
                .delete(&revision.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(set = %self.key, revision = %revision.name_any(), "deleted old revision");
                }
                Err(e) if pods::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn is_claim_deleting(claim: &PersistentVolumeClaim) -> bool {
    claim.metadata.deletion_timestamp.is_some()
}

/// Which template a recreated pod gets (upstream's `newVersionedStatefulSetPod`).
struct PodChoice<'a> {
    current_set: &'a StatefulSet,
    update_set: &'a StatefulSet,
    current_revision: &'a str,
    update_revision: &'a str,
}

impl PodChoice<'_> {
    /// The pod for `ordinal`: below the partition (or, for a RollingUpdate without
    /// parameters, below the current replica count) from the current revision, otherwise
    /// from the update revision.
    fn pod(&self, set: &StatefulSet, ordinal: i32) -> Pod {
        let rolling = set.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
        let is_rolling = rolling
            .and_then(|u| u.type_.as_deref())
            .is_none_or(|t| t == "RollingUpdate");
        let parameters = rolling.and_then(|u| u.rolling_update.as_ref());
        let current_count = set
            .status
            .as_ref()
            .and_then(|s| s.current_replicas)
            .unwrap_or(0);
        let keep_current = match parameters {
            None => is_rolling && ordinal < current_count,
            Some(p) => ordinal < start_ordinal(set).saturating_add(p.partition.unwrap_or(0)),
        };
        if keep_current {
            new_pod(self.current_set, ordinal, self.current_revision)
        } else {
            new_pod(self.update_set, ordinal, self.update_revision)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(spec: Value) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "set-uid", "generation": 3},
            "spec": spec,
        }))
        .unwrap()
    }

    fn web(replicas: i32) -> StatefulSet {
        set(json!({
            "replicas": replicas,
            "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "c", "image": "busybox:1"}],
                    "volumes": [{"name": "www", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "www", "labels": {"kind": "data"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }))
    }

    #[test]
    fn ordinals_parse_as_upstream() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-db-12"), Some(("my-db", 12)));
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web-1a"), None);
        assert_eq!(parent_and_ordinal("web-99999999999"), None);
        assert_eq!(pod_name("web", 4), "web-4");
        assert_eq!(claim_name("www", "web", 4), "www-web-4");
    }

    #[test]
    fn pods_get_identity_storage_and_revision() {
        let set = web(3);
        let pod = new_pod(&set, 2, "web-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        assert_eq!(pod.metadata.generate_name, None);
        let labels = pod.labels();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        assert_eq!(labels["app"], "web");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volumes = spec.volumes.as_ref().unwrap();
        // The claim replaces the template's volume of the same name; others stay.
        assert_eq!(volumes.len(), 2);
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "www-web-2"
        );
        assert_eq!(volumes[1].name, "cache");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("StatefulSet", Some(true))
        );
        assert!(identity_matches(&set, &pod));
        assert!(storage_matches(&set, &pod));
        let mut renamed = pod.clone();
        renamed
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(POD_NAME_LABEL);
        assert!(!identity_matches(&set, &renamed));
    }

    #[test]
    fn claims_carry_selector_labels() {
        let claims = claims_for(&web(1), 0);
        assert_eq!(claims.len(), 1);
        let (volume, claim) = &claims[0];
        assert_eq!(volume, "www");
        assert_eq!(claim.metadata.name.as_deref(), Some("www-web-0"));
        let labels = claim.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels["kind"], "data");
        assert!(claim.spec.is_some());
    }

    #[test]
    fn revision_data_is_the_sorted_replace_patch() {
        let data = revision_data(&web(1));
        let text = serde_json::to_string(&data).unwrap();
        assert!(
            text.starts_with(r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"web"}},"spec":{"containers":"#),
            "{text}"
        );
        let revision = new_revision(&web(1), 4, 0);
        assert_eq!(revision.revision, 4);
        let name = revision.name_any();
        let hash = name.strip_prefix("web-").unwrap();
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{name}");
        assert_eq!(revision.labels()["app"], "web");
        // The hash depends on the template and the collision count, nothing else.
        assert_eq!(new_revision(&web(5), 9, 0).name_any(), name);
        assert_ne!(new_revision(&web(1), 4, 1).name_any(), name);
        let mut changed = web(1);
        changed
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("busybox:2".into());
        assert_ne!(new_revision(&changed, 4, 0).name_any(), name);
        // The template survives the round trip.
        let restored = set_at_revision(&changed, &revision);
        assert_eq!(
            restored.spec.unwrap().template,
            web(1).spec.unwrap().template
        );
    }

    #[test]
    fn hash_is_fnv1_written_safely() {
        // FNV-1 (not 1a) test vectors, as Go's hash/fnv New32.
        assert_eq!(fnv1_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
        assert_eq!(fnv1_32(b"foobar"), 0x31f0_b262);
        // The digits of the decimal hash map to "456789bcdf", as in upstream names.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        assert_eq!(
            revision_hash(&json!({}), 0),
            safe_encode(&fnv1_32(b"{}0").to_string())
        );
    }

    #[test]
    fn retention_policy_sets_owner_refs() {
        let set_ref = plain_owner_ref("apps/v1", "StatefulSet", &web(1).metadata);
        let pod_meta = ObjectMeta {
            name: Some("web-0".into()),
            uid: Some("pod-uid".into()),
            ..Default::default()
        };
        let pod_ref = plain_owner_ref("v1", "Pod", &pod_meta);
        let uids = |refs: Vec<OwnerReference>| refs.into_iter().map(|r| r.uid).collect::<Vec<_>>();
        use Retention::{Delete, Retain};
        let retain = claim_owner_refs(
            std::slice::from_ref(&set_ref),
            (Retain, Retain),
            &set_ref,
            Some(&pod_ref),
            false,
        );
        assert!(retain.is_empty());
        let on_delete = claim_owner_refs(&[], (Delete, Retain), &set_ref, Some(&pod_ref), true);
        assert_eq!(uids(on_delete), ["set-uid"]);
        let scaled_in_range =
            claim_owner_refs(&[], (Retain, Delete), &set_ref, Some(&pod_ref), false);
        assert!(scaled_in_range.is_empty());
        let scaled_down = claim_owner_refs(&[], (Retain, Delete), &set_ref, Some(&pod_ref), true);
        assert_eq!(uids(scaled_down), ["pod-uid"]);
        let both_in_range = claim_owner_refs(
            std::slice::from_ref(&pod_ref),
            (Delete, Delete),
            &set_ref,
            Some(&pod_ref),
            false,
        );
        assert_eq!(uids(both_in_range), ["set-uid"]);
        let both_down = claim_owner_refs(
            std::slice::from_ref(&set_ref),
            (Delete, Delete),
            &set_ref,
            Some(&pod_ref),
            true,
        );
        assert_eq!(uids(both_down), ["pod-uid"]);
        assert!(!set_ref.controller.unwrap_or(false));
        // A claim still owned by an earlier pod of the same name is stale.
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                owner_references: Some(vec![pod_ref]),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(has_stale_pod_ref(&claim, "web-0", ""));
        assert!(!has_stale_pod_ref(&claim, "web-0", "pod-uid"));
        assert!(!has_stale_pod_ref(&claim, "web-1", ""));
    }

    #[test]
    fn availability_requeue_waits_whole_seconds() {
        let now = Timestamp::from_second(1_000).unwrap();
        let ready_at = |second: i64| -> Pod {
            serde_json::from_value(json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True",
                 "lastTransitionTime": Timestamp::from_second(second).unwrap().to_string()}
            ]}}))
            .unwrap()
        };
        // Ready at 999 with minReadySeconds 4: available once now > 1003, so at 1004.
        assert_eq!(seconds_until_available(&ready_at(999), 4, now), 4);
        assert_eq!(seconds_until_available(&ready_at(1_000), 4, now), 5);
        assert_eq!(seconds_until_available(&ready_at(900), 4, now), 1);
        assert!(is_running_and_ready(&ready_at(999)));
        assert!(!is_running_and_available(&ready_at(999), 4, now));
        assert!(is_running_and_available(&ready_at(995), 4, now));
    }

    #[test]
    fn max_unavailable_scales_and_floors_at_one() {
        assert_eq!(max_unavailable(None, 10), 1);
        assert_eq!(max_unavailable(Some(&IntOrString::Int(3)), 10), 3);
        assert_eq!(max_unavailable(Some(&IntOrString::Int(0)), 10), 1);
        assert_eq!(
            max_unavailable(Some(&IntOrString::String("25%".into())), 10),
            2
        );
        assert_eq!(
            max_unavailable(Some(&IntOrString::String("5%".into())), 10),
            1
        );
    }

    #[test]
    fn ordinals_start_and_range() {
        let mut set = web(2);
        set.spec.as_mut().unwrap().ordinals =
            Some(k8s_openapi::api::apps::v1::StatefulSetOrdinals { start: Some(5) });
        assert!(!in_ordinal_range(&set, 4));
        assert!(in_ordinal_range(&set, 5));
        assert!(in_ordinal_range(&set, 6));
        assert!(!in_ordinal_range(&set, 7));
    }

    #[test]
    fn rolling_update_completes_only_when_all_updated_and_ready() {
        let set = web(3);
        let counts = Counts {
            replicas: 3,
            ready: 3,
            available: 3,
            current: 1,
            updated: 2,
        };
        let status = build_status(&set, counts, "web-old", "web-new", 0);
        assert_eq!(status.current_revision.as_deref(), Some("web-old"));
        let done = Counts {
            updated: 3,
            current: 0,
            ..counts
        };
        let status = build_status(&set, done, "web-old", "web-new", 0);
        assert_eq!(status.current_revision.as_deref(), Some("web-new"));
        assert_eq!(status.current_replicas, Some(3));
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn partition_picks_the_revision_of_recreated_pods() {
        let base = web(3);
        let choice = PodChoice {
            current_set: &base,
            update_set: &base,
            current_revision: "web-old",
            update_revision: "web-new",
        };
        let mut set = web(3);
        set.spec.as_mut().unwrap().update_strategy = Some(
            serde_json::from_value(json!({
                "type": "RollingUpdate", "rollingUpdate": {"partition": 2}
            }))
            .unwrap(),
        );
        assert_eq!(pod_revision(&choice.pod(&set, 1)), "web-old");
        assert_eq!(pod_revision(&choice.pod(&set, 2)), "web-new");
        set.spec.as_mut().unwrap().update_strategy =
            Some(serde_json::from_value(json!({"type": "OnDelete"})).unwrap());
        assert_eq!(pod_revision(&choice.pod(&set, 0)), "web-new");
    }
}
