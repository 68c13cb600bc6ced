//! The representations of objects and lists that a client can ask for: the object itself,
//! a `Table`, or `PartialObjectMetadata`.

use nodeless_api::registry::ResourceKind;
use serde_json::{json, Map, Value};

use crate::http_util::Output;

/// `PartialObjectMetadata` of one object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| Value::Object(Map::new())),
    })
}

fn column_definitions(kind: &ResourceKind) -> Value {
    Value::Array(
        nodeless_api::table::columns(kind.group, kind.kind)
            .into_iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// One row of a table, carrying the object in the form `includeObject` asks for.
fn row(kind: &ResourceKind, obj: &Value, include: &str, now: time::OffsetDateTime) -> Value {
    let cells = nodeless_api::table::row_cells(kind.group, kind.kind, obj, now);
    let mut row = json!({ "cells": cells });
    match include {
        "None" => {}
        "Object" => row["object"] = obj.clone(),
        _ => row["object"] = partial_metadata(obj),
    }
    row
}

/// A `Table` of the objects, with `list_meta` as its metadata.
pub fn table(
    kind: &ResourceKind,
    items: &[Value],
    list_meta: Value,
    include: &str,
    with_headers: bool,
) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": items.iter().map(|o| row(kind, o, include, now)).collect::<Vec<_>>(),
    });
    if with_headers {
        table["columnDefinitions"] = column_definitions(kind);
    } else {
        table["columnDefinitions"] = Value::Array(vec![]);
    }
    table
}

/// A list of objects in the representation the client asked for.
pub fn list(
    kind: &ResourceKind,
    items: Vec<Value>,
    list_meta: Value,
    output: Output,
    include: &str,
) -> Value {
    match output {
        Output::Table => table(kind, &items, list_meta, include, true),
        Output::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": list_meta,
            "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
        }),
        Output::Json | Output::Yaml => json!({
            "kind": kind.list_kind(),
            "apiVersion": kind.api_version(),
            "metadata": list_meta,
            "items": items,
        }),
    }
}

/// One object in the representation the client asked for.
pub fn object(kind: &ResourceKind, obj: Value, output: Output, include: &str) -> Value {
    match output {
        Output::Table => {
            let meta = json!({ "resourceVersion": obj.get("metadata").and_then(|m| m.get("resourceVersion")).cloned().unwrap_or(Value::Null) });
            table(kind, &[obj], meta, include, true)
        }
        Output::Metadata => partial_metadata(&obj),
        Output::Json | Output::Yaml => obj,
    }
}
