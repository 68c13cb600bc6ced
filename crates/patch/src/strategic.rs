//! Strategic merge patch, following `k8s.io/apimachinery/pkg/util/strategicpatch` as the
//! API server applies it (parallel deletion lists merged, unmatched nulls ignored).

use serde_json::{Map, Value};

use crate::schema::{Node, SchemaRef};
use crate::util::{go_fmt, go_kind, json_eq, same_kind};
use crate::PatchError;

const DIRECTIVE_MARKER: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";

const REPLACE: &str = "replace";
const MERGE: &str = "merge";
const DELETE: &str = "delete";
const RETAIN_KEYS_STRATEGY: &str = "retainKeys";

const ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST: &str =
    "invalid patch type of setElementOrder list";
const ERR_NO_LIST_OF_LISTS: &str = "lists of lists are not supported";

type Result<T> = std::result::Result<T, PatchError>;

/// Applies a strategic merge patch to `doc`, with the patch metadata
/// (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`) of `schema`.
///
/// Where the schema says nothing (unknown definition, free-form object), the field falls
/// back to JSON merge patch semantics: maps merge, lists are replaced.
pub fn strategic_merge_patch(doc: &Value, patch: &Value, schema: &SchemaRef<'_>) -> Result<Value> {
    let patch = match patch {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::Malformed(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_kind_name(other)
            )))
        }
    };
    let original = match doc {
        Value::Object(map) => Some(map.clone()),
        Value::Null => None,
        _ => return Err(PatchError::Malformed("invalid JSON document".to_string())),
    };
    merge_map(original, patch, Node::root(schema)).map(Value::Object)
}

fn json_kind_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        Value::Object(_) => "object",
    }
}

fn unprocessable(message: impl Into<String>) -> PatchError {
    PatchError::Unprocessable(message.into())
}

fn malformed(message: &str) -> PatchError {
    PatchError::Malformed(message.to_string())
}

fn err_no_merge_key(map: &Value, key: &str) -> PatchError {
    unprocessable(format!(
        "map: {} does not contain declared merge key: {}",
        go_fmt(map),
        key
    ))
}

fn err_bad_arg_type(expected: &str, actual: &Value) -> PatchError {
    unprocessable(format!(
        "expected a {}, but received a {}",
        expected,
        go_kind(actual)
    ))
}

fn err_bad_patch_type(directive: &Value, map: &Map<String, Value>) -> PatchError {
    unprocessable(format!(
        "unknown patch type: {} in map: {}",
        go_fmt(directive),
        go_fmt(&Value::Object(map.clone()))
    ))
}

/// Splits the retainKeys strategy from the other one (upstream's
/// `extractRetainKeysPatchStrategy`); returns (retainKeys present, other strategy).
fn retain_keys_strategy<'a>(field: &Node<'a>) -> Result<(bool, &'a str)> {
    let strategies = field.patch_strategies();
    match strategies.as_slice() {
        [] => Ok((false, "")),
        [single] if *single == RETAIN_KEYS_STRATEGY => Ok((true, "")),
        [single] => Ok((false, single)),
        [first, second] if *first == RETAIN_KEYS_STRATEGY => Ok((true, second)),
        [first, second] if *second == RETAIN_KEYS_STRATEGY => Ok((true, first)),
        _ => Err(unprocessable(format!(
            "unexpected patch strategy: [{}]",
            strategies.join(" ")
        ))),
    }
}

