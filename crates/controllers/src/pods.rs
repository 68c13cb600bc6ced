//! Pieces the workload controllers share, after upstream's `pkg/controller/controller_utils.go`
//! and `controller_ref_manager.go`: pods from templates, controller owner references,
//! adoption and release of dependents, label selectors, pod readiness and availability,
//! slow-start batches and "expectations" (what a controller has asked for and not seen yet).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde_json::json;

/// How long an expectation is trusted before a controller acts anyway (upstream's
/// `ExpectationsTimeout`): a lost watch event must not block a controller forever.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The key of a namespaced object, `namespace/name`, as upstream's `cache.MetaNamespaceKeyFunc`.
pub fn object_key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Whether `labels` satisfy a `LabelSelector`: a missing selector selects nothing, an empty one
/// everything (upstream's `metav1.LabelSelectorAsSelector`). An invalid operator selects nothing.
pub fn label_selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    if let Some(match_labels) = &selector.match_labels {
        if !map_selector_matches(match_labels, labels) {
            return false;
        }
    }
    for requirement in selector.match_expressions.iter().flatten() {
        let value = labels.get(&requirement.key);
        let values = requirement.values.as_deref().unwrap_or_default();
        let ok = match requirement.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether `labels` contain every pair of a map selector (ReplicationController, Service).
pub fn map_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The owner reference that marks `owner` as the controller of a dependent
/// (`controller: true`, `blockOwnerDeletion: true`), as upstream's `metav1.NewControllerRef`.
pub fn controller_owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller reference of an object (the owner reference with `controller: true`).
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A new pod from a template, as upstream's `GetPodFromTemplate`: the template's labels,
/// annotations, finalizers and spec, `generateName: <prefix>`, and the controller reference.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: &str,
    owner: OwnerReference,
) -> Pod {
    let template_meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Whether a pod still counts (upstream's `IsPodActive`): not Succeeded, not Failed, not being
/// deleted.
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
        && pod.metadata.deletion_timestamp.is_none()
}

/// The time the pod's Ready condition became True, if it is True.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (condition.status == "True").then(|| condition.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod's Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now` (upstream's
/// `IsPodAvailable`).
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => {
            since
                .as_second()
                .saturating_add(i64::from(min_ready_seconds))
                < now.as_second()
        }
    }
}

/// What a controller does with a candidate dependent (upstream's `ClaimObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Already ours and still matching: keep it.
    Owned,
    /// An orphan that matches: take it (add our controller reference).
    Adopt,
    /// Ours but no longer matching: let it go (remove our reference).
    Release,
    /// Someone else's, or not for us: leave it alone.
    Ignore,
}

/// Decides what a controller with uid `owner_uid` does with `dependent`, given whether the
/// dependent matches the controller's selector and whether the controller is being deleted.
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    matches: bool,
    dependent: &ObjectMeta,
) -> Claim {
    match controller_of(dependent) {
        Some(reference) if reference.uid != owner_uid => Claim::Ignore,
        Some(_) if matches => Claim::Owned,
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner_deleting || !matches || dependent.deletion_timestamp.is_some() => {
            Claim::Ignore
        }
        None => Claim::Adopt,
    }
}

/// Adds `owner` as the controller reference of `dependent` (a strategic merge patch that also
/// carries the dependent's uid, so it cannot land on a recreated namesake).
pub async fn adopt<Child>(
    api: &Api<Child>,
    dependent: &ObjectMeta,
    owner: &OwnerReference,
) -> Result<Child, kube::Error>
where
    Child: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "metadata": {
            "ownerReferences": [owner],
            "uid": dependent.uid,
        }
    });
    let name = dependent.name.as_deref().unwrap_or_default();
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
}

