//! Server-side apply and managed fields, after `sigs.k8s.io/structured-merge-diff/merge`
//! and the API server's field manager.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde_json::{json, Map, Value};

use crate::fieldpath::{path_string, FieldSet, PathElement};
use crate::schema::{Node, SchemaRef};
use crate::util::{discard_nulls, json_eq, same_kind};

/// The outcome of a server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyResult {
    /// The object to persist, its `metadata.managedFields` set to [`ApplyResult::managed_fields`]
    /// (or absent when that is empty).
    pub object: Value,
    /// The new `metadata.managedFields` list.
    pub managed_fields: Value,
}

/// A field the applier would change that another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The name of the manager owning the field.
    pub manager: String,
    /// That manager's operation, `Apply` or `Update`.
    pub operation: String,
    /// The API version that manager wrote with.
    pub api_version: String,
    /// The field in upstream path notation, e.g. `.spec.replicas` or
    /// `.spec.template.spec.containers[name="nginx"].image`.
    pub field: String,
}

impl Conflict {
    /// The manager as upstream prints it: `"name"`, plus ` using <apiVersion>` for updaters.
    pub fn printed_manager(&self) -> String {
        if self.operation == OPERATION_UPDATE {
            format!("{:?} using {}", self.manager, self.api_version)
        } else {
            format!("{:?}", self.manager)
        }
    }
}

/// The conflicts that made an apply fail; `Display` gives upstream's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicts(pub Vec<Conflict>);

impl fmt::Display for Conflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [only] = self.0.as_slice() {
            return write!(
                f,
                "Apply failed with 1 conflict: conflict with {}: {}",
                only.printed_manager(),
                only.field
            );
        }
        let mut by_manager: BTreeMap<(String, String, String), Vec<&Conflict>> = BTreeMap::new();
        for conflict in &self.0 {
            by_manager
                .entry((
                    conflict.manager.clone(),
                    conflict.operation.clone(),
                    conflict.api_version.clone(),
                ))
                .or_default()
                .push(conflict);
        }
        let mut lines = Vec::new();
        for conflicts in by_manager.values() {
            lines.push(format!(
                "conflicts with {}:",
                conflicts[0].printed_manager()
            ));
            lines.extend(conflicts.iter().map(|c| format!("- {}", c.field)));
        }
        write!(
            f,
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }
}

/// Why a server-side apply failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields the applier sets are owned by other managers with other values
    /// (upstream answers 409 Conflict).
    #[error("{0}")]
    Conflicts(Conflicts),
    /// The applied configuration or the live object cannot be processed
    /// (upstream answers 400 or 500).
    #[error("{0}")]
    Invalid(String),
}

const OPERATION_APPLY: &str = "Apply";
const OPERATION_UPDATE: &str = "Update";
const FIELDS_TYPE: &str = "FieldsV1";
/// The manager upstream gives the fields of an object applied to for the first time
/// without managed fields.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Fields the API server never records as owned (upstream's `stripMeta`).
fn stripped_fields() -> FieldSet {
    let mut set = FieldSet::new();
    for path in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "creationTimestamp"],
        &["metadata", "selfLink"],
        &["metadata", "uid"],
        &["metadata", "clusterName"],
        &["metadata", "generation"],
        &["metadata", "managedFields"],
        &["metadata", "resourceVersion"],
    ] {
        set.insert(&field_path(path));
    }
    set
}

fn field_path(names: &[&str]) -> Vec<PathElement> {
    names
        .iter()
        .map(|n| PathElement::Field(n.to_string()))
        .collect()
}

fn ignored_set(ignored_fields: &[&str]) -> FieldSet {
    let mut set = FieldSet::new();
    for dotted in ignored_fields {
        let names: Vec<&str> = dotted.split('.').filter(|s| !s.is_empty()).collect();
        set.insert(&field_path(&names));
    }
    set
}

