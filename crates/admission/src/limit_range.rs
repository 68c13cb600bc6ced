//! LimitRanger, as upstream's `plugin/pkg/admission/limitranger`: a new pod's containers get
//! the `default` limits and `defaultRequest` requests of the namespace's `type: Container`
//! LimitRange items, then pods are checked against every item's `min`, `max` and
//! `maxLimitRequestRatio` (per container and per pod), and PersistentVolumeClaims against the
//! `type: PersistentVolumeClaim` items' storage `min` and `max`.
//!
//! It runs before the serverless plugin, so that defaulted limits are what a pod is sized by.

use nodeless_api::error::FieldError;
use nodeless_api::quantity::Quantity;
use nodeless_api::registry::{self, ResourceKind};
use nodeless_apiserver::admission::{AdmissionPlugin, AdmissionRequest, Operation, Storage};
use nodeless_apiserver::ApiError;
use nodeless_serverless::quota::Amount;
use serde_json::{Map, Value};

/// The annotation naming what LimitRanger set on a pod.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Applies and enforces the namespace's LimitRanges.
#[derive(Debug, Default)]
pub struct LimitRanger;

impl LimitRanger {
    /// The plugin.
    pub fn new() -> Self {
        Self
    }
}

fn name_of(obj: &Value) -> String {
    let meta = obj.get("metadata");
    let text = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    text("name")
        .filter(|n| !n.is_empty())
        .or_else(|| text("generateName"))
        .unwrap_or("Unknown")
        .to_string()
}

/// The LimitRanges of one namespace.
pub(crate) async fn list_in_namespace(
    storage: &Storage,
    plural: &str,
    namespace: &str,
) -> Result<Vec<Value>, ApiError> {
    let Some(kind) = registry::by_plural("", "v1", plural) else {
        return Ok(Vec::new());
    };
    storage.list_all(kind, Some(namespace)).await
}

#[async_trait::async_trait]
impl AdmissionPlugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    async fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        obj: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        if request.subresource.is_some() || !request.kind.group.is_empty() {
            return Ok(Vec::new());
        }
        let is_pod = request.kind.kind == "Pod";
        let is_claim = request.kind.kind == "PersistentVolumeClaim";
        // Pod containers are immutable, so only a pod's creation is limited (as upstream).
        if !(is_claim || (is_pod && request.operation == Operation::Create)) {
            return Ok(Vec::new());
        }
        let ranges = list_in_namespace(request.storage, "limitranges", request.namespace).await?;
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let errors = if is_pod {
            for range in &ranges {
                apply_defaults(range, obj);
            }
            check_defaulted_requests(request.kind, obj)?;
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            let qos = nodeless_api::defaults::pod_qos_class(&spec);
            if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
                status.insert("qosClass".into(), Value::String(qos.into()));
            }
            ranges.iter().flat_map(|r| validate_pod(r, obj)).collect()
        } else {
            ranges
                .iter()
                .flat_map(|r| validate_claim(r, obj))
                .collect::<Vec<_>>()
        };
        if errors.is_empty() {
            return Ok(Vec::new());
        }
        Err(ApiError::forbidden(
            request.kind,
            &name_of(obj),
            aggregate(errors),
        ))
    }
}

/// Upstream's error aggregate: one message as is, several (without repeats) in brackets.
fn aggregate(errors: Vec<String>) -> String {
    let mut unique: Vec<String> = Vec::new();
    for e in errors {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    if unique.len() == 1 {
        unique.remove(0)
    } else {
        format!("[{}]", unique.join(", "))
    }
}

fn items_of<'a>(range: &'a Value, limit_type: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    range
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(move |item| item.get("type").and_then(Value::as_str) == Some(limit_type))
}

fn list_of<'a>(item: &'a Value, field: &str) -> Option<&'a Map<String, Value>> {
    item.get(field).and_then(Value::as_object)
}

