//! The core group (`v1`): pods and pod templates, services, config and storage objects.

use serde_json::{json, Value};

use super::{
    absent, config_map_key_errors, describe_diff, immutable, nonnegative, obj_at, objects_at,
    one_of, parse_quantity, port_name_errors, port_number_errors, str_at, validate_label_map,
    validate_resource_list, Object,
};
use crate::defaults::VOLUME_SOURCES;
use crate::error::{FieldError, FieldPath};
use crate::names::{is_dns1123_label, is_dns1123_subdomain, is_qualified_name};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
/// Upstream's `MaxSecretSize`, also the limit of a ConfigMap.
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// The message upstream gives when a pod update changes a field that cannot change.
pub const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

pub(super) fn validate(kind: &str, obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    match kind {
        "Pod" => validate_pod(obj, old, errs),
        "PodTemplate" => {
            if let Some(template) = obj.get("template") {
                validate_pod_template(template, &FieldPath::root("template"), errs);
            } else {
                errs.push(FieldError::required("template", ""));
            }
        }
        "ReplicationController" => validate_replication_controller(obj, errs),
        "Service" => validate_service(obj, old, errs),
        "ConfigMap" => validate_config_map(obj, old, errs),
        "Secret" => validate_secret(obj, old, errs),
        "PersistentVolumeClaim" => validate_pvc(obj, old, errs),
        "PersistentVolume" => validate_pv(obj, errs),
        "Namespace" => validate_namespace(obj, errs),
        "Node" => validate_node(obj, errs),
        "Event" => validate_event(obj, errs),
        "Endpoints" => validate_endpoints(obj, errs),
        "LimitRange" => validate_limit_range(obj, errs),
        "ResourceQuota" => validate_resource_quota(obj, errs),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Pods.

fn validate_pod(obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    let spec_path = FieldPath::root("spec");
    match obj_at(obj, "spec") {
        Some(spec) => validate_pod_spec(spec, &spec_path, false, errs),
        None => errs.push(FieldError::required("spec", "")),
    }
    if let (Some(new_spec), Some(old_spec)) = (obj.get("spec"), old.and_then(|o| o.get("spec"))) {
        validate_pod_spec_update(new_spec, old_spec, errs);
    }
}

/// A pod template (`metadata` + `spec`) at `path`, as `ValidatePodTemplateSpec`.
pub(super) fn validate_pod_template(
    template: &Value,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    let Some(template) = template.as_object() else {
        errs.push(FieldError::required(path, ""));
        return;
    };
    let meta_path = path.child("metadata");
    if let Some(meta) = obj_at(template, "metadata") {
        errs.extend(validate_label_map(
            meta.get("labels"),
            &meta_path.child("labels"),
        ));
        if let Some(annotations) = obj_at(meta, "annotations") {
            for key in annotations.keys() {
                for msg in is_qualified_name(&key.to_lowercase()) {
                    errs.push(FieldError::invalid(
                        meta_path.child("annotations"),
                        key.as_str().into(),
                        msg,
                    ));
                }
            }
        }
    }
    match obj_at(template, "spec") {
        Some(spec) => validate_pod_spec(spec, &path.child("spec"), true, errs),
        None => errs.push(FieldError::required(
            path.child("spec").child("containers"),
            "",
        )),
    }
}

/// `ValidatePodSpec`; `in_template` relaxes nothing today but marks template paths.
pub(super) fn validate_pod_spec(
    spec: &Object,
    path: &FieldPath,
    _in_template: bool,
    errs: &mut Vec<FieldError>,
) {
    let volume_names = validate_volumes(spec, &path.child("volumes"), errs);
    let mut container_names: Vec<String> = Vec::new();
    let init = objects_at(spec, "initContainers");
    for (i, container) in &init {
        validate_container(
            container,
            &path.child("initContainers").index(*i),
            &volume_names,
            &mut container_names,
            errs,
        );
        if let Some(policy) = container.get("restartPolicy").filter(|v| !v.is_null()) {
            if policy != "Always" {
                errs.push(FieldError::not_supported(
                    path.child("initContainers")
                        .index(*i)
                        .child("restartPolicy"),
                    policy.clone(),
                    &["Always"],
                ));
            }
        }
    }
    let containers = objects_at(spec, "containers");
    if containers.is_empty() {
        errs.push(FieldError::required(path.child("containers"), ""));
    }
    for (i, container) in &containers {
        let container_path = path.child("containers").index(*i);
        validate_container(
            container,
            &container_path,
            &volume_names,
            &mut container_names,
            errs,
        );
        if !absent(container, "restartPolicy") {
            errs.push(FieldError::forbidden(
                container_path.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    one_of(spec, "restartPolicy", RESTART_POLICIES, true, path, errs);
    one_of(spec, "dnsPolicy", DNS_POLICIES, true, path, errs);
    if let Some(seconds) = spec.get("activeDeadlineSeconds").filter(|v| !v.is_null()) {
        if !seconds
            .as_i64()
            .is_some_and(|s| (1..=i64::from(i32::MAX)).contains(&s))
        {
            errs.push(FieldError::invalid(
                path.child("activeDeadlineSeconds"),
                seconds.clone(),
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    errs.extend(validate_label_map(
        spec.get("nodeSelector"),
        &path.child("nodeSelector"),
    ));
    for key in ["serviceAccountName", "nodeName"] {
        let value = str_at(spec, key);
        if !value.is_empty() {
            for msg in is_dns1123_subdomain(value) {
                errs.push(FieldError::invalid(path.child(key), value.into(), msg));
            }
        }
    }
    for key in ["hostname", "subdomain"] {
        let value = str_at(spec, key);
        if !value.is_empty() {
            for msg in is_dns1123_label(value) {
                errs.push(FieldError::invalid(path.child(key), value.into(), msg));
            }
        }
    }
    nonnegative(spec, "terminationGracePeriodSeconds", path, errs);
    for (i, toleration) in objects_at(spec, "tolerations") {
        validate_toleration(toleration, &path.child("tolerations").index(i), errs);
    }
    for (i, secret) in objects_at(spec, "imagePullSecrets") {
        if str_at(secret, "name").is_empty() {
            errs.push(FieldError::required(
                path.child("imagePullSecrets").index(i).child("name"),
                "",
            ));
        }
    }
}

fn validate_container(
    container: &Object,
    path: &FieldPath,
    volume_names: &[String],
    seen_names: &mut Vec<String>,
    errs: &mut Vec<FieldError>,
) {
    let name = str_at(container, "name");
    if name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else {
        for msg in is_dns1123_label(name) {
            errs.push(FieldError::invalid(path.child("name"), name.into(), msg));
        }
        if seen_names.iter().any(|n| n == name) {
            errs.push(FieldError::duplicate(path.child("name"), name.into()));
        } else {
            seen_names.push(name.to_string());
        }
    }
    let image = str_at(container, "image");
    if image.is_empty() {
        errs.push(FieldError::required(path.child("image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            path.child("image"),
            image.into(),
            "must not have leading or trailing whitespace",
        ));
    }
    one_of(
        container,
        "imagePullPolicy",
        PULL_POLICIES,
        false,
        path,
        errs,
    );
    one_of(
        container,
        "terminationMessagePolicy",
        TERMINATION_MESSAGE_POLICIES,
        false,
        path,
        errs,
    );
    validate_container_ports(container, &path.child("ports"), errs);
    validate_env(container, &path.child("env"), errs);
    validate_volume_mounts(container, &path.child("volumeMounts"), volume_names, errs);
    validate_resources(
        container.get("resources"),
        &path.child("resources"),
        true,
        errs,
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = obj_at(container, probe) {
            let probe_path = path.child(probe);
            for key in [
                "initialDelaySeconds",
                "timeoutSeconds",
                "periodSeconds",
                "successThreshold",
                "failureThreshold",
            ] {
                nonnegative(p, key, &probe_path, errs);
            }
            let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
                .iter()
                .filter(|h| !absent(p, h))
                .count();
            if handlers == 0 {
                errs.push(FieldError::required(
                    &probe_path,
                    "must specify a handler type",
                ));
            }
            if probe != "readinessProbe"
                && p.get("successThreshold")
                    .and_then(Value::as_i64)
                    .is_some_and(|s| s != 1)
            {
                errs.push(FieldError::invalid(
                    probe_path.child("successThreshold"),
                    p["successThreshold"].clone(),
                    "must be 1",
                ));
            }
        }
    }
}

fn validate_container_ports(container: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in objects_at(container, "ports") {
        let port_path = path.index(i);
        let name = str_at(port, "name");
        if !name.is_empty() {
            for msg in port_name_errors(name) {
                errs.push(FieldError::invalid(
                    port_path.child("name"),
                    name.into(),
                    msg,
                ));
            }
            if names.contains(&name) {
                errs.push(FieldError::duplicate(port_path.child("name"), name.into()));
            }
            names.push(name);
        }
        match port.get("containerPort") {
            None | Some(Value::Null) => {
                errs.push(FieldError::required(port_path.child("containerPort"), ""))
            }
            Some(v) => {
                for msg in port_number_errors(v.as_i64().unwrap_or(0)) {
                    errs.push(FieldError::invalid(
                        port_path.child("containerPort"),
                        v.clone(),
                        msg,
                    ));
                }
            }
        }
        if let Some(v) = port
            .get("hostPort")
            .filter(|v| v.as_i64() != Some(0) && !v.is_null())
        {
            for msg in port_number_errors(v.as_i64().unwrap_or(0)) {
                errs.push(FieldError::invalid(
                    port_path.child("hostPort"),
                    v.clone(),
                    msg,
                ));
            }
        }
        one_of(port, "protocol", PROTOCOLS, true, &port_path, errs);
    }
}

fn validate_env(container: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    for (i, env) in objects_at(container, "env") {
        let env_path = path.index(i);
        let name = str_at(env, "name");
        if name.is_empty() {
            errs.push(FieldError::required(env_path.child("name"), ""));
        } else if name.contains('=') || !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            errs.push(FieldError::invalid(
                env_path.child("name"),
                name.into(),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        if let Some(from) = obj_at(env, "valueFrom") {
            let from_path = env_path.child("valueFrom");
            if !str_at(env, "value").is_empty() {
                errs.push(FieldError::invalid(
                    &from_path,
                    "".into(),
                    "may not be specified when `value` is not empty",
                ));
            }
            let sources = [
                "fieldRef",
                "resourceFieldRef",
                "configMapKeyRef",
                "secretKeyRef",
                "fileKeyRef",
            ]
            .iter()
            .filter(|s| !absent(from, s))
            .count();
            if sources == 0 {
                errs.push(FieldError::invalid(&from_path, "".into(), "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
            } else if sources > 1 {
                errs.push(FieldError::invalid(
                    &from_path,
                    "".into(),
                    "may not have more than one field specified at a time",
                ));
            }
            for key_ref in ["configMapKeyRef", "secretKeyRef"] {
                if let Some(r) = obj_at(from, key_ref) {
                    if str_at(r, "key").is_empty() {
                        errs.push(FieldError::required(
                            from_path.child(key_ref).child("key"),
                            "",
                        ));
                    }
                }
            }
            if let Some(r) = obj_at(from, "fieldRef") {
                if str_at(r, "fieldPath").is_empty() {
                    errs.push(FieldError::required(
                        from_path.child("fieldRef").child("fieldPath"),
                        "",
                    ));
                }
            }
        }
    }
}

fn validate_volume_mounts(
    container: &Object,
    path: &FieldPath,
    volume_names: &[String],
    errs: &mut Vec<FieldError>,
) {
    let mut mount_paths: Vec<&str> = Vec::new();
    for (i, mount) in objects_at(container, "volumeMounts") {
        let mount_path = path.index(i);
        let name = str_at(mount, "name");
        if name.is_empty() {
            errs.push(FieldError::required(mount_path.child("name"), ""));
        } else if !volume_names.iter().any(|v| v == name) {
            // Upstream reports `field.NotFound`; the closest error type here is Invalid.
            errs.push(FieldError::invalid(
                mount_path.child("name"),
                name.into(),
                "not found",
            ));
        }
        let target = str_at(mount, "mountPath");
        if target.is_empty() {
            errs.push(FieldError::required(mount_path.child("mountPath"), ""));
        } else if mount_paths.contains(&target) {
            errs.push(FieldError::invalid(
                mount_path.child("mountPath"),
                target.into(),
                "must be unique",
            ));
        } else {
            mount_paths.push(target);
        }
        let sub_path = str_at(mount, "subPath");
        if sub_path.starts_with('/') {
            errs.push(FieldError::invalid(
                mount_path.child("subPath"),
                sub_path.into(),
                "must be a relative path",
            ));
        } else if sub_path.split('/').any(|part| part == "..") {
            errs.push(FieldError::invalid(
                mount_path.child("subPath"),
                sub_path.into(),
                "must not contain '..'",
            ));
        }
    }
}

/// `ValidateResourceRequirements`: quantities valid and non-negative, requests <= limits;
/// `for_container` also checks the resource names as `validateContainerResourceName`.
pub(super) fn validate_resources(
    resources: Option<&Value>,
    path: &FieldPath,
    for_container: bool,
    errs: &mut Vec<FieldError>,
) {
    let Some(resources) = resources.and_then(Value::as_object) else {
        return;
    };
    let limits = validate_resource_list(resources.get("limits"), &path.child("limits"), errs);
    let requests = validate_resource_list(resources.get("requests"), &path.child("requests"), errs);
    if for_container {
        for key in ["limits", "requests"] {
            for name in resources
                .get(key)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if let Some(msg) = container_resource_name_error(name) {
                    errs.push(FieldError::invalid(
                        path.child(key).key(name),
                        name.as_str().into(),
                        msg,
                    ));
                }
            }
        }
    }
    for (name, request) in &requests {
        if let Some((_, limit)) = limits.iter().find(|(n, _)| n == name) {
            if request > limit {
                errs.push(FieldError::invalid(
                    path.child("requests").key(name),
                    request.original().into(),
                    format!(
                        "must be less than or equal to {name} limit of {}",
                        limit.original()
                    ),
                ));
            }
        } else if name.starts_with("hugepages-") {
            errs.push(FieldError::forbidden(
                path.child("limits"),
                format!("{name} must be specified"),
            ));
        }
    }
}

/// Why `name` cannot be a container resource: unprefixed names must be standard ones, prefixed
/// ones outside `kubernetes.io` must follow the extended resource naming.
fn container_resource_name_error(name: &str) -> Option<&'static str> {
    match name.split_once('/') {
        None => {
            let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage")
                || name.starts_with("hugepages-");
            (!standard).then_some("must be a standard resource for containers")
        }
        Some((prefix, _)) => {
            let native = prefix == "kubernetes.io" || prefix.ends_with(".kubernetes.io");
            let extended = !native && !name.starts_with("requests.");
            (!native && !extended).then_some("doesn't follow extended resource name standard")
        }
    }
}

fn validate_toleration(toleration: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    let key = str_at(toleration, "key");
    if !key.is_empty() {
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid(path.child("key"), key.into(), msg));
        }
    }
    let operator = str_at(toleration, "operator");
    match operator {
        "" | "Equal" => {
            if key.is_empty() {
                errs.push(FieldError::invalid(
                    path.child("operator"),
                    operator.into(),
                    "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                ));
            }
        }
        "Exists" => {
            let value = str_at(toleration, "value");
            if !value.is_empty() {
                errs.push(FieldError::invalid(
                    path.child("operator"),
                    toleration.get("value").cloned().unwrap_or_default(),
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            path.child("operator"),
            other.into(),
            &["Equal", "Exists"],
        )),
    }
    if !absent(toleration, "tolerationSeconds") && str_at(toleration, "effect") != "NoExecute" {
        errs.push(FieldError::invalid(
            path.child("effect"),
            str_at(toleration, "effect").into(),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
    one_of(toleration, "effect", TAINT_EFFECTS, false, path, errs);
}

/// Validates `spec.volumes` and returns the volume names.
fn validate_volumes(spec: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) -> Vec<String> {
    let mut names = Vec::new();
    for (i, volume) in objects_at(spec, "volumes") {
        let volume_path = path.index(i);
        let name = str_at(volume, "name");
        if name.is_empty() {
            errs.push(FieldError::required(volume_path.child("name"), ""));
        } else {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid(
                    volume_path.child("name"),
                    name.into(),
                    msg,
                ));
            }
            if names.iter().any(|n| n == name) {
                errs.push(FieldError::duplicate(
                    volume_path.child("name"),
                    name.into(),
                ));
            } else {
                names.push(name.to_string());
            }
        }
        let sources: Vec<&str> = VOLUME_SOURCES
            .iter()
            .copied()
            .filter(|s| !absent(volume, s))
            .collect();
        match sources.len() {
            0 => errs.push(FieldError::required(
                &volume_path,
                "must specify a volume type",
            )),
            1 => validate_volume_source(volume, sources[0], &volume_path, errs),
            _ => {
                validate_volume_source(volume, sources[0], &volume_path, errs);
                errs.push(FieldError::forbidden(
                    volume_path.child(sources[1]),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    names
}

fn validate_volume_source(
    volume: &Object,
    source: &str,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    let source_path = path.child(source);
    let Some(body) = obj_at(volume, source) else {
        return;
    };
    let required_key = match source {
        "configMap" => Some("name"),
        "secret" => Some("secretName"),
        "persistentVolumeClaim" => Some("claimName"),
        "hostPath" => Some("path"),
        "nfs" => Some("server"),
        "csi" => Some("driver"),
        _ => None,
    };
    if let Some(key) = required_key {
        if str_at(body, key).is_empty() {
            errs.push(FieldError::required(source_path.child(key), ""));
        }
    }
    if let Some(mode) = body.get("defaultMode").filter(|v| !v.is_null()) {
        if !mode.as_i64().is_some_and(|m| (0..=0o777).contains(&m)) {
            errs.push(FieldError::invalid(
                source_path.child("defaultMode"),
                mode.clone(),
                "must be a number between 0 and 0777 (octal), both inclusive",
            ));
        }
    }
    if source == "emptyDir" {
        if let Some(limit) = body.get("sizeLimit").filter(|v| !v.is_null()) {
            match parse_quantity(limit) {
                Some(q) if !q.is_negative() => {}
                _ => errs.push(FieldError::invalid(
                    source_path.child("sizeLimit"),
                    limit.clone(),
                    "must be greater than or equal to 0",
                )),
            }
        }
        one_of(
            body,
            "medium",
            &["", "Memory", "HugePages"],
            false,
            &source_path,
            errs,
        );
    }
    for (i, item) in objects_at(body, "items") {
        let item_path = source_path.child("items").index(i);
        let item_target = str_at(item, "path");
        if item_target.is_empty() {
            errs.push(FieldError::required(item_path.child("path"), ""));
        } else if item_target.starts_with('/') {
            errs.push(FieldError::invalid(
                item_path.child("path"),
                item_target.into(),
                "must be a relative path",
            ));
        } else if item_target.split('/').any(|p| p == "..") {
            errs.push(FieldError::invalid(
                item_path.child("path"),
                item_target.into(),
                "must not contain '..'",
            ));
        }
        if matches!(source, "configMap" | "secret") && str_at(item, "key").is_empty() {
            errs.push(FieldError::required(item_path.child("key"), ""));
        }
    }
}

/// `ValidatePodUpdate`: the spec may change only in images, activeDeadlineSeconds, added
/// tolerations and a negative terminationGracePeriodSeconds set to 1.
fn validate_pod_spec_update(new_spec: &Value, old_spec: &Value, errs: &mut Vec<FieldError>) {
    let spec_path = FieldPath::root("spec");
    let old_deadline = old_spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64);
    let new_deadline = new_spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64);
    match (old_deadline, new_deadline) {
        (Some(_), None) => errs.push(FieldError::invalid(
            spec_path.child("activeDeadlineSeconds"),
            Value::Null,
            "must not update from a positive integer to nil value",
        )),
        (Some(old), Some(new)) if new > old => errs.push(FieldError::invalid(
            spec_path.child("activeDeadlineSeconds"),
            json!(new),
            "must be less than or equal to previous value",
        )),
        _ => {}
    }
    let old_tolerations = old_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let new_tolerations = new_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let without_seconds = |t: &Value| {
        let mut t = t.clone();
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    for old_toleration in &old_tolerations {
        let kept = new_tolerations
            .iter()
            .any(|t| without_seconds(t) == without_seconds(old_toleration));
        if !kept {
            errs.push(FieldError::forbidden(
                spec_path.child("tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }

    // Compare the specs with every mutable field taken from the old spec.
    let mut munged = new_spec.clone();
    if let Some(munged) = munged.as_object_mut() {
        for key in ["containers", "initContainers"] {
            let old_containers = old_spec.get(key).and_then(Value::as_array);
            if let (Some(items), Some(old_items)) = (
                munged.get_mut(key).and_then(Value::as_array_mut),
                old_containers,
            ) {
                if items.len() == old_items.len() {
                    for (item, old_item) in items.iter_mut().zip(old_items) {
                        if let (Some(item), Some(old_image)) =
                            (item.as_object_mut(), old_item.get("image"))
                        {
                            item.insert("image".into(), old_image.clone());
                        }
                    }
                }
            }
        }
        let restore = |munged: &mut Object, key: &str| match old_spec.get(key) {
            Some(v) => {
                munged.insert(key.into(), v.clone());
            }
            None => {
                munged.remove(key);
            }
        };
        restore(munged, "activeDeadlineSeconds");
        restore(munged, "tolerations");
        let old_grace = old_spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        let new_grace = new_spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        if old_grace.is_some_and(|g| g < 0) && new_grace == Some(1) {
            restore(munged, "terminationGracePeriodSeconds");
        }
    }
    if &munged != old_spec {
        let diff = describe_diff(old_spec, &munged);
        errs.push(FieldError::forbidden(
            spec_path,
            format!("{POD_UPDATE_FORBIDDEN}\n{diff}"),
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// ReplicationController.

fn validate_replication_controller(obj: &Object, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec");
    let Some(spec) = obj_at(obj, "spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    nonnegative(spec, "replicas", &path, errs);
    nonnegative(spec, "minReadySeconds", &path, errs);
    let selector = obj_at(spec, "selector").filter(|s| !s.is_empty());
    match selector {
        None => errs.push(FieldError::required(path.child("selector"), "")),
        Some(selector) => errs.extend(crate::names::validate_labels(
            selector,
            &path.child("selector"),
        )),
    }
    match spec.get("template").filter(|t| !t.is_null()) {
        None => errs.push(FieldError::required(path.child("template"), "")),
        Some(template) => {
            if let Some(selector) = selector {
                let labels = template.get("metadata").and_then(|m| m.get("labels"));
                let matches = selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                if !matches {
                    errs.push(FieldError::invalid(
                        path.child("template").child("metadata").child("labels"),
                        labels.cloned().unwrap_or(Value::Null),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            validate_pod_template(template, &path.child("template"), errs);
            validate_template_restart_always(template, &path.child("template"), errs);
        }
    }
}

/// Controllers that keep pods running need `restartPolicy: Always` and no deadline.
pub(super) fn validate_template_restart_always(
    template: &Value,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    let spec_path = path.child("spec");
    if let Some(spec) = template.get("spec").and_then(Value::as_object) {
        if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str) {
            if policy != "Always" && RESTART_POLICIES.contains(&policy) {
                errs.push(FieldError::not_supported(
                    spec_path.child("restartPolicy"),
                    policy.into(),
                    &["Always"],
                ));
            }
        }
        if !absent(spec, "activeDeadlineSeconds") {
            errs.push(FieldError::forbidden(
                spec_path.child("activeDeadlineSeconds"),
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Service.

fn validate_service(obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec");
    let empty = Object::new();
    let spec = obj_at(obj, "spec").unwrap_or(&empty);
    let service_type = str_at(spec, "type");
    let cluster_ip = str_at(spec, "clusterIP");
    let headless = cluster_ip == "None";
    one_of(
        spec,
        "type",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        true,
        &path,
        errs,
    );
    one_of(
        spec,
        "sessionAffinity",
        &["ClientIP", "None"],
        true,
        &path,
        errs,
    );
    for key in ["internalTrafficPolicy", "externalTrafficPolicy"] {
        one_of(spec, key, &["Cluster", "Local"], false, &path, errs);
    }
    one_of(
        spec,
        "ipFamilyPolicy",
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
        false,
        &path,
        errs,
    );
    let families = spec.get("ipFamilies").and_then(Value::as_array);
    for (i, family) in families.into_iter().flatten().enumerate() {
        if !family.as_str().is_some_and(|f| f == "IPv4" || f == "IPv6") {
            errs.push(FieldError::not_supported(
                path.child("ipFamilies").index(i),
                family.clone(),
                &["IPv4", "IPv6"],
            ));
        }
    }
    let ports = objects_at(spec, "ports");
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errs.push(FieldError::required(path.child("ports"), ""));
    }
    let mut names: Vec<&str> = Vec::new();
    let mut seen: Vec<(i64, &str)> = Vec::new();
    for (i, port) in &ports {
        let port_path = path.child("ports").index(*i);
        let name = str_at(port, "name");
        if name.is_empty() {
            if ports.len() > 1 {
                errs.push(FieldError::required(port_path.child("name"), ""));
            }
        } else {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid(
                    port_path.child("name"),
                    name.into(),
                    msg,
                ));
            }
            if names.contains(&name) {
                errs.push(FieldError::duplicate(port_path.child("name"), name.into()));
            }
            names.push(name);
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        for msg in port_number_errors(number) {
            errs.push(FieldError::invalid(
                port_path.child("port"),
                port.get("port").cloned().unwrap_or(json!(0)),
                msg,
            ));
        }
        one_of(port, "protocol", PROTOCOLS, true, &port_path, errs);
        match port.get("targetPort") {
            Some(Value::Number(n)) => {
                for msg in port_number_errors(n.as_i64().unwrap_or(0)) {
                    errs.push(FieldError::invalid(
                        port_path.child("targetPort"),
                        Value::Number(n.clone()),
                        msg,
                    ));
                }
            }
            Some(Value::String(s)) => {
                for msg in port_name_errors(s) {
                    errs.push(FieldError::invalid(
                        port_path.child("targetPort"),
                        s.as_str().into(),
                        msg,
                    ));
                }
            }
            _ => {}
        }
        let protocol = str_at(port, "protocol");
        if seen.contains(&(number, protocol)) {
            errs.push(FieldError::duplicate(
                &port_path,
                json!({"port": number, "protocol": protocol}),
            ));
        } else {
            seen.push((number, protocol));
        }
        if service_type == "ClusterIP"
            && port
                .get("nodePort")
                .and_then(Value::as_i64)
                .is_some_and(|p| p != 0)
        {
            errs.push(FieldError::forbidden(
                port_path.child("nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    if service_type == "ExternalName" {
        let external_name = str_at(spec, "externalName");
        if external_name.is_empty() {
            errs.push(FieldError::required(path.child("externalName"), ""));
        } else {
            for msg in
                is_dns1123_subdomain(external_name.strip_suffix('.').unwrap_or(external_name))
            {
                errs.push(FieldError::invalid(
                    path.child("externalName"),
                    external_name.into(),
                    msg,
                ));
            }
        }
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<std::net::IpAddr>().is_err() {
        errs.push(FieldError::invalid(
            path.child("clusterIPs").index(0),
            cluster_ip.into(),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    errs.extend(validate_label_map(
        spec.get("selector"),
        &path.child("selector"),
    ));
    if let Some(old_spec) = old.and_then(|o| obj_at(o, "spec")) {
        let old_ip = str_at(old_spec, "clusterIP");
        let old_type = str_at(old_spec, "type");
        if !old_ip.is_empty()
            && !cluster_ip.is_empty()
            && old_ip != cluster_ip
            && old_type != "ExternalName"
            && service_type != "ExternalName"
        {
            let shown = spec
                .get("clusterIPs")
                .filter(|ips| ips.is_array())
                .cloned()
                .unwrap_or_else(|| json!([cluster_ip]));
            errs.push(FieldError::invalid(
                path.child("clusterIPs").index(0),
                shown,
                "may not change once set",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ConfigMap and Secret.

/// The decoded size of a base64 string (upper bound from its length).
fn base64_decoded_len(s: &str) -> usize {
    let padding = s.bytes().rev().take_while(|b| *b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(padding)
}

fn validate_config_map(obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    let mut total = 0;
    let data = obj_at(obj, "data");
    for (key, value) in data.into_iter().flatten() {
        for msg in config_map_key_errors(key) {
            errs.push(FieldError::invalid(
                FieldPath::root("data").key(key),
                key.as_str().into(),
                msg,
            ));
        }
        total += value.as_str().map(str::len).unwrap_or(0);
    }
    for (key, value) in obj_at(obj, "binaryData").into_iter().flatten() {
        let path = FieldPath::root("binaryData").key(key);
        for msg in config_map_key_errors(key) {
            errs.push(FieldError::invalid(&path, key.as_str().into(), msg));
        }
        if data.is_some_and(|d| d.contains_key(key)) {
            errs.push(FieldError::invalid(
                &path,
                key.as_str().into(),
                "duplicate of key present in data",
            ));
        }
        total += value.as_str().map(base64_decoded_len).unwrap_or(0);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("", MAX_SECRET_SIZE));
    }
    if let Some(old) = old {
        validate_immutable_data(obj, old, &["data", "binaryData"], errs);
    }
}

/// `immutable: true` objects keep their data and stay immutable.
fn validate_immutable_data(obj: &Object, old: &Object, keys: &[&str], errs: &mut Vec<FieldError>) {
    if old.get("immutable") != Some(&Value::Bool(true)) {
        return;
    }
    const MSG: &str = "field is immutable when `immutable` is set";
    if obj.get("immutable") != Some(&Value::Bool(true)) {
        errs.push(FieldError::forbidden("immutable", MSG));
    }
    for key in keys {
        let normalize = |m: &Object| {
            m.get(*key)
                .filter(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
                .cloned()
        };
        if normalize(obj) != normalize(old) {
            errs.push(FieldError::forbidden(*key, MSG));
        }
    }
}

fn validate_secret(obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    let data_path = FieldPath::root("data");
    let data = obj_at(obj, "data");
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        for msg in config_map_key_errors(key) {
            errs.push(FieldError::invalid(
                data_path.key(key),
                key.as_str().into(),
                msg,
            ));
        }
        total += value.as_str().map(base64_decoded_len).unwrap_or(0);
    }
    for (key, value) in obj_at(obj, "stringData").into_iter().flatten() {
        for msg in config_map_key_errors(key) {
            errs.push(FieldError::invalid(
                FieldPath::root("stringData").key(key),
                key.as_str().into(),
                msg,
            ));
        }
        total += value.as_str().map(str::len).unwrap_or(0);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long(&data_path, MAX_SECRET_SIZE));
    }
    let has = |key: &str| {
        data.is_some_and(|d| d.contains_key(key))
            || obj_at(obj, "stringData").is_some_and(|d| d.contains_key(key))
    };
    let required_keys: &[&str] = match str_at(obj, "type") {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    };
    for key in required_keys {
        if !has(key) {
            errs.push(FieldError::required(data_path.key(key), ""));
        }
    }
    if str_at(obj, "type") == "kubernetes.io/service-account-token" {
        let annotation = "kubernetes.io/service-account.name";
        let named = obj_at(obj, "metadata")
            .and_then(|m| obj_at(m, "annotations"))
            .is_some_and(|a| !str_at(a, annotation).is_empty());
        if !named {
            errs.push(FieldError::required(
                FieldPath::root("metadata")
                    .child("annotations")
                    .key(annotation),
                "",
            ));
        }
    }
    if str_at(obj, "type") == "kubernetes.io/basic-auth" && !has("username") && !has("password") {
        errs.push(FieldError::required(data_path.key("username"), ""));
        errs.push(FieldError::required(data_path.key("password"), ""));
    }
    if let Some(old) = old {
        immutable(obj, old, "type", &FieldPath::default(), errs);
        validate_immutable_data(obj, old, &["data"], errs);
    }
}

// ---------------------------------------------------------------------------------------------
// Persistent volumes and claims.

fn validate_access_modes(spec: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    let modes = spec
        .get("accessModes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if modes.is_empty() {
        errs.push(FieldError::required(
            path.child("accessModes"),
            "at least 1 access mode is required",
        ));
    }
    for mode in &modes {
        if !mode.as_str().is_some_and(|m| ACCESS_MODES.contains(&m)) {
            errs.push(FieldError::not_supported(
                path.child("accessModes"),
                mode.clone(),
                ACCESS_MODES,
            ));
        }
    }
    if modes.iter().any(|m| m == "ReadWriteOncePod") && modes.len() > 1 {
        errs.push(FieldError::forbidden(
            path.child("accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// `ValidatePersistentVolumeClaimSpec` at `path` (also used for StatefulSet claim templates).
pub(super) fn validate_pvc_spec(spec: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    validate_access_modes(spec, path, errs);
    let storage_path = path.child("resources").key("storage");
    match spec
        .get("resources")
        .and_then(|r| r.get("requests"))
        .and_then(|r| r.get("storage"))
    {
        None | Some(Value::Null) => errs.push(FieldError::required(&storage_path, "")),
        Some(raw) => match parse_quantity(raw) {
            Some(q) if q.to_nanos() > 0 => {}
            Some(_) => errs.push(FieldError::invalid(
                &storage_path,
                raw.clone(),
                "must be greater than zero",
            )),
            None => errs.push(FieldError::invalid(
                &storage_path,
                raw.clone(),
                crate::quantity::QUANTITY_FORMAT_MESSAGE,
            )),
        },
    }
    validate_resources(spec.get("resources"), &path.child("resources"), false, errs);
    one_of(spec, "volumeMode", VOLUME_MODES, false, path, errs);
    if let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) {
        if let Err(selector_errs) =
            crate::selector::LabelSelector::from_json(selector, &path.child("selector"))
        {
            errs.extend(selector_errs);
        }
    }
}

fn validate_pvc(obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec");
    let Some(spec) = obj_at(obj, "spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    validate_pvc_spec(spec, &path, errs);
    let Some(old) = old else {
        return;
    };
    let Some(old_spec) = obj_at(old, "spec") else {
        return;
    };
    let bound = old
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        == Some("Bound");
    let mut munged = spec.clone();
    if str_at(old_spec, "volumeName").is_empty() {
        // Binding sets the volume name once.
        match old_spec.get("volumeName") {
            Some(v) => munged.insert("volumeName".into(), v.clone()),
            None => munged.remove("volumeName"),
        };
    }
    if storage_class_set_from_nil(old, old_spec, spec) {
        // Retroactive default StorageClass assignment (`validateStorageClassUpgradeFromNil`):
        // a claim created without a class may get one later.
        munged.remove("storageClassName");
    }
    if bound {
        let old_requests = old_spec
            .get("resources")
            .and_then(|r| r.get("requests"))
            .cloned();
        if let (Some(resources), Some(old_requests)) = (
            munged.get_mut("resources").and_then(Value::as_object_mut),
            old_requests,
        ) {
            resources.insert("requests".into(), old_requests);
        }
        match old_spec.get("volumeAttributesClassName") {
            Some(v) => munged.insert("volumeAttributesClassName".into(), v.clone()),
            None => munged.remove("volumeAttributesClassName"),
        };
    }
    if &munged != old_spec {
        let diff = describe_diff(&Value::Object(old_spec.clone()), &Value::Object(munged));
        errs.push(FieldError::forbidden(
            &path,
            format!("spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{diff}"),
        ));
    }
}

/// Whether an update sets `storageClassName` on a claim that had none (neither the field nor
/// the beta annotation), as upstream allows for the retroactive default StorageClass.
fn storage_class_set_from_nil(old: &Object, old_spec: &Object, new_spec: &Object) -> bool {
    let old_annotation = old
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .is_some();
    let old_unset = old_spec.get("storageClassName").is_none_or(Value::is_null);
    !old_annotation && old_unset && !str_at(new_spec, "storageClassName").is_empty()
}

fn validate_pv(obj: &Object, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec");
    let Some(spec) = obj_at(obj, "spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    validate_access_modes(spec, &path, errs);
    match obj_at(spec, "capacity") {
        None => errs.push(FieldError::required(path.child("capacity"), "")),
        Some(capacity) => {
            if !capacity.contains_key("storage") || capacity.len() != 1 {
                errs.push(FieldError::not_supported(
                    path.child("capacity"),
                    Value::Object(capacity.clone()),
                    &["storage"],
                ));
            }
            validate_resource_list(spec.get("capacity"), &path.child("capacity"), errs);
        }
    }
    one_of(
        spec,
        "persistentVolumeReclaimPolicy",
        &["Delete", "Recycle", "Retain"],
        false,
        &path,
        errs,
    );
    one_of(spec, "volumeMode", VOLUME_MODES, false, &path, errs);
    let sources = VOLUME_SOURCES
        .iter()
        .chain(["local"].iter())
        .filter(|s| {
            !matches!(
                **s,
                "emptyDir"
                    | "secret"
                    | "configMap"
                    | "downwardAPI"
                    | "projected"
                    | "gitRepo"
                    | "persistentVolumeClaim"
                    | "ephemeral"
                    | "image"
            )
        })
        .filter(|s| !absent(spec, s))
        .count();
    if sources == 0 {
        errs.push(FieldError::required(&path, "must specify a volume type"));
    } else if sources > 1 {
        errs.push(FieldError::forbidden(
            &path,
            "may not specify more than 1 volume type",
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces, nodes, events, endpoints, quotas.

fn validate_namespace(obj: &Object, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec").child("finalizers");
    for finalizer in obj
        .get("spec")
        .and_then(|s| s.get("finalizers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = finalizer.as_str().unwrap_or("");
        let msgs = is_qualified_name(name);
        if !msgs.is_empty() {
            for msg in msgs {
                errs.push(FieldError::invalid(&path, name.into(), msg));
            }
        } else if !name.contains('/') && name != "kubernetes" {
            errs.push(FieldError::invalid(
                &path,
                name.into(),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

fn validate_node(obj: &Object, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec");
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    for (i, taint) in objects_at(spec, "taints") {
        let taint_path = path.child("taints").index(i);
        let key = str_at(taint, "key");
        if key.is_empty() {
            errs.push(FieldError::required(taint_path.child("key"), ""));
        } else {
            for msg in is_qualified_name(key) {
                errs.push(FieldError::invalid(
                    taint_path.child("key"),
                    key.into(),
                    msg,
                ));
            }
        }
        let value = str_at(taint, "value");
        for msg in crate::names::is_valid_label_value(value) {
            errs.push(FieldError::invalid(
                taint_path.child("value"),
                value.into(),
                msg,
            ));
        }
        one_of(taint, "effect", TAINT_EFFECTS, true, &taint_path, errs);
    }
    let pod_cidr = str_at(spec, "podCIDR");
    if !pod_cidr.is_empty() && !is_cidr(pod_cidr) {
        errs.push(FieldError::invalid(
            path.child("podCIDRs").index(0),
            pod_cidr.into(),
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    match (ip.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
        _ => false,
    }
}

fn validate_event(obj: &Object, errs: &mut Vec<FieldError>) {
    let namespace = obj
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved = obj_at(obj, "involvedObject");
    let involved_namespace = involved.map(|i| str_at(i, "namespace")).unwrap_or("");
    let path = FieldPath::root("involvedObject").child("namespace");
    if involved_namespace.is_empty() {
        if !namespace.is_empty() && namespace != "default" {
            errs.push(FieldError::invalid(
                &path,
                involved_namespace.into(),
                "does not match event.namespace",
            ));
        }
    } else if involved_namespace != namespace {
        errs.push(FieldError::invalid(
            &path,
            involved_namespace.into(),
            "does not match event.namespace",
        ));
    }
    one_of(
        obj,
        "type",
        &["Normal", "Warning"],
        false,
        &FieldPath::default(),
        errs,
    );
    nonnegative(obj, "count", &FieldPath::default(), errs);
}

fn validate_endpoints(obj: &Object, errs: &mut Vec<FieldError>) {
    for (i, subset) in objects_at(obj, "subsets") {
        let subset_path = FieldPath::root("subsets").index(i);
        for key in ["addresses", "notReadyAddresses"] {
            for (j, address) in objects_at(subset, key) {
                let ip = str_at(address, "ip");
                if ip.parse::<std::net::IpAddr>().is_err() {
                    errs.push(FieldError::invalid(
                        subset_path.child(key).index(j).child("ip"),
                        ip.into(),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    ));
                }
            }
        }
        let ports = objects_at(subset, "ports");
        for (j, port) in &ports {
            let port_path = subset_path.child("ports").index(*j);
            let name = str_at(port, "name");
            if name.is_empty() && ports.len() > 1 {
                errs.push(FieldError::required(port_path.child("name"), ""));
            } else if !name.is_empty() {
                for msg in is_dns1123_label(name) {
                    errs.push(FieldError::invalid(
                        port_path.child("name"),
                        name.into(),
                        msg,
                    ));
                }
            }
            let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            for msg in port_number_errors(number) {
                errs.push(FieldError::invalid(
                    port_path.child("port"),
                    json!(number),
                    msg,
                ));
            }
            one_of(port, "protocol", PROTOCOLS, true, &port_path, errs);
        }
    }
}

fn validate_limit_range(obj: &Object, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec").child("limits");
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    for (i, item) in objects_at(spec, "limits") {
        let item_path = path.index(i);
        one_of(
            item,
            "type",
            &["Container", "Pod", "PersistentVolumeClaim"],
            true,
            &item_path,
            errs,
        );
        let list = |key: &str, errs: &mut Vec<FieldError>| {
            validate_resource_list(item.get(key), &item_path.child(key), errs)
        };
        let max = list("max", errs);
        let min = list("min", errs);
        let default = list("default", errs);
        let default_request = list("defaultRequest", errs);
        let _ = list("maxLimitRequestRatio", errs);
        let find = |l: &[(String, crate::quantity::Quantity)], name: &str| {
            l.iter().find(|(n, _)| n == name).map(|(_, q)| q.clone())
        };
        for (name, min_q) in &min {
            if let Some(max_q) = find(&max, name) {
                if min_q > &max_q {
                    errs.push(FieldError::invalid(
                        item_path.child("min").key(name),
                        min_q.original().into(),
                        format!(
                            "min value {} is greater than max value {}",
                            min_q.original(),
                            max_q.original()
                        ),
                    ));
                }
            }
        }
        for (label, key, values) in [
            ("default", "default", &default),
            ("default request", "defaultRequest", &default_request),
        ] {
            for (name, q) in values {
                if let Some(max_q) = find(&max, name) {
                    if q > &max_q {
                        errs.push(FieldError::invalid(
                            item_path.child(key).key(name),
                            q.original().into(),
                            format!(
                                "{label} value {} is greater than max value {}",
                                q.original(),
                                max_q.original()
                            ),
                        ));
                    }
                }
                if let Some(min_q) = find(&min, name) {
                    if &min_q > q {
                        errs.push(FieldError::invalid(
                            item_path.child(key).key(name),
                            q.original().into(),
                            format!(
                                "min value {} is greater than {label} value {}",
                                min_q.original(),
                                q.original()
                            ),
                        ));
                    }
                }
            }
        }
        for (name, request) in &default_request {
            if let Some(limit) = find(&default, name) {
                if request > &limit {
                    errs.push(FieldError::invalid(
                        item_path.child("defaultRequest").key(name),
                        request.original().into(),
                        format!(
                            "default request value {} is greater than default limit value {}",
                            request.original(),
                            limit.original()
                        ),
                    ));
                }
            }
        }
    }
}

fn validate_resource_quota(obj: &Object, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec");
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    validate_resource_list(spec.get("hard"), &path.child("hard"), errs);
    const SCOPES: &[&str] = &[
        "Terminating",
        "NotTerminating",
        "BestEffort",
        "NotBestEffort",
        "PriorityClass",
        "CrossNamespacePodAffinity",
        "VolumeAttributesClass",
    ];
    for scope in spec
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !scope.as_str().is_some_and(|s| SCOPES.contains(&s)) {
            errs.push(FieldError::not_supported(
                path.child("scopes"),
                scope.clone(),
                SCOPES,
            ));
        }
    }
}