/// How a list's items are identified.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// The list type from `x-kubernetes-list-type`, else from the patch strategy
/// (merge with a key: map keyed by it; merge without: set), else atomic.
fn list_kind(node: &Node<'_>) -> ListKind {
    match node.string_extension("x-kubernetes-list-type") {
        Some("atomic") => return ListKind::Atomic,
        Some("set") => return ListKind::Set,
        Some("map") => {
            let keys = node
                .extension("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            return ListKind::Map(keys);
        }
        _ => {}
    }
    if node.patch_strategies().contains(&"merge") {
        let key = node.patch_merge_key();
        if key.is_empty() {
            ListKind::Set
        } else {
            ListKind::Map(vec![key.to_string()])
        }
    } else {
        ListKind::Atomic
    }
}

fn map_is_atomic(node: &Node<'_>) -> bool {
    node.string_extension("x-kubernetes-map-type") == Some("atomic")
}

/// The path element identifying `item` in a list of kind `kind`.
fn item_element(
    item: &Value,
    kind: &ListKind,
    items: &Node<'_>,
    index: usize,
) -> Result<PathElement, String> {
    match kind {
        ListKind::Atomic => Ok(PathElement::Index(index)),
        ListKind::Set => {
            if item.is_object() || item.is_array() {
                Err(format!("set item {index} must be a scalar, not {item}"))
            } else {
                Ok(PathElement::Value(item.clone()))
            }
        }
        ListKind::Map(keys) => {
            let Value::Object(map) = item else {
                return Err(format!(
                    "associative list item {index} must be an object, not {item}"
                ));
            };
            let mut fields = Vec::with_capacity(keys.len());
            for key in keys {
                let value = map
                    .get(key)
                    .or_else(|| items.field(key).default_value())
                    .ok_or_else(|| {
                        format!(
                            "associative list with keys has an element that omits key field {key:?} (and doesn't have default value)"
                        )
                    })?;
                fields.push((key.clone(), value.clone()));
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(PathElement::Key(fields))
        }
    }
}

fn item_elements(
    items: &[Value],
    kind: &ListKind,
    node: &Node<'_>,
) -> Result<Vec<PathElement>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| item_element(item, kind, node, i))
        .collect()
}

/// The set of fields a value sets: its leaves and list items (upstream's `ToFieldSet`).
/// Duplicate list keys are an error when `strict` (applied configurations), and tolerated
/// in live objects, as upstream.
fn to_field_set(value: &Value, node: Node<'_>, strict: bool) -> Result<FieldSet, String> {
    let mut set = FieldSet::new();
    collect_fields(value, node, &mut Vec::new(), &mut set, strict)?;
    Ok(set)
}

