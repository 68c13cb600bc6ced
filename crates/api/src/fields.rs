//! Field selectors per kind, as upstream's field label conversion functions
//! (`pkg/apis/*/v1/conversion.go`, `AddFieldLabelConversionFunc`) decide which field labels a
//! kind accepts, and its registry strategies' `ToSelectableFields` (`pkg/registry/*/strategy.go`)
//! decide each label's value.
//!
//! A kind without a conversion function accepts only `metadata.name` and `metadata.namespace`
//! (upstream's `DefaultMetaV1FieldSelectorConversion`); that is the case for every `apps` kind,
//! so `status.replicas` works for ReplicationControllers but not for apps/v1 ReplicaSets.

use serde_json::Value;

use crate::selector::FieldSelector;

/// What one kind accepts: its field labels, the legacy aliases it rewrites, and the wording
/// of its rejection.
struct KindFields {
    labels: &'static [&'static str],
    /// `(alias, canonical)`: accepted and read as the canonical label.
    aliases: &'static [(&'static str, &'static str)],
    reject: Reject,
}

/// The upstream wording of "this field label is not accepted".
#[derive(Clone, Copy)]
enum Reject {
    /// `field label not supported: <label>` (core kinds, events, certificates).
    NotSupported,
    /// `field label "<label>" not supported for Job`.
    Job,
    /// `"<label>" is not a known field selector: only "metadata.name", "metadata.namespace"`.
    Default,
}

const DEFAULT_FIELDS: KindFields = KindFields {
    labels: &["metadata.name", "metadata.namespace"],
    aliases: &[],
    reject: Reject::Default,
};

const CORE_EVENT_LABELS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const EVENTS_V1_LABELS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "source",
    "type",
];

fn kind_fields(group: &str, kind: &str) -> KindFields {
    let simple = |labels: &'static [&'static str]| KindFields {
        labels,
        aliases: &[],
        reject: Reject::NotSupported,
    };
    match (group, kind) {
        ("", "Pod") => KindFields {
            labels: &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ],
            // Old v1 clients send spec.host.
            aliases: &[("spec.host", "spec.nodeName")],
            reject: Reject::NotSupported,
        },
        ("", "Node") => simple(&["metadata.name", "spec.unschedulable"]),
        ("", "ReplicationController") => {
            simple(&["metadata.name", "metadata.namespace", "status.replicas"])
        }
        ("", "Event") => simple(CORE_EVENT_LABELS),
        ("events.k8s.io", "Event") => simple(EVENTS_V1_LABELS),
        ("", "Namespace") => simple(&["metadata.name", "status.phase"]),
        ("", "Secret") => simple(&["metadata.name", "metadata.namespace", "type"]),
        ("", "Service") => simple(&[
            "metadata.name",
            "metadata.namespace",
            "spec.clusterIP",
            "spec.type",
        ]),
        ("batch", "Job") => KindFields {
            labels: &["metadata.name", "metadata.namespace", "status.successful"],
            aliases: &[],
            reject: Reject::Job,
        },
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            simple(&["metadata.name", "spec.signerName"])
        }
        _ => DEFAULT_FIELDS,
    }
}

/// The field labels a kind accepts in `?fieldSelector=` (without legacy aliases such as pods'
/// `spec.host`, which are accepted too). Cluster-scoped kinds with their own conversion
/// (Node, Namespace, CertificateSigningRequest) do not accept `metadata.namespace`, as upstream.
pub fn supported_fields(group: &str, kind: &str) -> Vec<&'static str> {
    kind_fields(group, kind).labels.to_vec()
}

/// Whether `field` is accepted for the kind (including aliases).
pub fn is_supported_field(group: &str, kind: &str, field: &str) -> bool {
    let k = kind_fields(group, kind);
    k.labels.contains(&field) || k.aliases.iter().any(|(alias, _)| *alias == field)
}

/// Upstream's message for an unsupported field label, to be returned as a 400 BadRequest.
pub fn unsupported_field_message(group: &str, kind: &str, field: &str) -> String {
    match kind_fields(group, kind).reject {
        Reject::NotSupported => format!("field label not supported: {field}"),
        Reject::Job => format!("field label {} not supported for Job", go_quote(field)),
        Reject::Default => format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            go_quote(field)
        ),
    }
}

/// Checks every term of `selector` against the kind, as upstream's field label conversion:
/// the first unsupported label gives `Err(message)` for a 400 BadRequest.
pub fn validate_field_selector(
    group: &str,
    kind: &str,
    selector: &FieldSelector,
) -> Result<(), String> {
    match selector
        .requirements()
        .iter()
        .find(|r| !is_supported_field(group, kind, &r.field))
    {
        Some(r) => Err(unsupported_field_message(group, kind, &r.field)),
        None => Ok(()),
    }
}