/// Merges `patch` into `original` (upstream's `mergeMap`).
fn merge_map(
    original: Option<Map<String, Value>>,
    mut patch: Map<String, Value>,
    node: Node<'_>,
) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
        return match directive.as_str() {
            Some(REPLACE) => {
                patch.shift_remove(DIRECTIVE_MARKER);
                merge_map(None, patch, node)
            }
            Some(DELETE) => Ok(Map::new()),
            _ => Err(err_bad_patch_type(directive, &patch)),
        };
    }
    let mut original = original.unwrap_or_default();
    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order(&mut original, &mut patch, node)?;

    for (key, patch_value) in patch {
        let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            (extract_key(&key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)?, true)
        } else {
            (key, false)
        };
        if patch_value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let field = node.field(&key);
        match original.get_mut(&key) {
            None => {
                if !is_delete_list {
                    if let Some(fresh) = fresh_value(patch_value, field)? {
                        original.insert(key, fresh);
                    }
                }
            }
            Some(existing) if !same_kind(existing, &patch_value) => {
                if !is_delete_list {
                    match fresh_value(patch_value, field)? {
                        Some(fresh) => *existing = fresh,
                        None => {
                            original.shift_remove(&key);
                        }
                    }
                }
            }
            Some(existing) => match (existing, patch_value) {
                (Value::Object(existing), Value::Object(patch_map)) => {
                    let (_, strategy) = retain_keys_strategy(&field)?;
                    *existing = if strategy == REPLACE {
                        merge_map(None, without_directive_marker(patch_map), field)?
                    } else {
                        merge_map(Some(std::mem::take(existing)), patch_map, field)?
                    };
                }
                (Value::Array(existing), Value::Array(patch_items)) => {
                    let (_, strategy) = retain_keys_strategy(&field)?;
                    *existing = merge_slice_handler(
                        std::mem::take(existing),
                        patch_items,
                        field,
                        strategy,
                        is_delete_list,
                    )?;
                }
                (existing, patch_value) => *existing = patch_value,
            },
        }
    }
    Ok(original)
}

/// The value a patch value takes where the original has nothing to merge with, or `None`
/// when it is to be dropped. Upstream (`removeDirectives`) drops maps carrying `$patch`
/// and list items carrying it, and discards nulls; here the other directives of the new
/// subtree are processed as well (upstream leaves them for the typed decode to drop).
fn fresh_value(patch_value: Value, field: Node<'_>) -> Result<Option<Value>> {
    match patch_value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE_MARKER) {
                return Ok(None);
            }
            merge_map(None, map, field).map(|m| Some(Value::Object(m)))
        }
        Value::Array(items) => fresh_list(items, field).map(|l| Some(Value::Array(l))),
        other => Ok(Some(other)),
    }
}

/// A list taken from the patch as is: items carrying `$patch` dropped, the others
/// cleaned as fresh values.
fn fresh_list(items: Vec<Value>, field: Node<'_>) -> Result<Vec<Value>> {
    let items_node = field.items();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Object(map) if map.contains_key(DIRECTIVE_MARKER) => {}
            Value::Object(map) => out.push(Value::Object(merge_map(None, map, items_node)?)),
            other => out.push(other),
        }
    }
    Ok(out)
}

fn without_directive_marker(mut map: Map<String, Value>) -> Map<String, Value> {
    map.shift_remove(DIRECTIVE_MARKER);
    map
}

fn extract_key(key: &str, prefix: &str) -> Result<String> {
    match key.split_once('/') {
        Some((first, rest)) if first == prefix => Ok(rest.to_string()),
        _ => Err(match prefix {
            DELETE_FROM_PRIMITIVE_LIST_PREFIX => malformed(ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST),
            _ => malformed(ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST),
        }),
    }
}

/// Applies `$retainKeys`: keys of the original missing from the list are cleared, and
/// every key the patch sets must be in the list.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<()> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(malformed(ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS));
    };
    let retained = |key: &str| retain.iter().any(|v| v.as_str() == Some(key));
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !retained(key) {
            return Err(malformed(ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS));
        }
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