fn collect_fields(
    value: &Value,
    node: Node<'_>,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
    strict: bool,
) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            if map_is_atomic(&node) {
                set.insert(path);
                return Ok(());
            }
            for (key, child) in map {
                path.push(PathElement::Field(key.clone()));
                collect_fields(child, node.field(key), path, set, strict)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = list_kind(&node);
            if kind == ListKind::Atomic {
                set.insert(path);
                return Ok(());
            }
            let items_node = node.items();
            let elements = item_elements(items, &kind, &items_node)?;
            let mut seen = BTreeSet::new();
            for (item, element) in items.iter().zip(elements) {
                if !seen.insert(element.clone()) && strict {
                    return Err(format!(
                        "duplicate entries for key {element} in list at {}",
                        path_string(path)
                    ));
                }
                path.push(element);
                collect_fields(item, items_node, path, set, strict)?;
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
    Ok(())
}

/// Merges the applied configuration into the live object, the configuration winning
/// (upstream's `TypedValue.Merge`).
fn merge_values(lhs: Option<&Value>, rhs: &Value, node: Node<'_>) -> Result<Value, String> {
    match (lhs, rhs) {
        (Some(Value::Object(live)), Value::Object(config)) if !map_is_atomic(&node) => {
            let mut out = live.clone();
            for (key, value) in config {
                let merged = merge_values(live.get(key), value, node.field(key))?;
                out.insert(key.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (Some(Value::Array(live)), Value::Array(config)) => match list_kind(&node) {
            ListKind::Atomic => Ok(rhs.clone()),
            kind => merge_lists(live, config, &kind, node.items()).map(Value::Array),
        },
        _ => Ok(rhs.clone()),
    }
}

/// Merges associative lists keeping the live order for live items and placing the
/// configuration's items in its order (upstream's `mergingWalker.visitListItems`).
fn merge_lists(
    lhs: &[Value],
    rhs: &[Value],
    kind: &ListKind,
    items: Node<'_>,
) -> Result<Vec<Value>, String> {
    let lhs_pes = item_elements(lhs, kind, &items)?;
    let rhs_pes = item_elements(rhs, kind, &items)?;
    let mut observed_lhs: BTreeMap<&PathElement, usize> = BTreeMap::new();
    for (i, pe) in lhs_pes.iter().enumerate() {
        observed_lhs.entry(pe).or_insert(i);
    }
    let mut observed_rhs: BTreeMap<&PathElement, usize> = BTreeMap::new();
    for (i, pe) in rhs_pes.iter().enumerate() {
        if observed_rhs.insert(pe, i).is_some() {
            return Err(format!("duplicate entries for key {pe}"));
        }
    }
    let mut shared: VecDeque<&PathElement> = rhs_pes
        .iter()
        .filter(|pe| observed_lhs.contains_key(pe))
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: BTreeSet<&PathElement> = BTreeSet::new();
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            let pe = &lhs_pes[li];
            if *pe == rhs_pes[ri] {
                merged_rhs.insert(pe);
                let live = observed_lhs.get(pe).map(|&i| &lhs[i]);
                out.push(merge_values(live, &rhs[ri], items)?);
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if observed_rhs.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            let pe = &lhs_pes[li];
            if !observed_rhs.contains_key(pe) {
                out.push(lhs[li].clone());
                li += 1;
                continue;
            } else if merged_rhs.contains(pe) {
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let pe = &rhs_pes[ri];
            merged_rhs.insert(pe);
            let live = observed_lhs.get(pe).map(|&i| &lhs[i]);
            out.push(merge_values(live, &rhs[ri], items)?);
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    Ok(out)
}

/// Removes from `value` every member of `set` (with everything below it).
fn remove_items(value: &mut Value, set: &FieldSet, node: Node<'_>) -> Result<(), String> {
    match value {
        Value::Object(map) if !map_is_atomic(&node) => {
            map.retain(|key, _| !set.has_member(&PathElement::Field(key.clone())));
            for (key, child) in map.iter_mut() {
                if let Some(child_set) = set.child(&PathElement::Field(key.clone())) {
                    remove_items(child, child_set, node.field(key))?;
                }
            }
        }
        Value::Array(items) => {
            let kind = list_kind(&node);
            if kind == ListKind::Atomic {
                return Ok(());
            }
            let items_node = node.items();
            let elements = item_elements(items, &kind, &items_node)?;
            let mut kept = Vec::with_capacity(items.len());
            for (mut item, element) in std::mem::take(items).into_iter().zip(elements) {
                if set.has_member(&element) {
                    continue;
                }
                if let Some(child_set) = set.child(&element) {
                    remove_items(&mut item, child_set, items_node)?;
                }
                kept.push(item);
            }
            *items = kept;
        }
        _ => {}
    }
    Ok(())
}

/// Fields added, removed and modified between two objects (upstream's `Comparison`).
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    removed: FieldSet,
    modified: FieldSet,
}

impl Comparison {
    fn without(self, ignored: &FieldSet) -> Comparison {
        Comparison {
            added: self.added.recursive_difference(ignored),
            removed: self.removed.recursive_difference(ignored),
            modified: self.modified.recursive_difference(ignored),
        }
    }

    fn changed(&self) -> FieldSet {
        self.modified.union(&self.added)
    }
}

fn compare_objects(old: &Value, new: &Value, root: Node<'_>) -> Result<Comparison, String> {
    let mut comparison = Comparison::default();
    compare(
        Some(old),
        Some(new),
        root,
        &mut Vec::new(),
        false,
        &mut comparison,
    )?;
    Ok(comparison)
}

/// Walks both values. A node present on one side only is itself added or removed
/// (besides its leaves), except where upstream's typed Go objects would have had the
/// node anyway: a non-empty struct or a required field inside a node present on both
/// sides or itself so exempt (`zero_present`), as Go zero values of non-pointer structs.
fn compare(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    node: Node<'_>,
    path: &mut Vec<PathElement>,
    zero_present: bool,
    out: &mut Comparison,
) -> Result<(), String> {
    let Some(sample) = rhs.or(lhs) else {
        return Ok(());
    };
    let kinds_differ = matches!((lhs, rhs), (Some(l), Some(r)) if !same_kind(l, r));
    let is_leaf = kinds_differ
        || match sample {
            Value::Object(_) => map_is_atomic(&node),
            Value::Array(_) => list_kind(&node) == ListKind::Atomic,
            _ => true,
        };
    if is_leaf {
        match (lhs, rhs) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            (Some(l), Some(r)) if !json_eq(l, r) => out.modified.insert(path),
            _ => {}
        }
        return Ok(());
    }
    let both_present = lhs.is_some() && rhs.is_some();
    match sample {
        Value::Object(_) => {
            let empty = Map::new();
            let l = lhs.and_then(Value::as_object).unwrap_or(&empty);
            let r = rhs.and_then(Value::as_object).unwrap_or(&empty);
            let keys: Vec<&String> = l
                .keys()
                .chain(r.keys().filter(|k| !l.contains_key(*k)))
                .collect();
            for key in keys {
                let child = node.field(key);
                let value = r.get(key).or_else(|| l.get(key));
                let non_empty = match value {
                    Some(Value::Object(m)) => !m.is_empty(),
                    Some(Value::Array(a)) => !a.is_empty(),
                    _ => false,
                };
                let child_zero_present = (both_present || zero_present)
                    && non_empty
                    && (child.is_struct() || node.is_required(key));
                path.push(PathElement::Field(key.clone()));
                compare(l.get(key), r.get(key), child, path, child_zero_present, out)?;
                path.pop();
            }
        }
        Value::Array(_) => {
            let kind = list_kind(&node);
            let items_node = node.items();
            let l = lhs
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let r = rhs
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let l_pes = item_elements(l, &kind, &items_node)?;
            let r_pes = item_elements(r, &kind, &items_node)?;
            let mut l_index: BTreeMap<&PathElement, usize> = BTreeMap::new();
            for (i, pe) in l_pes.iter().enumerate() {
                l_index.entry(pe).or_insert(i);
            }
            let mut r_index: BTreeMap<&PathElement, usize> = BTreeMap::new();
            for (i, pe) in r_pes.iter().enumerate() {
                r_index.entry(pe).or_insert(i);
            }
            let all: BTreeSet<&PathElement> = l_pes.iter().chain(r_pes.iter()).collect();
            for pe in all {
                path.push(pe.clone());
                compare(
                    l_index.get(pe).map(|&i| &l[i]),
                    r_index.get(pe).map(|&i| &r[i]),
                    items_node,
                    path,
                    false,
                    out,
                )?;
                path.pop();
            }
        }
        _ => {}
    }
    if !zero_present {
        match (lhs, rhs) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            _ => {}
        }
    }
    Ok(())
}

/// The node reached by following `path` from `root`.
fn node_at<'a>(root: Node<'a>, path: &[PathElement]) -> Node<'a> {
    path.iter().fold(root, |node, pe| match pe {
        PathElement::Field(name) => node.field(name),
        _ => node.items(),
    })
}

/// The identity of a managedFields entry (upstream's manager identifier).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ManagerId {
    manager: String,
    operation: String,
    /// Empty for appliers: they keep one entry whatever version they apply with.
    api_version: String,
    subresource: String,
}

