use serde_json::{json, Value};

use super::*;
use crate::defaults::{apply_defaults, prepare_for_create};
use crate::error::FieldErrorType;

/// Defaults the object (as the apiserver does before validating) and validates it.
fn check(group: &str, kind: &str, mut obj: Value) -> Vec<FieldError> {
    apply_defaults(group, kind, &mut obj);
    validate(group, kind, &obj, None)
}

fn check_update(group: &str, kind: &str, mut old: Value, mut new: Value) -> Vec<FieldError> {
    apply_defaults(group, kind, &mut old);
    apply_defaults(group, kind, &mut new);
    validate(group, kind, &new, Some(&old))
}

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(FieldError::message).collect()
}

#[track_caller]
fn assert_ok(errs: Vec<FieldError>) {
    assert!(errs.is_empty(), "unexpected errors: {:#?}", messages(&errs));
}

/// Asserts one error at `field` whose message contains `text`.
#[track_caller]
fn assert_err(errs: &[FieldError], field: &str, text: &str) {
    assert!(
        errs.iter()
            .any(|e| e.field == field && e.message().contains(text)),
        "no error at {field} containing {text:?}; got {:#?}",
        messages(errs)
    );
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default"})
}

fn container() -> Value {
    json!({"name": "app", "image": "nginx:1.25"})
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("web"), "spec": {"containers": [container()]}})
}

fn with(mut obj: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let key = key.replace("~1", "/").replace("~0", "~");
    let key = key.as_str();
    let target = if parent.is_empty() {
        &mut obj
    } else {
        obj.pointer_mut(parent).unwrap()
    };
    match target {
        Value::Object(m) => {
            if value.is_null() {
                m.remove(key);
            } else {
                m.insert(key.to_string(), value);
            }
        }
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = value,
        _ => panic!("cannot set {pointer}"),
    }
    obj
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container()]}})
}

fn deployment() -> Value {
    json!({"metadata": meta("web"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}})
}

// ---------------------------------------------------------------------------------------------
// Metadata.

#[test]
fn metadata_name_rules() {
    assert_ok(check("", "Pod", pod()));
    let errs = check("", "Pod", with(pod(), "/metadata/name", Value::Null));
    assert_err(
        &errs,
        "metadata.name",
        "Required value: name or generateName is required",
    );
    assert_ok(check(
        "",
        "Pod",
        with(
            with(pod(), "/metadata/name", Value::Null),
            "/metadata/generateName",
            json!("web-"),
        ),
    ));
    let errs = check(
        "",
        "Pod",
        with(
            with(pod(), "/metadata/name", Value::Null),
            "/metadata/generateName",
            json!("Web-"),
        ),
    );
    assert_err(
        &errs,
        "metadata.generateName",
        "a lowercase RFC 1123 subdomain",
    );
    let errs = check("", "Pod", with(pod(), "/metadata/name", json!("Web")));
    assert_err(
        &errs,
        "metadata.name",
        "Invalid value: \"Web\": a lowercase RFC 1123 subdomain",
    );
    // Subdomains allow dots, labels do not; services need DNS-1035 labels.
    assert_ok(check(
        "",
        "Pod",
        with(pod(), "/metadata/name", json!("web.v1")),
    ));
    let ns = |name: &str| json!({"metadata": {"name": name}});
    assert_ok(check("", "Namespace", ns("team-a")));
    assert_err(
        &check("", "Namespace", ns("team.a")),
        "metadata.name",
        "must not contain dots",
    );
    let svc = |name: &str| json!({"metadata": meta(name), "spec": {"ports": [{"port": 80}]}});
    assert_ok(check("", "Service", svc("web")));
    assert_err(
        &check("", "Service", svc("1web")),
        "metadata.name",
        "a DNS-1035 label",
    );
}

#[test]
fn metadata_namespace_by_scope() {
    let errs = check("", "Pod", with(pod(), "/metadata/namespace", Value::Null));
    assert_err(&errs, "metadata.namespace", "Required value");
    let errs = check(
        "",
        "Pod",
        with(pod(), "/metadata/namespace", json!("Bad_NS")),
    );
    assert_err(&errs, "metadata.namespace", "a lowercase RFC 1123 label");
    let errs = check(
        "",
        "Namespace",
        json!({"metadata": {"name": "a", "namespace": "b"}}),
    );
    assert_err(
        &errs,
        "metadata.namespace",
        "Forbidden: not allowed on this type",
    );
    assert_ok(check("", "Node", json!({"metadata": {"name": "node-1"}})));
    let errs = validate_with_scope(
        "example.com",
        "Widget",
        &json!({"metadata": {"name": "w"}}),
        None,
        true,
    );
    assert_err(&errs, "metadata.namespace", "Required value");
    assert_ok(validate_with_scope(
        "example.com",
        "Widget",
        &json!({"metadata": {"name": "w"}}),
        None,
        false,
    ));
}

#[test]
fn metadata_labels_and_annotations() {
    let errs = check(
        "",
        "Pod",
        with(
            pod(),
            "/metadata/labels",
            json!({"bad key": "v", "ok": "-bad"}),
        ),
    );
    assert_eq!(errs.len(), 2);
    assert_err(&errs, "metadata.labels", "Invalid value: \"bad key\"");
    assert_err(&errs, "metadata.labels", "Invalid value: \"-bad\"");
    assert_ok(check(
        "",
        "Pod",
        with(
            pod(),
            "/metadata/labels",
            json!({"app.kubernetes.io/name": "web"}),
        ),
    ));
    let errs = check(
        "",
        "Pod",
        with(pod(), "/metadata/annotations", json!({"-x": "v"})),
    );
    assert_err(&errs, "metadata.annotations", "Invalid value: \"-x\"");
    // Annotation keys are checked lower-cased, values may be anything.
    assert_ok(check(
        "",
        "Pod",
        with(
            pod(),
            "/metadata/annotations",
            json!({"Example.com/Key": "any value !"}),
        ),
    ));
    let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
    let errs = check(
        "",
        "Pod",
        with(pod(), "/metadata/annotations", json!({"a": big})),
    );
    assert_err(
        &errs,
        "metadata.annotations",
        "Too long: must have at most 262144 bytes",
    );
}

#[test]
fn metadata_owner_references_and_finalizers() {
    let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "1", "controller": true});
    assert_ok(check(
        "",
        "Pod",
        with(pod(), "/metadata/ownerReferences", json!([owner.clone()])),
    ));
    let errs = check(
        "",
        "Pod",
        with(
            pod(),
            "/metadata/ownerReferences",
            json!([{"apiVersion": "v1", "kind": "", "name": "x", "uid": ""}]),
        ),
    );
    assert_err(
        &errs,
        "metadata.ownerReferences.kind",
        "kind must not be empty",
    );
    assert_err(
        &errs,
        "metadata.ownerReferences.uid",
        "uid must not be empty",
    );
    let errs = check(
        "",
        "Pod",
        with(
            pod(),
            "/metadata/ownerReferences",
            json!([owner.clone(), owner]),
        ),
    );
    assert_err(
        &errs,
        "metadata.ownerReferences",
        "Only one reference can have Controller set to true",
    );
    assert_ok(check(
        "",
        "Pod",
        with(
            pod(),
            "/metadata/finalizers",
            json!(["example.com/cleanup", "orphan"]),
        ),
    ));
    let errs = check(
        "",
        "Pod",
        with(pod(), "/metadata/finalizers", json!(["cleanup"])),
    );
    assert_err(
        &errs,
        "metadata.finalizers",
        "name is neither a standard finalizer name nor is it fully qualified",
    );
}

