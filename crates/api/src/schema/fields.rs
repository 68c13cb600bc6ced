//! Checks objects against the definitions: fields the schema does not know (for
//! `fieldValidation=Strict|Warn`) and values of the wrong JSON type.

use serde_json::Value;

use super::{definitions, V2_REF_PREFIX};
use crate::error::{FieldError, FieldPath};

/// Follows `$ref`s until a schema with content; `None` for a dangling reference.
fn resolve(schema: &Value) -> Option<&'static Value> {
    let mut name = schema.get("$ref")?.as_str()?.strip_prefix(V2_REF_PREFIX)?;
    loop {
        let target = definitions().get(name)?;
        match target
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(V2_REF_PREFIX))
        {
            Some(next) => name = next,
            None => return Some(target),
        }
    }
}

/// Visits the schema's own content, or the content behind its `$ref`.
fn with_resolved(schema: &Value) -> &Value {
    match schema.get("$ref") {
        Some(_) => resolve(schema).unwrap_or(schema),
        None => schema,
    }
}

/// Whether the schema keeps fields it does not declare (`x-kubernetes-preserve-unknown-fields`).
fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

/// The paths of the fields of `obj` that definition `definition` does not declare, in
/// upstream's strict-decoding notation (`spec.foo`, `spec.template.spec.containers[0].bar`),
/// in document order. The caller formats them as `unknown field "<path>"`. An unknown
/// definition yields no paths.
pub fn unknown_fields(definition: &str, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(schema) = definitions().get(definition) {
        walk_unknown(with_resolved(schema), obj, &FieldPath::default(), &mut out);
    }
    out
}

fn walk_unknown(schema: &Value, value: &Value, path: &FieldPath, out: &mut Vec<String>) {
    let schema = with_resolved(schema);
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, field_value) in fields {
                    match properties.get(name) {
                        Some(property) => {
                            walk_unknown(property, field_value, &path.child(name), out)
                        }
                        None if preserves_unknown(schema) => {}
                        None => out.push(path.child(name).into()),
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for (key, field_value) in fields {
                    walk_unknown(additional, field_value, &path.child(key), out);
                }
            }
            // Neither: a free-form object (RawExtension, FieldsV1, Patch) accepts anything.
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk_unknown(item_schema, item, &path.index(i), out);
                }
            }
        }
        _ => {}
    }
}

/// Removes the fields of `obj` that definition `definition` does not declare, as decoding
/// into upstream's typed structs drops them (whatever `fieldValidation` says, unknown fields
/// are never stored). An unknown definition leaves the object as it is.
pub fn prune_unknown_fields(definition: &str, obj: &mut Value) {
    if let Some(schema) = definitions().get(definition) {
        prune(with_resolved(schema), obj);
    }
}

fn prune(schema: &Value, value: &mut Value) {
    let schema = with_resolved(schema);
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                if !preserves_unknown(schema) {
                    fields.retain(|name, _| properties.contains_key(name));
                }
                for (name, field_value) in fields.iter_mut() {
                    if let Some(property) = properties.get(name) {
                        prune(property, field_value);
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for field_value in fields.values_mut() {
                    prune(additional, field_value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items.iter_mut() {
                    prune(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// The JSON type a schema declares, with upstream's special formats folded in.
fn expected_type(schema: &Value) -> Option<&str> {
    if schema.get("format").and_then(Value::as_str) == Some("int-or-string") {
        return Some("int-or-string");
    }
    schema.get("type").and_then(Value::as_str)
}

/// The JSON type name of a value, as upstream's decoding errors spell it.
fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Values of `obj` whose JSON type the definition does not allow (a string where an integer
/// is declared, `1.5` for an integer, an object for a list...). Upstream rejects these while
/// decoding, with 400 BadRequest. `null` is accepted anywhere (it decodes to the zero value).
/// Quantities accept strings and numbers.
pub fn type_errors(definition: &str, obj: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Some(schema) = definitions().get(definition) {
        walk_types(definition, schema, obj, &FieldPath::default(), &mut out);
    }
    out
}

fn walk_types(
    name: &str,
    schema: &Value,
    value: &Value,
    path: &FieldPath,
    out: &mut Vec<FieldError>,
) {
    let (name, schema) = match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(V2_REF_PREFIX))
    {
        Some(target) => match definitions().get_key_value(target) {
            Some((target_name, target_schema)) => (target_name.as_str(), target_schema),
            None => return,
        },
        None => (name, schema),
    };
    if value.is_null() {
        return;
    }
    let quantity = name.ends_with(".Quantity") && schema.get("properties").is_none();
    let ok = match (expected_type(schema), value) {
        _ if quantity => value.is_string() || value.is_number(),
        (Some("int-or-string"), v) => v.is_string() || v.is_i64() || v.is_u64(),
        (Some("integer"), v) => v.is_i64() || v.is_u64(),
        (Some("number"), v) => v.is_number(),
        (Some("string"), v) => v.is_string(),
        (Some("boolean"), v) => v.is_boolean(),
        (Some("array"), v) => v.is_array(),
        (Some("object"), v) => v.is_object(),
        _ => true,
    };
    if !ok {
        let expected = if quantity {
            "quantity"
        } else {
            expected_type(schema).unwrap_or("value")
        };
        let detail = format!("expected {expected}, got {}", json_type_name(value));
        out.push(FieldError::type_invalid(
            path.as_str(),
            value.clone(),
            detail,
        ));
        return;
    }
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (field, field_value) in fields {
                    if let Some(property) = properties.get(field) {
                        walk_types(name, property, field_value, &path.child(field), out);
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for (key, field_value) in fields {
                    walk_types(name, additional, field_value, &path.child(key), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk_types(name, item_schema, item, &path.index(i), out);
                }
            }
        }
        _ => {}
    }
}
