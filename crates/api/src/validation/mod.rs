//! Validation: the essentials of upstream's `ValidateXxx` / `ValidateXxxUpdate` for every served
//! kind, with upstream's field paths and messages.
//!
//! Objects are validated as JSON after defaulting. Errors come out in a stable order: metadata
//! first, then the fields in the order upstream checks them.

mod apps;
mod batch;
mod certificates;
mod coordination;
mod core;
mod discovery;
mod policy;
mod storage;

pub use apps::STATEFUL_SET_UPDATE_FORBIDDEN;
pub use batch::{check_time_zone, parse_cron_schedule, CRON_JOB_NAME_MAX_LENGTH};
pub use core::{MAX_SECRET_SIZE, POD_UPDATE_FORBIDDEN};

use serde_json::{Map, Value};

use crate::error::{FieldError, FieldPath};
use crate::names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name, validate_labels,
};
use crate::quantity::{Quantity, QUANTITY_FORMAT_MESSAGE};

/// Upstream's `FieldImmutableErrorMsg`.
pub const FIELD_IMMUTABLE: &str = "field is immutable";
/// Upstream's `TotalAnnotationSizeLimitB`.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

type Object = Map<String, Value>;

/// Validates an object of kind `(group, kind)`; `old` is the stored object on update. The scope
/// (namespaced or not) is taken from the kind; see [`validate_with_scope`].
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    validate_with_scope(group, kind, obj, old, !is_cluster_scoped(group, kind))
}

/// As [`validate`], with the scope given: `namespaced` objects need `metadata.namespace`, the
/// others must not have one.
pub fn validate_with_scope(
    group: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
    namespaced: bool,
) -> Vec<FieldError> {
    let mut errs = validate_object_meta(obj.get("metadata"), namespaced, name_rule(group, kind));
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(
            obj.get("metadata"),
            old.get("metadata"),
        ));
    }
    let Some(root) = obj.as_object() else {
        return errs;
    };
    let old = old.and_then(Value::as_object);
    match group {
        "" => core::validate(kind, root, old, &mut errs),
        "apps" => apps::validate(kind, root, old, &mut errs),
        "batch" => batch::validate(kind, root, old, &mut errs),
        "certificates.k8s.io" => certificates::validate(kind, root, old, &mut errs),
        "coordination.k8s.io" => coordination::validate(kind, root, old, &mut errs),
        "discovery.k8s.io" => discovery::validate(kind, root, old, &mut errs),
        "policy" => policy::validate(kind, root, old, &mut errs),
        "storage.k8s.io" => storage::validate(kind, root, old, &mut errs),
        _ => {}
    }
    errs
}

/// Kinds that live outside namespaces.
fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "",
            "Namespace" | "Node" | "PersistentVolume" | "ComponentStatus"
        ) | (
            "storage.k8s.io",
            "StorageClass" | "CSIDriver" | "CSINode" | "VolumeAttachment"
        ) | (
            "rbac.authorization.k8s.io",
            "ClusterRole" | "ClusterRoleBinding"
        ) | ("scheduling.k8s.io", "PriorityClass")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("apiregistration.k8s.io", "APIService")
            | ("admissionregistration.k8s.io", _)
            | ("certificates.k8s.io", "CertificateSigningRequest")
            | ("node.k8s.io", "RuntimeClass")
            | ("flowcontrol.apiserver.k8s.io", _)
    )
}

/// How a kind's `metadata.name` is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// `NameIsDNSSubdomain`: most kinds.
    Subdomain,
    /// `NameIsDNSLabel`: namespaces.
    Label,
    /// `NameIsDNS1035Label`: services.
    Dns1035Label,
    /// `ValidatePathSegmentName`: RBAC objects and others that only must be usable in a URL.
    PathSegment,
}

impl NameRule {
    /// Upstream's messages for `name`; `prefix` is true for `generateName`, whose trailing dash
    /// is ignored as upstream's `maskTrailingDash` does.
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let name = if prefix && name.len() > 1 {
            name.strip_suffix('-').unwrap_or(name)
        } else {
            name
        };
        match self {
            NameRule::Subdomain => is_dns1123_subdomain(name),
            NameRule::Label => is_dns1123_label(name),
            NameRule::Dns1035Label => is_dns1035_label(name),
            NameRule::PathSegment => path_segment_errors(name, prefix),
        }
    }
}