#[test]
fn metadata_update_immutables() {
    let old = with(pod(), "/metadata/uid", json!("u1"));
    assert_ok(check_update("", "Pod", old.clone(), old.clone()));
    // Leaving uid out of an update is fine; changing it is not.
    assert_ok(check_update("", "Pod", old.clone(), pod()));
    let errs = check_update(
        "",
        "Pod",
        old.clone(),
        with(old.clone(), "/metadata/uid", json!("u2")),
    );
    assert_err(
        &errs,
        "metadata.uid",
        "Invalid value: \"u2\": field is immutable",
    );
    let errs = check_update(
        "",
        "Pod",
        old.clone(),
        with(old.clone(), "/metadata/name", json!("other")),
    );
    assert_err(&errs, "metadata.name", "field is immutable");
    let errs = check_update(
        "",
        "Pod",
        old.clone(),
        with(old, "/metadata/namespace", json!("other")),
    );
    assert_err(&errs, "metadata.namespace", "field is immutable");
}

#[test]
fn unknown_kinds_get_metadata_validation_only() {
    assert_ok(check(
        "example.com",
        "Widget",
        json!({"metadata": meta("w"), "spec": {"anything": 1}}),
    ));
    let errs = check("example.com", "Widget", json!({"metadata": meta("W")}));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "metadata.name");
}

// ---------------------------------------------------------------------------------------------
// Pods.

#[test]
fn pod_containers_required_and_named() {
    let errs = check("", "Pod", with(pod(), "/spec/containers", json!([])));
    assert_err(&errs, "spec.containers", "Required value");
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/containers/0", json!({"image": "x"})),
    );
    assert_err(&errs, "spec.containers[0].name", "Required value");
    let errs = check(
        "",
        "Pod",
        with(
            pod(),
            "/spec/containers/0",
            json!({"name": "App", "image": "x"}),
        ),
    );
    assert_err(
        &errs,
        "spec.containers[0].name",
        "a lowercase RFC 1123 label",
    );
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/containers/0", json!({"name": "app"})),
    );
    assert_err(&errs, "spec.containers[0].image", "Required value");
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/initContainers", json!([container()])),
    );
    assert_err(&errs, "spec.containers[0].name", "Duplicate value: \"app\"");
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/containers", json!([container(), container()])),
    );
    assert_err(&errs, "spec.containers[1].name", "Duplicate value");
    assert_ok(check(
        "",
        "Pod",
        with(
            pod(),
            "/spec/initContainers",
            json!([{"name": "init", "image": "busybox"}]),
        ),
    ));
}

