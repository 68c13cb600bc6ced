//! ResourceQuota admission, as upstream's `plugin/pkg/admission/resourcequota`: a create (or
//! an update that raises usage) of any namespaced object is checked against every quota of its
//! namespace that selects it, `used + delta <= hard` for each resource the quota limits, and
//! refused with upstream's `exceeded quota: ...` message otherwise.
//!
//! What an object counts is [`nodeless_serverless::quota::usage`]: a pod's compute usage is its
//! provisioned size, so this plugin runs after the serverless plugin (last in the chain).
//!
//! An admitted request is charged at once: the quota's `status.used` is written with a
//! compare-and-swap on its resourceVersion (retried on conflict), so two concurrent creates
//! cannot both pass the limit. A dry run is checked but not charged. The quota controller
//! recomputes `status.used` from the objects later, which releases the usage of deleted or
//! finished objects and corrects a charge for a write that failed after admission.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use nodeless_api::registry::{self, ResourceKind};
use nodeless_apiserver::admission::{AdmissionPlugin, AdmissionRequest, Storage};
use nodeless_apiserver::ApiError;
use nodeless_serverless::quota::{self, ResourceList};
use serde_json::{json, Value};

use crate::limit_range::list_in_namespace;

/// How often a charge is retried when the quota changed under it.
const MAX_ATTEMPTS: usize = 10;

/// Enforces the namespace's ResourceQuotas and charges them at admission.
#[derive(Debug, Default)]
pub struct ResourceQuotaAdmission;

impl ResourceQuotaAdmission {
    /// The plugin.
    pub fn new() -> Self {
        Self
    }
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The registry kind of `plural` in `group` (any served version).
pub fn kind_of(group: &str, plural: &str) -> Option<&'static ResourceKind> {
    registry::groups()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .find_map(|(g, v)| registry::by_plural(g, v, plural))
}

/// A quota's decision for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The quota does not limit anything the request changes.
    Unaffected,
    /// Within the limits: the quota's new `status.used`.
    Charge(ResourceList),
    /// Over the limits: upstream's message.
    Exceeded(String),
}

/// Checks `delta` (what the request adds) against a quota whose current usage is `used`.
pub fn decide(
    quota_name: &str,
    hard: &ResourceList,
    used: &ResourceList,
    delta: &ResourceList,
) -> Decision {
    let charged: ResourceList = quota::mask(delta, hard.keys())
        .into_iter()
        .filter(|(_, v)| !v.is_zero())
        .collect();
    if charged.is_empty() {
        return Decision::Unaffected;
    }
    let mut new_used: ResourceList = hard
        .keys()
        .map(|k| (k.clone(), used.get(k).copied().unwrap_or_default()))
        .collect();
    new_used = quota::add(&new_used, &charged);
    let exceeded: Vec<String> = charged
        .keys()
        .filter(|k| match (new_used.get(*k), hard.get(*k)) {
            (Some(u), Some(h)) => u > h,
            _ => false,
        })
        .cloned()
        .collect();
    if exceeded.is_empty() {
        return Decision::Charge(new_used);
    }
    let used_now: ResourceList = exceeded
        .iter()
        .map(|k| (k.clone(), used.get(k).copied().unwrap_or_default()))
        .collect();
    Decision::Exceeded(format!(
        "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
        quota::pretty(&quota::mask(&charged, &exceeded)),
        quota::pretty(&used_now),
        quota::pretty(&quota::mask(hard, &exceeded)),
    ))
}

/// The usage of every resource of a quota's `hard`, summed over the objects of its
/// namespace that it selects (what the quota controller writes to `status.used`).
pub async fn compute_used(
    storage: &Storage,
    quota_obj: &Value,
    now: SystemTime,
) -> Result<ResourceList, ApiError> {
    let namespace = quota_obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut tally = quota::Tally::new(quota_obj);
    for (group, plural) in tally.kinds() {
        let Some(kind) = kind_of(&group, &plural).filter(|k| k.namespaced) else {
            continue;
        };
        for obj in storage.list_all(kind, Some(namespace)).await? {
            tally.add_object(&group, &plural, &obj, now);
        }
    }
    Ok(tally.used())
}

/// A quota's `status` with `used` replaced (and `hard` taken from the spec).
pub fn with_used(quota_obj: &Value, used: &ResourceList) -> Value {
    let mut updated = quota_obj.clone();
    let hard = quota_obj
        .pointer("/spec/hard")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(map) = updated.as_object_mut() {
        map.insert(
            "status".into(),
            json!({"hard": hard, "used": quota::list_to_json(used)}),
        );
    }
    updated
}