#[derive(Debug, Clone)]
struct ManagerEntry {
    api_version: String,
    time: Option<Value>,
    set: FieldSet,
}

type Managers = BTreeMap<ManagerId, ManagerEntry>;

fn managed_fields_of(object: &Value) -> Option<&Value> {
    object.get("metadata").and_then(|m| m.get("managedFields"))
}

fn decode_managed_fields(object: &Value) -> Result<Managers, String> {
    let mut managers = Managers::new();
    let entries = match managed_fields_of(object) {
        None | Some(Value::Null) => return Ok(managers),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err("managedFields must be a list".to_string()),
    };
    for entry in entries {
        let Value::Object(entry) = entry else {
            return Err("managedFields entries must be objects".to_string());
        };
        let text = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if let Some(fields_type) = entry.get("fieldsType").and_then(Value::as_str) {
            if fields_type != FIELDS_TYPE {
                return Err(format!("unsupported fieldsType {fields_type:?}"));
            }
        }
        let set = match entry.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(fields) => FieldSet::from_fields_v1(fields)?,
        };
        let operation = text("operation");
        let api_version = text("apiVersion");
        let id = ManagerId {
            manager: text("manager"),
            api_version: if operation == OPERATION_APPLY {
                String::new()
            } else {
                api_version.clone()
            },
            operation,
            subresource: text("subresource"),
        };
        let time = entry.get("time").filter(|t| !t.is_null()).cloned();
        match managers.get_mut(&id) {
            Some(existing) => existing.set = existing.set.union(&set),
            None => {
                managers.insert(
                    id,
                    ManagerEntry {
                        api_version,
                        time,
                        set,
                    },
                );
            }
        }
    }
    Ok(managers)
}