/// Sets each container's missing limits from `default` and missing requests from
/// `defaultRequest` of the range's Container items; records what it set in [`ANNOTATION`].
pub fn apply_defaults(range: &Value, pod: &mut Value) {
    let mut default_limits = Map::new();
    let mut default_requests = Map::new();
    for item in items_of(range, "Container") {
        if let Some(d) = list_of(item, "default") {
            default_limits.extend(d.clone());
        }
        if let Some(d) = list_of(item, "defaultRequest") {
            default_requests.extend(d.clone());
        }
    }
    if default_limits.is_empty() && default_requests.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (field, label) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(containers) = pod
            .pointer_mut(&format!("/spec/{field}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for container in containers {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let Some(c) = container.as_object_mut() else {
                continue;
            };
            let resources = object_entry(c, "resources");
            let set_requests = fill_missing(resources, "requests", &default_requests);
            let set_limits = fill_missing(resources, "limits", &default_limits);
            if !set_requests.is_empty() {
                notes.push(format!(
                    "{} request for {label} {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                notes.push(format!(
                    "{} limit for {label} {name}",
                    set_limits.join(", ")
                ));
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    if let Some(meta) = pod.as_object_mut().map(|p| object_entry(p, "metadata")) {
        let annotations = object_entry(meta, "annotations");
        annotations.insert(
            ANNOTATION.into(),
            Value::String(format!("LimitRanger plugin set: {}", notes.join("; "))),
        );
    }
}

fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("the entry was just made an object"),
    }
}

/// Copies the defaults that `resources[field]` lacks; returns their names, sorted.
fn fill_missing(
    resources: &mut Map<String, Value>,
    field: &str,
    defaults: &Map<String, Value>,
) -> Vec<String> {
    if defaults.is_empty() {
        return Vec::new();
    }
    let list = object_entry(resources, field);
    let mut set = Vec::new();
    for (name, value) in defaults {
        if !list.contains_key(name) {
            list.insert(name.clone(), value.clone());
            set.push(name.clone());
        }
    }
    set.sort();
    set
}

