//! The handlers' view of the resource model: defaulting, validation, schemas, patches and
//! managed fields, each looked up for the kind at hand.

use nodeless_api::error::FieldError;
use nodeless_api::registry::ResourceKind;
use nodeless_patch::SchemaRef;
use serde_json::Value;

use crate::objects;
use crate::ApiError;

/// The four patch types of PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        match content_type {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// The OpenAPI definition of a kind, for patches and field validation.
fn schema(kind: &ResourceKind) -> SchemaRef<'static> {
    SchemaRef {
        definitions: nodeless_api::schema::definitions(),
        root: nodeless_api::schema::definition_name(kind.group, kind.version, kind.kind)
            .unwrap_or(""),
    }
}

pub fn apply_defaults(kind: &ResourceKind, obj: &mut Value) {
    nodeless_api::defaults::apply_defaults(kind.group, kind.kind, obj);
}

pub fn prepare_for_create(kind: &ResourceKind, obj: &mut Value, uid: &str) {
    nodeless_api::defaults::prepare_for_create(kind.group, kind.kind, obj, uid);
}

pub fn validate(kind: &ResourceKind, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    nodeless_api::validation::validate(kind.group, kind.kind, obj, old)
}

/// The paths of the fields the kind's schema does not know.
pub fn unknown_fields(kind: &ResourceKind, obj: &Value) -> Vec<String> {
    let root = schema(kind).root;
    if root.is_empty() {
        return Vec::new();
    }
    nodeless_api::schema::unknown_fields(root, obj)
}

/// Drops the fields the kind's schema does not know.
pub fn prune_unknown_fields(kind: &ResourceKind, obj: &mut Value) {
    let root = schema(kind).root;
    if !root.is_empty() {
        nodeless_api::schema::prune_unknown_fields(root, obj);
    }
}

pub fn strategic_merge(
    kind: &ResourceKind,
    old: &Value,
    patch: &Value,
) -> Result<Value, nodeless_patch::PatchError> {
    nodeless_patch::strategic_merge_patch(old, patch, &schema(kind))
}

/// Top-level fields a write on the main resource never owns: the status, for kinds that
/// have a status subresource.
fn ignored_paths(kind: &ResourceKind) -> &'static [&'static str] {
    if kind.status_subresource {
        &["status"]
    } else {
        &[]
    }
}

/// Server-side apply of `applied` onto `live` by `manager`; conflicts are 409s.
pub fn apply(
    kind: &ResourceKind,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let now = objects::now_rfc3339();
    let name = objects::name(applied)
        .or_else(|| live.and_then(objects::name))
        .unwrap_or_default()
        .to_string();
    match nodeless_patch::apply(
        live,
        applied,
        manager,
        force,
        &schema(kind),
        &kind.api_version(),
        &now,
        ignored_paths(kind),
    ) {
        Ok(result) => {
            let mut obj = result.object;
            objects::meta_mut(&mut obj).insert("managedFields".into(), result.managed_fields);
            Ok(obj)
        }
        Err(nodeless_patch::ApplyError::Conflicts(conflicts)) => {
            let mut err = ApiError::conflict(kind, &name, "");
            err.message = conflicts.to_string();
            let causes: Vec<Value> = conflicts
                .0
                .iter()
                .map(|c| serde_json::json!({ "reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": c.field }))
                .collect();
            if let Some(details) = err.details.as_mut() {
                details["causes"] = Value::Array(causes);
            }
            Err(err)
        }
        Err(other) => Err(ApiError::bad_request(other.to_string())),
    }
}

/// Records in managedFields what a create, update or non-apply patch by `manager` set.
pub fn track_update(kind: &ResourceKind, old: Option<&Value>, new: &mut Value, manager: &str) {
    let now = objects::now_rfc3339();
    let managed = nodeless_patch::update_managed_fields(
        old,
        new,
        manager,
        &schema(kind),
        &kind.api_version(),
        &now,
        ignored_paths(kind),
    );
    objects::meta_mut(new).insert("managedFields".into(), managed);
}