/// Whether the client asks to reset managed fields, with `[]` or `[{}]`
/// (upstream's `isResetManagedFields`).
fn is_reset_request(object: &Value) -> bool {
    matches!(managed_fields_of(object), Some(Value::Array(entries))
        if entries.is_empty()
            || (entries.len() == 1 && entries[0].as_object().is_some_and(Map::is_empty)))
}

fn encode_managed_fields(managers: &Managers) -> Value {
    let mut entries: Vec<(&ManagerId, &ManagerEntry)> =
        managers.iter().filter(|(_, e)| !e.set.is_empty()).collect();
    let time_of = |e: &ManagerEntry| {
        e.time
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    entries.sort_by(|(pi, pe), (qi, qe)| {
        pi.operation
            .cmp(&qi.operation)
            .then_with(|| time_of(pe).cmp(&time_of(qe)))
            .then_with(|| pi.manager.cmp(&qi.manager))
            .then_with(|| pe.api_version.cmp(&qe.api_version))
            .then_with(|| pi.subresource.cmp(&qi.subresource))
    });
    Value::Array(
        entries
            .into_iter()
            .map(|(id, entry)| {
                let mut out = Map::new();
                out.insert("manager".into(), json!(id.manager));
                out.insert("operation".into(), json!(id.operation));
                out.insert("apiVersion".into(), json!(entry.api_version));
                if let Some(time) = &entry.time {
                    out.insert("time".into(), time.clone());
                }
                out.insert("fieldsType".into(), json!(FIELDS_TYPE));
                out.insert("fieldsV1".into(), entry.set.to_fields_v1());
                if !id.subresource.is_empty() {
                    out.insert("subresource".into(), json!(id.subresource));
                }
                Value::Object(out)
            })
            .collect(),
    )
}

fn without_managed_fields(mut object: Value) -> Value {
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.shift_remove("managedFields");
    }
    object
}

