//! The OpenAPI schemas of the served kinds: definitions in upstream's OpenAPI v2 shape
//! (generated once from k8s-openapi's schemars schemas, with upstream's list/map/patch
//! extensions added), the `/openapi/v2` and `/openapi/v3` documents, and field validation
//! against the schemas (`fieldValidation=Strict|Warn`).

mod extensions;
mod fields;
mod kinds;
mod openapi;
mod protobuf;

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

pub use fields::{prune_unknown_fields, type_errors, unknown_fields};
pub use openapi::{openapi_v2, openapi_v3_group_version, openapi_v3_hash, openapi_v3_index};
pub use protobuf::openapi_v2_protobuf;

/// Prefix of a `$ref` to a definition in OpenAPI v2.
pub const V2_REF_PREFIX: &str = "#/definitions/";

/// A served resource, as the registry describes it; the input of the OpenAPI documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// The kind of the resource's objects, e.g. `Deployment`.
    pub kind: &'static str,
    /// The resource name in URLs, e.g. `deployments`.
    pub plural: &'static str,
    /// Whether the objects live in namespaces (paths under `/namespaces/{namespace}/`).
    pub namespaced: bool,
    /// Subresources with their own operations: `"status"`, `"scale"`, `"binding"`, `"eviction"`.
    pub subresources: &'static [&'static str],
    /// Kubernetes verbs: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`.
    pub verbs: &'static [&'static str],
}

/// The definition name of a kind, e.g. `("apps", "v1", "Deployment")` ->
/// `io.k8s.api.apps.v1.Deployment`. Knows the served kinds, their `<Kind>List`s, `Scale`,
/// `Eviction`, `Binding` and the meta kinds (`Status`, `DeleteOptions`, `WatchEvent`,
/// `APIResourceList`, ...; these in any group version).
pub fn definition_name(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    if let Some(entry) = kinds::find(group, version, kind) {
        return Some(entry.definition);
    }
    if let Some(base) = kind.strip_suffix("List") {
        if let Some(entry) = kinds::find(group, version, base).filter(|k| k.has_list) {
            let name = format!("{}List", entry.definition);
            return definitions().get_key_value(&name).map(|(k, _)| k.as_str());
        }
    }
    kinds::META_KINDS
        .iter()
        .find(|m| m.kind == kind)
        .map(|m| m.definition)
}

/// Every definition reachable from the served kinds, keyed by name
/// (`io.k8s.api.core.v1.PodSpec`), in OpenAPI v2 form: `$ref`s point to
/// `#/definitions/<name>`, upstream's `x-kubernetes-*` list/map/patch extensions are present
/// and top-level kinds carry `x-kubernetes-group-version-kind`. Generated on first use.
pub fn definitions() -> &'static Map<String, Value> {
    static DEFINITIONS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFINITIONS.get_or_init(generate_definitions)
}

/// Builds [`definitions`]: schemars output, fixed up to match upstream's v2 document.
fn generate_definitions() -> Map<String, Value> {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/definitions".into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    kinds::register(&mut generator);
    let mut definitions = generator.take_definitions(false);

    for (name, schema) in definitions.iter_mut() {
        fix_definition(name, schema);
    }
    add_lists(&mut definitions);
    extensions::inject(&mut definitions);
    add_group_version_kinds(&mut definitions);
    definitions.sort_keys();
    definitions
}

/// Adjusts one schemars definition to upstream's v2 shape.
fn fix_definition(name: &str, schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    // k8s-openapi marks int-or-string types with an extension; upstream's v2 uses formats.
    if object.remove("x-kubernetes-int-or-string").is_some() {
        object.insert("type".into(), json!("string"));
        if name.ends_with(".IntOrString") {
            object.insert("format".into(), json!("int-or-string"));
        }
    }
    // k8s-openapi requires `metadata` because its Rust field is not optional; upstream does not.
    let metadata_ref = object
        .get("properties")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("$ref"))
        .and_then(Value::as_str);
    if metadata_ref.is_some_and(|r| r.ends_with(".ObjectMeta") || r.ends_with(".ListMeta")) {
        let mut now_empty = false;
        if let Some(Value::Array(required)) = object.get_mut("required") {
            required.retain(|r| r != "metadata");
            now_empty = required.is_empty();
        }
        if now_empty {
            object.remove("required");
        }
    }
}

/// Synthesizes `<Kind>List` definitions (k8s-openapi's `List<T>` has no schema).
fn add_lists(definitions: &mut Map<String, Value>) {
    for entry in kinds::KINDS.iter().filter(|k| k.has_list) {
        let list = json!({
            "description": format!("{}List is a list of {}s.", entry.kind, entry.kind),
            "type": "object",
            "properties": {
                "apiVersion": {
                    "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                    "type": "string",
                },
                "items": {
                    "description": format!("Items is the list of {}s.", entry.kind),
                    "type": "array",
                    "items": { "$ref": format!("{V2_REF_PREFIX}{}", entry.definition) },
                },
                "kind": {
                    "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                    "type": "string",
                },
                "metadata": {
                    "$ref": format!("{V2_REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
                    "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                },
            },
            "required": ["items"],
        });
        definitions.insert(format!("{}List", entry.definition), list);
    }
}

/// One `x-kubernetes-group-version-kind` entry, keys in upstream's order.
fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

/// Adds `x-kubernetes-group-version-kind` to every kind, List kind and meta kind.
fn add_group_version_kinds(definitions: &mut Map<String, Value>) {
    let mut set = |name: String, value: Vec<Value>| {
        if let Some(Value::Object(definition)) = definitions.get_mut(&name) {
            definition.insert(
                "x-kubernetes-group-version-kind".into(),
                Value::Array(value),
            );
        }
    };
    for entry in kinds::KINDS {
        set(
            entry.definition.to_string(),
            vec![gvk(entry.group, entry.version, entry.kind)],
        );
        if entry.has_list {
            let list_kind = format!("{}List", entry.kind);
            set(
                format!("{}List", entry.definition),
                vec![gvk(entry.group, entry.version, &list_kind)],
            );
        }
    }
    let group_versions = kinds::group_versions();
    for meta in kinds::META_KINDS {
        let value = if meta.every_group_version {
            group_versions
                .iter()
                .map(|(g, v)| gvk(g, v, meta.kind))
                .collect()
        } else {
            vec![gvk("", "v1", meta.kind)]
        };
        set(meta.definition.to_string(), value);
    }
}

/// Calls `visit` on every `$ref` string inside `schema`.
pub(crate) fn for_each_ref(schema: &Value, visit: &mut impl FnMut(&str)) {
    match schema {
        Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => visit(target),
                    // Property maps hold property names, not schema keywords.
                    _ => for_each_ref(value, visit),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| for_each_ref(item, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