/// Removes the owner reference with `owner_uid` from `dependent` (upstream's release patch).
/// A dependent that is already gone counts as released.
pub async fn release<Child>(
    api: &Api<Child>,
    dependent: &ObjectMeta,
    owner_uid: &str,
) -> Result<(), kube::Error>
where
    Child: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
            "uid": dependent.uid,
        }
    });
    let name = dependent.name.as_deref().unwrap_or_default();
    match api
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Re-reads `owner` from the API server (not a cache) before adopting: it must still be the
/// same object and not being deleted (upstream's `RecheckDeletionTimestamp`).
pub async fn can_adopt<K>(client: &kube::Client, owner: &K) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let meta = owner.meta();
    let api: Api<K> = Api::namespaced(
        client.clone(),
        meta.namespace.as_deref().unwrap_or_default(),
    );
    match api.get(meta.name.as_deref().unwrap_or_default()).await {
        Ok(fresh) => Ok(fresh.meta().uid == meta.uid && fresh.meta().deletion_timestamp.is_none()),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an API error is a 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Whether a failed write may have been applied all the same: the server timed out (504) or
/// was unavailable (503) with the write sent to the store, or the connection broke before
/// an answer came. A create that failed so may show up in a watch later.
pub fn may_have_been_applied(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 503 || status.code == 504,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Whether an API error is a 409 (AlreadyExists or a conflict).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Runs `count` calls of `call` in batches of 1, 2, 4, … (upstream's `slowStartBatch`), each
/// batch concurrently; stops after the first batch with a failure. Returns how many calls
/// succeeded and the first error.
pub async fn slow_start_batch<F, Fut, E>(
    count: usize,
    initial_batch: usize,
    mut call: F,
) -> (usize, Option<E>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut batch = initial_batch.max(1).min(count);
    let mut succeeded = 0;
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| call())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => succeeded += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (succeeded, first_error);
        }
        remaining -= batch;
        batch = (batch * 2).min(remaining);
    }
    (succeeded, None)
}

#[derive(Debug)]
struct Expectation {
    adds: i64,
    deletions: HashSet<String>,
    set_at: Instant,
}

/// What each controller key (its `namespace/name`) waits to see in its watch of dependents
/// before it acts again: a number of creations and a set of deletions (by dependent key),
/// as upstream's `UIDTrackingControllerExpectations`. Expectations older than
/// [`EXPECTATIONS_TIMEOUT`] count as met.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the controller `key` has seen everything it asked for (or waited long enough).
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => {
                (e.adds <= 0 && e.deletions.is_empty()) || e.set_at.elapsed() > EXPECTATIONS_TIMEOUT
            }
        }
    }

    /// Records that `key` is about to create `count` dependents (replacing older expectations).
    pub fn expect_creations(&self, key: &str, count: usize) {
        self.lock().insert(
            key.to_owned(),
            Expectation {
                adds: i64::try_from(count).unwrap_or(i64::MAX),
                deletions: HashSet::new(),
                set_at: Instant::now(),
            },
        );
    }

    /// Records that `key` is about to delete the dependents with these keys.
    pub fn expect_deletions(&self, key: &str, dependents: impl IntoIterator<Item = String>) {
        self.lock().insert(
            key.to_owned(),
            Expectation {
                adds: 0,
                deletions: dependents.into_iter().collect(),
                set_at: Instant::now(),
            },
        );
    }

    /// Adds `creations` and the deletions of `dependents` to what `key` already expects
    /// (for a sync that both creates and deletes, as a StatefulSet's may); the timeout restarts.
    pub fn expect_more(
        &self,
        key: &str,
        creations: usize,
        dependents: impl IntoIterator<Item = String>,
    ) {
        let mut all = self.lock();
        let entry = all.entry(key.to_owned()).or_insert_with(|| Expectation {
            adds: 0,
            deletions: HashSet::new(),
            set_at: Instant::now(),
        });
        entry.adds = entry.adds.max(0) + i64::try_from(creations).unwrap_or(i64::MAX);
        entry.deletions.extend(dependents);
        entry.set_at = Instant::now();
    }

    /// One creation of `key`'s was seen, or will never be (it failed or was skipped).
    pub fn creation_observed(&self, key: &str) {
        self.lower_creations(key, 1);
    }

    /// `count` creations of `key`'s will never be seen.
    pub fn lower_creations(&self, key: &str, count: usize) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= i64::try_from(count).unwrap_or(i64::MAX);
        }
    }

    /// The deletion of `dependent` by `key` was seen, or will never be.
    pub fn deletion_observed(&self, key: &str, dependent: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.deletions.remove(dependent);
        }
    }

    /// Drops every expected deletion whose dependent `exists` no longer reports (after a
    /// relist, which does not replay deletions).
    pub fn retain_deletions(&self, mut exists: impl FnMut(&str) -> bool) {
        for e in self.lock().values_mut() {
            e.deletions.retain(|d| exists(d));
        }
    }

    /// Forgets `key` (the controller was deleted).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// Whether one toleration tolerates a taint (upstream's `Toleration.ToleratesTaint`).