/// Upstream validates the pod after admission: a defaulted request above the container's
/// limit is invalid.
fn check_defaulted_requests(kind: &ResourceKind, pod: &Value) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    for field in ["containers", "initContainers"] {
        let containers = pod
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, c) in containers.iter().enumerate() {
            let requests = resource_list(c.pointer("/resources/requests"));
            let limits = resource_list(c.pointer("/resources/limits"));
            for (name, request) in &requests {
                let Some((_, limit)) = limits.iter().find(|(n, _)| n == name) else {
                    continue;
                };
                if request > limit {
                    let value = c
                        .pointer(&format!("/resources/requests/{name}"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    errors.push(FieldError::invalid(
                        format!("spec.{field}[{i}].resources.requests"),
                        value,
                        format!("must be less than or equal to {name} limit of {limit}"),
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, &name_of(pod), &errors))
    }
}

type Resources = Vec<(String, Quantity)>;

/// One of upstream's constraint checks: (limit type, resource, enforced, requests, limits).
type Constraint = fn(&str, &str, &Quantity, &Resources, &Resources) -> Option<String>;

fn resource_list(v: Option<&Value>) -> Resources {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let q = match v {
                        Value::String(s) => Quantity::parse(s).ok(),
                        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
                        _ => None,
                    }?;
                    Some((k.clone(), q))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn find<'a>(list: &'a Resources, name: &str) -> Option<&'a Quantity> {
    list.iter().find(|(n, _)| n == name).map(|(_, q)| q)
}

/// The canonical form upstream prints a quantity in (`1`, `500m`, `1Gi`).
fn shown(q: &Quantity) -> String {
    Amount::from_quantity(q).to_string()
}

fn min_constraint(
    limit_type: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &Resources,
    limits: &Resources,
) -> Option<String> {
    let enforced_text = shown(enforced);
    let Some(request) = find(requests, resource) else {
        return Some(format!(
            "minimum {resource} usage per {limit_type} is {enforced_text}.  No request is specified"
        ));
    };
    if request < enforced {
        return Some(format!(
            "minimum {resource} usage per {limit_type} is {enforced_text}, but request is {}",
            shown(request)
        ));
    }
    match find(limits, resource) {
        Some(limit) if limit < enforced => Some(format!(
            "minimum {resource} usage per {limit_type} is {enforced_text}, but limit is {}",
            shown(limit)
        )),
        _ => None,
    }
}

fn max_constraint(
    limit_type: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &Resources,
    limits: &Resources,
) -> Option<String> {
    let enforced_text = shown(enforced);
    let Some(limit) = find(limits, resource) else {
        return Some(format!(
            "maximum {resource} usage per {limit_type} is {enforced_text}.  No limit is specified"
        ));
    };
    if limit > enforced {
        return Some(format!(
            "maximum {resource} usage per {limit_type} is {enforced_text}, but limit is {}",
            shown(limit)
        ));
    }
    match find(requests, resource) {
        Some(request) if request > enforced => Some(format!(
            "maximum {resource} usage per {limit_type} is {enforced_text}, but request is {}",
            shown(request)
        )),
        _ => None,
    }
}

fn max_request_constraint(
    limit_type: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &Resources,
) -> Option<String> {
    let enforced_text = shown(enforced);
    match find(requests, resource) {
        None => Some(format!(
            "maximum {resource} usage per {limit_type} is {enforced_text}.  No request is specified"
        )),
        Some(request) if request > enforced => Some(format!(
            "maximum {resource} usage per {limit_type} is {enforced_text}, but request is {}",
            shown(request)
        )),
        _ => None,
    }
}

fn ratio_constraint(
    limit_type: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &Resources,
    limits: &Resources,
) -> Option<String> {
    let enforced_text = shown(enforced);
    let request = find(requests, resource).filter(|q| q.to_millis() != 0);
    let Some(request) = request else {
        return Some(format!(
            "{resource} max limit to request ratio per {limit_type} is {enforced_text}, but no request is specified or request is 0"
        ));
    };
    let limit = find(limits, resource).filter(|q| q.to_millis() != 0);
    let Some(limit) = limit else {
        return Some(format!(
            "{resource} max limit to request ratio per {limit_type} is {enforced_text}, but no limit is specified or limit is 0"
        ));
    };
    let observed = limit.to_millis() as f64 / request.to_millis() as f64;
    if observed * 1000.0 > enforced.to_millis() as f64 {
        return Some(format!(
            "{resource} max limit to request ratio per {limit_type} is {enforced_text}, but provided ratio is {observed:.6}"
        ));
    }
    None
}

/// The min, max and ratio checks of one item against a set of requests and limits.
fn check_item(
    item: &Value,
    limit_type: &str,
    requests: &Resources,
    limits: &Resources,
) -> Vec<String> {
    let mut errors = Vec::new();
    let checks: [(&str, Constraint); 3] = [
        ("min", min_constraint),
        ("max", max_constraint),
        ("maxLimitRequestRatio", ratio_constraint),
    ];
    for (field, check) in checks {
        for (resource, enforced) in resource_list(item.get(field)) {
            errors.extend(check(limit_type, &resource, &enforced, requests, limits));
        }
    }
    errors
}

/// Checks a pod against one LimitRange; returns upstream's messages.
pub fn validate_pod(range: &Value, pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let containers = |field: &str| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for item in items_of(range, "Container") {
        for c in containers("containers")
            .iter()
            .chain(containers("initContainers").iter())
        {
            let requests = resource_list(c.pointer("/resources/requests"));
            let limits = resource_list(c.pointer("/resources/limits"));
            errors.extend(check_item(item, "Container", &requests, &limits));
        }
    }
    let mut pod_totals = None;
    for item in items_of(range, "Pod") {
        let (requests, limits) = pod_totals
            .get_or_insert_with(|| (pod_total(pod, "requests"), pod_total(pod, "limits")));
        errors.extend(check_item(item, "Pod", requests, limits));
    }
    errors
}

/// The pod's total of `requests` or `limits` as upstream's `PodRequests`/`PodLimits`: app
/// containers and sidecars summed, each regular init container with the sidecars before it,
/// the larger of the two; pod-level resources override.
fn pod_total(pod: &Value, field: &str) -> Resources {
    let list = |c: &Value| resource_list(c.pointer(&format!("/resources/{field}")));
    let mut total: Vec<(String, i128)> = Vec::new();
    let add_to = |acc: &mut Vec<(String, i128)>, items: Resources| {
        for (name, q) in items {
            match acc.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => *v += q.to_nanos(),
                None => acc.push((name, q.to_nanos())),
            }
        }
    };
    let array = |key: &str| {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for c in array("containers") {
        add_to(&mut total, list(&c));
    }
    let mut sidecars: Vec<(String, i128)> = Vec::new();
    let mut init_max: Vec<(String, i128)> = Vec::new();
    for c in array("initContainers") {
        let is_sidecar = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
        if is_sidecar {
            add_to(&mut sidecars, list(&c));
            continue;
        }
        let mut phase = sidecars.clone();
        add_to(&mut phase, list(&c));
        for (name, v) in phase {
            match init_max.iter_mut().find(|(n, _)| *n == name) {
                Some((_, m)) => *m = (*m).max(v),
                None => init_max.push((name, v)),
            }
        }
    }
    for (name, v) in sidecars {
        match total.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += v,
            None => total.push((name, v)),
        }
    }
    for (name, v) in init_max {
        match total.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t = (*t).max(v),
            None => total.push((name, v)),
        }
    }
    let mut out: Resources = total
        .into_iter()
        .filter_map(|(name, nanos)| nanos_quantity(nanos, &name).map(|q| (name, q)))
        .collect();
    for (name, q) in resource_list(pod.pointer(&format!("/spec/resources/{field}"))) {
        if name == "cpu" || name == "memory" {
            out.retain(|(n, _)| *n != name);
            out.push((name, q));
        }
    }
    out
}

