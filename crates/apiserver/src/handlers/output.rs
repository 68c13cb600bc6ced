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
    let rows = items.iter().map(|o| row(kind, o, include, now)).collect();
    table_of_rows(kind, rows, list_meta, with_headers)
}

/// A `Table` of rows made by [`row`].
fn table_of_rows(
    kind: &ResourceKind,
    rows: Vec<Value>,
    list_meta: Value,
    with_headers: bool,
) -> Value {
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
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

/// The items of a list response, each converted to the representation the client asked for
/// as it is read: a long list never holds every decoded object at once (a thousand decoded
/// pods take tens of MiB, which the allocator keeps after the response).
pub struct ListItems<'a> {
    kind: &'a ResourceKind,
    output: Output,
    include: &'a str,
    now: time::OffsetDateTime,
    count: usize,
    converted: Converted,
}

enum Converted {
    /// `Output::Json`: the items' compact JSON so far, comma-separated.
    Json(Vec<u8>),
    /// `Output::Table`: the rows; `Output::Metadata`: the `PartialObjectMetadata`;
    /// `Output::Yaml`: the objects.
    Values(Vec<Value>),
}

impl<'a> ListItems<'a> {
    /// An empty list of `kind` in `output` (`include` is the `includeObject` of tables).
    pub fn new(kind: &'a ResourceKind, output: Output, include: &'a str) -> Self {
        let converted = match output {
            Output::Json => Converted::Json(Vec::new()),
            _ => Converted::Values(Vec::new()),
        };
        Self {
            kind,
            output,
            include,
            now: time::OffsetDateTime::now_utc(),
            count: 0,
            converted,
        }
    }

    /// How many items were pushed.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Adds the next item.
    pub fn push(&mut self, item: Value) -> Result<(), crate::ApiError> {
        self.count += 1;
        match &mut self.converted {
            Converted::Json(buffer) => {
                if self.count > 1 {
                    buffer.push(b',');
                }
                serde_json::to_writer(&mut *buffer, &item)
                    .map_err(|e| crate::ApiError::internal(format!("encoding a list item: {e}")))
            }
            Converted::Values(values) => {
                values.push(match self.output {
                    Output::Table => row(self.kind, &item, self.include, self.now),
                    Output::Metadata => partial_metadata(&item),
                    Output::Json | Output::Yaml => item,
                });
                Ok(())
            }
        }
    }

    /// The list response, with `list_meta` as the list's metadata; the same bytes as
    /// `value_response` of [`list`] of the same items.
    pub fn into_response(self, list_meta: Value) -> hyper::Response<crate::http_util::Body> {
        use crate::http_util::{bytes_response, value_response};
        let kind = self.kind;
        match (self.converted, self.output) {
            (Converted::Json(items), _) => {
                let head = json!({
                    "kind": kind.list_kind(),
                    "apiVersion": kind.api_version(),
                    "metadata": list_meta,
                });
                let mut body = serde_json::to_vec(&head).unwrap_or_default();
                // `{"kind":…,"metadata":{…}}` becomes `{"kind":…,"metadata":{…},"items":[…]}`.
                body.pop();
                body.reserve(items.len() + 12);
                body.extend_from_slice(b",\"items\":[");
                body.extend_from_slice(&items);
                body.extend_from_slice(b"]}");
                bytes_response(200, "application/json", body)
            }
            (Converted::Values(rows), Output::Table) => value_response(
                200,
                &table_of_rows(kind, rows, list_meta, true),
                Output::Table,
            ),
            (Converted::Values(partial), Output::Metadata) => {
                let body = json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": list_meta,
                    "items": partial,
                });
                value_response(200, &body, Output::Metadata)
            }
            (Converted::Values(items), output) => {
                let body = json!({
                    "kind": kind.list_kind(),
                    "apiVersion": kind.api_version(),
                    "metadata": list_meta,
                    "items": items,
                });
                value_response(200, &body, output)
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(response: hyper::Response<crate::http_util::Body>) -> Vec<u8> {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    fn pod(name: &str) -> Value {
        json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "7",
                         "labels": {"app": "x"}, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a", "image": "busybox"}]},
            "status": {"phase": "Running"},
        })
    }

    #[tokio::test]
    async fn list_items_give_the_bytes_of_the_whole_list_in_every_output() {
        let kind = nodeless_api::registry::by_plural("", "v1", "pods").unwrap();
        let meta = json!({"resourceVersion": "9", "continue": "abc"});
        for count in [0, 1, 3] {
            let pods: Vec<Value> = (0..count).map(|i| pod(&format!("p{i}"))).collect();
            for output in [Output::Json, Output::Yaml, Output::Metadata] {
                let whole = list(kind, pods.clone(), meta.clone(), output, "Metadata");
                let expected = crate::http_util::value_response(200, &whole, output);
                let mut items = ListItems::new(kind, output, "Metadata");
                for p in &pods {
                    items.push(p.clone()).unwrap();
                }
                assert_eq!(items.len(), count);
                let streamed = items.into_response(meta.clone());
                assert_eq!(
                    streamed.headers().get("content-type"),
                    expected.headers().get("content-type")
                );
                assert_eq!(
                    body_of(streamed).await,
                    body_of(expected).await,
                    "{output:?}, {count} items"
                );
            }
            // A table's rows carry no time-dependent cell for pods made in the past... except
            // the age; compare everything but the cells.
            let mut items = ListItems::new(kind, Output::Table, "Metadata");
            for p in &pods {
                items.push(p.clone()).unwrap();
            }
            let table: Value =
                serde_json::from_slice(&body_of(items.into_response(meta.clone())).await).unwrap();
            let whole = list(kind, pods.clone(), meta.clone(), Output::Table, "Metadata");
            assert_eq!(table["kind"], "Table");
            assert_eq!(table["metadata"], whole["metadata"]);
            assert_eq!(table["columnDefinitions"], whole["columnDefinitions"]);
            assert_eq!(table["rows"].as_array().unwrap().len(), count);
            for (row, expected) in table["rows"]
                .as_array()
                .unwrap()
                .iter()
                .zip(whole["rows"].as_array().unwrap())
            {
                assert_eq!(row["object"], expected["object"]);
            }
        }
    }
}