/// Whether `obj` of the kind matches `selector`; unsupported labels read as `""`
/// (validate first with [`validate_field_selector`]).
pub fn matches_field_selector(
    group: &str,
    kind: &str,
    obj: &Value,
    selector: &FieldSelector,
) -> bool {
    selector.matches(|field| field_value(group, kind, obj, field))
}

/// The value of a field label for `obj`, as upstream's `ToSelectableFields`: missing strings are
/// `""`, booleans `"true"`/`"false"`, counts decimal (`"0"` when missing). `None` when the kind
/// does not accept the label. Accepted labels that upstream never fills (pods' `status.podIPs`)
/// are `""`, so they match only `!=` terms, as upstream.
pub fn field_value(group: &str, kind: &str, obj: &Value, field: &str) -> Option<String> {
    let fields = kind_fields(group, kind);
    let field = fields
        .aliases
        .iter()
        .find(|(alias, _)| *alias == field)
        .map(|(_, canonical)| *canonical)
        .unwrap_or(field);
    if !fields.labels.contains(&field) {
        return None;
    }
    let value = match (group, kind, field) {
        (_, _, "metadata.name") => string_at(obj, &["metadata", "name"]),
        (_, _, "metadata.namespace") => string_at(obj, &["metadata", "namespace"]),
        ("", "Pod", "spec.hostNetwork") => bool_at(obj, &["spec", "hostNetwork"]),
        ("", "Pod", "status.podIP") => {
            let first = obj.pointer("/status/podIPs/0/ip").and_then(Value::as_str);
            first
                .map(str::to_string)
                .unwrap_or_else(|| string_at(obj, &["status", "podIP"]))
        }
        ("", "Pod", "status.podIPs") => String::new(),
        ("", "Node", "spec.unschedulable") => bool_at(obj, &["spec", "unschedulable"]),
        ("", "ReplicationController", "status.replicas") => int_at(obj, &["status", "replicas"]),
        ("batch", "Job", "status.successful") => int_at(obj, &["status", "succeeded"]),
        ("", "Event", _) | ("events.k8s.io", "Event", _) => event_field(obj, field),
        _ => {
            let path: Vec<&str> = field.split('.').collect();
            string_at(obj, &path)
        }
    };
    Some(value)
}

/// Event labels for both the core/v1 shape (`involvedObject`, `source.component`,
/// `reportingComponent`) and the events.k8s.io/v1 shape (`regarding`, `deprecatedSource`,
/// `reportingController`); either label spelling reads either shape.
fn event_field(obj: &Value, field: &str) -> String {
    let first = |candidates: &[&[&str]]| {
        candidates
            .iter()
            .map(|p| string_at(obj, p))
            .find(|s| !s.is_empty())
            .unwrap_or_default()
    };
    if let Some(sub) = field
        .strip_prefix("involvedObject.")
        .or_else(|| field.strip_prefix("regarding."))
    {
        return first(&[&["involvedObject", sub], &["regarding", sub]]);
    }
    match field {
        "reportingComponent" | "reportingController" => {
            first(&[&["reportingComponent"], &["reportingController"]])
        }
        "source" => first(&[
            &["source", "component"],
            &["deprecatedSource", "component"],
            &["reportingComponent"],
            &["reportingController"],
        ]),
        other => string_at(obj, &[other]),
    }
}

fn at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, key| v.get(key))
}