fn path_segment_errors(name: &str, prefix: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if !prefix && (name == "." || name == "..") {
        errs.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata.

/// Upstream's `ValidateObjectMeta`: name or generateName, namespace by scope, labels,
/// annotations, owner references and finalizers.
pub fn validate_object_meta(
    meta: Option<&Value>,
    namespaced: bool,
    rule: NameRule,
) -> Vec<FieldError> {
    let path = FieldPath::root("metadata");
    let mut errs = Vec::new();
    let empty = Object::new();
    let meta = meta.and_then(Value::as_object).unwrap_or(&empty);
    let name = str_at(meta, "name");
    let generate_name = str_at(meta, "generateName");
    if !generate_name.is_empty() {
        for msg in rule.check(generate_name, true) {
            errs.push(FieldError::invalid(
                path.child("generateName"),
                generate_name.into(),
                msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                path.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        for msg in rule.check(name, false) {
            errs.push(FieldError::invalid(path.child("name"), name.into(), msg));
        }
    }
    let namespace = str_at(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(path.child("namespace"), ""));
        } else {
            for msg in is_dns1123_label(namespace) {
                errs.push(FieldError::invalid(
                    path.child("namespace"),
                    namespace.into(),
                    msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            path.child("namespace"),
            "not allowed on this type",
        ));
    }
    errs.extend(validate_label_map(
        meta.get("labels"),
        &path.child("labels"),
    ));
    errs.extend(validate_annotations(
        meta.get("annotations"),
        &path.child("annotations"),
    ));
    errs.extend(validate_owner_references(
        meta.get("ownerReferences"),
        &path.child("ownerReferences"),
    ));
    errs.extend(validate_finalizers(
        meta.get("finalizers"),
        &path.child("finalizers"),
    ));
    errs
}

/// Upstream's `ValidateObjectMetaUpdate`: name, namespace, uid and creationTimestamp are fixed.
pub fn validate_object_meta_update(meta: Option<&Value>, old: Option<&Value>) -> Vec<FieldError> {
    let path = FieldPath::root("metadata");
    let mut errs = Vec::new();
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        let new_value = meta.and_then(|m| m.get(field)).filter(|v| !v.is_null());
        let old_value = old.and_then(|m| m.get(field)).filter(|v| !v.is_null());
        // uid and creationTimestamp left out of an update are filled in from the stored object.
        if matches!(field, "uid" | "creationTimestamp") && new_value.is_none() {
            continue;
        }
        if new_value != old_value {
            let shown = new_value
                .cloned()
                .unwrap_or_else(|| Value::String(String::new()));
            errs.push(FieldError::invalid(
                path.child(field),
                shown,
                FIELD_IMMUTABLE,
            ));
        }
    }
    errs
}

/// Labels (or any label-shaped map such as a selector): keys are qualified names, values are
/// label values; errors at `path` as upstream reports them.
pub(crate) fn validate_label_map(value: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => validate_labels(map, path),
        Some(other) => vec![FieldError::type_invalid(
            path,
            other.clone(),
            "must be of type object",
        )],
    }
}

fn validate_annotations(value: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let map = match value {
        None | Some(Value::Null) => return errs,
        Some(Value::Object(map)) => map,
        Some(other) => {
            return vec![FieldError::type_invalid(
                path,
                other.clone(),
                "must be of type object",
            )]
        }
    };
    let mut total = 0;
    for (key, value) in map {
        for msg in is_qualified_name(&key.to_lowercase()) {
            errs.push(FieldError::invalid(path, key.as_str().into(), msg));
        }
        match value {
            Value::String(v) => total += key.len() + v.len(),
            other => errs.push(FieldError::type_invalid(
                path.key(key),
                other.clone(),
                "must be of type string",
            )),
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn validate_owner_references(value: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(refs) = value.and_then(Value::as_array) else {
        return errs;
    };
    let mut controllers = Vec::new();
    for reference in refs {
        let Some(reference) = reference.as_object() else {
            errs.push(FieldError::type_invalid(
                path,
                reference.clone(),
                "must be of type object",
            ));
            continue;
        };
        let api_version = str_at(reference, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(
                path.child("apiVersion"),
                api_version.into(),
                "version must not be empty",
            ));
        }
        let kind = str_at(reference, "kind");
        if kind.is_empty() {
            errs.push(FieldError::invalid(
                path.child("kind"),
                kind.into(),
                "kind must not be empty",
            ));
        }
        let name = str_at(reference, "name");
        if name.is_empty() {
            errs.push(FieldError::invalid(
                path.child("name"),
                name.into(),
                "name must not be empty",
            ));
        }
        let uid = str_at(reference, "uid");
        if uid.is_empty() {
            errs.push(FieldError::invalid(
                path.child("uid"),
                uid.into(),
                "uid must not be empty",
            ));
        }
        if reference.get("controller") == Some(&Value::Bool(true)) {
            controllers.push(format!("{kind}/{name}"));
        }
    }
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            path,
            Value::Array(refs.clone()),
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
    errs
}

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

fn validate_finalizers(value: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(finalizers) = value.and_then(Value::as_array) else {
        return errs;
    };
    for finalizer in finalizers {
        let name = finalizer.as_str().unwrap_or("");
        let msgs = is_qualified_name(name);
        if !msgs.is_empty() {
            for msg in msgs {
                errs.push(FieldError::invalid(path, name.into(), msg));
            }
        } else if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
            errs.push(FieldError::invalid(
                path,
                name.into(),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the group modules.

/// The string at `key`, or `""` when absent or not a string.
pub(crate) fn str_at<'a>(map: &'a Object, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The object at `key`, if it is one.
pub(crate) fn obj_at<'a>(map: &'a Object, key: &str) -> Option<&'a Object> {
    map.get(key).and_then(Value::as_object)
}

/// The object elements of the array at `key` with their indexes.
pub(crate) fn objects_at<'a>(map: &'a Object, key: &str) -> Vec<(usize, &'a Object)> {
    map.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_object().map(|o| (i, o)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `key` is absent or `null`.
pub(crate) fn absent(map: &Object, key: &str) -> bool {
    matches!(map.get(key), None | Some(Value::Null))
}

/// Upstream's `ValidateNonnegativeField` for an optional integer at `key`.
pub(crate) fn nonnegative(map: &Object, key: &str, path: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some(value) = map.get(key).filter(|v| !v.is_null()) {
        match value.as_i64() {
            Some(n) if n >= 0 => {}
            Some(_) => errs.push(FieldError::invalid(
                path.child(key),
                value.clone(),
                "must be greater than or equal to 0",
            )),
            None => errs.push(FieldError::type_invalid(
                path.child(key),
                value.clone(),
                "must be of type integer",
            )),
        }
    }
}

/// An optional integer at `key` that must be above zero (upstream's `ValidatePositiveField`
/// wording is "must be greater than 0").
pub(crate) fn positive(map: &Object, key: &str, path: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some(value) = map.get(key).filter(|v| !v.is_null()) {
        match value.as_i64() {
            Some(n) if n > 0 => {}
            Some(_) => errs.push(FieldError::invalid(
                path.child(key),
                value.clone(),
                "must be greater than 0",
            )),
            None => errs.push(FieldError::type_invalid(
                path.child(key),
                value.clone(),
                "must be of type integer",
            )),
        }
    }
}

/// A string at `key` that, when present and non-empty, must be one of `supported`; with
/// `required`, an empty or missing value is a `Required` error.
pub(crate) fn one_of(
    map: &Object,
    key: &str,
    supported: &[&str],
    required: bool,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    match map.get(key) {
        None | Some(Value::Null) => {
            if required {
                errs.push(FieldError::required(path.child(key), ""));
            }
        }
        Some(Value::String(s)) if s.is_empty() => {
            if required {
                errs.push(FieldError::required(path.child(key), ""));
            }
        }
        Some(Value::String(s)) if supported.contains(&s.as_str()) => {}
        Some(other) => errs.push(FieldError::not_supported(
            path.child(key),
            other.clone(),
            supported,
        )),
    }
}

/// Parses a quantity given as a JSON string or number.
pub(crate) fn parse_quantity(value: &Value) -> Option<Quantity> {
    match value {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// A resource list (`requests`, `limits`, `hard`, `capacity`): every value a non-negative
/// quantity. Returns the parsed quantities in order for further checks.
pub(crate) fn validate_resource_list(
    value: Option<&Value>,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) -> Vec<(String, Quantity)> {
    let mut out = Vec::new();
    let Some(map) = value.and_then(Value::as_object) else {
        return out;
    };
    for (name, raw) in map {
        for msg in is_qualified_name(name) {
            errs.push(FieldError::invalid(
                path.key(name),
                name.as_str().into(),
                msg,
            ));
        }
        match parse_quantity(raw) {
            None => errs.push(FieldError::invalid(
                path.key(name),
                raw.clone(),
                QUANTITY_FORMAT_MESSAGE,
            )),
            Some(q) if q.is_negative() => errs.push(FieldError::invalid(
                path.key(name),
                raw.clone(),
                "must be greater than or equal to 0",
            )),
            Some(q) => out.push((name.clone(), q)),
        }
    }
    out
}

/// Upstream's `IsValidPortNum`.
pub(crate) fn port_number_errors(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_string()]
    }
}

/// Upstream's `IsValidPortName` (an IANA service name).
pub(crate) fn port_name_errors(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// Upstream's `IsConfigMapKey`.
pub(crate) fn config_map_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string());
    }
    if key == "." {
        errs.push("must not be '.'".to_string());
    } else if key == ".." {
        errs.push("must not be '..'".to_string());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// An int-or-string that is a non-negative integer or a percentage (`IsValidPercent` and
/// `ValidatePositiveIntOrPercent`); percentages above 100 are refused when `max_100`.
pub(crate) fn int_or_percent(
    value: &Value,
    path: &FieldPath,
    max_100: bool,
    errs: &mut Vec<FieldError>,
) {
    match value {
        Value::Number(n) => {
            if n.as_i64().is_none_or(|n| n < 0) {
                errs.push(FieldError::invalid(path, value.clone(), "must be greater than or equal to 0"));
            }
        }
        Value::String(s) => match percent_value(s) {
            None => errs.push(FieldError::invalid(path, value.clone(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
            Some(p) if max_100 && p > 100 => errs.push(FieldError::invalid(path, value.clone(), "must not be greater than 100%")),
            Some(_) => {}
        },
        Value::Null => {}
        other => errs.push(FieldError::type_invalid(path, other.clone(), "must be an integer or a string")),
    }
}

/// The number of a `N%` string.
pub(crate) fn percent_value(s: &str) -> Option<u64> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether an int-or-percent value is zero (`0` or `"0%"`).
pub(crate) fn is_zero_int_or_percent(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => percent_value(s) == Some(0),
        _ => false,
    }
}

/// A label selector (`metav1.LabelSelector`) at `key`: required, valid, non-empty (`empty_msg`)
/// and, when `template_labels` is given, matching them.
pub(crate) fn validate_workload_selector(
    spec: &Object,
    spec_path: &FieldPath,
    empty_msg: &str,
    template_labels: Option<&Value>,
    errs: &mut Vec<FieldError>,
) {
    let selector_path = spec_path.child("selector");
    let Some(raw) = spec.get("selector").filter(|v| !v.is_null()) else {
        errs.push(FieldError::required(&selector_path, ""));
        return;
    };
    match crate::selector::LabelSelector::from_json(raw, &selector_path) {
        Err(selector_errs) => errs.extend(selector_errs),
        Ok(selector) => {
            if selector.is_empty() {
                errs.push(FieldError::invalid(&selector_path, raw.clone(), empty_msg));
            } else if let Some(labels) = template_labels {
                if !selector.matches(labels.as_object()) {
                    errs.push(FieldError::invalid(
                        spec_path
                            .child("template")
                            .child("metadata")
                            .child("labels"),
                        labels.clone(),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
}

/// `ValidateImmutableField` for `key` of two objects.
pub(crate) fn immutable(
    new: &Object,
    old: &Object,
    key: &str,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    let normalize = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    let new_value = normalize(new.get(key));
    if new_value != normalize(old.get(key)) {
        errs.push(FieldError::invalid(
            path.child(key),
            new_value.unwrap_or(Value::Null),
            FIELD_IMMUTABLE,
        ));
    }
}

/// A readable list of the differences between two JSON values, one `path: old -> new` per line,
/// standing in for the Go diff upstream appends to some messages.
pub(crate) fn describe_diff(old: &Value, new: &Value) -> String {
    let mut lines = Vec::new();
    diff_into(old, new, "", &mut lines);
    lines.join("\n")
}

fn diff_into(old: &Value, new: &Value, at: &str, lines: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, av) in a {
                let child = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                diff_into(av, b.get(key).unwrap_or(&Value::Null), &child, lines);
            }
            for (key, bv) in b {
                if !a.contains_key(key) {
                    let child = if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    };
                    diff_into(&Value::Null, bv, &child, lines);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (av, bv)) in a.iter().zip(b).enumerate() {
                diff_into(av, bv, &format!("{at}[{i}]"), lines);
            }
        }
        _ => lines.push(format!("  {at}: {old} -> {new}")),
    }
}

#[cfg(test)]
mod tests;