#[test]
fn pod_container_ports() {
    let ports = |p: Value| with(pod(), "/spec/containers/0/ports", p);
    assert_ok(check(
        "",
        "Pod",
        ports(
            json!([{"containerPort": 80, "name": "http"}, {"containerPort": 53, "protocol": "UDP"}]),
        ),
    ));
    let errs = check("", "Pod", ports(json!([{"containerPort": 70000}])));
    assert_err(
        &errs,
        "spec.containers[0].ports[0].containerPort",
        "must be between 1 and 65535, inclusive",
    );
    let errs = check(
        "",
        "Pod",
        ports(json!([{"containerPort": 80, "protocol": "HTTP"}])),
    );
    assert_err(
        &errs,
        "spec.containers[0].ports[0].protocol",
        "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    );
    let errs = check(
        "",
        "Pod",
        ports(json!([{"containerPort": 80, "name": "HTTP_port"}])),
    );
    assert_err(
        &errs,
        "spec.containers[0].ports[0].name",
        "must contain only alpha-numeric characters",
    );
    let errs = check(
        "",
        "Pod",
        ports(json!([{"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}])),
    );
    assert_err(&errs, "spec.containers[0].ports[1].name", "Duplicate value");
    let errs = check(
        "",
        "Pod",
        ports(json!([{"containerPort": 80, "hostPort": -1}])),
    );
    assert_err(
        &errs,
        "spec.containers[0].ports[0].hostPort",
        "must be between 1 and 65535",
    );
}

#[test]
fn pod_env() {
    let env = |e: Value| with(pod(), "/spec/containers/0/env", e);
    assert_ok(check(
        "",
        "Pod",
        env(
            json!([{"name": "A_B", "value": "1"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
        ),
    ));
    assert_err(
        &check("", "Pod", env(json!([{"value": "1"}]))),
        "spec.containers[0].env[0].name",
        "Required value",
    );
    assert_err(
        &check("", "Pod", env(json!([{"name": "A=B"}]))),
        "spec.containers[0].env[0].name",
        "other than '='",
    );
    let errs = check(
        "",
        "Pod",
        env(
            json!([{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
        ),
    );
    assert_err(
        &errs,
        "spec.containers[0].env[0].valueFrom",
        "may not be specified when `value` is not empty",
    );
    let errs = check(
        "",
        "Pod",
        env(json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}])),
    );
    assert_err(
        &errs,
        "spec.containers[0].env[0].valueFrom.secretKeyRef.key",
        "Required value",
    );
}

#[test]
fn pod_volumes_and_mounts() {
    let volumes =
        json!([{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]);
    let p = with(pod(), "/spec/volumes", volumes.clone());
    assert_ok(check(
        "",
        "Pod",
        with(
            p.clone(),
            "/spec/containers/0/volumeMounts",
            json!([{"name": "data", "mountPath": "/data"}]),
        ),
    ));
    let errs = check(
        "",
        "Pod",
        with(
            p.clone(),
            "/spec/containers/0/volumeMounts",
            json!([{"name": "missing", "mountPath": "/data"}]),
        ),
    );
    assert_err(
        &errs,
        "spec.containers[0].volumeMounts[0].name",
        "\"missing\"",
    );
    let errs = check(
        "",
        "Pod",
        with(
            p.clone(),
            "/spec/containers/0/volumeMounts",
            json!([{"name": "data"}]),
        ),
    );
    assert_err(
        &errs,
        "spec.containers[0].volumeMounts[0].mountPath",
        "Required value",
    );
    let errs = check(
        "",
        "Pod",
        with(
            p.clone(),
            "/spec/containers/0/volumeMounts",
            json!([{"name": "data", "mountPath": "/d"}, {"name": "cfg", "mountPath": "/d"}]),
        ),
    );
    assert_err(
        &errs,
        "spec.containers[0].volumeMounts[1].mountPath",
        "must be unique",
    );
    let errs = check(
        "",
        "Pod",
        with(
            pod(),
            "/spec/volumes",
            json!([{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]),
        ),
    );
    assert_err(&errs, "spec.volumes[1].name", "Duplicate value: \"a\"");
    let errs = check(
        "",
        "Pod",
        with(
            pod(),
            "/spec/volumes",
            json!([{"name": "a", "emptyDir": {}, "secret": {"secretName": "s"}}]),
        ),
    );
    assert_err(
        &errs,
        "spec.volumes[0].secret",
        "may not specify more than 1 volume type",
    );
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/volumes", json!([{"name": "Bad"}])),
    );
    assert_err(&errs, "spec.volumes[0].name", "a lowercase RFC 1123 label");
    let errs = check(
        "",
        "Pod",
        with(
            pod(),
            "/spec/volumes",
            json!([{"name": "c", "configMap": {}}]),
        ),
    );
    assert_err(&errs, "spec.volumes[0].configMap.name", "Required value");
    let errs = check(
        "",
        "Pod",
        with(
            pod(),
            "/spec/volumes",
            json!([{"name": "s", "secret": {"secretName": "s", "defaultMode": 1000}}]),
        ),
    );
    assert_err(
        &errs,
        "spec.volumes[0].secret.defaultMode",
        "must be a number between 0 and 0777",
    );
    // Without defaulting, a volume without a source is refused.
    let raw = with(pod(), "/spec/volumes", json!([{"name": "none"}]));
    assert_err(
        &validate("", "Pod", &raw, None),
        "spec.volumes[0]",
        "must specify a volume type",
    );
}

#[test]
fn pod_policies() {
    assert_ok(check(
        "",
        "Pod",
        with(pod(), "/spec/restartPolicy", json!("OnFailure")),
    ));
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/restartPolicy", json!("Sometimes")),
    );
    assert_err(
        &errs,
        "spec.restartPolicy",
        "supported values: \"Always\", \"OnFailure\", \"Never\"",
    );
    let errs = check("", "Pod", with(pod(), "/spec/dnsPolicy", json!("Google")));
    assert_err(&errs, "spec.dnsPolicy", "Unsupported value: \"Google\"");
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/activeDeadlineSeconds", json!(0)),
    );
    assert_err(
        &errs,
        "spec.activeDeadlineSeconds",
        "must be between 1 and 2147483647, inclusive",
    );
    let errs = check(
        "",
        "Pod",
        with(
            pod(),
            "/spec/containers/0/imagePullPolicy",
            json!("Sometimes"),
        ),
    );
    assert_err(
        &errs,
        "spec.containers[0].imagePullPolicy",
        "Unsupported value",
    );
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/containers/0/restartPolicy", json!("Always")),
    );
    assert_err(&errs, "spec.containers[0].restartPolicy", "Forbidden");
    assert_ok(check(
        "",
        "Pod",
        with(
            pod(),
            "/spec/initContainers",
            json!([{"name": "side", "image": "x", "restartPolicy": "Always"}]),
        ),
    ));
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/serviceAccountName", json!("Bad_SA")),
    );
    assert_err(
        &errs,
        "spec.serviceAccountName",
        "a lowercase RFC 1123 subdomain",
    );
    let errs = check(
        "",
        "Pod",
        with(pod(), "/spec/nodeSelector", json!({"disk": "s s d"})),
    );
    assert_err(&errs, "spec.nodeSelector", "a valid label must be");
}

#[test]
fn pod_tolerations() {
    let tol = |t: Value| with(pod(), "/spec/tolerations", json!([t]));
    assert_ok(check(
        "",
        "Pod",
        tol(json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"})),
    ));
    assert_ok(check("", "Pod", tol(json!({"operator": "Exists"}))));
    let errs = check(
        "",
        "Pod",
        tol(json!({"key": "k", "operator": "Exists", "value": "v"})),
    );
    assert_err(
        &errs,
        "spec.tolerations[0].operator",
        "value must be empty when `operator` is 'Exists'",
    );
    let errs = check("", "Pod", tol(json!({"key": "k", "effect": "Sometimes"})));
    assert_err(&errs, "spec.tolerations[0].effect", "Unsupported value");
    let errs = check(
        "",
        "Pod",
        tol(json!({"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5})),
    );
    assert_err(
        &errs,
        "spec.tolerations[0].effect",
        "effect must be 'NoExecute' when `tolerationSeconds` is set",
    );
    let errs = check("", "Pod", tol(json!({"operator": "Equal", "value": "v"})));
    assert_err(
        &errs,
        "spec.tolerations[0].operator",
        "operator must be Exists when `key` is empty",
    );
}

#[test]
fn pod_resources() {
    let res = |r: Value| with(pod(), "/spec/containers/0/resources", r);
    assert_ok(check(
        "",
        "Pod",
        res(
            json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}),
        ),
    ));
    let errs = check(
        "",
        "Pod",
        res(json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})),
    );
    assert_err(
        &errs,
        "spec.containers[0].resources.requests[cpu]",
        "Invalid value: \"2\": must be less than or equal to cpu limit of 1",
    );
    let errs = check("", "Pod", res(json!({"limits": {"memory": "lots"}})));
    assert_err(
        &errs,
        "spec.containers[0].resources.limits[memory]",
        "quantities must match the regular expression",
    );
    let errs = check("", "Pod", res(json!({"requests": {"cpu": "-1"}})));
    assert_err(
        &errs,
        "spec.containers[0].resources.requests[cpu]",
        "must be greater than or equal to 0",
    );
    let errs = check("", "Pod", res(json!({"limits": {"gpu": "1"}})));
    assert_err(
        &errs,
        "spec.containers[0].resources.limits[gpu]",
        "must be a standard resource for containers",
    );
    assert_ok(check(
        "",
        "Pod",
        res(json!({"limits": {"example.com/gpu": "1", "ephemeral-storage": "1Gi"}})),
    ));
    // Requests defaulted from limits never exceed them.
    assert_ok(check("", "Pod", res(json!({"limits": {"cpu": "1"}}))));
}

#[test]
fn pod_update_rules() {
    let old = pod();
    assert_ok(check_update(
        "",
        "Pod",
        old.clone(),
        with(old.clone(), "/spec/containers/0/image", json!("nginx:1.26")),
    ));
    assert_ok(check_update(
        "",
        "Pod",
        old.clone(),
        with(old.clone(), "/spec/activeDeadlineSeconds", json!(30)),
    ));
    assert_ok(check_update(
        "",
        "Pod",
        old.clone(),
        with(
            old.clone(),
            "/spec/tolerations",
            json!([{"operator": "Exists"}]),
        ),
    ));
    assert_ok(check_update(
        "",
        "Pod",
        old.clone(),
        with(old.clone(), "/metadata/labels", json!({"a": "b"})),
    ));
    let errs = check_update(
        "",
        "Pod",
        old.clone(),
        with(
            old.clone(),
            "/spec/containers/0/ports",
            json!([{"containerPort": 80}]),
        ),
    );
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].kind, FieldErrorType::Forbidden);
    assert_eq!(errs[0].field, "spec");
    assert!(errs[0]
        .detail
        .starts_with(crate::validation::core::POD_UPDATE_FORBIDDEN));
    assert!(
        errs[0].detail.contains("containers[0].ports"),
        "{}",
        errs[0].detail
    );
    let errs = check_update(
        "",
        "Pod",
        old.clone(),
        with(old.clone(), "/spec/nodeName", json!("node-b")),
    );
    assert_err(
        &errs,
        "spec",
        "pod updates may not change fields other than",
    );
    let with_deadline = with(old.clone(), "/spec/activeDeadlineSeconds", json!(30));
    let errs = check_update(
        "",
        "Pod",
        with_deadline.clone(),
        with(old.clone(), "/spec/activeDeadlineSeconds", json!(60)),
    );
    assert_err(
        &errs,
        "spec.activeDeadlineSeconds",
        "must be less than or equal to previous value",
    );
    let errs = check_update("", "Pod", with_deadline, old.clone());
    assert_err(
        &errs,
        "spec.activeDeadlineSeconds",
        "must not update from a positive integer to nil value",
    );
    let tolerant = with(
        old.clone(),
        "/spec/tolerations",
        json!([{"key": "k", "operator": "Exists"}]),
    );
    let errs = check_update("", "Pod", tolerant, old);
    assert_err(
        &errs,
        "spec.tolerations",
        "existing toleration can not be modified",
    );
}

#[test]
fn pod_created_through_defaults_and_preparation_is_valid() {
    let mut p = pod();
    apply_defaults("", "Pod", &mut p);
    prepare_for_create("", "Pod", &mut p, "uid-1");
    assert_ok(validate("", "Pod", &p, None));
}

// ---------------------------------------------------------------------------------------------
// Workloads.

#[test]
fn deployment_selector_and_template() {
    assert_ok(check("apps", "Deployment", deployment()));
    let errs = check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/selector", Value::Null),
    );
    assert_err(&errs, "spec.selector", "Required value");
    let errs = check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/selector", json!({})),
    );
    assert_err(
        &errs,
        "spec.selector",
        "empty selector is invalid for deployment",
    );
    let errs = check(
        "apps",
        "Deployment",
        with(
            deployment(),
            "/spec/selector/matchLabels/app",
            json!("other"),
        ),
    );
    assert_err(
        &errs,
        "spec.template.metadata.labels",
        "`selector` does not match template `labels`",
    );
    let errs = check(
        "apps",
        "Deployment",
        with(
            deployment(),
            "/spec/template/spec/restartPolicy",
            json!("Never"),
        ),
    );
    assert_err(
        &errs,
        "spec.template.spec.restartPolicy",
        "Unsupported value: \"Never\": supported values: \"Always\"",
    );
    let errs = check(
        "apps",
        "Deployment",
        with(
            deployment(),
            "/spec/template/spec/containers/0/image",
            json!(""),
        ),
    );
    assert_err(
        &errs,
        "spec.template.spec.containers[0].image",
        "Required value",
    );
    let errs = check(
        "apps",
        "Deployment",
        with(
            deployment(),
            "/spec/selector",
            json!({"matchLabels": {"app": "-x"}}),
        ),
    );
    assert_err(&errs, "spec.selector.matchLabels", "a valid label must be");
    let errs = check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/template", Value::Null),
    );
    assert_err(&errs, "spec.template", "Required value");
}