pub fn toleration_tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or_default();
    let exists = toleration.operator.as_deref() == Some("Exists");
    if !effect_ok || (key.is_empty() && !exists) || (!key.is_empty() && key != taint.key) {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    #[test]
    fn timeouts_and_unavailability_may_have_applied_a_write() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("x", "Reason")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(may_have_been_applied(&api(504)));
        assert!(may_have_been_applied(&api(503)));
        for refused in [400, 403, 404, 409, 422, 500] {
            assert!(!may_have_been_applied(&api(refused)), "{refused}");
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_follow_upstream() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(!label_selector_matches(None, &l));
        assert!(label_selector_matches(Some(&LabelSelector::default()), &l));
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["front".into(), "back".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(label_selector_matches(Some(&selector), &l));
        let other = labels(&[("app", "web"), ("tier", "db")]);
        assert!(!label_selector_matches(Some(&selector), &other));
        let not_in = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
            ..Default::default()
        };
        assert!(label_selector_matches(Some(&not_in), &l));
        assert!(label_selector_matches(Some(&not_in), &labels(&[])));
        assert!(!label_selector_matches(Some(&not_in), &other));
        assert!(map_selector_matches(&labels(&[("app", "web")]), &l));
        assert!(!map_selector_matches(&labels(&[("app", "db")]), &l));
    }

    fn meta_with_owner(uid: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("p".into()),
            owner_references: uid.map(|u| {
                vec![OwnerReference {
                    uid: u.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn claims_follow_controller_ref_manager() {
        let orphan = meta_with_owner(None);
        let ours = meta_with_owner(Some("me"));
        let theirs = meta_with_owner(Some("other"));
        assert_eq!(claim("me", false, true, &orphan), Claim::Adopt);
        assert_eq!(claim("me", false, false, &orphan), Claim::Ignore);
        assert_eq!(claim("me", true, true, &orphan), Claim::Ignore);
        assert_eq!(claim("me", false, true, &ours), Claim::Owned);
        assert_eq!(claim("me", false, false, &ours), Claim::Release);
        assert_eq!(claim("me", true, false, &ours), Claim::Ignore);
        assert_eq!(claim("me", false, true, &theirs), Claim::Ignore);
        let mut deleting = orphan.clone();
        deleting.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_eq!(claim("me", false, true, &deleting), Claim::Ignore);
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let now = Timestamp::now();
        let ready_at = |seconds_ago: i64| Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(
                        Timestamp::from_second(now.as_second() - seconds_ago).unwrap(),
                    )),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(is_pod_available(&ready_at(0), 0, now));
        assert!(!is_pod_available(&ready_at(5), 10, now));
        assert!(is_pod_available(&ready_at(11), 10, now));
        assert!(!is_pod_available(&Pod::default(), 0, now));
        assert!(is_pod_active(&Pod::default()));
    }

    #[test]
    fn expectations_block_until_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_deletions("ns/rs", ["ns/a".to_owned(), "ns/b".to_owned()]);
        e.deletion_observed("ns/rs", "ns/a");
        assert!(!e.satisfied("ns/rs"));
        e.retain_deletions(|k| k != "ns/b");
        assert!(e.satisfied("ns/rs"));
    }

    #[test]
    fn expectations_accumulate_creations_and_deletions() {
        let e = Expectations::default();
        e.expect_more("ns/sts", 1, []);
        e.expect_more("ns/sts", 0, ["ns/web-2".to_owned()]);
        e.creation_observed("ns/sts");
        assert!(!e.satisfied("ns/sts"), "the deletion is still expected");
        e.deletion_observed("ns/sts", "ns/web-2");
        assert!(e.satisfied("ns/sts"));
        // Creations observed beyond what was expected do not pre-pay later ones.
        e.creation_observed("ns/sts");
        e.expect_more("ns/sts", 1, []);
        assert!(!e.satisfied("ns/sts"));
    }

    #[tokio::test]
    async fn slow_start_doubles_and_stops_on_failure() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<(), ()>(())
        })
        .await;
        assert_eq!((ok, err), (10, None));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 10);
        // Batches 1, 2, 4: the failing fourth call ends the run after the batch of 2.
        let n = std::sync::atomic::AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if i == 2 {
                    Err("boom")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!((ok, err), (2, Some("boom")));
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