/// Processes `$setElementOrder/<field>` directives together with their lists
/// (upstream's `mergePatchIntoOriginal`).
fn merge_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    node: Node<'_>,
) -> Result<()> {
    let directive_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for directive_key in directive_keys {
        let Some(order) = patch.shift_remove(&directive_key) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(err_bad_arg_type("slice", &order));
        };
        let field_key = extract_key(&directive_key, SET_ELEMENT_ORDER_PREFIX)?;
        let original_list = match original.get(&field_key) {
            Some(Value::Array(items)) => Some(items.clone()),
            Some(other) => return Err(err_bad_arg_type("slice", other)),
            None => None,
        };
        let patch_list = match patch.get(&field_key) {
            Some(Value::Array(items)) => Some(items.clone()),
            Some(other) => return Err(err_bad_arg_type("slice", other)),
            None => None,
        };
        let field = node.field(&field_key);
        let (_, strategy) = retain_keys_strategy(&field)?;
        let merge_key = field.patch_merge_key();
        validate_patch_with_set_order_list(
            patch_list.as_deref().unwrap_or(&[]),
            &order,
            merge_key,
        )?;

        let merged = match (&original_list, &patch_list) {
            (Some(existing), None) => existing.clone(),
            (None, Some(patch_items)) => fresh_list(patch_items.clone(), field)?,
            (Some(existing), Some(patch_items)) => merge_slice_handler(
                existing.clone(),
                patch_items.clone(),
                field,
                strategy,
                false,
            )?,
            (None, None) => continue,
        };
        let (patch_items, server_only) = if merge_key.is_empty() {
            partition_primitives(merged, &order)
        } else {
            partition_maps(merged, &order, merge_key)?
        };
        let original_items = original_list.unwrap_or_default();
        let is_map =
            slice_element_is_map(&[&original_items, patch_list.as_deref().unwrap_or(&[])])?;
        let ordered = normalize_element_order(
            patch_items,
            server_only,
            &order,
            &original_items,
            merge_key,
            is_map,
        )?;
        original.insert(field_key.clone(), Value::Array(ordered));
        patch.shift_remove(&field_key);
    }
    Ok(())
}

fn contains_directive_marker(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|m| m.contains_key(DIRECTIVE_MARKER))
}

fn merge_key_value_equal(left: &Value, right: &Value, merge_key: &str) -> Result<bool> {
    if merge_key.is_empty() {
        return Ok(json_eq(left, right));
    }
    let left_map = left
        .as_object()
        .ok_or_else(|| err_bad_arg_type("map", left))?;
    let right_map = right
        .as_object()
        .ok_or_else(|| err_bad_arg_type("map", right))?;
    let left_key = left_map
        .get(merge_key)
        .ok_or_else(|| err_no_merge_key(left, merge_key))?;
    let right_key = right_map
        .get(merge_key)
        .ok_or_else(|| err_no_merge_key(right, merge_key))?;
    Ok(json_eq(left_key, right_key))
}

/// Checks that the relative order of the patch list matches the `$setElementOrder` list.
fn validate_patch_with_set_order_list(
    patch_list: &[Value],
    order: &[Value],
    merge_key: &str,
) -> Result<()> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<Value> = if merge_key.is_empty() {
        patch_list.to_vec()
    } else {
        extract_to_delete_items(patch_list.to_vec())?.0
    };
    let (mut patch_index, mut order_index) = (0, 0);
    while patch_index < non_delete.len() && order_index < order.len() {
        if contains_directive_marker(&non_delete[patch_index]) {
            patch_index += 1;
            continue;
        }
        if merge_key_value_equal(&non_delete[patch_index], &order[order_index], merge_key)? {
            patch_index += 1;
        }
        order_index += 1;
    }
    if patch_index < non_delete.len() && order_index >= order.len() {
        return Err(unprocessable(format!(
            "the order in patch list:\n{}\n doesn't match {} list:\n{}",
            go_fmt(&Value::Array(patch_list.to_vec())),
            SET_ELEMENT_ORDER_PREFIX,
            go_fmt(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: Node<'_>,
    strategy: &str,
    is_delete_list: bool,
) -> Result<Vec<Value>> {
    if strategy == MERGE {
        merge_slice(original, patch, field, is_delete_list)
    } else {
        fresh_list(patch, field)
    }
}

/// Whether the elements of the slices are maps; all elements must share one kind, and
/// must not be lists (upstream's `sliceElementType`).
fn slice_element_is_map(slices: &[&[Value]]) -> Result<bool> {
    let mut first: Option<&Value> = None;
    for item in slices.iter().flat_map(|s| s.iter()) {
        match first {
            None => {
                if item.is_array() {
                    return Err(unprocessable(ERR_NO_LIST_OF_LISTS));
                }
                first = Some(item);
            }
            Some(previous) if !same_kind(previous, item) => {
                let lists: Vec<String> = slices
                    .iter()
                    .map(|s| go_fmt(&Value::Array(s.to_vec())))
                    .collect();
                return Err(unprocessable(format!(
                    "list element types are not identical: [{}]",
                    lists.join(" ")
                )));
            }
            Some(_) => {}
        }
    }
    match first {
        Some(item) => Ok(item.is_object()),
        None => Err(unprocessable("no elements in any of the given slices")),
    }
}

/// Merges two lists with the merge strategy (upstream's `mergeSlice`).
fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: Node<'_>,
    is_delete_list: bool,
) -> Result<Vec<Value>> {
    let items = field.items();
    let merge_key = field.patch_merge_key();
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let is_map = slice_element_is_map(&[&original, &patch])?;
    if !is_map {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.iter().any(|d| json_eq(v, d)))
                .collect());
        }
        let mut both = original.clone();
        both.extend(patch.iter().cloned());
        let merged = deduplicate_scalars(both);
        let (patch_items, server_only) = partition_primitives(merged, &patch);
        return normalize_element_order(patch_items, server_only, &patch, &original, "", false);
    }
    if merge_key.is_empty() {
        return Err(unprocessable(
            "cannot merge lists without merge key for type map",
        ));
    }
    let (original, patch) = merge_slice_with_special_elements(original, patch, merge_key, field)?;
    let merged = merge_slice_without_special_elements(original.clone(), &patch, merge_key, items)?;
    let (patch_items, server_only) = partition_maps(merged, &patch, merge_key)?;
    normalize_element_order(patch_items, server_only, &patch, &original, merge_key, true)
}

