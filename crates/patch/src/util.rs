//! Small helpers shared by the patch implementations.

use serde_json::Value;

/// Deep equality where numbers compare by numeric value (as Go's float64 decoding does),
/// so that `80` and `80.0` are equal.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x == y {
                return true;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Whether two values have the same JSON kind (Go's `reflect.TypeOf` on decoded JSON).
pub(crate) fn same_kind(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Formats a value the way Go's `%v` formats a decoded JSON value, for error messages
/// that match upstream.
pub(crate) fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_fmt_number(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_fmt).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", k, go_fmt(&map[k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn go_fmt_number(n: &serde_json::Number) -> String {
    let Some(f) = n.as_f64() else {
        return n.to_string();
    };
    if f == 0.0 {
        return "0".to_string();
    }
    // Go's %v on a float64 is the shortest representation, in exponent form when the
    // decimal exponent is below -4 or at least 6.
    let exponent_form = format!("{:e}", f);
    let Some((mantissa, exponent)) = exponent_form.split_once('e') else {
        return f.to_string();
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        f.to_string()
    }
}

/// Removes `null` values from objects, recursively (upstream's `discardNullValuesFromPatch`).
pub(crate) fn discard_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            for v in map.values_mut() {
                discard_nulls(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

/// The Go kind name of a decoded JSON value, as `reflect.Kind.String()` prints it.
pub(crate) fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_formatting_matches_go_percent_v() {
        assert_eq!(go_fmt(&json!({"b": 1, "a": "x"})), "map[a:x b:1]");
        assert_eq!(go_fmt(&json!([1, "a", null])), "[1 a <nil>]");
        assert_eq!(go_fmt(&json!(8080)), "8080");
        assert_eq!(go_fmt(&json!(1000000)), "1e+06");
        assert_eq!(go_fmt(&json!(1.5)), "1.5");
    }

    #[test]
    fn numbers_compare_numerically() {
        assert!(json_eq(&json!({"a": [80]}), &json!({"a": [80.0]})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }
}
