//! The ResourceQuota controller, after upstream's `pkg/controller/resourcequota`: it keeps
//! every quota's `status.hard` equal to its spec and recomputes `status.used` from the objects
//! of the quota's namespace, so that usage is released when pods finish or objects are deleted
//! (admission only ever adds to it).
//!
//! A quota is recomputed when it changes, when a pod, service, claim, config map or secret of
//! its namespace changes, and every [`RESYNC`] (which also covers `count/<resource>.<group>`
//! of kinds it does not watch). What an object counts is
//! [`nodeless_serverless::quota::usage`]: pods in their provisioned size.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::BoxStream;
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, ResourceQuota, Secret, Service,
};
use k8s_openapi::serde::de::DeserializeOwned;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{applier, Action, Config};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use nodeless_serverless::quota::{self, ResourceList};
use serde_json::{json, Value};

use crate::informer::Informers;
use crate::{ControllerError, RETRY_AFTER};

/// How often every quota is recomputed even when nothing it watches changed.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long a count that would release usage waits to be confirmed by a second count.
const SETTLE: Duration = Duration::from_millis(500);

struct Context {
    client: Client,
}

type Triggers = BoxStream<'static, Result<ObjectRef<ResourceQuota>, watcher::Error>>;

/// Runs the quota controller until its watches end.
pub async fn run(client: Client, informers: &Informers) {
    let (quotas, writer) = reflector::store::<ResourceQuota>();
    let context = Arc::new(Context {
        client: client.clone(),
    });
    let quota_triggers = watcher(
        Api::<ResourceQuota>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects()
    .map_ok(|q: ResourceQuota| ObjectRef::from_obj(&q))
    .boxed();
    let queue = stream::select_all(vec![
        quota_triggers,
        pod_triggers(informers, &quotas),
        namespace_triggers::<Service>(&client, &quotas),
        namespace_triggers::<PersistentVolumeClaim>(&client, &quotas),
        namespace_triggers::<ConfigMap>(&client, &quotas),
        namespace_triggers::<Secret>(&client, &quotas),
    ]);
    applier(
        |q, ctx| Box::pin(reconcile(q, ctx)),
        error_policy,
        context,
        quotas,
        queue,
        Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "resource quota reconcile");
        }
    })
    .await;
}

/// Every quota of the namespace of each changed object of kind `K` (a metadata-only watch).
fn namespace_triggers<K>(client: &Client, quotas: &Store<ResourceQuota>) -> Triggers
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let quotas = quotas.clone();
    let metadata: Api<PartialObjectMeta<K>> = Api::all(client.clone());
    watcher(metadata, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map_ok(move |meta| {
            stream::iter(
                quotas_of(&quotas, meta.metadata.namespace.as_deref())
                    .into_iter()
                    .map(Ok),
            )
        })
        .try_flatten()
        .boxed()
}

/// Every quota of the namespace of each changed pod (from the shared pods).
fn pod_triggers(informers: &Informers, quotas: &Store<ResourceQuota>) -> Triggers {
    let quotas = quotas.clone();
    informers
        .pods
        .subscribe()
        .flat_map(move |change| {
            let refs = match change.object() {
                Some(pod) => quotas_of(&quotas, pod.metadata.namespace.as_deref()),
                None => Vec::new(),
            };
            stream::iter(refs.into_iter().map(Ok))
        })
        .boxed()
}

/// The quotas of a namespace.
fn quotas_of(
    quotas: &Store<ResourceQuota>,
    namespace: Option<&str>,
) -> Vec<ObjectRef<ResourceQuota>> {
    let namespace = namespace.unwrap_or_default();
    quotas
        .state()
        .iter()
        .filter(|q| q.namespace().as_deref() == Some(namespace))
        .map(|q| ObjectRef::from_obj(q.as_ref()))
        .collect()
}

fn error_policy(q: Arc<ResourceQuota>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::info!(quota = %q.name_any(), %error, "resource quota sync failed");
    Action::requeue(RETRY_AFTER)
}

/// Whether two resource lists hold the same amounts of the same resources.
pub fn same_amounts(a: &ResourceList, b: &ResourceList) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|o| o.nanos() == v.nanos()))
}

/// The status a quota should have, given what its namespace's objects count (`used`).
pub fn desired_status(quota_obj: &Value, used: &ResourceList) -> Value {
    let hard = quota_obj
        .pointer("/spec/hard")
        .cloned()
        .unwrap_or_else(|| json!({}));
    json!({"hard": hard, "used": quota::list_to_json(used)})
}

/// Whether `used` is below the quota's `status.used` for some resource (a release).
pub fn lowers_usage(quota_obj: &Value, used: &ResourceList) -> bool {
    let status_used = quota::parse_list(quota_obj.pointer("/status/used"));
    used.iter().any(|(k, v)| {
        status_used
            .get(k)
            .is_some_and(|current| v.nanos() < current.nanos())
    })
}

/// Whether a quota's status already says what [`desired_status`] would.
pub fn status_is_current(quota_obj: &Value, used: &ResourceList) -> bool {
    let hard = quota::parse_list(quota_obj.pointer("/spec/hard"));
    let status_hard = quota::parse_list(quota_obj.pointer("/status/hard"));
    let status_used = quota::parse_list(quota_obj.pointer("/status/used"));
    same_amounts(&hard, &status_hard) && same_amounts(used, &status_used)
}