/// Handles `$patch` directives in list items: `delete` removes the matching originals,
/// `replace` makes the list exactly the other patch items.
fn merge_slice_with_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
    field: Node<'_>,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut without_special = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(map) = item.as_object() else {
            return Err(err_bad_arg_type("map", &item));
        };
        let Some(directive) = map.get(DIRECTIVE_MARKER) else {
            without_special.push(item);
            continue;
        };
        match directive.as_str() {
            Some(DELETE) => {
                let Some(key_value) = map.get(merge_key) else {
                    return Err(err_no_merge_key(&item, merge_key));
                };
                check_all_maps(&original)?;
                original.retain(|candidate| {
                    !candidate
                        .get(merge_key)
                        .is_some_and(|v| json_eq(v, key_value))
                });
            }
            Some(REPLACE) => replace = true,
            Some(MERGE) => {
                return Err(unprocessable(
                    "merging lists cannot yet be specified in the patch",
                ))
            }
            _ => return Err(err_bad_patch_type(directive, map)),
        }
    }
    if replace {
        Ok((fresh_list(without_special, field)?, Vec::new()))
    } else {
        Ok((original, without_special))
    }
}

fn check_all_maps(list: &[Value]) -> Result<()> {
    match list.iter().position(|v| !v.is_object()) {
        Some(index) => Err(unprocessable(format!(
            "value for key {index} is not a map."
        ))),
        None => Ok(()),
    }
}

fn find_by_merge_key(list: &[Value], merge_key: &str, key_value: &Value) -> Result<Option<usize>> {
    check_all_maps(list)?;
    Ok(list.iter().position(|candidate| {
        candidate
            .get(merge_key)
            .is_some_and(|v| json_eq(v, key_value))
    }))
}

fn merge_slice_without_special_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    merge_key: &str,
    items: Node<'_>,
) -> Result<Vec<Value>> {
    for item in patch {
        let Value::Object(item_map) = item else {
            return Err(err_bad_arg_type("map", item));
        };
        let Some(key_value) = item_map.get(merge_key) else {
            return Err(err_no_merge_key(item, merge_key));
        };
        match find_by_merge_key(&original, merge_key, key_value)? {
            Some(index) => {
                let existing = match std::mem::take(&mut original[index]) {
                    Value::Object(map) => Some(map),
                    _ => None,
                };
                original[index] = Value::Object(merge_map(existing, item_map.clone(), items)?);
            }
            None => original.push(Value::Object(merge_map(None, item_map.clone(), items)?)),
        }
    }
    Ok(original)
}