fn string_at(obj: &Value, path: &[&str]) -> String {
    match at(obj, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn bool_at(obj: &Value, path: &[&str]) -> String {
    at(obj, path)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

fn int_at(obj: &Value, path: &[&str]) -> String {
    at(obj, path)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

/// Go's `%q` for the plain strings field labels are (JSON quoting agrees for printable text).
fn go_quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "default", "containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}
        })
    }

    #[test]
    fn pod_fields_read_as_upstream() {
        let p = pod();
        let v = |f: &str| field_value("", "Pod", &p, f);
        assert_eq!(v("metadata.name").as_deref(), Some("web-1"));
        assert_eq!(v("spec.nodeName").as_deref(), Some("node-a"));
        assert_eq!(v("spec.host").as_deref(), Some("node-a"));
        assert_eq!(v("spec.hostNetwork").as_deref(), Some("false"));
        assert_eq!(v("status.podIP").as_deref(), Some("10.0.0.5"));
        assert_eq!(v("status.podIPs").as_deref(), Some(""));
        assert_eq!(v("status.nominatedNodeName").as_deref(), Some(""));
        assert_eq!(v("spec.containers"), None);
        let mut host = p.clone();
        host["spec"]["hostNetwork"] = json!(true);
        assert_eq!(
            field_value("", "Pod", &host, "spec.hostNetwork").as_deref(),
            Some("true")
        );
    }

    #[test]
    fn selectors_match_objects_of_the_kind() {
        let p = pod();
        let sel = FieldSelector::parse("spec.nodeName=node-a,status.phase!=Pending").unwrap();
        assert!(validate_field_selector("", "Pod", &sel).is_ok());
        assert!(matches_field_selector("", "Pod", &p, &sel));
        let sel = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(!matches_field_selector("", "Pod", &p, &sel));
        let unscheduled = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(matches_field_selector("", "Pod", &unscheduled, &sel));
    }

    #[test]
    fn rejection_messages_are_upstreams() {
        let sel = FieldSelector::parse("spec.foo=bar").unwrap();
        assert_eq!(
            validate_field_selector("", "Pod", &sel).unwrap_err(),
            "field label not supported: spec.foo"
        );
        assert_eq!(
            validate_field_selector("apps", "Deployment", &sel).unwrap_err(),
            "\"spec.foo\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert_eq!(
            validate_field_selector("batch", "Job", &sel).unwrap_err(),
            "field label \"spec.foo\" not supported for Job"
        );
        let rs = FieldSelector::parse("status.replicas=0").unwrap();
        assert!(validate_field_selector("apps", "ReplicaSet", &rs).is_err());
        assert!(validate_field_selector("", "ReplicationController", &rs).is_ok());
        let ns = FieldSelector::parse("metadata.namespace=x").unwrap();
        assert!(validate_field_selector("", "Node", &ns).is_err());
        assert!(validate_field_selector("", "PersistentVolume", &ns).is_ok());
    }

    #[test]
    fn supported_field_lists() {
        assert_eq!(
            supported_fields("", "Namespace"),
            vec!["metadata.name", "status.phase"]
        );
        assert_eq!(
            supported_fields("", "Secret"),
            vec!["metadata.name", "metadata.namespace", "type"]
        );
        assert_eq!(
            supported_fields("apps", "Deployment"),
            vec!["metadata.name", "metadata.namespace"]
        );
        assert!(supported_fields("", "Event").contains(&"involvedObject.uid"));
        assert!(supported_fields("events.k8s.io", "Event").contains(&"regarding.name"));
        assert!(!supported_fields("events.k8s.io", "Event").contains(&"involvedObject.name"));
    }

    #[test]
    fn counts_and_booleans_default_like_go_zero_values() {
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert_eq!(
            field_value("", "Node", &node, "spec.unschedulable").as_deref(),
            Some("false")
        );
        let rc = json!({"metadata": {"name": "rc"}, "status": {"replicas": 3}});
        assert_eq!(
            field_value("", "ReplicationController", &rc, "status.replicas").as_deref(),
            Some("3")
        );
        let job = json!({"metadata": {"name": "j"}, "status": {}});
        assert_eq!(
            field_value("batch", "Job", &job, "status.successful").as_deref(),
            Some("0")
        );
        let job = json!({"metadata": {"name": "j"}, "status": {"succeeded": 2}});
        assert_eq!(
            field_value("batch", "Job", &job, "status.successful").as_deref(),
            Some("2")
        );
    }

    #[test]
    fn event_fields_in_both_groups() {
        let core = json!({
            "metadata": {"name": "e1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "uid": "u1"},
            "reason": "Scheduled", "type": "Normal", "reportingComponent": "default-scheduler",
            "source": {}
        });
        let v = |f: &str| field_value("", "Event", &core, f);
        assert_eq!(v("involvedObject.kind").as_deref(), Some("Pod"));
        assert_eq!(v("involvedObject.fieldPath").as_deref(), Some(""));
        assert_eq!(v("source").as_deref(), Some("default-scheduler"));
        assert_eq!(
            v("reportingComponent").as_deref(),
            Some("default-scheduler")
        );
        let ev1 = json!({
            "metadata": {"name": "e1", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "web-1"},
            "reason": "Pulled", "type": "Normal", "reportingController": "kubelet",
            "deprecatedSource": {"component": "kubelet-x"}
        });
        let v = |f: &str| field_value("events.k8s.io", "Event", &ev1, f);
        assert_eq!(v("regarding.name").as_deref(), Some("web-1"));
        assert_eq!(v("reportingController").as_deref(), Some("kubelet"));
        assert_eq!(v("source").as_deref(), Some("kubelet-x"));
        assert_eq!(v("involvedObject.name"), None);
    }

    #[test]
    fn service_and_secret_fields() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1"}});
        assert_eq!(
            field_value("", "Service", &svc, "spec.clusterIP").as_deref(),
            Some("10.96.0.1")
        );
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque"});
        assert_eq!(
            field_value("", "Secret", &secret, "type").as_deref(),
            Some("Opaque")
        );
        let ns = json!({"metadata": {"name": "x"}, "status": {"phase": "Terminating"}});
        assert_eq!(
            field_value("", "Namespace", &ns, "status.phase").as_deref(),
            Some("Terminating")
        );
    }
}