/// The usage of each resource of the quota's `hard` over its namespace's objects.
async fn compute_used(
    client: &Client,
    quota_obj: &Value,
    namespace: &str,
) -> Result<ResourceList, ControllerError> {
    let mut tally = quota::Tally::new(quota_obj);
    let now = SystemTime::now();
    for (group, plural) in tally.kinds() {
        let Some(resource) = api_resource(&group, &plural) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let list = api.list(&ListParams::default()).await?;
        for obj in list.items {
            let Ok(value) = serde_json::to_value(&obj) else {
                continue;
            };
            tally.add_object(&group, &plural, &value, now);
        }
    }
    Ok(tally.used())
}

/// The API resource of a namespaced kind served by this cluster, from the registry.
fn api_resource(group: &str, plural: &str) -> Option<ApiResource> {
    let kind = nodeless_api::registry::groups()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .find_map(|(g, v)| nodeless_api::registry::by_plural(g, v, plural))
        .filter(|k| k.namespaced)?;
    Some(ApiResource {
        group: kind.group.to_string(),
        version: kind.version.to_string(),
        api_version: kind.api_version(),
        kind: kind.kind.to_string(),
        plural: kind.plural.to_string(),
    })
}

async fn reconcile(
    quota_ref: Arc<ResourceQuota>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let namespace = quota_ref.namespace().unwrap_or_default();
    let name = quota_ref.name_any();
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &namespace);
    // Read the quota as it is now (the cache may lag an admission charge), then count.
    let Some(current) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let Ok(mut value) = serde_json::to_value(&current) else {
        return Ok(Action::requeue(RESYNC));
    };
    let mut used = compute_used(&ctx.client, &value, &namespace).await?;
    if status_is_current(&value, &used) {
        return Ok(Action::requeue(RESYNC));
    }
    if lowers_usage(&value, &used) {
        // Admission charges a quota just before it stores the object: a count taken in
        // between would miss it. Count again once such a write has landed; a charge after
        // our read of the quota makes the write below conflict instead.
        tokio::time::sleep(SETTLE).await;
        used = compute_used(&ctx.client, &value, &namespace).await?;
        if status_is_current(&value, &used) {
            return Ok(Action::requeue(RESYNC));
        }
    }
    let status = desired_status(&value, &used);
    if let Some(map) = value.as_object_mut() {
        map.insert("status".into(), status);
    }
    let Ok(updated) = serde_json::from_value::<ResourceQuota>(value) else {
        return Ok(Action::requeue(RESYNC));
    };
    match api
        .replace_status(&name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => {
            tracing::debug!(quota = %name, %namespace, used = %quota::pretty(&used), "quota usage recomputed");
            Ok(Action::requeue(RESYNC))
        }
        // Admission charged it meanwhile: count again.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: Value) -> ResourceList {
        quota::parse_list(Some(&v))
    }

    #[test]
    fn status_is_current_compares_amounts_not_strings() {
        let q = json!({"spec": {"hard": {"cpu": "1", "pods": "4"}},
                       "status": {"hard": {"cpu": "1000m", "pods": "4"},
                                  "used": {"cpu": "500m", "pods": "2"}}});
        assert!(status_is_current(
            &q,
            &list(json!({"cpu": "0.5", "pods": "2"}))
        ));
        assert!(!status_is_current(
            &q,
            &list(json!({"cpu": "250m", "pods": "1"}))
        ));
        let fresh = json!({"spec": {"hard": {"cpu": "1"}}});
        assert!(!status_is_current(&fresh, &list(json!({"cpu": "0"}))));
    }

    #[test]
    fn a_lower_count_is_a_release() {
        let q = json!({"spec": {"hard": {"cpu": "1"}}, "status": {"used": {"cpu": "500m"}}});
        assert!(lowers_usage(&q, &list(json!({"cpu": "250m"}))));
        assert!(!lowers_usage(&q, &list(json!({"cpu": "750m"}))));
        assert!(!lowers_usage(
            &json!({"spec": {}}),
            &list(json!({"cpu": "0"}))
        ));
    }

    #[test]
    fn desired_status_copies_hard_from_the_spec() {
        let q = json!({"spec": {"hard": {"cpu": "1", "memory": "2Gi"}}});
        let used = list(json!({"cpu": "250m", "memory": "512Mi"}));
        assert_eq!(
            desired_status(&q, &used),
            json!({"hard": {"cpu": "1", "memory": "2Gi"},
                   "used": {"cpu": "250m", "memory": "512Mi"}})
        );
    }

    #[test]
    fn kinds_resolve_to_served_api_resources() {
        let pods = api_resource("", "pods").unwrap();
        assert_eq!(
            (pods.api_version.as_str(), pods.kind.as_str()),
            ("v1", "Pod")
        );
        let deployments = api_resource("apps", "deployments").unwrap();
        assert_eq!(deployments.api_version, "apps/v1");
        assert!(api_resource("", "namespaces").is_none(), "cluster-scoped");
        assert!(api_resource("", "nothing").is_none());
    }
}