fn with_managed_fields(mut object: Value, managed_fields: &Value) -> Value {
    let has_entries = managed_fields.as_array().is_some_and(|a| !a.is_empty());
    if let Value::Object(map) = &mut object {
        let metadata = map.entry("metadata").or_insert_with(|| json!({}));
        if let Value::Object(metadata) = metadata {
            if has_entries {
                metadata.insert("managedFields".into(), managed_fields.clone());
            } else {
                metadata.shift_remove("managedFields");
            }
        }
    }
    object
}

/// Applies `applied` (a server-side apply configuration) to `live` (absent on create) as
/// `manager`.
///
/// The configuration is merged into the live object; fields the manager applied before
/// and no longer applies are removed unless another manager owns them; fields owned by
/// other managers that would change are conflicts, unless `force` moves them to the
/// applier. `ignored_fields` are dotted paths never tracked for this resource (e.g.
/// `status` when the kind has a status subresource). A live object without managed fields
/// first has all its fields given to `before-first-apply`, as upstream. `now` is the RFC 3339 time stamped on
/// the applier's entry when the object changes. The configuration's `apiVersion` must be
/// `api_version`.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    schema: &SchemaRef<'_>,
    api_version: &str,
    now: &str,
    ignored_fields: &[&str],
) -> Result<ApplyResult, ApplyError> {
    let root = Node::root(schema);
    let invalid = ApplyError::Invalid;
    if !applied.is_object() {
        return Err(invalid(
            "apply configuration must be a JSON object".to_string(),
        ));
    }
    let patch_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if patch_version != api_version {
        return Err(invalid(format!(
            "Incorrect version specified in apply patch. Specified patch version: {patch_version}, expected: {api_version}"
        )));
    }
    if managed_fields_of(applied).is_some_and(|m| !m.is_null()) {
        return Err(invalid("metadata.managedFields must be nil".to_string()));
    }
    let live_object = live.cloned().unwrap_or_else(|| json!({}));
    let mut managers = decode_managed_fields(&live_object)
        .map_err(|e| invalid(format!("failed to decode managed fields: {e}")))?;
    let live_object = without_managed_fields(live_object);
    if live.is_some() && managers.is_empty() {
        managers = updated_managers(
            None,
            &live_object,
            BEFORE_FIRST_APPLY,
            schema,
            api_version,
            now,
            ignored_fields,
        )
        .map_err(invalid)?;
    }
    let mut config = applied.clone();
    discard_nulls(&mut config);

    let ignored = ignored_set(ignored_fields);
    let stripped = stripped_fields();
    let mut merged = merge_values(Some(&live_object), &config, root).map_err(invalid)?;
    let new_set = to_field_set(&config, root, true)
        .map_err(invalid)?
        .recursive_difference(&ignored);

    let applier = ManagerId {
        manager: manager.to_string(),
        operation: OPERATION_APPLY.to_string(),
        api_version: String::new(),
        subresource: String::new(),
    };
    let previous = managers.remove(&applier);
    if let Some(previous) = previous.as_ref().filter(|p| !p.set.is_empty()) {
        let is_struct_field = |path: &[PathElement]| {
            path.split_last()
                .is_some_and(|(_, parent)| node_at(root, parent).is_struct())
        };
        let owned = managers
            .values()
            .fold(new_set.clone(), |acc, entry| acc.union(&entry.set))
            .with_named_fields(&is_struct_field);
        let last = previous
            .set
            .recursive_difference(&ignored)
            .with_named_fields(&is_struct_field);
        let present = to_field_set(&merged, root, false)
            .map_err(invalid)?
            .with_named_fields(&is_struct_field);
        let to_remove = present
            .intersection(&last)
            .difference(&owned)
            .difference(&stripped);
        remove_items(&mut merged, &to_remove, root).map_err(invalid)?;
    }

    let comparison = compare_objects(&live_object, &merged, root)
        .map_err(invalid)?
        .without(&ignored);
    let changed = comparison.changed();
    let mut conflicts = Vec::new();
    for (id, entry) in managers.iter_mut() {
        let conflicting = entry.set.intersection(&changed);
        if !conflicting.is_empty() {
            for path in conflicting.paths() {
                conflicts.push(Conflict {
                    manager: id.manager.clone(),
                    operation: id.operation.clone(),
                    api_version: entry.api_version.clone(),
                    field: path_string(&path),
                });
            }
            entry.set = entry.set.difference(&conflicting);
        }
        entry.set = entry.set.difference(&comparison.removed);
    }
    if !force && !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(Conflicts(conflicts)));
    }

    let new_set = new_set.difference(&stripped);
    let object_changed = !json_eq(&live_object, &merged);
    // Upstream stamps the applier only when the object changed.
    let time = match previous.as_ref().and_then(|p| p.time.clone()) {
        Some(time) if !object_changed => Some(time),
        _ => Some(json!(now)),
    };
    managers.insert(
        applier,
        ManagerEntry {
            api_version: api_version.to_string(),
            time,
            set: new_set,
        },
    );
    for entry in managers.values_mut() {
        entry.set = entry.set.difference(&stripped);
    }
    let managed_fields = encode_managed_fields(&managers);
    Ok(ApplyResult {
        object: with_managed_fields(merged, &managed_fields),
        managed_fields,
    })
}