#[test]
fn deployment_numbers_and_strategy() {
    let errs = check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/replicas", json!(-1)),
    );
    assert_err(
        &errs,
        "spec.replicas",
        "Invalid value: -1: must be greater than or equal to 0",
    );
    assert_ok(check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/replicas", json!(0)),
    ));
    let errs = check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/strategy", json!({"type": "BlueGreen"})),
    );
    assert_err(
        &errs,
        "spec.strategy.type",
        "supported values: \"Recreate\", \"RollingUpdate\"",
    );
    assert_ok(check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/strategy", json!({"type": "Recreate"})),
    ));
    let errs = check(
        "apps",
        "Deployment",
        with(
            deployment(),
            "/spec/strategy",
            json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}),
        ),
    );
    assert_err(
        &errs,
        "spec.strategy.rollingUpdate",
        "may not be specified when strategy `type` is 'Recreate'",
    );
    let zero =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    let errs = check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/strategy", zero),
    );
    assert_err(
        &errs,
        "spec.strategy.rollingUpdate.maxUnavailable",
        "may not be 0 when `maxSurge` is 0",
    );
    let over = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x", "maxUnavailable": "120%"}});
    let errs = check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/strategy", over),
    );
    assert_err(
        &errs,
        "spec.strategy.rollingUpdate.maxUnavailable",
        "must not be greater than 100%",
    );
    assert_err(
        &errs,
        "spec.strategy.rollingUpdate.maxSurge",
        "a valid percent string",
    );
    let errs = check(
        "apps",
        "Deployment",
        with(
            with(deployment(), "/spec/minReadySeconds", json!(700)),
            "/spec/progressDeadlineSeconds",
            json!(600),
        ),
    );
    assert_err(
        &errs,
        "spec.progressDeadlineSeconds",
        "must be greater than minReadySeconds",
    );
    let errs = check(
        "apps",
        "Deployment",
        with(deployment(), "/spec/revisionHistoryLimit", json!(-2)),
    );
    assert_err(
        &errs,
        "spec.revisionHistoryLimit",
        "must be greater than or equal to 0",
    );
}

#[test]
fn apps_selectors_are_immutable() {
    let old = deployment();
    let mut new = with(deployment(), "/spec/selector/matchLabels/tier", json!("x"));
    new = with(new, "/spec/template/metadata/labels/tier", json!("x"));
    let errs = check_update("apps", "Deployment", old.clone(), new);
    assert_err(&errs, "spec.selector", "field is immutable");
    assert_ok(check_update(
        "apps",
        "Deployment",
        old.clone(),
        with(old, "/spec/replicas", json!(5)),
    ));
}

#[test]
fn replica_set_and_replication_controller() {
    assert_ok(check("apps", "ReplicaSet", deployment()));
    let errs = check(
        "apps",
        "ReplicaSet",
        with(deployment(), "/spec/selector/matchLabels/app", json!("x")),
    );
    assert_err(
        &errs,
        "spec.template.metadata.labels",
        "`selector` does not match template `labels`",
    );
    let errs = check(
        "apps",
        "ReplicaSet",
        with(deployment(), "/spec/replicas", json!(-3)),
    );
    assert_err(&errs, "spec.replicas", "must be greater than or equal to 0");

    let rc = json!({"metadata": meta("rc"), "spec": {"selector": {"app": "web"}, "template": template()}});
    assert_ok(check("", "ReplicationController", rc.clone()));
    // The selector is defaulted from the template labels.
    assert_ok(check(
        "",
        "ReplicationController",
        with(rc.clone(), "/spec/selector", Value::Null),
    ));
    let errs = check(
        "",
        "ReplicationController",
        with(rc.clone(), "/spec/selector", json!({"app": "other"})),
    );
    assert_err(
        &errs,
        "spec.template.metadata.labels",
        "`selector` does not match template `labels`",
    );
    let errs = validate(
        "",
        "ReplicationController",
        &with(
            with(rc.clone(), "/spec/template", Value::Null),
            "/spec/selector",
            Value::Null,
        ),
        None,
    );
    assert_err(&errs, "spec.template", "Required value");
    assert_err(&errs, "spec.selector", "Required value");
    let errs = check(
        "",
        "ReplicationController",
        with(rc, "/spec/template/spec/activeDeadlineSeconds", json!(5)),
    );
    assert_err(
        &errs,
        "spec.template.spec.activeDeadlineSeconds",
        "activeDeadlineSeconds in ReplicaSet is not Supported",
    );
}

fn stateful_set() -> Value {
    let mut s = deployment();
    s["spec"]["serviceName"] = json!("web");
    s["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
    s
}

#[test]
fn stateful_set_rules() {
    assert_ok(check("apps", "StatefulSet", stateful_set()));
    let errs = check(
        "apps",
        "StatefulSet",
        with(stateful_set(), "/spec/podManagementPolicy", json!("Random")),
    );
    assert_err(
        &errs,
        "spec.podManagementPolicy",
        "supported values: \"OrderedReady\", \"Parallel\"",
    );
    let errs = check(
        "apps",
        "StatefulSet",
        with(
            stateful_set(),
            "/spec/updateStrategy",
            json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}}),
        ),
    );
    assert_err(
        &errs,
        "spec.updateStrategy.rollingUpdate",
        "only allowed for updateStrategy 'RollingUpdate'",
    );
    let errs = check(
        "apps",
        "StatefulSet",
        with(
            stateful_set(),
            "/spec/updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": -1}}),
        ),
    );
    assert_err(
        &errs,
        "spec.updateStrategy.rollingUpdate.partition",
        "must be greater than or equal to 0",
    );
    let errs = check(
        "apps",
        "StatefulSet",
        with(stateful_set(), "/spec/selector", json!({})),
    );
    assert_err(
        &errs,
        "spec.selector",
        "empty selector is invalid for statefulset",
    );
    let errs = check(
        "apps",
        "StatefulSet",
        with(
            stateful_set(),
            "/spec/volumeClaimTemplates/0/spec/accessModes",
            json!([]),
        ),
    );
    assert_err(
        &errs,
        "spec.volumeClaimTemplates[0].spec.accessModes",
        "at least 1 access mode is required",
    );
    let errs = check(
        "apps",
        "StatefulSet",
        with(
            stateful_set(),
            "/spec/persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Keep"}),
        ),
    );
    assert_err(
        &errs,
        "spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
        "Unsupported value",
    );
}

#[test]
fn stateful_set_update_rules() {
    let old = stateful_set();
    assert_ok(check_update(
        "apps",
        "StatefulSet",
        old.clone(),
        with(old.clone(), "/spec/replicas", json!(3)),
    ));
    assert_ok(check_update(
        "apps",
        "StatefulSet",
        old.clone(),
        with(
            old.clone(),
            "/spec/template/spec/containers/0/image",
            json!("nginx:2"),
        ),
    ));
    let errs = check_update(
        "apps",
        "StatefulSet",
        old.clone(),
        with(old.clone(), "/spec/serviceName", json!("other")),
    );
    assert_err(
        &errs,
        "spec",
        "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template'",
    );
    let errs = check_update(
        "apps",
        "StatefulSet",
        old.clone(),
        with(
            old,
            "/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
            json!("2Gi"),
        ),
    );
    assert_err(&errs, "spec", "are forbidden");
}