#[async_trait::async_trait]
impl AdmissionPlugin for ResourceQuotaAdmission {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    async fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        obj: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        if request.subresource.is_some() || !request.kind.namespaced || request.namespace.is_empty()
        {
            return Ok(Vec::new());
        }
        let (group, plural) = (request.kind.group, request.kind.plural);
        // A pod's resources cannot change after creation, so (as upstream) its updates are not
        // evaluated: a label change on a finished pod must not charge it again.
        if (group, plural) == ("", "pods") && request.old.is_some() {
            return Ok(Vec::new());
        }
        let now = SystemTime::now();
        let new_usage = quota::usage(group, plural, obj, now);
        let delta = match request.old {
            Some(old) => {
                quota::subtract_non_negative(&new_usage, &quota::usage(group, plural, old, now))
            }
            None => new_usage,
        };
        if delta.values().all(|v| v.is_zero()) {
            return Ok(Vec::new());
        }
        let Some(quota_kind) = registry::by_plural("", "v1", "resourcequotas") else {
            return Ok(Vec::new());
        };
        let mut charged: BTreeSet<String> = BTreeSet::new();
        for attempt in 0..MAX_ATTEMPTS {
            let quotas =
                list_in_namespace(request.storage, "resourcequotas", request.namespace).await?;
            // Check every quota before charging any.
            let mut charges: BTreeMap<String, (Value, ResourceList)> = BTreeMap::new();
            for q in quotas {
                let quota_name = name_of(&q);
                if charged.contains(&quota_name) || !quota::quota_selects(&q, group, plural, obj) {
                    continue;
                }
                let hard = quota::parse_list(q.pointer("/spec/hard"));
                let mut used = quota::parse_list(q.pointer("/status/used"));
                let affected = delta
                    .iter()
                    .any(|(k, v)| hard.contains_key(k) && !v.is_zero());
                if !affected {
                    continue;
                }
                if hard.keys().any(|k| !used.contains_key(k)) {
                    // The controller has not counted this quota yet: count it now.
                    used = compute_used(request.storage, &q, now).await?;
                }
                match decide(&quota_name, &hard, &used, &delta) {
                    Decision::Unaffected => {}
                    Decision::Charge(new_used) => {
                        charges.insert(quota_name, (q, new_used));
                    }
                    Decision::Exceeded(message) => {
                        return Err(ApiError::forbidden(request.kind, &name_of(obj), message));
                    }
                }
            }
            if request.dry_run {
                return Ok(Vec::new());
            }
            let mut conflict = false;
            for (quota_name, (q, new_used)) in charges {
                let expected = q
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or_default();
                match request
                    .storage
                    .update(quota_kind, &with_used(&q, &new_used), expected)
                    .await
                {
                    Ok(_) => {
                        charged.insert(quota_name);
                    }
                    Err(e) if e.code == 409 => {
                        tracing::debug!(quota = %quota_name, attempt, "quota changed while charging; retrying");
                        conflict = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !conflict {
                return Ok(Vec::new());
            }
        }
        Err(ApiError::forbidden(
            request.kind,
            &name_of(obj),
            format!(
                "unable to {} {} at this time because there are too many concurrent changes to its quotas",
                match request.operation {
                    nodeless_apiserver::admission::Operation::Create => "create",
                    nodeless_apiserver::admission::Operation::Update => "update",
                },
                request.kind.qualified_resource()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quota::Amount;

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        quota::parse_list(Some(&Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        )))
    }

    #[test]
    fn within_the_limit_is_charged() {
        let hard = list(&[("cpu", "1"), ("pods", "10")]);
        let used = list(&[("cpu", "500m"), ("pods", "2")]);
        let delta = list(&[("cpu", "250m"), ("pods", "1"), ("memory", "512Mi")]);
        let Decision::Charge(new_used) = decide("q", &hard, &used, &delta) else {
            panic!("should be charged");
        };
        assert_eq!(quota::pretty(&new_used), "cpu=750m,pods=3");
    }

    #[test]
    fn exactly_at_the_limit_is_allowed_and_one_more_is_not() {
        let hard = list(&[("cpu", "1")]);
        let delta = list(&[("cpu", "250m")]);
        let used = list(&[("cpu", "750m")]);
        assert!(matches!(
            decide("q", &hard, &used, &delta),
            Decision::Charge(_)
        ));
        let used = list(&[("cpu", "1")]);
        assert_eq!(
            decide("compute", &hard, &used, &delta),
            Decision::Exceeded(
                "exceeded quota: compute, requested: cpu=250m, used: cpu=1, limited: cpu=1".into()
            )
        );
    }

    #[test]
    fn only_exceeded_resources_are_named() {
        let hard = list(&[("limits.memory", "2Gi"), ("pods", "5")]);
        let used = list(&[("limits.memory", "1536Mi"), ("pods", "1")]);
        let delta = list(&[("limits.memory", "1Gi"), ("pods", "1")]);
        assert_eq!(
            decide("mem", &hard, &used, &delta),
            Decision::Exceeded(
                "exceeded quota: mem, requested: limits.memory=1Gi, used: limits.memory=1536Mi, limited: limits.memory=2Gi".into()
            )
        );
    }

    #[test]
    fn resources_the_quota_does_not_limit_leave_it_alone() {
        let hard = list(&[("services", "1")]);
        let used = list(&[("services", "1")]);
        let delta = list(&[("configmaps", "1")]);
        assert_eq!(decide("q", &hard, &used, &delta), Decision::Unaffected);
        let zero = ResourceList::from([("services".to_string(), Amount::count(0))]);
        assert_eq!(decide("q", &hard, &used, &zero), Decision::Unaffected);
    }

    #[test]
    fn the_fifth_smallest_pod_exceeds_one_vcpu() {
        let hard = list(&[("cpu", "1")]);
        let pod = json!({"metadata": {"annotations": {nodeless_serverless::ANNOTATION: "0.25vCPU 0.5GiB"}},
                         "spec": {"containers": [{"name": "a"}]}});
        let delta = quota::usage("", "pods", &pod, SystemTime::now());
        let mut used = list(&[("cpu", "0")]);
        for _ in 0..4 {
            match decide("compute", &hard, &used, &delta) {
                Decision::Charge(u) => used = u,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(quota::pretty(&used), "cpu=1");
        assert_eq!(
            decide("compute", &hard, &used, &delta),
            Decision::Exceeded(
                "exceeded quota: compute, requested: cpu=250m, used: cpu=1, limited: cpu=1".into()
            )
        );
    }

    #[test]
    fn the_new_status_lists_hard_and_used() {
        let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"cpu": "1"}}});
        let used = list(&[("cpu", "250m")]);
        let updated = with_used(&q, &used);
        assert_eq!(
            updated["status"],
            json!({"hard": {"cpu": "1"}, "used": {"cpu": "250m"}})
        );
        assert_eq!(updated["spec"], q["spec"]);
    }

    #[test]
    fn kinds_are_found_in_any_version() {
        assert_eq!(
            kind_of("apps", "deployments").map(|k| k.kind),
            Some("Deployment")
        );
        assert_eq!(kind_of("", "pods").map(|k| k.kind), Some("Pod"));
        assert!(kind_of("nope", "things").is_none());
    }

    mod admit {
        use std::sync::Arc;

        use nodeless_apiserver::admission::Operation;

        use super::*;

        fn storage(dir: &tempfile::TempDir) -> Storage {
            let store = nodeless_store::SqliteStore::open(dir.path().join("db")).unwrap();
            Storage::new(Arc::new(store))
        }

        fn kind(plural: &str) -> &'static ResourceKind {
            registry::by_plural("", "v1", plural).unwrap()
        }

        async fn add_quota(storage: &Storage, name: &str, hard: Value) {
            let q = json!({"apiVersion": "v1", "kind": "ResourceQuota",
                           "metadata": {"name": name, "namespace": "team"},
                           "spec": {"hard": hard}});
            storage.create(kind("resourcequotas"), &q).await.unwrap();
        }

        async fn quota_used(storage: &Storage, name: &str) -> Value {
            let q = storage
                .get(kind("resourcequotas"), Some("team"), name)
                .await
                .unwrap()
                .unwrap();
            q["status"]["used"].clone()
        }

        fn small_pod(name: &str) -> Value {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": "team",
                                "annotations": {nodeless_serverless::ANNOTATION: "0.25vCPU 0.5GiB"}},
                   "spec": {"containers": [{"name": "a", "image": "busybox"}]},
                   "status": {"phase": "Pending"}})
        }

        async fn admit(
            storage: &Storage,
            plural: &str,
            obj: &mut Value,
            old: Option<&Value>,
            dry_run: bool,
        ) -> Result<Vec<String>, ApiError> {
            let request = AdmissionRequest {
                kind: kind(plural),
                operation: if old.is_some() {
                    Operation::Update
                } else {
                    Operation::Create
                },
                subresource: None,
                old,
                dry_run,
                namespace: "team",
                user: None,
                storage,
            };
            ResourceQuotaAdmission::new().admit(&request, obj).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_creates_cannot_both_pass_the_limit() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            add_quota(&storage, "compute", json!({"cpu": "1"})).await;
            let attempts = (0..8).map(|i| {
                let storage = storage.clone();
                tokio::spawn(async move {
                    let mut pod = small_pod(&format!("p{i}"));
                    admit(&storage, "pods", &mut pod, None, false).await
                })
            });
            let results = futures_join(attempts).await;
            let admitted = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(admitted, 4, "{results:?}");
            for refused in results.iter().filter_map(|r| r.as_ref().err()) {
                assert_eq!(refused.code, 403);
                assert!(
                    refused.message.contains("exceeded quota: compute"),
                    "{}",
                    refused.message
                );
            }
            assert_eq!(quota_used(&storage, "compute").await, json!({"cpu": "1"}));
        }

        async fn futures_join(
            handles: impl Iterator<Item = tokio::task::JoinHandle<Result<Vec<String>, ApiError>>>,
        ) -> Vec<Result<Vec<String>, ApiError>> {
            let mut out = Vec::new();
            for h in handles.collect::<Vec<_>>() {
                out.push(h.await.unwrap());
            }
            out
        }

        #[tokio::test]
        async fn a_dry_run_is_checked_but_not_charged() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            add_quota(&storage, "compute", json!({"cpu": "250m", "pods": "5"})).await;
            let mut pod = small_pod("a");
            admit(&storage, "pods", &mut pod, None, true).await.unwrap();
            // No status yet: the dry run counted the namespace but wrote nothing.
            assert_eq!(quota_used(&storage, "compute").await, Value::Null);
            admit(&storage, "pods", &mut pod, None, false)
                .await
                .unwrap();
            assert_eq!(
                quota_used(&storage, "compute").await,
                json!({"cpu": "250m", "pods": "1"})
            );
            let mut second = small_pod("b");
            let err = admit(&storage, "pods", &mut second, None, true)
                .await
                .unwrap_err();
            assert_eq!(
                err.message,
                "pods \"b\" is forbidden: exceeded quota: compute, requested: cpu=250m, used: cpu=250m, limited: cpu=250m"
            );
        }

        #[tokio::test]
        async fn a_new_quota_counts_what_is_already_there() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            for name in ["x", "y"] {
                storage
                    .create(kind("pods"), &small_pod(name))
                    .await
                    .unwrap();
            }
            let mut done = small_pod("done");
            done["status"]["phase"] = json!("Succeeded");
            storage.create(kind("pods"), &done).await.unwrap();
            add_quota(&storage, "compute", json!({"pods": "3", "memory": "1Gi"})).await;
            let mut pod = small_pod("z");
            let err = admit(&storage, "pods", &mut pod, None, false)
                .await
                .unwrap_err();
            assert!(
                err.message.ends_with(
                    "exceeded quota: compute, requested: memory=512Mi, used: memory=1Gi, limited: memory=1Gi"
                ),
                "{}",
                err.message
            );
        }

        #[tokio::test]
        async fn an_update_that_raises_usage_is_checked() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            add_quota(&storage, "lb", json!({"services.loadbalancers": "0"})).await;
            let old = json!({"metadata": {"name": "s", "namespace": "team"},
                             "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
            let mut new = old.clone();
            new["spec"]["type"] = json!("LoadBalancer");
            let err = admit(&storage, "services", &mut new, Some(&old), false)
                .await
                .unwrap_err();
            assert!(
                err.message.contains("exceeded quota: lb, requested: services.loadbalancers=1, used: services.loadbalancers=0, limited: services.loadbalancers=0"),
                "{}",
                err.message
            );
            // A pod update is not evaluated, even when the old pod had finished.
            add_quota(&storage, "pods", json!({"pods": "0"})).await;
            let mut finished = small_pod("f");
            finished["status"]["phase"] = json!("Succeeded");
            let mut relabelled = small_pod("f");
            admit(&storage, "pods", &mut relabelled, Some(&finished), false)
                .await
                .unwrap();
            // A change that adds nothing is not charged.
            let mut same = old.clone();
            same["metadata"]["labels"] = json!({"a": "b"});
            admit(&storage, "services", &mut same, Some(&old), false)
                .await
                .unwrap();
        }

        #[tokio::test]
        async fn scoped_quotas_charge_only_what_they_select() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            let q = json!({"apiVersion": "v1", "kind": "ResourceQuota",
                           "metadata": {"name": "jobs", "namespace": "team"},
                           "spec": {"hard": {"pods": "1"}, "scopes": ["Terminating"]}});
            storage.create(kind("resourcequotas"), &q).await.unwrap();
            for name in ["a", "b"] {
                let mut pod = small_pod(name);
                admit(&storage, "pods", &mut pod, None, false)
                    .await
                    .unwrap();
            }
            let mut job_pod = small_pod("j1");
            job_pod["spec"]["activeDeadlineSeconds"] = json!(60);
            admit(&storage, "pods", &mut job_pod, None, false)
                .await
                .unwrap();
            storage.create(kind("pods"), &job_pod).await.unwrap();
            let mut second = small_pod("j2");
            second["spec"]["activeDeadlineSeconds"] = json!(60);
            let err = admit(&storage, "pods", &mut second, None, false)
                .await
                .unwrap_err();
            assert!(
                err.message.contains("exceeded quota: jobs"),
                "{}",
                err.message
            );
        }
    }
}