/// The `metadata.managedFields` after a non-apply write (create, update or patch) by
/// `manager` turned `old` (absent on create) into `new`.
///
/// The fields the write added or changed become owned by `manager` (operation `Update`,
/// stamped `now`) and are taken from the other managers; removed fields leave every set.
/// Managed fields sent in `new` replace the live ones when non-empty, and `[]` or `[{}]`
/// reset them (the writer then owns only what this write changed), as upstream. `ignored_fields` are dotted paths never tracked (e.g. `status`).
/// Should the objects not fit the schema (e.g. a map-list item without its key), the
/// managed fields are dropped, as upstream does.
#[allow(clippy::too_many_arguments)]
pub fn update_managed_fields(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    schema: &SchemaRef<'_>,
    api_version: &str,
    now: &str,
    ignored_fields: &[&str],
) -> Value {
    updated_managers(old, new, manager, schema, api_version, now, ignored_fields)
        .map(|managers| encode_managed_fields(&managers))
        .unwrap_or_else(|_| json!([]))
}

fn updated_managers(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    schema: &SchemaRef<'_>,
    api_version: &str,
    now: &str,
    ignored_fields: &[&str],
) -> Result<Managers, String> {
    let root = Node::root(schema);
    let old_object = old.cloned().unwrap_or_else(|| json!({}));
    let mut managers = if is_reset_request(new) {
        Managers::new()
    } else {
        match decode_managed_fields(new) {
            Ok(sent) if !sent.is_empty() => sent,
            // Undecodable live managed fields are dropped, as upstream.
            _ => decode_managed_fields(&old_object).unwrap_or_default(),
        }
    };
    let old_object = without_managed_fields(old_object);
    let new_object = without_managed_fields(new.clone());
    let ignored = ignored_set(ignored_fields);
    let stripped = stripped_fields();
    let comparison = compare_objects(&old_object, &new_object, root)?.without(&ignored);
    let changed = comparison.changed();
    for entry in managers.values_mut() {
        entry.set = entry
            .set
            .difference(&changed)
            .difference(&comparison.removed);
    }
    let owned_now = changed.difference(&stripped);
    if !owned_now.is_empty() {
        let id = ManagerId {
            manager: manager.to_string(),
            operation: OPERATION_UPDATE.to_string(),
            api_version: api_version.to_string(),
            subresource: String::new(),
        };
        let previous = managers.get(&id).map(|e| e.set.clone()).unwrap_or_default();
        managers.insert(
            id,
            ManagerEntry {
                api_version: api_version.to_string(),
                time: Some(json!(now)),
                set: previous.union(&owned_now),
            },
        );
    }
    for entry in managers.values_mut() {
        entry.set = entry.set.difference(&stripped);
    }
    managers.retain(|_, e| !e.set.is_empty());
    Ok(managers)
}