#[test]
fn daemon_set_rules() {
    assert_ok(check("apps", "DaemonSet", deployment()));
    let errs = check(
        "apps",
        "DaemonSet",
        with(
            deployment(),
            "/spec/updateStrategy",
            json!({"type": "Sometimes"}),
        ),
    );
    assert_err(
        &errs,
        "spec.updateStrategy.type",
        "supported values: \"OnDelete\", \"RollingUpdate\"",
    );
    let zero =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}});
    let errs = check(
        "apps",
        "DaemonSet",
        with(deployment(), "/spec/updateStrategy", zero),
    );
    assert_err(
        &errs,
        "spec.updateStrategy.rollingUpdate.maxUnavailable",
        "may not be 0 when `maxSurge` is 0",
    );
    let errs = check(
        "apps",
        "DaemonSet",
        with(deployment(), "/spec/selector", json!({})),
    );
    assert_err(
        &errs,
        "spec.selector",
        "empty selector is invalid for daemonset",
    );
}

// ---------------------------------------------------------------------------------------------
// Jobs and CronJobs.

fn job_template() -> Value {
    json!({"spec": {"restartPolicy": "Never", "containers": [container()]}})
}

fn created_job() -> Value {
    let mut job = json!({"metadata": meta("pi"), "spec": {"template": job_template()}});
    job["metadata"]["uid"] = json!("uid-1");
    apply_defaults("batch", "Job", &mut job);
    prepare_for_create("batch", "Job", &mut job, "uid-1");
    job
}

#[test]
fn job_rules() {
    assert_ok(validate("batch", "Job", &created_job(), None));
    let errs = validate(
        "batch",
        "Job",
        &with(
            created_job(),
            "/spec/template/spec/restartPolicy",
            json!("Always"),
        ),
        None,
    );
    assert_err(
        &errs,
        "spec.template.spec.restartPolicy",
        "supported values: \"OnFailure\", \"Never\"",
    );
    let errs = validate(
        "batch",
        "Job",
        &with(created_job(), "/spec/selector", Value::Null),
        None,
    );
    assert_err(&errs, "spec.selector", "Required value");
    let errs = validate(
        "batch",
        "Job",
        &with(
            created_job(),
            "/spec/selector",
            json!({"matchLabels": {"a": "b"}}),
        ),
        None,
    );
    assert_err(
        &errs,
        "spec.template.metadata.labels",
        "`selector` does not match template `labels`",
    );
    for key in ["parallelism", "completions", "backoffLimit"] {
        let errs = validate(
            "batch",
            "Job",
            &with(created_job(), &format!("/spec/{key}"), json!(-1)),
            None,
        );
        assert_err(
            &errs,
            &format!("spec.{key}"),
            "must be greater than or equal to 0",
        );
    }
    let errs = validate(
        "batch",
        "Job",
        &with(created_job(), "/spec/activeDeadlineSeconds", json!(0)),
        None,
    );
    assert_err(
        &errs,
        "spec.activeDeadlineSeconds",
        "must be greater than 0",
    );
    let errs = validate(
        "batch",
        "Job",
        &with(
            with(created_job(), "/spec/completionMode", json!("Indexed")),
            "/spec/completions",
            Value::Null,
        ),
        None,
    );
    assert_err(
        &errs,
        "spec.completions",
        "Required value: when completion mode is Indexed",
    );
    let errs = validate(
        "batch",
        "Job",
        &with(created_job(), "/spec/completionMode", json!("Sorted")),
        None,
    );
    assert_err(&errs, "spec.completionMode", "Unsupported value");
    // A job name too long for the job-name label fails through the template labels.
    let mut long = json!({"metadata": meta(&"j".repeat(64)), "spec": {"template": job_template()}});
    apply_defaults("batch", "Job", &mut long);
    prepare_for_create("batch", "Job", &mut long, "u");
    let errs = validate("batch", "Job", &long, None);
    assert_err(
        &errs,
        "spec.template.metadata.labels",
        "must be no more than 63 characters",
    );
}

#[test]
fn job_selector_must_be_generated() {
    let job = created_job();
    let manual = json!({"metadata": {"name": "m", "namespace": "default", "uid": "u"}, "spec": {
        "manualSelector": true, "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": job_template()["spec"].clone()}}});
    assert_ok(check("batch", "Job", manual));
    let other = with(
        job.clone(),
        "/spec/selector/matchLabels/batch.kubernetes.io~1controller-uid",
        json!("uid-2"),
    );
    let other = with(
        other,
        "/spec/template/metadata/labels/batch.kubernetes.io~1controller-uid",
        json!("uid-2"),
    );
    let errs = validate("batch", "Job", &other, None);
    assert_err(&errs, "spec.selector", "`selector` not auto-generated");
    assert_err(
        &errs,
        "spec.template.metadata.labels[batch.kubernetes.io/controller-uid]",
        "must be 'uid-1'",
    );
    let errs = validate(
        "batch",
        "Job",
        &with(
            job,
            "/spec/template/metadata/labels/controller-uid",
            Value::Null,
        ),
        None,
    );
    assert_err(
        &errs,
        "spec.template.metadata.labels[controller-uid]",
        "Required value",
    );
}

#[test]
fn job_update_rules() {
    let old = created_job();
    assert_ok(validate(
        "batch",
        "Job",
        &with(old.clone(), "/spec/parallelism", json!(4)),
        Some(&old),
    ));
    assert_ok(validate(
        "batch",
        "Job",
        &with(old.clone(), "/spec/suspend", json!(true)),
        Some(&old),
    ));
    let errs = validate(
        "batch",
        "Job",
        &with(
            old.clone(),
            "/spec/template/spec/containers/0/image",
            json!("x:2"),
        ),
        Some(&old),
    );
    assert_err(&errs, "spec.template", "field is immutable");
    let errs = validate(
        "batch",
        "Job",
        &with(old.clone(), "/spec/completions", json!(5)),
        Some(&old),
    );
    assert_err(&errs, "spec.completions", "field is immutable");
    let suspended = with(old.clone(), "/spec/suspend", json!(true));
    let moved = with(
        suspended.clone(),
        "/spec/template/spec/nodeSelector",
        json!({"zone": "a"}),
    );
    assert_ok(validate("batch", "Job", &moved, Some(&suspended)));
}

fn cron_job(schedule: &str) -> Value {
    json!({"metadata": meta("nightly"), "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": job_template()}}}})
}

#[test]
fn cron_job_rules() {
    for schedule in [
        "*/5 * * * *",
        "0 0 * * 0",
        "15 2 1-15/2 JAN-jun mon,wed,FRI",
        "@hourly",
        "@every 1h30m",
        "0 0 ? * *",
    ] {
        assert_ok(check("batch", "CronJob", cron_job(schedule)));
    }
    assert_err(
        &check("batch", "CronJob", cron_job("")),
        "spec.schedule",
        "Required value",
    );
    for (schedule, message) in [
        ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
        ("61 * * * *", "end of range (61) above maximum (59): 61"),
        ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
        (
            "5-1 * * * *",
            "beginning of range (5) beyond end of range (1): 5-1",
        ),
        (
            "*/0 * * * *",
            "step of range should be a positive number: */0",
        ),
        (
            "x * * * *",
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax",
        ),
        ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
        ("@fortnightly", "unrecognized descriptor: @fortnightly"),
        ("@every soon", "failed to parse duration @every soon"),
    ] {
        assert_err(
            &check("batch", "CronJob", cron_job(schedule)),
            "spec.schedule",
            message,
        );
    }
    let errs = check("batch", "CronJob", cron_job("CRON_TZ=UTC 0 * * * *"));
    assert_err(
        &errs,
        "spec.schedule",
        "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
    );
    let zoned = |tz: &str| with(cron_job("0 * * * *"), "/spec/timeZone", json!(tz));
    assert_ok(check("batch", "CronJob", zoned("Europe/Paris")));
    assert_ok(check("batch", "CronJob", zoned("Etc/GMT+5")));
    assert_err(
        &check("batch", "CronJob", zoned("Europe/No Where")),
        "spec.timeZone",
        "unknown time zone Europe/No Where",
    );
    assert_err(
        &check("batch", "CronJob", zoned("/etc/localtime")),
        "spec.timeZone",
        "unknown time zone",
    );
    assert_err(
        &check("batch", "CronJob", zoned("Local")),
        "spec.timeZone",
        "timeZone must be an explicit time zone",
    );
    let errs = check(
        "batch",
        "CronJob",
        with(
            cron_job("@daily"),
            "/spec/concurrencyPolicy",
            json!("Sometimes"),
        ),
    );
    assert_err(
        &errs,
        "spec.concurrencyPolicy",
        "supported values: \"Allow\", \"Forbid\", \"Replace\"",
    );
    let errs = check(
        "batch",
        "CronJob",
        with(
            cron_job("@daily"),
            "/spec/startingDeadlineSeconds",
            json!(-5),
        ),
    );
    assert_err(
        &errs,
        "spec.startingDeadlineSeconds",
        "must be greater than or equal to 0",
    );
    let errs = check(
        "batch",
        "CronJob",
        with(cron_job("@daily"), "/metadata/name", json!("n".repeat(53))),
    );
    assert_err(&errs, "metadata.name", "must be no more than 52 characters");
    let errs = check(
        "batch",
        "CronJob",
        with(
            cron_job("@daily"),
            "/spec/jobTemplate/spec/template/spec/restartPolicy",
            json!("Always"),
        ),
    );
    assert_err(
        &errs,
        "spec.jobTemplate.spec.template.spec.restartPolicy",
        "Unsupported value",
    );
}

