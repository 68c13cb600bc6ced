//! Navigation of OpenAPI v2 definitions for patch metadata.

use serde_json::{Map, Value};

/// A type in a set of OpenAPI v2 definitions: the definitions (as the API server's schema
/// module produces them) and the name of the definition of the document's root,
/// e.g. `io.k8s.api.apps.v1.Deployment`.
#[derive(Debug, Clone, Copy)]
pub struct SchemaRef<'a> {
    /// All definitions, keyed by name; `$ref`s point at `#/definitions/<name>`.
    pub definitions: &'a Map<String, Value>,
    /// The definition name of the document's root.
    pub root: &'a str,
}

/// How many `$ref` hops are followed before a schema is treated as unknown.
const MAX_REF_DEPTH: usize = 32;

/// A schema node: the raw property schema (which carries the list and patch extensions)
/// and the definition it resolves to. Either may be absent when nothing is known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node<'a> {
    definitions: &'a Map<String, Value>,
    raw: Option<&'a Map<String, Value>>,
    resolved: Option<&'a Map<String, Value>>,
}

#[allow(dead_code)] // Some helpers serve only server-side apply.
impl<'a> Node<'a> {
    /// The node for the root of a document.
    pub(crate) fn root(schema: &SchemaRef<'a>) -> Self {
        let raw = schema
            .definitions
            .get(schema.root)
            .and_then(Value::as_object);
        Self::from_raw(schema.definitions, raw)
    }

    fn from_raw(definitions: &'a Map<String, Value>, raw: Option<&'a Map<String, Value>>) -> Self {
        let resolved = raw.and_then(|raw| resolve(definitions, raw));
        Node {
            definitions,
            raw,
            resolved,
        }
    }

    /// A node about which nothing is known.
    pub(crate) fn unknown(&self) -> Self {
        Node {
            definitions: self.definitions,
            raw: None,
            resolved: None,
        }
    }

    /// Whether the schema says anything at all.
    pub(crate) fn is_known(&self) -> bool {
        self.resolved.is_some()
    }

    /// The schema of member `key` of an object: a declared property, or the
    /// `additionalProperties` schema of a map.
    pub(crate) fn field(&self, key: &str) -> Self {
        let Some(resolved) = self.resolved else {
            return self.unknown();
        };
        if let Some(property) = resolved
            .get("properties")
            .and_then(Value::as_object)
            .and_then(|props| props.get(key))
            .and_then(Value::as_object)
        {
            return Self::from_raw(self.definitions, Some(property));
        }
        match resolved.get("additionalProperties") {
            Some(Value::Object(additional)) => Self::from_raw(self.definitions, Some(additional)),
            _ => self.unknown(),
        }
    }

    /// The schema of the items of an array.
    pub(crate) fn items(&self) -> Self {
        let items = self
            .resolved
            .and_then(|r| r.get("items"))
            .and_then(Value::as_object);
        Self::from_raw(self.definitions, items)
    }

    /// An extension (or other string keyword), looked up on the property first and then on
    /// the definition it refers to.
    pub(crate) fn extension(&self, name: &str) -> Option<&'a Value> {
        self.raw
            .and_then(|raw| raw.get(name))
            .or_else(|| self.resolved.and_then(|r| r.get(name)))
    }

    /// A string extension.
    pub(crate) fn string_extension(&self, name: &str) -> Option<&'a str> {
        self.extension(name).and_then(Value::as_str)
    }

    /// The `x-kubernetes-patch-strategy` split on commas.
    pub(crate) fn patch_strategies(&self) -> Vec<&'a str> {
        self.string_extension("x-kubernetes-patch-strategy")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `x-kubernetes-patch-merge-key`, or "".
    pub(crate) fn patch_merge_key(&self) -> &'a str {
        self.string_extension("x-kubernetes-patch-merge-key")
            .unwrap_or("")
    }

    /// Whether this is a map (`additionalProperties`) rather than a struct.
    pub(crate) fn is_map(&self) -> bool {
        self.resolved
            .is_some_and(|r| r.get("additionalProperties").is_some_and(Value::is_object))
            && !self.is_struct()
    }

    /// Whether this is a struct with declared properties.
    pub(crate) fn is_struct(&self) -> bool {
        self.resolved
            .and_then(|r| r.get("properties"))
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty())
    }

    /// Whether the struct lists `key` among its `required` properties.
    pub(crate) fn is_required(&self, key: &str) -> bool {
        self.resolved
            .and_then(|r| r.get("required"))
            .and_then(Value::as_array)
            .is_some_and(|req| req.iter().any(|v| v.as_str() == Some(key)))
    }

    /// The schema's `default`, if any.
    pub(crate) fn default_value(&self) -> Option<&'a Value> {
        self.raw
            .and_then(|raw| raw.get("default"))
            .or_else(|| self.resolved.and_then(|r| r.get("default")))
    }
}

/// Follows `$ref` (and the single-element `allOf` wrapping some generators use).
fn resolve<'a>(
    definitions: &'a Map<String, Value>,
    mut node: &'a Map<String, Value>,
) -> Option<&'a Map<String, Value>> {
    for _ in 0..MAX_REF_DEPTH {
        let reference = node.get("$ref").and_then(Value::as_str).or_else(|| {
            match node
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                Some([only]) => only.get("$ref").and_then(Value::as_str),
                _ => None,
            }
        });
        let Some(reference) = reference else {
            return Some(node);
        };
        let name = reference
            .strip_prefix("#/definitions/")
            .unwrap_or(reference);
        node = definitions.get(name).and_then(Value::as_object)?;
    }
    None
}