/// Go's in-place deduplication: a duplicate is overwritten by the last element.
fn deduplicate_scalars(mut items: Vec<Value>) -> Vec<Value> {
    let mut length = items.len() as isize - 1;
    let mut i: isize = 0;
    while i < length {
        let mut j = i + 1;
        while j <= length {
            if json_eq(&items[i as usize], &items[j as usize]) {
                items[j as usize] = items[length as usize].clone();
                items.truncate(length as usize);
                length -= 1;
                j -= 1;
            }
            j += 1;
        }
        i += 1;
    }
    items
}

fn partition_primitives(merged: Vec<Value>, by: &[Value]) -> (Vec<Value>, Vec<Value>) {
    merged
        .into_iter()
        .partition(|v| by.iter().any(|b| json_eq(v, b)))
}

fn partition_maps(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut in_patch = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        if !item.is_object() {
            return Err(err_bad_arg_type("map", &item));
        }
        let Some(key_value) = item.get(merge_key) else {
            return Err(err_no_merge_key(&item, merge_key));
        };
        if find_by_merge_key(by, merge_key, key_value)?.is_some() {
            in_patch.push(item);
        } else {
            server_only.push(item);
        }
    }
    Ok((in_patch, server_only))
}

fn extract_to_delete_items(list: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    for item in list {
        let Some(map) = item.as_object() else {
            return Err(err_bad_arg_type("map", &item));
        };
        if map.get(DIRECTIVE_MARKER).and_then(Value::as_str) == Some(DELETE) {
            delete.push(item);
        } else {
            keep.push(item);
        }
    }
    Ok((keep, delete))
}

/// The position of `item` in `list`, comparing merge key values for maps.
fn index_of(list: &[Value], item: &Value, merge_key: &str, is_map: bool) -> Option<usize> {
    if is_map {
        let wanted = item.as_object().and_then(|m| m.get(merge_key));
        list.iter().position(|candidate| {
            let got = candidate.as_object().and_then(|m| m.get(merge_key));
            match (wanted, got) {
                (Some(a), Some(b)) => json_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        })
    } else {
        list.iter().position(|candidate| json_eq(candidate, item))
    }
}

/// Sorts `to_sort` by the order of `order` (upstream's `normalizeSliceOrder`), with the
/// same comparison and the stable insertion sort Go uses for short slices.
fn normalize_slice_order(
    to_sort: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    is_map: bool,
) -> Result<Vec<Value>> {
    let (mut to_sort, to_delete) = if is_map {
        for item in to_sort.iter().chain(order) {
            let Some(map) = item.as_object() else {
                return Err(err_bad_arg_type("map", item));
            };
            if !map.contains_key(merge_key) {
                return Err(err_no_merge_key(item, merge_key));
            }
        }
        extract_to_delete_items(to_sort)?
    } else {
        (to_sort, Vec::new())
    };
    let less = |a: &Value, b: &Value| match (
        index_of(order, a, merge_key, is_map),
        index_of(order, b, merge_key, is_map),
    ) {
        (Some(ia), Some(ib)) => ia < ib,
        _ => true,
    };
    for i in 1..to_sort.len() {
        let mut j = i;
        while j > 0 && less(&to_sort[j], &to_sort[j - 1]) {
            to_sort.swap(j, j - 1);
            j -= 1;
        }
    }
    to_sort.extend(to_delete);
    Ok(to_sort)
}

/// Orders the patch items by `patch_order` and the server-only items by `server_order`,
/// then interleaves them (upstream's `normalizeElementOrder` and `mergeSortedSlice`).
fn normalize_element_order(
    patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    is_map: bool,
) -> Result<Vec<Value>> {
    let patch = normalize_slice_order(patch, patch_order, merge_key, is_map)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, is_map)?;
    let (left, right) = (server_only, patch);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        if i >= left.len() {
            out.push(right[j].clone());
            j += 1;
        } else if j >= right.len() {
            out.push(left[i].clone());
            i += 1;
        } else {
            let left_first = match (
                index_of(server_order, &left[i], merge_key, is_map),
                index_of(server_order, &right[j], merge_key, is_map),
            ) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            };
            if left_first {
                out.push(left[i].clone());
                i += 1;
            } else {
                out.push(right[j].clone());
                j += 1;
            }
        }
    }
    Ok(out)
}
