//! RFC 6902 JSON patch, with the error messages of the library the API server uses.

use serde_json::{Map, Value};

use crate::util::json_eq;
use crate::PatchError;

/// The most operations a JSON patch may hold, as the API server enforces.
const MAX_OPERATIONS: usize = 10_000;

/// Applies an RFC 6902 JSON patch (`add`, `remove`, `replace`, `move`, `copy`, `test`).
///
/// A malformed patch document yields [`PatchError::Malformed`]; an operation that does not
/// apply to `doc` (missing path, failed test) yields [`PatchError::Unprocessable`].
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::Malformed(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".to_string(),
        ));
    };
    if operations.len() > MAX_OPERATIONS {
        return Err(PatchError::Malformed(format!(
            "The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {}",
            operations.len()
        )));
    }
    let mut result = doc.clone();
    for operation in operations {
        let Value::Object(operation) = operation else {
            return Err(PatchError::Malformed(
                "json: cannot unmarshal non-object into Go value of type jsonpatch.Operation"
                    .to_string(),
            ));
        };
        apply_operation(&mut result, operation)?;
    }
    Ok(result)
}

fn unprocessable(message: String) -> PatchError {
    PatchError::Unprocessable(message)
}

fn string_member<'a>(operation: &'a Map<String, Value>, name: &str) -> Result<&'a str, PatchError> {
    match operation.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(PatchError::Malformed(format!(
            "operation missing \"{name}\" string member: {}",
            Value::Object(operation.clone())
        ))),
    }
}

fn value_member(operation: &Map<String, Value>) -> Result<Value, PatchError> {
    operation.get("value").cloned().ok_or_else(|| {
        PatchError::Malformed(format!(
            "operation missing \"value\" member: {}",
            Value::Object(operation.clone())
        ))
    })
}

fn apply_operation(doc: &mut Value, operation: &Map<String, Value>) -> Result<(), PatchError> {
    let op = string_member(operation, "op")?;
    let path = string_member(operation, "path")?;
    match op {
        "add" => {
            let value = value_member(operation)?;
            add(doc, path, value)
        }
        "remove" => remove(doc, path).map(|_| ()),
        "replace" => {
            let value = value_member(operation)?;
            replace(doc, path, value)
        }
        "move" => {
            let from = string_member(operation, "from")?;
            if from == path {
                return Ok(());
            }
            if path.starts_with(from) && path[from.len()..].starts_with('/') {
                return Err(unprocessable(format!(
                    "move operation does not apply: cannot move \"{from}\" into its child \"{path}\""
                )));
            }
            let value = remove(doc, from).map_err(|_| {
                unprocessable(format!(
                    "move operation does not apply: doc is missing from path: {from}: missing value"
                ))
            })?;
            add(doc, path, value)
        }
        "copy" => {
            let from = string_member(operation, "from")?;
            let tokens = parse_pointer(from)?;
            let value = lookup(doc, &tokens).cloned().ok_or_else(|| {
                unprocessable(format!(
                    "copy operation does not apply: doc is missing from path: {from}: missing value"
                ))
            })?;
            add(doc, path, value)
        }
        "test" => {
            let expected = operation.get("value").cloned().unwrap_or(Value::Null);
            let tokens = parse_pointer(path)?;
            let matches = match lookup(doc, &tokens) {
                Some(actual) => json_eq(actual, &expected),
                None => expected.is_null(),
            };
            if matches {
                Ok(())
            } else {
                Err(unprocessable(format!(
                    "testing value {path} failed: test failed"
                )))
            }
        }
        other => Err(PatchError::Malformed(format!("Unexpected kind: {other}"))),
    }
}

/// Splits an RFC 6901 JSON pointer into unescaped reference tokens.
pub(crate) fn parse_pointer(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(unprocessable(format!(
            "JSON pointer must be empty or start with a \"/\": {pointer:?}"
        )));
    };
    Ok(rest
        .split('/')
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return None;
    }
    let index: usize = token.parse().ok()?;
    if index < len || (allow_end && index == len) {
        Some(index)
    } else {
        None
    }
}