/// A quantity from a nano count, in the canonical form (binary for memory-like resources).
fn nanos_quantity(nanos: i128, resource: &str) -> Option<Quantity> {
    let amount = if resource == "cpu" {
        Amount::milli(nanos.div_euclid(1_000_000))
    } else {
        Amount::bytes(nanos.div_euclid(1_000_000_000))
    };
    Quantity::parse(&amount.to_string()).ok()
}

/// Checks a PersistentVolumeClaim's storage request against one LimitRange.
pub fn validate_claim(range: &Value, claim: &Value) -> Vec<String> {
    let requests = resource_list(claim.pointer("/spec/resources/requests"));
    let mut errors = Vec::new();
    for item in items_of(range, "PersistentVolumeClaim") {
        for (resource, enforced) in resource_list(item.get("min")) {
            errors.extend(min_constraint(
                "PersistentVolumeClaim",
                &resource,
                &enforced,
                &requests,
                &Vec::new(),
            ));
        }
        for (resource, enforced) in resource_list(item.get("max")) {
            errors.extend(max_request_constraint(
                "PersistentVolumeClaim",
                &resource,
                &enforced,
                &requests,
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn range(items: Value) -> Value {
        json!({"spec": {"limits": items}})
    }

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "x"}, "spec": {"containers": containers}, "status": {}})
    }

    #[test]
    fn defaults_fill_only_what_is_missing_and_are_annotated() {
        let r = range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "512Mi"},
            "defaultRequest": {"cpu": "250m"}}]));
        let mut p = pod(json!([
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}},
        ]));
        apply_defaults(&r, &mut p);
        let a = &p["spec"]["containers"][0]["resources"];
        assert_eq!(a["limits"], json!({"cpu": "500m", "memory": "512Mi"}));
        assert_eq!(a["requests"], json!({"cpu": "250m"}));
        let b = &p["spec"]["containers"][1]["resources"];
        assert_eq!(b["limits"], json!({"cpu": "1", "memory": "512Mi"}));
        assert_eq!(b["requests"], json!({"cpu": "1"}));
        assert_eq!(
            p["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container a; cpu, memory limit for container a; memory limit for container b"
        );
    }

    #[test]
    fn no_container_defaults_leave_the_pod_alone() {
        let r = range(json!([{"type": "Pod", "max": {"cpu": "2"}}]));
        let mut p = pod(json!([{"name": "a"}]));
        let before = p.clone();
        apply_defaults(&r, &mut p);
        assert_eq!(p, before);
    }

    #[test]
    fn container_max_refuses_a_larger_limit() {
        let r = range(json!([{"type": "Container", "max": {"cpu": "1"}}]));
        let p = pod(json!([{"name": "a", "resources": {"limits": {"cpu": "2"}}}]));
        assert_eq!(
            validate_pod(&r, &p),
            vec!["maximum cpu usage per Container is 1, but limit is 2"]
        );
        let p = pod(json!([{"name": "a"}]));
        assert_eq!(
            validate_pod(&r, &p),
            vec!["maximum cpu usage per Container is 1.  No limit is specified"]
        );
        let p = pod(json!([{"name": "a", "resources": {"limits": {"cpu": "1000m"}}}]));
        assert!(validate_pod(&r, &p).is_empty());
        let p = pod(json!([{"name": "a", "resources": {
            "limits": {"cpu": "1"}, "requests": {"cpu": "1500m"}}}]));
        assert_eq!(
            validate_pod(&r, &p),
            vec!["maximum cpu usage per Container is 1, but request is 1500m"]
        );
    }

    #[test]
    fn container_min_needs_a_request_at_least_as_large() {
        let r = range(json!([{"type": "Container", "min": {"memory": "128Mi"}}]));
        let p = pod(json!([{"name": "a"}]));
        assert_eq!(
            validate_pod(&r, &p),
            vec!["minimum memory usage per Container is 128Mi.  No request is specified"]
        );
        let p = pod(json!([{"name": "a", "resources": {"requests": {"memory": "64Mi"}}}]));
        assert_eq!(
            validate_pod(&r, &p),
            vec!["minimum memory usage per Container is 128Mi, but request is 64Mi"]
        );
        let p = pod(json!([{"name": "a", "resources": {
            "requests": {"memory": "128Mi"}, "limits": {"memory": "100Mi"}}}]));
        assert_eq!(
            validate_pod(&r, &p),
            vec!["minimum memory usage per Container is 128Mi, but limit is 100Mi"]
        );
    }

    #[test]
    fn limit_to_request_ratio() {
        let r = range(json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}]));
        let p = pod(json!([{"name": "a", "resources": {
            "requests": {"cpu": "100m"}, "limits": {"cpu": "300m"}}}]));
        assert_eq!(
            validate_pod(&r, &p),
            vec![
                "cpu max limit to request ratio per Container is 2, but provided ratio is 3.000000"
            ]
        );
        let p = pod(json!([{"name": "a", "resources": {
            "requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}}]));
        assert!(validate_pod(&r, &p).is_empty());
        let p = pod(json!([{"name": "a", "resources": {"limits": {"cpu": "200m"}}}]));
        assert_eq!(
            validate_pod(&r, &p),
            vec!["cpu max limit to request ratio per Container is 2, but no request is specified or request is 0"]
        );
    }

    #[test]
    fn pod_items_check_the_sum_of_containers() {
        let r = range(json!([{"type": "Pod", "max": {"memory": "1Gi"}}]));
        let p = pod(json!([
            {"name": "a", "resources": {"limits": {"memory": "768Mi"}}},
            {"name": "b", "resources": {"limits": {"memory": "512Mi"}}},
        ]));
        assert_eq!(
            validate_pod(&r, &p),
            vec!["maximum memory usage per Pod is 1Gi, but limit is 1280Mi"]
        );
        let mut p = p;
        p["spec"]["containers"][1]["resources"]["limits"]["memory"] = json!("256Mi");
        assert!(validate_pod(&r, &p).is_empty());
    }

    #[test]
    fn claims_are_checked_against_storage_min_and_max() {
        let r = range(json!([{"type": "PersistentVolumeClaim",
            "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]));
        let claim = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert!(validate_claim(&r, &claim("5Gi")).is_empty());
        assert_eq!(
            validate_claim(&r, &claim("20Gi")),
            vec!["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]
        );
        assert_eq!(
            validate_claim(&r, &claim("500Mi")),
            vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
    }

    #[test]
    fn several_errors_are_aggregated_without_repeats() {
        assert_eq!(aggregate(vec!["a".into()]), "a");
        assert_eq!(
            aggregate(vec!["a".into(), "b".into(), "a".into()]),
            "[a, b]"
        );
    }

    mod admit {
        use std::sync::Arc;

        use super::*;

        fn storage(dir: &tempfile::TempDir) -> Storage {
            let store = nodeless_store::SqliteStore::open(dir.path().join("db")).unwrap();
            Storage::new(Arc::new(store))
        }

        async fn add_range(storage: &Storage, limits: Value) {
            let kind = registry::by_plural("", "v1", "limitranges").unwrap();
            let range = json!({"apiVersion": "v1", "kind": "LimitRange",
                               "metadata": {"name": "limits", "namespace": "team"},
                               "spec": {"limits": limits}});
            storage.create(kind, &range).await.unwrap();
        }

        async fn admit(storage: &Storage, obj: &mut Value) -> Result<Vec<String>, ApiError> {
            let request = AdmissionRequest {
                kind: registry::by_plural("", "v1", "pods").unwrap(),
                operation: Operation::Create,
                subresource: None,
                old: None,
                dry_run: false,
                namespace: "team",
                user: None,
                storage,
            };
            LimitRanger::new().admit(&request, obj).await
        }

        fn new_pod(resources: Value) -> Value {
            json!({"metadata": {"name": "web", "namespace": "team"},
                   "spec": {"containers": [{"name": "a", "image": "busybox", "resources": resources}]},
                   "status": {"phase": "Pending", "qosClass": "BestEffort"}})
        }

        #[tokio::test]
        async fn defaults_are_applied_and_the_qos_class_follows() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            add_range(
                &storage,
                json!([{"type": "Container",
                "default": {"cpu": "1", "memory": "1Gi"},
                "defaultRequest": {"cpu": "1", "memory": "1Gi"}}]),
            )
            .await;
            let mut pod = new_pod(json!({}));
            admit(&storage, &mut pod).await.unwrap();
            assert_eq!(
                pod["spec"]["containers"][0]["resources"]["limits"]["cpu"],
                "1"
            );
            assert_eq!(pod["status"]["qosClass"], "Guaranteed");
        }

        #[tokio::test]
        async fn refusals_are_forbidden_with_the_pod_name() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            add_range(
                &storage,
                json!([{"type": "Container", "max": {"cpu": "1"}}]),
            )
            .await;
            let mut pod = new_pod(json!({"limits": {"cpu": "2"}}));
            let err = admit(&storage, &mut pod).await.unwrap_err();
            assert_eq!(err.code, 403);
            assert_eq!(
                err.message,
                "pods \"web\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
            );
        }

        #[tokio::test]
        async fn a_default_request_above_the_limit_is_invalid() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            add_range(
                &storage,
                json!([{"type": "Container",
                "defaultRequest": {"cpu": "2"}}]),
            )
            .await;
            let mut pod =
                new_pod(json!({"limits": {"memory": "1Gi"}, "requests": {"memory": "1Gi"}}));
            admit(&storage, &mut pod).await.unwrap();
            let mut pod = new_pod(json!({"limits": {"cpu": "1"}}));
            let err = admit(&storage, &mut pod).await.unwrap_err();
            assert_eq!(err.code, 422, "{}", err.message);
            assert!(
                err.message
                    .contains("must be less than or equal to cpu limit of 1"),
                "{}",
                err.message
            );
        }

        #[tokio::test]
        async fn without_limit_ranges_nothing_changes() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            let mut pod = new_pod(json!({}));
            let before = pod.clone();
            admit(&storage, &mut pod).await.unwrap();
            assert_eq!(pod, before);
        }
    }
}