// ---------------------------------------------------------------------------------------------
// Services.

fn service() -> Value {
    json!({"metadata": meta("web"), "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
}

#[test]
fn service_rules() {
    assert_ok(check("", "Service", service()));
    let errs = check("", "Service", with(service(), "/spec/ports", json!([])));
    assert_err(&errs, "spec.ports", "Required value");
    assert_ok(check(
        "",
        "Service",
        with(
            with(service(), "/spec/ports", json!([])),
            "/spec/clusterIP",
            json!("None"),
        ),
    ));
    let two = json!([{"port": 80}, {"port": 443, "name": "https"}]);
    assert_err(
        &check("", "Service", with(service(), "/spec/ports", two)),
        "spec.ports[0].name",
        "Required value",
    );
    let dup = json!([{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]);
    assert_err(
        &check("", "Service", with(service(), "/spec/ports", dup)),
        "spec.ports[1].name",
        "Duplicate value",
    );
    let same = json!([{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]);
    assert_err(
        &check("", "Service", with(service(), "/spec/ports", same)),
        "spec.ports[1]",
        "Duplicate value",
    );
    let bad = json!([{"port": 0, "targetPort": "Bad_Name"}]);
    let errs = check("", "Service", with(service(), "/spec/ports", bad));
    assert_err(
        &errs,
        "spec.ports[0].port",
        "must be between 1 and 65535, inclusive",
    );
    assert_err(
        &errs,
        "spec.ports[0].targetPort",
        "must contain only alpha-numeric characters",
    );
    let errs = check(
        "",
        "Service",
        with(service(), "/spec/type", json!("Internal")),
    );
    assert_err(
        &errs,
        "spec.type",
        "supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
    );
    let errs = check(
        "",
        "Service",
        with(service(), "/spec/ports/0/nodePort", json!(30080)),
    );
    assert_err(
        &errs,
        "spec.ports[0].nodePort",
        "may not be used when `type` is 'ClusterIP'",
    );
    assert_ok(check(
        "",
        "Service",
        with(
            with(service(), "/spec/ports/0/nodePort", json!(30080)),
            "/spec/type",
            json!("NodePort"),
        ),
    ));
    let errs = check(
        "",
        "Service",
        with(service(), "/spec/selector", json!({"app": "a b"})),
    );
    assert_err(&errs, "spec.selector", "a valid label must be");
    let errs = check(
        "",
        "Service",
        with(service(), "/spec/clusterIP", json!("10.0.0.300")),
    );
    assert_err(&errs, "spec.clusterIPs[0]", "must be a valid IP address");
    let external = json!({"metadata": meta("ext"), "spec": {"type": "ExternalName"}});
    assert_err(
        &check("", "Service", external.clone()),
        "spec.externalName",
        "Required value",
    );
    assert_ok(check(
        "",
        "Service",
        with(external, "/spec/externalName", json!("example.com")),
    ));
    let errs = check(
        "",
        "Service",
        with(service(), "/spec/sessionAffinity", json!("Cookie")),
    );
    assert_err(&errs, "spec.sessionAffinity", "Unsupported value");
    let errs = check(
        "",
        "Service",
        with(service(), "/spec/internalTrafficPolicy", json!("Node")),
    );
    assert_err(
        &errs,
        "spec.internalTrafficPolicy",
        "supported values: \"Cluster\", \"Local\"",
    );
    let errs = check(
        "",
        "Service",
        with(service(), "/spec/ipFamilies", json!(["IPv5"])),
    );
    assert_err(&errs, "spec.ipFamilies[0]", "Unsupported value: \"IPv5\"");
    let errs = check(
        "",
        "Service",
        with(service(), "/spec/ipFamilyPolicy", json!("DualStack")),
    );
    assert_err(&errs, "spec.ipFamilyPolicy", "Unsupported value");
}

#[test]
fn service_cluster_ip_is_immutable() {
    let old = with(service(), "/spec/clusterIP", json!("10.96.0.10"));
    assert_ok(check_update("", "Service", old.clone(), old.clone()));
    let errs = check_update(
        "",
        "Service",
        old.clone(),
        with(old, "/spec/clusterIP", json!("10.96.0.11")),
    );
    assert_eq!(
        errs[0].message(),
        "spec.clusterIPs[0]: Invalid value: [\"10.96.0.11\"]: may not change once set"
    );
}

// ---------------------------------------------------------------------------------------------
// ConfigMaps and Secrets.

#[test]
fn config_map_rules() {
    let cm = |data: Value| json!({"metadata": meta("cfg"), "data": data});
    assert_ok(check(
        "",
        "ConfigMap",
        cm(json!({"app.properties": "a=b", "KEY_1": "x"})),
    ));
    let errs = check("", "ConfigMap", cm(json!({"bad/key": "x"})));
    assert_err(
        &errs,
        "data[bad/key]",
        "a valid config key must consist of alphanumeric characters",
    );
    assert_err(
        &check("", "ConfigMap", cm(json!({"..x": "x"}))),
        "data[..x]",
        "must not start with '..'",
    );
    let big = "x".repeat(MAX_CONFIG_SIZE_FOR_TESTS + 1);
    let errs = check("", "ConfigMap", cm(json!({"big": big})));
    assert_eq!(
        errs[0].message(),
        ": Too long: must have at most 1048576 bytes"
    );
    let both = json!({"metadata": meta("cfg"), "data": {"k": "v"}, "binaryData": {"k": "dg=="}});
    assert_err(
        &check("", "ConfigMap", both),
        "binaryData[k]",
        "duplicate of key present in data",
    );
}

const MAX_CONFIG_SIZE_FOR_TESTS: usize = 1024 * 1024;

#[test]
fn immutable_config_maps_and_secrets() {
    let old = json!({"metadata": meta("cfg"), "data": {"k": "v"}, "immutable": true});
    assert_ok(check_update(
        "",
        "ConfigMap",
        old.clone(),
        with(old.clone(), "/metadata/labels", json!({"a": "b"})),
    ));
    let errs = check_update(
        "",
        "ConfigMap",
        old.clone(),
        with(old.clone(), "/data/k", json!("w")),
    );
    assert_err(
        &errs,
        "data",
        "Forbidden: field is immutable when `immutable` is set",
    );
    let errs = check_update(
        "",
        "ConfigMap",
        old.clone(),
        with(old.clone(), "/immutable", json!(false)),
    );
    assert_err(
        &errs,
        "immutable",
        "field is immutable when `immutable` is set",
    );
    let mutable = with(old.clone(), "/immutable", Value::Null);
    assert_ok(check_update(
        "",
        "ConfigMap",
        mutable.clone(),
        with(mutable, "/data/k", json!("w")),
    ));
    let secret = json!({"metadata": meta("s"), "data": {"k": "dg=="}, "immutable": true});
    let errs = check_update(
        "",
        "Secret",
        secret.clone(),
        with(secret, "/data/k", json!("dw==")),
    );
    assert_err(&errs, "data", "field is immutable when `immutable` is set");
}

#[test]
fn secret_rules() {
    let secret = |ty: &str, data: Value| json!({"metadata": meta("s"), "type": ty, "data": data});
    assert_ok(check(
        "",
        "Secret",
        json!({"metadata": meta("s"), "data": {"password": "cHc="}}),
    ));
    assert_err(
        &check("", "Secret", secret("Opaque", json!({"a b": ""}))),
        "data[a b]",
        "a valid config key",
    );
    let errs = check(
        "",
        "Secret",
        secret("kubernetes.io/tls", json!({"tls.crt": "eA=="})),
    );
    assert_err(&errs, "data[tls.key]", "Required value");
    assert_ok(check(
        "",
        "Secret",
        secret(
            "kubernetes.io/tls",
            json!({"tls.crt": "eA==", "tls.key": "eA=="}),
        ),
    ));
    let errs = check(
        "",
        "Secret",
        secret("kubernetes.io/dockerconfigjson", json!({})),
    );
    assert_err(&errs, "data[.dockerconfigjson]", "Required value");
    let errs = check(
        "",
        "Secret",
        secret("kubernetes.io/service-account-token", json!({})),
    );
    assert_err(
        &errs,
        "metadata.annotations[kubernetes.io/service-account.name]",
        "Required value",
    );
    let old = secret("Opaque", json!({}));
    let errs = check_update(
        "",
        "Secret",
        old.clone(),
        with(old.clone(), "/type", json!("kubernetes.io/tls")),
    );
    assert_err(&errs, "type", "field is immutable");
    let big = "QUJD".repeat(MAX_CONFIG_SIZE_FOR_TESTS / 3 + 1);
    assert_err(
        &check("", "Secret", secret("Opaque", json!({"big": big}))),
        "data",
        "Too long: must have at most 1048576 bytes",
    );
}

// ---------------------------------------------------------------------------------------------
// Storage.

fn pvc() -> Value {
    json!({"metadata": meta("data"), "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
}

#[test]
fn pvc_rules() {
    assert_ok(check("", "PersistentVolumeClaim", pvc()));
    let errs = check(
        "",
        "PersistentVolumeClaim",
        with(pvc(), "/spec/accessModes", json!([])),
    );
    assert_err(
        &errs,
        "spec.accessModes",
        "Required value: at least 1 access mode is required",
    );
    let errs = check(
        "",
        "PersistentVolumeClaim",
        with(pvc(), "/spec/accessModes", json!(["ReadWriteSometimes"])),
    );
    assert_err(
        &errs,
        "spec.accessModes",
        "Unsupported value: \"ReadWriteSometimes\"",
    );
    let errs = check(
        "",
        "PersistentVolumeClaim",
        with(pvc(), "/spec/resources/requests", json!({})),
    );
    assert_err(&errs, "spec.resources[storage]", "Required value");
    let errs = check(
        "",
        "PersistentVolumeClaim",
        with(pvc(), "/spec/resources/requests/storage", json!("0")),
    );
    assert_err(
        &errs,
        "spec.resources[storage]",
        "must be greater than zero",
    );
    let errs = check(
        "",
        "PersistentVolumeClaim",
        with(pvc(), "/spec/volumeMode", json!("Raw")),
    );
    assert_err(
        &errs,
        "spec.volumeMode",
        "supported values: \"Block\", \"Filesystem\"",
    );
}

#[test]
fn pvc_update_rules() {
    let old = pvc();
    let errs = check_update(
        "",
        "PersistentVolumeClaim",
        old.clone(),
        with(old.clone(), "/spec/accessModes", json!(["ReadWriteMany"])),
    );
    assert_err(&errs, "spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims");
    // Binding fills in the volume name once.
    assert_ok(check_update(
        "",
        "PersistentVolumeClaim",
        old.clone(),
        with(old.clone(), "/spec/volumeName", json!("pv-1")),
    ));
    let grown = with(
        old.clone(),
        "/spec/resources/requests/storage",
        json!("2Gi"),
    );
    assert_err(
        &check_update("", "PersistentVolumeClaim", old.clone(), grown.clone()),
        "spec",
        "spec is immutable",
    );
    let bound = with(old.clone(), "/status", json!({"phase": "Bound"}));
    assert_ok(check_update("", "PersistentVolumeClaim", bound, grown));
    // Retroactive default class: a claim without one may get one, but not change it later.
    let classed = with(old.clone(), "/spec/storageClassName", json!("standard"));
    assert_ok(check_update(
        "",
        "PersistentVolumeClaim",
        old.clone(),
        classed.clone(),
    ));
    assert_err(
        &check_update(
            "",
            "PersistentVolumeClaim",
            classed.clone(),
            with(classed, "/spec/storageClassName", json!("fast")),
        ),
        "spec",
        "spec is immutable",
    );
    let opted_out = with(old, "/spec/storageClassName", json!(""));
    assert_err(
        &check_update(
            "",
            "PersistentVolumeClaim",
            opted_out.clone(),
            with(opted_out, "/spec/storageClassName", json!("standard")),
        ),
        "spec",
        "spec is immutable",
    );
}

#[test]
fn pv_and_storage_class_rules() {
    let pv = json!({"metadata": {"name": "pv-1"}, "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}}});
    assert_ok(check("", "PersistentVolume", pv.clone()));
    assert_err(
        &check(
            "",
            "PersistentVolume",
            with(pv.clone(), "/spec/hostPath", Value::Null),
        ),
        "spec",
        "must specify a volume type",
    );
    assert_err(
        &check(
            "",
            "PersistentVolume",
            with(pv.clone(), "/spec/capacity", Value::Null),
        ),
        "spec.capacity",
        "Required value",
    );
    let errs = check(
        "",
        "PersistentVolume",
        with(pv, "/spec/persistentVolumeReclaimPolicy", json!("Keep")),
    );
    assert_err(
        &errs,
        "spec.persistentVolumeReclaimPolicy",
        "supported values: \"Delete\", \"Recycle\", \"Retain\"",
    );

    let sc = json!({"metadata": {"name": "fast"}, "provisioner": "example.com/disk"});
    assert_ok(check("storage.k8s.io", "StorageClass", sc.clone()));
    let errs = check(
        "storage.k8s.io",
        "StorageClass",
        with(sc.clone(), "/provisioner", json!("a/b/c")),
    );
    assert_err(&errs, "provisioner", "a qualified name must consist of");
    assert_err(
        &check(
            "storage.k8s.io",
            "StorageClass",
            with(sc.clone(), "/provisioner", Value::Null),
        ),
        "provisioner",
        "Required value",
    );
    let errs = check(
        "storage.k8s.io",
        "StorageClass",
        with(sc.clone(), "/volumeBindingMode", json!("Later")),
    );
    assert_err(
        &errs,
        "volumeBindingMode",
        "supported values: \"Immediate\", \"WaitForFirstConsumer\"",
    );
    let errs = check_update(
        "storage.k8s.io",
        "StorageClass",
        sc.clone(),
        with(sc.clone(), "/parameters", json!({"type": "ssd"})),
    );
    assert_err(
        &errs,
        "parameters",
        "Forbidden: updates to parameters are forbidden.",
    );
    assert_ok(check_update(
        "storage.k8s.io",
        "StorageClass",
        sc.clone(),
        with(sc, "/metadata/labels", json!({"a": "b"})),
    ));
}

// ---------------------------------------------------------------------------------------------
// Cluster objects and the rest.

#[test]
fn namespace_node_and_event_rules() {
    let mut ns = json!({"metadata": {"name": "team"}});
    apply_defaults("", "Namespace", &mut ns);
    prepare_for_create("", "Namespace", &mut ns, "u");
    assert_ok(validate("", "Namespace", &ns, None));
    let errs = validate(
        "",
        "Namespace",
        &with(ns, "/spec/finalizers", json!(["cleanup"])),
        None,
    );
    assert_err(
        &errs,
        "spec.finalizers",
        "name is neither a standard finalizer name nor is it fully qualified",
    );

    let node = json!({"metadata": {"name": "node-1"}, "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}], "podCIDR": "10.244.0.0/24"}});
    assert_ok(check("", "Node", node.clone()));
    assert_err(
        &check(
            "",
            "Node",
            with(node.clone(), "/spec/taints/0/effect", json!("Never")),
        ),
        "spec.taints[0].effect",
        "Unsupported value",
    );
    assert_err(
        &check("", "Node", with(node, "/spec/podCIDR", json!("10.244.0.0"))),
        "spec.podCIDRs[0]",
        "must be a valid CIDR value",
    );

    let event = json!({"metadata": meta("e1"), "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "type": "Normal"});
    assert_ok(check("", "Event", event.clone()));
    let errs = check(
        "",
        "Event",
        with(event.clone(), "/involvedObject/namespace", json!("other")),
    );
    assert_err(
        &errs,
        "involvedObject.namespace",
        "does not match event.namespace",
    );
    assert_err(
        &check("", "Event", with(event, "/type", json!("Fatal"))),
        "type",
        "supported values: \"Normal\", \"Warning\"",
    );
}

#[test]
fn endpoints_and_endpoint_slices() {
    let ep = json!({"metadata": meta("web"), "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
    assert_ok(check("", "Endpoints", ep.clone()));
    let errs = check(
        "",
        "Endpoints",
        with(ep, "/subsets/0/addresses/0/ip", json!("nope")),
    );
    assert_err(
        &errs,
        "subsets[0].addresses[0].ip",
        "must be a valid IP address",
    );

    let slice = json!({"metadata": meta("web-abc"), "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80, "name": "http"}]});
    assert_ok(check("discovery.k8s.io", "EndpointSlice", slice.clone()));
    let errs = check(
        "discovery.k8s.io",
        "EndpointSlice",
        with(slice.clone(), "/addressType", Value::Null),
    );
    assert_err(&errs, "addressType", "Required value");
    let errs = check(
        "discovery.k8s.io",
        "EndpointSlice",
        with(slice.clone(), "/addressType", json!("IPv5")),
    );
    assert_err(
        &errs,
        "addressType",
        "supported values: \"IPv4\", \"IPv6\", \"FQDN\"",
    );
    let errs = check(
        "discovery.k8s.io",
        "EndpointSlice",
        with(slice.clone(), "/endpoints/0/addresses", json!(["::1"])),
    );
    assert_err(
        &errs,
        "endpoints[0].addresses[0]",
        "must be a valid IPv4 address",
    );
    let errs = check(
        "discovery.k8s.io",
        "EndpointSlice",
        with(slice.clone(), "/endpoints/0/addresses", json!([])),
    );
    assert_err(
        &errs,
        "endpoints[0].addresses",
        "must contain at least 1 address",
    );
    let errs = check_update(
        "discovery.k8s.io",
        "EndpointSlice",
        slice.clone(),
        with(
            with(slice, "/addressType", json!("IPv6")),
            "/endpoints/0/addresses",
            json!(["::1"]),
        ),
    );
    assert_err(&errs, "addressType", "field is immutable");
}

#[test]
fn pdb_lease_limit_range_and_quota() {
    let pdb = json!({"metadata": meta("web"), "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}});
    assert_ok(check("policy", "PodDisruptionBudget", pdb.clone()));
    let errs = check(
        "policy",
        "PodDisruptionBudget",
        with(pdb.clone(), "/spec/maxUnavailable", json!("50%")),
    );
    assert_err(
        &errs,
        "spec",
        "minAvailable and maxUnavailable cannot be both set",
    );
    let errs = check(
        "policy",
        "PodDisruptionBudget",
        with(pdb, "/spec/minAvailable", json!("150%")),
    );
    assert_err(&errs, "spec.minAvailable", "must not be greater than 100%");

    let lease = json!({"metadata": meta("leader"), "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    assert_ok(check("coordination.k8s.io", "Lease", lease.clone()));
    let errs = check(
        "coordination.k8s.io",
        "Lease",
        with(lease, "/spec/leaseDurationSeconds", json!(0)),
    );
    assert_err(&errs, "spec.leaseDurationSeconds", "must be greater than 0");

    let lr = json!({"metadata": meta("limits"), "spec": {"limits": [{"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "2"}}]}});
    assert_ok(check("", "LimitRange", lr.clone()));
    let errs = check(
        "",
        "LimitRange",
        with(lr.clone(), "/spec/limits/0/min/cpu", json!("3")),
    );
    assert_err(
        &errs,
        "spec.limits[0].min[cpu]",
        "min value 3 is greater than max value 2",
    );
    let errs = check(
        "",
        "LimitRange",
        with(lr.clone(), "/spec/limits/0/default", json!({"cpu": "4"})),
    );
    assert_err(
        &errs,
        "spec.limits[0].default[cpu]",
        "default value 4 is greater than max value 2",
    );
    let errs = check(
        "",
        "LimitRange",
        with(lr, "/spec/limits/0/type", json!("Node")),
    );
    assert_err(&errs, "spec.limits[0].type", "Unsupported value");

    let quota =
        json!({"metadata": meta("q"), "spec": {"hard": {"pods": "10", "requests.cpu": "4"}}});
    assert_ok(check("", "ResourceQuota", quota.clone()));
    let errs = check(
        "",
        "ResourceQuota",
        with(quota.clone(), "/spec/hard/pods", json!("ten")),
    );
    assert_err(
        &errs,
        "spec.hard[pods]",
        "quantities must match the regular expression",
    );
    let errs = check(
        "",
        "ResourceQuota",
        with(quota, "/spec/scopes", json!(["Everything"])),
    );
    assert_err(&errs, "spec.scopes", "Unsupported value");
}

#[test]
fn pod_templates_and_errors_are_stable() {
    let pt = json!({"metadata": meta("t"), "template": template()});
    assert_ok(check("", "PodTemplate", pt.clone()));
    let bad = with(
        with(pt, "/template/spec/containers/0/name", json!("")),
        "/metadata/name",
        json!("T"),
    );
    let first = check("", "PodTemplate", bad.clone());
    assert_eq!(first, check("", "PodTemplate", bad));
    assert_eq!(first[0].field, "metadata.name");
    assert_eq!(first[1].field, "template.spec.containers[0].name");
}

#[test]
fn helper_checks() {
    assert!(port_name_errors("http").is_empty());
    assert_eq!(
        port_name_errors("1234"),
        vec!["must contain at least one letter (a-z)".to_string()]
    );
    assert!(port_name_errors("a--b").contains(&"must not contain consecutive hyphens".to_string()));
    assert!(port_name_errors("much-too-long-name")
        .contains(&"must be no more than 15 characters".to_string()));
    assert!(config_map_key_errors("a.b_c-D").is_empty());
    assert_eq!(
        config_map_key_errors("."),
        vec!["must not be '.'".to_string()]
    );
    assert_eq!(percent_value("25%"), Some(25));
    assert_eq!(percent_value("%"), None);
    assert_eq!(
        NameRule::PathSegment.check("a/b", false),
        vec!["may not contain '/'".to_string()]
    );
    assert_eq!(
        NameRule::PathSegment.check("..", false),
        vec!["may not be '..'".to_string()]
    );
    assert!(NameRule::PathSegment
        .check("system:admin", false)
        .is_empty());
    assert_eq!(
        describe_diff(&json!({"a": 1, "b": [1]}), &json!({"a": 2, "b": [1]})),
        "  a: 1 -> 2"
    );
}