fn lookup<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |current, token| match current {
        Value::Object(map) => map.get(token),
        Value::Array(items) => array_index(token, items.len(), false).map(|i| &items[i]),
        _ => None,
    })
}

fn lookup_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(doc, |current, token| match current {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => {
            let len = items.len();
            array_index(token, len, false).map(move |i| &mut items[i])
        }
        _ => None,
    })
}

/// Resolves the container of `path` and its last token.
fn parent_of<'a>(doc: &'a mut Value, tokens: &'a [String]) -> Option<(&'a mut Value, &'a String)> {
    let (last, parent_tokens) = tokens.split_last()?;
    lookup_mut(doc, parent_tokens).map(|parent| (parent, last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let tokens = parse_pointer(path)?;
    if tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    let missing = || {
        unprocessable(format!(
            "add operation does not apply: doc is missing path: \"{path}\": missing value"
        ))
    };
    let (parent, last) = parent_of(doc, &tokens).ok_or_else(missing)?;
    match parent {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            let index = array_index(last, items.len(), true).ok_or_else(|| {
                unprocessable(format!(
                    "Unable to access invalid index: {last}: invalid index referenced"
                ))
            })?;
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let tokens = parse_pointer(path)?;
    let missing = || {
        unprocessable(format!(
            "remove operation does not apply: doc is missing path: \"{path}\": missing value"
        ))
    };
    let (parent, last) = parent_of(doc, &tokens).ok_or_else(missing)?;
    match parent {
        Value::Object(map) => map.shift_remove(last.as_str()).ok_or_else(|| {
            unprocessable(format!(
                "error in remove for path: \"{path}\": Unable to remove nonexistent key: {last}: missing value"
            ))
        }),
        Value::Array(items) => {
            let index = array_index(last, items.len(), false).ok_or_else(|| {
                unprocessable(format!(
                    "error in remove for path: \"{path}\": Unable to access invalid index: {last}: invalid index referenced"
                ))
            })?;
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

fn replace(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let tokens = parse_pointer(path)?;
    if tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_of(doc, &tokens).ok_or_else(|| {
        unprocessable(format!(
            "replace operation does not apply: doc is missing path: {path}: missing value"
        ))
    })?;
    let slot = match parent {
        Value::Object(map) => map.get_mut(last.as_str()),
        Value::Array(items) => {
            let len = items.len();
            array_index(last, len, false).map(|i| &mut items[i])
        }
        _ => None,
    };
    let slot = slot.ok_or_else(|| {
        unprocessable(format!(
            "replace operation does not apply: doc is missing key: {path}: missing value"
        ))
    })?;
    *slot = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(doc: Value, patch: Value) -> Value {
        json_patch(&doc, &patch).unwrap()
    }

    fn err(doc: Value, patch: Value) -> PatchError {
        json_patch(&doc, &patch).unwrap_err()
    }

    #[test]
    fn add_to_objects_and_arrays() {
        assert_eq!(
            ok(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}])
            ),
            json!({"foo":"bar","baz":"qux"})
        );
        assert_eq!(
            ok(
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}])
            ),
            json!({"foo":["bar","qux","baz"]})
        );
        assert_eq!(
            ok(
                json!({"foo":[1]}),
                json!([{"op":"add","path":"/foo/-","value":2}])
            ),
            json!({"foo":[1,2]})
        );
        assert_eq!(
            ok(
                json!({"foo":[1]}),
                json!([{"op":"add","path":"/foo/1","value":2}])
            ),
            json!({"foo":[1,2]})
        );
        assert_eq!(
            ok(json!({"a":1}), json!([{"op":"add","path":"","value":[1]}])),
            json!([1])
        );
    }

    #[test]
    fn add_errors() {
        let e = err(
            json!({"foo":[1]}),
            json!([{"op":"add","path":"/foo/3","value":2}]),
        );
        assert!(matches!(e, PatchError::Unprocessable(_)), "{e:?}");
        let e = err(json!({}), json!([{"op":"add","path":"/a/b","value":2}]));
        assert_eq!(
            e.message(),
            "add operation does not apply: doc is missing path: \"/a/b\": missing value"
        );
        let e = err(
            json!({"foo":[1]}),
            json!([{"op":"add","path":"/foo/01","value":2}]),
        );
        assert!(matches!(e, PatchError::Unprocessable(_)));
    }

    #[test]
    fn remove_replace() {
        assert_eq!(
            ok(
                json!({"a":1,"b":2,"c":3}),
                json!([{"op":"remove","path":"/b"}])
            ),
            json!({"a":1,"c":3})
        );
        assert_eq!(
            ok(json!({"a":[1,2,3]}), json!([{"op":"remove","path":"/a/0"}])),
            json!({"a":[2,3]})
        );
        assert!(json_patch(&json!({"a":1}), &json!([{"op":"remove","path":"/b"}])).is_err());
        assert_eq!(
            ok(
                json!({"a":1}),
                json!([{"op":"replace","path":"/a","value":{"x":1}}])
            ),
            json!({"a":{"x":1}})
        );
        let e = err(
            json!({"a":1}),
            json!([{"op":"replace","path":"/b","value":1}]),
        );
        assert!(
            e.message().starts_with("replace operation does not apply"),
            "{e}"
        );
    }

    #[test]
    fn pointer_escaping() {
        assert_eq!(
            ok(
                json!({"a/b":1,"m~n":2}),
                json!([
                    {"op":"replace","path":"/a~1b","value":10},
                    {"op":"remove","path":"/m~0n"},
                    {"op":"add","path":"/~01","value":3}
                ])
            ),
            json!({"a/b":10,"~1":3})
        );
        // The annotation key form kubectl users write.
        assert_eq!(
            ok(
                json!({"metadata":{"annotations":{}}}),
                json!([{"op":"add","path":"/metadata/annotations/example.com~1x","value":"y"}])
            ),
            json!({"metadata":{"annotations":{"example.com/x":"y"}}})
        );
    }

    #[test]
    fn move_and_copy() {
        assert_eq!(
            ok(
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}])
            ),
            json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}})
        );
        assert_eq!(
            ok(
                json!({"foo":["all","grass","cows","eat"]}),
                json!([{"op":"move","from":"/foo/1","path":"/foo/3"}])
            ),
            json!({"foo":["all","cows","eat","grass"]})
        );
        assert_eq!(
            ok(
                json!({"a":{"x":[1]}}),
                json!([{"op":"copy","from":"/a","path":"/b"}])
            ),
            json!({"a":{"x":[1]},"b":{"x":[1]}})
        );
        assert!(json_patch(
            &json!({"a":{}}),
            &json!([{"op":"move","from":"/a","path":"/a/b"}])
        )
        .is_err());
        assert!(json_patch(&json!({}), &json!([{"op":"copy","from":"/x","path":"/y"}])).is_err());
    }

    #[test]
    fn test_operation() {
        assert_eq!(
            ok(
                json!({"a":[1,{"b":2}]}),
                json!([{"op":"test","path":"/a","value":[1.0,{"b":2}]}])
            ),
            json!({"a":[1,{"b":2}]})
        );
        let e = err(json!({"a":1}), json!([{"op":"test","path":"/a","value":2}]));
        assert_eq!(e.message(), "testing value /a failed: test failed");
        // A failed test aborts the whole patch: nothing before it is kept.
        let e = err(
            json!({"a":1}),
            json!([{"op":"add","path":"/b","value":1},{"op":"test","path":"/a","value":3}]),
        );
        assert!(matches!(e, PatchError::Unprocessable(_)));
    }

    #[test]
    fn malformed_patches() {
        assert!(matches!(
            err(json!({}), json!({"op":"add"})),
            PatchError::Malformed(_)
        ));
        assert!(matches!(
            err(json!({}), json!([{"op":"frob","path":"/a"}])),
            PatchError::Malformed(_)
        ));
        assert!(matches!(
            err(json!({}), json!([{"op":"add","path":"/a"}])),
            PatchError::Malformed(_)
        ));
        assert!(matches!(
            err(json!({}), json!([{"path":"/a"}])),
            PatchError::Malformed(_)
        ));
    }
}
